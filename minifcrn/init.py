"""Weight initialisation.

``orthogonal_array`` (and ``orthogonal_``, in place) follow Saxe et al. (2014):
a convolution weight (O, C, kh, kw) is viewed as the matrix (O, C*kh*kw); it is
filled with the Q factor of the QR decomposition of a Gaussian matrix, signs fixed by the diagonal of R so the
distribution is uniform (Haar), and scaled by ``gain``.  Rows are orthonormal
when O <= C*kh*kw, columns otherwise.
"""
from __future__ import annotations

import numpy as np

from minifcrn.autograd import Tensor
from minifcrn.backend import to_device


def orthogonal_array(shape, gain=1.0, rng=None, dtype=np.float32):
    """A NumPy array of ``shape`` whose 2-D view (shape[0], rest) is orthogonal."""
    rng = np.random.default_rng(rng)
    rows = shape[0]
    cols = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.where(np.diag(r) == 0, 1.0, np.diag(r)))
    if rows < cols:
        q = q.T
    return np.ascontiguousarray((gain * q).reshape(shape), dtype=dtype)


def orthogonal_(tensor: Tensor, gain=1.0, rng=None) -> Tensor:
    """Fill ``tensor`` in place with an orthogonal matrix (see ``orthogonal_array``)."""
    values = orthogonal_array(tensor.shape, gain, rng, tensor.dtype)
    tensor.data[...] = to_device(values, tensor.device)
    return tensor
