"""Training: losses fall, checkpoints are atomic, a resumed run equals an uninterrupted one."""
import csv

import numpy as np
import pytest

import minifcrn as mf
from minifcrn.cli import main
from minifcrn.data import Sample, density_map
from minifcrn.io import load_npz, load_weights
from minifcrn.train import TrainConfig, fit


def blobs(seed, n=6, size=48):
    rng = np.random.default_rng(seed)
    points = rng.uniform(6, size - 6, (n, 2))
    image = density_map(points, (size, size), sigma=1.5) + rng.normal(0, 0.5, (size, size)).astype(np.float32)
    return Sample(f"s{seed}", image, points)


TINY = dict(arch="fcrn-a", epochs=2, steps_per_epoch=3, batch_size=2, patch_size=32, lr=0.1,
            finetune_epochs=1, finetune_lr=0.01, seed=3)


def test_resume_is_bit_identical(tmp_path):
    """A run stopped after its first epoch and resumed ends bit for bit where an uninterrupted one does."""
    train, val, cfg = [blobs(k) for k in range(3)], [blobs(9)], TrainConfig(**TINY)
    full = fit(train, val, cfg, tmp_path / "full", progress=False)
    fit(train, val, cfg, tmp_path / "part", progress=False, stop_after=1)
    assert load_npz(tmp_path / "part" / "checkpoint.npz")[1]["epoch"] == 0
    resumed = fit(train, val, cfg, tmp_path / "part", resume=True, progress=False)
    a, meta_a = load_npz(tmp_path / "full" / "checkpoint.npz")
    b, meta_b = load_npz(tmp_path / "part" / "checkpoint.npz")
    assert sorted(a) == sorted(b) and meta_a["rng"] == meta_b["rng"]
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert [h["train_loss"] for h in full["history"]] == [h["train_loss"] for h in resumed["history"]]


def test_outputs_and_log(tmp_path):
    cfg = TrainConfig(**{**TINY, "milestones": [1], "finetune_lr": 0.005, "finetune_epochs": 3,
                         "finetune_milestones": [2]})
    summary = fit([blobs(k) for k in range(3)], [blobs(9)], cfg, tmp_path, progress=False)
    lines = (tmp_path / "log.csv").read_text().splitlines()
    assert lines[0] == "epoch,phase,lr,train_loss,val_mae,seconds,rate_cuts,warning" and len(lines) == 6
    assert [h["phase"] for h in summary["history"]] == ["patches", "patches", "whole", "whole", "whole"]
    # each phase has its own schedule, counted from its first epoch
    assert [h["lr"] for h in summary["history"]] == pytest.approx([0.1, 0.01, 0.005, 0.005, 0.0005])
    model, meta = load_weights(tmp_path / "best.npz")
    assert model.arch == "fcrn-a" and meta["record"]["best"] == summary["best"]
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_a_far_too_high_rate_is_cut_until_training_goes_on(tmp_path, capsys):
    """At lr 1000 the loss diverges: the epoch goes back to its start at a tenth of the rate until it
    does not, says so on screen and in log.csv, and the run ends with a finite, falling loss."""
    train, val = [blobs(k) for k in range(3)], [blobs(9)]
    cfg = TrainConfig(**{**TINY, "lr": 1000.0, "epochs": 4, "finetune_epochs": 0})
    summary = fit(train, val, cfg, tmp_path, progress=True)
    history = summary["history"]
    assert history[0]["rate_cuts"] >= 2 and history[0]["lr"] == pytest.approx(1000.0 * 0.1 ** history[0]["rate_cuts"])
    assert all(h["lr"] == history[0]["lr"] and h["rate_cuts"] == 0 for h in history[1:])  # the cut stays
    losses = [h["train_loss"] for h in history]
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
    assert "back to the epoch's start at lr" in capsys.readouterr().out
    with open(tmp_path / "log.csv", newline="") as f:
        assert next(csv.DictReader(f))["rate_cuts"] == str(history[0]["rate_cuts"])
    meta = load_npz(tmp_path / "checkpoint.npz")[1]
    assert meta["rate_scale"] == pytest.approx(0.1 ** history[0]["rate_cuts"])  # a resumed run keeps the cut


def test_without_recovery_a_diverged_loss_stops_training_in_one_line(tmp_path):
    cfg = TrainConfig(**{**TINY, "lr": 1000.0, "epochs": 1, "finetune_epochs": 0})
    with pytest.raises(FloatingPointError, match=r"loss became .* at epoch 1 \(step \d+, lr 1000\)"):
        fit([blobs(0)], [blobs(9)], cfg, tmp_path, progress=False, recover=False)


def test_resume_with_other_options_is_refused(tmp_path):
    train, val = [blobs(k) for k in range(2)], [blobs(9)]
    fit(train, val, TrainConfig(**{**TINY, "epochs": 1, "finetune_epochs": 0}), tmp_path, progress=False)
    with pytest.raises(ValueError, match="different training configuration"):
        fit(train, val, TrainConfig(**{**TINY, "lr": 0.5}), tmp_path, resume=True, progress=False)


