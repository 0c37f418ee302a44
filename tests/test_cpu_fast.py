"""The CPU fast paths of minifcrn/cpu/ against the reference ops they stand in for.

The ops' own tests (test_ops.py) run each op on the "cpu-fast" path among the others;
these reach the parts of the fast paths that only odd settings do (tiny chunks,
products per tap where direct loops would be chosen, padding past the kernel, the
weight gradient's two layouts), and compare with the reference path directly.
"""
import numpy as np
import pytest
from helpers import conv2d_loops, gradcheck, max_pool2d_loops, upsample_bilinear_loops
from hypothesis import assume, given
from hypothesis import strategies as st

import minifcrn as mf
import minifcrn.functional as F
from minifcrn.backend import use_path
from minifcrn.cpu import conv as fast_conv
from minifcrn.ops import conv

seeds = st.integers(0, 2**32 - 1)
conv_cases = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3),  # N, C, O
                       st.integers(1, 7), st.integers(1, 7), st.sampled_from([1, 2, 3, 5]),  # H, W, k
                       st.integers(0, 3), seeds)  # padding
TAPS = {"per-tap": 0, "direct": 10 ** 6}  # DIRECT_MAX_K: never or always the direct loops


@pytest.fixture(autouse=True)
def fast_path():
    with use_path("cpu-fast"):
        yield


def rand(rng, *shape):
    return rng.standard_normal(shape)


def run(fn, *arrays):
    with mf.no_grad():
        return fn(*(mf.tensor(a, dtype=np.float64) for a in arrays)).numpy()


@pytest.mark.parametrize("taps", sorted(TAPS))
@given(conv_cases)
def test_conv2d_stride1_in_tiny_chunks(monkeypatch, taps, case):
    """Cut into chunks of 5 positions, a product per tap or direct loops, the stride-1 path
    still matches the loops, forward and backward."""
    monkeypatch.setattr(fast_conv, "_chunk", lambda positions: min(5, positions))
    monkeypatch.setattr(fast_conv, "DIRECT_MAX_K", TAPS[taps])
    n, c, o, h, w, k, p, seed = case
    assume(h + 2 * p >= k and w + 2 * p >= k)
    rng = np.random.default_rng(seed)
    x, wt = rand(rng, n, c, h, w), rand(rng, o, c, k, k)
    np.testing.assert_allclose(run(lambda a, b: F.conv2d(a, b, padding=p), x, wt),
                               conv2d_loops(x, wt, None, 1, p), rtol=1e-12, atol=1e-12)
    gradcheck(lambda a, b: F.conv2d(a, b, padding=p), [x, wt], device="cpu", seed=seed)


@given(st.integers(1, 6), st.integers(1, 6), st.sampled_from([1, 2, 3, 5]), st.integers(0, 6), seeds)
def test_conv2d_stride1_neighbouring_planes_share_padding(h, w, k, p, seed):
    """Four images, each padded only at its top and left: no window of a kept output reaches a
    neighbour's data, for every padding from none to more than the kernel."""
    assume(h + 2 * p >= k and w + 2 * p >= k)
    rng = np.random.default_rng(seed)
    x, wt, b = rand(rng, 4, 3, h, w), rand(rng, 2, 3, k, k), rand(rng, 2)
    np.testing.assert_allclose(run(lambda *t: F.conv2d(*t, padding=p), x, wt, b),
                               conv2d_loops(x, wt, b, 1, p), rtol=1e-12, atol=1e-12)
    gradcheck(lambda *t: F.conv2d(*t, padding=p), [x, wt, b], device="cpu", seed=seed)


