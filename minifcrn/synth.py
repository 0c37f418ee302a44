"""Synthetic fluorescence-microscopy images of nuclei, with their exact centres.

Written from the ideas of the SIMCEP simulator (Lehmussola et al., IEEE TMI 2007),
which made the VGG cells set.  One image is built in five steps:

1. **Placement.**  K centres, a ``clumping`` share of them scattered (Gaussian,
   ``clump_spread`` radii) around a few clump seeds, the rest uniform; a centre
   closer than ``2 r (1 - overlap)`` to an earlier one is drawn again, so
   ``overlap`` = 0 keeps nuclei apart and 1 lets them lie on top of each other.
2. **Shape.**  Each nucleus is an ellipse with radius r ~ N(radius, (radius_sd r)^2),
   axes r / sqrt(1 - e) and r sqrt(1 - e) (e uniform in [0, eccentricity], area
   kept), random orientation, its boundary deformed by random harmonics:
   rho(phi) = 1 + sum_m a_m cos(m phi + p_m), m = 2..4, a_m ~ U(0, deformation).
3. **Texture and brightness.**  Inside, intensity b_k (1 - shading rho^2)(1 + texture n(p)),
   b_k ~ U(dimmest, 1) and n blurred white noise (peak 1); overlapping nuclei add
   up, as fluorescence does.  Edges are anti-aliased over one pixel.
4. **Optics.**  A Gaussian point-spread blur of ``blur`` pixels (twice that for
   the ``defocus`` share of nuclei, which lie out of the focal plane), a ``background``
   level, and uneven illumination: the image times 1 + ``illumination`` f(p), f a
   smooth random field in [-1, 1] (a few plane waves).
5. **Camera.**  Poisson shot noise with ``photons`` expected photons at brightness 1,
   Gaussian read noise, then scaled (brightness 1 -> ``gain`` of full scale),
   clipped and rounded to 8 or 16 bits.

Everything is drawn from one ``numpy.random.Generator``: the same seed gives
the same image (how fast: ``python bench/synthetic.py speed``, in bench/RESULTS.md).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np
from scipy import ndimage

from minifcrn.backend.jit import njit
from minifcrn.data.samples import Sample
from minifcrn.errors import InputError, is_positive

HARMONICS = (2, 3, 4)


@dataclass(frozen=True)
class SynthConfig:
    """What a generated image looks like; the defaults imitate the VGG cells set."""

    height: int = 256
    width: int = 256
    cells: tuple = (74, 317)     # inclusive range of the number of nuclei
    radius: float = 4.5          # mean nucleus radius, pixels
    radius_sd: float = 0.15      # relative spread of radii
    eccentricity: float = 0.4    # largest e of the ellipses (axes ratio sqrt(1 - e))
    deformation: float = 0.06    # largest amplitude of each boundary harmonic
    texture: float = 0.2         # relative amplitude of the interior texture
    shading: float = 0.3         # how much darker a nucleus is at its rim than at its centre
    dimmest: float = 0.55        # nucleus brightness is uniform in [dimmest, 1]
    clumping: float = 0.3        # share of nuclei placed in clumps
    clump_spread: float = 2.5    # clump size, in nucleus radii
    overlap: float = 0.4         # 0: nuclei never overlap, 1: any overlap
    blur: float = 1.5            # point-spread sigma, pixels
    defocus: float = 0.3         # share of nuclei out of focus, blurred twice as much
    background: float = 0.25     # background level, relative to a nucleus
    illumination: float = 0.3    # relative amplitude of uneven illumination
    photons: float = 400.0       # expected photons at brightness 1 (shot noise)
    read_noise: float = 0.01     # Gaussian camera noise, relative to brightness 1
    gain: float = 0.9            # brightness 1 as a share of full scale
    bit_depth: int = 8

    def __post_init__(self):
        lo, hi = self.cells
        if not (isinstance(lo, (int, np.integer)) and isinstance(hi, (int, np.integer)) and 0 <= lo <= hi):
            raise InputError(f"synth: cells must be a range (lo, hi) with 0 <= lo <= hi, got {self.cells!r}")
        if self.height < 1 or self.width < 1:
            raise InputError(f"synth: image size must be positive, got {self.width}x{self.height}")
        if self.bit_depth not in (8, 16):
            raise InputError(f"synth: bit_depth must be 8 or 16, got {self.bit_depth!r}")
        if not is_positive(self.radius):
            raise InputError(f"synth: radius must be a positive number, got {self.radius!r}")
        for name in ("clumping", "overlap", "eccentricity"):
            value = getattr(self, name)
            if not 0 <= value <= 1 or (name == "eccentricity" and value >= 1):
                raise InputError(f"synth: {name} must lie in [0, 1{')' if name == 'eccentricity' else ']'}, "
                                 f"got {value!r}")
        negative = [f.name for f in fields(self) if isinstance(getattr(self, f.name), float)
                    and not is_positive(getattr(self, f.name), or_zero=True)]
        if negative:
            raise InputError(f"synth: {negative[0]} must be a finite number >= 0, got {getattr(self, negative[0])!r}")

    @classmethod
    def sized(cls, width, height, cells=None, **settings) -> SynthConfig:
        """The default look at ``width`` x ``height``; ``cells`` (lo, hi) defaults to the default
        range scaled by the area, so that the cells per pixel stay as they are."""
        d = cls()
        area = width * height / (d.width * d.height)
        cells = tuple(cells) if cells is not None else tuple(round(c * area) for c in d.cells)
        return cls(width=width, height=height, cells=cells, **settings)

    def without(self, *components: str) -> SynthConfig:
        """This configuration with components switched off (for ablations): see ``COMPONENTS``."""
        changes = {}
        for name in components:
            if name not in COMPONENTS:
                raise InputError(f"synth: unknown component {name!r}; choose from {', '.join(COMPONENTS)}")
            changes.update(COMPONENTS[name])
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return {**asdict(self), "cells": list(self.cells)}


COMPONENTS = {  # what switching a component off sets
    "shape": {"eccentricity": 0.0, "deformation": 0.0, "radius_sd": 0.0},
    "texture": {"texture": 0.0, "shading": 0.0, "dimmest": 1.0},
    "clumps": {"clumping": 0.0, "overlap": 0.0},
    "blur": {"blur": 0.0, "defocus": 0.0},
    "illumination": {"illumination": 0.0, "background": 0.0},
    "noise": {"photons": 0.0, "read_noise": 0.0},
}


@dataclass
class SynthImage:
    image: np.ndarray   # uint8 or uint16 (H, W)
    points: np.ndarray  # float64 (K, 2): the exact centres as (x, y)

    @property
    def count(self) -> int:
        return len(self.points)


def generate(config: SynthConfig = SynthConfig(), rng=None) -> SynthImage:
    """One synthetic image and its nucleus centres; ``rng`` a Generator or a seed."""
    rng = np.random.default_rng(rng)
    c = config
    k = int(rng.integers(c.cells[0], c.cells[1] + 1))
    centres = place_centres(k, c, rng)
    radii = c.radius * np.clip(1 + c.radius_sd * rng.standard_normal(k), 0.5, 1.5)
    squash = np.sqrt(1 - rng.uniform(0, c.eccentricity, k))
    harmonics = rng.uniform(0, c.deformation, (k, len(HARMONICS)))
    phases = rng.uniform(0, 2 * np.pi, (k, len(HARMONICS)))
    brightness = rng.uniform(c.dimmest, 1.0, k)
    texture = texture_field(rng, (c.height, c.width), max(0.5, c.radius / 3)) * c.texture
    angles = rng.uniform(0, np.pi, k)
    blurred = rng.random(k) < c.defocus
    canvas = np.zeros((c.height, c.width), np.float64)
    for group, sigma in ((~blurred, c.blur), (blurred, 2 * c.blur)):
        layer = np.zeros_like(canvas)
        draw_nuclei(layer, texture, centres[group], radii[group] / squash[group], radii[group] * squash[group],
                    angles[group], harmonics[group], phases[group], brightness[group], c.shading)
        canvas += ndimage.gaussian_filter(layer, sigma, mode="nearest") if sigma > 0 else layer
    light = 1 + c.illumination * illumination_field(rng, canvas.shape)
    signal = np.maximum((canvas + c.background) * light, 0)
    if c.photons > 0:
        signal = rng.poisson(signal * c.photons) / c.photons
    if c.read_noise > 0:
        signal = signal + c.read_noise * rng.standard_normal(signal.shape)
    full = 2 ** c.bit_depth - 1
    image = np.clip(np.rint(signal * c.gain * full), 0, full).astype(np.uint8 if c.bit_depth == 8 else np.uint16)
    return SynthImage(image, centres)


def image_seed(seed: int, index: int) -> np.random.Generator:
    """The generator of image ``index`` of a set seeded by ``seed``: each image is
    reproducible on its own, whatever was generated before it."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


