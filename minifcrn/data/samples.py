"""Annotated images and the random, augmented training patches cut from them.

A folder of annotated images pairs each image with its annotation by name:
``NNNcell.png`` with ``NNNdots.png`` (the VGG and MBM sets), or ``name.png``
(``.tif``) with ``name.csv`` or ``name_dots.png``.

Augmentation (paper section 3.2): a random patch, rotated by a small random
angle and flipped at random.  The rotation resamples the image (bilinear) and
moves the points by the same rotation, and the density is rebuilt from the
moved points, so a patch's count is exactly the number of its points
(Gaussian tails that cross the patch border excepted).  Each patch is then
standardised by its own mean and standard deviation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from minifcrn.data.annotations import density_map, read_points
from minifcrn.data.images import read_image
from minifcrn.errors import InputError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
OUTPUT_SUFFIXES = ("_count", "_figure")  # pictures ``minifcrn count --out`` writes beside its table
MARGIN = 8  # pixels of Gaussian tail (4 sigma) kept around a patch when its density is built


@dataclass
class Sample:
    name: str
    image: np.ndarray   # float32 (H, W), not standardised
    points: np.ndarray  # float (K, 2) as (x, y)

    @property
    def count(self) -> int:
        return len(self.points)


def annotation_for(image_path: Path):
    """The annotation file of ``image_path``, or None."""
    stem, parent = image_path.stem, image_path.parent
    candidates = []
    if stem.endswith("cell"):
        candidates.append(parent / (stem[:-4] + "dots.png"))
    candidates += [parent / (stem + ".csv"), parent / (stem + "_dots.png")]
    return next((c for c in candidates if c.is_file()), None)


def _is_annotation_image(path: Path) -> bool:
    """``NNNdots.png`` beside ``NNNcell.*``, or ``name_dots.png`` beside ``name.*``."""
    stem = path.stem
    partner = stem[:-5] if stem.endswith("_dots") else stem[:-4] + "cell" if stem.endswith("dots") else None
    return partner is not None and any((path.parent / (partner + suffix)).is_file()
                                       for suffix in IMAGE_SUFFIXES + tuple(x.upper() for x in IMAGE_SUFFIXES))


def not_counted(path: Path, named=False):
    """Why ``path`` is not an image to count, or None: one rule for files met in folders and
    glob patterns (``named=False``) and files named one by one, where only annotations are
    left out (anything else named is tried, and a file that is no image says so)."""
    if _is_annotation_image(path):
        return "annotation"
    if named:
        return None
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return "not an image" if path.suffix.lower() != ".csv" else "table"
    if path.stem.endswith(OUTPUT_SUFFIXES):
        return "minifcrn picture"
    return None


def image_files(inputs, skipped=None):
    """(path, problem) for every image named in ``inputs``: files, folders and glob patterns;
    problem is None or says why an input yields nothing.  Files ``not_counted`` are left out
    and, if ``skipped`` is a list, appended to it as (path, why)."""
    import glob

    def kept(paths, named=False):
        for p in paths:
            why = not_counted(p, named)
            if why is None:
                yield p
            elif skipped is not None:
                skipped.append((p, why))

    for item in inputs:
        path = Path(item)
        if not path.exists() and glob.has_magic(str(item)):
            matches = [Path(m) for m in sorted(glob.glob(str(item))) if not Path(m).is_dir()]
            if not matches:
                yield path, f"{item}: no file matches this pattern"
            for match in kept(matches):
                yield match, None
        elif path.is_dir():
            files = list(kept([p for p in sorted(path.iterdir()) if p.is_file()]))
            if not files:
                yield path, f"{path}: folder holds no images to count (PNG, TIFF or JPEG)"
            for p in files:
                yield p, None
        else:
            for p in kept([path], named=True):
                yield p, None


def find_pairs(folder):
    """Sorted (image, annotation) paths of every annotated image in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    pairs = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.stem.endswith(("dots", "_dots")):
            continue
        ann = annotation_for(path)
        if ann is not None:
            pairs.append((path, ann))
    if not pairs:
        raise InputError(f"{folder}: no annotated images (expected NNNcell.png + NNNdots.png, "
                         "or name.png + name.csv)")
    return pairs


def load_samples(folder, channel="grey", names=None):
    """Every annotated image of ``folder`` (or only those whose image stem is in ``names``)."""
    samples = []
    for image_path, ann_path in find_pairs(folder):
        if names is not None and image_path.stem not in names:
            continue
        image = read_image(image_path, channel)
        points = read_points(ann_path, image.shape)
        if len(points) and image.min() == image.max():  # a blank image may teach "no cells", not these
            raise InputError(f"{image_path}: image is constant (value {image.flat[0]:g}) but {ann_path.name} "
                             f"marks {len(points)} cells")
        samples.append(Sample(image_path.stem, image, points))
    return samples


def standardize_patch(patch: np.ndarray) -> np.ndarray:
    """(patch - mean) / std, a constant patch becoming zeros (training never stops on one)."""
    std = patch.std()
    return ((patch - patch.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def random_patch(sample: Sample, size: int, rng: np.random.Generator, max_angle=10.0, flip=True, max_zoom=0.0):
    """A standardised image patch (size, size) and its density target, randomly rotated, flipped
    and, with ``max_zoom`` z, zoomed: each patch pixel spans s = e^U(-z, z) image pixels, so the
    cells look 1/s times their size while each keeps a sigma-2 Gaussian of unit mass in the target."""
    h, w = sample.image.shape
    if size > min(h, w):
        raise InputError(f"{sample.name}: patch size {size} is larger than the {w}x{h} image")
    theta = np.deg2rad(rng.uniform(-max_angle, max_angle)) if max_angle else 0.0
    s = np.exp(rng.uniform(-max_zoom, max_zoom)) if max_zoom else 1.0
    cos, sin = np.cos(theta), np.sin(theta)
    reach = 0.5 * (size - 1) * s * (abs(cos) + abs(sin))  # half-extent of the rotated patch in the image
    if 2 * reach + 1 > min(h, w):  # too big to fit: no rotation, and at most the zoom that fits
        s = min(s, (min(h, w) - 1) / max(size - 1, 1))
        cos, sin, reach = 1.0, 0.0, 0.5 * (size - 1) * s
    cy, cx = rng.uniform(reach, h - 1 - reach), rng.uniform(reach, w - 1 - reach)
    # patch pixel (r, c) samples the image at centre + s R (r - m, c - m), m the patch centre
    m = 0.5 * (size - 1)
    rot = np.array([[cos, -sin], [sin, cos]])
    offset = np.array([cy, cx]) - s * rot @ np.array([m, m])
    patch = ndimage.affine_transform(sample.image, s * rot, offset=offset, output_shape=(size, size),
                                     order=1, mode="nearest")
    # points move by the inverse map: p_patch = R^T (p_image - offset) / s, in (row, col)
    rc = (sample.points[:, ::-1] - offset) @ rot / s
    keep = ((rc >= -MARGIN) & (rc <= size - 1 + MARGIN)).all(axis=1)
    canvas = density_map(rc[keep][:, ::-1] + MARGIN, (size + 2 * MARGIN, size + 2 * MARGIN))
    target = canvas[MARGIN:MARGIN + size, MARGIN:MARGIN + size]
    if flip and rng.random() < 0.5:
        patch, target = patch[:, ::-1], target[:, ::-1]
    if flip and rng.random() < 0.5:
        patch, target = patch[::-1], target[::-1]
    return standardize_patch(patch), np.ascontiguousarray(target)
