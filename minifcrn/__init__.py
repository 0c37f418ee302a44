"""minifcrn: a small, exact deep-learning engine on NumPy (CPU) and CuPy (GPU),
and the fully convolutional regression networks (FCRN) for cell counting
built on it (Xie, Noble & Zisserman, 2016)."""

__version__ = "0.1.0"

import os as _os

# Numba's parallel loops and BLAS each keep a pool of threads.  By default the
# OpenMP threads behind Numba spin for a while after each loop, taking the cores
# from BLAS's threads in the matrix product that follows: on 2 cores an FCRN-A
# training step took ~0.8 s that way and ~0.5 s with the OpenMP threads sleeping.
# Only a default: a value set by the user wins, and it acts only if OpenMP is not
# loaded yet (Numba loads it at the first parallel loop).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from minifcrn.autograd import Tensor, tensor, no_grad, is_grad_enabled  # noqa: E402
from minifcrn import functional, nn, optim, init, models  # noqa: E402

__all__ = ["Tensor", "tensor", "no_grad", "is_grad_enabled", "functional", "nn", "optim", "init", "models",
           "__version__"]
