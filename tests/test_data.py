"""Images, annotations, density targets and augmentation."""
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from minifcrn.data import InputError, Sample, density_map, load_samples, random_patch, read_image, read_points
from minifcrn.data.images import standardize

VGG = Path(__file__).resolve().parents[2] / "shared" / "data" / "vgg_cells"


def test_density_integrates_to_the_number_of_points_away_from_borders():
    rng = np.random.default_rng(0)
    points = rng.uniform(12, 88, (25, 2))
    d = density_map(points, (100, 100))
    assert d.dtype == np.float32
    assert d.sum() / 100 == pytest.approx(25, rel=1e-4)
    border = density_map(np.array([[0.0, 50.0]]), (100, 100))  # half of the Gaussian falls outside
    assert 0.45 < border.sum() / 100 < 0.65


def test_density_peak_and_subpixel_mass():
    d = density_map(np.array([[20.0, 30.0]]), (64, 64), scale=1.0)
    assert np.unravel_index(d.argmax(), d.shape) == (30, 20)
    assert d.max() == pytest.approx(1 / (2 * np.pi * 4), rel=0.02)
    moved = density_map(np.array([[20.5, 30.25]]), (64, 64), scale=1.0)
    assert moved.sum() == pytest.approx(1.0, rel=1e-5)


@given(st.integers(0, 2**32 - 1), st.floats(0, 15), st.sampled_from([0.0, 0.3]))
def test_augmentation_preserves_counts_and_alignment(seed, angle, zoom):
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, 127, (40, 2))
    image = density_map(points, (128, 128), sigma=1.5)  # bright blobs exactly at the points
    sample = Sample("s", image, points)
    patch, target = random_patch(sample, 64, rng, max_angle=angle, max_zoom=zoom)
    assert patch.shape == target.shape == (64, 64)
    assert abs(patch.mean()) < 1e-4 and patch.std() == pytest.approx(1, rel=1e-3)
    # the count of a patch is its points' mass: compare with the image's own density under the same map
    # (zoomed, the image's blobs are 1.5 / s wide against the target's 2: a lower bar)
    assert np.corrcoef(patch.ravel(), target.ravel())[0, 1] > (0.85 if zoom else 0.9)
    expected = density_map(points, (128, 128)).sum() / 100
    assert 0 <= target.sum() / 100 <= expected + 1e-3


def test_rotation_keeps_every_inside_point():
    """Points well inside a patch keep their full mass after a rotation."""
    rng = np.random.default_rng(3)
    sample = Sample("s", rng.standard_normal((200, 200)).astype(np.float32), np.array([[100.0, 100.0]]))
    totals = []
    for _ in range(20):
        _, target = random_patch(sample, 180, rng, max_angle=10)
        totals.append(target.sum() / 100)
    assert np.allclose(totals, 1.0, atol=1e-3)


def test_zoom_draws_a_scale_per_patch_for_image_and_target_alike():
    """With max_zoom z, two cells 12 pixels apart lie 12 / s apart in the patch, s in [e^-z, e^z]
    drawn anew for each patch, in the image and in its target alike, the target keeping their mass."""
    points = np.array([[44.0, 50.0], [56.0, 50.0]])  # (x, y): side by side on one row
    sample = Sample("s", density_map(points, (100, 100)), points)
    rng = np.random.default_rng(7)

    def centroids(plane):  # the two blobs' column centroids
        profile = plane.sum(0) - plane.sum(0).min()
        cols = np.arange(len(profile))
        mid = (profile * cols).sum() / profile.sum()
        return np.array([(profile * cols)[side].sum() / profile[side].sum() for side in (cols < mid, cols >= mid)])

    gaps = []
    while len(gaps) < 12:
        patch, target = random_patch(sample, 64, rng, max_angle=0, flip=False, max_zoom=0.3)
        if abs(target.sum() / 100 - 2) > 1e-3:  # a cell cut off by the patch's border
            continue
        assert centroids(patch) == pytest.approx(centroids(target), abs=0.1)
        gaps.append(np.diff(centroids(target))[0])
    assert 12 * np.exp(-0.3) - 0.05 < min(gaps) and max(gaps) < 12 * np.exp(0.3) + 0.05
    assert max(gaps) - min(gaps) > 3


def write_png(path, array):
    Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize("kind", ["grey8", "grey16", "rgb8", "rgba8", "tiff16", "tiff_float", "tiff_chw"])
