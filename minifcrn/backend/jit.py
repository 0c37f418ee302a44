"""Numba's ``njit`` for the package's loops, with its on-disk cache outside the package.

Numba's ``cache=True`` writes index and code files into ``__pycache__`` beside the
source, that is inside an installed package.  ``pip uninstall`` does not know them
and leaves the folder behind, where Python then finds an empty namespace package
that hides a later editable install.  So the compiled loops are cached per user, in
``$XDG_CACHE_HOME/minifcrn/numba`` (``~/.cache/...`` by default), unless the user
chose a folder with NUMBA_CACHE_DIR.  Numba fixes a function's cache folder when it
is decorated, so ``numba.config.CACHE_DIR`` is set only for that moment.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numba


def cache_dir() -> Path:
    """Where the package's compiled Numba loops are kept."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minifcrn" / "numba"


@contextlib.contextmanager
def _caching_outside_the_package():
    if numba.config.CACHE_DIR:  # the user's NUMBA_CACHE_DIR wins
        yield
        return
    numba.config.CACHE_DIR = str(cache_dir())
    try:
        yield
    finally:
        numba.config.CACHE_DIR = ""


def njit(**options):
    """``numba.njit(cache=True, **options)``, cached in ``cache_dir()``."""
    def decorate(function):
        with _caching_outside_the_package():
            return numba.njit(cache=True, **options)(function)
    return decorate
