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
the CUDA kernels of the same names in ``kernels/conv.cu``.  The CPU fast path at
stride 1 takes the same products without the column matrix, one BLAS gemm per
kernel tap on shifted windows of the padded input (``minifcrn/cpu/conv.py``).
"""
from __future__ import annotations

from functools import partial

import numba
import numpy as np

from minifcrn import backend
from minifcrn.autograd import Function
from minifcrn.backend import get_array_module
from minifcrn.backend.jit import njit
from minifcrn.cpu import conv as fast
from minifcrn.cpu.gemm import gemm_for


@njit(parallel=True)
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


@njit(parallel=True)
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
    backend.launch(x, "conv.cu", "im2col", c * n * ho * wo,  # a thread per (c, column)
                   (xp.ascontiguousarray(x), n, c, h, w, kh, kw, stride, padding, ho, wo, cols),
                   partial(_im2col_cpu, x, kh, kw, stride, padding, ho, wo, cols))
    return cols


def col2im(cols, x_shape, kh, kw, stride, padding):
    """Adjoint of ``im2col``: columns (C*kh*kw, N*Ho*Wo) summed back into (N, C, H, W)."""
    xp = get_array_module(cols)
    n, c, h, w = x_shape
    ho, wo = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    dx = xp.empty(x_shape, dtype=cols.dtype)
    backend.launch(cols, "conv.cu", "col2im", dx.size,
                   (xp.ascontiguousarray(cols), n, c, h, w, kh, kw, stride, padding, ho, wo, dx),
                   partial(_col2im_cpu, cols, kh, kw, stride, padding, ho, wo, dx))
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


def _use_taps(x, stride):
    """Whether the CPU fast path (``minifcrn/cpu/conv.py``) takes this convolution."""
    return stride == 1 and backend.fast_cpu(x) and gemm_for(x.dtype) is not None


def conv2d_forward(x, w, b, stride, padding):
    """y = conv2d(x, w) + b on either backend (``vl_nnconv`` forward); b may be None."""
    if _use_taps(x, stride):
        return fast.conv2d_forward_stride1(x, w, b, padding)
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
        return fast.conv2d_backward_stride1(x, w, gy, padding, need_x, need_w)
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
