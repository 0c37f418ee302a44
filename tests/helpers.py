"""Test tooling: finite-difference gradient checks, plain-loop reference ops, bitwise comparison."""
from __future__ import annotations

import math

import numpy as np

import minifcrn as mf
from minifcrn.backend import to_device


def gradcheck(fn, arrays, device="cpu", eps=1e-6, rtol=1e-6, seed=0, wrt=None):
    """Compare the autodiff gradient of ``sum(fn(*inputs) * R)`` with central differences.

    ``arrays`` are float64 NumPy arrays; R is a fixed random upstream gradient.
    Passes when, for every input, max |numeric - analytic| <= rtol * max(|analytic|, |numeric|, 1e-12)
    taken over all elements (a relative error against the gradient's own scale), plus the rounding
    floor of the differences themselves: 64 ulp of the objective's size, over 2 * eps (which only
    matters for a gradient far smaller than the objective, e.g. a weight near zero).
    Returns the largest relative error seen.
    """
    wrt = range(len(arrays)) if wrt is None else wrt
    tensors = [mf.tensor(a, requires_grad=i in wrt, device=device, dtype=np.float64)
               for i, a in enumerate(arrays)]
    out = fn(*tensors)
    r = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(mf.tensor(r, device=device, dtype=np.float64))

    def objective(values):
        ts = [mf.tensor(v, device=device, dtype=np.float64) for v in values]
        with mf.no_grad():
            return float((fn(*ts).numpy() * r).sum())

    worst = 0.0
    for i in wrt:
        analytic = tensors[i].grad
        analytic = np.zeros_like(arrays[i]) if analytic is None else to_device(analytic, "cpu")
        numeric = np.zeros_like(arrays[i], dtype=np.float64)
        values = [a.astype(np.float64, copy=True) for a in arrays]
        flat = values[i].reshape(-1)
        size = 1.0
        for k in range(flat.size):
            old = flat[k]
            flat[k] = old + eps
            plus = objective(values)
            flat[k] = old - eps
            minus = objective(values)
            flat[k] = old
            numeric.reshape(-1)[k] = (plus - minus) / (2 * eps)
            size = max(size, abs(plus), abs(minus))
        scale = max(np.abs(analytic).max(initial=0), np.abs(numeric).max(initial=0), 1e-12)
        floor = 64 * np.finfo(np.float64).eps * size / (2 * eps)
        err = max(np.abs(numeric - analytic).max(initial=0) - floor, 0.0) / scale
        assert err <= rtol, f"input {i}: relative gradient error {err:.3g} > {rtol:g}"
        worst = max(worst, err)
    return worst


# -- slow, obviously-correct references written with plain loops ---------------------------

def conv2d_loops(x, w, b, stride, padding):
    n_, c_, h, wd = x.shape
    o_, _, kh, kw = w.shape
    ho, wo = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    y = np.zeros((n_, o_, ho, wo))
    for n in range(n_):
        for o in range(o_):
            for i in range(ho):
                for j in range(wo):
                    total = 0.0 if b is None else b[o]
                    for c in range(c_):
                        for u in range(kh):
                            for v in range(kw):
                                yy, xx = i * stride + u - padding, j * stride + v - padding
                                if 0 <= yy < h and 0 <= xx < wd:
                                    total += w[o, c, u, v] * x[n, c, yy, xx]
                    y[n, o, i, j] = total
    return y


def max_pool2d_loops(x, k, s):
    n_, c_, h, w = x.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    y = np.zeros((n_, c_, ho, wo))
    for n in range(n_):
        for c in range(c_):
            for i in range(ho):
                for j in range(wo):
                    y[n, c, i, j] = max(x[n, c, i * s + u, j * s + v] for u in range(k) for v in range(k))
    return y


def upsample_bilinear_loops(x, f):
    n_, c_, h, w = x.shape

    def taps(i, length):
        t = max((i + 0.5) / f - 0.5, 0.0)
        lo = min(math.floor(t), length - 1)
        return lo, min(lo + 1, length - 1), t - lo

    y = np.zeros((n_, c_, h * f, w * f))
    for n in range(n_):
        for c in range(c_):
            for i in range(h * f):
                i0, i1, a = taps(i, h)
                for j in range(w * f):
                    j0, j1, b = taps(j, w)
                    y[n, c, i, j] = ((1 - a) * (1 - b) * x[n, c, i0, j0] + (1 - a) * b * x[n, c, i0, j1]
                                     + a * (1 - b) * x[n, c, i1, j0] + a * b * x[n, c, i1, j1])
    return y


def load_bench_script(name):
    """A script of bench/ (e.g. ``"table1"``) imported as a module, with bench/ on the path for its imports."""
    import importlib.util
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "bench"
    if str(bench) not in sys.path:
        sys.path.insert(0, str(bench))
    spec = importlib.util.spec_from_file_location(name, bench / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_same_bits(actual, expected, nan_payloads=True):
    """Bit for bit (so -0 is not +0); ``nan_payloads=False`` asks only that NaNs stand where NaNs stand.

    A GPU need not keep a NaN's payload: for float32 NaNs an H200 ran ReLU's
    select to the canonical NaN 0x7fffffff, as PTX's max.NaN returns (2026-12-04).
    """
    for a, e in zip(actual, expected, strict=True):
        assert a.dtype == e.dtype and a.shape == e.shape
        if not nan_payloads:
            np.testing.assert_array_equal(np.isnan(a), np.isnan(e))
            a, e = a[~np.isnan(a)], e[~np.isnan(e)]
        np.testing.assert_array_equal(a.view(f"u{a.itemsize}"), e.view(f"u{e.itemsize}"))
