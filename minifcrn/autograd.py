"""Tensors and reverse-mode automatic differentiation over a dynamic graph.

A ``Tensor`` wraps a raw NumPy or CuPy array.  Calling a ``Function`` on
tensors runs its ``forward`` on the raw arrays and, when a gradient is needed,
records the function as the output's ``creator``.  ``loss.backward()`` visits
the recorded functions in reverse topological order, calls each ``backward``
with the gradient of its output and sums the gradients flowing into every
input (a tensor used twice receives both contributions).  Leaves that require
a gradient accumulate it into ``.grad`` (a raw array); the graph, with every
buffer a ``forward`` saved, is released as soon as it has been used.

This module knows no op: ``minifcrn.ops.arithmetic`` gives ``Tensor`` its
operators (+, -, *, /, indexing, sum, mean, reshape) when it is imported.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from minifcrn import backend


class _GradMode(threading.local):
    """Whether recording is on, per thread: one thread's ``no_grad`` (say a Dask worker's)
    must not switch recording off, or back on, under another."""

    enabled = True


_grad_mode = _GradMode()


def is_grad_enabled() -> bool:
    """Whether calls on tensors are being recorded for backward (in this thread)."""
    return _grad_mode.enabled


@contextlib.contextmanager
def no_grad():
    """Context manager: nothing run inside it (in this thread) is recorded for backward."""
    previous, _grad_mode.enabled = _grad_mode.enabled, False
    try:
        yield
    finally:
        _grad_mode.enabled = previous


class Function:
    """One differentiable operation on raw arrays.

    Subclasses implement ``forward(*arrays) -> array`` and
    ``backward(grad_output) -> tuple`` (one gradient or None per input),
    saving on ``self`` only what backward needs.  ``self.needs_input_grad``
    tells backward which gradients are wanted.
    """

    name = None  # shown in error messages; defaults to the class name

    def __call__(self, *inputs):
        tensors = [as_tensor(x, like=inputs) for x in inputs]
        devices = {t.device for t in tensors}
        if len(devices) > 1:
            shapes = ", ".join(f"{t.device}{tuple(t.shape)}" for t in tensors)
            raise ValueError(f"{self.op_name}: inputs are on different devices ({shapes}); "
                             "move them with .to(device)")
        self.needs_input_grad = tuple(t.requires_grad for t in tensors)
        output = Tensor(self.forward(*(t.data for t in tensors)))
        if _grad_mode.enabled and any(self.needs_input_grad):
            output.requires_grad = True
            output.creator = self
            # The graph keeps where each input's gradient goes, not the input itself: the
            # leaf to accumulate into, or the function that made it (None: not wanted).
            # An intermediate array then lives only as long as some backward saved it.
            self.inputs = [None if not t.requires_grad else t if t.creator is None else t.creator
                           for t in tensors]
        else:
            self.release()
        return output

    @property
    def op_name(self) -> str:
        return self.name or type(self).__name__

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, gy):
        raise NotImplementedError

    def release(self):
        """Drop the inputs and every saved buffer; the node cannot be used again."""
        self.__dict__.clear()
        self.inputs = None


class Tensor:
    """An n-dimensional array on a device, with an optional gradient."""

    __array_priority__ = 1000  # make ``ndarray * Tensor`` call Tensor.__rmul__

    def __init__(self, data, requires_grad: bool = False):
        backend.device_of(data)  # raises TypeError for anything but a NumPy/CuPy array
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self.creator = None

    # -- description ------------------------------------------------------------
    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: int(self.data.size))
    device = property(lambda self: backend.device_of(self.data))
    is_leaf = property(lambda self: self.creator is None)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, device={self.device!r}{grad})"

    def numpy(self) -> np.ndarray:
        """The values as a NumPy array (copied from the GPU if needed)."""
        return backend.to_device(self.data, "cpu")

    def item(self) -> float:
        if self.size != 1:
            raise ValueError(f"item() needs a tensor of one element, got shape {self.shape}")
        return float(self.numpy().reshape(()))

    def detach(self) -> "Tensor":
        """The same values, cut from the graph."""
        return Tensor(self.data)

    def to(self, device: str) -> "Tensor":
        """This tensor on ``device``: itself if already there, else a new leaf copy."""
        if backend.check_device(device) == self.device:
            return self
        return Tensor(backend.to_device(self.data, device), requires_grad=self.requires_grad)

    # -- differentiation ----------------------------------------------------------
    def backward(self, grad=None):
        """Back-propagate from this tensor, accumulating into the leaves' ``.grad``.

        A scalar (one element) starts from a gradient of 1; any other tensor
        needs ``grad``, an array or tensor of its own shape.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad "
                               "(no input of the computation had requires_grad=True)")
        xp = backend.get_array_module(self.data)
        if grad is None:
            if self.size != 1:
                raise ValueError(f"backward: a non-scalar output of shape {self.shape} needs an "
                                 "explicit gradient of the same shape")
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self.dtype)
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"backward: gradient shape {tuple(grad.shape)} does not match "
                                 f"output shape {self.shape}")
        if self.creator is None:
            _accumulate(self, grad)
            return
        pending = {id(self.creator): grad}  # gradient of each function's output
        for fn in _topological_order(self.creator):
            if fn.inputs is None:
                raise RuntimeError(f"backward: the graph through {fn.op_name} was already "
                                   "released; run the forward pass again")
            gy = pending.pop(id(fn))
            gxs = fn.backward(gy)
            for source, g in zip(fn.inputs, gxs):
                if g is None or source is None:
                    continue
                if isinstance(source, Tensor):  # a new array made for this input alone is the leaf's
                    _accumulate(source, g, owned=g is not gy and getattr(g, "base", None) is None
                                and sum(g is other for other in gxs) == 1)
                else:
                    key = id(source)
                    pending[key] = g if key not in pending else pending[key] + g
            fn.release()


