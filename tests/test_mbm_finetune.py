"""The MBM split of bench/mbm_finetune.py: 15 test / 14 validation / 15 training images per draw."""
import pytest
from helpers import load_bench_script


@pytest.fixture(scope="module")
def mbm_finetune():
    return load_bench_script("mbm_finetune")


@pytest.mark.parametrize("draw", [0, 3])
def test_split_is_disjoint_15_14_15_and_smaller_k_take_the_first_of_the_same_15(mbm_finetune, draw):
    images = list(range(44))
    train, val, test = mbm_finetune.split(images, 15, draw)
    assert (len(train), len(val), len(test)) == (15, 14, 15)
    assert sorted(train + val + test) == images
    for k in (2, 4, 8):
        smaller = mbm_finetune.split(images, k, draw)
        assert smaller == (train[:k], val, test)
    assert mbm_finetune.split(images, 15, draw + 1) != (train, val, test)


@pytest.mark.parametrize("k", [0, 16])
def test_split_refuses_k_outside_the_training_15(mbm_finetune, k):
    with pytest.raises(ValueError, match=f"k must be between 1 and 15, got {k}"):
        mbm_finetune.split(list(range(44)), k, 0)


def test_stored_runs_count_only_the_present_recipes_and_pretrained_weights(mbm_finetune, tmp_path):
    import json
    now = {"recipe": mbm_finetune.recipe_of("pretrained"), "whole": mbm_finetune.WHOLE}
    old = {"recipe": {**now["recipe"], "lr": now["recipe"]["lr"] / 7}, "whole": now["whole"]}
    rows = [{"init": "pretrained", "k": 4, "draw": 0, **old}, {"init": "pretrained", "k": 4, "draw": 1, **now},
            {"init": "pretrained", "k": 0, "draw": 0},  # no training, no recipe
            {"init": "scratch", "k": 4, "draw": 0, "recipe": mbm_finetune.recipe_of("scratch", epochs=1),
             "whole": now["whole"]}]
    rows[:3] = [{**r, "pretrained_hash": "abc"} for r in rows[:3]]
    rows += [{**rows[1], "draw": 2, "pretrained_hash": "other weights"}, {"init": "pretrained", "k": 0, "draw": 1}]  # no hash
    runs = tmp_path / "runs.jsonl"
    runs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert sorted(mbm_finetune.stored(runs, pretrained_hash="abc")) == [("pretrained", 0, 0), ("pretrained", 4, 1)]
    assert sorted(mbm_finetune.stored(runs, epochs=1, pretrained_hash="abc")) == [("pretrained", 0, 0),
                                                                                   ("scratch", 4, 0)]
    assert sorted(mbm_finetune.stored(runs, pretrained_hash="other weights")) == [("pretrained", 4, 2)]


def test_a_stored_run_that_fell_back_counts_as_a_run_of_the_rate_it_trained_at(mbm_finetune, tmp_path):
    import json
    now = mbm_finetune.recipe_of("pretrained")
    faster = {**now, "lr": now["lr"] * 3}
    rows = [{"init": "pretrained", "k": 2, "draw": 0, "recipe": faster, "lr": now["lr"]},  # fell back to now
            {"init": "pretrained", "k": 2, "draw": 1, "recipe": faster, "lr": faster["lr"]},  # trained at 3x
            {"init": "pretrained", "k": 2, "draw": 2, "recipe": now, "lr": now["lr"] / 3}]  # fell back below
    runs = tmp_path / "runs.jsonl"
    runs.write_text("".join(json.dumps({**r, "whole": mbm_finetune.WHOLE, "pretrained_hash": "abc"}) + "\n"
                            for r in rows))
    assert sorted(mbm_finetune.stored(runs, pretrained_hash="abc")) == [("pretrained", 2, 0)]


def test_a_run_whose_loss_becomes_nan_restarts_once_at_the_fallback_rate(mbm_finetune, tmp_path, monkeypatch):
    import numpy as np
    from test_train import blobs
    train, val = [blobs(k) for k in range(2)], [blobs(9)]
    recipe = {"epochs": 1, "steps_per_epoch": 3, "batch_size": 2, "patch_size": 32, "lr": 1e12}
    monkeypatch.setattr(mbm_finetune, "FALLBACK", 1e-14)  # 1e12 -> 0.01
    summary, folder, lr = mbm_finetune._patch_stage(train, val, recipe, 0, tmp_path, None)
    assert (folder, lr) == (tmp_path / "patches-fallback", 0.01)
    assert [h["lr"] for h in summary["history"]] == [0.01] and np.isfinite(summary["best"]["val_mae"])
    assert not (tmp_path / "patches" / "checkpoint.npz").exists()  # the diverged attempt saved no epoch
    sane = mbm_finetune._patch_stage(train, val, {**recipe, "lr": 0.05}, 0, tmp_path / "sane", None)
    assert sane[1:] == (tmp_path / "sane" / "patches", 0.05)


def test_train_command_runs_every_init_and_resumes_with_nothing_left(mbm_finetune, tmp_path, monkeypatch):
    """`train` end to end on 44 small stand-in images (tiny recipes): a row per (init, k, draw),
    the pretrained network's k = 0 row included, and a second call finds nothing left to do."""
    import argparse
    import json

    import numpy as np
    from test_train import blobs
    monkeypatch.setattr(mbm_finetune, "mbm_samples", lambda cell_size: [blobs(i) for i in range(44)])
    tiny = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "patch_size": 32, "lr": 0.01, "milestones": []}
    monkeypatch.setattr(mbm_finetune, "RECIPES", {"scratch": tiny, "pretrained": tiny})
    monkeypatch.setattr(mbm_finetune, "WHOLE", {**mbm_finetune.WHOLE, "finetune_epochs": 1})
    runs = tmp_path / "runs.jsonl"
    args = argparse.Namespace(ks=[0, 2], draws=1, inits=["scratch", "pretrained"], cell_size=35.0, epochs=None,
                              work=str(tmp_path / "work"), runs=runs, pretrained=str(mbm_finetune.PRETRAINED))
    mbm_finetune.cmd_train(args)
    rows = [json.loads(line) for line in runs.read_text().splitlines()]
    assert sorted((r["init"], r["k"], r["draw"]) for r in rows) == [("pretrained", 0, 0), ("pretrained", 2, 0),
                                                                    ("scratch", 2, 0)]
    assert all(np.isfinite(r["test_mae"]) and np.isfinite(r["val_mae"]) for r in rows)
    mbm_finetune.cmd_train(args)
    assert runs.read_text().count("\n") == 3
