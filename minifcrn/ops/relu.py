"""Rectified linear unit.

    forward:   y = max(x, 0)
    backward:  dx = dy * [y > 0]

Only the output y is saved.  At x = 0 the gradient is 0.  NaN stays NaN
forward; its gradient is 0.  As NumPy's ``maximum(x, 0)``, relu(-0) = +0;
``relu_forward`` in ``kernels/elementwise.cu`` gives the same bits, but for a
NaN's payload (an H200 gave float32's canonical NaN, 0x7fffffff).  The
backward is a product, dy * [y > 0], so a NaN or inf in dy stays non-finite
where y > 0 and becomes NaN (0 * inf) or stays NaN elsewhere, on every path.
On the CPU forward and backward are each one parallel Numba pass
(``_relu_forward_cpu``, ``_relu_backward_cpu``), element for element the CUDA kernels.
"""
from __future__ import annotations

import numba

from minifcrn.autograd import Function
from minifcrn.backend import find_kernel, get_array_module


@numba.njit(parallel=True, cache=True)
def _relu_forward_cpu(x, y):
    zero = x.dtype.type(0)
    for t in numba.prange(y.size):  # one element per t, as the CUDA kernel
        v = x[t]
        y[t] = v if (v > 0 or v != v) else zero  # as maximum(v, 0): NaN passes, -0 becomes +0


@numba.njit(parallel=True, cache=True)
def _relu_backward_cpu(gy, y, gx):
    one, zero = gy.dtype.type(1), gy.dtype.type(0)
    for t in numba.prange(gx.size):  # one element per t, as the CUDA kernel
        gx[t] = gy[t] * (one if y[t] > 0 else zero)


def relu_forward(x):
    xp = get_array_module(x)
    kernel = find_kernel(x, "elementwise.cu", "relu_forward")
    x, y = xp.ascontiguousarray(x), xp.empty(x.shape, dtype=x.dtype)
    if kernel is None:
        _relu_forward_cpu(x.reshape(-1), y.reshape(-1))
    else:
        kernel(y.size, x, y.size, y)
    return y


def relu_backward(gy, y):
    xp = get_array_module(gy)
    kernel = find_kernel(gy, "elementwise.cu", "relu_backward")
    gx = xp.empty(gy.shape, dtype=gy.dtype)
    if kernel is None:
        _relu_backward_cpu(xp.ascontiguousarray(gy).reshape(-1), xp.ascontiguousarray(y).reshape(-1), gx.reshape(-1))
    else:
        kernel(gx.size, xp.ascontiguousarray(gy), xp.ascontiguousarray(y), gx.size, gx)
    return gx


class ReLU(Function):
    name = "relu"

    def forward(self, x):
        self.y = relu_forward(x)
        return self.y

    def backward(self, gy):
        return (relu_backward(gy, self.y),)
