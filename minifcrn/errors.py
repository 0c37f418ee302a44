"""The one error a user's bad input raises, and the check most arguments share.

Every module that reads a user's files, arguments or weights raises ``InputError``
with a one-line message naming the file, argument, shape or value; the command line
prints that line and exits with code 2, never a traceback.
"""
from __future__ import annotations

import numpy as np


class InputError(ValueError):
    """Bad user input; the message is one line naming the file, argument or value."""


def is_positive(value, or_zero=False) -> bool:
    """True for a finite real number > 0 (>= 0 with ``or_zero``); False for NaN, inf, bools
    and anything that is not a number, so one test refuses them all."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return bool(np.isfinite(value)) and (value >= 0 if or_zero else value > 0)
