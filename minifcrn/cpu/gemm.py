"""BLAS ``gemm`` called from Numba loops, for the CPU convolution.

NumPy's ``matmul`` multiplies whole arrays.  The CPU convolution needs more:
thousands of products of *shifted windows* of one buffer (a row stride larger
than the row), accumulated into an output (``beta = 1``), with no Python in
between.  SciPy exports the Fortran BLAS it was built with as
``scipy.linalg.cython_blas``; Numba calls it through a ctypes function pointer
passed as an argument (so the compiled loops can be cached).

Fortran BLAS is column-major.  A row-major (r, c) matrix with row stride ld is
the column-major (c, r) matrix with leading dimension ld, its transpose, so the
row-major product C = op(A) @ op(B) is the column-major C^T = op(B)^T @ op(A)^T:
``gemm_rowmajor`` swaps the operands and keeps the transpose flags.
"""
from __future__ import annotations

import ctypes

import numpy as np
from numba.extending import get_cython_function_address

from minifcrn.backend.jit import njit

_GEMM_TYPE = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 13)  # transa, transb, m, n, k, alpha, a, lda, ...
_GEMM = {np.dtype(dtype): _GEMM_TYPE(get_cython_function_address("scipy.linalg.cython_blas", name))
         for dtype, name in ((np.float32, "sgemm"), (np.float64, "dgemm"))}

N, T = ord("N"), ord("T")  # transpose flags: op(A) = A or A^T


def gemm_for(dtype):
    """The BLAS gemm for arrays of ``dtype`` (float32 or float64), or None."""
    return _GEMM.get(np.dtype(dtype))


@njit()
def gemm_rowmajor(gemm, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """c[:m, :n] = alpha * op(a) @ op(b) + beta * c for row-major matrices stored from the
    start of the 1-D buffers a, b, c with row strides lda, ldb, ldc (in elements)."""
    flags = np.array([trans_b, trans_a], dtype=np.uint8)
    sizes = np.array([n, m, k, ldb, lda, ldc], dtype=np.int32)
    scalars = np.array([alpha, beta], dtype=c.dtype)
    gemm(flags[0:].ctypes, flags[1:].ctypes, sizes[0:].ctypes, sizes[1:].ctypes, sizes[2:].ctypes,
         scalars[0:].ctypes, b.ctypes, sizes[3:].ctypes, a.ctypes, sizes[4:].ctypes,
         scalars[1:].ctypes, c.ctypes, sizes[5:].ctypes)
