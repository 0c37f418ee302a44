"""Deprecated: the old home of the counting functions, now ``minifcrn.counting``.

``minifcrn.count`` is the counting function itself.  For one release,
``import minifcrn.count as mc; mc.count(...)`` and ``from minifcrn.count import ...``
still work, with a DeprecationWarning; this module stays callable, like the function.
"""
import sys
import types
import warnings

from minifcrn import counting


class _DeprecatedModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return counting.count(*args, **kwargs)

    def __getattr__(self, name):
        for home in ("counting", "inference"):
            module = sys.modules[f"minifcrn.{home}"]
            if hasattr(module, name):
                warnings.warn(f"minifcrn.count.{name} moved to minifcrn.{home}.{name} (and minifcrn.count "
                              "is now the counting function); the old path goes in the next release",
                              DeprecationWarning, stacklevel=2)
                return getattr(module, name)
        raise AttributeError(f"module 'minifcrn.count' has no attribute {name!r}")


sys.modules[__name__].__class__ = _DeprecatedModule
