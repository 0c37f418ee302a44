"""The ``minifcrn`` command: parse arguments, call the Python API, print the result.

    minifcrn count IMAGE_OR_DIR... [--model fcrn-a|fcrn-b|PATH] [--channel grey|N] [--roi x0,y0,x1,y1]
                                   [--out DIR] [--json] [--threshold T] [--min-distance D] [--device cpu|cuda]
    minifcrn evaluate --model M DIR [--channel grey|N] [--radius 5] [--protocol vgg]
    minifcrn train --data DIR [--val DIR] --out DIR [--arch fcrn-a|fcrn-b] [--epochs E] ... [--resume]

Every sub-command is a thin shell over functions importable from Python.  Bad
input ends with a one-line message on stderr naming the file and the problem,
and exit code 2; the other images of the same call are still processed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from minifcrn import __version__

EXIT_BAD_INPUT = 2


def _channel(value: str):
    if value in ("grey", "inverted"):
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--channel must be 'grey', 'inverted' or a channel number, "
                                         f"got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minifcrn",
        description="Count and detect cells with fully convolutional regression networks (FCRN), "
                    "on a small from-scratch NumPy/CuPy deep-learning engine.")
    parser.add_argument("--version", action="version", version=f"minifcrn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("count", help="count and detect cells in images")
    c.add_argument("inputs", nargs="*", metavar="IMAGE_OR_DIR", help="PNG/TIFF files or folders of them")
    c.add_argument("--sample", action="store_true", help="also count the sample image shipped with minifcrn")
    c.add_argument("--model", default="fcrn-a", help="fcrn-a, fcrn-b (shipped) or a weights .npz")
    c.add_argument("--channel", type=_channel, default="grey",
                   help="'grey' (mean of RGB), 'inverted' (grey negated: dark nuclei, e.g. H&E) or a channel number")
    c.add_argument("--roi", help="count only inside x0,y0,x1,y1 (pixels, x1/y1 exclusive)")
    c.add_argument("--out", help="folder for results.csv/.json (one row per image, written as it goes), "
                                 "<name>_detections.csv and <name>_count.png")
    c.add_argument("--resume", action="store_true",
                   help="skip the images --out/results.csv already counted (after an interruption)")
    c.add_argument("--figure", action="store_true",
                   help="with --out, also write <name>_figure.png: image, density, ground truth (when the image "
                        "has annotations beside it) and detections, with colour bars (needs minifcrn[viz])")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.add_argument("--threshold", type=float, default=None, help="detection threshold, cells per pixel")
    c.add_argument("--min-distance", type=int, default=None, help="minimum pixels between detections")
    c.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    c.add_argument("--cell-size", type=float, default=None, metavar="PIXELS",
                   help="typical nucleus diameter in your images; they are resized so the network sees cells "
                        "at the size it was trained on (9 px for the shipped weights), counts kept")
    c.add_argument("--tile-size", type=int, default=None,
                   help="run the network on tiles of this size (multiple of 8), exact at the seams; "
                        "default: 1024 above 2048x2048 pixels, else whole images; 0: never tile")

    e = sub.add_parser("evaluate", help="count error and detection scores on annotated images")
    e.add_argument("folder", metavar="DIR", help="images with NNNdots.png or name.csv annotations")
    e.add_argument("--model", default="fcrn-a")
    e.add_argument("--channel", type=_channel, default="grey")
    e.add_argument("--radius", type=float, default=5.0, help="detection match radius in pixels")
    e.add_argument("--threshold", type=float, default=None)
    e.add_argument("--min-distance", type=int, default=None)
    e.add_argument("--json", action="store_true")
    e.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    e.add_argument("--protocol", choices=["vgg"], default=None,
                   help="vgg: score only the test images of the paper's Table 1 (101cell-200cell)")

    t = sub.add_parser("train", help="train an FCRN on annotated images")
    t.add_argument("--data", metavar="DIR", help="training images with annotations")
    t.add_argument("--synthetic", type=int, metavar="N",
                   help="train on N generated images (minifcrn.synth, made on the fly, nothing on disk) "
                        "instead of --data; validation on --val or on N/10 other generated images")
    t.add_argument("--val", metavar="DIR", help="validation images (default: hold out --val-count of --data)")
    t.add_argument("--val-count", type=int, default=None, help="images of --data held out for validation")
    t.add_argument("--out", required=True, metavar="DIR", help="folder for checkpoint.npz, best.npz, log.csv")
    t.add_argument("--arch", default="fcrn-a", choices=["fcrn-a", "fcrn-b"])
    t.add_argument("--init", help="start from weights: fcrn-a, fcrn-b or a .npz (fine-tuning)")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--steps", type=int, default=100, help="patch batches per epoch")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--patch-size", type=int, default=96)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--milestones", type=int, nargs="*", default=None, help="epochs at which lr /= 10")
    t.add_argument("--finetune-epochs", type=int, default=0, help="whole-image epochs after the patches")
    t.add_argument("--finetune-lr", type=float, default=None, help="learning rate of the whole-image epochs")
    t.add_argument("--count-weight", type=float, default=0.0,
                   help="add this times the squared per-pixel count error to the MSE (default 0: the paper's loss)")
    t.add_argument("--count-window", type=int, default=0,
                   help="take the count term's error over K x K windows instead of whole images (default 0)")
    t.add_argument("--jitter", type=float, default=0.0,
                   help="intensity jitter J: each standardised input times e^U(-J, J) plus U(-J, J) (default 0)")
    t.add_argument("--zoom", type=float, default=0.0,
                   help="patch zoom Z: each training patch spans e^U(-Z, Z) image pixels per pixel (default 0)")
    t.add_argument("--finetune-milestones", type=int, nargs="*", default=None,
                   help="whole-image epochs (counted from the first) at which their lr /= 10")
    t.add_argument("--channel", type=_channel, default="grey")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    t.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.npz")
    _synth_options(t)

    v = sub.add_parser("invert", help="reconstruct an image from a layer's features (what each layer keeps)")
    v.add_argument("image", nargs="?", metavar="IMAGE", help="PNG/TIFF (a crop around a cell clump works best)")
    v.add_argument("--model", default="fcrn-a", help="fcrn-a, fcrn-b (shipped) or a weights .npz")
    v.add_argument("--layers", nargs="+", metavar="LAYER",
                   help="layer names (default: every convolution, conv1 ... the last); see --list-layers")
    v.add_argument("--list-layers", action="store_true", help="print the model's layer names and stop")
    v.add_argument("--crop", help="invert only x0,y0,x1,y1 of the image (pixels, x1/y1 exclusive)")
    v.add_argument("--channel", type=_channel, default="grey")
    v.add_argument("--iterations", type=int, default=300, help="gradient steps per layer (default 300)")
    v.add_argument("--lr", type=float, default=0.1, help="first step, in standardised pixel units (RMS)")
    v.add_argument("--lambda", dest="lam", type=float, default=1e-3, help="weight of the ||x||^2 penalty")
    v.add_argument("--seed", type=int, default=0, help="seed of the random starting image")
    v.add_argument("--out", default="inversion.png", help="the PNG grid to write (default inversion.png)")
    v.add_argument("--json", action="store_true", help="print the objective values as JSON")
    v.add_argument("--device", default="cpu", choices=["cpu", "cuda"])

    g = sub.add_parser("synth", help="write generated fluorescence images with their cell centres")
    g.add_argument("--n", type=int, required=True, help="number of images")
    g.add_argument("--out", required=True, metavar="DIR",
                   help="folder for synth_NNNNN.png (.tif at 16 bits) and synth_NNNNN.csv (x,y)")
    _synth_options(g)
    return parser


def _synth_options(parser):
    """The generator's options, shared by ``synth`` and ``train --synthetic``."""
    from minifcrn.synth import COMPONENTS, SynthConfig

    d = SynthConfig()
    parser.add_argument("--synth-seed", type=int, default=0, help="seed of the generated set")
    parser.add_argument("--size", type=_size, default=(d.width, d.height), metavar="W[xH]",
                        help=f"image size in pixels (default {d.width}x{d.height})")
    parser.add_argument("--cells", type=int, nargs=2, default=None, metavar=("LO", "HI"),
                        help=f"range of the number of nuclei (default {d.cells[0]} {d.cells[1]} at "
                             f"{d.width}x{d.height}, scaled with the image area for other sizes)")
    parser.add_argument("--radius", type=float, default=d.radius, help=f"mean nucleus radius (default {d.radius})")
    parser.add_argument("--bit-depth", type=int, default=d.bit_depth, choices=[8, 16])
    parser.add_argument("--without", nargs="*", default=[], choices=sorted(COMPONENTS),
                        help="switch generator components off (ablations)")


