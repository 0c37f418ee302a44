"""Feature inversion (paper section 5): the objective falls, shallow layers give the image back."""
import numpy as np
import pytest
from PIL import Image

import minifcrn as mf
from minifcrn.cli import main
from minifcrn.errors import InputError
from minifcrn.inference import ASSETS, load_model
from minifcrn.invert import conv_layers, frozen, reconstruct
from minifcrn.models import FCRN_A

CROP = (80, 80, 112, 112)  # 32x32 pixels of the sample around a few cells


@pytest.fixture(scope="module")
def net():
    return load_model("fcrn-a")


def test_the_objective_falls_at_every_recorded_step(net):
    r = reconstruct(net, ASSETS / "sample.png", "conv3", iterations=40, roi=CROP)
    steps = np.diff(r.objective)
    assert (steps <= 0).all()
    assert r.objective[-1] < 0.2 * r.objective[0]


def test_the_first_layer_gives_the_input_back(net):
    r = reconstruct(net, ASSETS / "sample.png", "conv1", iterations=60, roi=CROP)
    assert r.image.shape == (32, 32)
    assert r.correlation > 0.95  # measured 1.000 (conv1 is linear and keeps the image)
    assert r.feature_error < 1e-3


def test_a_deep_layer_keeps_less_than_the_first(net):
    shallow = reconstruct(net, ASSETS / "sample.png", "conv1", iterations=60, roi=CROP)
    deep = reconstruct(net, ASSETS / "sample.png", "conv8", iterations=60, roi=CROP)
    assert deep.correlation < shallow.correlation


def test_the_weights_are_frozen_during_and_restored_after(net):
    params = net.parameters()
    with frozen(net):
        assert not any(p.requires_grad for p in params)
    assert all(p.requires_grad for p in params)


def test_the_input_gradient_through_every_op_matches_finite_differences():
    model = FCRN_A(rng=0, dtype=np.float64)
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((1, 1, 16, 16))
    weights = rng.standard_normal((1, 1, 16, 16))

    def energy(values):
        with mf.no_grad():
            return float((model(mf.tensor(values)) * mf.tensor(weights)).sum().item())

    xt = mf.tensor(x0, requires_grad=True)
    with frozen(model):
        (model(xt) * mf.tensor(weights)).sum().backward()
    eps = 1e-6
    for (r, c) in [(0, 0), (5, 7), (15, 15), (8, 3)]:
        bumped = [x0.copy(), x0.copy()]
        bumped[0][0, 0, r, c] += eps
        bumped[1][0, 0, r, c] -= eps
        numeric = (energy(bumped[0]) - energy(bumped[1])) / (2 * eps)
        assert xt.grad[0, 0, r, c] == pytest.approx(numeric, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("kwargs, message", [
    ({"layer": "conv99"}, "has no layer 'conv99'"),
    ({"layer": "conv1", "iterations": 0}, "need iterations >= 1"),
    ({"layer": "conv1", "lr": -1.0}, "need iterations >= 1"),
])
def test_bad_arguments_are_refused(net, kwargs, message):
    with pytest.raises(InputError, match=message):
        reconstruct(net, ASSETS / "sample.png", roi=CROP, **kwargs)


def test_cli_lists_layers_and_writes_the_grid(tmp_path, capsys):
    assert main(["invert", "--list-layers"]) == 0
    listed = capsys.readouterr().out.split("\n")
    assert [line.split()[0] for line in listed if "default figure" in line] == conv_layers(load_model("fcrn-a"))
    out = tmp_path / "inverted"
    assert main(["invert", str(ASSETS / "sample.png"), "--roi", ",".join(map(str, CROP)), "--layers", "conv1",
                 "relu2", "--iterations", "5", "--out", str(out), "--json"]) == 0
    with Image.open(out / "inversion.png") as png:
        assert png.format == "PNG"
        assert png.size == (3 * (32 * 4 + 6) - 6, 32 * 4 + 30)  # input + 2 layers, each 32 px zoomed x4


def test_cli_explains_its_table_and_reports_each_layer(tmp_path, capsys):
    assert main(["invert", str(ASSETS / "sample.png"), "--roi", ",".join(map(str, CROP)), "--layers", "conv1",
                 "conv2", "--iterations", "3", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "inverted conv1 (1/2): " in out and "inverted conv2 (2/2): " in out
    assert all(f"\n{term}" in out for term in ("E start, E end:", "feature err:", "corr:"))


def test_cli_bad_crop_is_one_line(capsys):
    assert main(["invert", str(ASSETS / "sample.png"), "--roi", "0,0,999,10"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "ROI 0,0,999,10 is not inside" in err
