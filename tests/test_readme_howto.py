"""The README's how-to for a new user ("Your own cells") works as written: its fine-tuning and
counting commands, taken from the README itself, run on a folder of Fiji-style annotations with
only the epoch and step counts made small."""
import csv
import importlib.util
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_train import blobs

from minifcrn.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
SMALL = {"--epochs": "1", "--steps": "2", "--milestones": "1", "--finetune-epochs": "1"}


def howto_command(first_word):
    """The README how-to's command that starts with ``minifcrn <first_word>``, continuation lines joined."""
    howto = README.read_text().split("### Your own cells", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", howto, re.DOTALL)
    commands = [" ".join(b.replace("\\\n", " ").split()) for b in blocks]
    matches = [c for c in commands if c.startswith(f"minifcrn {first_word} ")]
    assert len(matches) == 1, f"expected one 'minifcrn {first_word}' command in the how-to, got {matches}"
    return shlex.split(matches[0])[1:]


def shrunk(argv):
    return [SMALL.get(argv[i - 1], a) if i else a for i, a in enumerate(argv)]


def write_fiji_annotated(folder, seeds):
    """PNG images with Fiji 'Analyze > Measure' tables of their points beside them (X, Y columns)."""
    folder.mkdir()
    for k in seeds:
        s = blobs(k, n=12, size=128)
        image = ((s.image - s.image.min()) / np.ptp(s.image) * 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"cells{k}.png")
        rows = [f"{i + 1},{x:.2f},{y:.2f}" for i, (x, y) in enumerate(s.points)]
        (folder / f"cells{k}.csv").write_text(" ,X,Y\n" + "\n".join(rows) + "\n")


def test_readme_howto_fine_tunes_counts_and_checks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_fiji_annotated(tmp_path / "my_annotated", [0, 1, 2])
    write_fiji_annotated(tmp_path / "my_check", [3])
    write_fiji_annotated(tmp_path / "my_images", [4, 5])

    train = shrunk(howto_command("train"))
    assert {"--init", "--data", "--val"} <= set(train)
    assert main(train) == 0
    model = Path(train[train.index("--out") + 1])
    assert (model / "best.npz").is_file() and (model / "log.csv").is_file()

    count = howto_command("count")
    assert count[count.index("--model") + 1] == f"{model}/best.npz"
    assert main(count) == 0
    out = Path(count[count.index("--out") + 1])
    lines = (out / "results.csv").read_text().splitlines()
    assert len(lines) == 3 and all(f"cells{k}.png" in "".join(lines) for k in (4, 5))
    if "--figure" in count and importlib.util.find_spec("matplotlib"):
        assert sorted(p.name for p in out.glob("*_figure.png")) == ["cells4_figure.png", "cells5_figure.png"]


MBM = README.parents[1] / "shared" / "data" / "mbm"


@pytest.mark.skipif(not MBM.is_dir(), reason="../shared/data/mbm is not here")
def test_readme_howto_training_goes_on_with_real_h_and_e_images(tmp_path, monkeypatch):
    """The how-to's fine-tuning command on four real MBM images (one for validation), at the
    README's rate and steps, one epoch of each phase: it ended with "loss became inf" before the
    rate was cut automatically; now it must train to a finite loss."""
    import shutil

    monkeypatch.chdir(tmp_path)
    for folder, names in (("my_annotated", ("001", "002", "003")), ("my_check", ("004",))):
        (tmp_path / folder).mkdir()
        for name in names:
            for kind in ("cell", "dots"):
                shutil.copy(MBM / f"{name}{kind}.png", tmp_path / folder)
    train = howto_command("train")
    one_epoch = {"--epochs": "1", "--milestones": "1", "--finetune-epochs": "1"}
    train = [one_epoch.get(train[i - 1], a) if i else a for i, a in enumerate(train)]
    assert main(train) == 0
    with open(tmp_path / "my_model" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(np.isfinite(float(r["train_loss"])) for r in rows)
