"""The shipped weights and sample image: present, loadable, counting what their record says."""
from pathlib import Path

import numpy as np
import pytest

from minifcrn.counting import count
from minifcrn.data.samples import load_samples
from minifcrn.inference import ASSETS, SHIPPED, load_model
from minifcrn.train import validation_mae

VGG = Path(__file__).resolve().parents[2] / "shared" / "data" / "vgg_cells"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_weights_load_with_their_record(name):
    model = load_model(name)
    record = model.meta["record"]
    assert model.arch == name and all(p.dtype == np.float32 for p in model.parameters())
    assert {"data", "command", "test_mae_101_200", "val_mae", "wall_time_s", "machine"} <= set(record)


def test_sample_image_is_counted_near_its_truth():
    truth = np.loadtxt(ASSETS / "sample.csv", delimiter=",", skiprows=1)
    r = count(ASSETS / "sample.png", model="fcrn-a")
    assert r.density.shape == (256, 256)
    assert abs(r.count - len(truth)) < 0.15 * len(truth), (r.count, len(truth))


@pytest.mark.skipif(not VGG.is_dir(), reason="../shared/data/vgg_cells is not here")
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_weights_reproduce_their_test_mae(name):
    model = load_model(name)
    test = load_samples(VGG, names={f"{i:03d}cell" for i in range(101, 201)})
    mae = validation_mae(model, test)
    assert mae == pytest.approx(model.meta["record"]["test_mae_101_200"], abs=2e-3)


@pytest.mark.skipif(not VGG.is_dir(), reason="../shared/data/vgg_cells is not here")
def test_evaluate_with_the_vgg_protocol_scores_the_table1_test_images(capsys):
    import json

    from minifcrn.cli import main

    assert main(["evaluate", str(VGG), "--protocol", "vgg", "--model", "fcrn-a", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(r["image"] for r in report["images"]) == [f"{i:03d}cell" for i in range(101, 201)]
    record = load_model("fcrn-a").meta["record"]
    assert report["summary"]["mae"] == pytest.approx(record["test_mae_101_200"], abs=2e-3)
    assert report["summary"]["protocol"] == "vgg" and 0.5 < report["summary"]["f1"] <= 1
