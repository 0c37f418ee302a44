"""The CPU runtime setting of ``minifcrn.backend``: freed memory kept for reuse."""
import ctypes
import subprocess
import sys

import pytest

try:
    _mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
except (OSError, AttributeError):
    _mallinfo2 = None

PROBE = """
import ctypes, sys
import numpy as np
from minifcrn.backend import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]

info = ctypes.CDLL("libc.so.6").mallinfo2
info.restype = MallInfo2
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
a = np.ones(64 << 18, dtype=np.float32)  # 64 MiB
mapped, heap = info().hblkhd, info().arena
del a
print(kept, mapped >= 64 << 20, heap >= 64 << 20, info().fordblks >= 64 << 20)
"""


@pytest.mark.skipif(_mallinfo2 is None, reason="needs glibc (mallinfo2)")
@pytest.mark.parametrize("mode, expected", [
    ("default", "None True False False"),  # a 64 MiB array is its own mapping, unmapped on free
    ("keep", "True False True True"),  # it comes from the heap, and stays there for reuse when freed
])
def test_keep_freed_memory_serves_large_arrays_from_the_heap(mode, expected):
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    assert out.stdout.split() == expected.split()
