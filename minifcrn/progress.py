"""Progress for long loops: a tqdm bar in a terminal, plain lines when the output is piped or logged.

A bar redrawn with carriage returns turns a log file into one endless line, so
when stderr is not a terminal ``bar`` prints ``desc: k/n unit`` on a line of its
own every tenth of the work instead.
"""
from __future__ import annotations

import sys

STEPS = 10  # plain lines per loop when piped


def bar(iterable, total=None, desc="", unit="it", enabled=True):
    """``iterable`` with progress shown (tqdm in a terminal, a line every tenth when piped)."""
    from tqdm import tqdm

    if not enabled:
        return iterable
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False)
    return _lines(iterable, total if total is not None else len(iterable), desc, unit)


def _lines(iterable, total, desc, unit):
    every = max(1, -(-total // STEPS))
    for k, item in enumerate(iterable, 1):
        yield item
        if k % every == 0 or k == total:
            print(f"{desc}: {k}/{total} {unit}{'s' * (total != 1)}", file=sys.stderr, flush=True)
