"""FCRN-A and FCRN-B: parameter counts, measured receptive fields, any input size."""
import numpy as np
import pytest

import minifcrn as mf
from minifcrn.models import ENCODER_END, FCRN_A, FCRN_B, receptive_field


def test_parameter_counts_match_the_paper():
    a, b = FCRN_A().num_parameters(), FCRN_B().num_parameters()
    assert 1.3e6 <= a < 1.4e6, a      # "about 1.3 million"
    assert 3.55e6 <= b < 3.7e6, b     # "about 3.6 million"
    assert a == 1_365_249 and b == 3_616_385


@pytest.mark.parametrize("build, encoder_rf, output_rf", [(FCRN_A, 38, 62), (FCRN_B, 32, 52)])
def test_receptive_fields_measured_by_backprop(build, encoder_rf, output_rf):
    model = build(rng=0)
    assert receptive_field(model, ENCODER_END[model.arch]) == encoder_rf  # the paper's 38 and 32
    assert receptive_field(model) == output_rf


@pytest.mark.parametrize("build", [FCRN_A, FCRN_B])
@pytest.mark.parametrize("h, w", [(1, 1), (7, 13), (37, 53), (64, 64)])
def test_any_input_size_gives_a_density_of_the_same_size(device, build, h, w):
    model = build(rng=0).to(device)
    x = mf.tensor(np.random.default_rng(0).standard_normal((2, 1, h, w)), device=device, dtype=np.float32)
    with mf.no_grad():
        y = model(x)
    assert y.shape == (2, 1, h, w)


def test_padding_does_not_change_the_interior():
    """A multiple-of-8 image and the same image cropped by a few pixels agree away from the cut."""
    model = FCRN_A(rng=0)
    x = np.random.default_rng(1).standard_normal((1, 1, 64, 64)).astype(np.float32)
    with mf.no_grad():
        full = model(mf.tensor(x)).numpy()
        cropped = model(mf.tensor(x[:, :, :61, :59])).numpy()
    np.testing.assert_allclose(cropped[0, 0, :20, :20], full[0, 0, :20, :20], rtol=1e-4, atol=1e-5)


def test_gradient_reaches_the_input_through_every_layer():
    model = FCRN_B(rng=0)
    x = mf.tensor(np.random.default_rng(2).standard_normal((1, 1, 20, 20)), requires_grad=True, dtype=np.float32)
    model(x).sum().backward()
    assert x.grad.shape == (1, 1, 20, 20) and np.abs(x.grad).sum() > 0
    assert all(p.grad is not None for p in model.parameters())


def test_layers_by_name_and_bad_input():
    model = FCRN_A()
    assert model.layer_names[:3] == ["conv1", "relu1", "pool1"] and model.layer_names[-1] == "conv8"
    feats = model(mf.tensor(np.zeros((1, 1, 16, 16)), dtype=np.float32), upto="relu2")
    assert feats.shape == (1, 64, 8, 8)
    with pytest.raises(ValueError, match="no layer named 'conv99'"):
        model(mf.tensor(np.zeros((1, 1, 16, 16)), dtype=np.float32), upto="conv99")
    with pytest.raises(ValueError, match=r"input must have shape \(N, 1, H, W\), got \(1, 3, 16, 16\)"):
        model(mf.tensor(np.zeros((1, 3, 16, 16)), dtype=np.float32))
    with pytest.raises(ValueError, match="unknown architecture"):
        mf.models.FCRN("fcrn-c")


@pytest.mark.parametrize("arch, fused, probe", [("fcrn-a", {"conv6", "conv7"}, ("conv7", 32, 48, 32)),
                                                 ("fcrn-b", {"conv7", "conv8"}, ("conv8", 64, 48, 32))])
def test_upsampling_convolutions_run_fused_and_equal_to_the_layers(device, arch, fused, probe):
    """The decoder's up-sampling convolutions that fuse on the CPU give the density and every
    gradient of the up-sampling and convolution run one by one (float64), and ``upto`` one of
    them gives its map at full size."""
    model = mf.models.FCRN(arch, rng=0, dtype=np.float64).to(device)
    assert model.fused == (fused if device == "cpu" else set())
    layers = [layer for name, layer in model.layers if name in fused]
    x = np.random.default_rng(4).standard_normal((2, 1, 48, 32))
    runs = []
    for fused_now in (True, False):
        for layer in layers:
            layer.fused = fused_now
        for p in model.parameters():
            p.grad = None
        y = model(mf.tensor(x, device=device))
        (y * y).sum().backward()
        runs.append([y.numpy()] + [mf.tensor(p.grad).numpy() for p in model.parameters()])
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    name, *shape = probe
    with mf.no_grad():
        assert model(mf.tensor(x, device=device), upto=name).shape == (2, *shape)
