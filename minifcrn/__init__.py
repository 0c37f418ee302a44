"""minifcrn: a small, exact deep-learning engine on NumPy (CPU) and CuPy (GPU),
and the fully convolutional regression networks (FCRN) for cell counting
built on it (Xie, Noble & Zisserman, 2016)."""

__version__ = "0.1.0"

import os as _os

# Numba's parallel loops and BLAS each keep a pool of threads.  By default the
# OpenMP threads behind Numba spin for a while after each loop, taking the cores
# from BLAS's threads in the matrix product that follows (bench/notes/design-measurements.md has the
# measurement), so they are asked to sleep instead.  Only a default: a value set
# by the user wins, and it acts only if OpenMP is not loaded yet (Numba loads it
# at the first parallel loop).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from minifcrn import functional, init, models, nn, optim  # noqa: E402
from minifcrn.autograd import Tensor, is_grad_enabled, no_grad, tensor  # noqa: E402
from minifcrn.counting import CountResult, CountRow, count, count_many  # noqa: E402
from minifcrn.inference import load_model  # noqa: E402

__all__ = ["Tensor", "tensor", "no_grad", "is_grad_enabled", "functional", "nn", "optim", "init", "models",
           "count", "count_many", "CountResult", "CountRow", "load_model", "__version__"]
