"""Training an FCRN: random augmented patches, then whole images, validation MAE each epoch.

The recipe of the paper (section 3.2): orthogonal initialisation, momentum SGD
as eq. 3 (momentum 0.9, weight decay 5e-4, lr 0.01 divided by 10 at the
``milestones``), mean squared error against densities scaled by 100, random
patches with small rotations and flips, each standardised by its own mean and
std; then fine-tuning on whole images.  After every epoch the mean absolute
count error on the validation images picks the best weights.

Everything needed to continue is written atomically to ``out_dir`` after each
epoch, so a killed run resumes exactly where it stopped (``resume=True``):

    checkpoint.npz  weights, optimiser velocities, RNG state, epoch, history, config
    best.npz        the weights with the lowest validation MAE so far (a weights file)
    log.csv         one row per epoch: phase, lr, mean training loss, validation MAE, time
    curves.png      the loss and validation MAE per epoch (with matplotlib, the ``viz`` extra)
"""
from __future__ import annotations

import csv
import io
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from minifcrn import functional as F
from minifcrn import optim
from minifcrn.autograd import tensor
from minifcrn.data.annotations import density_map
from minifcrn.data.images import standardize
from minifcrn.data.samples import random_patch, standardize_patch
from minifcrn.errors import InputError, is_positive
from minifcrn.inference import predict_density
from minifcrn.io import CHECKPOINT_FORMAT, atomic_write, load_npz, save_npz, save_weights
from minifcrn.models import FCRN


@dataclass
class TrainConfig:
    arch: str = "fcrn-a"
    epochs: int = 30               # patch epochs
    steps_per_epoch: int = 100     # patch batches per epoch
    batch_size: int = 8
    patch_size: int = 96           # the paper's 100, rounded to a multiple of 8
    lr: float = 0.3                # with eq. 3 and the 'mean' loss; see the docstring
    milestones: list = field(default_factory=list)  # patch epochs at which lr is divided by 10
    momentum: float = 0.9
    weight_decay: float = 5e-4
    loss: str = "mean"             # mse_loss reduction ("batchmean" is eq. 2 literally)
    count_weight: float = 0.0      # lambda of the count term, see training_loss (0: the paper's MSE)
    count_window: int = 0          # the count term's k x k windows (0: whole images)
    max_angle: float = 10.0        # degrees of random rotation
    jitter: float = 0.0            # intensity jitter j: gain e^U(-j, j), offset U(-j, j) after standardising
    zoom: float = 0.0              # patch zoom z: e^U(-z, z) image pixels per patch pixel (0: none)
    finetune_epochs: int = 0       # whole-image epochs after the patch epochs
    finetune_lr: float = 0.003
    finetune_milestones: list = field(default_factory=list)  # whole-image epochs at which lr /= 10
    seed: int = 0
    device: str = "cpu"
    channel: object = "grey"
    synthetic: int = 0             # generated training images (minifcrn.synth) instead of files
    synth: dict = field(default_factory=dict)  # their SynthConfig, when synthetic

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.finetune_epochs


def validation_mae(model, samples, device="cpu") -> float:
    """Mean |predicted count - true count| over whole images."""
    return validation_scores(model, samples, device)[0]


def validation_scores(model, samples, device="cpu"):
    """(MAE, predicted counts, detections per image) of ``model`` on whole ``samples``."""
    from minifcrn.counting import detect

    if not samples:
        return float("nan"), [], []
    counts, found = [], []
    for s in samples:
        density = predict_density(model, standardize(s.image, s.name), device) / model.density_scale
        counts.append(float(density.sum(dtype=np.float64)))
        found.append(len(detect(density)))
    return float(np.mean([abs(c - s.count) for c, s in zip(counts, samples)])), counts, found


MIN_VALIDATION = 3   # fewer validation images cannot tell a network that counts from one that guesses
COLLAPSED = 0.1      # counts varying less than this share of the truth's spread: one count for every image


