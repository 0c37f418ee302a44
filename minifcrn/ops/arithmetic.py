"""Elementwise arithmetic, reductions and reshaping, with NumPy broadcasting.

For ``z = x op y`` with broadcasting, the gradient of each operand is the
upstream gradient times the local derivative, summed over the axes that
broadcasting stretched (``sum_to``):

    add:  dx = g,        dy = g
    sub:  dx = g,        dy = -g
    mul:  dx = g * y,    dy = g * x
    div:  dx = g / y,    dy = -g * x / y**2
"""
from __future__ import annotations

from minifcrn.autograd import Function, Tensor, as_tensor
from minifcrn.backend import get_array_module


def sum_to(g, shape):
    """Sum ``g`` over the axes along which an array of ``shape`` was broadcast."""
    if tuple(g.shape) == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


class Add(Function):
    def forward(self, x, y):
        self.shapes = x.shape, y.shape
        return x + y

    def backward(self, g):
        return sum_to(g, self.shapes[0]), sum_to(g, self.shapes[1])


class Sub(Function):
    def forward(self, x, y):
        self.shapes = x.shape, y.shape
        return x - y

    def backward(self, g):
        return sum_to(g, self.shapes[0]), sum_to(-g, self.shapes[1])


class Mul(Function):
    def forward(self, x, y):
        self.x, self.y = x, y
        return x * y

    def backward(self, g):
        gx = sum_to(g * self.y, self.x.shape) if self.needs_input_grad[0] else None
        gy = sum_to(g * self.x, self.y.shape) if self.needs_input_grad[1] else None
        return gx, gy


class Div(Function):
    def forward(self, x, y):
        self.x, self.y = x, y
        return x / y

    def backward(self, g):
        gx = sum_to(g / self.y, self.x.shape) if self.needs_input_grad[0] else None
        gy = sum_to(-g * self.x / (self.y * self.y), self.y.shape) if self.needs_input_grad[1] else None
        return gx, gy


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, g):
        return (-g,)


class Sum(Function):
    """y = sum of x over ``axis`` (all axes if None);  dx = g broadcast back to x's shape."""

    def __init__(self, axis, keepdims):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.shape = x.shape
        return get_array_module(x).asarray(x.sum(axis=self.axis, keepdims=self.keepdims))

    def backward(self, g):
        xp = get_array_module(g)
        if not self.keepdims and self.axis is not None:
            axes = (self.axis,) if isinstance(self.axis, int) else self.axis
            g = xp.expand_dims(g, tuple(a % len(self.shape) for a in axes))
        return (xp.broadcast_to(g, self.shape),)


class Reshape(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.in_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, g):
        return (g.reshape(self.in_shape),)


def _is_basic(index) -> bool:
    """True for slices, integers, None and Ellipsis: indexing that never repeats an element."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (slice, int, type(None), type(Ellipsis))) for i in items)


class GetItem(Function):
    """y = x[index];  dx = zeros with g put back at index (summed where advanced indexing repeats)."""

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.shape, self.dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, g):
        xp = get_array_module(g)
        gx = xp.zeros(self.shape, dtype=self.dtype)
        if _is_basic(self.index):
            gx[self.index] = g
        else:
            xp.add.at(gx, self.index, g)
        return (gx,)


class Pad2d(Function):
    """Zero padding of the last two axes: (top, bottom, left, right);  dx = the matching crop of g."""

    def __init__(self, top, bottom, left, right):
        self.pads = top, bottom, left, right

    def forward(self, x):
        xp = get_array_module(x)
        t, b, l, r = self.pads
        y = xp.zeros(x.shape[:-2] + (x.shape[-2] + t + b, x.shape[-1] + l + r), dtype=x.dtype)
        y[..., t:t + x.shape[-2], l:l + x.shape[-1]] = x
        self.hw = x.shape[-2:]
        return y

    def backward(self, g):
        t, _, l, _ = self.pads
        h, w = self.hw
        return (g[..., t:t + h, l:l + w].copy(),)


def add(x, y): return Add()(x, y)
def sub(x, y): return Sub()(x, y)
def mul(x, y): return Mul()(x, y)
def div(x, y): return Div()(x, y)
def neg(x): return Neg()(x)
def reshape(x, shape): return Reshape(tuple(shape))(x)
def getitem(x, index): return GetItem(index)(x)
def pad2d(x, top=0, bottom=0, left=0, right=0): return Pad2d(top, bottom, left, right)(x)
def sum(x, axis=None, keepdims=False): return Sum(axis, keepdims)(x)  # noqa: A001


def mean(x, axis=None, keepdims=False):
    """sum / number of elements reduced."""
    x = as_tensor(x)
    axes = range(x.ndim) if axis is None else ((axis,) if isinstance(axis, int) else axis)
    n = 1
    for a in axes:
        n *= x.shape[a]
    return Sum(axis, keepdims)(x) * (1.0 / n)


def _reshape_method(self, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return reshape(self, shape)


def setup_tensor():
    """Give ``Tensor`` its arithmetic (NumPy broadcasting; Python numbers take the tensor's dtype),
    from this side, so that the autograd module needs no op (DeZero's ``setup_variable``)."""
    Tensor.__add__ = lambda self, other: add(self, other)
    Tensor.__radd__ = lambda self, other: add(other, self)
    Tensor.__sub__ = lambda self, other: sub(self, other)
    Tensor.__rsub__ = lambda self, other: sub(other, self)
    Tensor.__mul__ = lambda self, other: mul(self, other)
    Tensor.__rmul__ = lambda self, other: mul(other, self)
    Tensor.__truediv__ = lambda self, other: div(self, other)
    Tensor.__rtruediv__ = lambda self, other: div(other, self)
    Tensor.__neg__ = lambda self: neg(self)
    Tensor.__getitem__ = lambda self, index: getitem(self, index)
    Tensor.sum = lambda self, axis=None, keepdims=False: sum(self, axis, keepdims)
    Tensor.mean = lambda self, axis=None, keepdims=False: mean(self, axis, keepdims)
    Tensor.reshape = _reshape_method


setup_tensor()
