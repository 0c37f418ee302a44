"""Tiled counting: the density stitched from tiles equals the untiled one (issue 10)."""
import numpy as np
import pytest

from minifcrn.cli import main
from minifcrn.count import count, load_model, tile_margin
from minifcrn.data.images import InputError


@pytest.fixture(scope="module")
def image():
    from PIL import Image

    from minifcrn.count import ASSETS
    sample = np.asarray(Image.open(ASSETS / "sample.png"), dtype=np.float32)
    # not a multiple of any tile size, and larger than the sample in one direction
    return np.concatenate([sample, sample[::-1]], axis=0)[:301, :203]


@pytest.mark.parametrize("tile", [64, 96, 200])
def test_tiled_density_equals_untiled(image, tile):
    net = load_model("fcrn-a")
    whole = count(image, net, tile_size=0)
    tiled = count(image, net, tile_size=tile - tile % 8)
    diff = float(np.abs(tiled.density - whole.density).max())
    scale = float(np.abs(whole.density).max())
    assert tiled.density.shape == whole.density.shape == image.shape
    assert diff <= 1e-5 * scale, f"tile {tile}: max |tiled - untiled| = {diff:.3g} (peak {scale:.3g})"
    assert abs(tiled.count - whole.count) <= 1e-3, (tiled.count, whole.count)
    np.testing.assert_array_equal(tiled.detections[:, :2], whole.detections[:, :2])


def test_tile_margin_covers_the_receptive_field():
    net = load_model("fcrn-a")
    assert tile_margin(net) % 8 == 0 and tile_margin(net) >= 31  # half of FCRN-A's measured 62


def test_bad_tile_size(image, tmp_path, capsys):
    with pytest.raises(InputError, match="tile size must be a positive multiple of 8, got 30"):
        count(image, "fcrn-a", tile_size=30)
    from PIL import Image
    path = tmp_path / "cells.png"
    Image.fromarray(image.astype(np.uint8)).save(path)
    assert main(["count", str(path), "--tile-size", "30"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tile size must be a positive multiple of 8" in err[0]


def test_bad_tile_size_is_refused_even_when_one_tile_would_do(image):
    with pytest.raises(InputError, match="got 1001"):
        count(image[:40, :40], "fcrn-a", tile_size=1001)
