"""Counting beyond one machine with Dask (the optional ``dask`` extra).

* ``density(array, model)``: the lazy density map (cells per pixel) of a huge 2-D
  image held as a Dask array (or a NumPy array / memory map, chunked here).  Each
  chunk runs the network grown by ``tile_margin`` pixels of its neighbours
  (``map_overlap``, no padding at the image's edges), with chunk edges on the
  8-pixel pooling grid and the whole image's mean and standard deviation, which
  is exactly ``inference.predict_density_tiled``: the result equals the untiled
  density up to float32 rounding.  ``count_array`` sums it.  Both take the image at the
  network's own nucleus size: if its nuclei are another size, resize it first by
  trained / actual diameter (``minifcrn.cellsize`` estimates the actual one from a crop).
* ``count_files(paths, model)``: ``minifcrn.count`` over many files as a Dask bag,
  one ``CountRow`` per file, the rows of ``minifcrn.count_many`` and of
  ``minifcrn count``'s results table; a bad file gives a row with its error instead
  of stopping the batch.

Both run on whatever scheduler is active: the local threads by default, or a
``dask.distributed`` cluster once a ``Client`` exists::

    from dask.distributed import Client, LocalCluster
    client = Client(LocalCluster(n_workers=4, threads_per_worker=2))   # or Client("scheduler:8786")
    total = minifcrn.dask.count_array(dask_image, "fcrn-a")

Workers load the model by name or path (once per process), so give a shipped
name or a path every worker can read.
"""
from __future__ import annotations

import functools

import numpy as np

from minifcrn.errors import InputError


def _require_dask():
    try:
        import dask.array as da
        import dask.bag as db
    except ImportError:
        raise InputError("minifcrn.dask needs Dask: pip install 'minifcrn[dask]'") from None
    return da, db


@functools.lru_cache(maxsize=4)
def _model(model, device):
    from minifcrn.inference import load_model
    return load_model(model, device)


def _grid_chunks(chunks, divisor):
    """Chunk sizes along one axis moved onto the pooling grid (multiples of ``divisor``, the last excepted)."""
    total, size = sum(chunks), max(chunks)
    size = max(divisor, size // divisor * divisor)
    return tuple([size] * (total // size) + ([total % size] if total % size else []))


def density(array, model="fcrn-a", chunk=1024, device="cpu"):
    """Lazy density (H, W), float32 cells per pixel, of a 2-D image array; see the module docstring."""
    da, _ = _require_dask()
    from minifcrn.inference import predict_density, tile_margin

    net = _model(model, device) if isinstance(model, str) else model
    image = array if isinstance(array, da.Array) else da.from_array(array, chunks=chunk)
    if image.ndim != 2:
        raise InputError(f"minifcrn.dask: the image must be a 2-D (grey) array, got shape {image.shape}")
    image = image.rechunk(tuple(_grid_chunks(c, net.divisor) for c in image.chunks))
    import dask

    mean, std = (float(v) for v in dask.compute(image.mean(dtype=np.float64), image.std(dtype=np.float64)))
    if not std > 1e-12 * max(1.0, abs(mean)):
        raise InputError(f"minifcrn.dask: image is constant (value {mean:g}); nothing to count")
    margin = tile_margin(net)

    def block_density(block):
        plane = ((np.asarray(block, np.float32) - mean) / std).astype(np.float32)
        return (predict_density(net, plane, device) / net.density_scale).astype(np.float32)

    return image.map_overlap(block_density, depth=margin, boundary="none", trim=True, dtype=np.float32,
                             meta=np.empty((0, 0), np.float32))


def count_array(array, model="fcrn-a", chunk=1024, device="cpu") -> float:
    """The number of cells in a huge 2-D image: the integral of ``density``."""
    return float(density(array, model, chunk, device).sum(dtype=np.float64).compute())


def count_files(paths, model="fcrn-a", channel="grey", device="cpu", partition_size=8, cell_size="auto") -> list:
    """Count every file (a Dask bag of paths); one ``minifcrn.CountRow`` per file, in order,
    each with the nucleus size it used (``cell_size`` as in ``minifcrn.count``)."""
    _, db = _require_dask()
    if not isinstance(model, str):
        raise InputError("minifcrn.dask.count_files: give the model as a shipped name or a weights path")
    return db.from_sequence([str(p) for p in paths], partition_size=partition_size).map_partitions(
        _count_partition, model=model, channel=channel, device=device, cell_size=cell_size).compute()


def _count_partition(paths, model, channel, device, cell_size):
    """``count_many`` over one partition: the model loaded and its weights hashed once per partition."""
    from minifcrn.counting import count_many

    return count_many(list(paths), _model(model, device), channel=channel, device=device, cell_size=cell_size)
