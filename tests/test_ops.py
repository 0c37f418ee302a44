"""Every op: backward against central finite differences (hypothesis, float64),
forward against a plain-loop reference, edge cases and bad input.  Written once,
run on every backend through the ``device`` fixture."""
import numpy as np
import pytest
from helpers import assert_same_bits, conv2d_loops, gradcheck, max_pool2d_loops, upsample_bilinear_loops
from hypothesis import assume, given
from hypothesis import strategies as st

import minifcrn as mf
import minifcrn.functional as F

seeds = st.integers(0, 2**32 - 1)


def rand(rng, *shape):
    return rng.standard_normal(shape)


def distinct(rng, *shape):
    """Values at least 1e-2 apart, so a finite-difference step never changes which one is largest."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 1e-2 - n * 5e-3 + rng.uniform(-1e-3, 1e-3, n)).reshape(shape)


def run(fn, *arrays, device, dtype=np.float64):
    with mf.no_grad():
        return fn(*(mf.tensor(a, device=device, dtype=dtype) for a in arrays)).numpy()


# -- conv2d ---------------------------------------------------------------------------------

conv_cases = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3),  # N, C, O
                       st.integers(1, 7), st.integers(1, 7),                     # H, W
                       st.sampled_from([1, 2, 3, 5]), st.integers(1, 3), st.integers(0, 3),  # k, stride, pad
                       st.booleans(), seeds)


@given(conv_cases)
def test_conv2d_gradient(device, case):
    n, c, o, h, w, k, s, p, with_bias, seed = case
    assume(h + 2 * p >= k and w + 2 * p >= k)
    rng = np.random.default_rng(seed)
    arrays = [rand(rng, n, c, h, w), rand(rng, o, c, k, k)] + ([rand(rng, o)] if with_bias else [])
    gradcheck(lambda *t: F.conv2d(*t, stride=s, padding=p), arrays, device=device, seed=seed)


@given(conv_cases)
def test_conv2d_matches_loops(device, case):
    n, c, o, h, w, k, s, p, with_bias, seed = case
    assume(h + 2 * p >= k and w + 2 * p >= k)
    rng = np.random.default_rng(seed)
    x, wt, b = rand(rng, n, c, h, w), rand(rng, o, c, k, k), rand(rng, o) if with_bias else None
    got = run(lambda x_, w_: F.conv2d(x_, w_, None if b is None else mf.tensor(b, device=device,
                                                                               dtype=np.float64),
                                      stride=s, padding=p), x, wt, device=device)
    np.testing.assert_allclose(got, conv2d_loops(x, wt, b, s, p), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("h, w, k, p", [(1, 1, 1, 0), (1, 1, 3, 1), (1, 1, 5, 2), (3, 3, 3, 3),
                                        (2, 5, 3, 4), (1, 1, 1, 2)])
def test_conv2d_edge_sizes(device, h, w, k, p):
    """1x1 images, a single channel and batch, padding wider than the kernel's half."""
    rng = np.random.default_rng(1)
    x, wt, b = rand(rng, 1, 1, h, w), rand(rng, 1, 1, k, k), rand(rng, 1)
    got = run(lambda *t: F.conv2d(*t, padding=p), x, wt, b, device=device)
    np.testing.assert_allclose(got, conv2d_loops(x, wt, b, 1, p), rtol=1e-12, atol=1e-12)
    gradcheck(lambda *t: F.conv2d(*t, padding=p), [x, wt, b], device=device)


def test_conv2d_many_channels(device):
    rng = np.random.default_rng(2)
    x, wt = rand(rng, 1, 40, 4, 4), rand(rng, 33, 40, 3, 3)
    got = run(lambda *t: F.conv2d(*t, padding=1), x, wt, device=device)
    np.testing.assert_allclose(got, conv2d_loops(x, wt, None, 1, 1), rtol=1e-11, atol=1e-11)


