"""The GPU backend: CuPy arrays, and the kernels of ``kernels/*.cu`` compiled by CuPy's RawModule.

CuPy is imported on the first request for "cuda", so the package imports and runs
on a machine without CuPy or a GPU.
"""
from __future__ import annotations

import functools

GPU_INSTALL_HINT = ('pip install "minifcrn[gpu]" (cupy-cuda12x; on CUDA 13 use '
                    '"minifcrn[gpu-cuda13]", cupy-cuda13x)')


class DeviceError(RuntimeError):
    """The requested device cannot be used here."""


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


@functools.cache
def cuda_module(filename: str):
    """``kernels/<filename>`` compiled once by CuPy's RawModule, then cached."""
    from minifcrn.backend.emulated import kernel_source

    return cupy().RawModule(code=kernel_source(filename), options=("-std=c++14",))


def cuda_kernel(filename: str, name: str):
    """The ``extern "C" __global__`` function ``name`` of ``kernels/<filename>``."""
    return cuda_module(filename).get_function(name)
