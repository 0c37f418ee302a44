"""The emulated GPU backend: the CUDA kernels of ``kernels/*.cu`` run on the CPU, unchanged,
so that a machine without a GPU tests the very sources the GPU runs.

g++ compiles the ``.cu`` file as C++ with ``kernels/cuda_emulator.h``
force-included (it erases ``__global__`` and ``__device__`` and makes
``threadIdx``, ``blockIdx``, ``blockDim``, ``gridDim`` thread-local globals),
together with one launcher per ``extern "C" __global__`` kernel, generated
here from the kernel's signature::

    extern "C" void launch_<name>(const unsigned grid[3], const unsigned block[3], void** args)

which runs every thread of the grid in turn.  ``args`` follows CUDA's
``cuLaunchKernel``: an array of pointers to the argument values.  The library
is loaded with ctypes and called exactly like a CuPy ``RawModule``::

    mod = Emulator("pool.cu")
    f = mod.get_function("max_pool2d_forward_f32")
    f((blocks,), (256,), (x, np.int32(n), ..., y, argmax))

Arguments are checked against the signature, more strictly than CuPy does:
each pointer takes a NumPy array (C-contiguous, of the pointee's dtype,
writeable unless ``const``), each scalar a NumPy scalar of exactly its type.
CuPy passes a Python int as a 64-bit value, which a kernel's ``int`` misreads
on the GPU, so Python numbers are refused here (TypeError).

Libraries are cached per user, in ``$XDG_CACHE_HOME/minifcrn/emulator``
(``~/.cache/...`` by default), named by a hash of the sources and flags.
``sanitize=True`` builds with AddressSanitizer, whose runtime must then be
preloaded into Python: run it with the environment ``asan_environment()``.
"""
from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import os
import re
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

CXX = "g++"
FLAGS = ("-std=c++17", "-O2", "-fPIC", "-shared", "-ffp-contract=off")  # no FMA: results as NumPy's
SANITIZE_FLAGS = ("-fsanitize=address", "-fno-omit-frame-pointer", "-g")

C_TYPES = {"int": np.int32, "long long": np.int64, "float": np.float32, "double": np.float64}
MAX_THREADS_PER_BLOCK = 1024
MAX_GRID = (2**31 - 1, 65535, 65535)
MAX_BLOCK = (1024, 1024, 64)

_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_QUALIFIERS = {"const", "__restrict__", "volatile"}


@dataclasses.dataclass(frozen=True)
class Param:
    """One kernel parameter: ``const float* x`` is Param("x", "float", pointer=True, const=True)."""

    name: str
    ctype: str
    pointer: bool
    const: bool

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the value, or of the elements pointed to."""
        return np.dtype(C_TYPES[self.ctype])

    @property
    def declaration(self) -> str:
        """The C type, as written in the launcher: "const float*", "int"."""
        return f"{'const ' if self.const else ''}{self.ctype}{'*' if self.pointer else ''}"


def parse_param(text: str) -> Param:
    """``const float* __restrict__ x`` -> Param("x", "float", pointer=True, const=True)."""
    tokens = re.findall(r"\w+|\*", text)
    if len(tokens) < 2:
        raise ValueError(f"emulator: cannot read the parameter {text.strip()!r}")
    type_tokens = tokens[:-1]
    stars = type_tokens.count("*")
    ctype = " ".join(t for t in type_tokens if t != "*" and t not in _QUALIFIERS)
    if stars > 1 or ctype not in C_TYPES:
        raise ValueError(f"emulator: unsupported parameter type in {text.strip()!r}; "
                         f"supported: {', '.join(C_TYPES)} and pointers to them")
    const = "const" in type_tokens[:type_tokens.index("*")] if stars else False
    return Param(tokens[-1], ctype, pointer=bool(stars), const=const)


def parse_kernels(source: str) -> dict[str, tuple[Param, ...]]:
    """The ``extern "C" __global__`` kernels of a CUDA source: name -> parameters."""
    kernels = {}
    for name, params in _KERNEL.findall(_COMMENT.sub(" ", source)):
        params = params.strip()
        kernels[name] = () if params in ("", "void") else tuple(map(parse_param, params.split(",")))
    return kernels


def launcher_source(kernels: dict[str, tuple[Param, ...]]) -> str:
    """C++ declaring each kernel and defining ``launch_<name>(grid, block, args)`` for it."""
    parts = []
    for name, params in kernels.items():
        declared = ", ".join(p.declaration for p in params)
        unpacked = ", ".join(f"*static_cast<{p.declaration}*>(args[{i}])" for i, p in enumerate(params))
        parts.append(f'extern "C" __global__ void {name}({declared});\n'
                     f'extern "C" void launch_{name}(const unsigned int grid[3], const unsigned int block[3], '
                     f'void** args)\n'
                     f'{{\n    emulate_launch(grid, block, [&] {{ {name}({unpacked}); }});\n}}\n')
    return "\n".join(parts)


def cache_dir() -> Path:
    """Where built libraries are kept: $XDG_CACHE_HOME/minifcrn/emulator."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minifcrn" / "emulator"


