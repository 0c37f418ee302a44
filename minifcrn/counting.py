"""Counting and detecting cells in an image with a trained FCRN.

The network regresses a density map; the count in any region is its integral
(divided by the density scale the model was trained with), and the detections
are its local maxima: pixels that are the largest within ``min_distance`` and
above ``threshold``.  A single isolated cell gives a Gaussian bump of peak
1 / (2 pi sigma^2) = 0.040 cells per pixel (sigma 2); the default threshold is
half of that.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from scipy import ndimage

from minifcrn.cellsize import estimate_cell_size
from minifcrn.data.images import pick_channel, read_pixels, to_plane
from minifcrn.data.samples import image_files
from minifcrn.errors import InputError, is_positive
from minifcrn.inference import load_model, predict, weights_hash
from minifcrn.io import atomic_write, check_out_folder
from minifcrn.models import FCRN

PEAK = 1.0 / (2 * np.pi * 2.0 ** 2)  # density peak of one cell, sigma 2
DEFAULT_THRESHOLD = 0.5 * PEAK
DEFAULT_MIN_DISTANCE = 3
CELL_SIZE = 9.0           # nucleus diameter (pixels) in the training images of the shipped weights
MAX_RESIZE = 64           # the most count(cell_size=) resizes an image, up or down
AUTO_TOLERANCE = 1.25     # an estimated size within this factor of the trained one leaves the image as it is


@dataclass
class CountResult:
    count: float                 # cells in the image (or in the ROI)
    density: np.ndarray          # float32 (H, W), cells per pixel; sums to the image's count
    detections: np.ndarray       # float (K, 3): x, y, score (density at the maximum)
    roi: tuple | None = None     # (x0, y0, x1, y1) if the count was restricted
    source: str = "image"
    model: str = ""              # the architecture that counted
    plane: np.ndarray | None = field(default=None, repr=False)  # the grey plane that was counted
    cell_size: float | None = None  # the nucleus diameter (image pixels) the count assumed
    cell_size_from: str = "trained"  # "given", "estimated" (from the image) or "trained" (the weights' own)
    scale: float = 1.0           # the image was resized by this factor before the network saw it
    channel: object = "grey"     # the plane counted: "grey", "inverted" or a channel number
    channel_from: str = "given"  # "given", "weights" (as the network was trained) or "auto" (picked from the image)
    pixels: np.ndarray | None = field(default=None, repr=False)  # the image as read (colour kept), for figures


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


def trained_cell_size(net: FCRN) -> float:
    """The nucleus diameter (pixels) the network was trained on: its weights' ``cell_size``
    record, else that of the VGG cells (``CELL_SIZE``)."""
    size = getattr(net, "meta", {}).get("cell_size", CELL_SIZE)
    if not is_positive(size):
        raise InputError(f"{net.arch} weights: cell_size must be a positive number of pixels, got {size!r}")
    return float(size)


def trained_estimate(net: FCRN) -> float:
    """What the automatic size estimate (``minifcrn.cellsize``) reads on the network's training
    images: its weights' ``cell_size_estimate`` record, else ``trained_cell_size``.  The automatic
    resize compares an image's estimate with this, so a bias the estimator has on one kind of
    image cancels."""
    size = getattr(net, "meta", {}).get("cell_size_estimate")
    return trained_cell_size(net) if size is None else float(size)


def rescale(plane: np.ndarray, shape) -> np.ndarray:
    """``plane`` resampled (bilinear, pixels as areas) to ``shape``."""
    factors = (shape[0] / plane.shape[0], shape[1] / plane.shape[1])
    return ndimage.zoom(np.asarray(plane, np.float32), factors, order=1, mode="nearest", grid_mode=True)


def cell_size_option(cell_size, source="count"):
    """``cell_size`` checked: "auto", None (also "none") or a positive number of pixels (also
    as text); anything else is a one-line InputError."""
    if cell_size is None or (isinstance(cell_size, str) and cell_size.strip().lower() == "none"):
        return None
    value = cell_size
    if isinstance(cell_size, str):
        if cell_size.strip().lower() == "auto":
            return "auto"
        try:
            value = float(cell_size)
        except ValueError:
            pass
    if not is_positive(value):
        raise InputError(f"{source}: cell size must be 'auto', 'none' or a positive number of pixels "
                         f"(the nucleus diameter), got {cell_size!r}")
    return float(value)


def _resize_factor(plane, net, cell_size, source):
    """(scale, size, where the size came from) for ``count``: the image is resized by
    scale = trained / size so its nuclei look as the network learnt them.  An estimated
    size is put in the trained size's units (the estimate times trained / ``trained_estimate``),
    so ``cell_size=`` that number gives the same count."""
    trained = trained_cell_size(net)
    if cell_size is None:
        return 1.0, trained, "trained"
    if cell_size == "auto":
        estimate = estimate_cell_size(plane)
        if estimate is None:
            return 1.0, trained, "trained"
        size = estimate * trained / trained_estimate(net)
        s = trained / size
        fits = 1 / MAX_RESIZE <= s <= MAX_RESIZE and min(plane.shape) * s >= net.divisor
        keep = 1 / AUTO_TOLERANCE <= s <= AUTO_TOLERANCE or not fits
        return (1.0 if keep else s), size, "estimated"
    s = trained / cell_size
    shape = (round(plane.shape[0] * s), round(plane.shape[1] * s))
    if not 1 / MAX_RESIZE <= s <= MAX_RESIZE or min(shape) < net.divisor:
        raise InputError(f"{source}: cell size {cell_size:g} px would resize the {plane.shape[1]}x"
                         f"{plane.shape[0]} image by {s:.3g} to {shape[1]}x{shape[0]} (the network learnt "
                         f"{trained:g} px cells; at most {MAX_RESIZE}x either way, at least "
                         f"{net.divisor} px a side); give the nucleus diameter in pixels")
    return s, cell_size, "given"


def channel_option(net: FCRN, channel):
    """(channel, where it came from) for ``count``: the user's, else the one the weights were
    trained with if it is not plain grey ("inverted" or a number), else "auto"."""
    if channel is not None:
        return channel, ("auto" if channel == "auto" else "given")
    trained = getattr(net, "meta", {}).get("channel", "grey")
    return (trained, "weights") if trained not in ("grey", "gray", "auto", None) else ("auto", "auto")


def count(image, model="fcrn-a", channel=None, roi=None, threshold=DEFAULT_THRESHOLD,
          min_distance=DEFAULT_MIN_DISTANCE, device="cpu", tile_size=None, cell_size="auto") -> CountResult:
    """Count and detect cells in ``image``: a path (PNG/TIFF/JPEG) or an array (H, W) or (H, W, 3);
    or a list of them, counted with the model loaded once: then a list of results.

    ``channel`` (``minifcrn.data.images``): "grey", "inverted", "auto" (inverted when the
    background is bright, as in H&E) or a channel number; None (the default) takes the one
    the weights were trained with when that was "inverted" or a number, else "auto".  The
    result says which it used (``channel``, ``channel_from``).

    ``tile_size``: run the network on tiles of this size (a multiple of 8) with exact
    seams (``inference.predict_density_tiled``); None picks 1024 for images of more than
    2048 x 2048 pixels and no tiling below; 0 never tiles.

    ``cell_size``: the typical nucleus diameter in ``image``, in pixels.  The image is
    resized by s = trained / cell_size so the network sees cells at the size it learnt
    (``trained_cell_size``, 9 pixels for the shipped weights); the density is resized
    back and divided by s^2, so the count is kept, and detections are found on the
    resized density and mapped back.  "auto" (the default) estimates the diameter from
    the image (``minifcrn.cellsize``) and resizes only if it is more than
    ``AUTO_TOLERANCE`` times off the trained size; None (or "none") never resizes.  To
    measure it yourself, draw lines across a few typical nuclei (e.g. Fiji's line tool)
    and average their lengths.  The result says which size was used and where it came from.
    """
    check_detection_args(threshold, min_distance)  # before the network runs
    cell_size = cell_size_option(cell_size)
    if isinstance(image, (list, tuple)):
        net = load_model(model, device)
        return [count(one, net, channel, roi, threshold, min_distance, device, tile_size, cell_size) for one in image]
    net = load_model(model, device)
    source = str(image) if isinstance(image, (str, Path)) else "image"
    pixels = read_pixels(image, memmap=True) if isinstance(image, (str, Path)) else image
    channel, channel_from = channel_option(net, channel)
    channel = pick_channel(pixels, channel, source)
    if isinstance(pixels, np.memmap) and channel == "grey":
        plane = pixels  # a huge grey TIFF stays on disk until tiled
    else:
        plane = to_plane(pixels, channel, source)
    roi = parse_roi(roi, plane.shape, source)
    s, size, size_from = _resize_factor(plane, net, cell_size, source)
    shape = (round(plane.shape[0] * s), round(plane.shape[1] * s))
    seen = rescale(plane, shape) if shape != plane.shape else plane
    density = predict(net, seen, source, device, tile_size)
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
    return CountResult(float(region.sum(dtype=np.float64)), density, detections, roi, source, net.arch, plane,
                       float(size), size_from, float(s), channel, channel_from, pixels)


# -- many images: one results table ------------------------------------------------------------

RESULTS = ("results.csv", "results.json")
LOCK = ".minifcrn-count.lock"


@dataclass
class CountRow:
    """One image of ``count_many``: a row of results.csv/.json (``error`` set, counts None, if
    it failed); ``files`` are what was written for it (not in the table)."""

    file: str
    count: float | None = None
    detections: int | None = None
    seconds: float | None = None
    model: str = ""
    weights: str = ""
    error: str = ""
    cell_size: float | None = None
    cell_size_from: str = ""
    channel: str = ""
    channel_from: str = ""
    roi: tuple | None = field(default=None, compare=False)
    points: list | None = field(default=None, compare=False, repr=False)  # detections: [x, y, score] each
    files: dict = field(default_factory=dict, compare=False)

    def table_row(self) -> dict:
        """The row as results.csv/.json hold it: an empty string where a value is missing."""
        return {k: "" if v is None else v for k, v in asdict(self).items() if k not in NOT_IN_TABLE}


NOT_IN_TABLE = ("roi", "points", "files")  # the detections have their own CSV per image
TABLE_FIELDS = [f.name for f in fields(CountRow) if f.name not in NOT_IN_TABLE]
REQUIRED_FIELDS = TABLE_FIELDS[:TABLE_FIELDS.index("error") + 1]  # tables written before the cell-size columns hold only these


def read_results(out) -> list[CountRow]:
    """The rows of ``out/results.csv``; a one-line InputError if it is not a minifcrn results table."""
    path = Path(out) / RESULTS[0]
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not set(REQUIRED_FIELDS) <= set(rows[0]):
        raise InputError(f"count: {path} is not a minifcrn results table; use another --out")
    kinds = {"count": float, "detections": int, "seconds": float, "cell_size": float}
    return [CountRow(**{k: (kinds[k](row[k]) if row[k] else None) if k in kinds else row[k]
                        for k in TABLE_FIELDS if k in row}) for row in rows]


def write_results(out, rows):
    """results.csv and results.json, each replaced atomically: an interruption loses nothing."""
    table = [row.table_row() for row in rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TABLE_FIELDS)
    writer.writeheader()
    writer.writerows(table)
    with atomic_write(Path(out) / RESULTS[0], "w") as f:
        f.write(buffer.getvalue())
    with atomic_write(Path(out) / RESULTS[1], "w") as f:
        json.dump(table, f, indent=1)


@contextlib.contextmanager
def writing_to(out):
    """Hold the folder's advisory lock while a batch writes its table, so that a second batch
    into the same folder is refused rather than have one table overwrite the other's rows."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock to take
        yield
        return
    with open(out / LOCK, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"count: another minifcrn count is writing into {out}; wait for it to finish "
                             "or give another --out") from None
        yield


def _write_outputs(path, result, out, figure) -> dict:
    """<name>_detections.csv and <name>_count.png (and <name>_figure.png) for one image; both
    pictures show the true centres too when an annotation file lies beside the image."""
    from minifcrn.data.annotations import read_points
    from minifcrn.data.samples import annotation_for
    from minifcrn.viz import render_count

    files = {"detections_csv": out / f"{path.stem}_detections.csv", "picture": out / f"{path.stem}_count.png"}
    with atomic_write(files["detections_csv"], "w") as f:
        f.write("x,y,score\n")
        np.savetxt(f, result.detections, fmt=["%d", "%d", "%.5f"], delimiter=",")
    annotation = annotation_for(path)
    truth = read_points(annotation, result.plane.shape) if annotation is not None else None
    render_count(result, files["picture"], truth=truth)
    if figure:
        from minifcrn.figures import count_figure

        files["figure"] = out / f"{path.stem}_figure.png"
        count_figure(result, files["figure"], truth)
    return {k: str(v) for k, v in files.items()}


def count_many(paths, model="fcrn-a", out=None, resume=False, figures=False, on_row=None, skipped=None,
               **options) -> list[CountRow]:
    """``count`` every image of ``paths`` (files, folders, glob patterns), loading the model once.

    A bad file gives a row with its ``error`` and the batch goes on.  With ``out`` (a folder),
    each image's detections CSV and picture (and, with ``figures``, its figure) are written
    there, and results.csv/.json are rewritten atomically after every image, under the folder's
    lock; ``resume`` keeps the rows already there (of the same weights) and counts only the
    images missing or failed.  ``on_row(row)`` is called as each row is done.  Annotation
    files and what is not an image are left out (``data.samples.not_counted``), and listed
    as (path, why) in ``skipped`` if it is a list.  ``options``
    are ``count``'s (channel, roi, threshold, min_distance, device, tile_size, cell_size).
    Returns the rows of the images counted in this call.
    """
    check_detection_args(options.get("threshold", DEFAULT_THRESHOLD), options.get("min_distance", DEFAULT_MIN_DISTANCE))
    options["cell_size"] = cell_size_option(options.get("cell_size", "auto"))
    check_out_folder(out, "count")
    if (resume or figures) and out is None:
        raise InputError(f"count: {'resume' if resume else 'figures'} needs out, the folder to write into")
    net = load_model(model, options.get("device", "cpu"))
    weights = weights_hash(net)
    with writing_to(out) if out is not None else contextlib.nullcontext():
        table = []
        if resume and (Path(out) / RESULTS[0]).is_file():
            table = read_results(out)
            others = sorted({r.weights for r in table} - {weights})
            if others:
                raise InputError(f"count: {Path(out) / RESULTS[0]} was written with other weights "
                                 f"({', '.join(others)}, now {weights}); use another --out")
            table = [r for r in table if not r.error]  # failed images are tried again
        done = {r.file for r in table}
        rows = []
        for path, problem in image_files(paths, skipped):
            if str(path) in done:
                continue
            t0 = time.perf_counter()
            row = CountRow(str(path), model=net.arch, weights=weights)
            try:
                if problem:
                    raise InputError(problem)
                result = count(path, net, **options)
                if out is not None:
                    row.files = _write_outputs(path, result, Path(out), figures)
                row.count, row.detections = round(result.count, 2), len(result.detections)
                row.cell_size, row.cell_size_from = round(result.cell_size, 2), result.cell_size_from
                row.channel, row.channel_from = str(result.channel), result.channel_from
                row.roi, row.points = result.roi, [[int(x), int(y), round(float(v), 5)] for x, y, v in result.detections]
                row.seconds = round(time.perf_counter() - t0, 3)
            except InputError as exc:
                row.error = str(exc)
            rows.append(row)
            if out is not None:
                table.append(row)
                write_results(out, table)
            if on_row is not None:
                on_row(row)
    return rows
