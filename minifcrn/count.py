"""Counting and detecting cells in an image with a trained FCRN.

The network regresses a density map; the count in any region is its integral
(divided by the density scale the model was trained with), and the detections
are its local maxima: pixels that are the largest within ``min_distance`` and
above ``threshold``.  A single isolated cell gives a Gaussian bump of peak
1 / (2 pi sigma^2) = 0.040 cells per pixel (sigma 2); the default threshold is
half of that.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from minifcrn.backend import to_device
from minifcrn.data.images import InputError, is_positive, plane_statistics, read_image, standardize, to_plane
from minifcrn.io import load_weights
from minifcrn.models import FCRN, receptive_field
from minifcrn.train import predict_density

ASSETS = Path(__file__).parent / "assets"
SHIPPED = {"fcrn-a": ASSETS / "fcrn-a.npz", "fcrn-b": ASSETS / "fcrn-b.npz"}
PEAK = 1.0 / (2 * np.pi * 2.0 ** 2)  # density peak of one cell, sigma 2
DEFAULT_THRESHOLD = 0.5 * PEAK
DEFAULT_MIN_DISTANCE = 3
AUTO_TILE = 1024          # tile size chosen for images larger than AUTO_TILE_ABOVE pixels
AUTO_TILE_ABOVE = 2048 * 2048
CELL_SIZE = 9.0           # nucleus diameter (pixels) in the training images of the shipped weights
MAX_RESIZE = 64           # the most count(cell_size=) resizes an image, up or down


@dataclass
class CountResult:
    count: float                 # cells in the image (or in the ROI)
    density: np.ndarray          # float32 (H, W), cells per pixel; sums to the image's count
    detections: np.ndarray       # float (K, 3): x, y, score (density at the maximum)
    roi: tuple | None = None     # (x0, y0, x1, y1) if the count was restricted
    source: str = "image"
    model: str = ""              # the architecture that counted
    plane: np.ndarray | None = field(default=None, repr=False)  # the grey plane that was counted


def load_model(model="fcrn-a", device="cpu") -> FCRN:
    """A shipped name ("fcrn-a", "fcrn-b"), a path to a weights file, or an FCRN (returned as is)."""
    if isinstance(model, FCRN):
        return model.to(device)
    key = str(model).lower()
    path = SHIPPED.get(key, Path(model))
    if key in SHIPPED and not path.is_file():
        raise InputError(f"model {model!r}: its shipped weights {path} are missing from this installation")
    if key not in SHIPPED and not path.is_file():
        raise InputError(f"model {model!r}: neither a shipped model ({', '.join(SHIPPED)}) nor a weights "
                         f".npz file{' (it is a folder)' if path.is_dir() else ''}")
    net, meta = load_weights(path)
    if net.in_channels != 1:
        raise InputError(f"{path}: weights expect {net.in_channels} input channels; minifcrn feeds the network "
                         "one plane (choose it with channel=)")
    net.meta = meta
    return net.eval().to(device)


def weights_hash(net: FCRN) -> str:
    """The first 12 hex digits of the SHA-256 of the model's architecture and weights."""
    import hashlib

    h = hashlib.sha256(net.arch.encode())
    for name, value in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(to_device(value, "cpu"), dtype=np.float32).tobytes())
    return h.hexdigest()[:12]


def parse_roi(roi, shape, source="image"):
    """(x0, y0, x1, y1) from a tuple or "x0,y0,x1,y1", checked to lie inside an image of ``shape``."""
    if roi is None:
        return None
    try:
        values = [int(v) for v in (roi.split(",") if isinstance(roi, str) else roi)]
    except (TypeError, ValueError):
        raise InputError(f"{source}: ROI must be four integers x0,y0,x1,y1, got {roi!r}") from None
    if len(values) != 4:
        raise InputError(f"{source}: ROI must be four integers x0,y0,x1,y1, got {roi!r}")
    x0, y0, x1, y1 = values
    h, w = shape
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise InputError(f"{source}: ROI {x0},{y0},{x1},{y1} is not inside the {w}x{h} image "
                         "(need 0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height)")
    return x0, y0, x1, y1


