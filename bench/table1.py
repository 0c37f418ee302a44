#!/usr/bin/env python
"""The paper's Table 1 on the VGG cells: MAE on images 101-200 for N training images, five draws.

    python bench/table1.py train --model fcrn-a --n 32 --draws 0      # some runs (resumable)
    python bench/table1.py train                                       # every missing run, in order
    python bench/table1.py report                                      # the RESULTS.md section
    python bench/table1.py detect                                      # detection scores, best run per N
    python bench/table1.py ensemble --n 32                             # the five draws' networks averaged
    python bench/table1.py errors --variant count-last-cut --n 32      # per-image errors the draws share

Protocol (``minifcrn.protocol``): for N in {8, 16, 32, 64} and draws 0-4, N
training and N validation images drawn from images 1-100 (for N = 64 the
other 36 validate), the checkpoint with the lowest validation MAE, tested on
101-200.  Every run is seeded by (N, draw), trains in ``--work/<run>``
(checkpointed every epoch: rerun the same command after an interruption and it
continues) and, when it ends, appends one JSON line to ``bench/runs/table1.jsonl``
(``model``, ``variant``, ``N``, ``draw``, ``seed``, ``test_mae``, ``val_mae``,
``epochs``, ``wall_s``, ``device``, ...).  The table is made from those lines
alone, so it can be filled over several sittings and regenerated at any time.
A patch phase whose loss becomes NaN starts again from its initial weights at a
third of the rate, at most twice (``MAX_RATE_CUTS``), each rate in a folder of
its own; the row lists the rates that diverged (``diverged_lrs``).

Recipes (``VARIANTS``), each sized to a fixed budget of steps whatever N, the
ensemble and the detection protocol are described, with the one-draw probes
that were tried and dropped, in ``bench/notes/table1-recipes.md``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

RUNS = common.RUNS_DIR / "table1.jsonl"
DETECT_RUNS = common.RUNS_DIR / "table1-detect.jsonl"
ENSEMBLE_RUNS = common.RUNS_DIR / "table1-ensemble.jsonl"
THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)  # detection thresholds tried, as fractions of one cell's peak
MIN_DISTANCES = (1, 2, 3, 4, 5)
MATCH_RADIUS = 5.0
VGG = common.REPO_DIR.parent / "shared" / "data" / "vgg_cells"
PATCHES = {"epochs": 10, "steps_per_epoch": 100, "lr": 0.3, "milestones": [8]}  # 1000 batches of 8
MAX_RATE_CUTS = 2  # a patch phase whose loss becomes NaN starts again at a third of the rate, at most twice
WHOLE_STEPS = 256  # whole-image steps in the fine-tuning phase (epochs = ceil(256 / N))
# the whole-image phase of each recipe, each built on the one before (see bench/notes/table1-recipes.md)
PAPER_WHOLE = {"finetune_lr": 0.003, "count_weight": 0.0}   # MSE throughout
COUNT = {**PAPER_WHOLE, "count_weight": 50.0}               # + the count term
COUNT_LAST = {**COUNT, "start": "last"}                     # from the patch phase's last epoch
COUNT_LAST_CUT = {**COUNT_LAST, "cut": 0.5}                 # the rate / 10 halfway
VARIANTS = {"paper": PAPER_WHOLE, "count": COUNT, "count-last": COUNT_LAST, "count-last-cut": COUNT_LAST_CUT,
            "count-last-cut-x2": {**COUNT_LAST_CUT, "steps": 2}}
PAPER = {"fcrn-a": {8: (3.9, 0.5), 16: (3.4, 0.2), 32: (2.9, 0.2), 64: (2.9, 0.2)},
         "fcrn-b": {8: (4.1, 0.5), 16: (3.7, 0.3), 32: (3.3, 0.2), 64: (3.2, 0.2)}}


def run_key(model, variant, n, draw):
    return f"{model}-{variant}-n{n}-d{draw}"


def run_seed(n, draw):
    return 1000 * n + draw


def stored_runs(path=RUNS) -> dict:
    """Finished runs by key; a later line for the same key replaces an earlier one."""
    runs = {}
    if Path(path).exists():
        for line in Path(path).read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                runs[run_key(row["model"], row["variant"], row["N"], row["draw"])] = row
    return runs


def view_counts(model, samples, device="cpu", flips=False):
    """Each sample's predicted count (the density's integral): an (images, views) array whose first
    column is the image as it is and, with ``flips``, the other 7 its flips and transposes. A count
    is a sum, so the count of the flip-averaged density is the row's mean."""
    import numpy as np

    from minifcrn.data.images import standardize
    from minifcrn.inference import predict_density

    views = [(t, r, c) for t in (False, True) for r in (1, -1) for c in (1, -1)][:8 if flips else 1]
    counts = []
    for s in samples:
        plane = standardize(s.image, s.name)
        counts.append([float(predict_density(model, (plane.T if t else plane)[::r, ::c].copy(), device).sum())
                       for t, r, c in views])
    return np.array(counts) / model.density_scale


