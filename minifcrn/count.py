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

from minifcrn.data.images import InputError, read_image, standardize, to_plane
from minifcrn.io import load_weights
from minifcrn.models import FCRN
from minifcrn.train import predict_density

ASSETS = Path(__file__).parent / "assets"
SHIPPED = {"fcrn-a": ASSETS / "fcrn-a.npz", "fcrn-b": ASSETS / "fcrn-b.npz"}
PEAK = 1.0 / (2 * np.pi * 2.0 ** 2)  # density peak of one cell, sigma 2
DEFAULT_THRESHOLD = 0.5 * PEAK
DEFAULT_MIN_DISTANCE = 3


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
    net, meta = load_weights(path)
    net.meta = meta
    return net.eval().to(device)


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


def detect(density, threshold=DEFAULT_THRESHOLD, min_distance=DEFAULT_MIN_DISTANCE) -> np.ndarray:
    """Local maxima of ``density`` (cells per pixel) as (K, 3) x, y, score, strongest first."""
    size = 2 * int(min_distance) + 1
    peaks = (density == ndimage.maximum_filter(density, size=size, mode="constant", cval=-np.inf))
    peaks &= density > threshold
    ys, xs = np.nonzero(peaks)
    scores = density[ys, xs]
    order = np.argsort(-scores, kind="stable")
    return np.stack([xs[order], ys[order], scores[order]], axis=1).astype(np.float64).reshape(-1, 3)


def count(image, model="fcrn-a", channel="grey", roi=None, threshold=DEFAULT_THRESHOLD,
          min_distance=DEFAULT_MIN_DISTANCE, device="cpu") -> CountResult:
    """Count and detect cells in ``image``: a path (PNG/TIFF) or an array (H, W) or (H, W, 3)."""
    if isinstance(image, (str, Path)):
        source = str(image)
        plane = read_image(image, channel)
    else:
        source = "image"
        plane = to_plane(image, channel, source)
    net = load_model(model, device)
    roi = parse_roi(roi, plane.shape, source)
    density = predict_density(net, standardize(plane, source), device) / net.density_scale
    density = density.astype(np.float32)
    detections = detect(density, threshold, min_distance)
    region = density
    if roi is not None:
        x0, y0, x1, y1 = roi
        region = density[y0:y1, x0:x1]
        inside = ((detections[:, 0] >= x0) & (detections[:, 0] < x1)
                  & (detections[:, 1] >= y0) & (detections[:, 1] < y1))
        detections = detections[inside]
    return CountResult(float(region.sum(dtype=np.float64)), density, detections, roi, source, net.arch, plane)
