"""Figures with axes and colour bars, drawn with matplotlib (the optional ``viz`` extra).

* ``count_figure``: the image as stored (its own colours), the estimated density,
  the ground-truth density (when annotations are given) and the detections, side
  by side, all over the region counted (the ROI, if one was given).  Densities use
  cividis (made for colour-blind readers), each panel on its own scale with its
  own colour bar in cells per pixel (an estimate far fainter than the truth still
  shows its shape), the counts in the titles; detections and true centres are
  marked in the Okabe-Ito orange and sky blue, told apart by shape too.  When the
  count and the number of detections differ by half or more, a line says why they can.
* ``training_curves``: the mean training loss and the validation MAE per epoch.

Without matplotlib each raises ``MissingMatplotlib``, whose one-line message
says how to install it; nothing else in minifcrn needs it.
"""
from __future__ import annotations

import io

import numpy as np

from minifcrn.errors import InputError

ORANGE, SKY_BLUE = "#E69F00", "#56B4E9"  # Okabe & Ito (2008), distinct under every colour-vision deficiency
INSTALL = "pip install 'minifcrn[viz]' (or pip install matplotlib)"


class MissingMatplotlib(InputError):
    """matplotlib is not installed; the message says how to install it."""


def matplotlib_or_note() -> bool:
    """Whether matplotlib is there; if not, say once on stderr how to install it (the rest goes on)."""
    import importlib.util
    import sys

    if importlib.util.find_spec("matplotlib") is None:
        print(f"minifcrn: note: figures need matplotlib: {INSTALL}; going on without them", file=sys.stderr)
        return False
    return True


