"""The CPU fast path of conv2d at stride 1: one BLAS product per kernel tap, on shifted windows.

The reference path (``minifcrn/ops/conv.py``) builds the column matrix and takes one
product; this one never builds it.

Zero-pad each plane of x to hp x wp and lay them out channel-major, (C, N, hp,
wp) flattened: row c of the matrix xp holds channel c of every image end to
end, M = N*hp*wp positions (rounded up to whole 64-byte lines, so that every
row of every product starts on one).  The tap (u, v) of output position q = (n*hp + i)*wp
+ j is the input at q + u*wp + v, so for every tap t = (u, v), with the shift
d_t = u*wp + v and W_t = w[:, :, u, v] (O, C):

    y[:, q]     = sum_t W_t @ xp[:, q + d_t]        forward
    gW_t       += g[:, q] @ xp[:, q + d_t].T        weight gradient (as gW_t.T when C > O)
    gxp[:, q]   = sum_t W_t.T @ g[:, q - d_t]       input gradient (a gather)

where g is the output gradient on the same padded grid, zero outside the
Ho x Wo outputs.  Each is a BLAS gemm on a window of a buffer (row stride M),
accumulated in place: no column matrix is ever built, and the whole batch is
one product per tap (images need no loop of their own, so small deep planes
still make large products).  Positions with i >= Ho or j >= Wo are computed
and dropped; the windows that run past a plane read the next one (or a zero
margin) only for them.  The positions are taken a chunk at a time.

Neighbours share their zero padding: a plane is padded only at its top and
left (hp = H + p, wp = W + p, the data at (p, p)), because the bottom rows a
window needs are the next plane's top padding, and the right columns the next
row's left padding.  A window of a kept output never reaches the next plane's
data (its last row is p rows below the data, the last column p - 1 columns into
the next row), so the products stay exact, and the dropped positions are
(H + p)(W + p) - Ho*Wo a plane rather than (H + 2p)(W + 2p) - Ho*Wo: at 3x3 on
24x24 planes 8% of the positions computed instead of 15%, at 5x5 on 48x48
8% instead of 15%.  (When p >= the kernel size, Ho > H + p and the plane is Ho
tall instead.)

Few input channels (the first layer) take direct loops instead (``_direct``, below).
Both are tested against the reference path in tests/test_cpu_fast.py.
"""
from __future__ import annotations

import numba
import numpy as np

from minifcrn.backend.jit import njit
from minifcrn.cpu.gemm import N, T, gemm_for, gemm_rowmajor

DIRECT_MAX_K = 64  # up to this many taps * C (and more than one tap): direct loops (below)


def _plane_grid(h, w, kh, kw, padding):
    """(hp, wp, ho, wo): the padded plane shared with the neighbours (above), and the output size."""
    ho, wo = h + 2 * padding - kh + 1, w + 2 * padding - kw + 1
    return max(h + padding, ho), max(w + padding, wo), ho, wo


