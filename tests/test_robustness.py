"""Nothing lost, nothing crashes: a training run killed with SIGKILL resumes bit for bit, and
bad files of every kind end in one clear line (exit code 2), never a traceback."""
import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from minifcrn.cli import main
from minifcrn.counting import count
from minifcrn.data.images import read_image
from minifcrn.errors import InputError
from minifcrn.inference import load_model
from minifcrn.io import load_npz

TRAIN = ["train", "--synthetic", "4", "--epochs", "4", "--steps", "3", "--batch-size", "2", "--patch-size", "32",
         "--size", "48", "--cells", "4", "8", "--finetune-epochs", "2", "--seed", "5"]


def epochs_logged(out):
    log = out / "log.csv"
    return max(0, len(log.read_text().splitlines()) - 1) if log.exists() else 0


def test_a_run_killed_at_a_random_moment_resumes_to_bit_identical_weights(tmp_path):
    assert main(TRAIN + ["--out", str(tmp_path / "whole")]) == 0
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    after, delay = int(rng.integers(1, 4)), float(rng.uniform(0, 0.5))  # some epochs done, then mid-epoch
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "minifcrn"] + TRAIN + ["--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while epochs_logged(killed) < after and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert main(TRAIN + ["--out", str(killed), "--resume"]) == 0
    a, meta_a = load_npz(tmp_path / "whole" / "checkpoint.npz")
    b, meta_b = load_npz(killed / "checkpoint.npz")
    assert meta_a["history"][-1]["epoch"] == meta_b["history"][-1]["epoch"] == 6
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f"{key} (killed after {after} epochs + {delay:.2f} s)")


def encode(array, fmt):
    buffer = io.BytesIO()
    if fmt == "png":
        Image.fromarray(array).save(buffer, format="PNG")
    else:
        tifffile.imwrite(buffer, array)
    return buffer.getvalue()


valid_png = encode((np.arange(24 * 20) % 251).astype(np.uint8).reshape(24, 20), "png")
valid_tif = encode((np.arange(24 * 20) * 97 % 65535).astype(np.uint16).reshape(24, 20), "tif")

damaged_files = st.one_of(
    st.tuples(st.sampled_from([(valid_png, "png"), (valid_tif, "tif")]), st.floats(0, 0.99)).map(
        lambda t: (t[0][0][:int(len(t[0][0]) * t[1])], t[0][1])),                           # truncated
    st.tuples(st.sampled_from([(valid_png, "png"), (valid_tif, "tif")]), st.integers(0, 10**6),
              st.integers(1, 255)).map(
        lambda t: (bytes(b ^ t[2] if i == t[1] % len(t[0][0]) else b for i, b in enumerate(t[0][0])), t[0][1])),
    st.binary(max_size=64).map(lambda b: (b, "png")),                                            # noise
)

arrays = st.one_of(
    st.tuples(st.sampled_from([(0, 5), (5, 0), (1, 1), (1, 7), (3, 4, 4, 4), (2, 3, 4, 5, 6), (6, 6, 2),
                               (16, 12), (12, 16, 3), (4, 12, 16)]),
              st.sampled_from(["uint8", "uint16", "int32", "float32", "float64", "complex64", "bool"]),
              st.sampled_from([None, np.nan, np.inf, -np.inf])),
)


def assert_one_clean_line(capsys, path):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("minifcrn: error:") and str(path) in lines[0], err


@settings(max_examples=25)
@given(damaged=damaged_files)
def test_damaged_files_are_counted_or_refused_in_one_line(tmp_path_factory, capsys, damaged):
    content, fmt = damaged
    path = tmp_path_factory.mktemp("bad") / f"image.{fmt}"
    path.write_bytes(content)
    capsys.readouterr()
    code = main(["count", str(path)])
    if code == 0:  # the damage left a readable image (e.g. a flipped byte in a TIFF's pixels)
        assert np.isfinite(count(read_image(path), load_model()).count)
        capsys.readouterr()
    else:
        assert code == 2
        assert_one_clean_line(capsys, path)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")  # tifffile on odd arrays
