"""The side-by-side timing of ``cpu.py``, ``gpu.py`` and ``ops.py``: one workload on both libraries
(``Pair``) and the interleaved loop that times such callables (``time_interleaved``).

Like ``common``, nothing here imports NumPy, PyTorch or minifcrn at module level: a ``Pair``
imports them when it is built, after the script's ``common.configure_threads``.
"""
from __future__ import annotations

import gc
import time

import common

np = torch = TF = mf = F = optim = FCRN = torch_twin = None  # imported by _import_libraries()


def _import_libraries():
    """Fill this module's library names (a ``Pair`` calls it; PyTorch first, as the scripts do)."""
    global np, torch, TF, mf, F, optim, FCRN, torch_twin
    import numpy
    import torch as _torch  # first: PyTorch's OpenMP runtime starts with its own defaults
    import torch.nn.functional as _tf
    from twins import torch_twin as _twin

    import minifcrn
    import minifcrn.functional as _f
    from minifcrn import optim as _optim
    from minifcrn.models import FCRN as _fcrn

    np, torch, TF, mf, F, optim, FCRN, torch_twin = numpy, _torch, _tf, minifcrn, _f, _optim, _fcrn, _twin


# -- one workload on both sides -------------------------------------------------------------------
def host(a):
    """A float64 NumPy copy of a NumPy/CuPy array, a torch tensor or a number."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(mf.backend.to_device(a, "cpu"), dtype=np.float64)


def relative_error(ours, theirs) -> float:
    """max |ours - theirs| / max |theirs|."""
    a, b = host(ours), host(theirs)
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-30))


class Pair:
    """Our FCRN and its PyTorch twin (``twins.torch_twin``: same layers, same weights) on one workload.

    ``ours()`` and ``theirs()`` run one call of it, each on its own library and a copy of the
    same ``image``/``target`` on ``device``: for ``kind`` "train" a training step (forward, MSE
    loss, backward, momentum SGD step), for "infer" a forward without gradients.  They return
    the loss or the output without copying it to the host, so nothing in a timed call waits for
    the device.  ``dampening`` goes to PyTorch's SGD only (ours has none).
    """

    def __init__(self, arch: str, kind: str, image, target, *, seed: int = 0, device: str = "cpu",
                 lr: float, momentum: float, weight_decay: float, dampening: float = 0.0):
        _import_libraries()
        self.kind = kind
        self.model = FCRN(arch, rng=seed).to(device)
        self.net = torch_twin(self.model).to(device)
        self.x, self.t = (mf.tensor(a, device=device) for a in (image, target))
        self.tx, self.tt = (torch.from_numpy(a).to(device) for a in (image, target))
        if kind == "train":
            self.opt = optim.SGD(self.model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
            self.topt = torch.optim.SGD(self.net.parameters(), lr=lr, momentum=momentum, dampening=dampening,
                                        weight_decay=weight_decay)
        else:
            self.net.eval()

    def ours(self):
        """One training step or one inference, by minifcrn."""
        if self.kind == "infer":
            with mf.no_grad():
                return self.model(self.x)
        self.opt.zero_grad()
        loss = F.mse_loss(self.model(self.x), self.t, "mean")
        loss.backward()
        self.opt.step()
        return loss

    def theirs(self):
        """The same, by PyTorch."""
        if self.kind == "infer":
            with torch.no_grad():
                return self.net(self.tx)
        self.topt.zero_grad(set_to_none=True)
        loss = TF.mse_loss(self.net(self.tx), self.tt)
        loss.backward()
        self.topt.step()
        return loss

    def agreement(self) -> dict:
        """Relative errors of ours vs torch from the current weights, no update made: the output
        and, for training, the loss and (the largest over the parameters) the gradients."""
        if self.kind == "infer":
            with mf.no_grad(), torch.no_grad():
                return {"output": relative_error(self.model(self.x).data, self.net(self.tx))}
        y, ty = self.model(self.x), self.net(self.tx)
        loss, tloss = F.mse_loss(y, self.t, "mean"), TF.mse_loss(ty, self.tt)
        loss.backward()
        tloss.backward()
        errors = {"output": relative_error(y.data, ty), "loss": relative_error(loss.item(), tloss.item()),
                  "gradients": max(relative_error(p.grad, q.grad)
                                   for p, q in zip(self.model.parameters(), self.net.parameters()))}
        self.opt.zero_grad()
        self.topt.zero_grad(set_to_none=True)
        return errors


# -- the timing loop --------------------------------------------------------------------------------
def warm_up(runners: list, calls: int) -> None:
    """``calls`` rounds of one untimed call of each runner, in order."""
    for _ in range(calls):
        for _, fn in runners:
            fn()


def time_interleaved(runners: list, repeats: int, warmup: int, settle_s: float = 0.0, sync=None, *,
                     wake: bool = False, disable_gc: bool = True) -> dict:
    """Time ``runners`` (``(name, callable)`` pairs) side by side: ``common.summarize`` per name.

    After ``warm_up(runners, warmup)``, ``repeats`` rounds of one timed call each; round r
    starts at runner r mod len(runners), so slow drifts on a noisy machine hit all of them
    alike (with two runners, the order alternates).  Before each timed call a runner sleeps
    ``settle_s`` (the previous runner's pool threads stop spinning: OpenBLAS busy-waits
    ~0.1 s after a GEMM) and, with ``wake``, makes one untimed call (its own pools awake,
    as in back-to-back training steps).  ``sync`` goes to ``common.timed``: it runs before
    and after each timed call (a GPU's queued work).  With ``disable_gc``, the garbage is
    collected first and no collection runs inside the rounds.
    """
    warm_up(runners, warmup)
    samples = {name: [] for name, _ in runners}
    gc_was_enabled = gc.isenabled()
    if disable_gc:
        gc.collect()
        gc.disable()
    try:
        for r in range(repeats):
            k = r % len(runners)
            for name, fn in runners[k:] + runners[:k]:
                if settle_s:
                    time.sleep(settle_s)
                if wake:
                    fn()
                samples[name].append(common.timed(fn, sync))
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: common.summarize(s) for name, s in samples.items()}
