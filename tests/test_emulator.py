"""The CPU emulator of CUDA kernels (minifcrn.backend.emulated): launch
geometry, argument passing and checking, parsing, the build cache, and
AddressSanitizer catching an out-of-bounds kernel."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from minifcrn.backend import emulated as emulator
from minifcrn.backend.emulated import Emulator, Param, compile_library, parse_kernels

pytestmark = pytest.mark.skipif(shutil.which(emulator.CXX) is None, reason="the CUDA emulator needs g++")

TOY = """
// Every thread writes its coordinates into its own row of `out` (12 ints).
extern "C" __global__ void coordinates(int* __restrict__ out)
{
    const long long block = ((long long)blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    const long long thread = ((long long)threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    int* row = out + 12 * (block * blockDim.x * blockDim.y * blockDim.z + thread);
    const unsigned int values[12] = {blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z,
                                     blockDim.x, blockDim.y, blockDim.z, gridDim.x, gridDim.y, gridDim.z};
    for (int k = 0; k < 12; ++k) row[k] = (int)values[k];
}

/* Thread 0 copies its scalar arguments out: each scalar type must arrive intact. */
extern "C" __global__ void echo(int i, long long l, float f, double d,
                                int* oi, long long* ol, float* of, double* od)
{
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        *oi = i;
        *ol = l;
        *of = f;
        *od = d;
    }
}

extern "C" __global__ void scale(const float* __restrict__ x, float a, int n, float* __restrict__ y)
{
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += (long long)blockDim.x * gridDim.x)
        y[t] = a * x[t];
}
"""

OUT_OF_BOUNDS = """
// Bug on purpose: `t <= n` lets the thread t = n write one element past the end.
extern "C" __global__ void write_past_end(float* out, int n)
{
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t <= n) out[t] = 1.0f;
}

