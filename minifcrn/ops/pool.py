"""2-D max pooling, NCHW.

Forward, window k, stride s (default s = k), output size floor((H - k) / s) + 1
as in PyTorch (a partial window at the edge is dropped):

    y[n, c, i, j] = max_{0 <= u, v < k} x[n, c, s*i + u, s*j + v]

The position of each maximum is saved as a flat index a = y_in * W + x_in
into the input plane.  Backward sends each output gradient to that one input:

    dx[n, c, p] = sum_{(i, j) : a[n, c, i, j] = p} dy[n, c, i, j]

computed as a *gather* (each input pixel visits the windows that contain it),
so overlapping windows (s < k) need no atomic scatter.

Ties: the window is scanned row by row, left to right, and the *first*
maximum wins (a later value must be strictly greater), as in PyTorch's CPU
code.  A NaN wins over any number, so NaN propagates forward and its gradient
goes to the NaN.

``max_pool2d_forward`` and ``max_pool2d_backward`` mirror the CUDA kernels of
the same names in ``kernels/pool.cu``.  The CPU fast paths (the 2x2 window written
out, a scatter where windows do not overlap) are in ``minifcrn/cpu/pool.py``.
"""
from __future__ import annotations

import math
from functools import partial

import numba
import numpy as np

from minifcrn import backend
from minifcrn.autograd import Function
from minifcrn.backend import get_array_module
from minifcrn.backend.jit import njit
from minifcrn.cpu import pool as fast


@njit(parallel=True)
def _max_pool2d_forward_cpu(x, k, s, y, argmax):
    n_, c_, h, w = x.shape
    _, _, ho, wo = y.shape
    for nc in numba.prange(n_ * c_):  # one output pixel per (n, c, i, j)
        n, c = nc // c_, nc % c_
        for i in range(ho):
            for j in range(wo):
                best = x[n, c, i * s, j * s]
                where = (i * s) * w + j * s
                for u in range(k):
                    for v in range(k):
                        val = x[n, c, i * s + u, j * s + v]
                        if val > best or (math.isnan(val) and not math.isnan(best)):  # NaN wins
                            best = val
                            where = (i * s + u) * w + (j * s + v)
                y[n, c, i, j] = best
                argmax[n, c, i, j] = where


@njit(parallel=True)
def _max_pool2d_backward_cpu(gy, argmax, k, s, gx):
    n_, c_, h, w = gx.shape
    _, _, ho, wo = gy.shape
    for nc in numba.prange(n_ * c_):  # one input pixel per (n, c, p, q)
        n, c = nc // c_, nc % c_
        for p in range(h):
            i_lo = max(0, (p - k + s) // s)  # first window whose rows reach p
            i_hi = min(ho - 1, p // s)
            for q in range(w):
                j_lo = max(0, (q - k + s) // s)
                j_hi = min(wo - 1, q // s)
                total = 0.0
                for i in range(i_lo, i_hi + 1):
                    for j in range(j_lo, j_hi + 1):
                        if argmax[n, c, i, j] == p * w + q:
                            total += gy[n, c, i, j]
                gx[n, c, p, q] = total


def max_pool2d_forward(x, k, s):
    """(y, argmax) for x (N, C, H, W); argmax holds int32 flat indices into each plane."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    y = xp.empty((n, c, ho, wo), dtype=x.dtype)
    argmax = xp.empty((n, c, ho, wo), dtype=np.int32)
    if backend.fast_cpu(x) and k == s == 2:
        fast.max_pool2d_forward_2x2(np.ascontiguousarray(x), y, argmax)
    else:
        backend.launch(x, "pool.cu", "max_pool2d_forward", y.size,
                       (xp.ascontiguousarray(x), n, c, h, w, k, s, ho, wo, y, argmax),
                       partial(_max_pool2d_forward_cpu, x, k, s, y, argmax))
    return y, argmax


def max_pool2d_backward(gy, argmax, x_shape, k, s):
    """Gradient of the input from the output gradient and the saved argmax."""
    xp = get_array_module(gy)
    gx = xp.empty(x_shape, dtype=gy.dtype)
    if backend.fast_cpu(gy) and s >= k:
        fast.max_pool2d_backward_disjoint(np.ascontiguousarray(gy), argmax, gx)
    else:
        n, c, h, w = x_shape
        backend.launch(gy, "pool.cu", "max_pool2d_backward", gx.size,
                       (xp.ascontiguousarray(gy), xp.ascontiguousarray(argmax), n, c, h, w, k, s,
                        gy.shape[2], gy.shape[3], gx),
                       partial(_max_pool2d_backward_cpu, gy, argmax, k, s, gx))
    return gx


def check_pool_args(x, k, s):
    if x.ndim != 4:
        raise ValueError(f"max_pool2d: input must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    for name, value in (("kernel_size", k), ("stride", s)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"max_pool2d: {name} must be an integer >= 1, got {value!r}")
    if x.shape[2] < k or x.shape[3] < k:
        raise ValueError(f"max_pool2d: kernel_size {k} is larger than the input's "
                         f"{x.shape[2]}x{x.shape[3]} (input {tuple(x.shape)})")


class MaxPool2d(Function):
    name = "max_pool2d"

    def __init__(self, kernel_size=2, stride=None):
        self.k = kernel_size
        self.s = kernel_size if stride is None else stride

    def forward(self, x):
        check_pool_args(x, self.k, self.s)
        y, self.argmax = max_pool2d_forward(x, self.k, self.s)
        self.x_shape = x.shape
        return y

    def backward(self, gy):
        return (max_pool2d_backward(gy, self.argmax, self.x_shape, self.k, self.s),)
