"""The package as a user meets it: ``minifcrn.count`` and ``count_many``, the old import path,
one batch writing into a folder at a time, the shared command-line options, layers that only
look down, and no file left inside the installed package."""
import ast
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import minifcrn
from minifcrn import counting
from minifcrn.cli import COUNTING, build_parser, main
from minifcrn.inference import ASSETS

SAMPLE = ASSETS / "sample.png"
PACKAGE = Path(minifcrn.__file__).parent


def test_minifcrn_count_is_the_counting_function():
    r = minifcrn.count(SAMPLE)
    assert isinstance(r, minifcrn.CountResult)
    assert r.count == pytest.approx(float(r.density.sum(dtype=np.float64)))
    (row,) = minifcrn.count_many([SAMPLE])
    assert isinstance(row, minifcrn.CountRow) and row.error == ""
    assert row.count == round(r.count, 2) and row.detections == len(r.detections)


def test_the_old_import_path_still_counts_with_a_deprecation_warning():
    probe = """
import warnings
import minifcrn
import minifcrn.count as mc
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    n = mc.count(r"{sample}").count
    from minifcrn.count import load_model
assert [w.category for w in caught] == [DeprecationWarning] * 2, caught
assert "minifcrn.counting.count" in str(caught[0].message)
assert abs(minifcrn.count(r"{sample}").count - n) < 1e-9  # still callable after the import
print("ok")
""".format(sample=SAMPLE)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_a_second_batch_into_the_same_folder_is_refused_and_nothing_is_lost(tmp_path, capsys):
    out = tmp_path / "out"
    with counting.writing_to(out):  # as a batch still running in another process would
        assert main(["count", str(SAMPLE), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"another minifcrn count is writing into {out}" in err[0]
        assert not (out / "results.csv").exists()
    assert main(["count", str(SAMPLE), "--out", str(out)]) == 0  # once it is done
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [Path(r["file"]).name for r in rows] == ["sample.png"] and float(rows[0]["count"]) > 0


def test_count_and_evaluate_share_the_counting_options():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for command in ("count", "evaluate"):
        dests = {a.dest for a in commands[command]._actions}
        assert set(COUNTING) <= dests, command
    args = parser.parse_args(["evaluate", "d", "--cell-size", "12", "--tile-size", "64"])
    assert (args.cell_size, args.tile_size, args.threshold) == ("12", 64, counting.DEFAULT_THRESHOLD)
    assert parser.parse_args(["count", "x.png"]).cell_size == "auto"


def test_evaluate_takes_cell_size_and_tile_size(tmp_path, capsys):
    assert main(["synth", "--synthetic", "2", "--out", str(tmp_path), "--size", "64", "--cells", "4", "8"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path), "--tile-size", "32", "--cell-size", "9", "--json"]) == 0
    assert main(["evaluate", str(tmp_path), "--tile-size", "12"]) == 2
    assert "tile size must be a positive multiple of 8, got 12" in capsys.readouterr().err


def test_synth_takes_seed_as_train_does(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert main(["synth", "--synthetic", "1", "--out", str(tmp_path / name), "--seed", str(seed), "--size", "48",
                     "--cells", "4", "8"]) == 0
    a, b, c = (np.asarray(Image.open(tmp_path / name / "synth_00000.png")) for name in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def _imports(path: Path, module: str, modules) -> set:
    """The minifcrn modules that ``path`` (module ``module``) imports, anywhere in the file:
    ``from a import b`` imports module a.b if there is one, else a."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base])
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return {name for name in found if name in modules and name != module}


def test_no_import_cycle_in_the_package():
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {m: _imports(p, m, modules) for m, p in modules.items()}
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for t in sorted(graph[m]):
            assert state.get(t) != "open", "import cycle: " + " -> ".join(path[path.index(t):] + [t])
            if t not in state:
                visit(t)
        path.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert "minifcrn.ops.arithmetic" not in graph["minifcrn.autograd"]  # operators attached from the ops


def test_running_the_package_writes_no_file_inside_it(tmp_path):
    """Numba's cache goes to the user's cache folder, not beside the sources: files that ``pip
    uninstall`` does not know would be left in site-packages and hide a later install."""
    before = {p for p in PACKAGE.rglob("*") if p.is_file()}
    env = {**{k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}, "XDG_CACHE_HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "minifcrn", "count", str(SAMPLE)], env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    new = {p for p in PACKAGE.rglob("*") if p.is_file()} - before
    assert not [p for p in new if p.suffix in (".nbi", ".nbc")], new
    assert list((tmp_path / "minifcrn" / "numba").rglob("*.nbi"))


def test_count_takes_a_list_and_gray_is_grey(capsys):
    one = minifcrn.count(SAMPLE)
    image = np.asarray(Image.open(SAMPLE))
    both = minifcrn.count([SAMPLE, image], channel="gray")
    assert [type(r) for r in both] == [minifcrn.CountResult] * 2
    assert both[0].count == one.count and both[1].count == pytest.approx(one.count, rel=1e-6)
    assert main(["count", str(SAMPLE), "--channel", "gray"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header.split() == ["count", "detections", "cell", "size", "px", "channel", "file"] and row.split()[-1] == str(SAMPLE)
