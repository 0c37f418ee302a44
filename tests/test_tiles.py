"""Tiled counting: the density stitched from tiles equals the untiled one (issue 10)."""
import numpy as np
import pytest

from minifcrn.cli import main
from minifcrn.counting import count
from minifcrn.errors import InputError
from minifcrn.inference import load_model, tile_margin


@pytest.fixture(scope="module")
def image():
    from PIL import Image

    from minifcrn.inference import ASSETS
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


def test_a_huge_grey_tiff_is_memory_mapped_and_counts_as_the_decoded_image(tmp_path):
    import tifffile

    from minifcrn.data.images import read_image

    rng = np.random.default_rng(2)
    pixels = (rng.random((300, 260)) * 4000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "big.tif", pixels)                      # uncompressed: mappable
    tifffile.imwrite(tmp_path / "packed.tif", pixels, compression="zlib")  # compressed: decoded
    mapped = read_image(tmp_path / "big.tif", memmap=True)
    assert isinstance(mapped, np.memmap) and mapped.dtype == np.uint16
    assert not isinstance(read_image(tmp_path / "packed.tif", memmap=True), np.memmap)
    net = load_model("fcrn-a")
    reference = count(pixels.astype(np.float32), net, tile_size=0)
    for path in ("big.tif", "packed.tif"):
        for tile in (0, 128):
            result = count(tmp_path / path, net, tile_size=tile)
            np.testing.assert_allclose(result.density, reference.density, rtol=0, atol=1e-6)
            # the same cells at the same pixels; a tile's BLAS may sum in another order (scores ~1e-8 apart)
            np.testing.assert_allclose(result.detections, reference.detections, rtol=0, atol=1e-6)


def test_nan_in_a_memory_mapped_tiff_is_refused(tmp_path):
    import tifffile

    pixels = np.ones((40, 40), np.float32)
    pixels[5, 5] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", pixels)
    with pytest.raises(InputError, match="NaN or infinite"):
        count(tmp_path / "nan.tif")