def test_read_image_formats(tmp_path, kind):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (20, 30)).astype(np.uint8)
    path = tmp_path / "img.png"
    if kind == "grey8":
        write_png(path, base)
    elif kind == "grey16":
        write_png(path, base.astype(np.uint16) * 257)
    elif kind == "rgb8":
        write_png(path, np.stack([base, base // 2, base // 4], axis=-1))
    elif kind == "rgba8":
        write_png(path, np.stack([base, base, base, np.full_like(base, 255)], axis=-1))
    else:
        path = tmp_path / "img.tif"
        data = {"tiff16": base.astype(np.uint16) * 257, "tiff_float": base.astype(np.float32) / 255,
                "tiff_chw": np.stack([base] * 3)}[kind]
        tifffile.imwrite(path, data, photometric="rgb" if kind == "tiff_chw" else None)
    plane = read_image(path)
    assert plane.shape == (20, 30) and plane.dtype == np.float32
    assert np.corrcoef(plane.ravel(), base.ravel())[0, 1] > 0.999


def test_read_image_channel_selection(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 2] = np.arange(64).reshape(8, 8)
    path = write_png(tmp_path / "c.png", rgb)
    np.testing.assert_array_equal(read_image(path, channel=2), rgb[..., 2])
    np.testing.assert_allclose(read_image(path), rgb[..., 2] / 3, rtol=1e-6)
    with pytest.raises(InputError, match="channel must be 'grey', 'inverted', 'auto' or 0, 1, 2"):
        read_image(path, channel=5)
    with pytest.raises(InputError, match="channel 0 holds almost no signal .* in channel 2\\); count channel 2"):
        read_image(path, channel=0)  # the empty red channel of a blue-only image is refused, not counted


def test_inverted_channel_turns_dark_nuclei_bright(tmp_path):
    rgb = np.full((8, 8, 3), 200, np.uint8)
    rgb[3:5, 3:5] = (60, 20, 90)  # a dark, purple nucleus on a pale background (H&E)
    path = write_png(tmp_path / "he.png", rgb)
    inverted = read_image(path, channel="inverted")
    np.testing.assert_allclose(inverted, -read_image(path), rtol=0)
    assert inverted[4, 4] > inverted[0, 0]
    grey = tmp_path / "grey.tif"
    tifffile.imwrite(grey, rgb[..., 0])  # a mappable grey TIFF is negated too, not memory-mapped as is
    np.testing.assert_array_equal(read_image(grey, "inverted", memmap=True), -rgb[..., 0].astype(np.float32))


@pytest.mark.parametrize("content, match", [
    (b"not an image at all", "cannot read image"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "cannot read image"),
])
def test_corrupt_images_give_one_line_errors(tmp_path, content, match):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(InputError, match=match) as info:
        read_image(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_bad_images(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "missing.png")
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((5, 10, 10), np.uint16))
    with pytest.raises(InputError, match=r"a stack of 5 pages \(shape \(5, 10, 10\)\).*one page"):
        read_image(stack)
    nan = tmp_path / "nan.tif"
    tifffile.imwrite(nan, np.full((4, 4), np.nan, np.float32))
    with pytest.raises(InputError, match="NaN"):
        read_image(nan)
    with pytest.raises(InputError, match="constant"):
        standardize(np.full((4, 4), 7.0), "const.png")


def test_points_from_dots_and_csv(tmp_path):
    dots = np.zeros((10, 12, 3), np.uint8)
    dots[2, 3, 0] = dots[2, 4, 0] = dots[7, 9, 0] = 255  # two touching centres count twice
    write_png(tmp_path / "001dots.png", dots)
    points = read_points(tmp_path / "001dots.png", (10, 12))
    assert sorted(map(tuple, points)) == [(3, 2), (4, 2), (9, 7)]
    (tmp_path / "a.csv").write_text("X,Y,label\n3.5,2,a\n9,7,b\n")
    np.testing.assert_array_equal(read_points(tmp_path / "a.csv"), [[3.5, 2], [9, 7]])
    (tmp_path / "b.csv").write_text("row,col\n2,3\n")
    np.testing.assert_array_equal(read_points(tmp_path / "b.csv"), [[3, 2]])
    (tmp_path / "c.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="header must name columns x,y or row,col"):
        read_points(tmp_path / "c.csv")
    with pytest.raises(InputError, match="dot image is 12x10 but its image is 20x20"):
        read_points(tmp_path / "001dots.png", (20, 20))
    with pytest.raises(InputError, match="outside the 5x5 image"):
        read_points(tmp_path / "a.csv", (5, 5))


def test_load_samples_pairs_images_and_annotations(tmp_path):
    write_png(tmp_path / "001cell.png", np.random.default_rng(0).integers(0, 255, (16, 16)).astype(np.uint8))
    dots = np.zeros((16, 16, 3), np.uint8)
    dots[5, 5, 0] = 255
    write_png(tmp_path / "001dots.png", dots)
    write_png(tmp_path / "other.png", np.random.default_rng(1).integers(0, 255, (16, 16)).astype(np.uint8))
    (tmp_path / "other.csv").write_text("x,y\n1,1\n2,2\n")
    samples = load_samples(tmp_path)
    assert [(s.name, s.count) for s in samples] == [("001cell", 1), ("other", 2)]
    write_png(tmp_path / "other.png", np.ones((16, 16), np.uint8))  # blank, yet two cells marked
    with pytest.raises(InputError, match=r"other.png: image is constant \(value 1\) but other.csv marks 2 cells"):
        load_samples(tmp_path)
    (tmp_path / "other.csv").write_text("x,y\n")  # blank with no cells: a fair negative example
    assert [(s.name, s.count) for s in load_samples(tmp_path)] == [("001cell", 1), ("other", 0)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no annotated images"):
        load_samples(tmp_path / "empty")


@pytest.mark.skipif(not VGG.is_dir(), reason="../shared/data/vgg_cells is not here")
def test_vgg_density_counts():
    s = load_samples(VGG, names={"001cell"})[0]
    assert s.count == 135 and s.image.shape == (256, 256)
    assert abs(density_map(s.points, s.image.shape).sum() / 100 - 135) < 3  # mass lost at borders only