@settings(max_examples=25)
@given(spec=arrays)
def test_odd_shapes_dtypes_and_values_are_counted_or_refused_in_one_line(tmp_path_factory, capsys, spec):
    shape, dtype, special = spec
    data = (np.arange(int(np.prod(shape))).reshape(shape) % 7).astype(dtype)
    if special is not None and data.size and data.dtype.kind in "fc":
        data.flat[data.size // 2] = special
    path = tmp_path_factory.mktemp("odd") / "image.tif"
    try:
        tifffile.imwrite(path, data)
    except (ValueError, RuntimeError):  # tifffile itself cannot write some of these (empty or odd arrays)
        assume(False)
    capsys.readouterr()
    code = main(["count", str(path)])
    if code == 0:
        capsys.readouterr()
        assert data.ndim in (2, 3) and data.dtype.kind in "uifb" and np.isfinite(data.astype(float)).all()
    else:
        assert code == 2
        assert_one_clean_line(capsys, path)


@settings(max_examples=30)
@given(roi=st.tuples(*[st.integers(-30, 60)] * 4))
def test_any_roi_is_counted_or_refused_in_one_line(tmp_path_factory, capsys, roi):
    path = tmp_path_factory.mktemp("roi") / "image.png"
    path.write_bytes(valid_png)  # 20 x 24
    capsys.readouterr()
    code = main(["count", str(path), "--roi=" + ",".join(map(str, roi))])
    x0, y0, x1, y1 = roi
    inside = 0 <= x0 < x1 <= 20 and 0 <= y0 < y1 <= 24
    assert code == (0 if inside else 2)
    if not inside:
        assert_one_clean_line(capsys, path)
    capsys.readouterr()


def test_dot_files_of_the_wrong_size_are_refused_by_evaluate(tmp_path, capsys):
    Image.fromarray((np.arange(40 * 30) % 200).astype(np.uint8).reshape(30, 40)).save(tmp_path / "001cell.png")
    Image.fromarray(np.zeros((31, 40, 3), np.uint8)).save(tmp_path / "001dots.png")
    assert main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "dot image is 40x31 but its image is 40x30" in err


def test_a_multi_page_stack_says_how_to_choose_a_page(tmp_path):
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 16, 16), np.uint8) + np.arange(16, dtype=np.uint8),
                     photometric="minisblack")  # three grey pages, not one RGB image
    with pytest.raises(InputError, match=r"a stack of 3 pages .*count one page at a time.*key=0"):
        read_image(tmp_path / "stack.tif")


# -- bad options and bad weights: refused in one line, before any work ------------------------

def assert_refused_in_one_line(capsys, message):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and message in err, err


def _weights(tmp_path, name, change_meta=None, change_arrays=None, model=None):
    """The shipped FCRN-A weights (or ``model``'s), saved with a changed meta or changed arrays."""
    from minifcrn.io import save_weights

    path = tmp_path / f"{name}.npz"
    save_weights(model if model is not None else load_model(), path)
    arrays, meta = load_npz(path)
    if change_arrays:
        change_arrays(arrays)
    from minifcrn.io import save_npz
    save_npz(path, arrays, change_meta(meta) if change_meta else meta)
    return path


def _nan_first_weight(arrays):
    arrays["param/conv1.weight"] = arrays["param/conv1.weight"].copy()
    arrays["param/conv1.weight"].flat[0] = np.nan


BAD_WEIGHTS = {
    "nan": ({}, _nan_first_weight, "weights contain NaN or infinite values (conv1.weight)"),
    "scale0": ({"density_scale": 0}, None, "density_scale must be a positive number, got 0"),
    "scaleneg": ({"density_scale": -100.0}, None, "density_scale must be a positive number, got -100.0"),
    "scalestr": ({"density_scale": "abc"}, None, "density_scale must be a positive number, got 'abc'"),
    "checkpoint": ({"format": "minifcrn-checkpoint-1"}, None, "a training checkpoint, not a weights file"),
    "cellsize0": ({"cell_size": 0}, None, "cell_size must be a positive number of pixels, got 0"),
}


@pytest.mark.parametrize("case", sorted(BAD_WEIGHTS))
def test_bad_weights_files_are_refused_in_one_line(tmp_path, capsys, case):
    meta_change, arrays_change, message = BAD_WEIGHTS[case]
    path = _weights(tmp_path, case, (lambda m: {**m, **meta_change}) if meta_change else None, arrays_change)
    image = tmp_path / "image.png"
    image.write_bytes(valid_png)
    capsys.readouterr()
    assert main(["count", str(image), "--model", str(path), "--cell-size", "9"]) == 2
    assert_refused_in_one_line(capsys, message)


def test_weights_meta_that_is_not_an_object_and_other_input_channels_are_refused(tmp_path):
    from minifcrn.io import save_npz
    from minifcrn.models import FCRN

    listed = tmp_path / "list.npz"
    save_npz(listed, {}, [1, 2])
    with pytest.raises(InputError, match="its meta is not a JSON object"):
        load_model(listed)
    rgb = _weights(tmp_path, "rgb", model=FCRN("fcrn-a", in_channels=3, rng=0))
    with pytest.raises(InputError, match="weights expect 3 input channels"):
        load_model(rgb)
    with pytest.raises(InputError, match="'fcrn-c': neither a shipped model .* nor a weights .npz file"):
        load_model("fcrn-c")
    with pytest.raises(InputError, match=r"nor a weights .npz file \(it is a folder\)"):
        load_model(tmp_path)


