"""Bilinear upsampling by an integer factor f, NCHW, with half-pixel centres.

Output pixel i (along one axis of input length L) samples the input at

    t = max((i + 0.5) / f - 0.5, 0),  i0 = floor(t),  i1 = min(i0 + 1, L - 1),  a = t - i0

(PyTorch's ``align_corners=False``; borders clamp), and in 2-D

    y[i, j] = (1-a)(1-b) x[i0, j0] + (1-a) b x[i0, j1] + a (1-b) x[i1, j0] + a b x[i1, j1]

with (b, j0, j1) the same along the columns.  The map is linear, so backward is
its transpose.  The CUDA kernel has every input pixel *gather* the weighted
gradients of the outputs that read it (outputs i with i0 = p or i1 = p lie in
[(p-1)f, (p+2)f)); the CPU loops give each thread a whole (n, c) plane and, as
the map is separable, apply it one axis at a time from tables made once per call
(``_taps``): forward along the columns then the rows, backward as the same gather
along the rows then the columns.  Either way no two workers write the same
element, so the sums come out the same run after run.

``upsample_bilinear_forward`` and ``upsample_bilinear_backward`` mirror the CUDA
kernels of the same names in ``kernels/upsample.cu``.
"""
from __future__ import annotations

import numba
import numpy as np

from minifcrn import backend
from minifcrn.autograd import Function
from minifcrn.backend import get_array_module
from minifcrn.backend.jit import njit


def _taps(length, f):
    """The 1-D map of one axis: (i0, i1, a) per output, and its transpose as a gather table.

    Output i reads inputs i0, i1 with weights 1 - a, a; input p gathers the outputs
    start[p] + k, k < 3f, with weights[p, k] (0 where output start[p] + k does not read p),
    start[p] = (p - 1) f.
    """
    out = np.arange(length * f)
    t = np.maximum((out + 0.5) / f - 0.5, 0.0)
    i0 = np.minimum(t.astype(np.int64), length - 1)
    i1 = np.minimum(i0 + 1, length - 1)
    a = t - i0
    start = (np.arange(length) - 1) * f
    weights = np.zeros((length, 3 * f))
    np.add.at(weights, (i0, out - start[i0]), 1 - a)
    np.add.at(weights, (i1, out - start[i1]), a)
    return i0, i1, a, start, weights


@njit(parallel=True)
def _upsample_bilinear_forward_cpu(x, r0, r1, ra, c0, c1, cb, y):
    n_, c_, h, w = x.shape
    _, _, ho, wo = y.shape
    for nc in numba.prange(n_ * c_):  # one (n, c) plane per thread: along the columns, then the rows
        n, c = nc // c_, nc % c_
        cols = np.empty((h, wo))  # cols[p, j] = (1 - b_j) x[p, j0] + b_j x[p, j1]
        for p in range(h):
            for j in range(wo):
                cols[p, j] = (1 - cb[j]) * x[n, c, p, c0[j]] + cb[j] * x[n, c, p, c1[j]]
        for i in range(ho):
            a, top, bottom = ra[i], cols[r0[i]], cols[r1[i]]
            for j in range(wo):
                y[n, c, i, j] = (1 - a) * top[j] + a * bottom[j]


@njit(parallel=True)
def _upsample_bilinear_backward_cpu(gy, rs, rw, cs, cw, gx):
    n_, c_, h, w = gx.shape
    _, _, ho, wo = gy.shape
    for nc in numba.prange(n_ * c_):  # one (n, c) plane per thread: no two threads share an output
        n, c = nc // c_, nc % c_
        rows = np.zeros((h, wo))  # each input row p gathers the output rows that read it ...
        for p in range(h):
            for k in range(rw.shape[1]):
                weight = rw[p, k]
                if weight != 0:  # (zero weights skipped, as the CUDA kernel does)
                    src = gy[n, c, rs[p] + k]
                    for j in range(wo):
                        rows[p, j] += weight * src[j]
        for p in range(h):  # ... then each input column the output columns
            for q in range(w):
                total = 0.0
                for k in range(cw.shape[1]):
                    weight = cw[q, k]
                    if weight != 0:
                        total += weight * rows[p, cs[q] + k]
                gx[n, c, p, q] = total


def upsample_bilinear_forward(x, f):
    xp = get_array_module(x)
    n, c, h, w = x.shape
    y = xp.empty((n, c, h * f, w * f), dtype=x.dtype)

    def mirror():
        r0, r1, ra, _, _ = _taps(h, f)
        c0, c1, cb, _, _ = _taps(w, f)
        _upsample_bilinear_forward_cpu(x, r0, r1, ra, c0, c1, cb, y)

    backend.launch(x, "upsample.cu", "upsample_bilinear_forward", y.size,
                   (xp.ascontiguousarray(x), n, c, h, w, f, y), mirror)
    return y


def upsample_bilinear_backward(gy, f, x_shape):
    xp = get_array_module(gy)
    gx = xp.empty(x_shape, dtype=gy.dtype)
    n, c, h, w = x_shape

    def mirror():
        _upsample_bilinear_backward_cpu(np.ascontiguousarray(gy), *_taps(h, f)[3:], *_taps(w, f)[3:], gx)

    backend.launch(gy, "upsample.cu", "upsample_bilinear_backward", gx.size,
                   (xp.ascontiguousarray(gy), n, c, h, w, f, gx), mirror)
    return gx


def check_upsample_args(x, f):
    if x.ndim != 4:
        raise ValueError(f"upsample_bilinear: input must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f < 1:
        raise ValueError(f"upsample_bilinear: scale_factor must be an integer >= 1, got {f!r}")


class UpsampleBilinear(Function):
    name = "upsample_bilinear"

    def __init__(self, scale_factor=2):
        self.f = scale_factor

    def forward(self, x):
        check_upsample_args(x, self.f)
        self.x_shape = x.shape
        return upsample_bilinear_forward(x, int(self.f))

    def backward(self, gy):
        return (upsample_bilinear_backward(gy, int(self.f), self.x_shape),)
