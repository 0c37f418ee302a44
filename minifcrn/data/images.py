"""Reading a user's image into one float32 plane, and per-image standardisation.

Formats: PNG (Pillow) and TIFF (tifffile); 8- or 16-bit integers or floats;
grey (H, W), RGB or RGBA (H, W, 3|4; alpha dropped) or channels-first TIFF
(3|4, H, W).  Channel handling (``channel``):

* ``"grey"`` (default; ``"gray"`` is the same): the mean of the colour channels.  On the VGG cells,
  whose nuclei are all in the blue channel, this is that channel over 3, which
  standardisation makes the same; on a grey image it is the image itself.
* an integer N: channel N only, as the paper used the nucleus channel of
  multi-channel fluorescence images.
* ``"inverted"``: the grey plane negated, for nuclei darker than their
  background (H&E or bright-field histology), which then look like the bright
  nuclei of fluorescence the networks learnt.
* ``"auto"``: ``"inverted"`` if the image has a bright background
  (``bright_background``), else ``"grey"``; ``pick_channel`` says which.

A chosen channel that holds almost nothing (its spread under ``NO_SIGNAL`` of
the liveliest channel's, e.g. the empty red channel of a blue-only image) is
refused, naming the channel that has the signal.

Standardisation subtracts the image's (or patch's) own mean and divides by
its standard deviation, the same in training and at inference.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from minifcrn.errors import InputError

NO_SIGNAL = 0.05        # a channel with less than this share of the liveliest channel's spread is empty
SAMPLE_PIXELS = 1 << 20  # the channel checks read at most about this many pixels (a regular subsample)
DARK_OBJECTS = 0.85     # upper / lower tail below this: a bright background (symmetric noise stays grey)


def read_image(path, channel="grey", memmap=False) -> np.ndarray:
    """The image at ``path`` as a float32 array (H, W), in its original intensity units.

    ``memmap=True``: an uncompressed single-page grey TIFF is returned memory-mapped
    in its own pixel type (``tifffile.memmap``), so a huge image is read only where,
    and when, it is used; everything downstream converts it block by block.
    """
    pixels = read_pixels(path, memmap)
    channel = pick_channel(pixels, channel, str(path))
    if isinstance(pixels, np.memmap) and channel == "grey":
        return pixels
    return to_plane(pixels, channel, source=str(path))


def read_pixels(path, memmap=False) -> np.ndarray:
    """The pixels of the image at ``path`` as stored (grey or colour, any pixel type); with
    ``memmap``, a grey uncompressed TIFF is memory-mapped (see ``read_image``)."""
    path = Path(path)
    if memmap and path.suffix.lower() in (".tif", ".tiff"):
        mapped = _memmap_tiff(path)
        if mapped is not None:
            return mapped
    return _decode(path)


def _subsample(a: np.ndarray) -> np.ndarray:
    """A regular subsample of about ``SAMPLE_PIXELS`` pixels of ``a`` (H, W[, C])."""
    step = max(1, int(np.sqrt(a.shape[0] * a.shape[1] / SAMPLE_PIXELS)))
    return np.asarray(a[::step, ::step], dtype=np.float32)


def bright_background(plane: np.ndarray) -> bool:
    """True if ``plane``'s objects are darker than its background (H&E, bright field): its
    upper tail (99th percentile above the median) is shorter than ``DARK_OBJECTS`` times its
    lower tail (median above the 1st percentile); fluorescence nuclei make the upper tail
    the longer one."""
    sample = _subsample(plane)
    if not np.isfinite(sample).all():
        return False  # NaN or inf: to_plane refuses the image in one line
    lo, mid, hi = np.percentile(sample, [1, 50, 99])
    return bool(hi - mid < DARK_OBJECTS * (mid - lo))


def pick_channel(array, channel="grey", source="image"):
    """The channel ``to_plane`` will take: ``channel`` itself ("gray" read as "grey"), or for
    "auto" "inverted" when the image has a bright background and "grey" otherwise."""
    channel = _spelled(channel)
    if channel != "auto":
        return channel
    a = _channels_last(np.asarray(array), source)
    grey = _subsample(a).mean(axis=-1) if a.ndim == 3 else _subsample(a)
    return "inverted" if bright_background(grey) else "grey"


def _memmap_tiff(path: Path):
    """The pixels of a grey, uncompressed, single-page TIFF as a read-only memory map, else None."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if len(tif.pages) != 1 or page.compression != 1 or page.samplesperpixel != 1 or \
                    not page.is_contiguous or page.dtype is None or page.dtype.kind not in "uif":
                return None
        mapped = tifffile.memmap(path, mode="r")
    except Exception:  # noqa: BLE001 - not mappable: the ordinary reader says what is wrong
        return None
    return mapped if mapped.ndim == 2 and mapped.size else None