def _accumulate(leaf: Tensor, grad, owned=False):
    """``leaf.grad += grad``; a first gradient is copied unless ``owned`` (nothing else holds it)."""
    if leaf.grad is None:
        leaf.grad = grad if owned else grad.copy()
    else:
        leaf.grad = leaf.grad + grad


def _topological_order(root: Function) -> list:
    """Functions reachable from ``root``, each after every function that uses its output."""
    order, visited, stack = [], {id(root)}, [(root, False)]
    while stack:
        fn, expanded = stack.pop()
        if expanded:
            order.append(fn)
            continue
        stack.append((fn, True))
        for parent in fn.inputs or ():
            if isinstance(parent, Function) and id(parent) not in visited:
                visited.add(id(parent))
                stack.append((parent, False))
    return order[::-1]


def tensor(data, requires_grad: bool = False, device: str = "cpu", dtype=None) -> Tensor:
    """A new leaf tensor holding a copy of a list, number, NumPy or CuPy array.

    ``dtype`` defaults to the data's own when it is a floating-point array and
    to float32 for everything else (lists, numbers, integer arrays).
    """
    device = backend.check_device(device)
    if isinstance(data, Tensor):
        data = data.data
    if dtype is None:
        kind = getattr(getattr(data, "dtype", None), "kind", None)
        dtype = data.dtype if kind == "f" else np.float32
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"tensor: dtype must be floating point (float32 or float64), got {dtype}")
    if type(data).__module__.startswith("cupy"):
        array = backend.to_device(data, device).astype(dtype, copy=True)
    else:
        array = backend.xp_for(device).asarray(np.array(data, dtype=dtype))
    return Tensor(array, requires_grad=requires_grad)


def as_tensor(x, like=()) -> Tensor:
    """``x`` itself if a Tensor, else a constant on the device and dtype of the tensors in ``like``."""
    if isinstance(x, Tensor):
        return x
    ref = next((t for t in like if isinstance(t, Tensor)), None)
    if ref is None:
        return tensor(x)
    xp = backend.get_array_module(ref.data)
    return Tensor(xp.asarray(x, dtype=ref.dtype))
