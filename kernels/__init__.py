"""CUDA C sources of minifcrn's GPU kernels (installed as ``minifcrn.kernels``).

One ``.cu`` file per op family; ``minifcrn.backend`` compiles them with CuPy's
RawModule on a GPU, and ``minifcrn.backend.emulated`` builds the same files
for the CPU in the tests.
"""
