"""Devices and array modules: "cpu" is NumPy, "cuda" is CuPy.

Every op asks ``get_array_module(x)`` for ``xp`` and writes one code path for
both.  CuPy is imported lazily, on the first request for "cuda", so the
package imports and runs on a machine without CuPy or a GPU.
"""
from __future__ import annotations

import functools
from importlib import resources

import numpy as np

DEVICES = ("cpu", "cuda")
GPU_INSTALL_HINT = ('pip install "minifcrn[gpu]" (cupy-cuda12x; on CUDA 13 use '
                    '"minifcrn[gpu-cuda13]", cupy-cuda13x)')


class DeviceError(RuntimeError):
    """The requested device cannot be used here."""


def check_device(device: str) -> str:
    """Return ``device`` normalised ("cuda:0" -> "cuda"), or raise ValueError."""
    if not isinstance(device, str):
        raise TypeError(f"device must be 'cpu' or 'cuda', got {device!r}")
    name = device.split(":")[0].lower()
    if name not in DEVICES:
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return name


@functools.cache
def cupy():
    """The ``cupy`` module, or a one-line DeviceError saying what to install."""
    try:
        import cupy as cp
    except ImportError:
        raise DeviceError(f"device 'cuda' needs CuPy, which is not installed: {GPU_INSTALL_HINT}") from None
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken
        raise DeviceError(f"device 'cuda' is unavailable: CuPy found no usable CUDA driver ({exc})") from None
    if count == 0:
        raise DeviceError("device 'cuda' is unavailable: no GPU found")
    return cp


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    try:
        cupy()
    except DeviceError:
        return False
    return True


def xp_for(device: str):
    """The array module of ``device``: numpy for "cpu", cupy for "cuda"."""
    return cupy() if check_device(device) == "cuda" else np


def device_of(array) -> str:
    """"cpu" for a NumPy array, "cuda" for a CuPy array."""
    if isinstance(array, np.ndarray) or np.isscalar(array):
        return "cpu"
    if type(array).__module__.startswith("cupy"):
        return "cuda"
    raise TypeError(f"expected a NumPy or CuPy array, got {type(array).__name__}")


def get_array_module(array):
    """numpy or cupy, whichever owns ``array`` (DeZero's ``get_array_module``)."""
    return np if device_of(array) == "cpu" else cupy()


def to_device(array, device: str):
    """Copy ``array`` to ``device`` (no copy when it is already there)."""
    device = check_device(device)
    if device_of(array) == device:
        return array
    if device == "cuda":
        return cupy().asarray(array)
    return cupy().asnumpy(array)


def kernel_source(filename: str) -> str:
    """The text of ``kernels/<filename>`` as shipped inside the package."""
    return resources.files("minifcrn.kernels").joinpath(filename).read_text()


@functools.cache
def cuda_module(filename: str):
    """``kernels/<filename>`` compiled once by CuPy's RawModule, then cached."""
    return cupy().RawModule(code=kernel_source(filename), options=("-std=c++14",))


def cuda_kernel(filename: str, name: str):
    """The ``extern "C" __global__`` function ``name`` of ``kernels/<filename>``."""
    return cuda_module(filename).get_function(name)
