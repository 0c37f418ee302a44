"""Every CUDA kernel in kernels/*.cu against the NumPy/Numba path.

* Emulated (no GPU needed): the public ops run twice, on the "reference" path
  (the Numba loops) and on "cuda-emulated" (the unchanged .cu sources compiled
  for the CPU by minifcrn.backend.emulated), on hypothesis-drawn shapes.
  float64 must agree to 1e-12 relative (in practice bit for bit: same formulas,
  same order of summation), float32 closely; im2col and col2im are also
  compared directly with the Numba loops they mirror.  Capping the grid at 1 or 3 blocks makes the kernels'
  grid-stride loops do the work.
* AddressSanitizer: every kernel file built with -fsanitize=address and run
  through the ops in a subprocess with libasan preloaded.
* PTX: every kernel file compiles with nvcc for sm_80.
* GPU (@pytest.mark.gpu): the CuPy path against NumPy on a real device.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from importlib import resources
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from helpers import assert_same_bits
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

import minifcrn as mf
from minifcrn import backend, nn, optim
from minifcrn import functional as F
from minifcrn.backend import emulate_cuda, find_kernel, to_device
from minifcrn.backend.emulated import asan_environment, asan_runtime, compile_library, parse_kernels
from minifcrn.ops.conv import col2im, im2col
from minifcrn.ops.pool import max_pool2d_forward

KERNEL_DIR = Path(str(resources.files("minifcrn.kernels")))
KERNEL_FILES = sorted(p.name for p in KERNEL_DIR.glob("*.cu"))
TESTED = {"im2col", "col2im", "max_pool2d_forward", "max_pool2d_backward", "upsample_bilinear_forward",
          "upsample_bilinear_backward", "relu_forward", "relu_backward", "mse_forward",
          "sgd_update"}

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA emulator needs g++")
needs_gpu = pytest.mark.skipif(not backend.cuda_available(), reason="needs CuPy and a CUDA GPU")

dtypes = st.sampled_from([np.float32, np.float64])
channels = st.one_of(st.integers(1, 4), st.just(300))
max_grids = st.sampled_from([1, 3, backend.MAX_GRID_SIZE])
seeds = st.integers(0, 2**32 - 1)
SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0])


def kernel_names(filename: str) -> list[str]:
    return list(parse_kernels((KERNEL_DIR / filename).read_text()))


def numpy_and_kernels(run, max_grid=backend.MAX_GRID_SIZE):
    """``run()`` on the reference path (the Numba mirrors), then on the emulated kernels with at most
    ``max_grid`` blocks."""
    with backend.use_path("reference"):
        expected = run()
    with emulate_cuda(), mock.patch.object(backend, "MAX_GRID_SIZE", max_grid):
        actual = run()
    return actual, expected


def assert_matches(actual, expected, same_order=True, terms=0.0):
    """float64 to 1e-12 relative; float32 to ~1e-5 of the scale (each array's largest value).

    ``same_order=False`` allows for sums taken in another order (a GPU fuses
    multiply-adds; the NumPy conv2d for stride 1 uses other matrix products):
    float64 then to 1e-10 relative or 1e-12 of the scale.  ``terms``: the size of
    the terms an output adds up, when they can cancel to much less than
    themselves (w - d in SGD): a fused multiply-add rounds once where NumPy rounds
    twice, a difference of an ulp of the terms, not of the result, so the
    absolute tolerance is then 1e-14 (float64) or 1e-6 (float32) of ``terms``.
    """
    for a, e in zip(actual, expected, strict=True):
        assert a.dtype == e.dtype and a.shape == e.shape
        finite = np.abs(e[np.isfinite(e)])
        scale = finite.max() if finite.size else 1.0
        if e.dtype == np.float64:
            np.testing.assert_allclose(a, e, rtol=1e-12 if same_order else 1e-10,
                                       atol=max(0 if same_order else 1e-12 * scale, 1e-14 * terms))
        else:
            np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6 * max(scale, terms))


def test_assert_same_bits_forgives_nan_payloads_only_when_asked():
    canonical, quiet = np.array([0x7FFFFFFF, 0x7FC00000], dtype=np.uint32).view(np.float32)
    a, b = np.array([canonical, -0.0, 1.0], np.float32), np.array([quiet, -0.0, 1.0], np.float32)
    assert_same_bits([a], [b], nan_payloads=False)
    with pytest.raises(AssertionError):
        assert_same_bits([a], [b])
    for other in ([quiet, 0.0, 1.0], [1.0, -0.0, 1.0], [quiet, -0.0, quiet]):
        with pytest.raises(AssertionError):  # +0 for -0, a number for a NaN, a NaN for a number
            assert_same_bits([a], [np.array(other, np.float32)], nan_payloads=False)


def with_specials(rng, a, fraction):
    """``a`` with about ``fraction`` of its elements replaced by NaN, +-inf or +-0."""
    mask = rng.random(a.shape) < fraction
    a[mask] = rng.choice(SPECIALS, size=int(mask.sum())).astype(a.dtype)
    return a


# -- the passes compared (forward and backward through the public ops) ------------------------

def conv_pass(x, w, b, gy, stride, padding, device="cpu"):
    xt, wt, bt = (mf.tensor(a, requires_grad=True, device=device) for a in (x, w, b))
    y = F.conv2d(xt, wt, bt, stride=stride, padding=padding)
    y.backward(gy)
    return [y.numpy(), *(to_device(t.grad, "cpu") for t in (xt, wt, bt))]


def pool_pass(x, gy, k, s, device="cpu"):
    xt = mf.Tensor(to_device(x, device), requires_grad=True)  # on the CPU, x itself: maybe a strided view
    y = F.max_pool2d(xt, k, s)
    y.backward(gy)
    _, argmax = max_pool2d_forward(xt.data, k, s)
    return [y.numpy(), to_device(xt.grad, "cpu"), to_device(argmax, "cpu")]


def upsample_pass(x, gy, f, device="cpu"):
    xt = mf.tensor(x, requires_grad=True, device=device)
    y = F.upsample_bilinear(xt, f)
    y.backward(gy)
    return [y.numpy(), to_device(xt.grad, "cpu")]


def relu_pass(x, gy, device="cpu"):
    xt = mf.Tensor(to_device(x, device), requires_grad=True)
    y = F.relu(xt)
    with np.errstate(invalid="ignore"):  # inf * [y > 0] = NaN where y <= 0, on both paths
        y.backward(gy)
    return [y.numpy(), to_device(xt.grad, "cpu")]


def sgd_pass(init, grads, lr, momentum, weight_decay, device="cpu"):
    xp = backend.xp_for(device)
    params = [nn.Parameter(xp.array(a)) for a in init]
    opt = optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    for step in grads:
        for p, g in zip(params, step):
            p.grad = None if g is None else xp.array(g)
        opt.step()
    return [to_device(a, "cpu") for a in [p.data for p in params] + [v for v in opt.velocity if v is not None]]


def mse_partials(p, t, parts):
    partial = backend.get_array_module(p).empty(parts, dtype=p.dtype)
    find_kernel(p, "elementwise.cu", "mse_forward")(parts, p, t, p.size, parts, partial)
    return to_device(partial, "cpu")


def sequential_partials(p, t, parts):
    """partial[r] = sum of d[e]^2 over e = r, r + parts, ..., added left to right (cumsum is sequential)."""
    d = (p - t).ravel()
    sq = d * d
    return np.array([np.cumsum(sq[r::parts])[-1] if r < sq.size else 0 for r in range(parts)], dtype=p.dtype)


# -- conventions ---------------------------------------------------------------------------------

def test_every_kernel_has_both_precisions_and_is_tested_here():
    names = {n for f in KERNEL_FILES for n in kernel_names(f)}
    bases = {n.rsplit("_", 1)[0] for n in names}
    assert names == {b + suffix for b in bases for suffix in ("_f32", "_f64")}
    assert bases == TESTED


@needs_gxx
def test_ops_launch_their_kernels_only_when_emulating(monkeypatch):
    launched = []
    launch = backend.Kernel.__call__

    def spy(self, n, *args):
        launched.append(self.function.name)
        return launch(self, n, *args)

    monkeypatch.setattr(backend.Kernel, "__call__", spy)
    rng = np.random.default_rng(0)

    def train_step():
        conv = nn.Conv2d(2, 3, 3, padding=1)
        x = mf.tensor(rng.standard_normal((1, 2, 6, 6)), requires_grad=True, dtype=np.float32)
        y = F.upsample_bilinear(F.max_pool2d(F.relu(conv(x)), 2), 2)
        F.mse_loss(y, mf.tensor(np.zeros(y.shape, np.float32))).backward()
        optim.SGD(conv.parameters(), lr=0.1).step()

    for path in ("reference", "cpu-fast"):
        with backend.use_path(path):
            train_step()
    assert launched == []
    with emulate_cuda():
        train_step()
    assert set(launched) == {name + "_f32" for name in TESTED}


def test_find_kernel_follows_device_emulation_and_dtype():
    x = np.zeros((2, 3), np.float16)
    with emulate_cuda(False):
        assert find_kernel(x, "elementwise.cu", "relu_forward") is None
    with emulate_cuda(), pytest.raises(TypeError, match="float32 or float64 arrays, got float16"):
        find_kernel(x, "elementwise.cu", "relu_forward")


@pytest.mark.parametrize("value, mode", [("", ("cpu-fast", False)), ("0", ("cpu-fast", False)),
                                         ("1", ("cuda-emulated", False)), ("asan", ("cuda-emulated", True))])
def test_emulation_can_be_switched_on_by_environment(monkeypatch, value, mode):
    monkeypatch.setenv(backend.EMULATE_ENV, value)
    assert backend._path_from_env() == mode
    monkeypatch.setenv(backend.EMULATE_ENV, "yes")
    with pytest.raises(ValueError, match="must be 0, 1 or asan"):
        backend._path_from_env()


@needs_gxx
def test_launch_arguments_are_converted_and_checked():
    x = np.zeros(4, np.float32)
    with emulate_cuda():
        kernel = find_kernel(x, "elementwise.cu", "relu_forward")
        kernel(0, "not even looked at")  # no work: no launch
        with pytest.raises(OverflowError, match="does not fit the kernels' int"):
            kernel(4, x, 2**31, x.copy())
        with pytest.raises(TypeError, match="dtype float64 in a float32 kernel"):
            kernel(4, x.astype(np.float64), 4, x.copy())
        with pytest.raises(ValueError, match="C-contiguous"):
            kernel(4, x, 4, np.zeros(8, np.float32)[::2])


# -- emulated kernels against NumPy/Numba --------------------------------------------------------

@needs_gxx
@settings(deadline=None, max_examples=60)
@given(data=st.data(), dtype=dtypes, max_grid=max_grids, seed=seeds)
def test_conv2d_im2col_col2im(data, dtype, max_grid, seed):
    n, c, o = data.draw(st.integers(1, 3)), data.draw(channels), data.draw(st.integers(1, 4))
    k, stride, padding = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3)), data.draw(st.integers(0, 2))
    h, w = (data.draw(st.integers(max(1, k - 2 * padding), 12)) for _ in range(2))
    ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    rng = np.random.default_rng(seed)
    x, wt, b, gy = (rng.standard_normal(s).astype(dtype) for s in ((n, c, h, w), (o, c, k, k), (o,), (n, o, ho, wo)))
    gcols = rng.standard_normal((c * k * k, n * ho * wo)).astype(dtype)
    # the kernels against the Numba loops, which copy and sum the same terms in the same order
    assert_same_bits(*numpy_and_kernels(lambda: [im2col(x, k, k, stride, padding)], max_grid))
    assert_matches(*numpy_and_kernels(lambda: [col2im(gcols, x.shape, k, k, stride, padding)], max_grid))
    # the whole op, forward and backward (for stride 1 the NumPy path has its own matrix products)
    assert_matches(*numpy_and_kernels(lambda: conv_pass(x, wt, b, gy, stride, padding), max_grid),
                   same_order=stride > 1)


@needs_gxx
@settings(deadline=None, max_examples=60)
@given(data=st.data(), dtype=dtypes, max_grid=max_grids, seed=seeds)
def test_max_pool2d_ties_nan_and_overlapping_windows(data, dtype, max_grid, seed):
    n, c, k, s = data.draw(st.integers(1, 3)), data.draw(channels), data.draw(st.integers(1, 4)), \
        data.draw(st.integers(1, 4))
    h, w = (data.draw(st.integers(k, 13)) for _ in range(2))
    rng = np.random.default_rng(seed)
    if data.draw(st.booleans(), label="integer values, many ties"):
        x = rng.integers(-2, 3, (n, c, h, 2 * w)).astype(dtype)
    else:
        x = rng.standard_normal((n, c, h, 2 * w)).astype(dtype)
    x = with_specials(rng, x, data.draw(st.sampled_from([0.0, 0.1])))[..., ::2]  # a strided view
    gy = rng.standard_normal((n, c, (h - k) // s + 1, (w - k) // s + 1)).astype(dtype)
    (y, gx, argmax), (y_ref, gx_ref, argmax_ref) = numpy_and_kernels(lambda: pool_pass(x, gy, k, s), max_grid)
    assert_same_bits([y, argmax], [y_ref, argmax_ref])  # the same comparisons pick the same winner
    assert_matches([gx], [gx_ref])  # float32: Numba adds in double, the kernel in float


@needs_gxx
@settings(deadline=None, max_examples=40)
@given(data=st.data(), dtype=dtypes, max_grid=max_grids, seed=seeds)
def test_upsample_bilinear(data, dtype, max_grid, seed):
    n, c, f = data.draw(st.integers(1, 3)), data.draw(channels), data.draw(st.integers(1, 4))
    h, w = (data.draw(st.integers(1, 9)) for _ in range(2))
    rng = np.random.default_rng(seed)
    x, gy = (rng.standard_normal(s).astype(dtype) for s in ((n, c, h, w), (n, c, h * f, w * f)))
    assert_matches(*numpy_and_kernels(lambda: upsample_pass(x, gy, f), max_grid), same_order=False)


@needs_gxx
@settings(deadline=None, max_examples=60)
@given(shape=array_shapes(min_dims=0, max_dims=4, max_side=9), dtype=dtypes, max_grid=max_grids,
       transpose=st.booleans(), seed=seeds)
def test_relu_is_bitwise_identical(shape, dtype, max_grid, transpose, seed):
    rng = np.random.default_rng(seed)
    x = with_specials(rng, rng.standard_normal(shape).astype(dtype), 0.2)
    x = x.T if transpose else x  # a non-contiguous view
    gy = with_specials(rng, rng.standard_normal(x.shape).astype(dtype), 0.2)
    assert_same_bits(*numpy_and_kernels(lambda: relu_pass(x, gy), max_grid))


@needs_gxx
@settings(deadline=None, max_examples=40)
@given(data=st.data(), dtype=dtypes, max_grid=max_grids, seed=seeds,
       lr=st.floats(1e-4, 1.0), momentum=st.sampled_from([0.0, 0.5, 0.9]),
       weight_decay=st.sampled_from([0.0, 5e-4, 0.1]))
def test_sgd_update(data, dtype, max_grid, seed, lr, momentum, weight_decay):
    shapes = data.draw(st.lists(array_shapes(min_dims=0, max_dims=4, max_side=7), min_size=1, max_size=3))
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[None if rng.random() < 0.2 else rng.standard_normal(s).astype(dtype) for s in shapes]
             for _ in range(data.draw(st.integers(1, 3)))]
    actual, expected = numpy_and_kernels(lambda: sgd_pass(init, grads, lr, momentum, weight_decay), max_grid)
    largest = [np.abs(a).max() for a in [*init, *expected] if a.size]  # the weights and velocities added up
    assert_matches(actual, expected, terms=max(largest, default=0.0))


@needs_gxx
@settings(deadline=None, max_examples=30)
@given(shape=array_shapes(min_dims=1, max_dims=4, max_side=11), parts=st.sampled_from([1, 7, 256, 2000]),
       dtype=dtypes, max_grid=max_grids, seed=seeds)
def test_mse_forward_partial_sums(shape, parts, dtype, max_grid, seed):
    rng = np.random.default_rng(seed)
    p, t = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    with emulate_cuda(), mock.patch.object(backend, "MAX_GRID_SIZE", max_grid):
        partial = mse_partials(p, t, parts)
    assert_same_bits([partial], [sequential_partials(p, t, parts)])
    assert_matches([np.asarray(partial.sum())], [np.asarray(((p - t) ** 2).sum())])


# -- AddressSanitizer and PTX --------------------------------------------------------------------

NETWORK_CASES = [  # conv (N, C, H, W, O, k, stride, padding), pool (k, s), upsample f
    ((1, 1, 5, 7, 1, 3, 1, 1), (2, 2), 2),
    ((2, 3, 9, 6, 4, 4, 2, 2), (3, 1), 3),
    ((1, 300, 4, 3, 2, 2, 1, 0), (2, 1), 1),
    ((3, 2, 17, 1, 5, 1, 3, 0), (1, 1), 4),
]

ASAN_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import minifcrn as mf
    from minifcrn import functional as F, optim
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for (n, c, h, w, o, k, stride, padding), (pool_k, pool_s), f in json.loads(sys.argv[1]):
            x, wt, b = (mf.tensor(rng.standard_normal(s), requires_grad=True, dtype=dtype)
                        for s in ((n, c, h, w), (o, c, k, k), (o,)))
            y = F.conv2d(x, wt, b, stride, padding)
            y = F.upsample_bilinear(F.max_pool2d(F.relu(y), pool_k, pool_s), f)
            (y * y).sum().backward()
            optim.SGD([wt, b], lr=0.1, weight_decay=1e-3).step()
            F.mse_loss(x, mf.tensor(np.zeros_like(x.data)))
    print("sanitized kernels ran")
""")


