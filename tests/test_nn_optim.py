"""Layers, state dicts, orthogonal initialisation, the paper's momentum SGD, the
step schedule, and a tiny network that must overfit a small batch."""
import numpy as np
import pytest

import minifcrn as mf
import minifcrn.functional as F
from minifcrn import nn, optim
from minifcrn.init import orthogonal_array


def tiny_net(seed=0, width=8, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, rng=rng, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, width, 3, padding=1, rng=rng, dtype=dtype), nn.ReLU(), nn.UpsampleBilinear(2),
        nn.Conv2d(width, 1, 1, rng=rng, dtype=dtype))


@pytest.mark.paths("reference", "cuda")  # array code only: the same NumPy on every CPU path
def test_parameters_and_state_dict_round_trip(device):
    net = tiny_net().to(device)
    names = [n for n, _ in net.named_parameters()]
    assert names == ["0.weight", "0.bias", "3.weight", "3.bias", "6.weight", "6.bias"]
    assert net.num_parameters() == 8 * 9 + 8 + 8 * 8 * 9 + 8 + 8 + 1
    state = net.state_dict()
    other = tiny_net(seed=1).to(device)
    assert not np.array_equal(other.state_dict()["0.weight"], state["0.weight"])
    other.load_state_dict(state)
    for key, value in other.state_dict().items():
        np.testing.assert_array_equal(value, state[key])


def test_load_state_dict_rejects_mismatches():
    net = tiny_net()
    state = net.state_dict()
    with pytest.raises(ValueError, match=r"missing \['6.bias'\]"):
        net.load_state_dict({k: v for k, v in state.items() if k != "6.bias"})
    state["0.weight"] = np.zeros((8, 1, 5, 5))
    with pytest.raises(ValueError, match=r"0.weight has shape \(8, 1, 5, 5\), the model expects \(8, 1, 3, 3\)"):
        net.load_state_dict(state)


@pytest.mark.parametrize("shape", [(8, 1, 3, 3), (32, 64, 3, 3), (512, 4, 1, 1), (5,)])
def test_orthogonal_init(shape):
    w = orthogonal_array(shape, rng=0, dtype=np.float64).reshape(shape[0], -1)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    np.testing.assert_allclose(gram, np.eye(len(gram)), atol=1e-12)


@pytest.mark.paths("reference", "cuda-emulated", "cuda")  # no CPU fast path
def test_sgd_is_eq3_exactly(device):
    """delta <- beta*delta + (1-beta)*lr*(g + wd*w);  w <- w - delta, checked over three steps."""
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(5)
    p = nn.Parameter(mf.tensor(w0, device=device, dtype=np.float64).data)
    opt = optim.SGD([p], lr=0.01, momentum=0.9, weight_decay=5e-4)
    w, delta = w0.copy(), np.zeros(5)
    for step in range(3):
        g = rng.standard_normal(5)
        p.grad = mf.tensor(g, device=device, dtype=np.float64).data
        opt.step()
        delta = 0.9 * delta + 0.1 * 0.01 * (g + 5e-4 * w)
        w = w - delta
        np.testing.assert_allclose(p.numpy(), w, rtol=1e-14, atol=1e-15)
    opt.zero_grad()
    assert p.grad is None


def test_sgd_state_dict_round_trip():
    p = nn.Parameter(np.ones(3, np.float32))
    opt = optim.SGD([p], lr=0.1)
    p.grad = np.ones(3, np.float32)
    opt.step()
    copy = optim.SGD([nn.Parameter(np.ones(3, np.float32))], lr=0.5).load_state_dict(opt.state_dict())
    assert copy.lr == 0.1
    np.testing.assert_array_equal(copy.velocity[0], opt.velocity[0])


def test_sgd_bad_arguments():
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="need lr > 0"):
        optim.SGD([nn.Parameter(np.ones(1))], lr=0.0)


def test_step_schedule_divides_by_ten():
    lrs = [optim.step_lr(0.01, [4, 2], epoch) for epoch in range(5)]
    np.testing.assert_allclose(lrs, [0.01, 0.01, 0.001, 0.001, 0.0001])


def test_tiny_network_overfits_a_small_batch(device):
    """A 16-channel student fits the output of a 4-channel teacher on two images to ~0 loss."""
    rng = np.random.default_rng(0)
    x = mf.tensor(rng.standard_normal((2, 1, 16, 16)), device=device, dtype=np.float32)
    with mf.no_grad():
        y = tiny_net(seed=7, width=4).to(device)(x)
    net = tiny_net(seed=0, width=16).to(device)
    opt = optim.SGD(net.parameters(), lr=0.3, momentum=0.9)
    losses = []
    for _ in range(600):
        opt.zero_grad()
        loss = F.mse_loss(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.005 * losses[0], (losses[0], losses[-1])
