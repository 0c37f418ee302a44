#!/usr/bin/env python
"""The paper's Figure 11 with our engine: a cell clump reconstructed from every conv layer of FCRN-A.

    python bench/inversion.py [--image PATH] [--roi x0,y0,x1,y1] [--iterations 300]

Writes ``bench/figures/inversion-fcrn-a.png`` (input, then conv1 ... conv8) and the
objective values into ``bench/RESULTS.md``.  The default crop is a clump of
touching nuclei in VGG test image 101 when ``../shared`` is there, else in the
shipped sample.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

VGG_101 = common.REPO_DIR.parent / "shared" / "data" / "vgg_cells" / "101cell.png"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=None)
    ap.add_argument("--roi", default=None)
    ap.add_argument("--model", default="fcrn-a")
    ap.add_argument("--iterations", type=int, default=300)
    args = ap.parse_args(argv)
    common.configure_threads(2)

    from minifcrn.inference import ASSETS
    from minifcrn.invert import as_plane, reconstruct_all
    from minifcrn.viz import render_inversion

    if args.image is None:
        args.image, default_crop = (str(VGG_101), "64,140,128,204") if VGG_101.exists() else \
            (str(ASSETS / "sample.png"), "80,80,144,144")
        args.roi = args.roi or default_crop
    plane = as_plane(args.image, roi=args.roi)
    t0 = time.perf_counter()
    results = reconstruct_all(args.model, plane, iterations=args.iterations, progress=True)
    seconds = time.perf_counter() - t0
    figure = common.BENCH_DIR / "figures" / f"inversion-{Path(str(args.model)).stem}.png"
    figure.parent.mkdir(exist_ok=True)
    render_inversion(plane, results, figure)
    rows = [[r.layer, len(r.objective), f"{r.objective[0]:.3g}", f"{r.objective[-1]:.3g}",
             f"{r.feature_error:.2g}", f"{r.correlation:.3f}"] for r in results]
    image = Path(args.image).relative_to(common.REPO_DIR.parent) if VGG_101.exists() and args.image == str(VGG_101) \
        else Path(args.image).name
    common.publish("inversion", "Feature inversion (paper section 5, Figure 11)", [
        f"Machine: {common.cpu_model()}; {common.now_iso()}; {seconds:.0f} s for all layers",
        f"Command: `{common.command_line()}`; model `{args.model}`; image `{image}`, ROI {args.roi}",
        f"Figure: [`bench/figures/{figure.name}`](figures/{figure.name}) (input, then each layer's reconstruction)",
        "E = ||phi(x) - phi0||^2 / ||phi0||^2 + 1e-3 mean(x^2), from a random image, momentum 0.9 on the input; "
        "feature error = the first term at the end; r = correlation of the reconstruction with the input"],
        common.md_table(["layer", "steps", "E start", "E end", "feature error", "r"], rows, "lrrrrr"))

if __name__ == "__main__":
    main()