def kernel_source(filename: str) -> str:
    """The text of ``kernels/<filename>`` as shipped inside the package."""
    return resources.files("minifcrn.kernels").joinpath(filename).read_text()


def _header() -> str:
    return kernel_source("cuda_emulator.h")


def _read_source(source) -> tuple[str, str, str]:
    """(file name, text, folder) of a kernel file: a name in kernels/ ("pool.cu") or a path."""
    path = Path(source) if isinstance(source, Path) or os.sep in source else \
        resources.files("minifcrn.kernels").joinpath(source)
    return path.name, path.read_text(), str(Path(str(path)).resolve().parent)


def compile_library(source, *, sanitize: bool = False) -> Path:
    """Build (or find in the cache) the CPU library of a kernel file; its path.

    g++ writes into a fresh temporary directory next to the cache entry, which
    is then renamed into place, so two processes building at once both
    succeed and a reader never sees half a file.
    """
    name, text, folder = _read_source(source)
    header, launchers = _header(), launcher_source(parse_kernels(text))
    flags = FLAGS + (SANITIZE_FLAGS if sanitize else ())
    key = hashlib.sha256("\0".join((header, text, launchers, CXX, *flags)).encode()).hexdigest()[:20]
    target = cache_dir() / f"{Path(name).stem}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        tmp = Path(tmp)
        (tmp / "cuda_emulator.h").write_text(header)
        (tmp / name).write_text(text)
        (tmp / "launchers.cpp").write_text(launchers)
        command = [CXX, *flags, f"-fdebug-prefix-map={tmp}={folder}",  # ASan reports name the real folder
                   "-include", "cuda_emulator.h", "-x", "c++", name, "launchers.cpp", "-o", "kernels.so"]
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # g++ itself runs without ASan
        result = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"emulator: g++ could not compile {name}:\n{result.stderr}")
        os.replace(tmp / "kernels.so", target)
    return target


def asan_runtime() -> str:
    """Path of g++'s AddressSanitizer runtime (libasan.so)."""
    return subprocess.run([CXX, "-print-file-name=libasan.so"], capture_output=True, text=True,
                          check=True).stdout.strip()


def asan_environment() -> dict:
    """os.environ plus what a Python process needs to load sanitized libraries."""
    return {**os.environ, "LD_PRELOAD": asan_runtime(), "ASAN_OPTIONS": "detect_leaks=0"}


def asan_loaded() -> bool:
    """Whether this process runs with the AddressSanitizer runtime preloaded."""
    maps = Path("/proc/self/maps")
    return maps.exists() and "libasan" in maps.read_text()


