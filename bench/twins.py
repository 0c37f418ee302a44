"""Our FCRN's PyTorch twin and its convolution FLOPs, for the benchmarks that compare the two.

Imports NumPy, PyTorch and minifcrn: import it after ``common.configure_threads``.
"""
from __future__ import annotations

import torch

from minifcrn import nn as mnn


def torch_twin(model) -> torch.nn.Sequential:
    """A PyTorch network with the layers of our ``model``, in order, holding copies of its weights."""
    layers = []
    for _, layer in model.layers:
        if isinstance(layer, mnn.UpsampleConv2d):  # a decoder stage: the up-sampling, then its convolution
            layers.append(torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
        if isinstance(layer, mnn.Conv2d):
            o, c, k, _ = layer.weight.shape
            conv = torch.nn.Conv2d(c, o, k, stride=layer.stride, padding=layer.padding, bias=layer.bias is not None,
                                   dtype=getattr(torch, str(layer.weight.dtype)))  # float64 stays float64
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(layer.weight.numpy()))
                if layer.bias is not None:
                    conv.bias.copy_(torch.from_numpy(layer.bias.numpy()))
            layers.append(conv)
        elif isinstance(layer, mnn.ReLU):
            layers.append(torch.nn.ReLU())
        elif isinstance(layer, mnn.MaxPool2d):
            layers.append(torch.nn.MaxPool2d(layer.kernel_size, layer.stride))
        elif isinstance(layer, mnn.UpsampleBilinear):
            layers.append(torch.nn.Upsample(scale_factor=layer.scale_factor, mode="bilinear", align_corners=False))
        else:
            raise TypeError(f"no PyTorch twin for {layer!r}")
    return torch.nn.Sequential(*layers)


def conv_flops(model, batch: int, size: int) -> list[int]:
    """Forward FLOPs of each convolution on (batch, C, size, size): 2*N*Ho*Wo*O*C*k*k."""
    flops, side = [], size
    for _, layer in model.layers:
        if isinstance(layer, mnn.UpsampleConv2d):  # its convolution runs after the x2 up-sampling
            side *= 2
        if isinstance(layer, mnn.Conv2d):
            o, c, k, _ = layer.weight.shape
            flops.append(2 * batch * side * side * o * c * k * k)
        elif isinstance(layer, mnn.MaxPool2d):
            side //= layer.stride or layer.kernel_size
        elif isinstance(layer, mnn.UpsampleBilinear):
            side *= layer.scale_factor
    return flops


def step_flops(model, batch: int, size: int, kind: str) -> int:
    """Convolution FLOPs of one call: the forward ("infer"), or 3x it less the first layer's input gradient."""
    flops = conv_flops(model, batch, size)
    return sum(flops) if kind == "infer" else 3 * sum(flops) - flops[0]
