"""The ``minifcrn`` command: parse arguments, call the Python API, print the result.

    minifcrn count IMAGE_OR_DIR... [--sample] [--out DIR [--resume] [--figure]] [--roi x0,y0,x1,y1] [--json]
    minifcrn evaluate DIR... [--match-radius 5] [--protocol vgg] [--json]
    minifcrn train (--data DIR | --synthetic N) --out DIR [--arch fcrn-a|fcrn-b] [--init M] [--epochs E] ...
    minifcrn invert IMAGE [--layers conv1 ...] [--roi x0,y0,x1,y1] [--out DIR]
    minifcrn synth --synthetic N --out DIR [--seed S] [--size WxH] [--cell-size D] ...

count and evaluate share the counting options (--model, --channel, --cell-size, --tile-size,
--threshold, --min-distance, --device).  Every sub-command is a thin shell over functions
importable from Python.  Bad input ends with a one-line message on stderr naming the file and
the problem, and exit code 2; the other images of the same call are still processed.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from minifcrn import __version__
from minifcrn.counting import DEFAULT_MIN_DISTANCE, DEFAULT_THRESHOLD
from minifcrn.errors import InputError
from minifcrn.io import check_out_folder

EXIT_BAD_INPUT = 2


def _channel(value: str):
    if value in ("grey", "gray", "inverted", "auto"):  # (to_plane reads "gray" as "grey")
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--channel must be 'auto', 'grey', 'inverted' or a channel number, "
                                         f"got {value!r}") from None


def _size(value: str):
    try:
        w, _, h = value.lower().partition("x")
        return int(w), int(h or w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must be W or WxH in pixels, got {value!r}") from None


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, where it has one."""

    def _get_help_string(self, action):
        return action.help if action.default is None or action.default is False else super()._get_help_string(action)


def _parent(*options) -> argparse.ArgumentParser:
    """A parent parser holding the shared ``options`` (names of ``_OPTIONS``)."""
    parent = argparse.ArgumentParser(add_help=False)
    for name in options:
        flags, kwargs = _OPTIONS[name]
        parent.add_argument(*flags, **kwargs)
    return parent


