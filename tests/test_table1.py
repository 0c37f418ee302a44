"""The Table 1 protocol and runner (bench/table1.py) on a tiny configuration: splits, resume, aggregation."""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import load_bench_script

from minifcrn import protocol


@pytest.fixture(scope="module")
def table1():
    return load_bench_script("table1")


@pytest.fixture(scope="module")
def tiny_vgg(tmp_path_factory):
    """Twelve generated 64x64 images named as the VGG set: 001cell.png with 001cell.csv, ..."""
    from minifcrn.synth import SynthConfig, write_dataset

    folder = tmp_path_factory.mktemp("vgg")
    made = tmp_path_factory.mktemp("made")
    for i, path in enumerate(write_dataset(made, 12, SynthConfig(height=64, width=64, cells=(10, 30)), seed=3)):
        shutil.move(path, folder / f"{protocol.vgg_name(i + 1)}.png")
        shutil.move(path.with_suffix(".csv"), folder / f"{protocol.vgg_name(i + 1)}.csv")
    return folder


TINY = dict(pool=range(1, 9), test=range(9, 13), whole_steps=2, progress=False, flips=False,
            patches={"epochs": 2, "steps_per_epoch": 3, "lr": 0.01, "milestones": [1], "patch_size": 32,
                     "batch_size": 2})


@pytest.mark.parametrize("n", [1, 8, 32, 64])
def test_vgg_split_is_disjoint_sized_and_fixed_by_n_and_draw(n):
    train, val = protocol.vgg_split(n, 3)
    assert len(train) == n and len(val) == min(n, 100 - n) and not set(train) & set(val)
    assert set(train) | set(val) <= {protocol.vgg_name(i) for i in protocol.POOL}
    assert protocol.vgg_split(n, 3) == (train, val)
    assert protocol.vgg_split(n, 4) != (train, val)


def test_vgg_split_refuses_sizes_the_pool_cannot_hold():
    with pytest.raises(ValueError, match="N must be between 1 and 99"):
        protocol.vgg_split(100, 0)


def test_killed_run_resumes_to_the_same_result(table1, tiny_vgg, tmp_path, monkeypatch):
    """A run interrupted in its patch phase, run again, ends with the weights and row of an
    uninterrupted run, and leaves one JSON line."""
    whole = table1.train_run("fcrn-a", "count", 2, 0, data=tiny_vgg, work=tmp_path / "a",
                             runs_path=tmp_path / "a.jsonl", **TINY)

    import minifcrn.train as train
    calls, loss = [0], train.training_loss

    class Killed(Exception):
        pass

    def interrupted(*args):
        calls[0] += 1
        if calls[0] == 5:  # in the second patch epoch (3 steps each)
            raise Killed
        return loss(*args)

    monkeypatch.setattr(train, "training_loss", interrupted)
    with pytest.raises(Killed):
        table1.train_run("fcrn-a", "count", 2, 0, data=tiny_vgg, work=tmp_path / "b",
                         runs_path=tmp_path / "b.jsonl", **TINY)
    assert not (tmp_path / "b.jsonl").exists()
    monkeypatch.setattr(train, "training_loss", loss)
    resumed = table1.train_run("fcrn-a", "count", 2, 0, data=tiny_vgg, work=tmp_path / "b",
                               runs_path=tmp_path / "b.jsonl", **TINY)

    assert len((tmp_path / "b.jsonl").read_text().splitlines()) == 1
    for key in ("test_mae", "test_bias", "val_mae", "best_epoch", "epochs", "N", "draw", "seed"):
        assert resumed[key] == whole[key], key
    a = np.load(tmp_path / "a" / "fcrn-a-n2-d0" / "count" / "best.npz")
    b = np.load(tmp_path / "b" / "fcrn-a-n2-d0" / "count" / "best.npz")
    assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files if k != "meta")
    assert whole["train_images"] == whole["val_images"] == 2 and whole["test_images"] == 4
    assert whole["epochs"] == 2 + 1 and np.isfinite(whole["test_mae"])


