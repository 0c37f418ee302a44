"""The typical nucleus diameter of an image, found from the image itself.

A bright blob of radius r answers most strongly to the scale-normalised
Laplacian of Gaussian -s^2 (LoG_s * I) at s proportional to r (Lindeberg's
scale selection).  For the image as a whole we take the blob energy

    E(s) = mean over pixels of max(-s^2 (LoG_s * z), 0)^2,     z = standardised image,

over log-spaced scales s, and its maximum s* (refined by a parabola through
the three scales around it, in log s).  Only the positive part (bright,
blob-like structure) counts, so dark gaps between nuclei do not.  The
diameter is ``DIAMETER_PER_SIGMA`` s*, the ratio measured on generated
images magnified to known sizes (``bench/cell_size.py estimator``).

Large scales are computed on a block-averaged copy of the image (``_pyramid``):
averaging k x k blocks blurs by a variance (k^2 - 1) / 12 px^2, under 1% of s^2
at the factor chosen, and keeps every scale about as cheap as the smallest.
A huge image is measured on its central ``MAX_SIDE`` x ``MAX_SIDE`` crop.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

SIGMAS = np.geomspace(1.0, 40.0, 33)  # scales tried, pixels: nucleus diameters about 2-90 px
DIAMETER_PER_SIGMA = 2.2              # nucleus diameter / s*, measured (see the module docstring)
MAX_SIDE = 1024                       # the estimate reads at most this central crop
SAMPLES_PER_SIGMA = 3.0               # block averaging keeps s at least this many (coarse) pixels


def blob_energy(plane: np.ndarray, sigmas=SIGMAS) -> np.ndarray:
    """E(s) of the module docstring for each s of ``sigmas`` (the plane standardised first)."""
    z = _central(np.asarray(plane)).astype(np.float64)
    z = (z - z.mean()) / max(z.std(), 1e-12)
    energy = np.empty(len(sigmas))
    for i, s in enumerate(sigmas):
        k = max(1, int(s // SAMPLES_PER_SIGMA))
        response = -(s / k) ** 2 * ndimage.gaussian_laplace(_pyramid(z, k), s / k, mode="reflect")
        energy[i] = np.mean(np.maximum(response, 0.0) ** 2)
    return energy


def estimate_cell_size(plane: np.ndarray) -> float | None:
    """The typical bright-nucleus diameter of ``plane`` in pixels; None for a constant plane
    (or one with values that are not finite: the counting that follows says what is wrong).

    The plane must show nuclei brighter than their background (invert H&E first)."""
    a = np.asarray(plane)
    crop = _central(a).astype(np.float64)
    if a.size == 0 or not np.isfinite(crop).all() or not np.ptp(crop) > 0:
        return None
    energy = blob_energy(a)
    i = int(np.argmax(energy))
    log_s = np.log(SIGMAS)
    if 0 < i < len(SIGMAS) - 1:  # vertex of the parabola through the three log-scales around the peak
        y0, y1, y2 = energy[i - 1:i + 2]
        curvature = y0 - 2 * y1 + y2
        step = 0.5 * (y0 - y2) / curvature if curvature < 0 else 0.0
        best = log_s[i] + step * (log_s[1] - log_s[0])
    else:
        best = log_s[i]
    return float(DIAMETER_PER_SIGMA * np.exp(best))


def _central(a: np.ndarray) -> np.ndarray:
    """The central MAX_SIDE x MAX_SIDE crop (or all of a smaller plane)."""
    h, w = a.shape
    y, x = max(0, (h - MAX_SIDE) // 2), max(0, (w - MAX_SIDE) // 2)
    return a[y:y + MAX_SIDE, x:x + MAX_SIDE]


def _pyramid(z: np.ndarray, k: int) -> np.ndarray:
    """Means of k x k blocks of ``z`` (the ragged edge dropped)."""
    if k == 1:
        return z
    h, w = (z.shape[0] // k) * k, (z.shape[1] // k) * k
    if h == 0 or w == 0:
        return z
    return z[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3))