class SyntheticSamples:
    """``n`` generated training samples, made when indexed (nothing is stored):
    ``samples[i]`` is always the same image, a ``Sample`` like a file's, image
    ``offset + i`` of the stream seeded by ``seed``."""

    def __init__(self, n: int, config: SynthConfig = SynthConfig(), seed: int = 0, offset: int = 0):
        if n < 1:
            raise InputError(f"synth: the number of images must be at least 1, got {n}")
        self.n, self.config, self.seed, self.offset = n, config, seed, offset

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Sample:
        if not -self.n <= index < self.n:
            raise IndexError(index)
        index = index % self.n + self.offset
        made = generate(self.config, image_seed(self.seed, index))
        return Sample(f"synth_{index:05d}", made.image.astype(np.float32), made.points)


def write_dataset(out, n: int, config: SynthConfig = SynthConfig(), seed: int = 0, start: int = 0,
                  progress=False):
    """Write images ``synth_NNNNN.png`` (8-bit) or ``.tif`` (16-bit) with their centres in
    ``synth_NNNNN.csv`` (x,y), the layout ``load_samples`` reads; each file atomically,
    files already there are kept (so an interrupted call resumes).  Returns the image paths."""
    import csv
    import io
    from pathlib import Path

    from minifcrn.io import atomic_write
    from minifcrn.progress import bar

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = ".png" if config.bit_depth == 8 else ".tif"
    paths = []
    for index in bar(range(start, start + n), desc="generating", unit="image", enabled=progress):
        image_path, csv_path = out / f"synth_{index:05d}{suffix}", out / f"synth_{index:05d}.csv"
        paths.append(image_path)
        if image_path.is_file() and csv_path.is_file():
            continue
        made = generate(config, image_seed(seed, index))
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["x", "y"])
        writer.writerows([f"{x:.3f}", f"{y:.3f}"] for x, y in made.points)
        with atomic_write(csv_path, "w") as f:
            f.write(buffer.getvalue())
        encoded = io.BytesIO()
        if suffix == ".png":
            from PIL import Image
            Image.fromarray(made.image).save(encoded, format="PNG")
        else:
            import tifffile
            tifffile.imwrite(encoded, made.image)
        with atomic_write(image_path) as f:
            f.write(encoded.getvalue())
    return paths


