"""The examples run as written (the walkthrough in its reduced mode)."""
import subprocess
import sys
from pathlib import Path

from PIL import Image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script, *args, cwd):
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_walkthrough_quick_shows_every_step_and_writes_its_pictures(tmp_path):
    out = run("walkthrough.py", "--quick", "--out", "pics", cwd=tmp_path)
    steps = [line.split(".")[0] for line in out.splitlines() if line[:1].isdigit()]
    assert sorted(set(steps)) == ["1", "2", "3", "4", "5"]
    names = ["count.png", "inversion.png", "target.png", "patches.png"]
    try:
        import matplotlib  # noqa: F401 - the loss curve needs the viz extra
        names.append("loss.png")
    except ImportError:
        pass
    for name in names:
        with Image.open(tmp_path / "pics" / name) as png:
            assert png.format == "PNG" and min(png.size) > 100


def test_train_tiny_loss_falls(tmp_path):
    out = run("train_tiny.py", "--steps", "60", cwd=tmp_path)
    losses = [float(line.split("loss")[1].split()[0]) for line in out.splitlines() if "loss" in line]
    assert losses[-1] < 0.5 * losses[0]
