"""Scoring counts and detections against dot annotations.

Per image: the absolute count error |estimate - truth| and the relative error
|estimate - truth| / truth.  Detections are matched one-to-one to the true
centres by the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``)
on their distances, a pair counting only when closer than ``radius`` pixels;
precision = matches / detections, recall = matches / true cells, F1 their
harmonic mean (pooled over all images).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from minifcrn.counting import (DEFAULT_MIN_DISTANCE, DEFAULT_THRESHOLD, cell_size_option, check_detection_args,
                               count)
from minifcrn.data.annotations import read_points
from minifcrn.data.samples import find_pairs
from minifcrn.errors import InputError, is_positive
from minifcrn.inference import load_model


def match_detections(detected, truth, radius=5.0) -> int:
    """Number of one-to-one pairs (detected (K, 2+), truth (M, 2), both x, y) closer than ``radius``."""
    if len(detected) == 0 or len(truth) == 0:
        return 0
    d = cdist(np.asarray(detected)[:, :2], np.asarray(truth)[:, :2])
    cost = np.where(d <= radius, d, 1e6)
    rows, cols = linear_sum_assignment(cost)
    return int((d[rows, cols] <= radius).sum())


def f1_scores(matched, detected, truth):
    precision = matched / detected if detected else 0.0
    recall = matched / truth if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


PROTOCOLS = ("vgg",)


def protocol_images(folder, protocol):
    """The image names a protocol tests on ("vgg": VGG images 101-200, see ``minifcrn.protocol``),
    checked to be in ``folder``; None for no protocol (every annotated image)."""
    from minifcrn.protocol import vgg_test_names

    if protocol is None:
        return None
    if protocol not in PROTOCOLS:
        raise InputError(f"evaluate: unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    names = set(vgg_test_names())
    missing = sorted(names - {image.stem for image, _ in find_pairs(folder)})
    if missing:
        raise InputError(f"{folder}: the vgg protocol tests on 101cell.png-200cell.png with their dots; "
                         f"{len(missing)} missing (first: {missing[0]})")
    return names


def evaluate_folder(folder, model="fcrn-a", channel=None, radius=5.0, threshold=DEFAULT_THRESHOLD,
                    min_distance=DEFAULT_MIN_DISTANCE, device="cpu", protocol=None, tile_size=None,
                    cell_size="auto", on_row=None) -> dict:
    """Per-image and pooled scores of ``model`` on every annotated image of ``folder`` (a folder
    or a list of them, pooled), or on the test images of ``protocol`` ("vgg": images 101-200
    of the VGG cells, as Table 1); ``channel``, ``tile_size`` and ``cell_size`` as in
    ``minifcrn.count``; each image's row says the nucleus size and channel it was counted
    at.  ``on_row(row)`` is called as each image is done."""
    if not is_positive(radius):
        raise InputError(f"evaluate: the match radius must be a positive number of pixels, got {radius!r}")
    check_detection_args(threshold, min_distance)
    cell_size = cell_size_option(cell_size, "evaluate")
    folders = [folder] if isinstance(folder, (str, Path)) else list(folder)
    if not folders:
        raise InputError("evaluate: give at least one folder of annotated images")
    chosen = [(image, annotation) for f in folders for names in [protocol_images(f, protocol)]
              for image, annotation in find_pairs(f) if names is None or image.stem in names]
    net = load_model(model, device)
    rows, totals = [], np.zeros(3)
    for image, annotation in chosen:
        r = count(image, net, channel, None, threshold, min_distance, device, tile_size, cell_size)
        truth = read_points(annotation, r.plane.shape)
        matched = match_detections(r.detections, truth, radius)
        totals += (matched, len(r.detections), len(truth))
        rows.append({"image": image.stem, "true": len(truth), "estimate": round(r.count, 3),
                     "abs_error": abs(r.count - len(truth)), "detections": len(r.detections), "matched": matched,
                     "cell_size": round(r.cell_size, 2), "cell_size_from": r.cell_size_from,
                     "channel": r.channel, "channel_from": r.channel_from, "folder": str(image.parent)})
        if on_row is not None:
            on_row(rows[-1])
    errors = np.array([r["abs_error"] for r in rows])
    truth = np.array([r["true"] for r in rows], float)
    precision, recall, f1 = f1_scores(*totals)
    summary = {"images": len(rows), "mae": float(errors.mean()),
               "mean_relative_error": float(np.mean(errors / np.maximum(truth, 1))),
               "precision": precision, "recall": recall, "f1": f1, "radius": radius,
               "threshold": threshold, "min_distance": min_distance, "protocol": protocol}
    return {"summary": summary, "images": rows}
