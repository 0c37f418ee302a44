"""The public ops on tensors (NCHW).  Each builds one ``Function`` from ``minifcrn.ops``
(or, for the fused up-sampling convolution, from the CPU fast path ``minifcrn.cpu``)."""
from __future__ import annotations

from minifcrn.cpu.upsample_conv import UpsampleConv2d
from minifcrn.ops.arithmetic import pad2d  # noqa: F401  (zero padding of H and W)
from minifcrn.ops.conv import Conv2d
from minifcrn.ops.loss import MSELoss
from minifcrn.ops.pool import MaxPool2d
from minifcrn.ops.relu import ReLU
from minifcrn.ops.upsample import UpsampleBilinear


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """Cross-correlate x (N, C, H, W) with weight (O, C, kh, kw), add bias (O,)."""
    fn = Conv2d(stride=stride, padding=padding)
    return fn(x, weight) if bias is None else fn(x, weight, bias)


def max_pool2d(x, kernel_size=2, stride=None):
    """Max over kernel_size x kernel_size windows; stride defaults to kernel_size; sizes floor."""
    return MaxPool2d(kernel_size, stride)(x)


def upsample_bilinear(x, scale_factor=2):
    """Bilinear upsampling by an integer factor, half-pixel centres (align_corners=False)."""
    return UpsampleBilinear(scale_factor)(x)


def upsample_conv2d(x, weight, bias=None):
    """conv2d(upsample_bilinear(x, 2), weight, bias, padding=k // 2) for a k x k weight, k = 3 or 5,
    in one op (at 5x5, 16 taps per output instead of 25; see ``minifcrn/cpu/upsample_conv.py``)."""
    fn = UpsampleConv2d()
    return fn(x, weight) if bias is None else fn(x, weight, bias)


def relu(x):
    """max(x, 0), elementwise."""
    return ReLU()(x)


def mse_loss(pred, target, reduction="mean"):
    """Squared error: "mean" over all elements, "sum", or "batchmean" (sum / batch size, eq. 2)."""
    return MSELoss(reduction)(pred, target)
