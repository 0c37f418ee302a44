#!/usr/bin/env python
"""Tiled counting against whole-image counting: seam error, count difference, time, memory.

The image is the shipped sample (256x256, 90 cells) repeated R x R times with
flips, so it has cells up to every seam.  For each tile size the density is
computed tile by tile (``minifcrn.count(..., tile_size=T)``) and compared with
the untiled density; peak memory is the tracemalloc peak of the call (NumPy
allocations), which the tile, not the image, should bound.

    python bench/tiles.py [--repeat 4] [--tiles 128 256 512]
"""
from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=4, help="the sample repeated R x R times")
    ap.add_argument("--tiles", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args(argv)

    import numpy as np
    from PIL import Image

    from minifcrn.counting import count
    from minifcrn.inference import ASSETS, load_model
    sample = np.asarray(Image.open(ASSETS / "sample.png"), dtype=np.float32)
    row = np.concatenate([sample if k % 2 == 0 else sample[:, ::-1] for k in range(args.repeat)], axis=1)
    image = np.concatenate([row if k % 2 == 0 else row[::-1] for k in range(args.repeat)], axis=0)
    net = load_model("fcrn-a")

    def run(tile):
        tracemalloc.start()
        t0 = time.perf_counter()
        result = count(image, net, tile_size=tile)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
        tracemalloc.stop()
        return result, seconds, peak

    count(image[:64, :64], net, tile_size=0)  # warm-up (compiles, measures the receptive field)
    count(image[:200, :200], net, tile_size=64)
    whole, t_whole, m_whole = run(0)
    rows = [["untiled", "-", f"{whole.count:.2f}", "-", f"{t_whole:.2f}", f"{m_whole:.0f}"]]
    scale = float(np.abs(whole.density).max())
    for tile in args.tiles:
        tiled, seconds, peak = run(tile)
        diff = float(np.abs(tiled.density - whole.density).max())
        rows.append([str(tile), f"{diff:.2e} ({diff / scale:.1e} of the peak)", f"{tiled.count:.2f}",
                     f"{tiled.count - whole.count:+.2e}", f"{seconds:.2f}", f"{peak:.0f}"])
    h, w = image.shape
    text = "\n".join([
        f"## Tiled counting, exact seams (issue 10), {common.now_iso()}", "",
        f"- Image: the sample repeated {args.repeat}x{args.repeat} with flips ({w}x{h}, "
        f"{90 * args.repeat ** 2} cells drawn), shipped FCRN-A, CPU, git {common.machine_info().get('git_commit')}",
        f"- Command: `{common.command_line()}`; memory = tracemalloc peak (NumPy allocations) of the call", "",
        common.md_table(["tile", "max abs density difference vs untiled", "count", "count difference",
                         "seconds", "peak MiB"], rows, "lrrrrr"), ""])
    print(text)
    if not args.no_results:
        common.update_results_section(common.RESULTS_MD, "tiles", text)


if __name__ == "__main__":
    main()