def detect(density, threshold=DEFAULT_THRESHOLD, min_distance=DEFAULT_MIN_DISTANCE, rows=1024) -> np.ndarray:
    """Local maxima of ``density`` (cells per pixel) as (K, 3) x, y, score, strongest first.

    A pixel is a maximum if it is the largest within ``min_distance`` (a square) and
    above ``threshold``.  Computed ``rows`` rows at a time, each block read with
    ``min_distance`` rows of context, so a huge density needs no full-size temporaries.
    """
    check_detection_args(threshold, min_distance)
    size, reach = 2 * int(min_distance) + 1, int(min_distance)
    found = []
    for r0 in range(0, density.shape[0], rows):
        a, b = max(0, r0 - reach), min(density.shape[0], r0 + rows + reach)
        block = density[a:b]
        peaks = (block == ndimage.maximum_filter(block, size=size, mode="constant", cval=-np.inf))
        peaks &= block > threshold
        peaks[:r0 - a] = False
        peaks[r0 - a + rows:] = False
        ys, xs = np.nonzero(peaks)
        found.append((xs, ys + a, block[ys, xs]))
    xs, ys, scores = (np.concatenate(parts) for parts in zip(*found)) if found else (np.empty(0),) * 3
    order = np.argsort(-scores, kind="stable")
    return np.stack([xs[order], ys[order], scores[order]], axis=1).astype(np.float64).reshape(-1, 3)


def check_detection_args(threshold, min_distance):
    """Raise a one-line InputError unless threshold >= 0 is finite and min_distance >= 0 is whole."""
    if not is_positive(threshold, or_zero=True):
        raise InputError(f"detection threshold must be a finite number >= 0, got {threshold!r}")
    if isinstance(min_distance, bool) or not float(min_distance).is_integer() or min_distance < 0:
        raise InputError(f"detection min_distance must be a whole number of pixels >= 0, got {min_distance!r}")


_margins = {}


