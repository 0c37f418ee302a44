"""Momentum SGD exactly as the paper's eq. 3, and the step learning-rate schedule.

For every parameter w with gradient g, momentum beta, learning rate alpha and
weight decay lam, one ``step()`` does

    delta <- beta * delta + (1 - beta) * alpha * (g + lam * w)      (eq. 3, delta starts at 0)
    w     <- w - delta

How this differs from ``torch.optim.SGD(lr, momentum, weight_decay)``, which does
buf <- beta * buf + g';  w <- w - lr * buf  (with buf = g' on the first step):

* scale: the velocity here is an exponential *average* of the steps, so with
  a constant rate a steady gradient moves w by alpha * g per step; PyTorch's
  sum moves it by alpha * g / (1 - beta), ten times more at beta = 0.9.  Ours
  equals PyTorch's with ``dampening=beta`` and lr alpha, apart from the two
  points below.
* the first step: delta starts at zero, so the first step is (1 - beta) * alpha * g;
  PyTorch's buffer starts at g.
* changing the rate: delta already holds alpha, so after a cut the old
  velocity decays at its old size; PyTorch multiplies its whole buffer by the
  new rate at once.
"""
from __future__ import annotations

from minifcrn.backend import find_kernel, get_array_module, to_device


class SGD:
    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0):
        self.params = list(params)
        if not self.params:
            raise ValueError("SGD: got an empty parameter list")
        if not lr > 0 or not 0 <= momentum < 1 or not weight_decay >= 0:  # (NaN fails each)
            raise ValueError(f"SGD: need lr > 0, 0 <= momentum < 1, weight_decay >= 0; got lr={lr}, "
                             f"momentum={momentum}, weight_decay={weight_decay}")
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.velocity = [None] * len(self.params)

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        beta, alpha, lam = self.momentum, self.lr, self.weight_decay
        for k, p in enumerate(self.params):
            if p.grad is None:
                continue
            xp = get_array_module(p.data)
            if self.velocity[k] is None or get_array_module(self.velocity[k]) is not xp:
                self.velocity[k] = xp.zeros_like(p.data)
            delta = self.velocity[k]
            kernel = find_kernel(p.data, "elementwise.cu", "sgd_update")
            if kernel is None:
                step = p.grad + lam * p.data if lam else p.grad
                delta *= beta
                delta += ((1 - beta) * alpha) * step
                p.data -= delta
            else:  # the same step in one pass, over w, delta and g as C-ordered buffers
                p.data = xp.asarray(p.data, order="C")
                delta = self.velocity[k] = xp.asarray(delta, order="C")
                kernel(p.size, xp.asarray(p.grad, order="C"), beta, alpha, lam, p.size, p.data, delta)

    def state_dict(self) -> dict:
        """lr, momentum, weight decay and the velocities (NumPy), for checkpoints."""
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "velocity": [None if v is None else to_device(v, "cpu") for v in self.velocity]}

    def load_state_dict(self, state: dict):
        if len(state["velocity"]) != len(self.params):
            raise ValueError(f"SGD.load_state_dict: {len(state['velocity'])} velocities for "
                             f"{len(self.params)} parameters")
        self.lr, self.momentum = float(state["lr"]), float(state["momentum"])
        self.weight_decay = float(state["weight_decay"])
        self.velocity = [None if v is None else to_device(v.astype(p.dtype), p.device)
                         for v, p in zip(state["velocity"], self.params)]
        return self


def step_lr(base_lr: float, milestones, epoch: int, gamma: float = 0.1) -> float:
    """The step schedule: base_lr * gamma ** (number of milestones <= epoch), epochs counted from 0
    (with gamma 0.1, the rate divided by 10 at each milestone)."""
    return base_lr * gamma ** sum(int(m) <= epoch for m in milestones)