BAD_COUNT_OPTIONS = [
    (["--cell-size", "0.001"], "would resize the 20x24 image by 9e+03"),
    (["--cell-size", "50"], "would resize the 20x24 image by 0.18 to 4x4"),
    (["--min-distance", "-3"], "min_distance must be a whole number of pixels >= 0, got -3"),
    (["--threshold", "nan"], "threshold must be a finite number >= 0, got nan"),
    (["--threshold", "-1"], "threshold must be a finite number >= 0, got -1.0"),
    (["--channel", "2"], "channel 2 asked of a grey image"),
]


@pytest.mark.parametrize("options, message", BAD_COUNT_OPTIONS)
def test_bad_count_options_are_refused_in_one_line(tmp_path, capsys, options, message):
    image = tmp_path / "image.png"
    image.write_bytes(valid_png)  # 20 x 24, grey
    capsys.readouterr()
    assert main(["count", str(image)] + options) == 2
    assert_refused_in_one_line(capsys, message)


def test_outputs_that_cannot_be_written_are_refused_before_any_work(tmp_path, capsys):
    image, taken = tmp_path / "image.png", tmp_path / "taken"
    image.write_bytes(valid_png)
    taken.write_text("a file")
    runs = [["count", str(image), "--out", str(taken)],
            ["synth", "--synthetic", "1", "--out", str(taken)],
            TRAIN + ["--out", str(taken)],
            ["invert", str(image), "--out", str(taken), "--iterations", "1"],
            ["invert", str(image), "--out", str(taken / "sub"), "--iterations", "1"]]
    for argv in runs:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert "is a file, not a folder" in err, err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "results.csv").write_text("name,value\na,1\n")
    assert main(["count", str(image), "--out", str(foreign), "--resume"]) == 2
    assert "is not a minifcrn results table" in capsys.readouterr().err


BAD_TRAIN_OPTIONS = [
    (["--epochs", "0", "--finetune-epochs", "0"], "epochs + finetune_epochs must be at least 1, got 0"),
    (["--steps", "0"], "steps_per_epoch must be at least 1, got 0"),
    (["--batch-size", "0"], "batch_size must be at least 1, got 0"),
    (["--patch-size", "0"], "patch_size must be at least 1, got 0"),
    (["--patch-size", "64"], "patch size 64 is larger than 1 training image(s) (synth_00000)"),
    (["--lr", "nan"], "lr must be a positive number, got nan"),
    (["--lr", "-0.1"], "lr must be a positive number, got -0.1"),
    (["--count-weight", "-1"], "count_weight must be a finite number >= 0, got -1.0"),
    (["--count-window", "-1"], "count_window must be a whole number >= 0, got -1"),
    (["--jitter", "inf"], "jitter must be a finite number >= 0, got inf"),
    (["--zoom", "-0.2"], "zoom must be a finite number >= 0, got -0.2"),
]


@pytest.mark.parametrize("options, message", BAD_TRAIN_OPTIONS)
def test_bad_training_options_are_refused_before_the_first_epoch(tmp_path, capsys, options, message):
    capsys.readouterr()
    assert main(TRAIN + ["--out", str(tmp_path / "run")] + options) == 2  # (later options win)
    assert_refused_in_one_line(capsys, message)
    assert not (tmp_path / "run" / "log.csv").exists()


def test_resume_from_something_that_is_not_a_checkpoint_and_a_negative_val_count(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    _weights(tmp_path, "weights").rename(run / "checkpoint.npz")
    assert main(TRAIN + ["--out", str(run), "--resume"]) == 2
    assert "checkpoint.npz: not a minifcrn training checkpoint" in capsys.readouterr().err
    assert main(["synth", "--synthetic", "3", "--out", str(tmp_path / "data"), "--size", "48", "--cells", "4", "8"]) == 0
    capsys.readouterr()
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "r2"), "--val-count", "-1"]) == 2
    assert "--val-count must be >= 0, got -1" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["nan", "inf", "0"])
def test_synth_refuses_a_cell_size_that_is_not_a_finite_positive_number(tmp_path, capsys, size):
    assert main(["synth", "--synthetic", "1", "--out", str(tmp_path / "s"), "--cell-size", size]) == 2
    assert f"--cell-size must be a positive number of pixels (the nucleus diameter), got {float(size)!r}" \
        in capsys.readouterr().err


@pytest.mark.parametrize("radius", ["-1", "nan"])
def test_evaluate_refuses_a_match_radius_that_is_not_positive(tmp_path, capsys, radius):
    assert main(["synth", "--synthetic", "2", "--out", str(tmp_path / "d"), "--size", "48", "--cells", "4", "8"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "d"), "--match-radius", radius]) == 2
    assert "match radius must be a positive number of pixels" in capsys.readouterr().err
