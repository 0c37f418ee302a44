"""The ``minifcrn`` command: parse arguments, call the Python API, print the result.

Every sub-command is a thin shell over a function importable from Python.  Bad
input ends with a one-line message on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys

from minifcrn import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minifcrn",
        description="Count and detect cells with fully convolutional regression networks (FCRN), "
                    "on a small from-scratch NumPy/CuPy deep-learning engine.")
    parser.add_argument("--version", action="version", version=f"minifcrn {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