@needs_gxx
def test_every_kernel_file_is_clean_under_address_sanitizer():
    if not Path(asan_runtime()).is_absolute():
        pytest.skip("g++ has no AddressSanitizer runtime (libasan)")
    for filename in KERNEL_FILES:
        compile_library(filename, sanitize=True)  # build here, so that a compile error shows plainly
    env = {**asan_environment(), backend.EMULATE_ENV: "asan"}
    result = subprocess.run([sys.executable, "-c", ASAN_SCRIPT, json.dumps(NETWORK_CASES)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert "AddressSanitizer" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    assert "sanitized kernels ran" in result.stdout


@pytest.mark.parametrize("filename", KERNEL_FILES)
def test_kernel_file_compiles_to_ptx(filename, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc (the CUDA toolkit) is not installed, so the PTX build is not checked")
    ptx = tmp_path / "kernels.ptx"
    command = [nvcc, "-std=c++14", "-ptx", "-arch=sm_80", str(KERNEL_DIR / filename), "-o", str(ptx)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    entries = ptx.read_text()
    for name in kernel_names(filename):
        assert f".entry {name}(" in entries


# -- a real GPU ----------------------------------------------------------------------------------

@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [conv for conv, _, _ in NETWORK_CASES])
def test_gpu_conv2d(case, dtype):
    n, c, h, w, o, k, stride, padding = case
    rng = np.random.default_rng(0)
    ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    x, wt, b, gy = (rng.standard_normal(s).astype(dtype) for s in ((n, c, h, w), (o, c, k, k), (o,), (n, o, ho, wo)))
    with emulate_cuda(False):
        assert_matches(conv_pass(x, wt, b, gy, stride, padding, "cuda"), conv_pass(x, wt, b, gy, stride, padding),
                       same_order=False)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k, s", [(2, 2), (3, 1), (3, 2)])
def test_gpu_max_pool2d(k, s, dtype):
    rng = np.random.default_rng(0)
    x = with_specials(rng, rng.integers(-2, 3, (2, 300, 11, 9)).astype(dtype), 0.05)
    gy = rng.standard_normal((2, 300, (11 - k) // s + 1, (9 - k) // s + 1)).astype(dtype)
    with emulate_cuda(False):
        assert_matches(pool_pass(x, gy, k, s, "cuda"), pool_pass(x, gy, k, s), same_order=False)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("f", [1, 2, 3])
def test_gpu_upsample_bilinear(f, dtype):
    rng = np.random.default_rng(0)
    x, gy = (rng.standard_normal(s).astype(dtype) for s in ((2, 3, 7, 5), (2, 3, 7 * f, 5 * f)))
    with emulate_cuda(False):
        assert_matches(upsample_pass(x, gy, f, "cuda"), upsample_pass(x, gy, f), same_order=False)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_relu(dtype):
    rng = np.random.default_rng(0)
    x = with_specials(rng, rng.standard_normal((3, 5, 7, 9)).astype(dtype), 0.1)
    gy = rng.standard_normal(x.shape).astype(dtype)
    with emulate_cuda(False):
        assert_same_bits(relu_pass(x, gy, "cuda"), relu_pass(x, gy), nan_payloads=False)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_mse_partials(dtype):
    cp = backend.cupy()
    p, t = np.random.default_rng(0).standard_normal((2, 1000)).astype(dtype)
    with emulate_cuda(False):
        assert_matches([mse_partials(cp.asarray(p), cp.asarray(t), 256)], [sequential_partials(p, t, 256)],
                       same_order=False)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_sgd(dtype):
    rng = np.random.default_rng(0)
    init = [rng.standard_normal((4, 3, 3, 3)).astype(dtype), rng.standard_normal(4).astype(dtype)]
    grads = [[rng.standard_normal(a.shape).astype(dtype) for a in init] for _ in range(3)]
    with emulate_cuda(False):
        assert_matches(sgd_pass(init, grads, 0.01, 0.9, 5e-4, "cuda"), sgd_pass(init, grads, 0.01, 0.9, 5e-4),
                       same_order=False)