def tile_margin(net: FCRN) -> int:
    """Context each tile reads beyond its edges: half the network's measured receptive
    field plus one pooling cell, rounded up to the pooling grid (FCRN-A: 40 pixels)."""
    if net.arch not in _margins:
        half = receptive_field(net) // 2 + net.divisor
        _margins[net.arch] = -(-half // net.divisor) * net.divisor
    return _margins[net.arch]


def check_tile_size(net: FCRN, tile, source="image"):
    """A tile size is a positive multiple of the network's pooling grid (8)."""
    if tile < net.divisor or tile % net.divisor:
        raise InputError(f"{source}: tile size must be a positive multiple of {net.divisor}, got {tile}")


def predict_density_tiled(net, plane, stats, tile, device="cpu", source="image") -> np.ndarray:
    """The density (H, W) in the model's units, computed tile by tile.

    Each tile x tile block of the output comes from the network run on the block
    grown by ``tile_margin`` on every side (cut at the image's edges), standardised
    with the whole image's ``stats``.  Tiles start on the pooling grid, so every
    pooling window is the one the whole image would have; and a pixel of the kept
    block depends only on inputs inside the grown block.  The stitched density
    therefore equals the untiled one up to float32 rounding, with memory set by
    the tile, not the image.
    """
    check_tile_size(net, tile, source)
    margin = tile_margin(net)
    h, w = plane.shape
    out = np.empty((h, w), dtype=np.float32)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            ya, xa = max(0, y0 - margin), max(0, x0 - margin)
            yb, xb = min(h, y0 + tile + margin), min(w, x0 + tile + margin)
            block = predict_density(net, standardize(plane[ya:yb, xa:xb], source, stats), device)
            out[y0:y0 + tile, x0:x0 + tile] = block[y0 - ya:y0 - ya + tile, x0 - xa:x0 - xa + tile]
    return out


def trained_cell_size(net: FCRN) -> float:
    """The nucleus diameter (pixels) the network was trained on: its weights' ``cell_size``
    record, else that of the VGG cells (``CELL_SIZE``)."""
    size = getattr(net, "meta", {}).get("cell_size", CELL_SIZE)
    if not is_positive(size):
        raise InputError(f"{net.arch} weights: cell_size must be a positive number of pixels, got {size!r}")
    return float(size)


def rescale(plane: np.ndarray, shape) -> np.ndarray:
    """``plane`` resampled (bilinear, pixels as areas) to ``shape``."""
    factors = (shape[0] / plane.shape[0], shape[1] / plane.shape[1])
    return ndimage.zoom(plane, factors, order=1, mode="nearest", grid_mode=True).astype(np.float32)


def _density(net, plane, source, device, tile_size) -> np.ndarray:
    """The network's density for a whole plane, tiled when ``tile_size`` says so (see ``count``)."""
    stats = plane_statistics(plane, source)
    if tile_size is None:
        tile_size = AUTO_TILE if plane.size > AUTO_TILE_ABOVE else 0
    elif tile_size:
        check_tile_size(net, tile_size, source)  # also when the image fits in one tile
    if tile_size and (tile_size < plane.shape[0] or tile_size < plane.shape[1]):
        return predict_density_tiled(net, plane, stats, int(tile_size), device, source)
    return predict_density(net, standardize(plane, source, stats), device)


def count(image, model="fcrn-a", channel="grey", roi=None, threshold=DEFAULT_THRESHOLD,
          min_distance=DEFAULT_MIN_DISTANCE, device="cpu", tile_size=None, cell_size=None) -> CountResult:
    """Count and detect cells in ``image``: a path (PNG/TIFF) or an array (H, W) or (H, W, 3).

    ``tile_size``: run the network on tiles of this size (a multiple of 8) with exact
    seams (``predict_density_tiled``); None picks 1024 for images of more than
    2048 x 2048 pixels and no tiling below; 0 never tiles.

    ``cell_size``: the typical nucleus diameter in ``image``, in pixels.  The image is
    then resized by s = trained / cell_size so the network sees cells at the size it
    learnt (``trained_cell_size``, 9 pixels for the shipped weights); the density is
    resized back and divided by s^2, so the count is kept, and detections are found on
    the resized density and mapped back.  Measure the diameter by drawing lines
    across a few typical nuclei (e.g. Fiji's line tool) and averaging their lengths.
    """
    check_detection_args(threshold, min_distance)  # before the network runs
    if isinstance(image, (str, Path)):
        source = str(image)
        plane = read_image(image, channel, memmap=True)  # a huge grey TIFF stays on disk until tiled
    else:
        source = "image"
        plane = to_plane(image, channel, source)
    net = load_model(model, device)
    roi = parse_roi(roi, plane.shape, source)
    seen = plane
    if cell_size is not None:
        if not is_positive(cell_size):
            raise InputError(f"{source}: cell size must be a positive number of pixels, got {cell_size!r}")
        trained = trained_cell_size(net)
        s = trained / cell_size
        shape = (round(plane.shape[0] * s), round(plane.shape[1] * s))
        if not 1 / MAX_RESIZE <= s <= MAX_RESIZE or min(shape) < net.divisor:
            raise InputError(f"{source}: cell size {cell_size:g} px would resize the {plane.shape[1]}x"
                             f"{plane.shape[0]} image by {s:.3g} to {shape[1]}x{shape[0]} (the network learnt "
                             f"{trained:g} px cells; at most {MAX_RESIZE}x either way, at least "
                             f"{net.divisor} px a side); give the nucleus diameter in pixels")
        seen = rescale(plane, shape) if shape != plane.shape else plane
    density = _density(net, seen, source, device, tile_size)
    density /= net.density_scale
    detections = detect(density, threshold, min_distance)
    if seen is not plane:  # back to the image's pixels: per-pixel density times the area ratio
        sy, sx = seen.shape[0] / plane.shape[0], seen.shape[1] / plane.shape[1]
        density = rescale(density, plane.shape) * (sy * sx)
        detections[:, 0] = (detections[:, 0] + 0.5) / sx - 0.5
        detections[:, 1] = (detections[:, 1] + 0.5) / sy - 0.5
    density = density.astype(np.float32, copy=False)
    region = density
    if roi is not None:
        x0, y0, x1, y1 = roi
        region = density[y0:y1, x0:x1]
        inside = ((detections[:, 0] >= x0) & (detections[:, 0] < x1)
                  & (detections[:, 1] >= y0) & (detections[:, 1] < y1))
        detections = detections[inside]
    return CountResult(float(region.sum(dtype=np.float64)), density, detections, roi, source, net.arch, plane)
