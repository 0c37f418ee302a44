"""Devices, array modules and the code paths an op can take.

"cpu" is NumPy, "cuda" is CuPy.  Every op asks ``get_array_module(x)`` for ``xp``
and writes one code path for both (DeZero's ``get_array_module``).

An op runs on one of four paths, named in ``PATHS``:

    reference      NumPy arrays: the Numba loops that mirror the CUDA kernels, name for name
    cpu-fast       NumPy arrays: the CPU fast paths of ``minifcrn/cpu/`` where an op has one
                   (the default), else the reference loops
    cuda-emulated  NumPy arrays: the CUDA kernels of ``kernels/*.cu`` compiled for the CPU
                   (``minifcrn.backend.emulated``), to test the GPU code on a machine without one
    cuda           CuPy arrays: the same kernels compiled by CuPy (``minifcrn.backend.cupy``)

A CuPy array always takes "cuda"; NumPy arrays take the CPU path chosen by
``use_path`` (or by the environment: MINIFCRN_EMULATE_CUDA=1 for "cuda-emulated",
=asan for the same built with AddressSanitizer).  ``launch`` is the one place
where an op's kernel and its Numba mirror part ways.
"""
from __future__ import annotations

import contextlib
import functools
import os

import numpy as np

from minifcrn.backend.cupy import GPU_INSTALL_HINT, DeviceError, cuda_available, cuda_kernel, cupy  # noqa: F401

DEVICES = ("cpu", "cuda")
PATHS = ("reference", "cpu-fast", "cuda-emulated", "cuda")


def check_device(device: str) -> str:
    """Return ``device`` normalised ("cuda:0" -> "cuda"), or raise ValueError."""
    if not isinstance(device, str):
        raise TypeError(f"device must be 'cpu' or 'cuda', got {device!r}")
    name = device.split(":")[0].lower()
    if name not in DEVICES:
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return name


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
    """numpy or cupy, whichever owns ``array``."""
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
    touch, and unmaps them on free.  This sets M_MMAP_THRESHOLD to 1 GiB and
    M_TRIM_THRESHOLD to 2 GiB, so large arrays come from the heap and freed ones
    are reused; the peak resident memory stays what it was, but it is not returned
    until the process ends.  It is process-wide, so the package never calls it on
    import: the ``minifcrn`` command does, and a long-running Python job may.
    False where the C library is not glibc (nothing changed).
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, (1 << 31) - 1))


# -- which path NumPy arrays take -------------------------------------------------------------

EMULATE_ENV = "MINIFCRN_EMULATE_CUDA"  # "1": emulate; "asan": emulate under AddressSanitizer


def _path_from_env() -> tuple[str, bool]:
    value = os.environ.get(EMULATE_ENV, "")
    modes = {"": ("cpu-fast", False), "0": ("cpu-fast", False), "1": ("cuda-emulated", False),
             "asan": ("cuda-emulated", True)}
    if value not in modes:
        raise ValueError(f"{EMULATE_ENV} must be 0, 1 or asan, got {value!r}")
    return modes[value]


_cpu_path, _sanitize = _path_from_env()


@contextlib.contextmanager
def use_path(path: str, sanitize: bool = False):
    """Inside the block, ops on NumPy arrays take ``path``: "reference", "cpu-fast" or
    "cuda-emulated" (``sanitize``: its kernels built with AddressSanitizer, which the
    process must have preloaded, see ``minifcrn.backend.emulated.asan_environment``)."""
    global _cpu_path, _sanitize
    if path not in PATHS[:3]:
        raise ValueError(f"use_path: NumPy arrays take one of {PATHS[:3]}, got {path!r}")
    previous = _cpu_path, _sanitize
    _cpu_path, _sanitize = path, bool(sanitize)
    try:
        yield
    finally:
        _cpu_path, _sanitize = previous


def emulate_cuda(enabled: bool = True, sanitize: bool = False):
    """``use_path("cuda-emulated")``; ``emulate_cuda(False)`` is ``use_path("cpu-fast")``."""
    return use_path("cuda-emulated" if enabled else "cpu-fast", sanitize)


def path_of(array) -> str:
    """The path an op on ``array`` takes now (one of ``PATHS``)."""
    return "cuda" if device_of(array) == "cuda" else _cpu_path


def fast_cpu(array) -> bool:
    """Whether an op on ``array`` takes its CPU fast path, where it has one."""
    return path_of(array) == "cpu-fast"


# -- running the CUDA kernels ------------------------------------------------------------------

KERNEL_SUFFIX = {np.dtype(np.float32): "_f32", np.dtype(np.float64): "_f64"}
BLOCK_SIZE = 256  # threads per block
MAX_GRID_SIZE = 65535  # blocks per launch; the kernels' grid-stride loops cover any further work
INT32 = np.iinfo(np.int32)


def find_kernel(array, filename: str, name: str):
    """A ``Kernel`` running ``name`` of ``kernels/<filename>`` on ``array``, or None.

    The variant follows ``array.dtype``: ``name_f32`` or ``name_f64``.  A CuPy array
    gets CuPy's compiled kernel, a NumPy array the emulated one on the "cuda-emulated"
    path; None on the CPU paths.
    """
    path = path_of(array)
    if path not in ("cuda", "cuda-emulated"):
        return None
    dtype = np.dtype(array.dtype)
    if dtype not in KERNEL_SUFFIX:
        raise TypeError(f"{name}: the CUDA kernels take float32 or float64 arrays, got {dtype}")
    full_name = name + KERNEL_SUFFIX[dtype]
    if path == "cuda":
        return Kernel(cuda_kernel(filename, full_name), dtype)
    return Kernel(emulator_module(filename, _sanitize).get_function(full_name), dtype)


def launch(array, filename: str, name: str, threads: int, args: tuple, mirror):
    """Run kernel ``name`` of ``kernels/<filename>`` over ``threads`` work items with ``args``
    when ``array`` takes a CUDA path, else ``mirror()``: the Numba loop of the same name
    that mirrors it (already bound to its arguments)."""
    kernel = find_kernel(array, filename, name)
    if kernel is None:
        mirror()
    else:
        kernel(threads, *args)


@functools.cache
def emulator_module(filename: str, sanitize: bool = False):
    """``kernels/<filename>`` compiled for the CPU (``minifcrn.backend.emulated``), loaded once."""
    from minifcrn.backend.emulated import Emulator  # needs g++; only emulation imports it

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
