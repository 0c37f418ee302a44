"""The CPU fast paths: faster ways to the results of the reference ops, on NumPy arrays.

gemm           BLAS ``gemm`` called from Numba loops on windows of a buffer
conv           conv2d at stride 1 as one product per kernel tap (no column matrix), and
               direct loops for few input channels
pool           2x2 max-pooling written out, and the backward of windows that do not overlap
upsample_conv  bilinear x2 up-sampling fused with the convolution after it (16 taps, not 25)

Each takes the place of the reference op only on the "cpu-fast" path
(``minifcrn.backend.PATHS``) and is tested against it (tests/test_cpu_fast.py).
"""
