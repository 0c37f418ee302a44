"""count(..., cell_size=D): images whose cells are another size are resized for the network, counts kept."""
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from minifcrn.cli import main
from minifcrn.counting import CELL_SIZE, count
from minifcrn.errors import InputError
from minifcrn.inference import ASSETS, load_model


@pytest.fixture(scope="module")
def net():
    return load_model("fcrn-a")


@pytest.fixture(scope="module")
def sample():
    return np.asarray(Image.open(ASSETS / "sample.png"), dtype=np.float32)


def test_the_trained_cell_size_changes_nothing(net, sample):
    plain, same = count(sample, net), count(sample, net, cell_size=CELL_SIZE)
    assert np.array_equal(plain.density, same.density) and plain.count == same.count


@pytest.mark.parametrize("zoom", [2.0, 0.75])
def test_a_zoomed_image_counts_the_same_with_its_cell_size_and_wrong_without(net, sample, zoom):
    reference = count(sample, net)
    zoomed = ndimage.zoom(sample, zoom, order=1)
    fixed = count(zoomed, net, cell_size=CELL_SIZE * zoom)
    naive = count(zoomed, net)
    assert fixed.density.shape == zoomed.shape
    assert fixed.count == pytest.approx(float(fixed.density.sum(dtype=np.float64)), rel=1e-4)
    assert abs(fixed.count - reference.count) < 0.05 * reference.count
    assert abs(naive.count - reference.count) > 3 * abs(fixed.count - reference.count)


def test_detections_come_back_in_the_image_pixels(net, sample):
    reference = count(sample, net).detections[:, :2]
    fixed = count(ndimage.zoom(sample, 2.0, order=1), net, cell_size=2 * CELL_SIZE).detections[:, :2]
    assert abs(len(fixed) - len(reference)) <= 0.1 * len(reference)
    nearest = np.min(np.linalg.norm(fixed[:, None] / 2 - reference[None], axis=2), axis=1)
    assert np.median(nearest) <= 1.0


@pytest.mark.parametrize("bad", [0, -3.0, float("nan"), "big"])
def test_a_bad_cell_size_is_refused(net, sample, bad):
    with pytest.raises(InputError, match="cell size must be a positive number"):
        count(sample, net, cell_size=bad)


def test_cli_cell_size(tmp_path, capsys):
    big = ndimage.zoom(np.asarray(Image.open(ASSETS / "sample.png")), 2.0, order=1)
    Image.fromarray(big).save(tmp_path / "big.png")
    assert main(["count", str(tmp_path / "big.png"), "--cell-size", "18", "--json"]) == 0
    assert main(["count", str(tmp_path / "big.png"), "--cell-size", "-1"]) == 2
    assert "cell size must be a positive number" in capsys.readouterr().err