def _positions(n, hp, wp):
    """Positions per channel: n*hp*wp rounded up to whole 64-byte lines, so that every row of
    every product starts on a cache line."""
    return -(-n * hp * wp // 16) * 16


def _planes(flat, n, hp, wp):
    """The (C, N, hp, wp) planes of a (C, positions) buffer."""
    return flat.reshape(-1, _positions(n, hp, wp))[:, :n * hp * wp].reshape(-1, n, hp, wp)


def _padded_planes(a, top, left, hp, wp, front=0, back=0):
    """a (N, C, H, W) at (top, left) of zeroed hp x wp planes laid out (C, N, hp, wp), each
    channel's row of positions ``_positions`` long, flattened, with zero margins."""
    n, c, h, w = a.shape
    size = c * _positions(n, hp, wp)
    buf = np.zeros(front + size + back, dtype=a.dtype)
    _planes(buf[front:front + size], n, hp, wp)[:, :, top:top + h, left:left + w] = a.transpose(1, 0, 2, 3)
    return buf


def _direct(c, taps):
    """Direct loops (below) rather than a product per tap: few channels, more than one tap."""
    return taps > 1 and c * taps <= DIRECT_MAX_K


def _chunk(positions):
    """Positions per gemm: 8192, which keeps a product's operands in the cache and still makes
    them long (bench/notes/design-measurements.md has the measurement that chose it)."""
    return min(positions, 8192)


@njit()
def _conv2d_forward_taps(gemm, xp, wc, shifts, positions, chunk, y):
    o, k = wc.shape  # wc[o, t*c + ci] = w[o, ci, u, v]: W_t is the column block t, row stride k
    c = k // shifts.size
    w_flat = wc.ravel()
    for s in range(0, positions, chunk):
        size = min(chunk, positions - s)
        for t in range(shifts.size):  # y[:, s:s+size] (+)= W_t @ xp[:, s+d_t : ...]
            gemm_rowmajor(gemm, N, N, o, size, c, 1.0, w_flat[t * c:], k, xp[s + shifts[t]:], positions,
                          0.0 if t == 0 else 1.0, y[s:], positions)


@njit()
def _conv2d_weight_grad_taps(gemm, xp, g, shifts, front, positions, chunk, x_first, gwt):
    """gwt (taps, O, C): gwt[t] = gW_t; or, with x_first, (taps, C, O): gwt[t] = gW_t.T."""
    _, rows, cols = gwt.shape
    flat = gwt.ravel()
    for s in range(0, positions, chunk):  # (BLAS must not be called from inside a parallel loop:
        size = min(chunk, positions - s)  # OpenMP and OpenBLAS's own threads can deadlock)
        for t in range(shifts.size):  # gW_t += g[:, s:s+size] @ xp[:, s+d_t : ...].T, or its transpose
            xs, gs = xp[s + shifts[t]:], g[front + s:]
            a, b = (xs, gs) if x_first else (gs, xs)
            gemm_rowmajor(gemm, N, T, rows, cols, size, 1.0, a, positions, b, positions,
                          1.0, flat[t * rows * cols:], cols)


@njit()
def _conv2d_input_grad_taps(gemm, g, wc, shifts, front, positions, chunk, gxp):
    o, k = wc.shape
    c = k // shifts.size
    w_flat = wc.ravel()
    for s in range(0, positions, chunk):
        size = min(chunk, positions - s)
        for t in range(shifts.size):  # gxp[:, s:s+size] (+)= W_t.T @ g[:, s-d_t : ...]
            gemm_rowmajor(gemm, T, N, c, size, o, 1.0, w_flat[t * c:], k, g[front + s - shifts[t]:], positions,
                          0.0 if t == 0 else 1.0, gxp[s:], positions)


# -- few input channels: direct loops ------------------------------------------------------
#
# With C = 1 (the first layer) a product per tap has an inner dimension of 1 and
# is bound by memory, not arithmetic.  There each (image, output channel) plane is
# computed directly, one tap at a time over the whole plane (which stays in cache):
#
#     y[n, o] = b[o] + sum_{c, u, v} w[o, c, u, v] * xp[n, c, u:u+Ho, v:v+Wo]
#     gW[o, c, u, v] = sum_{n, i, j} gy[n, o, i, j] * xp[n, c, i+u, j+v]
#
# (each row's sum in the arrays' precision, reassociated so that it vectorises, and
# the rows' sums in float64; NaN and inf still propagate).


@njit(parallel=True)
def _conv2d_forward_direct(xp, w, b, y):
    n_, c_, _, _ = xp.shape
    o_, _, kh, kw = w.shape
    _, _, ho, wo = y.shape
    for no in numba.prange(n_ * o_):  # one output plane per (n, o)
        n, o = no // o_, no % o_
        out = y[n, o]
        out[:, :] = b[o] if b.size else 0.0
        for c in range(c_):
            for u in range(kh):
                for v in range(kw):
                    tap = w[o, c, u, v]
                    for i in range(ho):
                        for j in range(wo):
                            out[i, j] += tap * xp[n, c, i + u, j + v]


@njit(parallel=True, fastmath={"reassoc", "contract"})
def _conv2d_weight_grad_direct(xp, gy, gw):
    o_, c_, kh, kw = gw.shape
    n_, _, ho, wo = gy.shape
    for o in numba.prange(o_):  # one output channel's weights per worker
        for c in range(c_):
            totals = np.zeros((kh, kw))
            for n in range(n_):
                for i in range(ho):  # a row of gy, in cache, meets every tap
                    for u in range(kh):
                        for v in range(kw):
                            row = gy[n, o, i, 0] * xp[n, c, i + u, v]
                            for j in range(1, wo):
                                row += gy[n, o, i, j] * xp[n, c, i + u, j + v]
                            totals[u, v] += row
            for u in range(kh):
                for v in range(kw):
                    gw[o, c, u, v] = totals[u, v]


def conv2d_forward_stride1(x, w, b, padding):
    """y = conv2d(x, w, padding) + b at stride 1, on NumPy arrays of float32 or float64."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    hp, wp, ho, wo = _plane_grid(h, wd, kh, kw, padding)
    positions = _positions(n, hp, wp)
    shifts = np.array([u * wp + v for u in range(kh) for v in range(kw)], dtype=np.int64)
    y = np.empty((n, o, ho, wo), dtype=x.dtype)
    if _direct(c, kh * kw):
        bias = np.zeros(0, x.dtype) if b is None else np.ascontiguousarray(b)
        xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        _conv2d_forward_direct(xp, np.ascontiguousarray(w), bias, y)
        return y
    xp = _padded_planes(x, padding, padding, hp, wp, back=shifts[-1])
    wc = np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(o, -1)
    out = np.empty(o * positions, dtype=x.dtype)
    _conv2d_forward_taps(gemm_for(x.dtype), xp, wc, shifts, positions, _chunk(positions), out)
    out = _planes(out, n, hp, wp)[:, :, :ho, :wo].transpose(1, 0, 2, 3)
    if b is None:
        y[...] = out
    else:
        np.add(out, b.reshape(1, o, 1, 1), out=y)  # the bias in the same pass as the crop and transpose
    return y


def conv2d_backward_stride1(x, w, gy, padding, need_x, need_w):
    """(gx, gw) of ``conv2d_forward_stride1``; None where not needed."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    hp, wp, _, _ = _plane_grid(h, wd, kh, kw, padding)
    positions = _positions(n, hp, wp)
    shifts = np.array([u * wp + v for u in range(kh) for v in range(kw)], dtype=np.int64)
    front = back = shifts[-1]
    direct = _direct(c, kh * kw)
    gemm = gemm_for(x.dtype)
    g = _padded_planes(gy, 0, 0, hp, wp, front=front) if need_x or not direct else None  # 0 off the outputs
    gx = gw = None
    if need_w and direct:
        xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        gw = np.empty(w.shape, dtype=x.dtype)
        _conv2d_weight_grad_direct(xp, np.ascontiguousarray(gy), gw)
    elif need_w:
        xp = _padded_planes(x, padding, padding, hp, wp, back=back)
        # the larger of C and O first: OpenBLAS runs these long, thin products faster so
        x_first = c > o
        gwt = np.zeros((kh * kw, c, o) if x_first else (kh * kw, o, c), dtype=x.dtype)
        _conv2d_weight_grad_taps(gemm, xp, g, shifts, front, positions, _chunk(positions), x_first, gwt)
        gwt = gwt.reshape(kh, kw, *gwt.shape[1:])
        gw = np.ascontiguousarray(gwt.transpose(3, 2, 0, 1) if x_first else gwt.transpose(2, 3, 0, 1))
    if need_x:
        wc = np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(o, -1)
        gxp = np.empty(c * positions, dtype=x.dtype)
        _conv2d_input_grad_taps(gemm, g, wc, shifts, front, positions, _chunk(positions), gxp)
        gx = np.ascontiguousarray(
            _planes(gxp, n, hp, wp)[:, :, padding:padding + h, padding:padding + wd].transpose(1, 0, 2, 3))
    return gx, gw
