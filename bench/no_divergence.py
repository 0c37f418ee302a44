#!/usr/bin/env python
"""`minifcrn train` with its default settings on every set, from scratch and from the shipped
weights: does it train, and how often did it cut its own rate?

    python bench/no_divergence.py                  # every (set, start) pair not yet stored
    python bench/no_divergence.py --sets mbm --starts fcrn-a

Each run is the command a user types, ``minifcrn train --data SET --out DIR [--init W]``, on the
first ``--images`` annotated images of the set (the last fifth of them validate, the default),
with only the length cut: one patch epoch of ``--steps`` batches (FCRN-B's start fewer, it is
6-7x slower a step on 2 cores), so that the first epoch, where a too-high rate diverges, is
what is measured.  Sets: the VGG cells, MBM (H&E), the DSB fluorescence nuclei (../shared/data),
and generated images (``--synthetic``).  One JSON line per run in bench/runs/no-divergence.jsonl:
exit code, the epoch's rate and rate cuts, the loss, the validation MAE, seconds.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {"vgg": DATA / "vgg_cells", "mbm": DATA / "mbm", "dsb": DATA / "dsb_fluo", "generated": None}
STARTS = ("scratch", "fcrn-a", "fcrn-b")
RUNS = common.RUNS_DIR / "no-divergence.jsonl"


def subset(folder: Path, images: int, into: Path) -> Path:
    """The first ``images`` annotated images of ``folder`` (NNNcell.png + NNNdots.png), copied."""
    into.mkdir(parents=True)
    for cell in sorted(folder.glob("*cell.png"))[:images]:
        shutil.copy(cell, into)
        shutil.copy(cell.with_name(cell.name.replace("cell", "dots")), into)
    return into


def run(set_name, start, images, steps, work: Path) -> dict:
    out = work / f"{set_name}-{start}"
    data = ["--synthetic", str(images)] if SETS[set_name] is None else \
        ["--data", str(subset(SETS[set_name], images, work / f"{set_name}-data-{start}"))]
    steps = steps if start != "fcrn-b" else max(1, steps // 4)
    command = [sys.executable, "-m", "minifcrn", "train", *data, "--out", str(out), "--epochs", "1",
               "--steps", str(steps)] + ([] if start == "scratch" else ["--init", start])
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    row = {"set": set_name, "start": start, "images": images, "steps": steps, "exit": done.returncode,
           "seconds": round(time.perf_counter() - t0, 1), "command": " ".join(command[1:]).replace(str(work), "WORK"),
           "date": common.now_iso(), "machine": common.machine_name("cpu")}
    if (out / "log.csv").is_file():
        with open(out / "log.csv") as f:
            epoch = list(csv.DictReader(f))[-1]
        row.update(lr=float(epoch["lr"]), rate_cuts=int(epoch["rate_cuts"]), train_loss=float(epoch["train_loss"]),
                   val_mae=float(epoch["val_mae"]))
    if done.returncode:
        row["error"] = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    return row


def stored() -> dict:
    if not RUNS.exists():
        return {}
    return {(r["set"], r["start"]): r for r in map(json.loads, RUNS.read_text().splitlines())}


def report():
    rows = sorted(stored().values(), key=lambda r: (list(SETS).index(r["set"]), STARTS.index(r["start"])))
    table = common.md_table(["set", "start", "exit", "lr used (default 0.3)", "rate cuts", "loss", "val MAE", "s"],
                            [[r["set"], r["start"], r["exit"], f"{r.get('lr', float('nan')):g}",
                              r.get("rate_cuts", ""), f"{r.get('train_loss', float('nan')):.4g}",
                              f"{r.get('val_mae', float('nan')):.2f}", r["seconds"]] for r in rows], "llrrrrrr")
    dates = sorted(r["date"][:10] for r in rows)
    common.publish("no-divergence", "`minifcrn train` with its defaults on every set: no run dies", [
        f"{dates[0]} to {dates[-1]}; {rows[0]['machine']}; `python bench/no_divergence.py` (lines in "
        "`bench/runs/no-divergence.jsonl`)" if rows else "no runs",
        "One patch epoch of the default recipe (lr 0.3, FCRN-B's start a quarter of the steps); rate cuts: "
        "how often the epoch went back to its start at a tenth of the rate"], table,
        path=common.BENCH_DIR / "notes" / "design-measurements.md")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--starts", nargs="+", default=list(STARTS), choices=list(STARTS))
    ap.add_argument("--images", type=int, default=10, help="annotated (or generated) images per run")
    ap.add_argument("--steps", type=int, default=100, help="patch batches of the one epoch (the default)")
    args = ap.parse_args(argv)
    done = stored()
    with tempfile.TemporaryDirectory() as tmp:
        for set_name in args.sets:
            if SETS[set_name] is not None and not SETS[set_name].is_dir():
                print(f"{set_name}: {SETS[set_name]} is not here; skipped")
                continue
            for start in args.starts:
                if (set_name, start) in done:
                    continue
                row = run(set_name, start, args.images, args.steps, Path(tmp))
                print(json.dumps(row), flush=True)
                with open(RUNS, "a") as f:
                    f.write(json.dumps(row) + "\n")
    report()


if __name__ == "__main__":
    main()