def test_conv2d_float32_stays_float32(device):
    rng = np.random.default_rng(3)
    x = mf.tensor(rand(rng, 2, 3, 6, 6), device=device, dtype=np.float32, requires_grad=True)
    wt = mf.tensor(rand(rng, 4, 3, 3, 3), device=device, dtype=np.float32, requires_grad=True)
    y = F.conv2d(x, wt, padding=1)
    y.sum().backward()
    assert y.dtype == np.float32 and x.grad.dtype == np.float32 and wt.grad.dtype == np.float32
    ref = conv2d_loops(x.numpy().astype(np.float64), wt.numpy().astype(np.float64), None, 1, 1)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("xs, ws, kwargs, match", [
    ((2, 3, 5), (4, 3, 3, 3), {}, "input must be 4-D"),
    ((1, 3, 5, 5), (4, 3, 3), {}, "weight must be 4-D"),
    ((1, 2, 5, 5), (4, 3, 3, 3), {}, "input has 2 channels but weight expects 3"),
    ((1, 3, 2, 2), (4, 3, 3, 3), {}, r"kernel \(3, 3\) is larger than the padded input \(2, 2\)"),
    ((1, 3, 5, 5), (4, 3, 3, 3), {"stride": 0}, "stride must be an integer >= 1"),
    ((1, 3, 5, 5), (4, 3, 3, 3), {"padding": -1}, "padding must be an integer >= 0"),
    ((1, 3, 5, 5), (4, 3, 3, 3), {"padding": 1.5}, "padding must be an integer >= 0"),
])
def test_conv2d_bad_input(device, xs, ws, kwargs, match):
    x, w = mf.tensor(np.zeros(xs), device=device), mf.tensor(np.zeros(ws), device=device)
    with pytest.raises(ValueError, match=match):
        F.conv2d(x, w, **kwargs)


def test_conv2d_bad_bias_and_dtype(device):
    x, w = mf.tensor(np.zeros((1, 3, 5, 5)), device=device), mf.tensor(np.zeros((4, 3, 3, 3)), device=device)
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        F.conv2d(x, w, mf.tensor(np.zeros(3), device=device))
    with pytest.raises(TypeError, match="share one dtype"):
        F.conv2d(x, mf.tensor(np.zeros((4, 3, 3, 3)), device=device, dtype=np.float32))


# -- max_pool2d ------------------------------------------------------------------------------

pool_cases = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9),
                       st.integers(1, 3), st.one_of(st.none(), st.integers(1, 3)), seeds)


@given(pool_cases)
def test_max_pool2d_gradient(device, case):
    n, c, h, w, k, s, seed = case
    assume(h >= k and w >= k)
    x = distinct(np.random.default_rng(seed), n, c, h, w)
    gradcheck(lambda t: F.max_pool2d(t, k, s), [x], device=device, seed=seed)


@given(pool_cases)
def test_max_pool2d_matches_loops(device, case):
    n, c, h, w, k, s, seed = case
    assume(h >= k and w >= k)
    x = rand(np.random.default_rng(seed), n, c, h, w)
    got = run(lambda t: F.max_pool2d(t, k, s), x, device=device)
    np.testing.assert_array_equal(got, max_pool2d_loops(x, k, k if s is None else s))


def test_max_pool2d_odd_sizes_floor(device):
    y = F.max_pool2d(mf.tensor(np.zeros((1, 1, 7, 5)), device=device))
    assert y.shape == (1, 1, 3, 2)


def test_max_pool2d_ties_go_to_the_first_maximum(device):
    """All four inputs of a window equal: the gradient goes to the top-left one only."""
    x = mf.tensor(np.ones((1, 1, 2, 2)), device=device, requires_grad=True)
    F.max_pool2d(x).sum().backward()
    np.testing.assert_array_equal(mf.tensor(x.grad).numpy(), [[[[1, 0], [0, 0]]]])
    x = mf.tensor([[[[0, 5, 5], [5, 1, 2], [0, 0, 0]]]], device=device, requires_grad=True)
    F.max_pool2d(x, 2, 1).sum().backward()  # overlapping windows share a winner
    np.testing.assert_array_equal(mf.tensor(x.grad).numpy(), [[[[0, 2, 0], [1, 0, 1], [0, 0, 0]]]])


def test_max_pool2d_edge_sizes(device):
    x = np.array([[[[3.0]]]])
    np.testing.assert_array_equal(run(lambda t: F.max_pool2d(t, 1), x, device=device), x)
    gradcheck(lambda t: F.max_pool2d(t, 1), [x], device=device)


@pytest.mark.parametrize("shape, k, s, match", [
    ((1, 4, 4), 2, None, "input must be 4-D"),
    ((1, 1, 1, 1), 2, None, "kernel_size 2 is larger than the input's 1x1"),
    ((1, 1, 4, 4), 0, None, "kernel_size must be an integer >= 1"),
    ((1, 1, 4, 4), 2, 0, "stride must be an integer >= 1"),
])
def test_max_pool2d_bad_input(device, shape, k, s, match):
    with pytest.raises(ValueError, match=match):
        F.max_pool2d(mf.tensor(np.zeros(shape), device=device), k, s)


# -- upsample_conv2d (bilinear x2, then a 3x3 or 5x5 conv2d, fused) -----------------------------

upconv_cases = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3),  # N, C, O
                         st.integers(1, 6), st.integers(1, 6), st.sampled_from([3, 5]),  # H, W, k
                         st.booleans(), seeds)


