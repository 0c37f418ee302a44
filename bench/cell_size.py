#!/usr/bin/env python
"""Cells of other sizes: the automatic size estimate, and counts with and without the resize.

    python bench/cell_size.py estimator [--images 4] [--dsb ../shared/data/dsb_fluo]
    python bench/cell_size.py counts [--images 8] [--radii 2.25 3 4.5 6.75 9 13.5]

``estimator``: ``minifcrn.cellsize.estimate_cell_size`` against known diameters, on
generated images (``minifcrn.synth``, the default scene magnified: radius, side and
blur scaled together) and on the real fluorescence images of ``dsb_fluo`` against
the median equivalent diameter of their annotated masks (``meta.csv``).  Written to
RESULTS.md.

``counts``: the shipped FCRN-A (trained on 9-pixel nuclei) on magnified generated
images as is (``cell_size=None``), with the true ``cell_size=2r``, and with the
automatic size.  Written to notes/real-images.md.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

DSB = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb_fluo"


def magnified(radius, seed):
    from minifcrn.synth import SynthConfig, generate

    base = SynthConfig()
    s = radius / base.radius
    side = round(base.width * s)
    return generate(SynthConfig(radius=radius, height=side, width=side, blur=base.blur * s), seed)


def percent_errors(estimates, truths):
    import numpy as np

    e = 100 * (np.asarray(estimates) / np.asarray(truths) - 1)
    return {"median": float(np.median(e)), "mean_abs": float(np.mean(np.abs(e))),
            "max_abs": float(np.max(np.abs(e))), "n": len(e)}


def estimator(args):
    import numpy as np

    from minifcrn.cellsize import estimate_cell_size
    from minifcrn.data.images import read_image

    runs, rows = [], []
    for r in args.radii:
        t0 = time.perf_counter()
        made = [magnified(r, seed) for seed in range(args.images)]
        estimates = [estimate_cell_size(m.image.astype(np.float32)) for m in made]
        side = made[0].image.shape[0]
        stats = percent_errors(estimates, [2 * r] * len(made))
        runs.append({"set": "generated", "diameter": 2 * r, "side": side, "estimates": estimates, **stats,
                     "seconds_per_image": (time.perf_counter() - t0) / len(made)})
        rows.append([f"generated, d = {2 * r:g} px ({side}x{side})", stats["n"], f"{stats['median']:+.1f}%",
                     f"{stats['mean_abs']:.1f}%", f"{stats['max_abs']:.1f}%"])
    if (args.dsb / "meta.csv").is_file():
        with open(args.dsb / "meta.csv") as f:
            meta = list(csv.DictReader(f))
        truths = [float(m["median_equiv_diam_px"]) for m in meta]
        estimates = [estimate_cell_size(read_image(args.dsb / f"{m['id']}cell.png")) for m in meta]
        stats = percent_errors(estimates, truths)
        corrected = percent_errors(np.asarray(estimates) / (1 + stats["median"] / 100), truths)
        runs.append({"set": "dsb_fluo", "truths": truths, "estimates": estimates, **stats,
                     "after_median_bias": corrected})
        rows.append([f"dsb_fluo, real, d = {min(truths):.0f}-{max(truths):.0f} px", stats["n"],
                     f"{stats['median']:+.1f}%", f"{stats['mean_abs']:.1f}%", f"{stats['max_abs']:.1f}%"])
    payload = {"machine": common.cpu_model(), "date": common.now_iso(), "command": common.command_line(),
               "runs": runs}
    common.publish("cell-size-estimator", "Automatic nucleus size (`--cell-size auto`): estimate vs truth", [
        "Estimator: peak over log-spaced s of the mean squared positive part of the scale-normalised LoG, "
        "times 2.2 (`minifcrn/cellsize.py`); generated truth = twice the radius drawn, dsb_fluo truth = median "
        "equivalent diameter of the annotated masks",
        "Counting resizes by (the estimate on the weights' training images) / (the image's estimate), so a "
        "bias shared by both cancels; it leaves an image alone within 25%"],
        common.md_table(["images", "n", "median error", "mean abs error", "max abs error"], rows, "lrrrr"),
        payload)


def counts(args):
    import numpy as np

    from minifcrn.counting import count
    from minifcrn.inference import load_model

    net = load_model(args.model)
    rows, payload = [], {"machine": common.cpu_model(), "date": common.now_iso(), "command": common.command_line(),
                         "model": args.model, "runs": []}
    for r in args.radii:
        made = [magnified(r, seed) for seed in range(args.images)]  # the same seeds: the same cell numbers
        truth = np.array([m.count for m in made], float)
        errors = {name: np.array([count(m.image, net, cell_size=size).count for m in made]) - truth
                  for name, size in (("as is", None), ("given", 2 * r), ("auto", "auto"))}
        row = {"radius": r, "side": made[0].image.shape[0], "mean_count": float(truth.mean()),
               **{f"{k} mae": float(np.mean(np.abs(v))) for k, v in errors.items()},
               **{f"{k} bias": float(np.mean(v)) for k, v in errors.items()}}
        payload["runs"].append(row)
        rows.append([f"{2 * r:g}", f"{row['side']}x{row['side']}", f"{truth.mean():.0f}",
                     *[f"{row[k + ' mae']:.1f} ({100 * row[k + ' mae'] / truth.mean():.0f}%)" for k in errors]])
        print(rows[-1], flush=True)
    common.publish("cell-size", "Cells of other sizes: `count(..., cell_size=D)`", [
        f"Model: `{args.model}` (trained on 9-pixel nuclei)",
        f"Data: {args.images} generated images per row (`SynthConfig` defaults, magnified: radius, side and "
        "blur scaled together; the same seeds, so the same cell numbers, at every size)"],
        common.md_table(["nucleus diameter px", "image", "mean count", "MAE as is (none)", "MAE, true size given",
                         "MAE, auto"], rows, "rrrrrr"), payload, path=common.BENCH_DIR / "notes" / "real-images.md")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["estimator", "counts"])
    ap.add_argument("--images", type=int, default=None, help="generated images per size (4 estimator, 8 counts)")
    ap.add_argument("--radii", type=float, nargs="+", default=[2.25, 3.0, 4.5, 6.75, 9.0, 13.5, 18.0])
    ap.add_argument("--dsb", type=Path, default=DSB)
    ap.add_argument("--model", default="fcrn-a")
    args = ap.parse_args(argv)
    args.images = args.images or (4 if args.mode == "estimator" else 8)
    common.configure_threads(2)
    {"estimator": estimator, "counts": counts}[args.mode](args)


if __name__ == "__main__":
    main()