def per_image_counts(samples, views):
    """{name: [true count, predicted, and the flip-averaged prediction if ``views`` has the 8]}."""
    columns = (views[:, 0], views.mean(1)) if views.shape[1] == 8 else (views[:, 0],)
    return {s.name: [s.count, *(float(c[i]) for c in columns)] for i, s in enumerate(samples)}


def count_errors(model, samples, device="cpu"):
    """Predicted minus true count for each sample."""
    return [c - s.count for c, s in zip(view_counts(model, samples, device)[:, 0], samples)]


def patch_phase_model(folder, start="best"):
    """Where whole-image fine-tuning starts: the patch phase's weights of lowest validation MAE
    (``best``) or those of its last epoch (``last``, from its checkpoint)."""
    from minifcrn.inference import load_model
    from minifcrn.io import load_npz
    from minifcrn.models import FCRN

    if start == "best":
        return load_model(str(Path(folder) / "best.npz"))
    arrays, meta = load_npz(Path(folder) / "checkpoint.npz")
    net = FCRN(**meta["model"], initialize=False)  # the checkpoint stores the model's config()
    net.load_state_dict({k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")})
    return net


def train_run(model, variant, n, draw, data=VGG, work=None, runs_path=RUNS, pool=None, test=None,
              patches=None, whole_steps=WHOLE_STEPS, device="cpu", progress=True, flips=True):
    """Train (or resume) one run of the table and append its JSON line; returns the row."""
    import numpy as np

    from minifcrn import protocol
    from minifcrn.data.samples import load_samples
    from minifcrn.inference import load_model
    from minifcrn.train import TrainConfig, fit

    whole = dict(VARIANTS[variant])
    patches = dict(PATCHES if patches is None else patches)
    train_names, val_names = protocol.vgg_split(n, draw, protocol.POOL if pool is None else pool)
    samples = {s.name: s for s in load_samples(data, names=set(train_names) | set(val_names))}
    missing = sorted((set(train_names) | set(val_names)) - set(samples))
    if missing:
        raise SystemExit(f"table1: {data} lacks {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    train, val = [samples[k] for k in train_names], [samples[k] for k in val_names]
    seed, commit = run_seed(n, draw), common.git_commit()  # the code this run starts with
    folder = Path(work or common.RUNS_DIR / "table1-work") / f"{model}-n{n}-d{draw}"  # the variants share
    t0 = time.perf_counter()                                                           # their patch phase
    patch_folder = folder / "patches"
    diverged = []  # patch rates whose loss became NaN; each next try at a third of the rate, in its own folder
    while True:
        marker = patch_folder / "diverged.txt"  # so that a resumed run does not try that rate again
        if not marker.exists():
            try:
                first = fit(train, val, TrainConfig(arch=model, seed=seed, device=device, **patches), patch_folder,
                            resume=True, progress=progress, recover=False)  # the table's own retry, below
                break
            except FloatingPointError as error:
                patch_folder.mkdir(parents=True, exist_ok=True)
                marker.write_text(f"{error}\n")
        if len(diverged) == MAX_RATE_CUTS:
            raise FloatingPointError(f"{run_key(model, variant, n, draw)}: the patch phase diverged at the rates "
                                     f"{', '.join(f'{lr:g}' for lr in [*diverged, patches['lr']])}")
        diverged.append(patches["lr"])
        patches = {**patches, "lr": float(f"{patches['lr'] / 3:.6g}")}
        patch_folder = patch_folder.with_name(f"{patch_folder.name.split('-lr')[0]}-lr{patches['lr']:g}")
    start, cut = whole.pop("start", "best"), whole.pop("cut", None)
    epochs = math.ceil(whole_steps * whole.pop("steps", 1) / n)
    cfg = TrainConfig(arch=model, seed=seed + 1, device=device, epochs=0, finetune_epochs=epochs,
                      finetune_milestones=[max(1, int(epochs * cut))] if cut else [], **whole)
    second = fit(train, val, cfg, folder / variant, model=patch_phase_model(patch_folder, start),
                 resume=True, progress=progress)
    best = load_model(str(folder / variant / "best.npz"), device)
    tests = load_samples(data, names=set(protocol.vgg_test_names(protocol.TEST if test is None else test)))
    views = view_counts(best, tests, device, flips)
    errors = [c - t.count for c, t in zip(views[:, 0], tests)]
    history = first["history"] + second["history"]
    # train_s: the epochs' own time, the recipe's cost; wall_s: this sitting's, with testing (and
    # without a patch phase that an earlier run or sitting of the same draw already did)
    row = {"model": model, "variant": variant, "N": n, "draw": draw, "seed": seed,
           "test_mae": float(np.mean(np.abs(errors))), "test_bias": float(np.mean(errors)),
           "val_mae": second["best"]["val_mae"], "best_epoch": second["best"]["epoch"],
           "epochs": len(history), "train_s": round(sum(r["seconds"] for r in history), 1),
           "wall_s": round(time.perf_counter() - t0, 1), "device": device, "test_images": len(tests),
           "train_images": len(train), "val_images": len(val), "diverged_lrs": diverged,
           "recipe": {"patches": patches, "whole": {**VARIANTS[variant], "finetune_epochs": cfg.finetune_epochs,
                                                    "finetune_milestones": cfg.finetune_milestones}},
           "machine": common.machine_name(device), "date": common.now_iso(), "commit": commit}
    # per test image: [true count, predicted, predicted with flips], so ensembles need no inference
    row["test_counts"] = {k: [v[0], *(round(c, 4) for c in v[1:])] for k, v in per_image_counts(tests, views).items()}
    if flips:
        row["test_mae_flip8"] = float(np.mean([abs(c - t.count) for c, t in zip(views.mean(1), tests)]))
    with open(runs_path, "a") as f:  # one line, appended whole: a killed run leaves no half row
        f.write(json.dumps(row) + "\n")
    return row


def ensemble_run(model, variant, n, draws=range(5), data=VGG, work=None, test=None, device="cpu", flips=True):
    """The ensemble's row by inference: each member's per-image counts, then ``ensemble_of_rows``;
    None if a draw's weights are missing."""
    from minifcrn import protocol
    from minifcrn.data.samples import load_samples
    from minifcrn.inference import load_model

    folder = Path(work or common.RUNS_DIR / "table1-work")
    paths = [folder / f"{model}-n{n}-d{d}" / variant / "best.npz" for d in draws]
    if not all(p.is_file() for p in paths):
        return None
    tests = load_samples(data, names=set(protocol.vgg_test_names(protocol.TEST if test is None else test)))
    members = []
    for draw, path in zip(draws, paths):
        net = load_model(str(path), device)
        members.append({"model": model, "variant": variant, "N": n, "draw": draw,
                        "test_counts": per_image_counts(tests, view_counts(net, tests, device, flips))})
    return {**ensemble_of_rows(members), "device": device}


def ensemble_of_rows(rows):
    """The ensemble's row from its members' stored per-image counts (the ensemble's count is the
    members' mean count, as the count is linear in the density); None if a member lacks them."""
    import numpy as np

    if not rows or not all("test_counts" in r for r in rows) or \
            len({tuple(sorted(r["test_counts"])) for r in rows}) != 1:
        return None
    names = sorted(rows[0]["test_counts"])
    truth = np.array([rows[0]["test_counts"][k][0] for k in names])
    columns = min(len(r["test_counts"][names[0]]) for r in rows)  # 2, or 3 with the flips
    mean = np.mean([[r["test_counts"][k][1:columns] for k in names] for r in rows], axis=0)  # (images, 1|2)
    errors = mean - truth[:, None]
    first = rows[0]
    row = {"model": first["model"], "variant": first["variant"], "N": first["N"],
           "draws": sorted(r["draw"] for r in rows), "test_mae": float(np.mean(np.abs(errors[:, 0]))),
           "test_bias": float(np.mean(errors[:, 0])), "test_images": len(names), "device": "stored counts",
           "machine": common.cpu_model(), "date": common.now_iso()}
    if columns == 3:
        row["test_mae_flip8"] = float(np.mean(np.abs(errors[:, 1])))
    return row


def stored_ensembles(path=ENSEMBLE_RUNS) -> dict:
    """{(model, row name, N): test MAE} of the stored ensembles (the later line for a key counts)."""
    found = {}
    for line in Path(path).read_text().splitlines() if Path(path).exists() else []:
        if line.strip():
            r = json.loads(line)
            name = f"{r['variant']}, ensemble of {len(r['draws'])} draws"
            found[(r["model"], name, r["N"])] = r["test_mae"]
            if "test_mae_flip8" in r:
                found[(r["model"], name + " + flip8", r["N"])] = r["test_mae_flip8"]
    return found


# -- the table ----------------------------------------------------------------------------------
def aggregate(runs: dict, sizes=(8, 16, 32, 64), draws=5):
    """{(model, row, N): (mean, std, count)} of the test MAE; rows: each variant, and '<variant> + flip8'."""
    import numpy as np

    cells = {}
    for r in runs.values():
        if r["draw"] >= draws:
            continue
        cells.setdefault((r["model"], r["variant"], r["N"]), []).append(r["test_mae"])
        if "test_mae_flip8" in r:
            cells.setdefault((r["model"], r["variant"] + " + flip8", r["N"]), []).append(r["test_mae_flip8"])
    return {k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"), len(v))
            for k, v in cells.items() if k[2] in sizes}


def cell_text(stats, draws):
    """'2.91 +/- 0.18' for a full cell; a partial one says how many draws it holds."""
    if stats is None:
        return ""
    mean, std, count = stats
    text = f"{mean:.2f}" if count == 1 else f"{mean:.2f} +/- {std:.2f}"
    return text if count >= draws else f"{text} ({count}/{draws} draws)"


# the rows of RESULTS.md's Table 1 (every row: ``python bench/table1.py report`` prints them all)
HEADLINE = {"fcrn-a": ("paper", "count", "count-last-cut", "count-last-cut-x2"), "fcrn-b": ("paper",)}
HEADLINE_ENSEMBLES = {"fcrn-a": ("count-last-cut",), "fcrn-b": ()}


def table_markdown(runs, draws=5, sizes=(8, 16, 32, 64), ensembles=None, headline=False):
    """The table: the paper's rows, ours per variant (mean +/- std over draws), then the ensembles (one
    network average per cell, so no std); with ``headline``, only the rows of ``HEADLINE``."""
    agg = aggregate(runs, sizes, draws)
    ensembles = ensembles or {}
    rows = []
    for model in ("fcrn-a", "fcrn-b"):
        rows.append([f"{model.upper()} (paper)"] + [f"{m:.1f} +/- {s:.1f}" for m, s in
                                                    (PAPER[model][n] for n in sizes)])
        names = sorted({k[1] for k in agg if k[0] == model}, key=lambda v: (v.split(" ")[0] != "paper", v))
        if headline:
            names = [v for v in names if v.split(" ")[0] in HEADLINE[model]]
            ensembles = {k: e for k, e in ensembles.items()
                         if k[0] != model or k[1].split(",")[0] in HEADLINE_ENSEMBLES[model]}
        for name in names:
            rows.append([f"{model.upper()} ours, {name}"] + [cell_text(agg.get((model, name, n)), draws)
                                                              for n in sizes])
        for name in sorted({k[1] for k in ensembles if k[0] == model}):
            rows.append([f"{model.upper()} ours, {name}"] + [
                f"{ensembles[(model, name, n)]:.2f}" if (model, name, n) in ensembles else "" for n in sizes])
    rows.append(["Fiaschi et al. 2012", "", "", "3.2 +/- 0.1", ""])
    rows.append(["Count-ception 2017", "", "", "2.4 +/- 0.4", "2.3 +/- 0.4"])
    return common.md_table(["method", *(f"N={n}" for n in sizes)], rows, "l" + "r" * len(sizes))


def detection_scores(densities, samples, threshold, min_distance):
    """Pooled (precision, recall, F1) of the maxima of the densities (cells per pixel)."""
    from minifcrn.counting import detect
    from minifcrn.evaluate import f1_scores, match_detections

    matched = found = truth = 0
    for density, s in zip(densities, samples):
        d = detect(density, threshold, min_distance)
        matched, found, truth = matched + match_detections(d, s.points, MATCH_RADIUS), found + len(d), truth + s.count
    return f1_scores(matched, found, truth)


def densities_of(model, samples, device="cpu"):
    from minifcrn.data.images import standardize
    from minifcrn.inference import predict_density
    return [predict_density(model, standardize(s.image, s.name), device) / model.density_scale for s in samples]


def detect_run(row, data=VGG, work=None, test=None, pool=None, device="cpu"):
    """Choose the detection settings on the run's validation images, score them on the test images."""
    from minifcrn import protocol
    from minifcrn.counting import PEAK
    from minifcrn.data.samples import load_samples
    from minifcrn.inference import load_model

    weights = Path(work or common.RUNS_DIR / "table1-work") / f"{row['model']}-n{row['N']}-d{row['draw']}" \
        / row["variant"] / "best.npz"
    if not weights.is_file():
        return None
    model = load_model(str(weights), device)
    _, val_names = protocol.vgg_split(row["N"], row["draw"], protocol.POOL if pool is None else pool)
    val = load_samples(data, names=set(val_names))
    val_d = densities_of(model, val, device)
    grid = [(detection_scores(val_d, val, f * PEAK, md)[2], f, md) for f in THRESHOLDS for md in MIN_DISTANCES]
    val_f1, fraction, min_distance = max(grid)
    tests = load_samples(data, names=set(protocol.vgg_test_names(protocol.TEST if test is None else test)))
    precision, recall, f1 = detection_scores(densities_of(model, tests, device), tests, fraction * PEAK, min_distance)
    return {"model": row["model"], "variant": row["variant"], "N": row["N"], "draw": row["draw"],
            "val_mae": row["val_mae"], "test_mae": row["test_mae"], "threshold_peak_fraction": fraction,
            "min_distance": min_distance, "val_f1": val_f1, "precision": precision, "recall": recall, "f1": f1,
            "radius": MATCH_RADIUS, "machine": common.machine_name(device), "date": common.now_iso()}


def cmd_detect(args):
    runs = [r for r in stored_runs().values() if r["variant"] == args.variant and r["model"] == args.model]
    best = {}
    for r in runs:
        if args.n and r["N"] not in args.n:
            continue
        if r["N"] not in best or r["val_mae"] < best[r["N"]]["val_mae"]:
            best[r["N"]] = r
    rows = []
    for n in sorted(best):
        found = detect_run(best[n], work=args.work, device=args.device)
        if found is None:
            print(f"N={n}: the weights of draw {best[n]['draw']} are not in {args.work}; skipped")
            continue
        rows.append(found)
        print(f"N={n} (draw {found['draw']}): threshold {found['threshold_peak_fraction']} x peak, min distance "
              f"{found['min_distance']}: precision {found['precision']:.3f} recall {found['recall']:.3f} "
              f"F1 {found['f1']:.3f}", flush=True)
    with open(DETECT_RUNS, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    stored = {}
    for line in DETECT_RUNS.read_text().splitlines() if DETECT_RUNS.exists() else []:
        r = json.loads(line)
        stored[(r["model"], r["variant"], r["N"])] = r
    table = common.md_table(
        ["model", "rows", "N", "draw (best val MAE)", "threshold (x peak)", "min distance", "val F1", "precision",
         "recall", "F1"],
        [[r["model"], r["variant"], r["N"], r["draw"], r["threshold_peak_fraction"], r["min_distance"],
          f"{r['val_f1']:.3f}", f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"**{r['f1']:.3f}**"]
         for _, r in sorted(stored.items())], "llrrrrrrrr")
    common.publish("table1-detect", "Detection on VGG images 101-200 (best network per N)", [
        f"{max(r['date'] for r in stored.values())[:10]}; {'; '.join(sorted({r['machine'] for r in stored.values()}))}; "
        "`python bench/table1.py detect`; rows in `bench/runs/table1-detect.jsonl`",
        f"The best-validation draw per N; threshold (of {', '.join(map(str, THRESHOLDS))} x one cell's peak) and min "
        f"distance ({', '.join(map(str, MIN_DISTANCES))}) chosen on validation by pooled F1; matched one-to-one "
        f"within {MATCH_RADIUS:g} px (method: `bench/notes/table1-recipes.md`)"], table)


def cmd_ensemble(args):
    runs = stored_runs()
    for n in args.n:
        members = [runs[k] for k in (run_key(args.model, args.variant, n, d) for d in range(5)) if k in runs]
        row = ensemble_of_rows(members) if len(members) == 5 else None
        if row is None:
            row = ensemble_run(args.model, args.variant, n, work=args.work, device=args.device)
        if row is None:
            print(f"N={n}: not every draw's {args.variant} weights are in {args.work}; skipped")
            continue
        with open(ENSEMBLE_RUNS, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{args.model} {args.variant} N={n}, ensemble of {len(row['draws'])}: test MAE {row['test_mae']:.3f} "
              f"(flip8 {row.get('test_mae_flip8', float('nan')):.3f}, bias {row['test_bias']:+.2f})", flush=True)


def crowding(samples, radius=4.0):
    """Per image, the fraction of its cells whose nearest other cell is closer than ``radius`` pixels."""
    import numpy as np
    from scipy.spatial import cKDTree

    out = {}
    for s in samples:
        near = cKDTree(s.points).query(s.points, k=2)[0][:, 1] < radius if len(s.points) > 1 else [False]
        out[s.name] = float(np.mean(near))
    return out


def error_structure(rows, others=(), worst=5, crowded=None):
    """How the per-image test errors of ``rows`` (one variant's draws) split into a part the draws
    share (their mean error on each image) and the rest, from the stored counts (the flip-averaged
    column when every row has it); with the worst images of the shared part and, for each row of
    ``others``, the correlation of its per-image errors with that shared part.  Given ``crowded``
    (image name -> how crowded, see ``crowding``), also the shared part's correlation with it and
    with the true count, and the MAE left once a straight line in crowdedness is taken off (fitted
    on the same images: it measures how much crowding explains, it is not a method)."""
    import numpy as np

    names = sorted(rows[0]["test_counts"])
    column = 2 if all(len(r["test_counts"][names[0]]) == 3 for r in rows) else 1

    def errors(row):
        return np.array([row["test_counts"][k][column] - row["test_counts"][k][0] for k in names])

    e = np.array([errors(r) for r in rows])  # (draws, images)
    shared = e.mean(0)
    order = np.argsort(-np.abs(shared))[:worst]
    out = {"column": ("plain", "flip8")[column - 1], "draw_mae": np.abs(e).mean(1).tolist(),
           "shared_mae": float(np.abs(shared).mean()), "shared_std": float(shared.std()),
           "residual_std": float((e - shared).std()),
           "worst": [(names[i], rows[0]["test_counts"][names[i]][0], e[:, i].tolist()) for i in order],
           "correlation": [(o["model"], o["variant"], o["draw"], float(np.corrcoef(errors(o), shared)[0, 1]))
                           for o in others]}
    if crowded is not None:
        c = np.array([crowded[k] for k in names])
        truth = np.array([rows[0]["test_counts"][k][0] for k in names])
        line = np.polyval(np.polyfit(c, shared, 1), c)
        out["crowding"] = {"mean": float(c.mean()), "corr": float(np.corrcoef(c, shared)[0, 1]),
                           "corr_count": float(np.corrcoef(truth, shared)[0, 1]),
                           "mae_after_line": float(np.abs(shared - line).mean())}
    return out


def cmd_errors(args):
    from minifcrn.data.samples import load_samples

    runs = stored_runs()
    rows = [r for r in runs.values() if (r["model"], r["variant"], r["N"]) == (args.model, args.variant, args.n)
            and "test_counts" in r]
    if len(rows) < 2:
        raise SystemExit(f"table1: errors needs two or more stored {args.model} {args.variant} N={args.n} "
                         f"runs with per-image counts, found {len(rows)}")
    others = [r for r in runs.values() if r["N"] == args.n and "test_counts" in r and r not in rows]
    tests = load_samples(args.data, names=set(rows[0]["test_counts"])) if Path(args.data).is_dir() else []
    st = error_structure(rows, others, crowded=crowding(tests) if len(tests) == len(rows[0]["test_counts"])
                         else None)
    print(f"{args.model} {args.variant} N={args.n}, {len(rows)} draws, {st['column']} counts: per-draw MAE "
          + ", ".join(f"{m:.2f}" for m in st["draw_mae"]))
    print(f"shared part (the draws' mean error per image): MAE {st['shared_mae']:.2f}, std {st['shared_std']:.2f}; "
          f"the rest: std {st['residual_std']:.2f}")
    for name, true, errs in st["worst"]:
        print(f"  {name} ({true:g} cells): errors " + ", ".join(f"{x:+.1f}" for x in errs))
    if "crowding" in st:
        c = st["crowding"]
        print(f"crowding (the fraction of an image's cells with another closer than 4 px, mean {c['mean']:.3f}): "
              f"correlation with the shared part {c['corr']:+.2f} (the true count's: {c['corr_count']:+.2f}); "
              f"a straight line in crowding, fitted on these images, leaves MAE {c['mae_after_line']:.2f}")
    else:
        print(f"(no crowding: {args.data} lacks the test images)")
    for model, variant, draw, corr in st["correlation"]:
        print(f"  {model} {variant} draw {draw}: correlation with the shared part {corr:+.2f}")


def cmd_train(args):
    done = stored_runs()
    todo = [(m, v, n, d) for n in args.n for d in args.draws for m in args.model for v in args.variant]
    for model, variant, n, draw in todo:
        key = run_key(model, variant, n, draw)
        if key in done:
            print(f"{key}: stored, test MAE {done[key]['test_mae']:.3f}")
            continue
        row = train_run(model, variant, n, draw, work=args.work, device=args.device, progress=not args.quiet)
        print(f"{key}: test MAE {row['test_mae']:.3f} (flip8 {row.get('test_mae_flip8', float('nan')):.3f}, "
              f"bias {row['test_bias']:+.2f}), val MAE {row['val_mae']:.3f}, {row['wall_s']:.0f} s", flush=True)


def cmd_report(args):
    runs = stored_runs()
    if not runs:
        sys.exit(f"no runs in {RUNS}; run: python bench/table1.py train")
    import numpy as np

    from minifcrn import protocol

    devices = sorted({r["device"] for r in runs.values()})
    trains = {(m, v, d): [r["train_s"] for r in runs.values() if (r["model"], r["variant"], r["device"]) == (m, v, d)]
              for m in PAPER for v in VARIANTS for d in devices}
    b_missing = [(n, d) for n in (8, 16, 32, 64) for d in range(5) if run_key("fcrn-b", "paper", n, d) not in runs]
    seen = {n: len(set().union(*(protocol.vgg_split(n, d, protocol.POOL)[0] for d in range(5))))
            for n in (8, 16, 32, 64)}  # distinct training images of the five draws
    machines = sorted({f"{r['machine']} ({r['device']})" for r in runs.values()})
    detail = [
        f"Machine: {'; '.join(machines)}; runs dated {min(r['date'] for r in runs.values())[:10]} to "
        f"{max(r['date'] for r in runs.values())[:10]}",
        "Command: `python bench/table1.py train ...` then `python bench/table1.py report`; one JSON line per "
        "run in `bench/runs/table1.jsonl`",
        "Protocol: N training and N validation images drawn from 1-100 (N=64: the other 36 validate), five "
        "draws seeded by (N, draw), the checkpoint of lowest validation MAE, tested on 101-200; a patch phase "
        "whose loss becomes NaN starts again at a third of the rate (at most twice): "
        + (", ".join(f"{r['model'].upper()} {r['variant']} N={r['N']} draw {r['draw']} diverged at "
                     f"{', '.join(f'{lr:g}' for lr in r['diverged_lrs'])} and trained at {r['recipe']['patches']['lr']:g}"
                     for r in runs.values() if r.get("diverged_lrs")) or "no run so far"),
        f"Budget per run: {PATCHES['epochs']} x {PATCHES['steps_per_epoch']} patch batches of 8x96x96 "
        f"(lr {PATCHES['lr']}, /10 at epoch {PATCHES['milestones'][0]}), then ceil({WHOLE_STEPS}/N) whole-image "
        f"epochs (lr {VARIANTS['paper']['finetune_lr']}); median training time per run (both phases, "
        "the epochs' own seconds; the slow ends of the ranges are runs that shared the 2 cores with other "
        "work, which does not change their MAEs): "
        + ", ".join(f"{m.upper()} {v}{'' if d == 'cpu' else ' on ' + d} {np.median(t) / 60:.1f} min "
                    f"({min(t) / 60:.1f}-{max(t) / 60:.1f}) over {len(t)} runs" for (m, v, d), t in trains.items() if t),
        "Rows: `paper` = the paper's recipe (MSE throughout); `count` = + the count term (50) while fine-tuning; "
        "`count-last` = `count`, fine-tuned from the patch phase's last epoch rather than its best-validation one; "
        "`count-last-cut` = `count-last` with the fine-tuning rate cut by 10 halfway; `count-last-cut-x2` = the same "
        "with twice the whole-image steps; the one-draw probes `p3-count-last-cut`, `win16-last-cut`, "
        "`jit-count-last-cut` and `zoom-count-last-cut` are described in `bench/notes/table1-recipes.md`; "
        "`+ flip8` = the same networks, densities averaged over the 8 flips/transposes at test time. A cell "
        "with fewer than 5 draws says how many it holds; `ensemble of 5 draws` = the mean density of the five "
        "draws' networks (`python bench/table1.py ensemble`, lines in `bench/runs/table1-ensemble.jsonl`): one "
        "figure per cell, no std. The five draws train on different images, so an ensemble is not an N-image "
        "result: its members saw " + ", ".join(f"{k} (N={n})" for n, k in seen.items()) + " distinct training "
        "images of the 100 (and never a test image); it shows what averaging networks gains, not what N images give",
        (f"FCRN-B: {20 - len(b_missing)} of its 20 `paper` runs (4 N x 5 draws) stored so far; missing: "
         + ", ".join(f"N={n} draw {d}" for n, d in b_missing) if b_missing
         else "FCRN-B: all 20 `paper` runs (4 N x 5 draws) stored")
        + ". Its training step is about 6-7x FCRN-A's on this 2-core CPU (3.2-3.9 s against 0.52-0.56 s at batch 8 "
        "of 96x96, 2026-12-03, with the fused up-sampling convolutions), about 75 minutes a run with testing; on "
        "an NVIDIA H200 (2026-12-04, `bench/device_session.sh`: five runs at a time sharing the GPU) about 3.3 "
        "minutes a run with testing"]
    common.publish("table1", "Table 1: MAE on VGG images 101-200 (mean +/- std over the draws)", [
        f"{min(r['date'] for r in runs.values())[:10]} to {max(r['date'] for r in runs.values())[:10]}; "
        + "; ".join(machines),
        "Command: `python bench/table1.py train ...` then `python bench/table1.py report`; one JSON line per run "
        "in `bench/runs/table1.jsonl`",
        "N training + N validation images of 1-100, five draws, tested on 101-200; flip8: 8 flips averaged. "
        "All rows and probes: `bench/notes/table1.md`"],
        table_markdown(runs, ensembles=stored_ensembles(), headline=True))
    print("\nEvery row, and how the runs were made:\n")
    print("\n".join(f"- {line}" for line in detail))
    print()
    print(table_markdown(runs, ensembles=stored_ensembles()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--model", nargs="+", default=["fcrn-a", "fcrn-b"], choices=["fcrn-a", "fcrn-b"])
    t.add_argument("--variant", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    t.add_argument("--n", nargs="+", type=int, default=[8, 16, 32, 64])
    t.add_argument("--draws", nargs="+", type=int, default=list(range(5)))
    t.add_argument("--work", default=str(common.RUNS_DIR / "table1-work"), help="training folders")
    t.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    t.add_argument("--quiet", action="store_true")
    sub.add_parser("report")
    d = sub.add_parser("detect")
    d.add_argument("--model", default="fcrn-a", choices=["fcrn-a", "fcrn-b"])
    d.add_argument("--variant", default="count", choices=list(VARIANTS))
    d.add_argument("--n", nargs="+", type=int, help="only these N (default: every N with stored runs)")
    d.add_argument("--work", default=str(common.RUNS_DIR / "table1-work"), help="training folders")
    d.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    e = sub.add_parser("ensemble")
    e.add_argument("--model", default="fcrn-a", choices=["fcrn-a", "fcrn-b"])
    e.add_argument("--variant", default="count", choices=list(VARIANTS))
    e.add_argument("--n", nargs="+", type=int, default=[8, 16, 32, 64])
    e.add_argument("--work", default=str(common.RUNS_DIR / "table1-work"), help="training folders")
    e.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    r = sub.add_parser("errors", help="per-image test errors: the part the draws share, from the stored runs")
    r.add_argument("--model", default="fcrn-a", choices=["fcrn-a", "fcrn-b"])
    r.add_argument("--variant", default="count-last-cut", choices=list(VARIANTS))
    r.add_argument("--n", type=int, default=32)
    r.add_argument("--data", default=str(VGG), help="the VGG cells folder, for how crowded each test image is")
    args = ap.parse_args(argv)
    common.configure_training_process(2)
    {"train": cmd_train, "report": cmd_report, "detect": cmd_detect, "ensemble": cmd_ensemble,
     "errors": cmd_errors}[args.command](args)


if __name__ == "__main__":
    main()
