"""Test support: ``minifcrn.testing.emulator`` runs the CUDA kernels on the CPU."""
