"""2-D convolution (cross-correlation, as in every deep-learning library), NCHW.

Forward, for input x (N, C, H, W), weight w (O, C, kh, kw), bias b (O,):

    y[n, o, i, j] = b[o] + sum_{c, u, v} w[o, c, u, v] * xp[n, c, s*i + u, s*j + v]

where xp is x zero-padded by p on each side, s the stride, and the output is
Ho = (H + 2p - kh) // s + 1 by Wo = (W + 2p - kw) // s + 1.

Written as one matrix product (MatConvNet's ``vl_nnconv``): ``im2col`` lays
every receptive field out as a column, cols (C*kh*kw, N*Ho*Wo), so that

    forward:   Y  = W  @ cols             W = w.reshape(O, C*kh*kw), Y (O, N*Ho*Wo)
    backward:  dW = dY @ cols.T           db = dY summed over n, i, j
               dcols = W.T @ dY,          dx = col2im(dcols)

``col2im`` is the adjoint of ``im2col``: every input pixel *gathers* the
column entries that copied it (a sum over the kernel taps that reach it), so
no two workers ever write the same element and the sum is the same run after
run.  Only x and w are saved; backward rebuilds cols rather than keeping the
largest buffer of the layer alive.

``im2col`` and ``col2im`` here are Numba loops that mirror, index for index,
the CUDA kernels of the same names in ``kernels/conv.cu``; the GPU and any
stride > 1 take this path.  On the CPU at stride 1 the same products are taken
without the column matrix: one BLAS gemm per kernel tap on shifted windows of
the padded input (see "the CPU path for stride 1" below).
"""
from __future__ import annotations

import numba
import numpy as np

from minifcrn.autograd import Function
from minifcrn.backend import find_kernel, get_array_module
from minifcrn.ops.gemm import N, T, gemm_for, gemm_rowmajor


@numba.njit(parallel=True, cache=True)
def _im2col_cpu(x, kh, kw, stride, padding, ho, wo, cols):
    n_, c_, h, w = x.shape
    for row in numba.prange(c_ * kh * kw):  # one row of cols per (c, u, v)
        c, uv = row // (kh * kw), row % (kh * kw)
        u, v = uv // kw, uv % kw
        for n in range(n_):
            base = n * ho * wo
            for i in range(ho):
                iy = i * stride - padding + u
                for j in range(wo):
                    ix = j * stride - padding + v
                    inside = 0 <= iy < h and 0 <= ix < w
                    cols[row, base + i * wo + j] = x[n, c, iy, ix] if inside else 0.0


@numba.njit(parallel=True, cache=True)
def _col2im_cpu(cols, kh, kw, stride, padding, ho, wo, dx):
    n_, c_, h, w = dx.shape
    for nc in numba.prange(n_ * c_):  # each input pixel gathers its taps
        n, c = nc // c_, nc % c_
        for y in range(h):
            for x in range(w):
                total = 0.0
                for u in range(kh):
                    ty = y + padding - u
                    if ty < 0 or ty % stride != 0 or ty // stride >= ho:
                        continue
                    i = ty // stride
                    for v in range(kw):
                        tx = x + padding - v
                        if tx < 0 or tx % stride != 0 or tx // stride >= wo:
                            continue
                        j = tx // stride
                        total += cols[(c * kh + u) * kw + v, (n * ho + i) * wo + j]
                dx[n, c, y, x] = total


