"""Evaluate a finished training run on VGG images 101-200 and ship its best weights.

    python bench/ship_weights.py RUN_DIR --arch fcrn-a --command "minifcrn train ..." [--data ../shared/data/vgg_cells]

Reads RUN_DIR/best.npz and RUN_DIR/log.csv, measures the MAE on the test images
101-200 (never seen in training or validation), and writes
minifcrn/assets/<arch>.npz (float32 weights) with a record of how they were
trained: data, seed, configuration, epochs, wall time, machine, validation MAE
and test MAE, plus the command that trained them.
"""
import argparse
import csv
import datetime
import os
import platform
from pathlib import Path


from minifcrn.inference import ASSETS
from minifcrn.data.samples import load_samples
from minifcrn.io import load_weights, save_weights
from minifcrn.train import validation_mae

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def vgg_sizes(data) -> dict:
    """The nucleus size the VGG training images 001-090 show: CELL_SIZE (9 px), and what the
    automatic estimate reads on them (its median), for ``count(cell_size="auto")``."""
    import numpy as np

    from minifcrn.cellsize import estimate_cell_size
    from minifcrn.counting import CELL_SIZE

    train = load_samples(data, names={f"{i:03d}cell" for i in range(1, 91)})
    return {"cell_size": CELL_SIZE, "cell_size_estimate": round(float(np.median(
        [estimate_cell_size(s.image) for s in train])), 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--arch", required=True, choices=["fcrn-a", "fcrn-b"])
    parser.add_argument("--command", required=True, help="the command that trained the run")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "vgg_cells")
    parser.add_argument("--previous", type=Path, action="append", default=[],
                        help="earlier run(s) this one started from (--init); their epochs count in the record")
    args = parser.parse_args()

    model, meta = load_weights(args.run / "best.npz")
    assert model.arch == args.arch, (model.arch, args.arch)
    history = []
    for run in [*args.previous, args.run]:
        with open(run / "log.csv") as f:
            history += list(csv.DictReader(f))
    test = load_samples(args.data, names={f"{i:03d}cell" for i in range(101, 201)})
    test_mae = validation_mae(model, test)
    record = {
        "data": "VGG synthetic cells (Lempitsky & Zisserman 2010): images 001-090 train, 091-100 validation; "
                "101-200 held out for the test MAE",
        "command": args.command,
        "config": meta["record"]["config"],
        "best_epoch_of_last_run": meta["record"]["best"]["epoch"],
        "val_mae": meta["record"]["best"]["val_mae"],
        "test_mae_101_200": round(test_mae, 4),
        "test_images": len(test),
        "epochs_run": len(history),
        "wall_time_s": round(sum(float(r["seconds"]) for r in history), 1),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, CPU only (NumPy + Numba)",
        "date": datetime.date.today().isoformat(),
    }
    out = ASSETS / f"{args.arch}.npz"
    save_weights(model, out, record, channel="grey", **vgg_sizes(args.data))
    print(f"{out}: test MAE on 101-200 {test_mae:.3f} (validation {record['val_mae']:.3f}, "
          f"{record['epochs_run']} epochs in {record['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    main()
