"""Running a trained FCRN on an image: the model loaded, its density map, whole or tile by tile.

Training (validation) and counting both call ``predict_density``; counting goes
through ``predict``, which tiles an image too large for one pass with exact seams.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from minifcrn.autograd import no_grad, tensor
from minifcrn.backend import to_device
from minifcrn.data.images import plane_statistics, standardize
from minifcrn.errors import InputError
from minifcrn.io import load_weights
from minifcrn.models import FCRN, receptive_field

ASSETS = Path(__file__).parent / "assets"
SHIPPED = {"fcrn-a": ASSETS / "fcrn-a.npz", "fcrn-b": ASSETS / "fcrn-b.npz"}
AUTO_TILE = 1024          # tile size chosen for images larger than AUTO_TILE_ABOVE pixels
AUTO_TILE_ABOVE = 2048 * 2048


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
    return net.to(device)


def weights_hash(net: FCRN) -> str:
    """The first 12 hex digits of the SHA-256 of the model's architecture and weights."""
    import hashlib

    h = hashlib.sha256(net.arch.encode())
    for name, value in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(to_device(value, "cpu"), dtype=np.float32).tobytes())
    return h.hexdigest()[:12]


def predict_density(model, plane, device="cpu") -> np.ndarray:
    """The model's density (H, W) for one standardised plane, in the model's scaled units."""
    with no_grad():
        x = tensor(plane[None, None], device=device, dtype=np.float32)
        return model(x).numpy()[0, 0]


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


def predict(net, plane, source="image", device="cpu", tile_size=None) -> np.ndarray:
    """The network's density (H, W, the model's units) for a whole plane, standardised with its own
    statistics; ``tile_size`` None tiles by 1024 above 2048 x 2048 pixels, 0 never, N by N."""
    stats = plane_statistics(plane, source)
    if tile_size is None:
        tile_size = AUTO_TILE if plane.size > AUTO_TILE_ABOVE else 0
    elif tile_size:
        check_tile_size(net, tile_size, source)  # also when the image fits in one tile
    if tile_size and (tile_size < plane.shape[0] or tile_size < plane.shape[1]):
        return predict_density_tiled(net, plane, stats, int(tile_size), device, source)
    return predict_density(net, standardize(plane, source, stats), device)
