"""Rectified linear unit.

    forward:   y = max(x, 0)
    backward:  dx = dy * [y > 0]

Only the output y is saved.  At x = 0 the gradient is 0.  NaN stays NaN
forward; its gradient is 0.
"""
from __future__ import annotations

from minifcrn.autograd import Function
from minifcrn.backend import get_array_module


def relu_forward(x):
    xp = get_array_module(x)
    return xp.where(x < 0, xp.zeros((), dtype=x.dtype), x)  # keeps NaN, unlike x * (x > 0)


def relu_backward(gy, y):
    return gy * (y > 0)


class ReLU(Function):
    name = "relu"

    def forward(self, x):
        self.y = relu_forward(x)
        return self.y

    def backward(self, gy):
        return (relu_backward(gy, self.y),)
