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

ALL_PATHS = ("reference", "cpu-fast", "cuda-emulated", "cuda")


def pytest_generate_tests(metafunc):
    """Every test that takes ``device`` runs once per code path it can tell apart: all four by
    default, fewer where a ``paths`` marker says the code under test has no other (an op with no
    CPU fast path runs the reference loops on "cpu-fast" too, and plain array code runs the
    same NumPy on every CPU path)."""
    if "device" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("paths")
    names = marker.args if marker else ALL_PATHS
    unknown = set(names) - set(ALL_PATHS)
    assert not unknown, f"unknown paths {unknown}"
    metafunc.parametrize("device", [pytest.param(n, marks=pytest.mark.gpu) if n == "cuda" else n for n in names],
                         indirect=True)


@pytest.fixture
def device(request):
    """The device name to create tensors on, with NumPy arrays' path set for the test:

    reference      NumPy arrays, the Numba loops that mirror the CUDA kernels
    cpu-fast       NumPy arrays, the CPU fast paths of minifcrn/cpu/ (the default outside tests)
    cuda-emulated  NumPy arrays, the CUDA kernels of kernels/*.cu compiled for the CPU
    cuda           CuPy arrays on a GPU, the same kernels compiled by CuPy (skipped without one)
    """
    path = request.param
    if path == "cuda":
        if not _backend.cuda_available():
            pytest.skip("no CUDA GPU with CuPy here")
        yield "cuda"
        return
    with _backend.use_path(path):
        yield "cpu"
