#!/usr/bin/env python
"""Counting cells of other sizes: the count error across nucleus sizes, with and without ``cell_size``.

Generated images (``minifcrn.synth``) with nuclei of radius r; the image side
and the blur grow with r, so every scale holds the same scene, only magnified.
Each is counted by the shipped FCRN-A (trained on 9-pixel nuclei) as is, and
with ``cell_size=2r`` (the image resized so its nuclei are 9 pixels across).

    python bench/cell_size.py [--images 8] [--radii 2.25 3 4.5 6.75 9 13.5]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--radii", type=float, nargs="+", default=[2.25, 3.0, 4.5, 6.75, 9.0, 13.5])
    ap.add_argument("--model", default="fcrn-a")
    args = ap.parse_args(argv)
    common.configure_threads(2)

    import numpy as np

    from minifcrn.counting import count
    from minifcrn.inference import load_model
    from minifcrn.synth import SynthConfig, generate

    net = load_model(args.model)
    base = SynthConfig()
    rows, payload = [], {"machine": common.cpu_model(), "date": common.now_iso(), "command": common.command_line(),
                         "model": args.model, "runs": []}
    for r in args.radii:
        s = r / base.radius
        side = round(base.width * s)
        config = SynthConfig(radius=r, height=side, width=side, blur=base.blur * s)
        errors = {"as is": [], "cell_size": []}
        truth = []
        for seed in range(args.images):
            made = generate(config, seed)  # the same seeds at every scale: the same cell numbers
            truth.append(made.count)
            errors["as is"].append(count(made.image, net).count - made.count)
            errors["cell_size"].append(count(made.image, net, cell_size=2 * r).count - made.count)
        mean_truth = float(np.mean(truth))
        row = {"radius": r, "side": side, "mean_count": mean_truth,
               **{f"{k} mae": float(np.mean(np.abs(v))) for k, v in errors.items()},
               **{f"{k} bias": float(np.mean(v)) for k, v in errors.items()}}
        payload["runs"].append(row)
        rows.append([f"{2 * r:g}", f"{side}x{side}", f"{mean_truth:.0f}",
                     f"{row['as is mae']:.1f} ({100 * row['as is mae'] / mean_truth:.0f}%)",
                     f"{row['cell_size mae']:.1f} ({100 * row['cell_size mae'] / mean_truth:.0f}%)"])
        print(rows[-1], flush=True)
    common.publish("cell-size", "Cells of other sizes: `count(..., cell_size=D)`", [
        f"Model: `{args.model}` (trained on 9-pixel nuclei)",
        f"Data: {args.images} generated images per row (`SynthConfig` defaults, magnified: radius, side and "
        "blur scaled together; the same seeds, so the same cell numbers, at every size)"],
        common.md_table(["nucleus diameter px", "image", "mean count", "MAE as is", "MAE with --cell-size"], rows,
                        "rrrrr"), payload)


if __name__ == "__main__":
    main()
