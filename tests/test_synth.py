"""The synthetic image generator: counts, positions, reproducibility, bit depths, files, CLI."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minifcrn.cli import main
from minifcrn.data.samples import load_samples
from minifcrn.errors import InputError
from minifcrn.synth import COMPONENTS, SynthConfig, SyntheticSamples, generate, write_dataset

configs = st.builds(
    SynthConfig,
    height=st.integers(1, 80), width=st.integers(1, 80),
    cells=st.tuples(st.integers(0, 40), st.integers(0, 40)).map(lambda t: (min(t), max(t))),
    radius=st.floats(0.5, 8), overlap=st.floats(0, 1), clumping=st.floats(0, 1),
    bit_depth=st.sampled_from([8, 16]))


@settings(max_examples=30)
@given(config=configs, seed=st.integers(0, 2**32 - 1))
def test_centres_are_as_many_as_asked_inside_the_image_and_the_pixels_fit_the_bit_depth(config, seed):
    made = generate(config, seed)
    lo, hi = config.cells
    assert lo <= made.count <= hi
    assert made.points.shape == (made.count, 2)
    x, y = made.points.T
    assert ((x >= 0) & (x <= config.width - 1) & (y >= 0) & (y <= config.height - 1)).all()
    assert made.image.shape == (config.height, config.width)
    assert made.image.dtype == (np.uint8 if config.bit_depth == 8 else np.uint16)


@pytest.mark.parametrize("bits", [8, 16])
def test_intensities_span_the_range_of_the_bit_depth(bits):
    image = generate(SynthConfig(bit_depth=bits, cells=(150, 150)), 3).image
    full = 2 ** bits - 1
    assert image.max() <= full
    assert image.max() > 0.5 * full  # nuclei are bright
    assert np.median(image) < 0.4 * full  # on a darker background


def test_an_exact_count_is_returned_exactly():
    assert generate(SynthConfig(cells=(200, 200)), 0).count == 200


def test_the_same_seed_gives_the_same_image_and_another_seed_another():
    a, b, c = generate(SynthConfig(), 7), generate(SynthConfig(), 7), generate(SynthConfig(), 8)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.points, b.points)
    assert not np.array_equal(a.image, c.image)


def test_nuclei_are_brighter_than_the_background_at_their_centres():
    made = generate(SynthConfig(cells=(30, 30), overlap=0.0), 1)
    cols, rows = np.rint(made.points).astype(int).T
    assert np.median(made.image[rows, cols]) > 2 * np.median(made.image)


def test_switching_off_noise_and_illumination_leaves_the_background_flat_and_dark():
    made = generate(SynthConfig(cells=(0, 0)).without("noise", "illumination"), 0)
    assert made.image.max() == 0


def test_every_component_can_be_switched_off_and_an_unknown_one_is_refused():
    for name in COMPONENTS:
        assert SynthConfig().without(name) != SynthConfig()
    with pytest.raises(InputError, match="unknown component 'colour'"):
        SynthConfig().without("colour")


@pytest.mark.parametrize("kwargs, message", [
    ({"cells": (5, 2)}, "cells must be a range"),
    ({"bit_depth": 12}, "bit_depth must be 8 or 16"),
    ({"height": 0}, "image size must be positive"),
    ({"overlap": 1.5}, "overlap must lie in"),
    ({"blur": -1.0}, "blur must be a finite number >= 0, got -1.0"),
    ({"photons": float("nan")}, "photons must be a finite number >= 0, got nan"),
    ({"radius": float("inf")}, "radius must be a positive number, got inf"),
])
def test_bad_settings_are_refused_with_their_name(kwargs, message):
    with pytest.raises(InputError, match=message):
        SynthConfig(**kwargs)


def test_synthetic_samples_are_made_on_demand_and_reproducible():
    samples = SyntheticSamples(5, SynthConfig(cells=(10, 20)), seed=4)
    assert len(samples) == 5
    first, again = samples[2], samples[np.int64(2)]
    assert np.array_equal(first.image, again.image) and first.count == again.count
    assert first.image.dtype == np.float32
    later = SyntheticSamples(2, SynthConfig(cells=(10, 20)), seed=4, offset=2)[0]
    assert np.array_equal(later.image, first.image)  # the same stream, shifted
    with pytest.raises(IndexError):
        samples[5]


@pytest.mark.parametrize("bits, suffix", [(8, ".png"), (16, ".tif")])
def test_written_sets_read_back_through_the_loader(tmp_path, bits, suffix):
    config = SynthConfig(height=40, width=60, cells=(5, 15), bit_depth=bits)
    paths = write_dataset(tmp_path, 3, config, seed=2)
    assert [p.suffix for p in paths] == [suffix] * 3
    samples = load_samples(tmp_path)
    made = [SyntheticSamples(3, config, seed=2)[i] for i in range(3)]
    for loaded, original in zip(samples, made):
        assert loaded.image.shape == (40, 60)
        assert np.array_equal(loaded.image, original.image)
        assert np.allclose(loaded.points, original.points, atol=5e-4)


def test_writing_again_keeps_the_files_already_there(tmp_path):
    config = SynthConfig(height=32, width=32, cells=(3, 3))
    first = write_dataset(tmp_path, 2, config)[0]
    stamp = first.stat().st_mtime_ns
    write_dataset(tmp_path, 3, config)
    assert first.stat().st_mtime_ns == stamp
    assert len(load_samples(tmp_path)) == 3


def test_cli_synth_writes_images_and_centres(tmp_path, capsys):
    assert main(["synth", "--synthetic", "2", "--out", str(tmp_path), "--size", "48x32", "--cells", "4", "6",
                 "--without", "noise"]) == 0
    samples = load_samples(tmp_path)
    assert [s.image.shape for s in samples] == [(32, 48)] * 2
    assert all(4 <= s.count <= 6 for s in samples)


def test_cli_synth_bad_range_is_one_line(tmp_path, capsys):
    assert main(["synth", "--synthetic", "2", "--out", str(tmp_path), "--cells", "9", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cells must be a range" in err


def test_cli_train_on_generated_images_writes_weights(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--synthetic", "4", "--out", str(out), "--epochs", "1", "--steps", "2",
                 "--batch-size", "2", "--patch-size", "32", "--size", "48", "--cells", "5", "10"]) == 0
    assert (out / "best.npz").is_file()
    assert main(["train", "--synthetic", "4", "--data", str(tmp_path), "--out", str(out)]) == 2


def test_the_cli_default_cell_range_keeps_the_cells_per_pixel_at_other_sizes(tmp_path):
    from minifcrn.cli import main

    d = SynthConfig()
    assert main(["synth", "--synthetic", "4", "--out", str(tmp_path), "--size", "64x128"]) == 0
    share = 64 * 128 / (d.width * d.height)
    lo, hi = round(d.cells[0] * share), round(d.cells[1] * share)
    samples = load_samples(tmp_path)
    assert len(samples) == 4
    for s in samples:  # (at 256x256's range, 64x128 would be packed solid: a constant image)
        assert lo <= s.count <= hi and s.image.std() > 0
