"""Draw the sample image shipped with minifcrn (minifcrn/assets/sample.png) and its true centres.

Fluorescent nuclei as blurred, randomly oriented ellipses of radius 4-5.5 pixels
on a dark, unevenly lit background with camera noise, some touching: a few
lines of NumPy/SciPy, so the package carries no image it did not make.

    python examples/make_sample.py [--out minifcrn/assets] [--cells 90] [--seed 7]
"""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage


def draw(size=256, cells=90, seed=7):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    image = np.zeros((size, size))
    centres = rng.uniform(6, size - 6, (cells, 2))  # (x, y)
    for x, y in centres:
        a, b = rng.uniform(4.0, 5.5), rng.uniform(4.0, 5.5)
        t = rng.uniform(0, np.pi)
        dx, dy = xx - x, yy - y
        u, v = dx * np.cos(t) + dy * np.sin(t), -dx * np.sin(t) + dy * np.cos(t)
        image += rng.uniform(0.6, 1.0) * ((u / a) ** 2 + (v / b) ** 2 <= 1.0)
    image = ndimage.gaussian_filter(image, rng.uniform(1.6, 2.2))
    image *= 0.85 + 0.3 * (xx + yy) / (2 * size)  # uneven illumination
    image += 0.04 + rng.normal(0, 0.02, image.shape)
    return np.clip(image / image.max() * 255, 0, 255).astype(np.uint8), centres


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "minifcrn" / "assets"))
    parser.add_argument("--cells", type=int, default=90)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    image, centres = draw(cells=args.cells, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(out / "sample.png")
    np.savetxt(out / "sample.csv", centres, fmt="%.2f", delimiter=",", header="x,y", comments="")
    print(f"wrote {out / 'sample.png'} ({len(centres)} cells) and {out / 'sample.csv'}")


if __name__ == "__main__":
    main()
