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

from functools import partial

import numba

from minifcrn import backend
from minifcrn.autograd import Function
from minifcrn.backend import get_array_module
from minifcrn.backend.jit import njit


@njit(parallel=True)
def _relu_forward_cpu(x, y):
    zero = x.dtype.type(0)
    for t in numba.prange(y.size):  # one element per t, as the CUDA kernel
        v = x[t]
        y[t] = v if (v > 0 or v != v) else zero  # as maximum(v, 0): NaN passes, -0 becomes +0


@njit(parallel=True)
def _relu_backward_cpu(gy, y, gx):
    one, zero = gy.dtype.type(1), gy.dtype.type(0)
    for t in numba.prange(gx.size):  # one element per t, as the CUDA kernel
        gx[t] = gy[t] * (one if y[t] > 0 else zero)


def relu_forward(x):
    xp = get_array_module(x)
    x, y = xp.ascontiguousarray(x), xp.empty(x.shape, dtype=x.dtype)
    backend.launch(x, "elementwise.cu", "relu_forward", y.size, (x, y.size, y),
                   partial(_relu_forward_cpu, x.reshape(-1), y.reshape(-1)))
    return y


def relu_backward(gy, y):
    xp = get_array_module(gy)
    gy, y, gx = xp.ascontiguousarray(gy), xp.ascontiguousarray(y), xp.empty(gy.shape, dtype=gy.dtype)
    backend.launch(gy, "elementwise.cu", "relu_backward", gx.size, (gy, y, gx.size, gx),
                   partial(_relu_backward_cpu, gy.reshape(-1), y.reshape(-1), gx.reshape(-1)))
    return gx


class ReLU(Function):
    name = "relu"

    def forward(self, x):
        self.y = relu_forward(x)
        return self.y

    def backward(self, gy):
        return (relu_backward(gy, self.y),)