extern "C" __global__ void write_in_bounds(float* out, int n)
{
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t < n) out[t] = 1.0f;
}
"""


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy") / "toy.cu"
    path.write_text(TOY)
    return Emulator(path)


def asan_available() -> bool:
    return Path(emulator.asan_runtime()).is_absolute()  # g++ prints the bare name when it has none


# -- launch geometry and argument passing -----------------------------------------------------

def test_every_thread_runs_once_with_its_indices(toy):
    grid, block = (2, 3, 2), (4, 2, 3)
    out = np.full((np.prod(grid) * np.prod(block), 12), -1, dtype=np.int32)
    toy.get_function("coordinates")(grid, block, (out,))
    expected = [(bx, by, bz, tx, ty, tz, *block, *grid)
                for bz in range(2) for by in range(3) for bx in range(2)
                for tz in range(3) for ty in range(2) for tx in range(4)]
    np.testing.assert_array_equal(out, np.array(expected, dtype=np.int32))


def test_scalars_of_every_type_arrive_intact(toy):
    outs = (np.zeros(1, np.int32), np.zeros(1, np.int64), np.zeros(1, np.float32), np.zeros(1, np.float64))
    scalars = (np.int32(-7), np.int64(2**40 + 3), np.float32(1.5), np.float64(np.pi))
    toy.get_function("echo")(1, 1, scalars + outs)
    assert [o[0] for o in outs] == list(scalars)


@pytest.mark.parametrize("grid, block", [(1, 1), ((1,), (7,)), ((2,), (32,)), ((100,), (256,))])
def test_grid_stride_loop_covers_any_launch(toy, grid, block):
    x = np.arange(1000, dtype=np.float32)
    y = np.zeros_like(x)
    toy.get_function("scale")(grid, block, (x, np.float32(2), np.int32(x.size), y))
    np.testing.assert_array_equal(y, 2 * x)


# -- argument checking ---------------------------------------------------------------------------

def scale_args(**changes):
    args = dict(x=np.ones(8, np.float32), a=np.float32(2), n=np.int32(8), y=np.zeros(8, np.float32))
    args.update(changes)
    return tuple(args.values())


@pytest.mark.parametrize("args, error, message", [
    (scale_args(n=8), TypeError, r"argument 2 \(int n\) needs a numpy.int32 scalar.*pass numpy.int32\(8\)"),
    (scale_args(n=np.int64(8)), TypeError, "needs a numpy.int32 scalar, got int64"),
    (scale_args(a=2.0), TypeError, r"argument 1 \(float a\) needs a numpy.float32 scalar"),
    (scale_args(a=np.float64(2)), TypeError, "needs a numpy.float32 scalar, got float64"),
    (scale_args(x=np.ones(8)), TypeError, r"argument 0 \(const float\* x\) needs a float32 array, got float64"),
    (scale_args(x=[1.0] * 8), TypeError, "needs a NumPy array, got list"),
    (scale_args(y=np.zeros((8, 2), np.float32)[:, 0]), ValueError, "needs a C-contiguous array"),
    (scale_args()[:3], TypeError, r"takes 4 arguments \(x, a, n, y\), got 3"),
    (np.ones(4, np.float32), TypeError, "args must be a tuple, got ndarray"),
])
def test_arguments_are_checked_against_the_signature(toy, args, error, message):
    with pytest.raises(error, match=message):
        toy.get_function("scale")(1, 32, args)


def test_const_pointers_take_read_only_arrays_and_others_do_not(toy):
    read_only = np.ones(8, np.float32)
    read_only.setflags(write=False)
    scale = toy.get_function("scale")
    scale(1, 32, scale_args(x=read_only))
    with pytest.raises(ValueError, match=r"argument 3 \(float\* y\) is written by the kernel"):
        scale(1, 32, scale_args(y=read_only))


@pytest.mark.parametrize("grid, block, error, message", [
    (0, 32, ValueError, "grid"),
    ((1, 70000), 32, ValueError, "grid"),
    (1, (32, 64), ValueError, "at most 1024 threads"),
    (1, (1, 1, 65), ValueError, "block"),
    ((1, 1, 1, 1), 32, TypeError, "1 to 3 ints"),
    (1.5, 32, TypeError, "grid must be an int"),
])
def test_launch_geometry_is_checked(toy, grid, block, error, message):
    with pytest.raises(error, match=message):
        toy.get_function("scale")(grid, block, scale_args())


def test_shared_memory_and_unknown_kernels_are_refused(toy):
    with pytest.raises(ValueError, match="no shared memory"):
        toy.get_function("scale")(1, 32, scale_args(), shared_mem=128)
    with pytest.raises(LookupError, match="has no kernel 'scal'; it has coordinates, echo, scale"):
        toy.get_function("scal")


# -- parsing and building ------------------------------------------------------------------------

def test_signatures_are_parsed_across_lines_and_comments():
    source = """
    /* extern "C" __global__ void commented_out(int n) */
    template <typename T> __device__ void helper(T* x) {}
    extern "C" __global__ void
    kernel(const double* __restrict__ x,   // input
           long long n, float* out)
    {}
    extern "C" __global__ void no_args(void) {}
    """
    assert parse_kernels(source) == {
        "kernel": (Param("x", "double", pointer=True, const=True), Param("n", "long long", pointer=False,
                                                                          const=False),
                   Param("out", "float", pointer=True, const=False)),
        "no_args": (),
    }


@pytest.mark.parametrize("param", ["unsigned char* p", "float** p", "n"])
def test_unsupported_parameters_are_refused(param):
    with pytest.raises(ValueError, match="emulator: "):
        parse_kernels(f'extern "C" __global__ void k({param}) {{}}')


def test_a_file_without_kernels_is_refused(tmp_path):
    (tmp_path / "empty.cu").write_text("__device__ int helper() { return 1; }\n")
    with pytest.raises(ValueError, match='empty.cu has no extern "C" __global__ kernel'):
        Emulator(tmp_path / "empty.cu")


def test_compile_errors_show_the_compiler_message(tmp_path):
    (tmp_path / "broken.cu").write_text('extern "C" __global__ void broken(int n) { undeclared = n; }\n')
    with pytest.raises(RuntimeError, match="(?s)could not compile broken.cu.*undeclared"):
        Emulator(tmp_path / "broken.cu")


def test_libraries_are_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    source = tmp_path / "toy.cu"
    source.write_text(TOY)
    first = compile_library(source)
    built_at = first.stat().st_mtime_ns
    assert compile_library(source) == first and first.stat().st_mtime_ns == built_at
    assert first.parent == tmp_path / "cache" / "minifcrn" / "emulator"
    source.write_text(TOY + "\n// changed\n")
    assert compile_library(source) != first
    assert sorted(p.suffix for p in first.parent.iterdir()) == [".so", ".so"]  # no temporary left


def test_two_processes_building_at_once_both_succeed(tmp_path):
    source = tmp_path / "toy.cu"
    source.write_text(TOY)
    script = f"from minifcrn.backend.emulated import compile_library; print(compile_library({str(source)!r}))"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    builds = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
              for _ in range(2)]
    paths = {b.communicate(timeout=120)[0].strip() for b in builds}
    assert all(b.returncode == 0 for b in builds)
    assert len(paths) == 1 and Path(paths.pop()).is_file()
    assert len(list((tmp_path / "cache" / "minifcrn" / "emulator").iterdir())) == 1


# -- AddressSanitizer ----------------------------------------------------------------------------

def test_sanitize_needs_the_asan_runtime_preloaded(tmp_path):
    (tmp_path / "oob.cu").write_text(OUT_OF_BOUNDS)
    with pytest.raises(RuntimeError, match="LD_PRELOAD"):
        Emulator(tmp_path / "oob.cu", sanitize=True)


@pytest.mark.skipif(not asan_available(), reason="g++ has no AddressSanitizer runtime (libasan)")
def test_address_sanitizer_catches_an_out_of_bounds_write(tmp_path):
    source = tmp_path / "oob.cu"
    source.write_text(OUT_OF_BOUNDS)
    compile_library(source, sanitize=True)
    script = textwrap.dedent(f"""
        import numpy as np
        from minifcrn.backend.emulated import Emulator
        mod = Emulator({str(source)!r}, sanitize=True)
        out = np.zeros(1000, np.float32)
        mod.get_function("write_in_bounds")((4,), (256,), (out, np.int32(out.size)))
        print("in bounds: clean", flush=True)
        mod.get_function("write_past_end")((4,), (256,), (out, np.int32(out.size)))
        print("past the end: not caught", flush=True)
    """)
    result = subprocess.run([sys.executable, "-c", script], env=emulator.asan_environment(),
                            capture_output=True, text=True, timeout=120)
    assert "in bounds: clean" in result.stdout
    assert "not caught" not in result.stdout
    assert result.returncode != 0
    assert "AddressSanitizer: heap-buffer-overflow" in result.stderr
    assert "write_past_end" in result.stderr  # the report points at the kernel
