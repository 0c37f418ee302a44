"""The paper's evaluation protocol on the VGG synthetic cells (section 4.1, Table 1).

The set has 200 images, ``001cell.png`` .. ``200cell.png`` with ``NNNdots.png``.
Images 101-200 are the test set, never used in training.  For a training size N,
each of five random *draws* takes N training and N validation images, disjoint,
from images 1-100; validation picks the checkpoint.  For N = 64 the pool cannot
hold 64 + 64 disjoint images: the remaining 36 validate.

A draw is fixed by (N, draw) alone, so every run of every recipe on draw d of
size N sees the same images.
"""
from __future__ import annotations

import numpy as np

POOL = range(1, 101)    # training and validation images are drawn from these
TEST = range(101, 201)  # the test images
SIZES = (8, 16, 32, 64)
DRAWS = 5


def vgg_name(number: int) -> str:
    """The sample name of VGG image ``number`` (``7`` -> ``"007cell"``)."""
    return f"{number:03d}cell"


def vgg_split(n: int, draw: int, pool=POOL):
    """(training names, validation names) of draw ``draw`` with ``n`` training images.

    The pool is shuffled by a generator seeded with (n, draw): the first n images
    train, the next n (or all that are left, when fewer) validate.
    """
    pool = list(pool)
    if not 1 <= n < len(pool):
        raise ValueError(f"vgg protocol: N must be between 1 and {len(pool) - 1}, got {n}")
    if draw < 0:
        raise ValueError(f"vgg protocol: draw must be >= 0, got {draw}")
    order = np.random.default_rng([n, draw]).permutation(pool)
    train, val = order[:n], order[n:2 * n]
    return [vgg_name(int(i)) for i in sorted(train)], [vgg_name(int(i)) for i in sorted(val)]


def vgg_test_names(test=TEST):
    """The names of the test images (101-200)."""
    return [vgg_name(i) for i in test]
