"""Inverting feature representations (paper section 5; Mahendran & Vedaldi 2015).

Given an image x0 and a layer, record its features phi0 = phi(x0), start from a
random image and find

    x* = argmin_x  E(x) = ||phi(x) - phi0||^2 / ||phi0||^2  +  lambda ||x||^2 / n      (eq. 4-5)

by gradient descent with momentum on the input (eq. 6-7):

    dx <- beta dx - eta_t grad E(x),   x <- x + dx,   beta = 0.9,

and each time a step would raise E, going back to the best x so far with the
momentum reset and eta_t halved, until it has fallen 1000-fold (converged) or the
iterations run out; so the recorded E never rises.  Dividing the feature term by ||phi0||^2
and the penalty by the n pixels only rescales the paper's E (the same minimiser for
a rescaled lambda), so one learning rate and lambda serve every layer.  The gradient
reaches the input through every op's backward; the weights are frozen meanwhile.

How well the image comes back shows what a layer keeps: the first layers keep
almost everything, deeper ones only what the density needs (the paper's Figure 11).
Layers are the model's own names (``FCRN.layer_names``): ``convK`` is the K-th
convolution's output before its ReLU, ``reluK`` after it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minifcrn.autograd import Tensor, no_grad, tensor
from minifcrn.backend import to_device
from minifcrn.data.images import read_image, standardize, to_plane
from minifcrn.errors import InputError


@dataclass
class Reconstruction:
    layer: str
    image: np.ndarray          # the reconstruction (H, W), in the standardised input's units
    objective: list = field(default_factory=list)  # E(x) of each accepted step, falling
    feature_error: float = float("nan")  # ||phi(x) - phi0||^2 / ||phi0||^2 at the end
    correlation: float = float("nan")    # Pearson correlation of the reconstruction with the input


def conv_layers(model) -> list[str]:
    """The names of the model's convolutions, in order (the rows of the paper's Figure 11)."""
    return [name for name in model.layer_names if name.startswith("conv")]


@contextlib.contextmanager
def frozen(model):
    """The model's parameters stop asking for gradients (only the input's is wanted)."""
    params = model.parameters()
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad = False
    try:
        yield model
    finally:
        for p, flag in zip(params, before):
            p.requires_grad = flag


def as_plane(image, channel="grey", roi=None) -> np.ndarray:
    """A standardised float64 plane from a path or array, cut to ``roi`` = (x0, y0, x1, y1)."""
    plane = read_image(image, channel) if isinstance(image, (str, Path)) else to_plane(image, channel)
    source = str(image) if isinstance(image, (str, Path)) else "image"
    if roi is not None:
        from minifcrn.counting import parse_roi
        x0, y0, x1, y1 = parse_roi(roi, plane.shape, source)
        plane = plane[y0:y1, x0:x1]
    return standardize(plane, source).astype(np.float64)


def _check_layer(model, layer):
    if layer not in model.layer_names:
        raise InputError(f"invert: {model.arch} has no layer {layer!r}; layers are {', '.join(model.layer_names)}")


def reconstruct(model, image, layer, iterations=300, lr=0.5, lam=1e-3, momentum=0.9, seed=0,
                channel="grey", roi=None, device="cpu", on_step=None) -> Reconstruction:
    """Reconstruct ``image`` (path or array) from the features of ``layer``; see the module docstring.
    ``on_step()`` is called after every iteration (a progress bar's update)."""
    from minifcrn.inference import load_model

    model = load_model(model, device)
    _check_layer(model, layer)
    if iterations < 1 or not lr > 0 or not lam >= 0 or not 0 <= momentum < 1:
        raise InputError(f"invert: need iterations >= 1, lr > 0, lambda >= 0 and 0 <= momentum < 1; got "
                         f"{iterations}, {lr}, {lam}, {momentum}")
    plane = as_plane(image, channel, roi)
    dtype = np.float32
    with no_grad():
        phi0 = model(tensor(plane[None, None], device=device, dtype=dtype), upto=layer).data
    norm = float((phi0.astype(np.float64) ** 2).sum()) or 1.0
    target = Tensor(phi0)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(plane.shape) * 0.1
    step = np.zeros_like(x)
    best, objective, eta = None, [], None

    def energy_and_gradient(values):
        xt = tensor(values[None, None], requires_grad=True, device=device, dtype=dtype)
        diff = model(xt, upto=layer) - target
        feature = (diff * diff).sum() * (1.0 / norm)
        energy = feature + (xt * xt).mean() * lam
        energy.backward()
        return float(energy.item()), float(feature.item()), to_device(xt.grad, "cpu")[0, 0].astype(np.float64)

    with frozen(model):
        for _ in range(iterations):
            if on_step is not None:
                on_step()
            e, feature, grad = energy_and_gradient(x)
            if eta is None:  # the first step moves a pixel by ``lr`` (RMS), whatever the layer's scale
                eta = lr = lr / max(float(np.sqrt(np.mean(grad * grad))), 1e-30)
            if best is not None and e > best[1]:  # overshot: back to the best point, smaller steps
                x, step, eta = best[0], np.zeros_like(x), eta * 0.5
                if eta < lr * 1e-3:
                    break  # converged: no step size lowers E any more
                continue
            best = (x, e, feature, grad)
            objective.append(e)
            step = momentum * step - eta * grad
            x = x + step
    x, _, feature, _ = best
    correlation = float(np.corrcoef(x.ravel(), plane.ravel())[0, 1]) if x.std() > 0 and plane.std() > 0 else 0.0
    return Reconstruction(layer, x.astype(np.float32), objective, feature, correlation)


def reconstruct_all(model, image, layers=None, progress=False, **options) -> list[Reconstruction]:
    """``reconstruct`` from each of ``layers`` (default: every convolution, the paper's Figure 11).
    With ``progress``, a bar per layer in a terminal, and a line per layer when it is done."""
    import time

    from tqdm import tqdm

    from minifcrn.inference import load_model

    model = load_model(model, options.get("device", "cpu"))
    layers = layers or conv_layers(model)
    for name in layers:
        _check_layer(model, name)
    results = []
    for k, name in enumerate(layers):
        t0 = time.perf_counter()
        with tqdm(total=options.get("iterations", 300), desc=f"{name} ({k + 1}/{len(layers)})", unit="step",
                  disable=None if progress else True, leave=False) as bar:
            results.append(reconstruct(model, image, name, on_step=bar.update, **options))
        if progress:
            tqdm.write(f"inverted {name} ({k + 1}/{len(layers)}): {len(results[-1].objective)} steps, "
                       f"{time.perf_counter() - t0:.1f} s")
    return results