def test_a_diverged_patch_phase_starts_again_at_a_third_of_the_rate(table1, tiny_vgg, tmp_path, monkeypatch):
    """The first patch phase's loss becomes NaN: the run goes on at lr / 3 in a folder of its own, says so in
    its row, and a rerun neither tries the diverged rate again nor trains any more."""
    import minifcrn.train as train
    calls, loss = [0], train.training_loss

    def nan_first(*args):
        calls[0] += 1
        return loss(*args) * float("nan") if calls[0] == 1 else loss(*args)

    monkeypatch.setattr(train, "training_loss", nan_first)
    runs = tmp_path / "r.jsonl"
    row = table1.train_run("fcrn-a", "paper", 2, 4, data=tiny_vgg, work=tmp_path, runs_path=runs, **TINY)
    run = tmp_path / "fcrn-a-n2-d4"
    assert "loss became nan at epoch 1" in (run / "patches" / "diverged.txt").read_text()
    assert (run / "patches-lr0.00333333" / "best.npz").exists()
    assert row["diverged_lrs"] == [0.01] and row["recipe"]["patches"]["lr"] == 0.00333333
    assert np.isfinite(row["test_mae"]) and row["epochs"] == 2 + 1

    def never(*args):
        raise AssertionError("trained again")

    monkeypatch.setattr(train, "training_loss", never)
    again = table1.train_run("fcrn-a", "paper", 2, 4, data=tiny_vgg, work=tmp_path, runs_path=runs, **TINY)
    assert again["test_mae"] == row["test_mae"] and again["diverged_lrs"] == [0.01]

    monkeypatch.setattr(train, "training_loss", lambda *args: loss(*args) * float("nan"))
    with pytest.raises(FloatingPointError, match="diverged at the rates 0.01, 0.00333333, 0.00111111"):
        table1.train_run("fcrn-a", "paper", 2, 3, data=tiny_vgg, work=tmp_path, runs_path=runs, **TINY)


def test_variants_share_the_patch_phase(table1, tiny_vgg, tmp_path):
    runs = tmp_path / "runs.jsonl"
    first = table1.train_run("fcrn-a", "paper", 2, 1, data=tiny_vgg, work=tmp_path, runs_path=runs, **TINY)
    log = (tmp_path / "fcrn-a-n2-d1" / "patches" / "log.csv").read_text()
    second = table1.train_run("fcrn-a", "count", 2, 1, data=tiny_vgg, work=tmp_path, runs_path=runs, **TINY)
    assert (tmp_path / "fcrn-a-n2-d1" / "patches" / "log.csv").read_text() == log  # not trained again
    assert {first["variant"], second["variant"]} == {"paper", "count"}
    assert set(table1.stored_runs(runs)) == {"fcrn-a-paper-n2-d1", "fcrn-a-count-n2-d1"}


def test_count_last_fine_tunes_from_the_patch_phase_s_last_epoch(table1, tiny_vgg, tmp_path, monkeypatch):
    """``count`` starts its whole-image phase from the patch phase's best.npz, ``count-last`` from the
    weights in its checkpoint (the last epoch); best.npz is replaced by other weights so they differ."""
    import minifcrn.train as train
    from minifcrn.io import load_npz, save_weights
    from minifcrn.models import FCRN

    runs, patches = tmp_path / "runs.jsonl", tmp_path / "fcrn-a-n2-d3" / "patches"
    table1.train_run("fcrn-a", "paper", 2, 3, data=tiny_vgg, work=tmp_path, runs_path=runs, **TINY)
    save_weights(FCRN("fcrn-a", rng=99), patches / "best.npz")
    best = {k: v for k, v in load_npz(patches / "best.npz")[0].items()}
    last = {k: v for k, v in load_npz(patches / "checkpoint.npz")[0].items() if k.startswith("param/")}
    starts, fit = {}, train.fit

    def recording_fit(train_samples, val_samples, cfg, out_dir, model=None, **kw):
        if model is not None:
            starts[Path(out_dir).name] = {f"param/{k}": v.copy() for k, v in model.state_dict().items()}
        return fit(train_samples, val_samples, cfg, out_dir, model=model, **kw)

    monkeypatch.setattr(train, "fit", recording_fit)
    for variant in ("count", "count-last"):
        table1.train_run("fcrn-a", variant, 2, 3, data=tiny_vgg, work=tmp_path, runs_path=runs, **TINY)
    assert best.keys() == last.keys() == starts["count"].keys() == starts["count-last"].keys()
    assert all(np.array_equal(starts["count"][k], best[k]) for k in best)
    assert all(np.array_equal(starts["count-last"][k], last[k]) for k in last)
    assert not all(np.array_equal(best[k], last[k]) for k in best)


