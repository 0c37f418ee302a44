"""Pictures drawn with Pillow (no plotting library needed).

``render_count`` writes one PNG: the image with a red cross at every
detection (and the ROI outlined, and the true centres circled when they are
known), beside the estimated density map in the cividis colour map, which reads
the same for colour-blind viewers.
``render_panels`` writes labelled images side by side; ``render_inversion`` uses it
for the feature-inversion grid of ``minifcrn.invert``.
The figures with axes and colour bars (``minifcrn.figures``) use matplotlib.
"""
from __future__ import annotations

import numpy as np

# cividis sampled at 0, 1/4, 1/2, 3/4, 1 (Nunez et al. 2018), interpolated linearly
_CIVIDIS = np.array([[0, 34, 78], [62, 77, 110], [124, 123, 120], [187, 175, 111], [255, 233, 69]], float)


def colormap(values: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) of ``values`` scaled to [0, 1] by their own range."""
    v = np.asarray(values, np.float64)
    lo, hi = float(v.min()), float(v.max())
    t = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    pos = t * (len(_CIVIDIS) - 1)
    k = np.clip(pos.astype(int), 0, len(_CIVIDIS) - 2)
    f = (pos - k)[..., None]
    return ((1 - f) * _CIVIDIS[k] + f * _CIVIDIS[k + 1]).round().astype(np.uint8)


def grey_to_rgb(plane: np.ndarray) -> np.ndarray:
    """uint8 RGB of a plane, stretched between its 0.5 and 99.5 percentiles."""
    lo, hi = np.percentile(plane, [0.5, 99.5])
    t = np.clip((plane - lo) / (hi - lo) if hi > lo else np.zeros_like(plane), 0, 1)
    return np.repeat((t * 255).round().astype(np.uint8)[..., None], 3, axis=2)


def render_count(result, path, title=None, truth=None):
    """Write ``path``: the image with detections (and ``truth``, the true centres as x, y,
    circled) beside the density map, with the count (and the true count) above."""
    from PIL import Image, ImageDraw

    from minifcrn.io import atomic_write

    h, w = result.density.shape
    left = Image.fromarray(grey_to_rgb(result.plane))
    draw = ImageDraw.Draw(left)
    arm = max(2, min(h, w) // 100 + 2)
    for x, y, _ in result.detections:
        draw.line([(x - arm, y), (x + arm, y)], fill=(255, 40, 40))
        draw.line([(x, y - arm), (x, y + arm)], fill=(255, 40, 40))
    x0, y0, x1, y1 = result.roi if result.roi is not None else (0, 0, w, h)
    if result.roi is not None:
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 200, 0))
    true_count = None
    if truth is not None:
        truth = np.asarray(truth, float).reshape(-1, 2)
        for x, y in truth:
            draw.ellipse([x - arm - 1, y - arm - 1, x + arm + 1, y + arm + 1], outline=(86, 180, 233))
        true_count = int(((truth[:, 0] >= x0 - 0.5) & (truth[:, 0] < x1 - 0.5)
                          & (truth[:, 1] >= y0 - 0.5) & (truth[:, 1] < y1 - 0.5)).sum())
    right = Image.fromarray(colormap(result.density))
    header = 36
    canvas = Image.new("RGB", (2 * w + 8, h + header), (255, 255, 255))
    canvas.paste(left, (0, header))
    canvas.paste(right, (w + 8, header))
    truth_text = "" if true_count is None else f" (truth {true_count}, circled)"
    text = title or f"{result.count:.1f} cells{truth_text}, {len(result.detections)} detections ({result.model})"
    if result.cell_size:
        text += f"\nnuclei {result.cell_size:.1f} px ({result.cell_size_from}), channel {result.channel}"
    ImageDraw.Draw(canvas).text((4, 6), text, fill=(0, 0, 0))
    ImageDraw.Draw(canvas).text((w + 12, 6), f"density (max {result.density.max():.3f} cells/px)",
                                fill=(0, 0, 0))
    with atomic_write(path) as f:
        canvas.save(f, format="PNG")


def render_panels(panels, path, min_side=128):
    """Write ``path``: ``panels`` side by side, each a (title, note, image) with image a plane
    (stretched by its own percentiles) or uint8 RGB (H, W, 3), all of one size, zoomed by a
    whole factor to at least ``min_side`` pixels.  Returns the picture's size."""
    from PIL import Image, ImageDraw

    from minifcrn.io import atomic_write

    h, w = np.asarray(panels[0][2]).shape[:2]
    zoom = max(1, -(-min_side // min(h, w)))
    label = 30
    canvas = Image.new("RGB", (len(panels) * (w * zoom + 6) - 6, h * zoom + label), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, (title, note, image) in enumerate(panels):
        image = np.asarray(image)
        rgb = image if image.ndim == 3 else grey_to_rgb(image)
        tile = Image.fromarray(rgb).resize((w * zoom, h * zoom), Image.NEAREST)
        x = k * (w * zoom + 6)
        canvas.paste(tile, (x, label))
        draw.text((x + 2, 2), title, fill=(0, 0, 0))
        draw.text((x + 2, 15), note, fill=(80, 80, 80))
    with atomic_write(path) as f:
        canvas.save(f, format="PNG")
    return canvas.size


def render_inversion(plane, reconstructions, path, min_side=128):
    """Write ``path``: the input and each layer's reconstruction side by side (the paper's
    Figure 11), every panel stretched by its own percentiles, labelled with the layer,
    the final feature error ||phi(x) - phi0||^2 / ||phi0||^2 and the correlation with the input."""
    panels = [("input", "", plane)] + [
        (r.layer, f"err {r.feature_error:.2g}  r {r.correlation:.2f}", r.image) for r in reconstructions]
    return render_panels(panels, path, min_side)
