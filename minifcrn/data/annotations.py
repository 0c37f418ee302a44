"""Point annotations and the density maps the networks regress.

Points are float (x, y) pairs: x the column, y the row, in pixels.

* Dot images (``NNNdots.png``): one point per pixel whose red value is > 0.
  Pixels are counted, not connected components, because the centres of
  neighbouring cells can touch.  A grey dot image: every pixel > 0.
* CSV point lists: a header naming the columns, either ``x,y`` (Fiji's
  point export: also ``X,Y``) or ``row,col``; extra columns are ignored.

The density target of the paper is a Gaussian of sigma 2 at every point,
scaled by 100:  D(p) = 100 * sum_k N(p; c_k, 2^2 I).  Each point is first
split bilinearly over its four nearest pixels (so sub-pixel positions from
rotations keep their mass), then blurred with ``scipy.ndimage.gaussian_filter``;
mass that falls outside the image is lost, so the integral equals the number
of points only away from the borders.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from scipy import ndimage

from minifcrn.data.images import _decode
from minifcrn.errors import InputError

SIGMA, SCALE = 2.0, 100.0


def read_points(path, shape=None) -> np.ndarray:
    """Points (K, 2) as float (x, y) from a dot image or a CSV file; checked against ``shape`` (H, W)."""
    path = Path(path)
    points = _read_csv(path) if path.suffix.lower() == ".csv" else _read_dots(path, shape)
    if shape is not None and len(points):
        h, w = shape
        outside = (points[:, 0] < -0.5) | (points[:, 0] > w - 0.5) | (points[:, 1] < -0.5) | (points[:, 1] > h - 0.5)
        if outside.any():
            x, y = points[np.argmax(outside)]
            raise InputError(f"{path}: point ({x:g}, {y:g}) lies outside the {w}x{h} image")
    return points


def _read_dots(path: Path, shape) -> np.ndarray:
    dots = _decode(path)
    if dots.ndim == 3:
        dots = dots[..., 0]  # red
    if dots.ndim != 2:
        raise InputError(f"{path}: a dot image must be 2-D or RGB, got shape {dots.shape}")
    if shape is not None and dots.shape != tuple(shape):
        raise InputError(f"{path}: dot image is {dots.shape[1]}x{dots.shape[0]} but its image is "
                         f"{shape[1]}x{shape[0]}")
    ys, xs = np.nonzero(dots > 0)
    return np.stack([xs, ys], axis=1).astype(np.float64)


def _read_csv(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        if "x" in header and "y" in header:
            cx, cy = header.index("x"), header.index("y")
        elif "row" in header and "col" in header:
            cx, cy = header.index("col"), header.index("row")
        else:
            raise InputError(f"{path}: CSV header must name columns x,y or row,col; got {','.join(header)!r}")
        points = []
        for line, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            try:
                points.append((float(row[cx]), float(row[cy])))
            except (ValueError, IndexError):
                raise InputError(f"{path}: line {line}: expected numbers in columns "
                                 f"{header[cx]},{header[cy]}, got {row!r}") from None
    points = np.array(points, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(points).all():
        raise InputError(f"{path}: point coordinates must be finite")
    return points


def splat(points, shape) -> np.ndarray:
    """Unit masses at ``points`` (x, y), each split bilinearly over its four nearest pixels."""
    h, w = shape
    out = np.zeros((h + 2, w + 2), np.float64)  # one pixel of margin on each side
    if len(points):
        x, y = points[:, 0] + 1, points[:, 1] + 1
        x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
        fx, fy = x - x0, y - y0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                yy, xx = np.clip(y0 + dy, 0, h + 1), np.clip(x0 + dx, 0, w + 1)
                np.add.at(out, (yy, xx), wy * wx)
    return out[1:-1, 1:-1]


def density_map(points, shape, sigma=SIGMA, scale=SCALE) -> np.ndarray:
    """The training target: ``scale`` times a Gaussian of ``sigma`` at each point, float32 (H, W)."""
    dots = splat(np.asarray(points, dtype=np.float64).reshape(-1, 2), shape)
    return (ndimage.gaussian_filter(dots, sigma, mode="constant", truncate=4.0) * scale).astype(np.float32)