def test_aggregation_means_stds_and_partial_cells(table1, tmp_path):
    rng = np.random.default_rng(0)
    maes = {(n, d): float(rng.uniform(2, 5)) for n in (8, 32) for d in range(5)}
    lines = [{"model": "fcrn-a", "variant": "paper", "N": n, "draw": d, "test_mae": m, "test_mae_flip8": m - 0.1}
             for (n, d), m in maes.items() if n == 8 or d < 3]
    stale = {**lines[0], "test_mae": 99.0}  # an earlier run of the same key: the later line counts
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [stale] + lines))
    runs = table1.stored_runs(path)
    agg = table1.aggregate(runs)
    full = [maes[(8, d)] for d in range(5)]
    assert agg[("fcrn-a", "paper", 8)] == pytest.approx((np.mean(full), np.std(full, ddof=1), 5))
    part = [maes[(32, d)] for d in range(3)]
    assert agg[("fcrn-a", "paper", 32)] == pytest.approx((np.mean(part), np.std(part, ddof=1), 3))
    assert agg[("fcrn-a", "paper + flip8", 8)][0] == pytest.approx(np.mean(full) - 0.1)
    table = table1.table_markdown(runs)
    assert f"{np.mean(part):.2f} +/- {np.std(part, ddof=1):.2f} (3/5 draws)" in table
    assert f"| FCRN-A ours, paper | {np.mean(full):.2f} +/- {np.std(full, ddof=1):.2f} |" in table


def test_detection_settings_are_chosen_on_validation_and_scored_on_test(table1, tiny_vgg, tmp_path):
    row = table1.train_run("fcrn-a", "count", 2, 2, data=tiny_vgg, work=tmp_path, runs_path=tmp_path / "r.jsonl",
                           **TINY)
    found = table1.detect_run(row, data=tiny_vgg, work=tmp_path, test=TINY["test"], pool=TINY["pool"])
    assert found["threshold_peak_fraction"] in table1.THRESHOLDS and found["min_distance"] in table1.MIN_DISTANCES
    p, r, f1 = found["precision"], found["recall"], found["f1"]
    assert 0 <= p <= 1 and 0 <= r <= 1 and f1 == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)
    assert table1.detect_run({**row, "draw": 3}, data=tiny_vgg, work=tmp_path) is None  # no such weights


def test_ensemble_counts_are_the_members_mean_and_reach_the_table(table1, tiny_vgg, tmp_path):
    from minifcrn.data.samples import load_samples
    from minifcrn.inference import load_model

    runs = tmp_path / "r.jsonl"
    for draw in (0, 1):
        table1.train_run("fcrn-a", "paper", 2, draw, data=tiny_vgg, work=tmp_path, runs_path=runs, **TINY)
    row = table1.ensemble_run("fcrn-a", "paper", 2, draws=[0, 1], data=tiny_vgg, work=tmp_path, test=TINY["test"],
                              flips=False)
    tests = load_samples(tiny_vgg, names={protocol.vgg_name(i) for i in TINY["test"]})
    members = [table1.count_errors(load_model(str(tmp_path / f"fcrn-a-n2-d{d}" / "paper" / "best.npz")), tests)
               for d in (0, 1)]
    mean_errors = np.mean(members, axis=0)
    assert row["test_mae"] == pytest.approx(np.mean(np.abs(mean_errors)), rel=1e-5)
    assert row["test_bias"] == pytest.approx(np.mean(mean_errors), rel=1e-5, abs=1e-6)
    assert "test_mae_flip8" not in row and row["draws"] == [0, 1] and row["test_images"] == len(TINY["test"])
    assert table1.ensemble_run("fcrn-a", "paper", 2, draws=[0, 5], data=tiny_vgg, work=tmp_path) is None
    stored = table1.stored_runs(runs)  # the same ensemble from the runs' per-image counts, no inference
    from_rows = table1.ensemble_of_rows([stored[f"fcrn-a-paper-n2-d{d}"] for d in (0, 1)])
    for key in ("test_mae", "test_bias", "draws", "test_images"):
        assert from_rows[key] == pytest.approx(row[key], rel=1e-4, abs=1e-4), key
    assert table1.ensemble_of_rows([{k: v for k, v in stored["fcrn-a-paper-n2-d0"].items() if k != "test_counts"},
                                    stored["fcrn-a-paper-n2-d1"]]) is None

    path = tmp_path / "ensembles.jsonl"
    path.write_text(json.dumps({**row, "N": 8, "test_mae": 9.0}) + "\n" + json.dumps({**row, "N": 8}) + "\n")
    ensembles = table1.stored_ensembles(path)  # the later line for a key counts
    assert ensembles == {("fcrn-a", "paper, ensemble of 2 draws", 8): row["test_mae"]}
    table = table1.table_markdown({}, ensembles=ensembles)
    assert f"| FCRN-A ours, paper, ensemble of 2 draws | {row['test_mae']:.2f} |  |  |  |" in table