def upsample_then_conv_loops(x, w, b):
    return conv2d_loops(upsample_bilinear_loops(x, 2), w, b, 1, w.shape[-1] // 2)


@given(upconv_cases)
def test_upsample_conv2d_is_upsample_then_conv(device, case):
    """Four 4x4 phase convolutions and the border ring equal up-sampling then convolving,
    values and gradients, down to a 1x1 input (where all four edges meet).  (On the "cpu-fast"
    path with the convolution's direct loops; tests/test_cpu_fast.py runs it per tap.)"""
    n, c, o, h, w, k, with_bias, seed = case
    rng = np.random.default_rng(seed)
    arrays = [rand(rng, n, c, h, w), rand(rng, o, c, k, k)] + ([rand(rng, o)] if with_bias else [])
    np.testing.assert_allclose(run(F.upsample_conv2d, *arrays, device=device),
                               upsample_then_conv_loops(*arrays[:2], arrays[2] if with_bias else None),
                               rtol=1e-12, atol=1e-12)
    gradcheck(F.upsample_conv2d, arrays, device=device, seed=seed)


@pytest.mark.parametrize("k", [3, 5])
def test_upsample_conv2d_gradients_match_the_unfused_ops(device, k):
    """On a plane large enough that the phases' interior, the ring and the corners all differ."""
    rng = np.random.default_rng(3)
    x, w, b = rand(rng, 2, 6, 9, 11), rand(rng, 4, 6, k, k), rand(rng, 4)
    grads = []
    for fn in (F.upsample_conv2d, lambda *t: F.conv2d(F.upsample_bilinear(t[0], 2), *t[1:], padding=k // 2)):
        ts = [mf.tensor(a, device=device, dtype=np.float64, requires_grad=True) for a in (x, w, b)]
        y = fn(*ts)
        (y * mf.tensor(np.cos(np.arange(y.size)).reshape(y.shape), device=device)).sum().backward()
        grads.append([mf.tensor(t.grad).numpy() for t in ts])
    for fused, unfused in zip(*grads):
        np.testing.assert_allclose(fused, unfused, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("xs, ws, match", [
    ((1, 2, 4, 4), (3, 2, 1, 1), r"weight must be \(O, C, k, k\) with k in \(3, 5\), got \(3, 2, 1, 1\)"),
    ((1, 2, 4, 4), (3, 2, 5, 3), r"weight must be \(O, C, k, k\) with k in \(3, 5\), got \(3, 2, 5, 3\)"),
    ((1, 2, 4, 4), (3, 4, 5, 5), "input has 2 channels but weight expects 4"),
    ((2, 4, 4), (3, 2, 5, 5), "input must be 4-D"),
])
def test_upsample_conv2d_bad_input(device, xs, ws, match):
    x, w = (mf.tensor(np.zeros(s), device=device) for s in (xs, ws))
    with pytest.raises(ValueError, match=match):
        F.upsample_conv2d(x, w)


# -- upsample_bilinear ----------------------------------------------------------------------

up_cases = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6),
                     st.integers(1, 4), seeds)


@pytest.mark.paths("reference", "cuda-emulated", "cuda")  # no CPU fast path
@given(up_cases)
def test_upsample_bilinear_gradient(device, case):
    n, c, h, w, f, seed = case
    x = rand(np.random.default_rng(seed), n, c, h, w)
    gradcheck(lambda t: F.upsample_bilinear(t, f), [x], device=device, seed=seed)


@pytest.mark.paths("reference", "cuda-emulated", "cuda")  # no CPU fast path
@given(up_cases)
def test_upsample_bilinear_matches_loops(device, case):
    n, c, h, w, f, seed = case
    x = rand(np.random.default_rng(seed), n, c, h, w)
    got = run(lambda t: F.upsample_bilinear(t, f), x, device=device)
    np.testing.assert_allclose(got, upsample_bilinear_loops(x, f), rtol=1e-13, atol=1e-13)


@pytest.mark.paths("reference", "cuda-emulated", "cuda")  # no CPU fast path
def test_upsample_bilinear_known_values(device):
    """x2 of [0, 1] samples at -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to the last pixel)."""
    y = run(lambda t: F.upsample_bilinear(t, 2), np.array([[[[0.0, 1.0]]]]), device=device)
    np.testing.assert_allclose(y[0, 0, 0], [0.0, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(y[0, 0, 1], [0.0, 0.25, 0.75, 1.0])


@pytest.mark.paths("reference", "cuda-emulated", "cuda")  # no CPU fast path
def test_upsample_bilinear_1x1(device):
    y = run(lambda t: F.upsample_bilinear(t, 3), np.full((1, 1, 1, 1), 2.5), device=device)
    np.testing.assert_array_equal(y, np.full((1, 1, 3, 3), 2.5))


@pytest.mark.paths("reference", "cuda-emulated", "cuda")  # no CPU fast path
@pytest.mark.parametrize("f", [0, -2, 1.5, "2", True])
def test_upsample_bilinear_bad_factor(device, f):
    with pytest.raises(ValueError, match="scale_factor must be an integer >= 1"):
        F.upsample_bilinear(mf.tensor(np.zeros((1, 1, 2, 2)), device=device), f)


# -- relu and mse_loss -----------------------------------------------------------------------

@pytest.mark.paths("reference", "cuda-emulated", "cuda")  # no CPU fast path
@given(st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), seeds))
def test_relu_gradient_and_values(device, case):
    n, h, w, seed = case
    x = rand(np.random.default_rng(seed), n, 2, h, w)
    x = np.where(np.abs(x) < 1e-3, 1e-3, x)  # keep finite differences off the kink
    np.testing.assert_array_equal(run(F.relu, x, device=device), np.maximum(x, 0))
    gradcheck(F.relu, [x], device=device, seed=seed)


@pytest.mark.paths("reference", "cuda-emulated", "cuda")  # no CPU fast path
def test_relu_special_values_match_numpy_maximum(device):
    """Every bit as np.maximum(x, 0), -0 -> +0 included, except a NaN's payload: NaN stays NaN, but
    on an H200 the CUDA kernel returned the canonical NaN (0x7fffffff) where NumPy keeps x's."""
    for dtype in (np.float32, np.float64):
        x = np.array([np.nan, -0.0, 0.0, np.inf, -np.inf, -1.5, 2.5, np.finfo(dtype).tiny], dtype=dtype)
        x = np.tile(x, 100).reshape(1, 8, 10, 10)  # enough elements for every thread of a parallel pass
        assert_same_bits([F.relu(mf.tensor(x, device=device)).numpy()], [np.maximum(x, 0)], nan_payloads=False)


@pytest.mark.paths("reference", "cuda-emulated", "cuda")  # no CPU fast path
@given(st.tuples(st.integers(1, 3), st.integers(1, 6), st.sampled_from(["mean", "sum", "batchmean"]), seeds))
def test_mse_loss_gradient_and_values(device, case):
    n, h, reduction, seed = case
    rng = np.random.default_rng(seed)
    p, t = rand(rng, n, 1, h, h), rand(rng, n, 1, h, h)
    expected = ((p - t) ** 2).sum() / {"mean": p.size, "sum": 1, "batchmean": n}[reduction]
    got = run(lambda a, b: F.mse_loss(a, b, reduction), p, t, device=device)
    np.testing.assert_allclose(got, expected, rtol=1e-13)
    gradcheck(lambda a, b: F.mse_loss(a, b, reduction), [p, t], device=device, seed=seed)


@pytest.mark.paths("reference", "cuda-emulated", "cuda")  # no CPU fast path
def test_mse_loss_bad_input(device):
    a, b = mf.tensor(np.zeros((2, 1, 3, 3)), device=device), mf.tensor(np.zeros((2, 1, 3, 4)), device=device)
    with pytest.raises(ValueError, match=r"prediction shape \(2, 1, 3, 3\) does not match target shape"):
        F.mse_loss(a, b)
    with pytest.raises(ValueError, match="reduction must be one of"):
        F.mse_loss(a, a, "median")


# -- NaN and inf -----------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_nan_and_inf_propagate(device):
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 1], x[0, 0, 2, 3] = np.nan, np.inf
    t = mf.tensor(x, device=device, requires_grad=True)
    w = mf.tensor(np.ones((1, 1, 3, 3)), device=device, requires_grad=True)
    conv = F.conv2d(t, w, padding=1).numpy()
    assert np.isnan(conv[0, 0, 0, 0]) and np.isnan(conv[0, 0, 2, 2]) and np.isposinf(conv[0, 0, 3, 3])
    assert conv[0, 0, 0, 3] == 0.0  # a window that sees neither
    pool = F.max_pool2d(t).numpy()
    assert np.isnan(pool[0, 0, 0, 0]) and np.isinf(pool[0, 0, 1, 1])
    assert np.isnan(F.relu(t).numpy()[0, 0, 1, 1])
    up = F.upsample_bilinear(t).numpy()
    assert np.isnan(up[0, 0, 2, 2]) and np.isfinite(up[0, 0, 7, 0])
    loss = F.mse_loss(F.relu(F.conv2d(t, w, padding=1)), mf.tensor(np.zeros((1, 1, 4, 4)), device=device))
    loss.backward()  # no crash; NaN flows into the gradients
    assert np.isnan(mf.tensor(w.grad).numpy()).all()