def _size(value: str):
    try:
        w, _, h = value.lower().partition("x")
        return int(w), int(h or w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must be W or WxH in pixels, got {value!r}") from None


def _synth_config(args):
    from minifcrn.synth import SynthConfig

    d = SynthConfig()
    area = args.size[0] * args.size[1] / (d.width * d.height)  # the default keeps the cells per pixel
    cells = tuple(args.cells) if args.cells is not None else tuple(round(c * area) for c in d.cells)
    return SynthConfig(width=args.size[0], height=args.size[1], cells=cells, radius=args.radius,
                       bit_depth=args.bit_depth).without(*args.without)


def _image_files(inputs):
    """(path, problem) for every image named, in a folder or matching a glob pattern."""
    import glob

    from minifcrn.data.samples import IMAGE_SUFFIXES

    for item in inputs:
        path = Path(item)
        if not path.exists() and glob.has_magic(item):
            matches = sorted(glob.glob(item))
            if not matches:
                yield path, f"{item}: no file matches this pattern"
            for match in matches:
                yield Path(match), None
        elif path.is_dir():
            files = [p for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES
                     and not p.stem.endswith(("dots", "_dots")) and not p.stem.endswith("_count")]
            if not files:
                yield path, f"{path}: folder holds no PNG or TIFF images"
            for p in files:
                yield p, None
        else:
            yield path, None


def _error(message: str):
    print(f"minifcrn: error: {message}", file=sys.stderr)


RESULT_FIELDS = ["file", "count", "detections", "seconds", "model", "weights", "error"]


def _check_out_folder(out, command):
    """Refuse, before any work, an --out that exists but is not a folder."""
    from minifcrn.data.images import InputError

    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise InputError(f"{command}: --out {out} is a file, not a folder")


def _check_out_file(out, command):
    """Refuse, before any work, an --out picture that cannot be written."""
    from minifcrn.data.images import InputError

    out = Path(out)
    if out.is_dir() or (out.parent.exists() and not out.parent.is_dir()):
        raise InputError(f"{command}: cannot write --out {out} ({'a folder' if out.is_dir() else 'its parent is a file'})")


def _read_results(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:  # the numbers as numbers again, for results.json
        for key, kind in (("count", float), ("detections", int), ("seconds", float)):
            row[key] = kind(row[key]) if row.get(key) else ""
    return rows


def _write_results(out: Path, rows: list[dict]):
    """results.csv and results.json, each replaced atomically: an interruption loses nothing."""
    import csv
    import io

    from minifcrn.io import atomic_write

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(out / "results.csv", "w") as f:
        f.write(buffer.getvalue())
    with atomic_write(out / "results.json", "w") as f:
        json.dump(rows, f, indent=1)


def cmd_count(args) -> int:
    import time

    import numpy as np
    from tqdm import tqdm

    from minifcrn.count import (ASSETS, DEFAULT_MIN_DISTANCE, DEFAULT_THRESHOLD, check_detection_args, count, load_model,
                                weights_hash)
    from minifcrn.data.images import InputError
    from minifcrn.io import atomic_write

    inputs = list(args.inputs) + ([str(ASSETS / "sample.png")] if args.sample else [])
    if not inputs:
        _error("count: give images, folders or glob patterns to count (or --sample)")
        return EXIT_BAD_INPUT
    for flag in ("resume", "figure"):
        if getattr(args, flag) and not args.out:
            _error(f"count: --{flag} needs --out, the folder to write into")
            return EXIT_BAD_INPUT
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    min_distance = DEFAULT_MIN_DISTANCE if args.min_distance is None else args.min_distance
    try:
        _check_out_folder(args.out, "count")
        check_detection_args(threshold, min_distance)
        model = load_model(args.model, args.device)
    except InputError as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT
    figures = args.figure and _matplotlib_or_note()
    weights = weights_hash(model)
    out = Path(args.out) if args.out else None
    table = []  # every image of this run and, with --resume, the earlier ones
    if args.resume and (out / "results.csv").is_file():
        table = _read_results(out / "results.csv")
        if table and not set(RESULT_FIELDS) <= set(table[0]):
            _error(f"count: {out / 'results.csv'} is not a minifcrn results table; use another --out")
            return EXIT_BAD_INPUT
        others = {r["weights"] for r in table} - {weights}
        if others:
            _error(f"count: {out / 'results.csv'} was written with other weights ({', '.join(sorted(others))}, "
                   f"now {weights}); use another --out")
            return EXIT_BAD_INPUT
        table = [r for r in table if not r["error"]]  # failed images are tried again
    done = {r["file"] for r in table}
    rows, failed = [], 0

    def record(path, cells="", detections="", seconds="", error=""):
        """One image's row of the results table, which is then rewritten whole."""
        table.append({"file": str(path), "count": cells, "detections": detections, "seconds": seconds,
                      "model": model.arch, "weights": weights, "error": error})
        out.mkdir(parents=True, exist_ok=True)
        _write_results(out, table)

    todo = [(p, problem) for p, problem in _image_files(inputs) if str(p) not in done]
    for path, problem in tqdm(todo, desc="counting", unit="image", disable=None, leave=False):
        t0 = time.perf_counter()
        try:
            if problem:
                raise InputError(problem)
            result = count(path, model, args.channel, args.roi, threshold, min_distance, args.device,
                           args.tile_size, args.cell_size)
        except InputError as exc:
            _error(str(exc))
            failed += 1
            if out:
                record(path, error=str(exc))
            continue
        row = {"file": str(path), "count": round(result.count, 2), "detections": len(result.detections)}
        if out:
            from minifcrn.viz import render_count

            csv_path, png_path = out / f"{path.stem}_detections.csv", out / f"{path.stem}_count.png"
            out.mkdir(parents=True, exist_ok=True)
            with atomic_write(csv_path, "w") as f:
                f.write("x,y,score\n")
                np.savetxt(f, result.detections, fmt=["%d", "%d", "%.5f"], delimiter=",")
            render_count(result, png_path)
            row.update(detections_csv=str(csv_path), picture=str(png_path))
            if figures:
                row["figure"] = str(_count_figure(path, result, out, args.channel))
            record(path, row["count"], row["detections"], round(time.perf_counter() - t0, 3))
        rows.append(row)
        if not args.json:
            tqdm.write(f"{row['count']:10.1f}  {row['detections']:6d}  {path}")
    if args.json:
        print(json.dumps({"model": str(args.model), "weights": weights, "results": rows}, indent=2))
    return EXIT_BAD_INPUT if failed else 0


def _matplotlib_or_note() -> bool:
    """Whether matplotlib is there; if not, say once how to install it (everything else goes on)."""
    import importlib.util

    from minifcrn.figures import INSTALL

    if importlib.util.find_spec("matplotlib") is None:
        print(f"minifcrn: note: figures need matplotlib: {INSTALL}; going on without them", file=sys.stderr)
        return False
    return True


def _count_figure(path, result, out, channel):
    """<name>_figure.png, with the ground truth when the image has an annotation file beside it."""
    from minifcrn.data.annotations import read_points
    from minifcrn.data.samples import annotation_for
    from minifcrn.figures import count_figure

    annotation = annotation_for(Path(path))
    truth = read_points(annotation, result.plane.shape) if annotation is not None else None
    figure = out / f"{Path(path).stem}_figure.png"
    count_figure(result, figure, truth)
    return figure


def cmd_evaluate(args) -> int:
    from minifcrn.count import DEFAULT_MIN_DISTANCE, DEFAULT_THRESHOLD
    from minifcrn.data.images import InputError
    from minifcrn.evaluate import evaluate_folder

    try:
        report = evaluate_folder(args.folder, args.model, args.channel, args.radius,
                                 DEFAULT_THRESHOLD if args.threshold is None else args.threshold,
                                 DEFAULT_MIN_DISTANCE if args.min_distance is None else args.min_distance,
                                 args.device, args.protocol)
    except InputError as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        s = report["summary"]
        print(f"{s['images']} images: MAE {s['mae']:.3f}  mean relative error {100 * s['mean_relative_error']:.2f}%  "
              f"precision {s['precision']:.3f}  recall {s['recall']:.3f}  F1 {s['f1']:.3f} "
              f"(match radius {args.radius:g} px)")
    return 0


def _training_sets(args):
    """(training samples, validation samples, SynthConfig or None) from --data/--val or --synthetic."""
    from minifcrn.data.images import InputError
    from minifcrn.data.samples import load_samples

    if (args.data is None) == (args.synthetic is None):
        raise InputError("train: give either --data DIR or --synthetic N")
    val = load_samples(args.val, args.channel) if args.val else None
    if args.synthetic is not None:
        from minifcrn.synth import SyntheticSamples

        synth = _synth_config(args)
        samples = SyntheticSamples(args.synthetic, synth, args.synth_seed)
        if val is None:  # images after the training ones in the same seeded stream
            val = list(SyntheticSamples(max(1, args.synthetic // 10), synth, args.synth_seed, offset=args.synthetic))
        return samples, val, synth
    samples = load_samples(args.data, args.channel)
    if val is None:
        k = args.val_count if args.val_count is not None else max(1, len(samples) // 5)
        if k < 0:
            raise InputError(f"train: --val-count must be >= 0, got {k}")
        if k >= len(samples):
            raise InputError(f"{args.data}: {len(samples)} images cannot spare {k} for validation")
        samples, val = samples[:len(samples) - k], samples[len(samples) - k:]
    return samples, val, None


def cmd_train(args) -> int:
    from minifcrn.count import load_model
    from minifcrn.data.images import InputError
    from minifcrn.train import TrainConfig, fit

    _matplotlib_or_note()  # for curves.png
    try:
        _check_out_folder(args.out, "train")
        samples, val, synth = _training_sets(args)
        model = load_model(args.init).train() if args.init else None
        arch = model.arch if model is not None else args.arch
        defaults = TrainConfig()
        cfg = TrainConfig(arch=arch, epochs=args.epochs, steps_per_epoch=args.steps, batch_size=args.batch_size,
                          patch_size=args.patch_size, lr=defaults.lr if args.lr is None else args.lr,
                          milestones=list(args.milestones or []), finetune_epochs=args.finetune_epochs,
                          finetune_milestones=list(args.finetune_milestones or []),
                          count_weight=args.count_weight, count_window=args.count_window,
                          jitter=args.jitter, zoom=args.zoom,
                          finetune_lr=defaults.finetune_lr if args.finetune_lr is None else args.finetune_lr,
                          seed=args.seed, device=args.device, channel=args.channel,
                          synthetic=args.synthetic or 0, synth=synth.to_dict() if synth else {})
        summary = fit(samples, val, cfg, args.out, model=model, resume=args.resume)
    except (InputError, FloatingPointError) as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT
    best = summary["best"]
    print(f"best validation MAE {best['val_mae']:.3f} at epoch {best['epoch']}; weights in "
          f"{Path(args.out) / 'best.npz'}")
    return 0


def cmd_invert(args) -> int:
    from minifcrn.count import load_model
    from minifcrn.data.images import InputError
    from minifcrn.invert import as_plane, conv_layers, reconstruct_all
    from minifcrn.viz import render_inversion

    try:
        model = load_model(args.model, args.device)
        if args.list_layers:
            convs = set(conv_layers(model))
            for name in model.layer_names:
                print(f"{name}{'  (in the default figure)' if name in convs else ''}")
            return 0
        if args.image is None:
            raise InputError("invert: give an IMAGE to invert (or --list-layers)")
        _check_out_file(args.out, "invert")
        plane = as_plane(args.image, args.channel, args.crop)
        results = reconstruct_all(model, plane, args.layers, progress=True, iterations=args.iterations,
                                  lr=args.lr, lam=args.lam, seed=args.seed, device=args.device)
    except InputError as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT
    render_inversion(plane, results, args.out)
    rows = [{"layer": r.layer, "objective_start": r.objective[0], "objective_end": r.objective[-1],
             "feature_error": r.feature_error, "correlation": r.correlation, "steps": len(r.objective)}
            for r in results]
    if args.json:
        print(json.dumps({"image": args.image, "crop": args.crop, "out": args.out, "layers": rows}, indent=2))
    else:
        print(f"{'layer':8s} {'E start':>9s} {'E end':>9s} {'feature err':>11s} {'corr':>6s}")
        for r in rows:
            print(f"{r['layer']:8s} {r['objective_start']:9.3g} {r['objective_end']:9.3g} "
                  f"{r['feature_error']:11.3g} {r['correlation']:6.3f}")
        print(f"wrote {args.out}")
    return 0


def cmd_synth(args) -> int:
    from minifcrn.data.images import InputError
    from minifcrn.synth import write_dataset

    try:
        if args.n < 1:
            raise InputError(f"synth: --n must be at least 1, got {args.n}")
        _check_out_folder(args.out, "synth")
        config = _synth_config(args)
        write_dataset(args.out, args.n, config, args.synth_seed, progress=True)
    except InputError as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT
    print(f"wrote {args.n} images with their centres (x,y CSV) to {args.out}")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from minifcrn.backend import DeviceError, keep_freed_memory

    keep_freed_memory()  # large arrays reuse freed memory: no page faults on every layer
    try:
        return {"count": cmd_count, "evaluate": cmd_evaluate, "train": cmd_train,
                "synth": cmd_synth, "invert": cmd_invert}[args.command](args)
    except DeviceError as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
