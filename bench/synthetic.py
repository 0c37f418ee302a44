#!/usr/bin/env python
"""The synthetic generator measured: its speed, and what FCRN-A learns from it alone.

    python bench/synthetic.py speed                 # ms per 256x256 image with 200 nuclei, one core
    python bench/synthetic.py train [VARIANT ...]   # train (resumably) and test on VGG 101-200
    python bench/synthetic.py report                # the RESULTS.md section from the stored runs

Variants, all FCRN-A under one short recipe (``RECIPE``: patch epochs, then
whole-image epochs with the count term, about the same number of steps each):

* ``vgg``: trained on VGG images 001-090, validated on 091-100 (the reference);
* ``synthetic``: trained on 300 generated images, validated on 30 others, never
  seeing a VGG image; the VGG test images are only used for the final test;
* ``no-<component>``: the same with one generator component switched off
  (``minifcrn.synth.COMPONENTS``), the ablation.

Each run trains in ``--work/<variant>`` (resumable: rerun the command after an
interruption) and appends one JSON line to ``bench/runs/synthetic.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

RUNS = common.RUNS_DIR / "synthetic.jsonl"  # --runs elsewhere to retrain a stored variant's weights
VGG = common.REPO_DIR.parent / "shared" / "data" / "vgg_cells"
POOL = 300
RECIPE = {"epochs": 10, "steps_per_epoch": 100, "lr": 0.3, "milestones": [8], "seed": 0}
FINETUNE = {"epochs": 0, "finetune_lr": 0.003, "count_weight": 50.0, "seed": 1}
WHOLE_STEPS = 300  # whole-image steps: 1 epoch of the 300 generated images, 3 of the 90 VGG ones
COMPONENT_ORDER = ("blur", "noise", "clumps", "shape", "texture", "illumination")
VARIANTS = ("synthetic", "vgg") + tuple(f"no-{c}" for c in COMPONENT_ORDER)


def vgg_samples(first, last):
    from minifcrn.data.samples import load_samples
    return load_samples(VGG, names={f"{i:03d}cell" for i in range(first, last + 1)})


def training_sets(variant):
    from minifcrn.synth import SynthConfig, SyntheticSamples

    if variant == "vgg":
        return vgg_samples(1, 90), vgg_samples(91, 100), {}
    config = SynthConfig()
    if variant.startswith("no-"):
        config = config.without(variant[3:])
    return (SyntheticSamples(POOL, config, seed=0), list(SyntheticSamples(POOL // 10, config, 0, offset=POOL)),
            config.to_dict())


def stored_runs(path=RUNS) -> dict:
    runs = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                runs[row["variant"]] = row
    return runs


def cmd_train(args):
    import numpy as np

    from minifcrn.inference import load_model
    from minifcrn.train import TrainConfig, fit

    done = stored_runs(args.runs)
    test = vgg_samples(101, 200)
    for variant in args.variants or VARIANTS:
        if variant in done:
            print(f"{variant}: stored, test MAE {done[variant]['test_mae']:.3f}")
            continue
        train, val, synth = training_sets(variant)
        data = {"synthetic": len(train) if synth else 0, "synth": synth}
        t0 = time.perf_counter()
        patches = fit(train, val, TrainConfig(**RECIPE, **data), Path(args.work) / variant / "patches",
                      resume=True, progress=not args.quiet)
        cfg = TrainConfig(**FINETUNE, finetune_epochs=WHOLE_STEPS // len(train), **data)
        start = load_model(str(Path(args.work) / variant / "patches" / "best.npz"))
        summary = fit(train, val, cfg, Path(args.work) / variant / "whole", model=start, resume=True,
                      progress=not args.quiet)
        model = load_model(str(Path(args.work) / variant / "whole" / "best.npz"))
        errors = [model_error(model, s) for s in test]
        row = {"variant": variant, "test_mae": float(np.mean(np.abs(errors))), "test_bias": float(np.mean(errors)),
               "val_mae": summary["best"]["val_mae"], "best_epoch": summary["best"]["epoch"],
               "epochs": RECIPE["epochs"] + cfg.total_epochs, "train_images": len(train), "wall_s_this_sitting": round(
                   time.perf_counter() - t0, 1), "train_s": round(sum(r["seconds"] for r in patches["history"] + summary["history"]), 1),
               "patch_val_mae": patches["best"]["val_mae"],
               "recipe": RECIPE, "finetune": {**FINETUNE, "finetune_epochs": cfg.finetune_epochs}, "synth": synth,
               "machine": common.cpu_model(), "date": common.now_iso(), "commit": common.git_commit()}
        args.runs.parent.mkdir(parents=True, exist_ok=True)
        with open(args.runs, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{variant}: test MAE {row['test_mae']:.3f} (bias {row['test_bias']:+.2f}), "
              f"val MAE {row['val_mae']:.3f}, {row['train_s']:.0f} s")


def model_error(model, sample):
    """Predicted minus true count on one image."""
    from minifcrn.data.images import standardize
    from minifcrn.inference import predict_density
    return float(predict_density(model, standardize(sample.image, sample.name)).sum() / model.density_scale
                 - sample.count)


def cmd_speed(args):
    from minifcrn.synth import SynthConfig, generate

    rows, payload = [], {"machine": common.cpu_model(), "date": common.now_iso(), "command": common.command_line()}
    for size, cells in ((256, 200), (1024, 3200)):
        config = SynthConfig(height=size, width=size, cells=(cells, cells))
        generate(config, 0)  # compile
        times = [common.timed(lambda c=config, s=seed: generate(c, s)) for seed in range(args.repeats)]
        stats = common.summarize(times)
        payload[f"{size}x{size}"] = stats
        rows.append([f"{size}x{size}", cells, f"{stats['median_ms']:.1f}", f"{stats['min_ms']:.1f}",
                     f"{stats['max_ms']:.1f}"])
    common.publish("synth-speed", "Synthetic images: generation speed (`minifcrn.synth.generate`)", [
        f"One thread; {args.repeats} images each, different seeds"],
        common.md_table(["image", "nuclei", "median ms", "min ms", "max ms"], rows, "lrrrr"), payload)


def cmd_report(args):
    runs = stored_runs()
    if not runs:
        sys.exit(f"no runs in {RUNS}; run: python bench/synthetic.py train")
    ref = runs.get("vgg")
    rows = []
    for variant in VARIANTS:
        r = runs.get(variant)
        if r is None:
            rows.append([variant, "not run yet", "", "", "", ""])
            continue
        gap = f"{r['test_mae'] - ref['test_mae']:+.2f}" if ref and variant != "vgg" else ""
        rows.append([variant, r["train_images"], f"{r['test_mae']:.2f}", f"{r['test_bias']:+.2f}", gap,
                     f"{r['train_s'] / 60:.0f}"])
    any_run = next(iter(runs.values()))
    common.publish("synthetic", "Trained on the generator alone vs on VGG images (FCRN-A, test MAE on VGG 101-200)", [
        f"Machine: {any_run['machine']}; runs dated {min(r['date'] for r in runs.values())[:10]}"
        f" to {max(r['date'] for r in runs.values())[:10]}",
        "Command: `python bench/synthetic.py train` then `python bench/synthetic.py report`; runs stored in "
        "`bench/runs/synthetic.jsonl`",
        f"Recipe (all rows): {RECIPE['epochs']} patch epochs of {RECIPE['steps_per_epoch']} batches of 8x96x96 "
        f"(lr {RECIPE['lr']}, /10 at epoch {RECIPE['milestones'][0]}), then from the best of those {WHOLE_STEPS} "
        f"whole-image steps (lr {FINETUNE['finetune_lr']}, count term {FINETUNE['count_weight']:g}); "
        "best epoch by validation MAE. Generated rows: 300 images (`SynthConfig()` defaults), validation on 30 "
        "other generated images; no VGG image is seen before the test. `no-X`: the generator with component X "
        "off (`minifcrn.synth.COMPONENTS`).",
        "train min: the wall time of the epochs, inflated by other jobs sharing the 2 cores (and no-blur by a "
        "28-minute pause); not a speed figure"],
        common.md_table(["training data", "images", "test MAE", "bias", "vs VGG-trained", "train min"], rows,
                        "lrrrrr"))

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("variants", nargs="*", metavar="VARIANT", help=f"some of {', '.join(VARIANTS)} (default all)")
    t.add_argument("--work", default=str(common.RUNS_DIR / "synthetic-work"), help="training folders")
    t.add_argument("--runs", type=Path, default=RUNS, help="the JSON-lines file of finished runs")
    t.add_argument("--quiet", action="store_true")
    s = sub.add_parser("speed")
    s.add_argument("--repeats", type=int, default=30)
    sub.add_parser("report")
    args = ap.parse_args(argv)
    unknown = set(getattr(args, "variants", ())) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(sorted(unknown))}; choose from {', '.join(VARIANTS)}")
    common.configure_training_process(1 if args.command == "speed" else 2)
    {"train": cmd_train, "speed": cmd_speed, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main()
