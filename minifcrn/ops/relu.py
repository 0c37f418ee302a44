"""Rectified linear unit.

    forward:   y = max(x, 0)
    backward:  dx = dy * [y > 0]

Only the output y is saved.  At x = 0 the gradient is 0.  NaN stays NaN
forward; its gradient is 0.  As NumPy's ``maximum(x, 0)``, relu(-0) = +0;
``relu_forward`` in ``kernels/elementwise.cu`` gives the same bits.
"""
from __future__ import annotations

from minifcrn.autograd import Function
from minifcrn.backend import find_kernel, get_array_module


def relu_forward(x):
    xp = get_array_module(x)
    kernel = find_kernel(x, "elementwise.cu", "relu_forward")
    if kernel is None:
        return xp.maximum(x, x.dtype.type(0))  # keeps NaN, unlike x * (x > 0)
    y = xp.empty(x.shape, dtype=x.dtype)
    kernel(y.size, xp.ascontiguousarray(x), y.size, y)
    return y


def relu_backward(gy, y):
    kernel = find_kernel(gy, "elementwise.cu", "relu_backward")
    if kernel is None:
        return gy * (y > 0)
    xp = get_array_module(gy)
    gx = xp.empty(gy.shape, dtype=gy.dtype)
    kernel(gx.size, xp.ascontiguousarray(gy), xp.ascontiguousarray(y), gx.size, gx)
    return gx


class ReLU(Function):
    name = "relu"

    def forward(self, x):
        self.y = relu_forward(x)
        return self.y

    def backward(self, gy):
        return (relu_backward(gy, self.y),)
