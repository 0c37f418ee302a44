"""Devices and array modules: "cpu" is NumPy, "cuda" is CuPy.

Every op asks ``get_array_module(x)`` for ``xp`` and writes one code path for
both.  CuPy is imported lazily, on the first request for "cuda", so the
package imports and runs on a machine without CuPy or a GPU.

The ops that have a CUDA kernel in ``kernels/*.cu`` ask ``find_kernel`` for
it: on a CuPy array they get the kernel compiled by CuPy's RawModule; on a
NumPy array, while CUDA emulation is on, the same kernel compiled for the
CPU by ``minifcrn.testing.emulator``; otherwise None, and they run their
Numba loops.  Emulation is switched on by ``emulate_cuda()`` or by the
environment variable MINIFCRN_EMULATE_CUDA=1 (=asan: built with
AddressSanitizer); it tests the GPU code path, kernels included, on a
machine without a GPU.
"""
from __future__ import annotations

import contextlib
import functools
import os
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


def keep_freed_memory() -> bool:
    """Have the C allocator keep freed memory for reuse rather than hand it back at once.

    glibc serves every allocation above its mmap threshold (at most 32 MiB, usually
    far less) with fresh pages, which the kernel must fault in and zero on first
    touch, and unmaps them on free: FCRN-A counting one 1024x1024 image spends
    about a quarter of its time there (3.0 s; 2.2 s with this setting, 2026-12-02).
    This sets M_MMAP_THRESHOLD to 1 GiB and M_TRIM_THRESHOLD to 2 GiB, so large
    arrays come from the heap and freed ones are reused; the peak resident memory
    stays what it was, but it is not returned until the process ends.  It is
    process-wide, so the package never calls it on import: the ``minifcrn``
    command does, and a long-running Python job may.  False where the C library
    is not glibc (nothing changed).
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, (1 << 31) - 1))


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


# -- running the CUDA kernels ------------------------------------------------------

EMULATE_ENV = "MINIFCRN_EMULATE_CUDA"  # "1": emulate; "asan": emulate under AddressSanitizer
KERNEL_SUFFIX = {np.dtype(np.float32): "_f32", np.dtype(np.float64): "_f64"}
BLOCK_SIZE = 256  # threads per block
MAX_GRID_SIZE = 65535  # blocks per launch; the kernels' grid-stride loops cover any further work
INT32 = np.iinfo(np.int32)


def _emulation_from_env() -> str:
    value = os.environ.get(EMULATE_ENV, "")
    modes = {"": "off", "0": "off", "1": "on", "asan": "asan"}
    if value not in modes:
        raise ValueError(f"{EMULATE_ENV} must be 0, 1 or asan, got {value!r}")
    return modes[value]


_emulation = _emulation_from_env()  # "off", "on" or "asan"


@contextlib.contextmanager
def emulate_cuda(enabled: bool = True, sanitize: bool = False):
    """Inside the block, ops on NumPy arrays run the CUDA kernels, compiled for the CPU.

    ``sanitize`` builds them with AddressSanitizer (the process must run with
    it preloaded, see ``minifcrn.testing.emulator.asan_environment``);
    ``emulate_cuda(False)`` switches emulation off, e.g. for a reference result.
    """
    global _emulation
    previous = _emulation
    _emulation = ("asan" if sanitize else "on") if enabled else "off"
    try:
        yield
    finally:
        _emulation = previous


def find_kernel(array, filename: str, name: str):
    """A ``Kernel`` running ``name`` of ``kernels/<filename>`` on ``array``, or None.

    The variant follows ``array.dtype``: ``name_f32`` or ``name_f64``.  A CuPy
    array gets CuPy's compiled kernel, a NumPy array the emulated one while
    emulation is on; None tells the op to take its NumPy/Numba path.
    """
    on_gpu = device_of(array) == "cuda"
    if not on_gpu and _emulation == "off":
        return None
    dtype = np.dtype(array.dtype)
    if dtype not in KERNEL_SUFFIX:
        raise TypeError(f"{name}: the CUDA kernels take float32 or float64 arrays, got {dtype}")
    full_name = name + KERNEL_SUFFIX[dtype]
    if on_gpu:
        return Kernel(cuda_kernel(filename, full_name), dtype)
    return Kernel(emulator_module(filename, _emulation == "asan").get_function(full_name), dtype)


@functools.cache
def emulator_module(filename: str, sanitize: bool = False):
    """``kernels/<filename>`` compiled for the CPU (``minifcrn.testing.emulator``), loaded once."""
    from minifcrn.testing.emulator import Emulator  # needs g++; only emulation imports it

    return Emulator(filename, sanitize=sanitize)


class Kernel:
    """A CUDA kernel (CuPy's, or the emulator's) for arrays of one float dtype."""

    def __init__(self, function, dtype):
        self.function, self.dtype = function, np.dtype(dtype)

    def __call__(self, n: int, *args):
        """Launch over ``n`` work items: ceil(n / BLOCK_SIZE) blocks, at most MAX_GRID_SIZE.

        Python and NumPy ints are passed as numpy.int32 (the kernels' ``int``),
        floats as the variant's float type; arrays must be C-contiguous, float
        arrays of the variant's dtype.
        """
        if n == 0:
            return
        grid = min(-(-n // BLOCK_SIZE), MAX_GRID_SIZE)
        self.function((grid,), (BLOCK_SIZE,), tuple(map(self._argument, args)))

    def _argument(self, value):
        if isinstance(value, (int, np.integer)):
            if not INT32.min <= value <= INT32.max:
                raise OverflowError(f"kernel argument {value} does not fit the kernels' int (int32)")
            return np.int32(value)
        if isinstance(value, (float, np.floating)):
            return self.dtype.type(value)
        if value.dtype.kind == "f" and value.dtype != self.dtype:
            raise TypeError(f"kernel argument of dtype {value.dtype} in a {self.dtype} kernel")
        if not value.flags.c_contiguous:
            raise ValueError(f"kernel arguments must be C-contiguous arrays, got strides {value.strides}")
        return value