def collapse_warning(counts, truths, detections) -> str:
    """Why the network looks collapsed on the validation images ("" if it does not): its
    counts barely follow the truth's spread, or it detects nothing where there are cells."""
    counts, truths = np.asarray(counts, float), np.asarray(truths, float)
    if len(counts) >= 2 and truths.std() > 0 and counts.std() < COLLAPSED * truths.std():
        return (f"the counts barely vary across the validation images (sd {counts.std():.3g} against the "
                f"truth's {truths.std():.3g}): the network gives about {counts.mean():.0f} for every image")
    if len(counts) and truths.sum() > 0 and sum(detections) == 0:
        return "no detections on any validation image: the density has no peaks, only a haze"
    return ""


def training_loss(pred, target, cfg: TrainConfig):
    """MSE, plus (beyond the paper) ``count_weight`` * (mean(pred) - mean(target))^2 per image,
    or, with ``count_window`` k, per k x k window (the rows and columns past the last whole
    window are left to the MSE).

    The count is the density's integral, and MSE barely sees it: a background bias of
    0.005 per pixel is 3 cells on a 256x256 image but adds only 2.5e-5 to the MSE.
    The count term (the squared count error per pixel) pins that mean down while
    hardly changing the loss of a network that already counts well.  Per window it
    pins down local counts too, as Count-ception's counting in windows does, so
    that a haze over the background cannot pay for cells missed in a crowd.
    """
    loss = F.mse_loss(pred, target, cfg.loss)
    if cfg.count_weight:
        diff = pred - target
        if cfg.count_window:
            (b, c, h, w), k = diff.shape, cfg.count_window
            rows, cols = h // k, w // k
            diff = diff[:, :, :rows * k, :cols * k].reshape(b, c, rows, k, cols, k)
            per_window = diff.mean(axis=(3, 5))
        else:
            per_window = diff.mean(axis=(1, 2, 3))
        loss = loss + cfg.count_weight * (per_window * per_window).mean()
    return loss


def _jittered(image, cfg, rng):
    """The standardised image under a random gain e^u and offset v, u, v ~ U(-j, j) (beyond the
    paper): a cell's count should not hang on its contrast, which the image's own mean and std
    (whatever else is in the image) set.  No draw from ``rng`` when ``cfg.jitter`` is 0."""
    if not cfg.jitter:
        return image
    gain, offset = np.exp(rng.uniform(-cfg.jitter, cfg.jitter)), rng.uniform(-cfg.jitter, cfg.jitter)
    return (image * gain + offset).astype(image.dtype)


def _patch_batch(samples, cfg, rng):
    pairs = [random_patch(samples[rng.integers(len(samples))], cfg.patch_size, rng, cfg.max_angle,
                          max_zoom=cfg.zoom) for _ in range(cfg.batch_size)]
    return (np.stack([_jittered(p, cfg, rng) for p, _ in pairs])[:, None],
            np.stack([t for _, t in pairs])[:, None])


def _whole_image_batches(samples, cfg, rng):
    """Each training image once, in random order, under a random one of the 8 flips/transposes."""
    for k in rng.permutation(len(samples)):
        s = samples[k]
        image, target = standardize_patch(s.image), density_map(s.points, s.image.shape)
        if rng.random() < 0.5:
            image, target = image[:, ::-1], target[:, ::-1]
        if rng.random() < 0.5:
            image, target = image[::-1], target[::-1]
        if rng.random() < 0.5:  # the network is fully convolutional: any shape is a batch of one
            image, target = image.T, target.T
        image = _jittered(np.ascontiguousarray(image), cfg, rng)
        yield image[None, None], np.ascontiguousarray(target)[None, None]


def _write_log(path, history):
    buffer = io.StringIO()
    columns = list(dict.fromkeys(k for row in history for k in row)) or ["epoch"]  # rows of older runs lack some
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(history)
    with atomic_write(path, "w") as f:
        f.write(buffer.getvalue())


def _write_curves(path, history):
    """curves.png beside log.csv, when matplotlib is there (the CLI says how to get it)."""
    from minifcrn.figures import MissingMatplotlib, training_curves

    try:
        training_curves(history, path)
    except MissingMatplotlib:
        pass


