"""Shared test set-up: hypothesis profiles and the backend fixture.

Hypothesis runs derandomised (a fixed example sequence) under the "ci"
profile, chosen when the environment has CI set, so CI is deterministic;
locally the "dev" profile explores new examples on every run.  Choose one
explicitly with HYPOTHESIS_PROFILE=ci|dev; "gpu" is "ci" with a quarter of the
examples, for the scarce minutes on a lent GPU (bench/device_session.sh).
"""
import os

import pytest
from hypothesis import HealthCheck, settings

from minifcrn import backend as _backend

_common = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                       HealthCheck.too_slow])
settings.register_profile("ci", derandomize=True, max_examples=60, print_blob=True, **_common)
settings.register_profile("dev", max_examples=60, **_common)
settings.register_profile("gpu", derandomize=True, max_examples=15, print_blob=True, **_common)  # device time is scarce
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

BACKENDS = ["cpu", "cuda-emulated", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(params=BACKENDS)
def device(request):
    """Every op test runs once per backend; yields the device name to create tensors on.

    cpu            NumPy arrays, Numba loops
    cuda-emulated  NumPy arrays, the CUDA kernels of kernels/*.cu compiled for the CPU
    cuda           CuPy arrays on a GPU, the same kernels compiled by CuPy (skipped without one)
    """
    name = request.param
    if name == "cuda":
        if not _backend.cuda_available():
            pytest.skip("no CUDA GPU with CuPy here")
        yield "cuda"
    elif name == "cuda-emulated":
        with _backend.emulate_cuda():
            yield "cpu"
    else:
        with _backend.emulate_cuda(False):
            yield "cpu"
