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
the CUDA kernels of the same names in ``kernels/conv.cu``.
"""
from __future__ import annotations

import numba
import numpy as np

from minifcrn.autograd import Function
from minifcrn.backend import find_kernel, get_array_module


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
        kernel(cols.size, xp.ascontiguousarray(x), n, c, h, w, kh, kw, stride, padding, ho, wo, cols)
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


# -- the CPU path for stride 1: shifted slices of a flattened padded grid ------------------
#
# Lay the zero-padded input out as flat (C, N*Hp*Wp): then the tap (u, v) of every
# output position q = n*Hp*Wp + i*Wp + j is flat[:, q + u*Wp + v], so a row of the
# column matrix is one contiguous slice.  Positions with i >= Ho or j >= Wo are
# computed and dropped.  The grid is processed CHUNK columns at a time, so the
# column block stays in cache and no layer-sized buffer is ever built.  The input
# gradient is the same construction on the output gradient with the taps mirrored,
# a gather: dx[:, q] = sum_{u,v} w[:, :, u, v].T @ g[:, q - u*Wp - v].

CHUNK = 2048  # padded-grid positions per matrix product


def _flat_padded(a, top, left, hp, wp, front=0, back=0):
    """a (N, C, H, W) as (C, front + N*hp*wp + back): a at (top, left) of each hp x wp block, zeros elsewhere."""
    n, c, h, w = a.shape
    flat = np.zeros((c, front + n * hp * wp + back), dtype=a.dtype)
    flat[:, front:front + n * hp * wp].reshape(c, n, hp, wp)[:, :, top:top + h, left:left + w] = \
        a.transpose(1, 0, 2, 3)
    return flat


def _gather_taps(flat, starts, begin, size, out):
    """out[:, t, :] = flat[:, begin + starts[t] : ... + size], the column block of one chunk."""
    for t, start in enumerate(starts):
        out[:, t, :size] = flat[:, begin + start:begin + start + size]
    return out[:, :, :size].reshape(-1, size) if size == out.shape[2] else \
        np.ascontiguousarray(out[:, :, :size]).reshape(-1, size)


def conv2d_forward_stride1(x, w, b, padding):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    hp, wp = h + 2 * padding, wd + 2 * padding
    ho, wo, grid = hp - kh + 1, wp - kw + 1, n * hp * wp
    taps = [u * wp + v for u in range(kh) for v in range(kw)]
    flat = _flat_padded(x, padding, padding, hp, wp, back=taps[-1])
    w2 = w.reshape(o, -1)
    y = np.empty((o, grid), dtype=x.dtype)
    block = np.empty((c, len(taps), CHUNK), dtype=x.dtype)
    for s in range(0, grid, CHUNK):
        size = min(CHUNK, grid - s)
        np.matmul(w2, _gather_taps(flat, taps, s, size, block), out=y[:, s:s + size])
    out = np.empty((n, o, ho, wo), dtype=x.dtype)
    y = y.reshape(o, n, hp, wp)[:, :, :ho, :wo].transpose(1, 0, 2, 3)
    if b is None:
        out[...] = y
    else:
        np.add(y, b.reshape(1, o, 1, 1), out=out)  # bias added in the same pass as the transpose
    return out


def conv2d_backward_stride1(x, w, gy, padding, need_x, need_w):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    hp, wp = h + 2 * padding, wd + 2 * padding
    grid = n * hp * wp
    taps = [u * wp + v for u in range(kh) for v in range(kw)]
    last = taps[-1]
    g = _flat_padded(gy, 0, 0, hp, wp, front=last)  # output gradient on the padded grid
    flat = _flat_padded(x, padding, padding, hp, wp, back=last) if need_w else None
    gw = np.zeros((o, c * kh * kw), dtype=x.dtype) if need_w else None
    dx = np.empty((c, grid), dtype=x.dtype) if need_x else None
    wt = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(c, -1)  # mirrored taps
    block = np.empty((c, len(taps), CHUNK), dtype=x.dtype)
    gblock = np.empty((o, len(taps), CHUNK), dtype=x.dtype)
    for s in range(0, grid, CHUNK):
        size = min(CHUNK, grid - s)
        if need_w:
            gw += g[:, last + s:last + s + size] @ _gather_taps(flat, taps, s, size, block).T
        if need_x:
            np.matmul(wt, _gather_taps(g, taps, s, size, gblock), out=dx[:, s:s + size])
    gx = None
    if need_x:
        gx = np.ascontiguousarray(
            dx.reshape(c, n, hp, wp)[:, :, padding:padding + h, padding:padding + wd].transpose(1, 0, 2, 3))
    return gx, (gw.reshape(w.shape) if need_w else None)


class Conv2d(Function):
    name = "conv2d"

    def __init__(self, stride=1, padding=0):
        self.stride, self.padding = stride, padding

    def forward(self, x, w, b=None):
        check_conv2d_args(x, w, b, self.stride, self.padding)
        self.x, self.w = x, w
        if self.stride == 1 and find_kernel(x, "conv.cu", "im2col") is None:
            return conv2d_forward_stride1(x, w, b, self.padding)
        xp = get_array_module(x)
        n, _, _, _ = x.shape
        o, c, kh, kw = w.shape
        cols = im2col(x, kh, kw, self.stride, self.padding)
        y = w.reshape(o, c * kh * kw) @ cols  # (O, N*Ho*Wo): one matrix product for the batch
        ho, wo = (x.shape[2] + 2 * self.padding - kh) // self.stride + 1, \
                 (x.shape[3] + 2 * self.padding - kw) // self.stride + 1
        y = y.reshape(o, n, ho, wo).transpose(1, 0, 2, 3)
        out = xp.empty((n, o, ho, wo), dtype=x.dtype)
        if b is None:
            out[...] = y
        else:
            xp.add(y, b.reshape(1, o, 1, 1), out=out)  # bias added in the same pass as the transpose
        return out

    def backward(self, gy):
        x, w = self.x, self.w
        o, c, kh, kw = w.shape
        need_x, need_w = self.needs_input_grad[0], self.needs_input_grad[1]
        need_b = len(self.needs_input_grad) > 2 and self.needs_input_grad[2]
        gb = gy.sum(axis=(0, 2, 3)) if need_b else None
        if self.stride == 1 and find_kernel(x, "conv.cu", "im2col") is None:
            gx, gw = conv2d_backward_stride1(x, w, gy, self.padding, need_x, need_w)
            return gx, gw, gb
        gy2 = gy.transpose(1, 0, 2, 3).reshape(o, -1)  # (O, N*Ho*Wo)
        gx = gw = None
        if need_w:
            gw = (gy2 @ im2col(x, kh, kw, self.stride, self.padding).T).reshape(w.shape)
        if need_x:
            gcols = w.reshape(o, -1).T @ gy2
            gx = col2im(gcols, x.shape, kh, kw, self.stride, self.padding)
        return gx, gw, gb
