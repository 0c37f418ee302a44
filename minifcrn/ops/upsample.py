"""Bilinear upsampling by an integer factor f, NCHW, with half-pixel centres.

Output pixel i (along one axis of input length L) samples the input at

    t = max((i + 0.5) / f - 0.5, 0),  i0 = floor(t),  i1 = min(i0 + 1, L - 1),  a = t - i0

(PyTorch's ``align_corners=False``; borders clamp), and in 2-D

    y[i, j] = (1-a)(1-b) x[i0, j0] + (1-a) b x[i0, j1] + a (1-b) x[i1, j0] + a b x[i1, j1]

with (b, j0, j1) the same along the columns.  The map is linear, so backward is
its transpose.  The CUDA kernel has every input pixel *gather* the weighted
gradients of the outputs that read it (outputs i with i0 = p or i1 = p lie in
[(p-1)f, (p+2)f)); the CPU loop gives each thread a whole (n, c) plane and,
as the map is separable, applies the 1-D transpose along the columns and then
along the rows.  Either way no two workers write the same element, so the
sums come out the same run after run.

``upsample_bilinear_forward`` and ``upsample_bilinear_backward`` mirror the CUDA
kernels of the same names in ``kernels/upsample.cu``.
"""
from __future__ import annotations

import numba
import numpy as np

from minifcrn.autograd import Function
from minifcrn.backend import find_kernel, get_array_module


@numba.njit(inline="always")
def _source(i, f, length):
    """(i0, i1, a): the two input taps of output i and the weight of the second."""
    t = max((i + 0.5) / f - 0.5, 0.0)
    i0 = min(int(t), length - 1)
    i1 = min(i0 + 1, length - 1)
    return i0, i1, t - i0


@numba.njit(parallel=True, cache=True)
def _upsample_bilinear_forward_cpu(x, f, y):
    n_, c_, h, w = x.shape
    _, _, ho, wo = y.shape
    for nc in numba.prange(n_ * c_):  # one output pixel per (n, c, i, j)
        n, c = nc // c_, nc % c_
        for i in range(ho):
            i0, i1, a = _source(i, f, h)
            for j in range(wo):
                j0, j1, b = _source(j, f, w)
                y[n, c, i, j] = ((1 - a) * ((1 - b) * x[n, c, i0, j0] + b * x[n, c, i0, j1])
                                 + a * ((1 - b) * x[n, c, i1, j0] + b * x[n, c, i1, j1]))


@numba.njit(parallel=True, cache=True)
def _upsample_bilinear_backward_cpu(gy, f, gx):
    n_, c_, h, w = gx.shape
    _, _, ho, wo = gy.shape
    for nc in numba.prange(n_ * c_):  # one (n, c) plane per thread: no two threads share an output
        n, c = nc // c_, nc % c_
        rows = np.zeros((ho, w), dtype=gy.dtype)  # transpose along the columns first ...
        for i in range(ho):
            for j in range(wo):
                j0, j1, b = _source(j, f, w)
                rows[i, j0] += (1 - b) * gy[n, c, i, j]
                rows[i, j1] += b * gy[n, c, i, j]
        gx[n, c] = 0.0
        for i in range(ho):  # ... then along the rows
            i0, i1, a = _source(i, f, h)
            for q in range(w):
                gx[n, c, i0, q] += (1 - a) * rows[i, q]
                gx[n, c, i1, q] += a * rows[i, q]


def upsample_bilinear_forward(x, f):
    xp = get_array_module(x)
    n, c, h, w = x.shape
    y = xp.empty((n, c, h * f, w * f), dtype=x.dtype)
    kernel = find_kernel(x, "upsample.cu", "upsample_bilinear_forward")
    if kernel is None:
        _upsample_bilinear_forward_cpu(x, f, y)
    else:
        kernel(y.size, xp.ascontiguousarray(x), n, c, h, w, f, y)
    return y


def upsample_bilinear_backward(gy, f, x_shape):
    xp = get_array_module(gy)
    gx = xp.empty(x_shape, dtype=gy.dtype)
    kernel = find_kernel(gy, "upsample.cu", "upsample_bilinear_backward")
    if kernel is None:
        _upsample_bilinear_backward_cpu(gy, f, gx)
    else:
        n, c, h, w = x_shape
        kernel(gx.size, xp.ascontiguousarray(gy), n, c, h, w, f, gx)
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
