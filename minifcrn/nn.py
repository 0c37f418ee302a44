"""Layers: a ``Module`` holds parameters (leaf tensors that require grad) and
sub-modules; calling it runs ``forward``.  ``Sequential`` is the network as a
plain list of layers, as in MatConvNet's ``vl_simplenn``.

``UpsampleConv2d`` is a decoder stage, bilinear x2 up-sampling then a 'same'
convolution, as one layer: where it pays, it runs them as one fused op on the CPU
(chosen when the layer is moved to a device, ``to``)."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from minifcrn import functional as F
from minifcrn import init
from minifcrn.autograd import Tensor
from minifcrn.backend import check_device, to_device


class Parameter(Tensor):
    """A tensor that a Module owns and an optimiser updates."""

    def __init__(self, data):
        super().__init__(data, requires_grad=True)


class Module:
    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args):
        raise NotImplementedError

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) for this module's parameters, then its children's."""
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child.named_parameters(f"{prefix}{name}.")

    def named_children(self):
        return [(n, m) for n, m in vars(self).items() if isinstance(m, Module)]

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def modules(self):
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Parameter values by name, as NumPy arrays (copies)."""
        return OrderedDict((name, p.numpy().copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state):
        """Copy values into the parameters; names, shapes must match exactly."""
        own = dict(self.named_parameters())
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"load_state_dict: missing {missing}, unexpected {unexpected}")
        for name, p in own.items():
            value = np.asarray(state[name])
            if value.shape != p.shape:
                raise ValueError(f"load_state_dict: {name} has shape {value.shape}, "
                                 f"the model expects {p.shape}")
            p.data[...] = to_device(value.astype(p.dtype, copy=False), p.device)
        return self

    def to(self, device):
        """Move every parameter (in place) to ``device``; gradients are dropped."""
        device = check_device(device)
        for p in self.parameters():
            p.data, p.grad = to_device(p.data, device), None
        for m in self.modules():
            m.placed_on(device)
        return self

    def placed_on(self, device: str):
        """Called by ``to`` on every module once its parameters are on ``device``."""

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())


class Conv2d(Module):
    """Convolution with an orthogonally initialised weight (O, C, k, k) and a zero bias
    (``initialize=False``: zeros, for weights about to be loaded)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 rng=None, dtype=np.float32, initialize=True):
        self.stride, self.padding = stride, padding
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.weight = Parameter(init.orthogonal_array(shape, rng=rng, dtype=dtype) if initialize
                                else np.zeros(shape, dtype=dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype)) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def __repr__(self):
        o, c, k, _ = self.weight.shape
        return f"Conv2d({c}, {o}, kernel_size={k}, stride={self.stride}, padding={self.padding})"


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)

    def __repr__(self):
        return "ReLU()"


class MaxPool2d(Module):
    def __init__(self, kernel_size=2, stride=None):
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride)

    def __repr__(self):
        return f"MaxPool2d({self.kernel_size}, stride={self.stride or self.kernel_size})"


class UpsampleBilinear(Module):
    def __init__(self, scale_factor=2):
        self.scale_factor = scale_factor

    def forward(self, x):
        return F.upsample_bilinear(x, self.scale_factor)

    def __repr__(self):
        return f"UpsampleBilinear({self.scale_factor})"


class UpsampleConv2d(Conv2d):
    """Bilinear x2 up-sampling, then a 'same' k x k convolution (k odd): one decoder stage.

    On the CPU the two run as one op (``F.upsample_conv2d``, 16 taps an output instead of 25
    at 5x5) where that is faster: at 5x5, and at 3x3 where the convolution at most halves the
    channels (``fusable``; bench/notes/design-measurements.md has the measurements).  ``fused`` says whether it
    does; ``to(device)`` sets it, and a test may too.  On a GPU the two run one by one until
    the fused op is measured faster there (it runs and is tested there).
    """

    def __init__(self, in_channels, out_channels, kernel_size, rng=None, dtype=np.float32, initialize=True):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, rng=rng,
                         dtype=dtype, initialize=initialize)
        o, c, k, _ = self.weight.shape
        self.fusable = k == 5 or (k == 3 and c <= 2 * o)
        self.placed_on("cpu")

    def placed_on(self, device):
        self.fused = self.fusable and device == "cpu"

    def forward(self, x):
        if self.fused:
            return F.upsample_conv2d(x, self.weight, self.bias)
        return F.conv2d(F.upsample_bilinear(x, 2), self.weight, self.bias, 1, self.padding)

    def __repr__(self):
        o, c, k, _ = self.weight.shape
        return f"UpsampleConv2d({c}, {o}, kernel_size={k}{', fused' if self.fused else ''})"


class Sequential(Module):
    """Layers applied in order; layer i is named str(i) in parameter names."""

    def __init__(self, *layers):
        self.layers = list(layers)

    def named_children(self):
        return [(str(i), m) for i, m in enumerate(self.layers)]

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def __repr__(self):
        body = "\n".join(f"  ({i}) {m!r}" for i, m in enumerate(self.layers))
        return f"Sequential(\n{body}\n)"


__all__ = ["Module", "Parameter", "Conv2d", "ReLU", "MaxPool2d", "UpsampleBilinear", "UpsampleConv2d", "Sequential"]