def test_resume_of_a_checkpoint_older_than_a_setting(tmp_path):
    """A checkpoint written before a setting existed resumes when that setting is at its default,
    and is refused when it is not."""
    from minifcrn.io import save_npz
    train, val = [blobs(k) for k in range(2)], [blobs(9)]
    cfg = TrainConfig(**{**TINY, "epochs": 1, "finetune_epochs": 1})
    fit(train, val, cfg, tmp_path, progress=False, stop_after=1)
    arrays, meta = load_npz(tmp_path / "checkpoint.npz")
    del meta["config"]["count_window"]  # as written before count_window was added
    save_npz(tmp_path / "checkpoint.npz", arrays, meta)
    with pytest.raises(ValueError, match="different training configuration"):
        fit(train, val, TrainConfig(**{**TINY, "epochs": 1, "finetune_epochs": 1, "count_window": 8}),
            tmp_path, resume=True, progress=False)
    summary = fit(train, val, cfg, tmp_path, resume=True, progress=False)
    assert [h["phase"] for h in summary["history"]] == ["patches", "whole"]


def test_train_cli(tmp_path, capsys):
    from PIL import Image
    data = tmp_path / "data"
    data.mkdir()
    for k in range(4):
        s = blobs(k)
        img = ((s.image - s.image.min()) / np.ptp(s.image) * 255).astype(np.uint8)
        Image.fromarray(img).save(data / f"00{k}cell.png")
        np.savetxt(data / f"00{k}cell.csv", s.points, delimiter=",", header="x,y", comments="")
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1", "--steps", "2",
                 "--batch-size", "2", "--patch-size", "32", "--val-count", "1", "--lr", "0.1"])
    assert code == 0
    assert "best validation MAE" in capsys.readouterr().out
    assert (tmp_path / "run" / "best.npz").is_file()


def test_count_term_of_the_loss():
    """count_weight adds lambda * mean over images of (mean(pred) - mean(target))^2 to the MSE."""
    from minifcrn.train import training_loss
    rng = np.random.default_rng(0)
    pred, target = rng.random((3, 1, 5, 4)), rng.random((3, 1, 5, 4))
    mse = np.mean((pred - target) ** 2)
    count = np.mean(np.mean(pred - target, axis=(1, 2, 3)) ** 2)
    for weight in (0.0, 7.0):
        got = training_loss(mf.tensor(pred), mf.tensor(target), TrainConfig(count_weight=weight)).item()
        assert got == pytest.approx(mse + weight * count, rel=1e-12)
    p = mf.tensor(pred, requires_grad=True)
    training_loss(p, mf.tensor(target), TrainConfig(count_weight=7.0)).backward()
    per_image = np.mean(pred - target, axis=(1, 2, 3))[:, None, None, None]
    expected = 2 * (pred - target) / pred.size + 7.0 * 2 * per_image / 3 / (5 * 4)
    np.testing.assert_allclose(p.grad, expected, rtol=1e-10)


def test_count_term_over_windows():
    """count_window k takes the count term over k x k windows (rows and columns past the last
    whole window are left out), and its gradient is that of the explicit sum."""
    from minifcrn.train import training_loss
    rng = np.random.default_rng(1)
    pred, target = rng.random((2, 1, 7, 9)), rng.random((2, 1, 7, 9))
    diff = pred - target
    windows = [diff[b, 0, i:i + 3, j:j + 3].mean() for b in range(2) for i in (0, 3) for j in (0, 3, 6)]
    expected = np.mean(diff ** 2) + 5.0 * np.mean(np.square(windows))
    cfg = TrainConfig(count_weight=5.0, count_window=3)
    p = mf.tensor(pred, requires_grad=True)
    loss = training_loss(p, mf.tensor(target), cfg)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    grad = 2 * diff / diff.size
    for b in range(2):
        for i in (0, 3):
            for j in (0, 3, 6):
                grad[b, 0, i:i + 3, j:j + 3] += 5.0 * 2 * diff[b, 0, i:i + 3, j:j + 3].mean() / 12 / 9
    np.testing.assert_allclose(p.grad, grad, rtol=1e-10)
    # a window as large as the image is the whole-image count term
    whole = training_loss(mf.tensor(pred[:, :, :6, :6]), mf.tensor(target[:, :, :6, :6]),
                          TrainConfig(count_weight=5.0, count_window=6)).item()
    assert whole == pytest.approx(training_loss(mf.tensor(pred[:, :, :6, :6]), mf.tensor(target[:, :, :6, :6]),
                                                TrainConfig(count_weight=5.0)).item(), rel=1e-12)


def test_intensity_jitter():
    """jitter j maps a standardised image x to x e^u + v with u, v in [-j, j], one (u, v) per
    image; with j = 0 it returns x and draws nothing from the generator."""
    from minifcrn.train import _jittered
    x = np.random.default_rng(2).standard_normal((16, 16)).astype(np.float32)
    rng = np.random.default_rng(5)
    assert _jittered(x, TrainConfig(jitter=0.0), rng) is x
    assert rng.bit_generator.state == np.random.default_rng(5).bit_generator.state
    for _ in range(20):
        y = _jittered(x, TrainConfig(jitter=0.3), rng)
        gain, offset = np.polyfit(x.ravel(), y.ravel(), 1)
        assert y.dtype == np.float32
        assert np.exp(-0.3) - 1e-5 <= gain <= np.exp(0.3) + 1e-5 and -0.3 - 1e-5 <= offset <= 0.3 + 1e-5
        np.testing.assert_allclose(y, x * gain + offset, atol=1e-5)
