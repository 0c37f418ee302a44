"""What a new user meets: bright-background images inverted (and said so), the weights' own channel,
empty channels refused, one rule for which files are counted, a collapsed network flagged in training."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minifcrn.cli import main
from minifcrn.counting import count, count_many
from minifcrn.data.images import bright_background
from minifcrn.data.samples import image_files
from minifcrn.inference import ASSETS, load_model
from minifcrn.io import load_weights, save_weights
from minifcrn.synth import SynthConfig, generate
from minifcrn.train import TrainConfig, collapse_warning, fit

MBM = Path(__file__).resolve().parents[2] / "shared" / "data" / "mbm"
SAMPLE = ASSETS / "sample.png"


@pytest.fixture(scope="module")
def net():
    return load_model("fcrn-a")


@pytest.fixture(scope="module")
def fluorescence():
    return generate(SynthConfig(), 4).image  # uint8, bright nuclei on a dark background


def test_dark_nuclei_on_a_bright_background_are_counted_inverted(net, fluorescence):
    dark = 255 - fluorescence
    assert bright_background(dark) and not bright_background(fluorescence)
    auto, plain = count(dark, net), count(fluorescence, net)
    assert (auto.channel, auto.channel_from) == ("inverted", "auto")
    assert (plain.channel, plain.channel_from) == ("grey", "auto")
    assert auto.count == pytest.approx(plain.count, rel=1e-4)  # standardised: the same plane either way
    as_is = count(dark, net, channel="grey")
    assert as_is.channel_from == "given" and abs(as_is.count - plain.count) > 0.2 * plain.count


def test_the_cli_says_when_it_inverted_an_image(tmp_path, capsys, fluorescence):
    Image.fromarray(255 - fluorescence).save(tmp_path / "he.png")
    assert main(["count", str(tmp_path / "he.png")]) == 0
    captured = capsys.readouterr()
    assert "inverted" in captured.out.splitlines()[1]
    note = [line for line in captured.err.splitlines() if line.startswith("minifcrn: note:")]
    assert len(note) == 1 and "bright background" in note[0] and "--channel grey" in note[0]


@pytest.mark.skipif(not MBM.is_dir(), reason="needs ../shared/data/mbm")
def test_an_he_image_is_recognised(net):
    result = count(MBM / "001cell.png", net)
    assert (result.channel, result.channel_from) == ("inverted", "auto")


def test_weights_trained_on_a_channel_count_that_channel(tmp_path, net):
    path = tmp_path / "inverted.npz"
    save_weights(net, path, {"note": "the shipped FCRN-A, labelled as trained on inverted images"},
                 channel="inverted")
    image = np.asarray(Image.open(SAMPLE))
    trained = count(image, path)
    assert (trained.channel, trained.channel_from) == ("inverted", "weights")
    assert count(image, path, channel="grey").channel_from == "given"
    assert count(image, net).channel == "grey"  # the shipped weights: grey images stay grey


def test_an_empty_channel_is_refused(tmp_path, capsys, fluorescence):
    rgb = np.zeros(fluorescence.shape + (3,), np.uint8)
    rgb[..., 2] = fluorescence
    rgb[..., 0] = np.random.default_rng(0).integers(0, 2, fluorescence.shape)  # a flicker of noise
    Image.fromarray(rgb).save(tmp_path / "blue.png")
    assert main(["count", str(tmp_path / "blue.png"), "--channel", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "channel 0 holds almost no signal" in err and "--channel 2" in err


def test_one_rule_chooses_the_files(tmp_path, fluorescence):
    for name in ("001cell.png", "a.jpg", "b.png", "x_count.png"):
        Image.fromarray(fluorescence).save(tmp_path / name)
    Image.fromarray(np.zeros(fluorescence.shape + (3,), np.uint8)).save(tmp_path / "001dots.png")
    (tmp_path / "b.csv").write_text("x,y\n3,4\n")
    (tmp_path / "notes.txt").write_text("hello")
    for inputs in ([tmp_path], [str(tmp_path / "*")]):
        skipped = []
        kept = [p.name for p, problem in image_files(inputs, skipped)]
        assert kept == ["001cell.png", "a.jpg", "b.png"], inputs
        assert sorted((p.name, why) for p, why in skipped) == [
            ("001dots.png", "annotation"), ("b.csv", "table"), ("notes.txt", "not an image"),
            ("x_count.png", "minifcrn picture")]
    skipped = []
    assert [p.name for p, _ in image_files([tmp_path / "001dots.png", tmp_path / "a.jpg"], skipped)] == ["a.jpg"]
    assert [(p.name, why) for p, why in skipped] == [("001dots.png", "annotation")]
    rows = count_many([str(tmp_path / "*.png")], "fcrn-a", skipped=skipped)
    assert [Path(r.file).name for r in rows] == ["001cell.png", "b.png"] and not any(r.error for r in rows)


def test_the_json_has_the_detections_roi_size_and_skipped_files(tmp_path, capsys, fluorescence):
    Image.fromarray(fluorescence).save(tmp_path / "001cell.png")
    Image.fromarray(np.zeros(fluorescence.shape + (3,), np.uint8)).save(tmp_path / "001dots.png")
    assert main(["count", str(tmp_path), "--roi", "0,0,128,128", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    row = report["results"][0]
    assert row["roi"] == [0, 0, 128, 128] and len(row["detections_xy_score"]) == row["detections"] > 0
    assert all(0 <= x < 128 and 0 <= y < 128 for x, y, _ in row["detections_xy_score"])
    assert row["cell_size_from"] == "estimated" and row["channel"] == "grey"
    assert report["skipped"] == [{"file": str(tmp_path / "001dots.png"), "why": "annotation"}]


def test_a_collapsed_network_is_named():
    truth = [71, 120, 194]
    assert "barely vary" in collapse_warning([154.0, 154.2, 153.9], truth, [4, 5, 3])
    assert "no detections" in collapse_warning([70.0, 125.0, 180.0], truth, [0, 0, 0])
    assert collapse_warning([70.0, 125.0, 180.0], truth, [60, 100, 150]) == ""


def test_training_warns_of_too_few_validation_images_and_logs_warnings(tmp_path, capsys):
    made = [generate(SynthConfig(height=48, width=48, cells=(4, 8)), k) for k in range(3)]
    from minifcrn.data import Sample

    samples = [Sample(f"s{k}", m.image.astype(np.float32), m.points) for k, m in enumerate(made)]
    cfg = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, patch_size=32, lr=0.01, seed=0)
    fit(samples[:2], samples[2:], cfg, tmp_path, progress=False)
    assert "1 validation image(s): too few" in capsys.readouterr().err
    with open(tmp_path / "log.csv", newline="") as f:
        assert "warning" in next(csv.DictReader(f))
    meta = load_weights(tmp_path / "best.npz")[1]
    assert meta["channel"] == "grey" and meta["cell_size"] > 0 and meta["cell_size_estimate"] > 0


def test_one_name_per_idea_on_the_command_line():
    from minifcrn.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    flags = {name: {f for a in sub._actions for f in a.option_strings} for name, sub in commands.items()}
    every = set().union(*flags.values())
    assert not every & {"--radius", "--crop", "--n"}  # renamed: --match-radius, --cell-size, --roi, --synthetic
    assert all("--cell-size" in flags[c] for c in ("count", "evaluate", "train", "synth"))
    assert "--match-radius" in flags["evaluate"] and "--roi" in flags["count"] and "--roi" in flags["invert"]
    assert "--synthetic" in flags["synth"] and "--synthetic" in flags["train"]
    for name, sub in commands.items():  # every option with a default says it in --help
        formatter = sub.formatter_class(name)
        for action in sub._actions:
            if action.option_strings and action.default not in (None, False, "==SUPPRESS==") and action.help:
                assert "default" in formatter._get_help_string(action), (name, action.dest)


def test_evaluate_pools_several_folders_and_prints_each_image(tmp_path, capsys, fluorescence):
    made = [generate(SynthConfig(), k) for k in (5, 6)]
    for k, m in enumerate(made):
        folder = tmp_path / f"set{k}"
        folder.mkdir()
        Image.fromarray(m.image).save(folder / "001cell.png")
        np.savetxt(folder / "001cell.csv", m.points, delimiter=",", header="x,y", comments="")
    assert main(["evaluate", str(tmp_path / "set0"), str(tmp_path / "set1")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["image", "true", "estimate"] and len(lines) == 4
    assert lines[1].startswith(str(tmp_path / "set0" / "001cell")) and lines[3].startswith("2 images: MAE")
    assert [int(line.split()[1]) for line in lines[1:3]] == [m.count for m in made]


def test_piped_progress_is_plain_lines(tmp_path, capsys):
    assert main(["synth", "--synthetic", "20", "--out", str(tmp_path), "--size", "32", "--cells", "2", "4"]) == 0
    err = capsys.readouterr().err  # pytest's capture is not a terminal
    assert "\r" not in err and err.splitlines() == [f"generating: {k}/20 images" for k in range(2, 21, 2)]
