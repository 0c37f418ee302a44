"""minifcrn: a small, exact deep-learning engine on NumPy (CPU) and CuPy (GPU),
and the fully convolutional regression networks (FCRN) for cell counting
built on it (Xie, Noble & Zisserman, 2016)."""

__version__ = "0.1.0"

from minifcrn.autograd import Tensor, tensor, no_grad, is_grad_enabled  # noqa: E402
from minifcrn import functional, nn, optim, init, models  # noqa: E402

__all__ = ["Tensor", "tensor", "no_grad", "is_grad_enabled", "functional", "nn", "optim", "init", "models",
           "__version__"]
