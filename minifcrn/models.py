"""FCRN-A and FCRN-B (Xie, Noble & Zisserman 2016, section 3.1, Figure 3).

Each network is a plain list of named layers, as in MatConvNet's simplenn.
Convolutions are 'same' (padding k // 2), each followed by a ReLU except the
last, a linear 1x1 convolution to one density channel.  Down-sampling is 2x2
max-pooling; up-sampling is bilinear x2 followed by a trainable convolution,
one layer (``nn.UpsampleConv2d``, named for its convolution).

FCRN-A: 3x3 kernels everywhere, a pool after each of the first three convs::

    conv1 32 > pool > conv2 64 > pool > conv3 128 > pool > conv4 512
    > up > conv5 128 > up > conv6 64 > up > conv7 32 > conv8 1x1 -> 1

    1,365,249 parameters; the encoder (input to conv4) sees 38x38 pixels, the
    paper's receptive field.

FCRN-B: a pool after every two convs, up to 256 maps then kept, 5x5 kernels
after each up-sampling.  The paper gives only its totals (about 3.6M
parameters, receptive field 32); this layout meets both::

    conv1 32 > conv2 64 > pool > conv3 128 > conv4 256 > pool > conv5 256 > conv6 256
    > up > conv7 5x5 256 > up > conv8 5x5 64 > conv9 1x1 -> 1

    3,616,385 parameters; the encoder (input to conv6) sees 32x32 pixels.  The
    last up-sampling conv narrows to 64 maps, which is what brings the total to
    the paper's 3.6M (256 there would give 4.8M).

Both receptive fields are measured (``receptive_field``, checked in
tests/test_models.py) by back-propagating a one-hot gradient.  The decoder's
convolutions widen the footprint of one *output* pixel beyond the encoder's:
62 pixels for FCRN-A and 52 for FCRN-B.

Any input size works: the input is zero-padded at the bottom and right to a
multiple of 2**pools and the density is cropped back, so it always has the
input's height and width.  The target densities are Gaussians (sigma 2) scaled
by ``density_scale`` = 100; ``count`` divides the integral by it.
"""
from __future__ import annotations

import numpy as np

from minifcrn import functional as F
from minifcrn import nn
from minifcrn.autograd import tensor

ARCHITECTURES = ("fcrn-a", "fcrn-b")

# (kind, out_channels, kernel) per layer; "up" is an up-sampling and its convolution.  Every
# convolution but the last is followed by a ReLU.
_SPECS = {
    "fcrn-a": [("conv", 32, 3), ("pool",), ("conv", 64, 3), ("pool",), ("conv", 128, 3), ("pool",),
               ("conv", 512, 3), ("up", 128, 3), ("up", 64, 3), ("up", 32, 3), ("conv", 1, 1)],
    "fcrn-b": [("conv", 32, 3), ("conv", 64, 3), ("pool",), ("conv", 128, 3), ("conv", 256, 3), ("pool",),
               ("conv", 256, 3), ("conv", 256, 3), ("up", 256, 5), ("up", 64, 5), ("conv", 1, 1)],
}
ENCODER_END = {"fcrn-a": "relu4", "fcrn-b": "relu6"}


class FCRN(nn.Module):
    """A fully convolutional regression network: image (N, C, H, W) -> density (N, 1, H, W)."""

    def __init__(self, arch="fcrn-a", in_channels=1, density_scale=100.0, rng=None, dtype=np.float32,
                 initialize=True):
        if arch not in _SPECS:
            raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")
        self.arch, self.in_channels, self.density_scale = arch, int(in_channels), float(density_scale)
        rng = np.random.default_rng(rng)
        self.layers = []  # [(name, module)], applied in order
        channels, index, pools = self.in_channels, 0, 0
        spec = _SPECS[arch]
        for k, (kind, *args) in enumerate(spec):
            if kind == "pool":
                pools += 1
                self.layers.append((f"pool{pools}", nn.MaxPool2d(2)))
                continue
            index += 1
            out, size = args
            layer = nn.Conv2d(channels, out, size, padding=size // 2, rng=rng, dtype=dtype,
                              initialize=initialize) if kind == "conv" else \
                nn.UpsampleConv2d(channels, out, size, rng=rng, dtype=dtype, initialize=initialize)
            self.layers.append((f"conv{index}", layer))
            if k < len(spec) - 1:
                self.layers.append((f"relu{index}", nn.ReLU()))
            channels = out
        self.divisor = 2 ** pools

    def named_children(self):
        return list(self.layers)

    @property
    def layer_names(self):
        return [name for name, _ in self.layers]

    @property
    def fused(self) -> set:
        """The names of the up-sampling convolutions that run as one fused op."""
        return {name for name, layer in self.layers if getattr(layer, "fused", False)}

    def forward(self, x, upto=None):
        """The density map of x, or the output of layer ``upto`` (on the padded input)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self.arch}: input must have shape (N, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        if upto is not None and upto not in self.layer_names:
            raise ValueError(f"{self.arch}: no layer named {upto!r}; layers are {', '.join(self.layer_names)}")
        h, w = x.shape[2], x.shape[3]
        ph, pw = -h % self.divisor, -w % self.divisor
        y = F.pad2d(x, 0, ph, 0, pw) if ph or pw else x
        for name, layer in self.layers:
            y = layer(y)
            if name == upto:
                return y
        return y[:, :, :h, :w] if ph or pw else y

    def config(self) -> dict:
        return {"arch": self.arch, "in_channels": self.in_channels, "density_scale": self.density_scale}

    def __repr__(self):
        body = "\n".join(f"  {name}: {layer!r}" for name, layer in self.layers)
        return f"FCRN({self.arch!r}, {self.num_parameters():,} parameters,\n{body}\n)"


def FCRN_A(in_channels=1, rng=None, dtype=np.float32) -> FCRN:
    """FCRN-A: 3x3 kernels, three 2x2 max-pools, ~1.37M parameters, encoder receptive field 38."""
    return FCRN("fcrn-a", in_channels, rng=rng, dtype=dtype)


def FCRN_B(in_channels=1, rng=None, dtype=np.float32) -> FCRN:
    """FCRN-B: a pool after every two convs, 5x5 up-sampling kernels, ~3.6M parameters, receptive field 32."""
    return FCRN("fcrn-b", in_channels, rng=rng, dtype=dtype)


def receptive_field(model: FCRN, upto=None, size=160, trials=6, seed=0) -> int:
    """Measure how many input pixels (along one axis) one output pixel of ``upto`` depends on.

    A one-hot gradient at the centre of the layer's output is back-propagated to
    the input.  To keep ReLUs open and gradients from cancelling, the measurement
    runs on a copy of the model with |weights| and positive biases; since max-pooling
    sends the gradient to one input per window, the non-zero input gradients of
    several random positive images are united.  Returns the height of their span.
    """
    probe = FCRN(model.arch, model.in_channels, dtype=np.float64, initialize=False)
    probe.load_state_dict({k: np.abs(v) + 1e-3 for k, v in model.state_dict().items()})
    rng = np.random.default_rng(seed)
    touched = np.zeros((size, size), bool)
    for _ in range(trials):
        x = tensor(rng.uniform(0.5, 1.5, (1, model.in_channels, size, size)), requires_grad=True)
        y = probe(x, upto=upto)
        onehot = np.zeros(y.shape)
        onehot[0, 0, y.shape[2] // 2, y.shape[3] // 2] = 1.0
        y.backward(onehot)
        touched |= np.abs(x.grad[0]).sum(axis=0) > 0
    rows = np.flatnonzero(touched.any(axis=1))
    return int(rows[-1] - rows[0] + 1)