def place_centres(k: int, config: SynthConfig, rng) -> np.ndarray:
    """(k, 2) centres (x, y) inside the image: clumped and uniform, overlap-limited."""
    c = config
    size = np.array([c.width - 1, c.height - 1], np.float64)
    seeds = rng.uniform(0, 1, (max(1, k // 20), 2)) * size
    spread = c.clump_spread * c.radius
    min_distance = 2 * c.radius * (1 - c.overlap)
    points = np.empty((k, 2))
    for i in range(k):
        for attempt in range(30):  # then accept any position: the count is what was asked
            if rng.random() < c.clumping:
                p = np.clip(seeds[rng.integers(len(seeds))] + spread * rng.standard_normal(2), 0, size)
            else:
                p = rng.uniform(0, 1, 2) * size
            if min_distance <= 0 or i == 0 or attempt == 29 or \
                    np.min(np.sum((points[:i] - p) ** 2, axis=1)) >= min_distance ** 2:
                break
        points[i] = p
    return points


def texture_field(rng, shape, scale: float) -> np.ndarray:
    """Smooth unit-peak noise: white noise blurred with a Gaussian of ``scale`` pixels, in [-1, 1]."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), scale, truncate=3.0)
    peak = np.abs(field).max()
    return field / peak if peak > 0 else field


def illumination_field(rng, shape, waves: int = 3) -> np.ndarray:
    """Slowly varying light in [-1, 1]: a sum of ``waves`` random plane waves of at most one period
    across the image, each cos(a(y) + b(x)) evaluated separably as cos a cos b - sin a sin b."""
    h, w = shape
    field = np.zeros(shape)
    for _ in range(waves):
        fy, fx = rng.uniform(-1, 1, 2) * 2 * np.pi
        phase = rng.uniform(0, 2 * np.pi)
        a = fy * np.arange(h)[:, None] / max(h, w) + phase
        b = fx * np.arange(w)[None, :] / max(h, w)
        field += np.cos(a) * np.cos(b) - np.sin(a) * np.sin(b)
    return field / waves


@njit()
def draw_nuclei(canvas, texture, centres, major, minor, angle, harmonics, phases, brightness, shading):
    """Add each nucleus to ``canvas`` (H, W), pixel by pixel over its bounding box.

    Pixel p lies at normalised radius rho = |A^-1 R^T (p - c)| and angle phi
    (A = diag(major, minor), R the rotation); it is inside where rho < boundary(phi).
    """
    h, w = canvas.shape
    for k in range(centres.shape[0]):
        cx, cy = centres[k, 0], centres[k, 1]
        cos, sin = np.cos(angle[k]), np.sin(angle[k])
        bulge = 1.0 + harmonics[k].sum()
        reach = major[k] * bulge + 1.5
        for y in range(max(0, int(cy - reach)), min(h, int(cy + reach) + 2)):
            for x in range(max(0, int(cx - reach)), min(w, int(cx + reach) + 2)):
                dx, dy = x - cx, y - cy
                u = (cos * dx + sin * dy) / major[k]
                v = (-sin * dx + cos * dy) / minor[k]
                rho = np.sqrt(u * u + v * v)
                if rho > bulge + 1.0 / minor[k]:
                    continue
                phi = np.arctan2(v, u)
                boundary = 1.0
                for m in range(harmonics.shape[1]):
                    boundary += harmonics[k, m] * np.cos((m + 2) * phi + phases[k, m])
                # anti-aliased edge: full inside, fading to 0 over one pixel across the boundary
                edge = min(1.0, max(0.0, (boundary - rho) * minor[k] + 0.5))
                if edge > 0:
                    r = min(rho, 1.0)
                    canvas[y, x] += edge * brightness[k] * (1 - shading * r * r) * (1 + texture[y, x])
