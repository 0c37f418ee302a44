"""Figures with axes and colour bars, drawn with matplotlib (the optional ``viz`` extra).

* ``count_figure``: the image, the estimated density, the ground-truth density
  (when annotations are given) and the detections, side by side.  Densities use
  cividis (made for colour-blind readers) on one shared scale, with colour bars
  in cells per pixel and the counts in the titles; detections and true centres
  are marked in the Okabe-Ito orange and sky blue, told apart by shape too.
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


def count_figure(result, path, truth=None, panel_inches=3.2):
    """Write ``path`` (PNG) for a ``CountResult``; ``truth``: the true centres (K, 2) as x, y, or None."""
    from minifcrn.data.annotations import SCALE, density_map

    panels = 3 if truth is None else 4
    fig = new_figure(panel_inches * panels + 0.6, panel_inches + 0.5)
    axes = fig.subplots(1, panels)
    plane = result.plane if result.plane is not None else result.density
    lo, hi = np.percentile(plane, [0.5, 99.5])
    axes[0].imshow(plane, cmap="gray", vmin=lo, vmax=hi)
    axes[0].set_title(f"image ({plane.shape[1]}x{plane.shape[0]})")
    densities = [("estimate", result.density, result.count)]
    if truth is not None:
        true_density = density_map(truth, result.density.shape) / SCALE
        densities.append(("ground truth", true_density, len(truth)))
    top = max(float(d.max()) for _, d, _ in densities) or 1.0
    for ax, (name, density, total) in zip(axes[1:], densities):
        shown = ax.imshow(density, cmap="cividis", vmin=min(0.0, float(density.min())), vmax=top)
        ax.set_title(f"{name}: {total:.1f} cells" if name == "estimate" else f"{name}: {total} cells")
        fig.colorbar(shown, ax=ax, shrink=0.8, label="cells per pixel")
    ax = axes[-1]
    ax.imshow(plane, cmap="gray", vmin=lo, vmax=hi)
    if truth is not None and len(truth):
        ax.scatter(truth[:, 0], truth[:, 1], s=18, facecolors="none", edgecolors=SKY_BLUE, linewidths=1,
                   label=f"true centres ({len(truth)})")
    if len(result.detections):
        ax.scatter(result.detections[:, 0], result.detections[:, 1], s=14, marker="+", c=ORANGE, linewidths=1,
                   label=f"detections ({len(result.detections)})")
    ax.set_title(f"{len(result.detections)} detections")
    if truth is not None or len(result.detections):
        ax.legend(loc="lower right", fontsize=7, framealpha=0.8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if result.roi is not None:
        from matplotlib.patches import Rectangle
        x0, y0, x1, y1 = result.roi
        for ax in axes:
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=ORANGE, lw=1))
    save_png(fig, path)


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
