"""Mean squared error between a prediction p and a target t of the same shape.

    d = p - t
    "sum":        l = sum d^2                 dl/dp =  2 d
    "mean":       l = sum d^2 / numel         dl/dp =  2 d / numel
    "batchmean":  l = sum d^2 / N             dl/dp =  2 d / N     (N = p.shape[0])

"batchmean" is the paper's eq. 2: the squared error summed over the pixels
of each density map, averaged over the M maps of the batch.  dl/dt = -dl/dp.

On the CPU the sum of d^2 is one dot product.  The CUDA path (``mse_forward`` in
``kernels/elementwise.cu``) has each of ``MSE_PARTS`` threads add the squares of
every MSE_PARTS-th element in order, and sums those partials: no atomics, so the
loss is the same run after run.
"""
from __future__ import annotations

from minifcrn.autograd import Function
from minifcrn.backend import find_kernel, get_array_module

REDUCTIONS = ("mean", "sum", "batchmean")
MSE_PARTS = 4096  # partial sums of the CUDA path


def squared_error_sum(p, t, d):
    """sum (p - t)^2, d = p - t already made (the CPU path uses it)."""
    xp = get_array_module(p)
    kernel = find_kernel(p, "elementwise.cu", "mse_forward")
    if kernel is None:
        flat = d.reshape(-1)
        return flat @ flat
    parts = max(1, min(MSE_PARTS, p.size))
    partial = xp.empty(parts, dtype=p.dtype)
    kernel(parts, xp.ascontiguousarray(p), xp.ascontiguousarray(t), p.size, parts, partial)
    return partial.sum()


class MSELoss(Function):
    name = "mse_loss"

    def __init__(self, reduction="mean"):
        if reduction not in REDUCTIONS:
            raise ValueError(f"mse_loss: reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def forward(self, p, t):
        if p.shape != t.shape:
            raise ValueError(f"mse_loss: prediction shape {tuple(p.shape)} does not match "
                             f"target shape {tuple(t.shape)}")
        if p.dtype != t.dtype:
            raise TypeError(f"mse_loss: prediction dtype {p.dtype} does not match target dtype {t.dtype}")
        xp = get_array_module(p)
        self.d = p - t
        self.scale = {"sum": 1.0, "mean": 1.0 / max(p.size, 1),
                      "batchmean": 1.0 / max(p.shape[0] if p.ndim else 1, 1)}[self.reduction]
        return xp.asarray(squared_error_sum(p, t, self.d) * self.scale, dtype=p.dtype)

    def backward(self, g):
        gp = (2.0 * self.scale) * g * self.d
        return gp, (-gp if self.needs_input_grad[1] else None)
