"""The CPU fast paths of max-pooling: the 2x2 window written out, and a scatter backward
where the windows do not overlap.  Tested against ``minifcrn/ops/pool.py``."""
from __future__ import annotations

import math

import numba

from minifcrn.backend.jit import njit


@numba.njit(inline="always")
def wins(val, best):
    """The reference's rule (``minifcrn/ops/pool.py``): strictly greater, or the first NaN."""
    return val > best or (math.isnan(val) and not math.isnan(best))


@njit(parallel=True)
def max_pool2d_forward_2x2(x, y, argmax):
    """``max_pool2d_forward`` for k = s = 2 (FCRN's pools), the four taps written out in the
    reference loop's order, so ties and NaN go the same way."""
    n_, c_, h, w = x.shape
    _, _, ho, wo = y.shape
    for nc in numba.prange(n_ * c_):
        n, c = nc // c_, nc % c_
        for i in range(ho):
            top, bottom = x[n, c, 2 * i], x[n, c, 2 * i + 1]
            for j in range(wo):
                best, where = top[2 * j], 2 * i * w + 2 * j
                if wins(top[2 * j + 1], best):
                    best, where = top[2 * j + 1], 2 * i * w + 2 * j + 1
                if wins(bottom[2 * j], best):
                    best, where = bottom[2 * j], (2 * i + 1) * w + 2 * j
                if wins(bottom[2 * j + 1], best):
                    best, where = bottom[2 * j + 1], (2 * i + 1) * w + 2 * j + 1
                y[n, c, i, j] = best
                argmax[n, c, i, j] = where


@njit(parallel=True)
def max_pool2d_backward_disjoint(gy, argmax, gx):
    """Windows that do not overlap (stride >= kernel): each input receives at most one
    output's gradient, so the gradients are written straight to their argmax rather than
    gathered."""
    n_, c_, h, w = gx.shape
    _, _, ho, wo = gy.shape
    for nc in numba.prange(n_ * c_):
        n, c = nc // c_, nc % c_
        plane = gx[n, c].ravel()  # a view: gx is C-contiguous
        plane[:] = 0.0
        for i in range(ho):
            for j in range(wo):
                plane[argmax[n, c, i, j]] = gy[n, c, i, j]
