"""Files that must never be left half-written: weights, checkpoints, result tables.

Every writer goes through ``atomic_write``: write a temporary file in the same
folder, flush and fsync it, then rename it over the target (atomic on POSIX),
so a crash leaves either the old file or the new one, never a torn one.

Weights files are ``.npz``: one array per parameter under ``param/<name>``
plus a JSON string ``meta`` (architecture, density scale, channel handling and
how the weights were trained).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from minifcrn.errors import InputError, is_positive

WEIGHTS_FORMAT = "minifcrn-weights-1"
CHECKPOINT_FORMAT = "minifcrn-checkpoint-1"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file for writing; on success fsync it and rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_out_folder(out, command):
    """Refuse, before any work, an ``out`` that exists but is not a folder, or lies under a file."""
    if out is None:
        return
    if Path(out).exists() and not Path(out).is_dir():
        raise InputError(f"{command}: --out {out} is a file, not a folder")
    above = next((p for p in Path(out).absolute().parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise InputError(f"{command}: cannot make --out {out}: {above} is a file, not a folder")


def save_npz(path, arrays: dict, meta: dict):
    """Write ``arrays`` and the JSON-able ``meta`` to ``path`` atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(meta)), **arrays)
    with atomic_write(path) as f:
        f.write(buffer.getvalue())


def load_npz(path):
    """(arrays, meta) from a file written by ``save_npz``; a one-line InputError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays.pop("meta")))
    except Exception as exc:
        raise InputError(f"{path}: not a minifcrn weights/checkpoint file ({type(exc).__name__})") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}: not a minifcrn weights/checkpoint file (its meta is not a JSON object)")
    return arrays, meta


def save_weights(model, path, record=None, **meta):
    """The model's parameters and configuration (and an optional training record, and ``meta``:
    what counting needs to know of the training images, e.g. ``cell_size``) as ``.npz``."""
    arrays = {f"param/{k}": v for k, v in model.state_dict().items()}
    save_npz(path, arrays, {"format": WEIGHTS_FORMAT, **model.config(), **meta, "record": record or {}})


def load_weights(path):
    """A model built from a weights file (any architecture it names), and the file's meta."""
    from minifcrn.models import ARCHITECTURES, FCRN

    arrays, meta = load_npz(path)
    if meta.get("format") == CHECKPOINT_FORMAT:
        raise InputError(f"{path}: a training checkpoint, not a weights file; use the best.npz beside it")
    if meta.get("arch") not in ARCHITECTURES:
        raise InputError(f"{path}: unknown architecture {meta.get('arch')!r}")
    scale = meta.get("density_scale", 100.0)
    if not is_positive(scale):
        raise InputError(f"{path}: density_scale must be a positive number, got {scale!r}")
    model = FCRN(meta["arch"], meta.get("in_channels", 1), scale, initialize=False)
    state = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    try:
        model.load_state_dict(state)
    except ValueError as exc:
        raise InputError(f"{path}: weights do not fit {meta['arch']} ({exc})") from None
    bad = sorted(k for k, v in state.items() if v.dtype.kind == "f" and not np.isfinite(v).all())
    if bad:
        raise InputError(f"{path}: weights contain NaN or infinite values ({', '.join(bad[:3])})")
    return model, meta
