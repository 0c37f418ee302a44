"""Figures (matplotlib, the viz extra): written as valid PNGs of the expected size, and their absence explained."""
import sys

import numpy as np
import pytest
from PIL import Image

from minifcrn.cli import main
from minifcrn.counting import count
from minifcrn.data.annotations import read_points
from minifcrn.inference import ASSETS

pytest.importorskip("matplotlib")
from minifcrn.figures import MissingMatplotlib, count_figure, training_curves  # noqa: E402


@pytest.fixture(scope="module")
def result():
    return count(ASSETS / "sample.png")


def png_size(path):
    with Image.open(path) as png:
        assert png.format == "PNG"
        png.load()  # the whole file decodes
        return png.size


@pytest.mark.parametrize("with_truth, panels", [(False, 3), (True, 4)])
def test_count_figure_has_a_panel_each(result, tmp_path, with_truth, panels):
    truth = read_points(ASSETS / "sample.csv", result.density.shape) if with_truth else None
    count_figure(result, tmp_path / "f.png", truth)
    assert png_size(tmp_path / "f.png") == (round(100 * (3.2 * panels + 0.6)), round(100 * 3.7))


def test_training_curves(tmp_path):
    history = [{"epoch": e, "phase": "patches" if e < 4 else "whole", "train_loss": 1.0 / e, "val_mae": 10.0 / e}
               for e in range(1, 6)]
    training_curves(history, tmp_path / "c.png")
    assert png_size(tmp_path / "c.png") == (800, 320)


def test_cli_count_figure_uses_the_annotations_beside_the_image(tmp_path, capsys):
    assert main(["count", str(ASSETS / "sample.png"), "--out", str(tmp_path), "--figure"]) == 0
    assert png_size(tmp_path / "sample_figure.png") == (round(100 * (3.2 * 4 + 0.6)), 370)  # sample.csv: 4 panels


def test_train_writes_curves_beside_its_log(tmp_path):
    assert main(["train", "--synthetic", "3", "--out", str(tmp_path), "--epochs", "2", "--steps", "1",
                 "--batch-size", "1", "--patch-size", "32", "--size", "40", "--cells", "3", "6"]) == 0
    assert png_size(tmp_path / "curves.png") == (800, 320)


def test_without_matplotlib_the_commands_say_how_to_install_it_and_go_on(result, tmp_path, capsys, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "matplotlib" else object())
    with pytest.raises(MissingMatplotlib, match=r"pip install 'minifcrn\[viz\]'"):
        count_figure(result, tmp_path / "f.png")
    assert main(["count", str(ASSETS / "sample.png"), "--out", str(tmp_path), "--figure"]) == 0
    err = capsys.readouterr().err
    assert "minifcrn[viz]" in err and err.count("\n") == 1
    assert (tmp_path / "results.csv").is_file() and not (tmp_path / "sample_figure.png").exists()
    assert np.isfinite(result.count)


def test_each_panel_has_its_own_scale_the_roi_its_own_truth_and_colour_stays(tmp_path):
    from dataclasses import replace

    from minifcrn.synth import SynthConfig, generate

    made = generate(SynthConfig(), 1)
    rgb = np.zeros(made.image.shape + (3,), np.uint8)
    rgb[..., 1] = made.image  # a green image
    result = count(rgb)
    faint = replace(result, density=result.density * 0.05, count=result.count * 0.05)  # as an H&E estimate looks
    shown = count_figure(faint, tmp_path / "f.png", made.points)
    (_, est_top), (_, true_top) = shown["scales"]
    assert est_top == pytest.approx(float(faint.density.max())) and est_top < 0.2 * true_top
    assert shown["explained"]  # 5% of the count against as many detections: the line that says why
    roi = count(rgb, roi=(0, 0, 128, 96))
    inside = ((made.points[:, 0] < 127.5) & (made.points[:, 1] < 95.5)).sum()
    titles = count_figure(roi, tmp_path / "roi.png", made.points)["titles"]
    assert titles[2] == f"ground truth: {inside} cells" and "ROI 0,0,128,96" in titles[0]
    assert f"nuclei {roi.cell_size:.1f} px (estimated)" in titles[0]  # the size it was counted at
    from minifcrn.figures import shown_image

    image, style = shown_image(result)
    assert image.shape == rgb.shape and not style and image[..., 1].max() > 0.9 > image[..., 0].max() + 0.5


def test_the_quick_start_picture_shows_the_sample_truth(tmp_path, capsys):
    assert main(["count", "--sample", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    from minifcrn.viz import render_count

    result = count(ASSETS / "sample.png")
    truth = read_points(ASSETS / "sample.csv", result.density.shape)
    plain, marked = tmp_path / "plain.png", tmp_path / "marked.png"
    render_count(result, plain)
    render_count(result, marked, truth=truth)
    with Image.open(marked) as a, Image.open(tmp_path / "sample_count.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))  # the CLI draws the shipped truth
    with Image.open(plain) as a, Image.open(marked) as b:
        assert not np.array_equal(np.asarray(a), np.asarray(b))