def _decode(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{path}: {'a folder, not an image file' if path.is_dir() else 'no such file'}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            return _read_tiff(path)
        from PIL import Image
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "PA", "LA", "CMYK", "YCbCr", "1"):
                im = im.convert("RGB" if im.mode in ("P", "CMYK", "YCbCr") else "L")
            return np.asarray(im)
    except InputError:
        raise
    except Exception as exc:  # corrupt or unreadable file, whatever the decoder says
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: cannot read image ({reason})") from None


def _read_tiff(path: Path) -> np.ndarray:
    """The one image of a TIFF file; a multi-page stack is refused with how to take one page."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        pages = len(tif.pages)
        if pages > 1:
            raise InputError(f"{path}: a stack of {pages} pages (shape {tif.series[0].shape}); count one page "
                             f"at a time: save it as its own file (Fiji: Image > Duplicate; Python: tifffile.imwrite("
                             f"'page.tif', tifffile.imread('{path.name}', key=0)))")
        return np.asarray(tif.asarray())


def _spelled(channel):
    """"gray" is "grey"."""
    return "grey" if isinstance(channel, str) and channel.lower() == "gray" else channel


def to_plane(array, channel="grey", source="image") -> np.ndarray:
    """One float32 plane (H, W) from a grey, channels-last or channels-first array."""
    channel = pick_channel(array, channel, source)
    a = _channels_last(np.asarray(array), source)
    if a.ndim == 3:
        if channel in ("grey", "inverted"):
            a = a.astype(np.float32).mean(axis=-1)
        elif isinstance(channel, (int, np.integer)) and not isinstance(channel, bool) and 0 <= channel < 3:
            _check_signal(a, int(channel), source)
            a = a[..., int(channel)]
        else:
            raise InputError(f"{source}: channel must be 'grey', 'inverted', 'auto' or 0, 1, 2 for an RGB image, "
                             f"got {channel!r}")
    elif channel not in ("grey", "inverted", 0) or isinstance(channel, bool):
        raise InputError(f"{source}: channel {channel!r} asked of a grey image (one channel: 'grey', "
                         "'inverted', 'auto' or 0)")
    plane = a.astype(np.float32)
    if channel == "inverted":
        np.negative(plane, out=plane)
    if not np.isfinite(plane).all():
        raise InputError(f"{source}: image contains NaN or infinite values")
    return plane


def _check_signal(a: np.ndarray, channel: int, source: str):
    """Refuse a colour channel that holds almost nothing next to another."""
    spread = _subsample(a).std(axis=(0, 1))
    best = int(np.argmax(spread))
    if spread[channel] < NO_SIGNAL * spread[best]:
        raise InputError(f"{source}: channel {channel} holds almost no signal (standard deviation "
                         f"{spread[channel]:.3g} against {spread[best]:.3g} in channel {best}); count channel "
                         f"{best} (--channel {best}) or the mean of all (--channel grey)")


def _channels_last(a: np.ndarray, source: str) -> np.ndarray:
    """A grey (H, W) or colour (H, W, 3) view of a grey, RGB(A) or channels-first array."""
    if a.dtype.kind not in "uif" and a.dtype != bool:
        raise InputError(f"{source}: unsupported pixel type {a.dtype}")
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[-1] not in (3, 4):
        a = np.moveaxis(a, 0, -1)  # channels-first TIFF
    if a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]  # drop alpha
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3):
        raise InputError(f"{source}: expected a 2-D grey or RGB image, got an array of shape {a.shape} "
                         "(a stack? save or pass one page/plane)")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{source}: image is empty (shape {a.shape})")
    return a


def plane_statistics(plane: np.ndarray, source="image", rows=1024) -> tuple[float, float]:
    """Mean and standard deviation of a plane, in float64, a block of rows at a time
    (so a huge or memory-mapped image needs no full-size temporary); a constant plane
    is an InputError."""
    total, n = 0.0, plane.size
    for r in range(0, plane.shape[0], rows):
        total += float(np.sum(plane[r:r + rows], dtype=np.float64))
    mean = total / n
    if not np.isfinite(mean):
        raise InputError(f"{source}: image contains NaN or infinite values")
    squares = 0.0
    for r in range(0, plane.shape[0], rows):
        block = np.asarray(plane[r:r + rows], dtype=np.float64) - mean
        squares += float(np.einsum("ij,ij->", block, block))
    std = (squares / n) ** 0.5
    if not std > 1e-12 * max(1.0, abs(mean)):
        raise InputError(f"{source}: image is constant (value {mean:g}, standard deviation 0); nothing to count")
    return mean, std


def standardize(plane: np.ndarray, source="image", stats=None) -> np.ndarray:
    """(plane - mean) / std in float32, with the plane's own mean and std unless ``stats`` gives them."""
    mean, std = plane_statistics(plane, source) if stats is None else stats
    return ((np.asarray(plane, dtype=np.float32) - mean) / std).astype(np.float32)
