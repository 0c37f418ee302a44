"""count() from Python and the count/evaluate/train command line, with bad inputs."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import minifcrn
from minifcrn.cli import main
from minifcrn.counting import count, detect
from minifcrn.inference import load_model, weights_hash
from minifcrn.io import save_weights
from minifcrn.models import FCRN_A, FCRN_B


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "a.npz"
    save_weights(FCRN_A(rng=0), path, {"note": "untrained, for plumbing tests"})
    return path


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 52)).astype(np.uint8)).save(folder / f"00{k}cell.png")
        dots = np.zeros((40, 52, 3), np.uint8)
        dots[10 + k, 20, 0] = dots[30, 40, 0] = 255
        Image.fromarray(dots).save(folder / f"00{k}dots.png")
    return folder


def test_count_python_api(weights, images):
    r = count(images / "000cell.png", model=weights)
    assert r.density.shape == (40, 52) and r.density.dtype == np.float32
    assert r.count == pytest.approx(float(r.density.sum(dtype=np.float64)))
    assert r.detections.shape[1] == 3
    roi = count(np.asarray(Image.open(images / "000cell.png")), model=weights, roi=(0, 0, 20, 10))
    assert roi.count == pytest.approx(float(r.density[:10, :20].sum(dtype=np.float64)), rel=1e-5)


def test_detect_finds_separated_peaks():
    d = np.zeros((40, 40), np.float32)
    d[10, 12], d[30, 25], d[31, 26] = 0.05, 0.04, 0.03
    det = detect(d, threshold=0.01, min_distance=3)
    assert det[:, :2].tolist() == [[12, 10], [25, 30]]  # x, y; the weaker neighbour is suppressed


def test_count_cli_table_json_and_pictures(weights, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["count", str(images), "--model", str(weights), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["file"].endswith(f"00{k}cell.png") for k, r in enumerate(report["results"])] == [True, True]
    png = Image.open(out / "000cell_count.png")
    assert png.format == "PNG" and png.size == (2 * 52 + 8, 40 + 36)
    assert (out / "001cell_detections.csv").read_text().startswith("x,y,score")


def test_count_cli_bad_inputs_keep_going(weights, images, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"garbage")
    code = main(["count", str(tmp_path / "broken.png"), str(images / "000cell.png"), "--model", str(weights)])
    captured = capsys.readouterr()
    assert code == 2
    assert "broken.png: cannot read image" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert "000cell.png" in captured.out  # the good image was still counted
    assert main(["count", str(images / "000cell.png"), "--model", str(weights), "--roi", "0,0,99,10"]) == 2
    assert "ROI 0,0,99,10 is not inside the 52x40 image" in capsys.readouterr().err
    const = tmp_path / "const.png"
    Image.fromarray(np.full((16, 16), 9, np.uint8)).save(const)
    assert main(["count", str(const), "--model", str(weights)]) == 2
    assert "constant" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["count", str(empty), "--model", str(weights)]) == 2
    assert "holds no images to count (PNG, TIFF or JPEG)" in capsys.readouterr().err


def test_weights_for_another_architecture(tmp_path, capsys):
    path = tmp_path / "b.npz"
    save_weights(FCRN_B(rng=0), path)
    data = dict(np.load(path))
    data["meta"] = np.array(json.dumps({**json.loads(str(data["meta"])), "arch": "fcrn-a"}))
    np.savez(path, **data)
    assert main(["count", "x.png", "--model", str(path)]) == 2
    assert "weights do not fit fcrn-a" in capsys.readouterr().err
    (tmp_path / "junk.npz").write_bytes(b"junk")
    assert main(["count", "x.png", "--model", str(tmp_path / "junk.npz")]) == 2
    assert "not a minifcrn weights" in capsys.readouterr().err


def test_evaluate_cli(weights, images, capsys):
    assert main(["evaluate", str(images), "--model", str(weights), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["images"] == 2
    assert report["images"][0]["true"] == 2
    assert report["summary"]["mae"] == pytest.approx(np.mean([r["abs_error"] for r in report["images"]]))


def test_evaluate_vgg_protocol_needs_the_test_images(weights, images, capsys):
    assert main(["evaluate", str(images), "--model", str(weights), "--protocol", "vgg"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(images) in err[0] and "101cell" in err[0] and "100 missing" in err[0]


def test_console_script_version():
    out = subprocess.run([sys.executable, "-m", "minifcrn", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"minifcrn {minifcrn.__version__}"


def test_count_folder_results_table_and_resume(weights, images, tmp_path, capsys, monkeypatch):
    """One results table, written as it goes; a bad file is recorded and skipped; --resume redoes nothing done."""
    import csv

    import minifcrn.counting as mc

    (images / "broken.png").write_bytes(b"garbage")
    out = tmp_path / "out"
    assert main(["count", str(images), "--model", str(weights), "--out", str(out)]) == 2
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["file"].rsplit("/", 1)[-1] for r in rows] == ["000cell.png", "001cell.png", "broken.png"]
    assert rows[2]["count"] == "" and "cannot read image" in rows[2]["error"]
    assert all(r["weights"] == weights_hash(load_model(weights)) and r["model"] == "fcrn-a" for r in rows)
    table = json.loads((out / "results.json").read_text())
    assert [(r["file"], str(r["count"]), r["error"]) for r in table] == [(r["file"], r["count"], r["error"])
                                                                         for r in rows]
    counted = []
    real_count = mc.count
    monkeypatch.setattr(mc, "count", lambda path, *a, **k: counted.append(path) or real_count(path, *a, **k))
    (images / "broken.png").unlink()
    Image.fromarray(np.zeros((40, 52), np.uint8) + np.arange(52, dtype=np.uint8)).save(images / "002cell.png")
    capsys.readouterr()
    assert main(["count", str(images), "--model", str(weights), "--out", str(out), "--resume"]) == 0
    assert [p.name for p in counted] == ["002cell.png"]  # only the new image
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert sorted(r["file"].rsplit("/", 1)[-1] for r in rows) == ["000cell.png", "001cell.png", "002cell.png"]
    assert all(isinstance(r["count"], float) for r in json.loads((out / "results.json").read_text()))
    other = tmp_path / "other.npz"
    save_weights(FCRN_A(rng=1), other, {})
    assert main(["count", str(images), "--model", str(other), "--out", str(out), "--resume"]) == 2
    assert "was written with other weights" in capsys.readouterr().err
    assert main(["count", str(images / "00*cell.png"), "--model", str(weights), "--json"]) == 0  # a glob
    assert len(json.loads(capsys.readouterr().out)["results"]) == 3
