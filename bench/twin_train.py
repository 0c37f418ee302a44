#!/usr/bin/env python
"""PyTorch as the referee of training: our FCRN and its PyTorch twin trained side by side on
the identical stream of batches, and compared step by step.

    python bench/twin_train.py                          # FCRN-A, float64, 300 steps of Table 1's recipe
    python bench/twin_train.py --dtype float32 --steps 100

Both start from our orthogonal initial weights (``twins.torch_twin`` copies them).  The batches
are drawn once by our own sampler (``minifcrn.train._patch_batch``: random 96x96 patches of the
VGG training images of Table 1's N=32 draw 0, rotated, flipped, each standardised, with their
sigma-2 x100 densities) and given to both.  Each step is the recipe's loss (``training_loss``:
the mean squared error) and eq. 3 SGD with weight decay, written out on the PyTorch side too
(delta <- beta delta + (1 - beta) lr (g + lambda w); w <- w - delta), at the recipe's rate and
its cut (Table 1's patch phase: lr 0.3, / 10 after 800 steps).  Stored: the relative difference
of the loss at every step and of every weight at the end, as one JSON line in
bench/runs/twin-train.jsonl.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

RUNS = common.RUNS_DIR / "twin-train.jsonl"
VGG = common.REPO_DIR.parent / "shared" / "data" / "vgg_cells"


def batches(steps, seed=0):
    """``steps`` (image, target) batches of our sampler, drawn once."""
    import numpy as np

    from minifcrn import protocol
    from minifcrn.data.samples import load_samples
    from minifcrn.train import TrainConfig, _patch_batch

    names, _ = protocol.vgg_split(32, 0, protocol.POOL)
    samples = load_samples(VGG, names=set(names))
    cfg, rng = TrainConfig(), np.random.default_rng(seed)
    return [_patch_batch(samples, cfg, rng) for _ in range(steps)]


def rate(step, lr=0.3, cut_after=800):
    return lr * (0.1 if step >= cut_after else 1.0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="fcrn-a", choices=["fcrn-a", "fcrn-b"])
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    common.configure_threads(args.threads)
    import numpy as np
    import torch
    from twins import torch_twin

    import minifcrn as mf
    from minifcrn import optim
    from minifcrn.train import TrainConfig, training_loss

    dtype = np.dtype(args.dtype)
    cfg = TrainConfig(arch=args.arch)
    ours = mf.models.FCRN(args.arch, rng=0, dtype=dtype)
    theirs = torch_twin(ours).to(getattr(torch, args.dtype))
    opt = optim.SGD(ours.parameters(), lr=rate(0), momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    velocity = [torch.zeros_like(p) for p in theirs.parameters()]
    losses, gaps = [], []
    for step, (x, y) in enumerate(batches(args.steps)):
        x, y = x.astype(dtype), y.astype(dtype)
        opt.lr = lr = rate(step)
        opt.zero_grad()
        loss = training_loss(ours(mf.tensor(x, dtype=dtype)), mf.tensor(y, dtype=dtype), cfg)
        loss.backward()
        opt.step()
        theirs.zero_grad()
        tloss = torch.nn.functional.mse_loss(theirs(torch.from_numpy(x)), torch.from_numpy(y))
        tloss.backward()
        with torch.no_grad():  # eq. 3, as optim.SGD
            for p, d in zip(theirs.parameters(), velocity):
                d.mul_(cfg.momentum).add_((1 - cfg.momentum) * lr * (p.grad + cfg.weight_decay * p))
                p.sub_(d)
        a, b = loss.item(), tloss.item()
        losses.append((a, b))
        gaps.append(abs(a - b) / abs(b))
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  lr {lr:g}  loss ours {a:.10g}  torch {b:.10g}  relative {gaps[-1]:.2e}", flush=True)
    weights = []
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        a, b = p.numpy(), q.detach().numpy()
        weights.append((name, float(np.abs(a - b).max() / np.abs(b).max())))
    row = {"arch": args.arch, "dtype": args.dtype, "steps": args.steps, "batch": cfg.batch_size,
           "patch": cfg.patch_size, "loss_rel_max": max(gaps), "loss_rel_last": gaps[-1],
           "weights_rel_max": max(w for _, w in weights), "worst_weight": max(weights, key=lambda w: w[1])[0],
           "first_loss": losses[0], "last_loss": losses[-1], "date": common.now_iso(),
           "machine": common.machine_name("cpu"), "commit": common.git_commit(), "command": common.command_line()}
    print(json.dumps(row))
    with open(RUNS, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