def test_flip_counts_cover_the_eight_flips_and_transposes_untouched_first(table1):

    from minifcrn.data.images import standardize
    from minifcrn.inference import predict_density
    from minifcrn.models import FCRN_A

    rng = np.random.default_rng(2)  # a seed whose 8 views' counts differ by > 1%
    image = rng.random((24, 40)).astype(np.float32)  # not square: the transposes change the shape
    net = FCRN_A(rng=np.random.default_rng(1))
    views = table1.view_counts(net, [SimpleNamespace(image=image, name="x", count=0)], flips=True)
    plane = standardize(image, "x")
    dihedral = [np.rot90(p, k) for p in (plane, plane[:, ::-1]) for k in range(4)]
    expected = [predict_density(net, v.copy()).sum() / net.density_scale for v in dihedral]
    assert views.shape == (1, 8)
    assert views[0, 0] == pytest.approx(expected[0], rel=1e-5)
    np.testing.assert_allclose(np.sort(views[0]), np.sort(expected), rtol=1e-5)
    assert np.diff(np.sort(expected)).min() > 1e-3 * max(expected)  # so the check above would see a repeated view
    np.testing.assert_allclose(table1.view_counts(net, [SimpleNamespace(image=image, name="x", count=0)]),
                               views[:, :1])


def test_error_structure_splits_shared_and_per_draw_errors(table1):
    """The shared part is the draws' mean error per image; the worst image and a correlated other
    run are found; the flip-averaged column is used when every row has it."""
    truth = np.array([100.0, 200.0, 150.0, 120.0])
    shared = np.array([5.0, -1.0, 0.5, -2.0])
    noise = np.array([[1.0, -1.0, 0.0, 0.5], [-1.0, 1.0, 0.0, -0.5]])

    def row(draw, errors, model="fcrn-a", flips=True):
        counts = {f"{i:03d}cell": [t, t + 99.0, t + e] if flips else [t, t + e] for i, (t, e) in
                  enumerate(zip(truth, errors))}  # the plain column is wrong on purpose
        return {"model": model, "variant": "v", "N": 32, "draw": draw, "test_counts": counts}

    rows = [row(d, shared + noise[d]) for d in range(2)]
    st = table1.error_structure(rows, [row(0, -shared, "fcrn-b"), row(1, 2 * shared, "fcrn-b")])
    assert st["column"] == "flip8"
    assert st["draw_mae"] == pytest.approx([np.abs(shared + n).mean() for n in noise])
    assert st["shared_mae"] == pytest.approx(np.abs(shared).mean())
    assert st["shared_std"] == pytest.approx(shared.std()) and st["residual_std"] == pytest.approx(noise.std())
    assert st["worst"][0] == ("000cell", 100.0, [6.0, 4.0])
    assert [c[-1] for c in st["correlation"]] == pytest.approx([-1.0, 1.0])
    plain = table1.error_structure([row(d, shared + noise[d], flips=False) for d in range(2)])
    assert plain["column"] == "plain" and plain["shared_mae"] == pytest.approx(np.abs(shared).mean())
    assert "crowding" not in plain
    crowded = dict(zip(sorted(rows[0]["test_counts"]), 3.0 - 0.5 * shared))  # the shared error, a line in it
    c = table1.error_structure(rows, crowded=crowded)["crowding"]
    assert c["corr"] == pytest.approx(-1.0) and c["mae_after_line"] == pytest.approx(0.0, abs=1e-9)
    assert c["mean"] == pytest.approx(3.0 - 0.5 * shared.mean())
    assert c["corr_count"] == pytest.approx(np.corrcoef(truth, shared)[0, 1])


def test_crowding_is_the_fraction_of_cells_with_a_near_neighbour(table1):
    points = np.array([[10.0, 10.0], [13.0, 10.0], [30.0, 30.0], [50.0, 50.0]])  # one pair 3 px apart
    samples = [SimpleNamespace(name="a", points=points), SimpleNamespace(name="b", points=points[:1]),
               SimpleNamespace(name="c", points=points * 2)]
    assert table1.crowding(samples) == {"a": 0.5, "b": 0.0, "c": 0.0}
    assert table1.crowding(samples, radius=7.0)["c"] == 0.5
