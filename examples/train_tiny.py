"""Train a tiny fully convolutional network with minifcrn and watch its loss fall.

The target is a density map: a Gaussian blob (sigma 2, x100 as in the FCRN
paper) at each bright spot of a synthetic image, so the network learns to turn
spots into blobs whose integral is the spot count.  Runs in seconds on a CPU:

    python examples/train_tiny.py [--steps 300] [--device cpu|cuda]
"""
import argparse

import numpy as np
from scipy import ndimage

import minifcrn as mf
import minifcrn.functional as F
from minifcrn import nn, optim


def make_batch(rng, n=4, size=32, spots=6):
    """Images with Gaussian spots and their density maps (sigma 2, scaled by 100)."""
    images = np.zeros((n, 1, size, size), np.float32)
    targets = np.zeros_like(images)
    for k in range(n):
        dots = np.zeros((size, size), np.float32)
        ys, xs = rng.integers(4, size - 4, spots), rng.integers(4, size - 4, spots)
        dots[ys, xs] = 1.0
        images[k, 0] = ndimage.gaussian_filter(dots, 1.5) * 20 + rng.normal(0, 0.05, (size, size))
        targets[k, 0] = ndimage.gaussian_filter(dots, 2.0) * 100
    images = (images - images.mean(axis=(2, 3), keepdims=True)) / images.std(axis=(2, 3), keepdims=True)
    return images, targets


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, rng=rng), nn.ReLU(), nn.UpsampleBilinear(2),
        nn.Conv2d(32, 16, 3, padding=1, rng=rng), nn.ReLU(), nn.Conv2d(16, 1, 1, rng=rng)).to(args.device)
    opt = optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)  # the paper's eq. 3
    print(f"{net.num_parameters()} parameters on {args.device}")
    for step in range(args.steps + 1):
        x, y = (mf.tensor(a, device=args.device) for a in make_batch(rng))
        opt.zero_grad()
        loss = F.mse_loss(net(x), y)
        loss.backward()
        opt.step()
        if step % 50 == 0:
            with mf.no_grad():
                count = float(net(x).numpy().sum() / 100 / len(x))
            print(f"step {step:4d}  loss {loss.item():10.3f}  count per image {count:5.2f} (true 6)")


if __name__ == "__main__":
    main()