@pytest.mark.parametrize("taps", sorted(TAPS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("c, o", [(5, 6), (6, 5)], ids=["C<O", "C>O"])  # the weight gradient's two layouts
def test_conv2d_stride1_equals_the_reference_on_large_grids(dtype, taps, c, o, monkeypatch):
    monkeypatch.setattr(fast_conv, "DIRECT_MAX_K", TAPS[taps])
    rng = np.random.default_rng(5)
    x, w, gy = (a.astype(dtype) for a in (rand(rng, 3, c, 41, 37), rand(rng, o, c, 3, 3), rand(rng, 3, o, 41, 37)))
    tol = 1e-12 if dtype == np.float64 else 1e-5
    y = fast_conv.conv2d_forward_stride1(x, w, None, 1)
    gx, gw = fast_conv.conv2d_backward_stride1(x, w, gy, 1, True, True)
    assert y.dtype == gx.dtype == gw.dtype == dtype
    with use_path("reference"):
        ref_y = conv.conv2d_forward(x, w, None, 1, 1)
        ref_gx, ref_gw = conv.conv2d_backward(x, w, gy, 1, 1)
    for got, ref in ((y, ref_y), (gw, ref_gw), (gx, ref_gx)):
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * np.abs(ref).max())


upconv_cases = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3),  # N, C, O
                         st.integers(1, 6), st.integers(1, 6), st.sampled_from([3, 5]), seeds)  # H, W, k


@given(upconv_cases)
def test_upsample_conv2d_with_a_product_per_tap(monkeypatch, case):
    """The fused up-sampling convolution with its phase convolutions taken a product per tap
    (test_ops.py runs it with the direct loops that these few channels choose)."""
    monkeypatch.setattr(fast_conv, "DIRECT_MAX_K", 0)
    n, c, o, h, w, k, seed = case
    rng = np.random.default_rng(seed)
    x, wt, b = rand(rng, n, c, h, w), rand(rng, o, c, k, k), rand(rng, o)
    np.testing.assert_allclose(run(F.upsample_conv2d, x, wt, b),
                               conv2d_loops(upsample_bilinear_loops(x, 2), wt, b, 1, k // 2), rtol=1e-12, atol=1e-12)
    gradcheck(F.upsample_conv2d, [x, wt, b], device="cpu", seed=seed)


@given(st.integers(1, 3), st.integers(2, 9), st.integers(2, 9), st.sampled_from([(2, 2), (2, 3), (3, 3)]), seeds)
def test_max_pool2d_fast_paths_equal_the_reference(n, h, w, window, seed):
    """The 2x2 window written out and the scatter backward of disjoint windows give the
    reference's maxima, argmax and gradient bit for bit, ties and all."""
    from minifcrn.ops.pool import max_pool2d_backward, max_pool2d_forward

    k, s = window
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, (n, 2, h, w)).astype(np.float64)  # many ties
    assume(h >= k and w >= k)
    y, argmax = max_pool2d_forward(x, k, s)
    gy = rand(rng, *y.shape)
    gx = max_pool2d_backward(gy, argmax, x.shape, k, s)
    with use_path("reference"):
        ref_y, ref_argmax = max_pool2d_forward(x, k, s)
        ref_gx = max_pool2d_backward(gy, ref_argmax, x.shape, k, s)
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_array_equal(y, max_pool2d_loops(x, k, s))
    np.testing.assert_array_equal(argmax, ref_argmax)
    np.testing.assert_array_equal(gx, ref_gx)


def test_each_cpu_path_runs_code_no_other_runs(monkeypatch):
    """One FCRN training step on each CPU path: "reference" runs the Numba mirrors and no fast
    path, "cpu-fast" its fast paths and no kernel, "cuda-emulated" the kernels and neither."""
    import minifcrn.backend as backend
    from minifcrn.cpu import pool as fast_pool
    from minifcrn.ops import pool, relu

    calls = set()

    def spy(module, name, tag):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, **k: calls.add(tag) or real(*a, **k))

    spy(conv, "_im2col_cpu", "reference")
    spy(pool, "_max_pool2d_forward_cpu", "reference")
    spy(relu, "_relu_forward_cpu", "mirror")
    spy(fast_conv, "conv2d_forward_stride1", "cpu-fast")
    spy(fast_pool, "max_pool2d_forward_2x2", "cpu-fast")
    spy(backend.Kernel, "__call__", "cuda-emulated")
    net = mf.models.FCRN("fcrn-a", rng=0)
    x = mf.tensor(np.random.default_rng(0).standard_normal((1, 1, 16, 16)), dtype=np.float32)
    seen = {}
    for path in ("reference", "cpu-fast", "cuda-emulated"):
        calls.clear()
        with use_path(path):
            (net(x) * net(x)).sum().backward()
        seen[path] = set(calls)
    assert seen == {"reference": {"reference", "mirror"}, "cpu-fast": {"cpu-fast", "mirror"},
                    "cuda-emulated": {"cuda-emulated"}}