def im2col(x, kh, kw, stride, padding):
    """Receptive fields of x (N, C, H, W) as columns (C*kh*kw, N*Ho*Wo)."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    ho, wo = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    cols = xp.empty((c * kh * kw, n * ho * wo), dtype=x.dtype)
    kernel = find_kernel(x, "conv.cu", "im2col")
    if kernel is None:
        _im2col_cpu(x, kh, kw, stride, padding, ho, wo, cols)
    else:
        kernel(c * n * ho * wo, xp.ascontiguousarray(x), n, c, h, w, kh, kw, stride, padding, ho, wo, cols)  # a thread per (c, column)
    return cols


def col2im(cols, x_shape, kh, kw, stride, padding):
    """Adjoint of ``im2col``: columns (C*kh*kw, N*Ho*Wo) summed back into (N, C, H, W)."""
    xp = get_array_module(cols)
    n, c, h, w = x_shape
    ho, wo = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    dx = xp.empty(x_shape, dtype=cols.dtype)
    kernel = find_kernel(cols, "conv.cu", "col2im")
    if kernel is None:
        _col2im_cpu(cols, kh, kw, stride, padding, ho, wo, dx)
    else:
        kernel(dx.size, xp.ascontiguousarray(cols), n, c, h, w, kh, kw, stride, padding, ho, wo, dx)
    return dx


def check_conv2d_args(x, w, b, stride, padding):
    """Raise a one-line ValueError/TypeError naming the argument and the shapes."""
    if x.ndim != 4:
        raise ValueError(f"conv2d: input must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if w.ndim != 4:
        raise ValueError(f"conv2d: weight must be 4-D (O, C, kh, kw), got shape {tuple(w.shape)}")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"conv2d: input has {x.shape[1]} channels but weight expects {w.shape[1]} "
                         f"(input {tuple(x.shape)}, weight {tuple(w.shape)})")
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise ValueError(f"conv2d: bias must have shape ({w.shape[0]},), got {tuple(b.shape)}")
    for name, value, least in (("stride", stride, 1), ("padding", padding, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"conv2d: {name} must be an integer >= {least}, got {value!r}")
    if x.shape[2] + 2 * padding < w.shape[2] or x.shape[3] + 2 * padding < w.shape[3]:
        raise ValueError(f"conv2d: kernel {tuple(w.shape[2:])} is larger than the padded input "
                         f"{(x.shape[2] + 2 * padding, x.shape[3] + 2 * padding)} "
                         f"(input {tuple(x.shape)}, padding {padding})")
    dtypes = {a.dtype for a in (x, w, b) if a is not None}
    if len(dtypes) > 1:
        raise TypeError(f"conv2d: input, weight and bias must share one dtype, got "
                        f"{', '.join(sorted(str(d) for d in dtypes))}")


# -- the CPU path for stride 1: one matrix product per kernel tap, on shifted windows --------
#
# Zero-pad each plane of x to hp x wp and lay them out channel-major, (C, N, hp,
# wp) flattened: row c of the matrix xp holds channel c of every image end to
# end, M = N*hp*wp positions (rounded up to whole 64-byte lines, so that every
# row of every product starts on one).  The tap (u, v) of output position q = (n*hp + i)*wp
# + j is the input at q + u*wp + v, so for every tap t = (u, v), with the shift
# d_t = u*wp + v and W_t = w[:, :, u, v] (O, C):
#
#     y[:, q]     = sum_t W_t @ xp[:, q + d_t]        forward
#     gW_t       += g[:, q] @ xp[:, q + d_t].T        weight gradient (as gW_t.T when C > O)
#     gxp[:, q]   = sum_t W_t.T @ g[:, q - d_t]       input gradient (a gather)
#
# where g is the output gradient on the same padded grid, zero outside the
# Ho x Wo outputs.  Each is a BLAS gemm on a window of a buffer (row stride M),
# accumulated in place: no column matrix is ever built, and the whole batch is
# one product per tap (images need no loop of their own, so small deep planes
# still make large products).  Positions with i >= Ho or j >= Wo are computed
# and dropped; the windows that run past a plane read the next one (or a zero
# margin) only for them.  The positions are taken a chunk at a time.
#
# Neighbours share their zero padding: a plane is padded only at its top and
# left (hp = H + p, wp = W + p, the data at (p, p)), because the bottom rows a
# window needs are the next plane's top padding, and the right columns the next
# row's left padding.  A window of a kept output never reaches the next plane's
# data (its last row is p rows below the data, the last column p - 1 columns into
# the next row), so the products stay exact, and the dropped positions are
# (H + p)(W + p) - Ho*Wo a plane rather than (H + 2p)(W + 2p) - Ho*Wo: at 3x3 on
# 24x24 planes 8% of the positions computed instead of 15%, at 5x5 on 48x48
# 8% instead of 15%.  (When p >= the kernel size, Ho > H + p and the plane is Ho
# tall instead.)

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
    """Positions per gemm: 8192 (measured on FCRN-A and -B training steps, 2026-12-01: 7% and 10%
    faster than keeping each written block near 512 KiB, and than one product over all positions)."""
    return min(positions, 8192)


@numba.njit(cache=True)
def _conv2d_forward_taps(gemm, xp, wc, shifts, positions, chunk, y):
    o, k = wc.shape  # wc[o, t*c + ci] = w[o, ci, u, v]: W_t is the column block t, row stride k
    c = k // shifts.size
    w_flat = wc.ravel()
    for s in range(0, positions, chunk):
        size = min(chunk, positions - s)
        for t in range(shifts.size):  # y[:, s:s+size] (+)= W_t @ xp[:, s+d_t : ...]
            gemm_rowmajor(gemm, N, N, o, size, c, 1.0, w_flat[t * c:], k, xp[s + shifts[t]:], positions,
                          0.0 if t == 0 else 1.0, y[s:], positions)


@numba.njit(cache=True)
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


@numba.njit(cache=True)
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


@numba.njit(parallel=True, cache=True)
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


@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
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
        # the larger of C and O first: OpenBLAS runs these long, thin products faster so (FCRN-A's
        # conv6 24 against 36 ms, conv5 40 against 48, 2026-12-03)
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


def _use_taps(x, stride):
    """The stride-1 gemm path: on the CPU, for float32/float64."""
    return stride == 1 and gemm_for(x.dtype) is not None and find_kernel(x, "conv.cu", "im2col") is None


def conv2d_forward(x, w, b, stride, padding):
    """y = conv2d(x, w) + b on either backend (``vl_nnconv`` forward); b may be None."""
    if _use_taps(x, stride):
        return conv2d_forward_stride1(x, w, b, padding)
    xp = get_array_module(x)
    n, _, _, _ = x.shape
    o, c, kh, kw = w.shape
    cols = im2col(x, kh, kw, stride, padding)
    y = w.reshape(o, c * kh * kw) @ cols  # (O, N*Ho*Wo): one matrix product for the batch
    ho, wo = (x.shape[2] + 2 * padding - kh) // stride + 1, (x.shape[3] + 2 * padding - kw) // stride + 1
    y = y.reshape(o, n, ho, wo).transpose(1, 0, 2, 3)
    out = xp.empty((n, o, ho, wo), dtype=x.dtype)
    if b is None:
        out[...] = y
    else:
        xp.add(y, b.reshape(1, o, 1, 1), out=out)  # bias added in the same pass as the transpose
    return out


def conv2d_backward(x, w, gy, stride, padding, need_x=True, need_w=True):
    """(gx, gw) of conv2d on either backend (``vl_nnconv`` backward); None where not needed."""
    if _use_taps(x, stride):
        return conv2d_backward_stride1(x, w, gy, padding, need_x, need_w)
    o, c, kh, kw = w.shape
    gy2 = gy.transpose(1, 0, 2, 3).reshape(o, -1)  # (O, N*Ho*Wo)
    gx = gw = None
    if need_w:
        gw = (gy2 @ im2col(x, kh, kw, stride, padding).T).reshape(w.shape)
    if need_x:
        gcols = w.reshape(o, -1).T @ gy2
        gx = col2im(gcols, x.shape, kh, kw, stride, padding)
    return gx, gw


class Conv2d(Function):
    name = "conv2d"

    def __init__(self, stride=1, padding=0):
        self.stride, self.padding = stride, padding

    def forward(self, x, w, b=None):
        check_conv2d_args(x, w, b, self.stride, self.padding)
        self.x, self.w = x, w
        return conv2d_forward(x, w, b, self.stride, self.padding)

    def backward(self, gy):
        need_x, need_w = self.needs_input_grad[0], self.needs_input_grad[1]
        need_b = len(self.needs_input_grad) > 2 and self.needs_input_grad[2]
        gb = gy.sum(axis=(0, 2, 3)) if need_b else None
        gx, gw = conv2d_backward(self.x, self.w, gy, self.stride, self.padding, need_x, need_w)
        return gx, gw, gb