def training_sets(data=None, synthetic=None, val=None, val_count=None, channel="grey", synth=None, seed=0):
    """(training samples, validation samples): the annotated images of folder ``data`` (the last
    ``val_count``, default a fifth, held out unless folder ``val`` is given), or ``synthetic``
    generated images of SynthConfig ``synth`` from ``seed`` (validated on ``val``, or on a tenth
    as many images further along the same stream)."""
    from minifcrn.data.samples import load_samples

    if (data is None) == (synthetic is None):
        raise InputError("train: give either --data DIR or --synthetic N")
    held_out = load_samples(val, channel) if val else None
    if synthetic is not None:
        from minifcrn.synth import SynthConfig, SyntheticSamples

        synth = synth or SynthConfig()
        samples = SyntheticSamples(synthetic, synth, seed)
        if held_out is None:
            held_out = list(SyntheticSamples(max(1, synthetic // 10), synth, seed, offset=synthetic))
        return samples, held_out
    samples = load_samples(data, channel)
    if held_out is None:
        k = val_count if val_count is not None else max(1, len(samples) // 5)
        if k < 0:
            raise InputError(f"train: --val-count must be >= 0, got {k}")
        if k >= len(samples):
            raise InputError(f"{data}: {len(samples)} images cannot spare {k} for validation")
        samples, held_out = samples[:len(samples) - k], samples[len(samples) - k:]
    return samples, held_out


RATE_CUT = 0.1       # the rate's factor after a diverged epoch
MAX_RATE_CUTS = 6    # cuts in one epoch before training gives up (1e-6 of the rate)
EXPLODED = 1e4       # a loss this many times the epoch's first counts as diverged


def _snapshot(model, opt, rng):
    """Copies of what an epoch changes: the weights, the optimiser's state, the random state."""
    return model.state_dict(), opt.state_dict(), rng.bit_generator.state


def _restore(snapshot, model, opt, rng):
    weights, state, random_state = snapshot
    model.load_state_dict(weights)
    opt.load_state_dict(state)
    rng.bit_generator.state = random_state


def _train_epoch(model, opt, samples, cfg, rng, patches, epoch, progress) -> list:
    """One epoch's steps; the loss of each.  A diverged step ends it early, its loss
    followed by None."""
    from tqdm import tqdm

    batches = (_patch_batch(samples, cfg, rng) for _ in range(cfg.steps_per_epoch)) if patches \
        else _whole_image_batches(samples, cfg, rng)
    bar = tqdm(batches, total=cfg.steps_per_epoch if patches else len(samples),
               desc=f"epoch {epoch + 1}/{cfg.total_epochs}", leave=False, disable=None if progress else True)
    losses = []
    for x, y in bar:
        opt.zero_grad()
        loss = training_loss(model(tensor(x, device=cfg.device)), tensor(y, device=cfg.device), cfg)
        value = loss.item()
        losses.append(value)
        if not np.isfinite(value) or 0 < losses[0] * EXPLODED < value:
            bar.close()
            return losses + [None]
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{value:.4g}", lr=f"{opt.lr:.2g}")
    return losses


def check_config(cfg: TrainConfig, train_samples=()):
    """Raise a one-line InputError naming the first setting that cannot train, or the images
    smaller than the patch size (before any epoch runs, not when a patch happens to be drawn)."""
    counts = {"epochs + finetune_epochs": cfg.total_epochs, "steps_per_epoch": cfg.steps_per_epoch,
              "batch_size": cfg.batch_size, "patch_size": cfg.patch_size}
    for name, value in counts.items():
        if value < 1:
            raise InputError(f"train: {name} must be at least 1, got {value}")
    for name in ("epochs", "finetune_epochs"):
        if getattr(cfg, name) < 0:
            raise InputError(f"train: {name} must be >= 0, got {getattr(cfg, name)}")
    rates = {"lr": cfg.lr, "finetune_lr": cfg.finetune_lr}
    for name, value in rates.items():
        if not is_positive(value):
            raise InputError(f"train: {name} must be a positive number, got {value}")
    for name in ("weight_decay", "count_weight", "max_angle", "jitter", "zoom"):
        value = getattr(cfg, name)
        if not is_positive(value, or_zero=True):
            raise InputError(f"train: {name} must be a finite number >= 0, got {value}")
    if isinstance(cfg.count_window, bool) or not isinstance(cfg.count_window, int) or cfg.count_window < 0:
        raise InputError(f"train: count_window must be a whole number >= 0, got {cfg.count_window!r}")
    if not 0 <= cfg.momentum < 1:
        raise InputError(f"train: momentum must lie in [0, 1), got {cfg.momentum}")
    if cfg.epochs:  # (generated images all have one size: the first stands for them)
        checked = train_samples if isinstance(train_samples, (list, tuple)) else [train_samples[0]]
        small = [s.name for s in checked if min(s.image.shape) < cfg.patch_size]
        if small:
            raise InputError(f"train: patch size {cfg.patch_size} is larger than {len(small)} training "
                             f"image(s) ({', '.join(small[:3])}{' ...' if len(small) > 3 else ''}); "
                             "give a smaller --patch-size")


SIZE_SAMPLES = 16  # training images the learnt nucleus size is measured on


def learnt_sizes(samples, cfg: TrainConfig) -> dict:
    """What counting needs of the training images' nuclei (saved with the weights):
    ``cell_size_estimate``, the median automatic estimate (``minifcrn.cellsize``) over up to
    ``SIZE_SAMPLES`` of them, and ``cell_size``, their diameter: twice the generator's
    radius for synthetic data, else that estimate."""
    from minifcrn.cellsize import estimate_cell_size

    picked = [samples[i] for i in np.linspace(0, len(samples) - 1, min(len(samples), SIZE_SAMPLES)).astype(int)]
    estimates = [e for e in (estimate_cell_size(s.image) for s in picked) if e is not None]
    if not estimates:
        return {}
    estimate = float(np.median(estimates))
    if cfg.synthetic:
        from minifcrn.synth import SynthConfig

        diameter = 2 * cfg.synth.get("radius", SynthConfig().radius)
    else:
        diameter = estimate
    return {"cell_size_estimate": round(estimate, 3), "cell_size": round(float(diameter), 3)}


def fit(train_samples, val_samples, cfg: TrainConfig, out_dir, model=None, resume=False, progress=True,
        stop_after=None, recover=True):
    """Train (or resume) and return a summary dict; the best weights are in ``out_dir/best.npz``.

    ``stop_after`` ends this call after that many epochs (the run stays resumable),
    e.g. to train in sittings.

    A rate too high for the data makes the loss diverge.  With ``recover`` (the default),
    a step whose loss is not finite or more than ``EXPLODED`` times the epoch's first
    takes the epoch back to its start (weights, velocities and random state as they
    were) and runs it again at a tenth of the rate, at most ``MAX_RATE_CUTS`` times in
    an epoch; the cut stays for the rest of the run.  log.csv's ``lr`` is the rate
    used and ``rate_cuts`` how often an epoch cut it.  Without ``recover``, or past the
    last cut, a FloatingPointError says at which step the loss diverged.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    if not train_samples:
        raise InputError("train: no training images")
    check_config(cfg, train_samples)
    ckpt_path = out_dir / "checkpoint.npz"
    model = model if model is not None else FCRN(cfg.arch, rng=cfg.seed)
    model.to(cfg.device)
    opt = optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    start, history, best, rate_scale = 0, [], {"val_mae": float("inf"), "epoch": -1}, 1.0
    if resume and ckpt_path.exists():
        arrays, meta = load_npz(ckpt_path)
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise InputError(f"{ckpt_path}: not a minifcrn training checkpoint; use another --out")
        # a setting added since the checkpoint was written counts as its default there
        defaults = json.loads(json.dumps(asdict(TrainConfig())))
        if {**defaults, **meta["config"]} != json.loads(json.dumps(asdict(cfg))):
            raise InputError(f"{ckpt_path}: was written with a different training configuration; "
                             "use the same options to resume, or another --out")
        model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("param/")})
        opt.load_state_dict({**meta["optim"], "velocity": [arrays.get(f"velocity/{i}")
                                                           for i in range(len(opt.params))]})
        rng.bit_generator.state = meta["rng"]
        start, history, best = meta["epoch"] + 1, meta["history"], meta["best"]
        rate_scale = meta.get("rate_scale", 1.0)
    end = cfg.total_epochs if stop_after is None else min(cfg.total_epochs, start + stop_after)
    learnt = learnt_sizes(train_samples, cfg)
    if val_samples is not None and len(val_samples) < MIN_VALIDATION:
        print(f"minifcrn: warning: {len(val_samples)} validation image(s): too few to tell a network that counts "
              f"from one that gives every image the same count; keep at least {MIN_VALIDATION} apart "
              "(--val DIR or --val-count)", file=sys.stderr)
    for epoch in range(start, end):
        t0 = time.perf_counter()
        patches = epoch < cfg.epochs
        scheduled = optim.step_lr(cfg.lr, cfg.milestones, epoch) if patches else \
            optim.step_lr(cfg.finetune_lr, cfg.finetune_milestones, epoch - cfg.epochs)
        good = _snapshot(model, opt, rng) if recover else None
        cuts = 0
        while True:  # the epoch, again from its start at a tenth of the rate while the loss diverges
            opt.lr = lr = scheduled * rate_scale
            losses = _train_epoch(model, opt, train_samples, cfg, rng, patches, epoch, progress)
            if losses[-1] is not None:
                break
            step, value = len(losses) - 1, losses[-2]
            if not recover or cuts == MAX_RATE_CUTS:
                raise FloatingPointError(f"train: loss became {value:g} at epoch {epoch + 1} (step {step}, "
                                         f"lr {lr:g}); lower the learning rate")
            _restore(good, model, opt, rng)
            cuts, rate_scale = cuts + 1, rate_scale * RATE_CUT
            if progress:
                tqdm.write(f"epoch {epoch + 1}: loss became {value:.4g} at step {step} at lr {lr:g}; back to the "
                           f"epoch's start at lr {scheduled * rate_scale:g}")
        val_mae, counts, found = validation_scores(model, val_samples, cfg.device)
        warning = collapse_warning(counts, [v.count for v in val_samples], found)
        row = {"epoch": epoch + 1, "phase": "patches" if patches else "whole", "lr": lr,
               "train_loss": float(np.mean(losses)), "val_mae": val_mae,
               "seconds": round(time.perf_counter() - t0, 3), "rate_cuts": cuts, "warning": warning}
        history.append(row)
        if val_mae < best["val_mae"] or not val_samples:
            best = {"val_mae": val_mae, "epoch": epoch + 1}
            save_weights(model, out_dir / "best.npz", {"config": asdict(cfg), "best": best}, channel=cfg.channel,
                         **learnt)
        state = opt.state_dict()
        arrays = {f"param/{k}": v for k, v in model.state_dict().items()}
        arrays.update({f"velocity/{i}": v for i, v in enumerate(state.pop("velocity")) if v is not None})
        save_npz(ckpt_path, arrays, {"format": CHECKPOINT_FORMAT, "config": asdict(cfg),
                                     "model": model.config(), "optim": state, "rng": rng.bit_generator.state,
                                     "epoch": epoch, "history": history, "best": best, "rate_scale": rate_scale})
        _write_log(out_dir / "log.csv", history)
        _write_curves(out_dir / "curves.png", history)
        if progress:
            tqdm.write(f"epoch {epoch + 1}/{cfg.total_epochs}  {row['phase']:7s}  lr {lr:.0e}  "
                       f"loss {row['train_loss']:.4g}  val MAE {val_mae:.3f}  ({row['seconds']:.0f} s)"
                       + (f"  (rate cut {cuts}x: the loss diverged)" if cuts else ""))
        if warning:
            print(f"minifcrn: warning: epoch {epoch + 1}: {warning}", file=sys.stderr)
    return {"best": best, "history": history, "out_dir": str(out_dir)}