def new_figure(width, height):
    """A matplotlib Figure of ``width`` x ``height`` inches at 100 dpi, drawn off-screen (no pyplot state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingMatplotlib(f"figures need matplotlib: {INSTALL}") from None
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path):
    """Write ``fig`` to ``path`` as a PNG, atomically."""
    from minifcrn.io import atomic_write

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    with atomic_write(path) as f:
        f.write(buffer.getvalue())


DISAGREE = 1.5  # count / detections beyond this (either way) gets the line that explains it


def shown_image(result) -> tuple[np.ndarray, dict]:
    """The image as the user knows it (``result.pixels``: colour kept, not inverted), ready for
    imshow, with its imshow options; the counted plane when the pixels are not at hand."""
    pixels = result.pixels if result.pixels is not None else result.plane
    a = np.asarray(pixels)
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[-1] not in (3, 4):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3:
        a = a[..., :3].astype(np.float32)
        lo, hi = (0.0, 255.0) if np.asarray(pixels).dtype == np.uint8 else np.percentile(a, [0.5, 99.5])
        return np.clip((a - lo) / (hi - lo if hi > lo else 1.0), 0, 1), {}
    lo, hi = np.percentile(a, [0.5, 99.5])
    return a, {"cmap": "gray", "vmin": lo, "vmax": hi}


def count_figure(result, path, truth=None, panel_inches=3.2):
    """Write ``path`` (PNG) for a ``CountResult``; ``truth``: the true centres (K, 2) as x, y, or None.
    Returns what the panels show: their titles, and the (low, high) of each density's colour scale."""
    from minifcrn.data.annotations import SCALE, density_map

    panels = 3 if truth is None else 4
    fig = new_figure(panel_inches * panels + 0.6, panel_inches + 0.5)
    axes = fig.subplots(1, panels)
    h, w = result.density.shape
    x0, y0, x1, y1 = result.roi if result.roi is not None else (0, 0, w, h)
    region = (slice(y0, y1), slice(x0, x1))
    image, style = shown_image(result)
    image = image[region]
    axes[0].imshow(image, **style)
    where = f" [ROI {x0},{y0},{x1},{y1}]" if result.roi is not None else ""
    size = f", nuclei {result.cell_size:.1f} px ({result.cell_size_from})" if result.cell_size else ""
    axes[0].set_title(f"image ({w}x{h}){where}{size}", fontsize=9)
    densities = [("estimate", result.density[region], f"{result.count:.1f}")]
    if truth is not None:
        truth = np.asarray(truth, float).reshape(-1, 2)
        true_density = density_map(truth, (h, w)) / SCALE
        truth = truth[(truth[:, 0] >= x0 - 0.5) & (truth[:, 0] < x1 - 0.5)
                      & (truth[:, 1] >= y0 - 0.5) & (truth[:, 1] < y1 - 0.5)]
        densities.append(("ground truth", true_density[region], f"{len(truth)}"))
    scales = []
    for ax, (name, density, total) in zip(axes[1:], densities):
        scales.append((min(0.0, float(density.min())), float(density.max()) or 1.0))
        shown = ax.imshow(density, cmap="cividis", vmin=scales[-1][0], vmax=scales[-1][1])
        ax.set_title(f"{name}: {total} cells", fontsize=9)
        fig.colorbar(shown, ax=ax, shrink=0.8, label="cells per pixel")
    ax = axes[-1]
    ax.imshow(image, **style)
    if truth is not None and len(truth):
        ax.scatter(truth[:, 0] - x0, truth[:, 1] - y0, s=18, facecolors="none", edgecolors=SKY_BLUE, linewidths=1,
                   label=f"true centres ({len(truth)})")
    found = result.detections
    if len(found):
        ax.scatter(found[:, 0] - x0, found[:, 1] - y0, s=14, marker="+", c=ORANGE, linewidths=1,
                   label=f"detections ({len(found)})")
    ax.set_title(f"{len(found)} detections", fontsize=9)
    if truth is not None or len(found):
        ax.legend(loc="lower right", fontsize=7, framealpha=0.8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    ratio = (result.count + 1) / (len(found) + 1)
    if not 1 / DISAGREE <= ratio <= DISAGREE:
        fig.suptitle(f"The count ({result.count:.1f}) is the density's integral; detections ({len(found)}) are its "
                     "peaks. They differ when cells touch (one peak for several) or when the density is spread "
                     "thin (peaks under --threshold).", fontsize=7, wrap=True)
    save_png(fig, path)
    return {"titles": [ax.get_title() for ax in axes], "scales": scales,
            "explained": fig.get_suptitle() != ""}


def training_curves(history, path):
    """Write ``path`` (PNG): training loss (log scale) and validation MAE against the epoch."""
    fig = new_figure(8, 3.2)
    loss_ax, mae_ax = fig.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    whole = [row["epoch"] for row in history if row.get("phase") == "whole"]
    loss_ax.plot(epochs, [row["train_loss"] for row in history], color=SKY_BLUE, marker=".")
    loss_ax.set_yscale("log")
    loss_ax.set(xlabel="epoch", ylabel="mean training loss", title="training loss")
    maes = [float(row["val_mae"]) for row in history]
    mae_ax.plot(epochs, maes, color=ORANGE, marker=".")
    if np.isfinite(maes).any():
        k = int(np.nanargmin(maes))
        mae_ax.annotate(f"best {maes[k]:.3f}", (epochs[k], maes[k]), textcoords="offset points", xytext=(0, 8),
                        ha="center", fontsize=8)
        mae_ax.set_ylim(0, min(max(np.nanmax(maes), 1e-3), 5 * np.nanmin(maes) + 1) * 1.1)
    mae_ax.set(xlabel="epoch", ylabel="cells per image", title="validation MAE")
    for ax in (loss_ax, mae_ax):
        if whole:
            ax.axvspan(whole[0] - 0.5, whole[-1] + 0.5, color="0.92", zorder=0, label="whole images")
        ax.grid(alpha=0.3)
    if whole:
        mae_ax.legend(loc="upper right", fontsize=7)
    save_png(fig, path)