class Emulator:
    """A kernel file compiled for the CPU; the emulator's ``cupy.RawModule``."""

    def __init__(self, source, *, sanitize: bool = False):
        name, text, _ = _read_source(source)
        self.kernels = parse_kernels(text)
        if not self.kernels:
            raise ValueError(f'emulator: {name} has no extern "C" __global__ kernel')
        if sanitize and not asan_loaded():
            raise RuntimeError("emulator: sanitize=True needs the AddressSanitizer runtime preloaded; run "
                               "Python with LD_PRELOAD=$(g++ -print-file-name=libasan.so) "
                               "ASAN_OPTIONS=detect_leaks=0 (see asan_environment())")
        self.name = name
        self.library = ctypes.CDLL(str(compile_library(source, sanitize=sanitize)))

    def get_function(self, name: str) -> "EmulatedKernel":
        if name not in self.kernels:
            raise LookupError(f"emulator: {self.name} has no kernel {name!r}; it has {', '.join(self.kernels)}")
        launch = getattr(self.library, f"launch_{name}")
        launch.argtypes = (ctypes.POINTER(ctypes.c_uint),) * 2 + (ctypes.POINTER(ctypes.c_void_p),)
        launch.restype = None
        return EmulatedKernel(name, self.kernels[name], launch)


class EmulatedKernel:
    """One kernel, called as ``cupy.RawKernel``: ``kernel(grid, block, args)``."""

    def __init__(self, name, params, launch):
        self.name, self.params, self.launch = name, params, launch

    def __call__(self, grid, block, args, *, shared_mem=0):
        if shared_mem:
            raise ValueError(f"{self.name}: the emulator has no shared memory (shared_mem={shared_mem})")
        grid, block = _dims(self.name, "grid", grid, MAX_GRID), _dims(self.name, "block", block, MAX_BLOCK)
        if block[0] * block[1] * block[2] > MAX_THREADS_PER_BLOCK:
            raise ValueError(f"{self.name}: a block has at most {MAX_THREADS_PER_BLOCK} threads, got {block}")
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"{self.name}: args must be a tuple, got {type(args).__name__}")
        if len(args) != len(self.params):
            raise TypeError(f"{self.name}: takes {len(self.params)} arguments "
                            f"({', '.join(p.name for p in self.params)}), got {len(args)}")
        values = [self._value(i, p, a) for i, (p, a) in enumerate(zip(self.params, args))]
        pointers = (ctypes.c_void_p * len(values))(*(ctypes.addressof(v) for v in values))
        self.launch((ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), pointers)

    def _value(self, index, param, arg):
        """The ctypes cell holding one argument, after checking it against ``param``."""
        where = f"{self.name}: argument {index} ({param.declaration} {param.name})"
        if param.pointer:
            if not isinstance(arg, np.ndarray):
                raise TypeError(f"{where} needs a NumPy array, got {type(arg).__name__}")
            if arg.dtype != param.dtype:
                raise TypeError(f"{where} needs a {param.dtype} array, got {arg.dtype}")
            if not arg.flags.c_contiguous:
                raise ValueError(f"{where} needs a C-contiguous array (strides {arg.strides})")
            if not param.const and not arg.flags.writeable:
                raise ValueError(f"{where} is written by the kernel, but the array is read-only")
            return ctypes.c_void_p(arg.ctypes.data)
        if type(arg) is not param.dtype.type:
            raise TypeError(f"{where} needs a numpy.{param.dtype} scalar, got {type(arg).__name__} {arg!r}"
                            + (f"; pass numpy.{param.dtype}({arg!r})" if isinstance(arg, (int, float)) else ""))
        return np.ctypeslib.as_ctypes_type(param.dtype)(arg)


def _dims(kernel: str, what: str, dims, limits) -> tuple[int, int, int]:
    """A grid or block size (an int or a tuple of 1 to 3 ints) as (x, y, z), checked against CUDA's limits."""
    dims = tuple(dims) if isinstance(dims, (tuple, list)) else (dims,)
    if not 1 <= len(dims) <= 3 or not all(isinstance(d, (int, np.integer)) for d in dims):
        raise TypeError(f"{kernel}: {what} must be an int or a tuple of 1 to 3 ints, got {dims!r}")
    dims = tuple(int(d) for d in dims) + (1,) * (3 - len(dims))
    if not all(1 <= d <= most for d, most in zip(dims, limits)):
        raise ValueError(f"{kernel}: {what} {dims} is outside 1..{limits}")
    return dims
