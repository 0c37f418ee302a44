#!/usr/bin/env python
"""Counting huge images in bounded memory: time and peak memory of ``count(path, tile_size=T)``.

The image is the shipped sample (256x256) tiled with flips to S x S pixels and
written as an uncompressed 8-bit grey TIFF, which ``count`` memory-maps.  Each
measurement runs in a fresh process, which reports its own peak resident memory
(``ru_maxrss``; this includes the pages of the mapped file it touched).

    python bench/huge.py [--sizes 4096 20000] [--tile 1024] [--untiled-up-to 4096] [--dir /tmp]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from minifcrn.counting import count
r = count(sys.argv[1], tile_size=int(sys.argv[2]))
print(json.dumps({"count": r.count, "detections": len(r.detections), "seconds": time.perf_counter() - t0,
                  "density_mb": r.density.nbytes / 2**20,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_image(path: Path, side: int):
    """The sample tiled with flips to side x side, written row band by row band into a memory-mapped TIFF."""
    import numpy as np
    import tifffile
    from PIL import Image

    from minifcrn.inference import ASSETS

    if path.exists():
        return
    sample = np.asarray(Image.open(ASSETS / "sample.png").convert("L"))
    row = np.concatenate([sample if k % 2 == 0 else sample[:, ::-1] for k in range(-(-side // 256))], axis=1)
    band = np.concatenate([row, row[::-1]], axis=0)[:, :side]  # 512 rows
    tmp = path.with_suffix(".part.tif")
    out = tifffile.memmap(tmp, shape=(side, side), dtype=np.uint8)
    for r in range(0, side, 512):
        out[r:r + 512] = band[:min(512, side - r)]
    out.flush()
    del out
    tmp.replace(path)


def measure(path: Path, tile: int) -> dict:
    """count() in a fresh process: its result, time and its own peak resident memory."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), str(tile)], capture_output=True, text=True,
                          check=True)
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row.update(wall_s=time.perf_counter() - t0)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 20000])
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--untiled-up-to", type=int, default=4096, help="also count whole (tile 0) up to this size")
    ap.add_argument("--dir", default="/tmp", help="where the test images are written (kept for reruns)")
    args = ap.parse_args(argv)
    common.configure_threads(2)

    payload = {"machine": common.cpu_model(), "cores": common.os.cpu_count(), "date": common.now_iso(),
               "command": common.command_line(), "runs": []}
    rows = []
    for side in sorted(args.sizes):
        path = Path(args.dir) / f"minifcrn-huge-{side}.tif"
        make_image(path, side)
        for tile in ([0] if side <= args.untiled_up_to else []) + [args.tile]:
            r = measure(path, tile)
            r.update(side=side, tile=tile, file_mib=path.stat().st_size / 2**20)
            payload["runs"].append(r)
            peak = f"{r['peak_mib']:.0f}"
            rows.append([f"{side}x{side}", "whole" if tile == 0 else f"{tile}", f"{r['file_mib']:.0f}",
                         f"{r['count']:.0f}", f"{r['detections']}", f"{r['seconds']:.0f}",
                         f"{side * side / r['seconds'] / 1e6:.2f}", f"{r['density_mb']:.0f}", peak])
            print(rows[-1], flush=True)
    common.publish("huge", "Huge images: time and peak memory of `count` (CPU)", [
        f"{payload['cores']} cores, 23 GiB RAM",
        "Image: the shipped sample tiled with flips, 8-bit grey uncompressed TIFF (memory-mapped by `count`); "
        "shipped FCRN-A; each row a fresh process, peak = its maximum resident set (ru_maxrss), which includes "
        "the mapped file's touched pages and the full-size float32 density the result holds"],
        common.md_table(["image", "tile", "file MiB", "count", "detections", "seconds", "Mpixel/s",
                         "density MiB", "peak MiB"], rows, "lrrrrrrrr"), payload)

if __name__ == "__main__":
    main()