_OPTIONS = {
    "model": (["--model"], dict(default="fcrn-a", help="fcrn-a, fcrn-b (shipped) or a weights .npz")),
    "channel": (["--channel"], dict(type=_channel, default=None, metavar="auto|grey|inverted|N",
                                    help="'grey' (mean of RGB), 'inverted' (grey negated: dark nuclei, e.g. H&E), "
                                         "a channel number, or 'auto': inverted if the background is bright, else "
                                         "grey. Default: the weights' own channel if they were trained on "
                                         "'inverted' or a number, else auto")),
    "device": (["--device"], dict(default="cpu", choices=["cpu", "cuda"], help="where the network runs")),
    "seed": (["--seed"], dict(type=int, default=0, help="random seed")),
    "threshold": (["--threshold"], dict(type=float, default=DEFAULT_THRESHOLD, help="detection threshold, "
                                        "cells per pixel (default: %(default).3g, half a lone cell's peak)")),
    "min_distance": (["--min-distance"], dict(type=int, default=DEFAULT_MIN_DISTANCE,
                                              help="minimum pixels between detections")),
    "cell_size": (["--cell-size"], dict(default="auto", metavar="auto|none|PIXELS",
                                        help="typical nucleus diameter in your images; they are resized so the network "
                                             "sees cells at the size it was trained on (9 px for the shipped weights), "
                                             "counts kept. auto: estimated from each image (resized only if more than "
                                             "25%% off); none: never resize")),
    "tile_size": (["--tile-size"], dict(type=int, default=None,
                                        help="run the network on tiles of this size (multiple of 8), exact at the "
                                             "seams; default: 1024 above 2048x2048 pixels, else whole images; 0: never")),
    "json": (["--json"], dict(action="store_true", help="print JSON instead of a table")),
}
COUNTING = ("model", "channel", "cell_size", "tile_size", "threshold", "min_distance", "device")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minifcrn",
        description="Count and detect cells with fully convolutional regression networks (FCRN), "
                    "on a small from-scratch NumPy/CuPy deep-learning engine.")
    parser.add_argument("--version", action="version", version=f"minifcrn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    command = functools.partial(sub.add_parser, formatter_class=_ShowDefaults)

    counting = _parent(*COUNTING, "json")

    c = command("count", parents=[counting], help="count and detect cells in images")
    c.add_argument("inputs", nargs="*", metavar="IMAGE_OR_DIR", help="PNG/TIFF files, folders or glob patterns")
    c.add_argument("--sample", action="store_true", help="also count the sample image shipped with minifcrn")
    c.add_argument("--roi", help="count only inside x0,y0,x1,y1 (pixels, x1/y1 exclusive)")
    c.add_argument("--out", help="folder for results.csv/.json (one row per image, written as it goes), "
                                 "<name>_detections.csv and <name>_count.png")
    c.add_argument("--resume", action="store_true",
                   help="skip the images --out/results.csv already counted (after an interruption)")
    c.add_argument("--figure", action="store_true",
                   help="with --out, also write <name>_figure.png: image, density, ground truth (when the image "
                        "has annotations beside it) and detections, with colour bars (needs minifcrn[viz])")

    e = command("evaluate", parents=[counting], help="count error and detection scores on annotated images")
    e.add_argument("folders", nargs="+", metavar="DIR",
                   help="folders of images with NNNdots.png or name.csv annotations (scores pooled over all)")
    e.add_argument("--match-radius", type=float, default=5.0,
                   help="a detection matches a true centre at most this far away, pixels")
    e.add_argument("--protocol", choices=["vgg"], default=None,
                   help="vgg: score only the test images of the paper's Table 1 (101cell-200cell)")

    t = command("train", parents=[_parent("channel", "seed", "device")], help="train an FCRN on annotated images")
    t.add_argument("--data", metavar="DIR", help="training images with annotations")
    t.add_argument("--synthetic", type=int, metavar="N",
                   help="train on N generated images (minifcrn.synth, made on the fly from --seed, nothing on disk) "
                        "instead of --data; validation on --val or on N/10 other generated images")
    t.add_argument("--val", metavar="DIR", help="validation images (if not given: --val-count of --data held out)")
    t.add_argument("--val-count", type=int, default=None, help="images of --data held out for validation (a fifth)")
    t.add_argument("--out", required=True, metavar="DIR", help="folder for checkpoint.npz, best.npz, log.csv")
    t.add_argument("--arch", default="fcrn-a", choices=["fcrn-a", "fcrn-b"], help="network (with --init: its own)")
    t.add_argument("--init", help="start from weights: fcrn-a, fcrn-b or a .npz (fine-tuning)")
    t.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.npz")
    from minifcrn.train import TrainConfig

    defaults = TrainConfig()
    for flag, field, kind, more in _TRAIN_SETTINGS:
        t.add_argument(flag, dest=field, type=kind, default=getattr(defaults, field), **more)
    _synth_options(t)

    v = command("invert", parents=[_parent("model", "channel", "seed", "device", "json")],
                       help="reconstruct an image from a layer's features (what each layer keeps)")
    v.add_argument("image", nargs="?", metavar="IMAGE", help="PNG/TIFF (a crop around a cell clump works best)")
    v.add_argument("--layers", nargs="+", metavar="LAYER",
                   help="layer names (default: every convolution, conv1 ... the last); see --list-layers")
    v.add_argument("--list-layers", action="store_true", help="print the model's layer names and stop")
    v.add_argument("--roi", help="invert only x0,y0,x1,y1 of the image (pixels, x1/y1 exclusive)")
    v.add_argument("--iterations", type=int, default=300, help="gradient steps per layer")
    v.add_argument("--lr", type=float, default=0.1, help="first step, in standardised pixel units (RMS)")
    v.add_argument("--lambda", dest="lam", type=float, default=1e-3, help="weight of the ||x||^2 penalty")
    v.add_argument("--out", default="inversion", metavar="DIR", help="folder for inversion.png (the grid)")

    g = command("synth", parents=[_parent("seed")], help="write generated fluorescence images with their centres")
    g.add_argument("--synthetic", type=int, required=True, metavar="N", help="number of images to generate")
    g.add_argument("--out", required=True, metavar="DIR",
                   help="folder for synth_NNNNN.png (.tif at 16 bits) and synth_NNNNN.csv (x,y)")
    _synth_options(g)
    return parser


# (flag, TrainConfig field, type, argparse extras); unset flags keep TrainConfig's defaults
_TRAIN_SETTINGS = [
    ("--epochs", "epochs", int, dict(help="patch epochs")),
    ("--steps", "steps_per_epoch", int, dict(help="patch batches per epoch")),
    ("--batch-size", "batch_size", int, dict(help="patches per batch")),
    ("--patch-size", "patch_size", int, dict(help="patch side, pixels")),
    ("--lr", "lr", float, dict(help="learning rate of the patch epochs")),
    ("--milestones", "milestones", int, dict(nargs="*", help="patch epochs at which lr /= 10")),
    ("--finetune-epochs", "finetune_epochs", int, dict(help="whole-image epochs after the patches")),
    ("--finetune-lr", "finetune_lr", float, dict(help="learning rate of the whole-image epochs")),
    ("--finetune-milestones", "finetune_milestones", int,
     dict(nargs="*", help="whole-image epochs (counted from the first) at which their lr /= 10")),
    ("--count-weight", "count_weight", float,
     dict(help="add this times the squared per-pixel count error to the MSE (0: the paper's loss)")),
    ("--count-window", "count_window", int,
     dict(help="take the count term's error over K x K windows instead of whole images")),
    ("--jitter", "jitter", float,
     dict(help="intensity jitter J: each standardised input times e^U(-J, J) plus U(-J, J)")),
    ("--zoom", "zoom", float,
     dict(help="patch zoom Z: each training patch spans e^U(-Z, Z) image pixels per pixel")),
]


def _synth_options(parser):
    """The generator's options, shared by ``synth`` and ``train --synthetic`` (both seeded by --seed)."""
    from minifcrn.synth import COMPONENTS, SynthConfig

    d = SynthConfig()
    parser.add_argument("--size", type=_size, default=(d.width, d.height), metavar="W[xH]",
                        help="image size in pixels")
    parser.add_argument("--cells", type=int, nargs=2, default=None, metavar=("LO", "HI"),
                        help=f"range of the number of nuclei (default {d.cells[0]} {d.cells[1]} at "
                             f"{d.width}x{d.height}, scaled with the image area for other sizes)")
    parser.add_argument("--cell-size", type=float, default=2 * d.radius, metavar="PIXELS",
                        help="mean nucleus diameter of the generated images")
    parser.add_argument("--bit-depth", type=int, default=d.bit_depth, choices=[8, 16], help="bits per pixel")
    parser.add_argument("--without", nargs="*", default=[], choices=sorted(COMPONENTS),
                        help="switch generator components off (ablations)")


def _synth_config(args):
    from minifcrn.errors import is_positive
    from minifcrn.synth import SynthConfig

    if not is_positive(args.cell_size):
        raise InputError(f"{args.command}: --cell-size must be a positive number of pixels (the nucleus diameter), "
                         f"got {args.cell_size!r}")

    return SynthConfig.sized(*args.size, args.cells, radius=args.cell_size / 2,
                             bit_depth=args.bit_depth).without(*args.without)


def _error(message: str):
    print(f"minifcrn: error: {message}", file=sys.stderr)


def cmd_count(args) -> int:
    from tqdm import tqdm

    from minifcrn.counting import count_many
    from minifcrn.inference import ASSETS

    _check_cell_size(args)
    inputs = list(args.inputs) + ([str(ASSETS / "sample.png")] if args.sample else [])
    if not inputs:
        raise InputError("count: give images, folders or glob patterns to count (or --sample)")
    for flag in ("resume", "figure"):
        if getattr(args, flag) and not args.out:
            raise InputError(f"count: --{flag} needs --out, the folder to write into")
    bar = tqdm(desc="counting", unit="image", disable=None, leave=False)
    header = [f"{'count':>10}  {'detections':>10}  {'cell size px':<19}  {'channel':<10}  file"]

    def show(row):
        bar.update()
        if row.error:
            _error(row.error)
        elif not args.json:
            size = f"{row.cell_size:7.1f} ({row.cell_size_from})"
            tqdm.write("\n".join(header + [f"{row.count:10.1f}  {row.detections:10d}  {size:<19}  "
                                           f"{row.channel:<10}  {row.file}"]))
            header.clear()  # once, above the first row

    from minifcrn.figures import matplotlib_or_note

    figures = args.figure and matplotlib_or_note()
    options = {name: getattr(args, name) for name in COUNTING if name != "model"}
    skipped = []
    rows = count_many(inputs, args.model, args.out, args.resume, figures, on_row=show, skipped=skipped,
                      roi=args.roi, **options)
    bar.close()
    for line in _count_notes(rows, skipped):
        print(f"minifcrn: note: {line}", file=sys.stderr)
    if args.json:
        results = [{"file": r.file, "count": r.count, "detections": r.detections, "cell_size": r.cell_size,
                    "cell_size_from": r.cell_size_from, "channel": r.channel, "channel_from": r.channel_from,
                    "roi": r.roi, "detections_xy_score": r.points, **r.files}
                   for r in rows if not r.error]
        weights = rows[0].weights if rows else ""
        print(json.dumps({"model": str(args.model), "weights": weights, "results": results,
                          "skipped": [{"file": str(p), "why": why} for p, why in skipped]}, indent=2))
    return EXIT_BAD_INPUT if any(r.error for r in rows) else 0


def _listed(paths, most=3) -> str:
    names = [Path(p).name for p in paths]
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _count_notes(rows, skipped) -> list[str]:
    """What a user should know of how the batch was counted: images inverted because their
    background is bright, a channel taken from the weights, files left out."""
    notes = []
    inverted = [r.file for r in rows if r.channel_from == "auto" and r.channel == "inverted"]
    if inverted:
        notes.append(f"{len(inverted)} image(s) have dark objects on a bright background (H&E or bright field?) "
                     f"and were counted inverted: {_listed(inverted)}; --channel grey counts them as they are, "
                     "--cell-size PIXELS gives their nucleus diameter if the estimate is off")
    trained = sorted({r.channel for r in rows if r.channel_from == "weights"})
    if trained:
        notes.append(f"counted channel {', '.join(trained)}, as the weights were trained; --channel overrides it")
    by_reason = {}
    for path, why in skipped:
        by_reason.setdefault(why, []).append(path)
    if by_reason:
        notes.append(f"skipped {len(skipped)} file(s): " + "; ".join(
            f"{why} x{len(paths)} ({_listed(paths)})" for why, paths in by_reason.items()))
    return notes


def _check_cell_size(args):
    """--cell-size read as count() reads it, so a bad value stops the command in one line."""
    from minifcrn.counting import cell_size_option

    args.cell_size = cell_size_option(args.cell_size, "--cell-size")


def cmd_evaluate(args) -> int:
    from minifcrn.evaluate import evaluate_folder

    _check_cell_size(args)
    several = len(args.folders) > 1

    def show(r):
        if not args.json:
            name = str(Path(r["folder"]) / r["image"]) if several else r["image"]
            print(f"{name:<12} {r['true']:6d} {r['estimate']:9.1f} {r['estimate'] - r['true']:+8.1f} "
                  f"{r['detections']:10d} {r['matched']:8d}  {r['cell_size']:7.1f} ({r['cell_size_from']})  "
                  f"{r['channel']}", flush=True)

    if not args.json:
        print(f"{'image':<12} {'true':>6} {'estimate':>9} {'error':>8} {'detections':>10} {'matched':>8}  "
              f"{'cell size px':<19}  channel")
    report = evaluate_folder(args.folders, args.model, args.channel, args.match_radius, args.threshold,
                             args.min_distance, args.device, args.protocol, args.tile_size, args.cell_size, show)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        s = report["summary"]
        print(f"{s['images']} images: MAE {s['mae']:.3f}  mean relative error {100 * s['mean_relative_error']:.2f}%  "
              f"precision {s['precision']:.3f}  recall {s['recall']:.3f}  F1 {s['f1']:.3f} "
              f"(match radius {args.match_radius:g} px)")
    return 0


def cmd_train(args) -> int:
    from minifcrn.figures import matplotlib_or_note
    from minifcrn.inference import load_model
    from minifcrn.train import TrainConfig, fit, training_sets

    matplotlib_or_note()  # for curves.png
    check_out_folder(args.out, "train")
    synth = _synth_config(args) if args.synthetic is not None else None
    channel = "auto" if args.channel is None else args.channel
    samples, val = training_sets(args.data, args.synthetic, args.val, args.val_count, channel, synth, args.seed)
    model = load_model(args.init) if args.init else None
    settings = {field: getattr(args, field) for _, field, _, _ in _TRAIN_SETTINGS}
    cfg = TrainConfig(arch=model.arch if model is not None else args.arch, seed=args.seed, device=args.device,
                      channel=channel, synthetic=args.synthetic or 0, synth=synth.to_dict() if synth else {},
                      **settings)
    try:
        summary = fit(samples, val, cfg, args.out, model=model, resume=args.resume)
    except FloatingPointError as exc:
        raise InputError(str(exc)) from None
    best = summary["best"]
    print(f"best validation MAE {best['val_mae']:.3f} at epoch {best['epoch']}; weights in "
          f"{Path(args.out) / 'best.npz'}")
    return 0


INVERSION_LEGEND = """\
E start, E end: the objective at the first and last step, E = ||phi(x) - phi0||^2 / ||phi0||^2 + lambda mean(x^2),
  phi0 the layer's features of the image, phi(x) those of the reconstruction x (started from noise)
feature err: the first term of E at the end: how closely x's features match the image's (0: exactly)
corr: correlation of x with the image: near 1, the layer keeps the picture; low, it keeps only what the count needs"""


def cmd_invert(args) -> int:
    from minifcrn.inference import load_model
    from minifcrn.invert import as_plane, conv_layers, reconstruct_all
    from minifcrn.viz import render_inversion

    model = load_model(args.model, args.device)
    if args.list_layers:
        print("\n".join(f"{n}{'  (in the default figure)' * (n in conv_layers(model))}" for n in model.layer_names))
        return 0
    if args.image is None:
        raise InputError("invert: give an IMAGE to invert (or --list-layers)")
    check_out_folder(args.out, "invert")
    picture = Path(args.out) / "inversion.png"
    plane = as_plane(args.image, "auto" if args.channel is None else args.channel, args.roi)
    results = reconstruct_all(model, plane, args.layers, progress=True, iterations=args.iterations,
                              lr=args.lr, lam=args.lam, seed=args.seed, device=args.device)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    render_inversion(plane, results, picture)
    rows = [{"layer": r.layer, "objective_start": r.objective[0], "objective_end": r.objective[-1],
             "feature_error": r.feature_error, "correlation": r.correlation, "steps": len(r.objective)}
            for r in results]
    if args.json:
        print(json.dumps({"image": args.image, "roi": args.roi, "picture": str(picture), "layers": rows}, indent=2))
        return 0
    print(f"{'layer':8s} {'E start':>9s} {'E end':>9s} {'feature err':>11s} {'corr':>6s}")
    for r in rows:
        print(f"{r['layer']:8s} {r['objective_start']:9.3g} {r['objective_end']:9.3g} "
              f"{r['feature_error']:11.3g} {r['correlation']:6.3f}")
    print(INVERSION_LEGEND)
    print(f"wrote {picture}")
    return 0


def cmd_synth(args) -> int:
    from minifcrn.synth import write_dataset

    if args.synthetic < 1:
        raise InputError(f"synth: --synthetic must be at least 1, got {args.synthetic}")
    check_out_folder(args.out, "synth")
    write_dataset(args.out, args.synthetic, _synth_config(args), args.seed, progress=True)
    print(f"wrote {args.synthetic} images with their centres (x,y CSV) to {args.out}")
    return 0


COMMANDS = {"count": cmd_count, "evaluate": cmd_evaluate, "train": cmd_train, "invert": cmd_invert, "synth": cmd_synth}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from minifcrn.backend import DeviceError, keep_freed_memory

    keep_freed_memory()  # large arrays reuse freed memory: no page faults on every layer
    try:
        return COMMANDS[args.command](args)
    except (InputError, DeviceError) as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
