#!/usr/bin/env python
"""Per-op benchmark: minifcrn vs PyTorch CPU, forward + backward, at FCRN-A's layer shapes.

FCRN-A (Xie, Noble & Zisserman 2016) on a batch of 8 single-channel 96x96
float32 images:

    conv3x3 1->32 @96, relu, maxpool2 -> 48
    conv3x3 32->64 @48, relu, maxpool2 -> 24
    conv3x3 64->128 @24, relu, maxpool2 -> 12
    conv3x3 128->512 @12, relu, upsample x2 -> 24
    conv3x3 512->128 @24, relu, upsample x2 -> 48
    conv3x3 128->64 @48, relu, upsample x2 -> 96
    conv3x3 64->32 @96, relu
    conv1x1 32->1 @96, mse loss against an (8, 1, 96, 96) target

Every distinct (op, shape) is one case (relu at 8x128x24x24, for instance,
occurs twice in the network and is timed once).  A case times one forward
plus one backward, through the public API on both sides:

    ours:   y = F.conv2d(X, W, B, 1, 1); y.backward(g)      (minifcrn tensors)
    torch:  y = torch.nn.functional.conv2d(...); y.backward(g)

with a fixed random upstream gradient g (a scalar 1 for the loss).  The
inputs require grad as they do in the network: every input except the
image fed to the first conv, the biases and weights, and not the target.
A third column, "ours raw", times the same op's ``Function.forward`` +
``Function.backward`` on raw arrays: no Tensor wrapping, no graph walk and no
leaf-gradient copy, i.e. the cost of the kernels alone.

Method: both libraries get the same thread count (environment variables set
before NumPy/Numba/PyTorch are imported, then ``torch.set_num_threads`` and
``numba.set_num_threads``; threadpoolctl for OpenBLAS when installed).  Each
case warms up (the first minifcrn call compiles or loads the Numba kernels),
checks ours against PyTorch once (forward output and input gradients,
allclose at float32 tolerance; a WARNING line if not), then runs R rounds; in
round r the runners go in a rotated order (ours, torch, raw / torch, raw, ours
/ ...) so slow drifts on a noisy machine hit all of them alike.  Before each
timed call a runner sleeps --settle-ms (150 ms: OpenBLAS's worker threads
busy-wait ~0.1 s after every GEMM and halve the speed of whatever runs next on
a 2-core box, so without the pause torch would pay for our GEMMs) and then
makes one untimed call, so the timed call finds its own thread pools awake as
in back-to-back training steps.  The machine is shared: the load other
processes put on it is measured per case (/proc/stat), each case first waits
for the machine to go quiet (--wait-quiet) and is re-timed (--retries) if the
load was high, keeping the quietest attempt.  The table shows medians; the
JSON keeps every sample.

Usage:
    python bench/ops.py                       # full run: JSON to bench/runs/, table to bench/RESULTS.md
    python bench/ops.py --quick               # smoke run, prints only (unless --out/--results given)
    python bench/ops.py --threads 1 --repeats 15 --breakdown
    python bench/ops.py --only conv           # just the cases whose name contains "conv"
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (bench/common.py; imports no numpy at module level)
import harness  # noqa: E402  (bench/harness.py; nor does it)

TARGET_RATIO = 2.0  # the target: every op within 2x of PyTorch CPU
NOISY_CORES = 0.25  # a case during which other processes kept more cores busy than this is retried

np = numba = torch = TF = mf = F = None  # imported by _load_libraries() once threads are set


def _load_libraries():
    global np, numba, torch, TF, mf, F
    import torch as _torch  # first: PyTorch's OpenMP runtime starts with its own defaults
    import torch.nn.functional as _tf

    import minifcrn
    import minifcrn.functional as _f
    import numba as _numba
    import numpy

    np, numba, torch, TF, mf, F = numpy, _numba, _torch, _tf, minifcrn, _f


# -- the network's cases ----------------------------------------------------------------
FCRN_A = [("conv", 1, 32, 3), ("relu",), ("pool",),
          ("conv", 32, 64, 3), ("relu",), ("pool",),
          ("conv", 64, 128, 3), ("relu",), ("pool",),
          ("conv", 128, 512, 3), ("relu",), ("up",),
          ("conv", 512, 128, 3), ("relu",), ("up",),
          ("conv", 128, 64, 3), ("relu",), ("up",),
          ("conv", 64, 32, 3), ("relu",),
          ("conv", 32, 1, 1), ("mse",)]


def fcrn_a_cases(batch: int = 8, size: int = 96) -> list[dict]:
    """The distinct (op, shape) cases of one FCRN-A pass, in network order, with their layer names."""
    shape = (batch, 1, size, size)
    cases: dict[tuple, dict] = {}
    counters: dict[str, int] = {}
    for i, layer in enumerate(FCRN_A):
        kind = layer[0]
        counters[kind] = counters.get(kind, 0) + 1
        layer_name = f"{kind}{counters[kind]}"
        n, c, h, w = shape
        if kind == "conv":
            _, cin, cout, k = layer
            assert cin == c, (layer, shape)
            key = (kind, shape, cout, k, i == 0)
            label = f"conv{k}x{k} {cin}->{cout} @{h}"
            params = {"out_channels": cout, "kernel": k, "padding": k // 2, "input_grad": i != 0}
            out = (n, cout, h, w)
        elif kind == "relu":
            key, label, params, out = (kind, shape), f"relu {c}ch @{h}", {}, shape
        elif kind == "pool":
            key, label, params, out = (kind, shape), f"maxpool2 {c}ch @{h}->{h // 2}", {}, \
                (n, c, h // 2, w // 2)
        elif kind == "up":
            key, label, params, out = (kind, shape), f"upsample2 {c}ch @{h}->{h * 2}", {}, \
                (n, c, h * 2, w * 2)
        elif kind == "mse":
            key, label, params, out = (kind, shape), f"mse_loss {c}ch @{h}", {"reduction": "mean"}, ()
        else:
            raise AssertionError(kind)
        if key in cases:
            cases[key]["layers"].append(layer_name)
        else:
            cases[key] = {"op": kind, "label": label, "input_shape": list(shape), "params": params,
                          "layers": [layer_name]}
        shape = out
    result = list(cases.values())
    for index, case in enumerate(result):
        case["count"] = len(case["layers"])
        case["index"] = index  # seeds the case's data, so --only and re-runs time the same arrays
    return result


# -- one case: the three runners and the check ---------------------------------------------
class Case:
    """Inputs and the ours / torch / raw fwd+bwd callables of one (op, shape)."""

    def __init__(self, spec: dict, seed: int):
        self.spec = spec
        rng = np.random.default_rng(seed)
        f32 = np.float32
        op, shape, p = spec["op"], tuple(spec["input_shape"]), spec["params"]
        x = rng.standard_normal(shape, dtype=f32)
        if op == "conv":
            o, k = p["out_channels"], p["kernel"]
            c = shape[1]
            w = (rng.standard_normal((o, c, k, k), dtype=f32) * np.sqrt(2.0 / (c * k * k))).astype(f32)
            b = (0.1 * rng.standard_normal(o, dtype=f32)).astype(f32)
            arrays, grads_wanted = [x, w, b], [p["input_grad"], True, True]
            out_shape = (shape[0], o, shape[2], shape[3])
        elif op == "mse":
            t = np.abs(rng.standard_normal(shape, dtype=f32))
            arrays, grads_wanted, out_shape = [x, t], [True, False], ()
        else:
            arrays, grads_wanted = [x], [True]
            out_shape = {"relu": shape, "pool": shape[:2] + (shape[2] // 2, shape[3] // 2),
                         "up": shape[:2] + (shape[2] * 2, shape[3] * 2)}[op]
        self.arrays, self.grads_wanted = arrays, grads_wanted
        self.gy = np.ones((), dtype=f32) if op == "mse" else rng.standard_normal(out_shape, dtype=f32)

        # ours: public API on minifcrn tensors
        self.ours_leaves = [mf.tensor(a, requires_grad=r) for a, r in zip(arrays, grads_wanted)]
        # torch: the same values (copies, so neither side can alias the other)
        self.torch_leaves = [torch.from_numpy(a.copy()).requires_grad_(r)
                             for a, r in zip(arrays, grads_wanted)]
        self.torch_gy = torch.from_numpy(self.gy.copy())
        self.op, self.p = op, p

    # forward of each library on its own leaves
    def _ours_forward(self, *t):
        op, p = self.op, self.p
        if op == "conv":
            return F.conv2d(t[0], t[1], t[2], 1, p["padding"])
        if op == "relu":
            return F.relu(t[0])
        if op == "pool":
            return F.max_pool2d(t[0], 2)
        if op == "up":
            return F.upsample_bilinear(t[0], 2)
        return F.mse_loss(t[0], t[1], p["reduction"])

    def _torch_forward(self, *t):
        op, p = self.op, self.p
        if op == "conv":
            return TF.conv2d(t[0], t[1], t[2], stride=1, padding=p["padding"])
        if op == "relu":
            return TF.relu(t[0])
        if op == "pool":
            return TF.max_pool2d(t[0], 2)
        if op == "up":
            return TF.interpolate(t[0], scale_factor=2, mode="bilinear", align_corners=False)
        return TF.mse_loss(t[0], t[1], reduction=p["reduction"])

    def _raw_function(self):
        """A fresh minifcrn ``Function`` for this op (used without Tensors)."""
        op, p = self.op, self.p
        if op == "conv":
            from minifcrn.ops.conv import Conv2d
            return Conv2d(stride=1, padding=p["padding"])
        if op == "relu":
            from minifcrn.ops.relu import ReLU
            return ReLU()
        if op == "pool":
            from minifcrn.ops.pool import MaxPool2d
            return MaxPool2d(2)
        if op == "up":
            from minifcrn.ops.upsample import UpsampleBilinear
            return UpsampleBilinear(2)
        from minifcrn.ops.loss import MSELoss
        return MSELoss(p["reduction"])

    # the timed callables: one forward + one backward each
    def ours(self):
        for leaf in self.ours_leaves:
            leaf.grad = None
        y = self._ours_forward(*self.ours_leaves)
        y.backward(None if self.op == "mse" else self.gy)
        return y

    def torch(self):
        for leaf in self.torch_leaves:
            leaf.grad = None
        y = self._torch_forward(*self.torch_leaves)
        y.backward(None if self.op == "mse" else self.torch_gy)
        return y

    def raw(self):
        fn = self._raw_function()
        fn.needs_input_grad = tuple(self.grads_wanted)
        y = fn.forward(*self.arrays)
        return y, fn.backward(self.gy)

    def raw_forward_only(self):
        fn = self._raw_function()
        fn.needs_input_grad = tuple(self.grads_wanted)
        return fn.forward(*self.arrays)

    def torch_forward_only(self):
        with torch.no_grad():
            return self._torch_forward(*self.torch_leaves)

    def check(self) -> dict:
        """Ours vs torch: forward output and every wanted input gradient, allclose at float32 tolerance."""
        y_ours = self.ours().numpy()
        y_torch = self.torch().detach().numpy()
        pairs = [("output", y_ours, y_torch)]
        for i, (lo, lt, want) in enumerate(zip(self.ours_leaves, self.torch_leaves, self.grads_wanted)):
            if want:
                pairs.append((f"grad[{i}]", lo.grad, lt.grad.numpy()))
        result = {"ok": True, "max_scaled_err": {}}
        for name, a, b in pairs:
            a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
            scale = max(float(np.abs(b).max()) if b.size else 0.0, 1e-30)
            if a.shape != b.shape:
                result["ok"] = False
                result["max_scaled_err"][name] = f"shape {a.shape} vs {b.shape}"
                continue
            err = float(np.abs(a - b).max()) / scale if a.size else 0.0
            result["max_scaled_err"][name] = err
            # float32 tolerance: relative 1e-4, absolute 1e-4 of the largest magnitude (long sums)
            if not np.allclose(a, b, rtol=1e-4, atol=1e-4 * scale, equal_nan=True):
                result["ok"] = False
        return result


# -- breakdown --------------------------------------------------------------------------
def profile_case(case: Case, repeats: int, top: int = 6) -> dict:
    """cProfile of our raw forward+backward: self time per function, per call, largest first.

    cProfile only sees Python functions and builtin C functions, so the time of
    a BLAS GEMM (``@`` / ``np.matmul``), of NumPy ufuncs and slicing, and of a
    Numba kernel counts toward the Python function that runs it.  Generic on
    purpose: it follows whatever the engine's code currently is.
    """
    import cProfile
    import pstats

    case.raw()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(repeats):
        case.raw()
    prof.disable()
    stats = pstats.Stats(prof).stats
    entries = []
    for (filename, line, func), (_, ncalls, tottime, cumtime, _) in stats.items():
        if filename == "~":
            name = func.strip("<>").replace("built-in method ", "").replace("method ", "")
        else:
            path = Path(filename)
            try:
                path = path.resolve().relative_to(common.REPO_DIR)
            except ValueError:
                path = Path(path.name)
            name = f"{path}:{func}"
        entries.append({"name": name, "self_ms": tottime / repeats * 1e3, "cum_ms": cumtime / repeats * 1e3,
                        "calls": ncalls / repeats})
    entries.sort(key=lambda e: -e["self_ms"])
    total = sum(e["self_ms"] for e in entries)
    for e in entries:
        e["share"] = e["self_ms"] / total if total else 0.0
    return {"total_ms": total, "top": entries[:top]}


def fwd_bwd_split(case: Case, repeats: int) -> dict:
    """Median ms of our raw forward, raw forward+backward, torch forward (no_grad), torch fwd+bwd."""
    out = {}
    for name, fn in (("ours_fwd", case.raw_forward_only), ("ours_fwd_bwd", case.raw),
                     ("torch_fwd", case.torch_forward_only), ("torch_fwd_bwd", case.torch)):
        fn()
        out[name] = common.summarize([common.timed(fn) for _ in range(repeats)])["median_ms"]
    out["ours_bwd"] = out["ours_fwd_bwd"] - out["ours_fwd"]
    out["torch_bwd"] = out["torch_fwd_bwd"] - out["torch_fwd"]
    return out


# -- report -----------------------------------------------------------------------------
def fmt_ms(v):
    return "n/a" if v is None else (f"{v:.2f}" if v < 10 else f"{v:.1f}")


def fmt_load(v):
    return "?" if v is None else f"{v:.2f}"


def fmt_ratio(v):
    return "n/a" if v is None else f"{v:.2f}x"


def build_rows(results: list[dict]):
    rows = []
    for r in results:
        ours, theirs = r["ours"]["median_ms"], r["torch"]["median_ms"]
        raw = r["raw"]["median_ms"] if r.get("raw") else None
        ratio = ours / theirs
        layers = ", ".join(r["layers"]) + (f" (x{r['count']})" if r["count"] > 1 else "")
        flag = "yes" if ratio <= TARGET_RATIO else "**no**"
        warn = ("" if r["check"]["ok"] else " (MISMATCH)") + (" *" if r.get("retimed") else "")
        load = fmt_load((r.get("contention") or {}).get("others_cores"))
        rows.append([r["label"] + warn, layers, fmt_ms(ours), fmt_ms(theirs), fmt_ratio(ratio),
                     fmt_ms(raw), flag, load])
    return rows


def totals(results: list[dict]) -> dict:
    out = {}
    for name, weight in (("distinct", lambda r: 1), ("network", lambda r: r["count"])):
        ours = sum(weight(r) * r["ours"]["median_ms"] for r in results)
        theirs = sum(weight(r) * r["torch"]["median_ms"] for r in results)
        raw = (sum(weight(r) * r["raw"]["median_ms"] for r in results)
               if all(r.get("raw") for r in results) else None)
        out[name] = {"ours_ms": ours, "torch_ms": theirs, "raw_ms": raw, "ratio": ours / theirs}
    return out


def summary_line(results: list[dict]) -> str:
    within = [r["label"] for r in results if r["ours"]["median_ms"] / r["torch"]["median_ms"] <= TARGET_RATIO]
    miss = [f"{r['label']} ({r['ours']['median_ms'] / r['torch']['median_ms']:.1f}x)"
            for r in results if r["ours"]["median_ms"] / r["torch"]["median_ms"] > TARGET_RATIO]
    line = f"**Target (within {TARGET_RATIO:g}x of PyTorch):** {len(within)}/{len(results)} cases meet it"
    line += f"; missing: {', '.join(miss)}." if miss else " -- all of them."
    return line


def markdown_section(run: dict) -> str:
    results = run["results"]
    m = run["machine"]
    th = run["threads"]
    tot = run["totals"]
    rows = build_rows(results)
    for key, label in (("distinct", "total, distinct cases"),
                       ("network", "total, one FCRN-A pass (each case x its layer count)")):
        t = tot[key]
        rows.append([f"**{label}**", "", f"**{fmt_ms(t['ours_ms'])}**", f"**{fmt_ms(t['torch_ms'])}**",
                     f"**{fmt_ratio(t['ratio'])}**", fmt_ms(t["raw_ms"]), "", ""])
    loads = [r["contention"]["others_cores"] for r in results
             if (r.get("contention") or {}).get("others_cores") is not None]
    lines = [
        "## Ops: minifcrn vs PyTorch CPU, forward + backward at FCRN-A layer shapes",
        "",
        f"- Date: {run['date']}" + (" (quick smoke run)" if run["config"]["quick"] else ""),
        f"- Machine: {common.machine_line(m)}",
        f"- Threads: {th['requested']} for both (torch {th['torch']}, numba {th['numba']}, "
        f"BLAS via env + threadpoolctl); engine at git {m.get('git_commit', '?')}"
        + (" with uncommitted changes in minifcrn/" if m.get("engine_dirty") else ""),
        (f"- Command: `{run['command']}`" if "merged_from" not in run else
         f"- Commands: `{run['merged_from']['command']}` ({run['merged_from']['date']}, "
         f"`{run['merged_from']['json']}`), then `{run['command']}` re-timed the cases marked * "
         f"(they were noisy in the first pass) with the engine's code unchanged"),
        f"- Method: batch {run['config']['batch']}, {run['config']['size']}x{run['config']['size']} input, "
        f"float32; per case {run['config']['warmup']} warm-up call(s) then {run['config']['repeats']} "
        "interleaved rounds (ours/torch/raw in rotated order; before each timed call a "
        f"{run['config']['settle_ms']:g} ms pause, for OpenBLAS's ~0.1 s post-GEMM spin to end, and one "
        "untimed call), median ms of one forward + one backward. PyTorch is imported first and keeps "
        "its OpenMP defaults; Numba runs its own workqueue pool (bench/common.configure_threads). "
        "\"ours raw\" = the op's Function.forward + Function.backward on raw arrays (no autograd "
        "bookkeeping, no leaf-grad copy). Forward output and input grads checked against torch "
        "(allclose rtol 1e-4, atol 1e-4*max|ref|)"
        + (": all match." if all(r["check"]["ok"] for r in results) else ": SOME MISMATCH, see JSON."),
        f"- Raw run: `{run.get('json_path', '(not saved)')}`",
        "- Noise: \"other load\" = cores kept busy by *other* processes while the case ran "
        "(/proc/stat minus this process)"
        + (f"; mean {sum(loads) / len(loads):.2f}, max {max(loads):.2f} of {m['cpu_count']} cores"
           if loads else "")
        + (f"; before each case the script waited (up to {run['config']['wait_quiet_s']:g} s) for the "
           f"machine to go quiet and re-timed a case up to {run['config']['retries']} times when that "
           f"load exceeded {NOISY_CORES} cores, keeping the quietest attempt"
           if run["config"]["wait_quiet_s"] or run["config"]["retries"] else "")
        + ". Cases with a high value are less trustworthy.",
        "",
        common.md_table(["case", "layers", "ours ms", "torch ms", "ours/torch", "ours raw ms",
                         f"<= {TARGET_RATIO:g}x", "other load"], rows, "llrrrrcr"),
        "",
        summary_line(results),
    ]
    bd = [r for r in results if r.get("breakdown")]
    if bd:
        lines += ["", "Forward / backward split (median ms, not interleaved; bwd = fwd+bwd - fwd):", ""]
        split_rows = []
        for r in bd:
            s = r["breakdown"]["split"]
            split_rows.append([r["label"], fmt_ms(s["ours_fwd"]), fmt_ms(s["torch_fwd"]),
                               fmt_ms(s["ours_bwd"]), fmt_ms(s["torch_bwd"])])
        lines.append(common.md_table(["case", "ours fwd", "torch fwd", "ours bwd", "torch bwd"],
                                     split_rows, "lrrrr"))
        lines += ["", ("Where our time goes: cProfile self time of our raw forward+backward, ms per call "
                       "(share). BLAS GEMMs (`@`, `np.matmul`), NumPy ufuncs/slicing and Numba kernels count "
                       "toward the Python function that runs them."), ""]
        prow = []
        for r in bd:
            pr = r["breakdown"]["profile"]
            items = [f"`{e['name']}` {fmt_ms(e['self_ms'])} ({e['share']:.0%})"
                     for e in pr["top"] if e["share"] >= 0.03][:4]
            prow.append([r["label"], fmt_ms(pr["total_ms"]), "; ".join(items)])
        lines.append(common.md_table(["case", "profiled ms", "largest self times"], prow, "lrl"))
    return "\n".join(lines)


def print_table(run: dict) -> None:
    headers = ["case", "layers", "ours ms", "torch ms", "ratio", "raw ms", "<=2x", "others"]
    rows = build_rows(run["results"])
    for key in ("distinct", "network"):
        t = run["totals"][key]
        rows.append([f"TOTAL ({key})", "", fmt_ms(t["ours_ms"]), fmt_ms(t["torch_ms"]),
                     fmt_ratio(t["ratio"]), fmt_ms(t["raw_ms"]), "", ""])
    rows = [[str(c).replace("**", "") for c in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    print()
    print("  ".join(h.ljust(wd) for h, wd in zip(headers, widths)))
    for row in rows:
        print("  ".join(c.ljust(wd) if i < 2 else c.rjust(wd) for i, (c, wd) in enumerate(zip(row, widths))))
    print()
    print(summary_line(run["results"]).replace("**", ""))


# -- re-timing the noisy cases of an earlier run -------------------------------------------
def is_noisy(result: dict) -> bool:
    load = (result.get("contention") or {}).get("others_cores")
    return load is not None and load > NOISY_CORES


def load_previous(args):
    """The earlier run to patch, or None (message printed) if it cannot be merged with this one."""
    import json

    prev = json.loads(Path(args.rerun_noisy).read_text())
    problems = []
    fp_then, fp_now = prev["machine"].get("engine_fingerprint"), common.engine_fingerprint()
    if fp_then != fp_now:
        problems.append(f"the engine's code changed (fingerprint {fp_then} then, {fp_now} now)")
    for key in ("threads", "batch", "size", "seed", "repeats", "warmup", "settle_ms"):
        if prev["config"].get(key) != getattr(args, key):
            problems.append(f"--{key.replace('_', '-')} was {prev['config'].get(key)}, now {getattr(args, key)}")
    if problems and not args.force:
        print(f"cannot merge with {args.rerun_noisy}: " + "; ".join(problems) + " (--force to merge anyway)",
              file=sys.stderr)
        return None
    for p in problems:
        print(f"WARNING: merging anyway: {p}", flush=True)
    return prev


def merge_runs(prev: dict, new: dict, prev_path: str) -> dict:
    """``prev`` with the cases of ``new`` replacing those of the same label."""
    fresh = {r["label"]: dict(r, retimed=True) for r in new["results"]}
    merged = dict(new)
    merged["results"] = [fresh.get(r["label"], r) for r in prev["results"]]
    merged["merged_from"] = {"json": prev_path, "date": prev["date"], "command": prev["command"],
                             "retimed": list(fresh)}
    merged["warnings"] = prev.get("warnings", []) + new["warnings"]
    return merged


# -- main -------------------------------------------------------------------------------
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="threads for both libraries (default: os.cpu_count() = %(default)s)")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds per case (default 15; quick 3)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up calls per runner (default 3; quick 1)")
    ap.add_argument("--settle-ms", type=float, default=None,
                    help="sleep before each (untimed call, timed call) pair, so the other library's "
                         "pool threads stop spinning; OpenBLAS spins ~100 ms after a GEMM "
                         "(default 150; quick 0)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=96, help="input height = width (multiple of 8)")
    ap.add_argument("--only", action="append", default=[],
                    help="run only the cases whose label contains this (repeatable)")
    ap.add_argument("--no-raw", action="store_true", help="skip the 'ours raw' column")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time forward vs backward separately and cProfile our side of each case")
    ap.add_argument("--wait-quiet", type=float, default=None, metavar="SECONDS",
                    help="before each case, wait up to SECONDS for other processes to use < 0.3 cores "
                         "(default 60; quick 0 = don't wait); the load is measured and reported either way")
    ap.add_argument("--retries", type=int, default=None,
                    help=f"re-time a case up to this many times when other processes kept more than "
                         f"{NOISY_CORES} cores busy during it; the quietest attempt is kept (default 2; quick 0)")
    ap.add_argument("--rerun-noisy", metavar="RUN.json", default=None,
                    help=f"re-time only the cases of an earlier run (plus any --only matches) during "
                         f"which other processes kept more than {NOISY_CORES} cores busy, and write the "
                         "merged run; refused if the engine's code changed since (see --force)")
    ap.add_argument("--force", action="store_true",
                    help="with --rerun-noisy: merge even if the engine's code or the settings differ")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true",
                    help="tiny smoke run (few repeats); writes nothing unless --out/--results are given")
    ap.add_argument("--out", default=None,
                    help="JSON file for the run (default bench/runs/ops-<date>.json; '' to skip)")
    ap.add_argument("--results", default=None,
                    help="markdown file whose ops section is rewritten (default bench/RESULTS.md; '' to skip)")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    if args.size % 8:
        ap.error("--size must be a multiple of 8 (three 2x poolings)")
    args.repeats = args.repeats or (3 if args.quick else 15)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    args.settle_ms = args.settle_ms if args.settle_ms is not None else (0.0 if args.quick else 150.0)
    args.wait_quiet = args.wait_quiet if args.wait_quiet is not None else (0.0 if args.quick else 60.0)
    args.retries = args.retries if args.retries is not None else (0 if args.quick else 2)
    stamp = common.now_stamp()
    if args.out is None:
        args.out = "" if args.quick else str(common.RUNS_DIR / f"ops-{stamp}.json")
    if args.results is None:
        args.results = "" if args.quick else str(common.RESULTS_MD)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    common.configure_threads(args.threads)
    _load_libraries()
    threads = common.apply_runtime_threads(args.threads)
    cpu_path = mf.backend.path_of(np.empty(0, np.float32))  # "cuda-emulated" under MINIFCRN_EMULATE_CUDA
    emulation = "off" if cpu_path == "cpu-fast" else cpu_path
    if emulation != "off":
        print(f"WARNING: minifcrn's NumPy ops take the {cpu_path!r} path (environment); the CPU timings "
              "below are of the emulated CUDA kernels, not of the Numba/NumPy path", flush=True)

    specs = fcrn_a_cases(args.batch, args.size)
    prev = None
    if args.rerun_noisy:
        prev = load_previous(args)
        if prev is None:
            return 2
        wanted = {r["label"] for r in prev["results"] if is_noisy(r)}
        wanted |= {s["label"] for s in specs if any(o in s["label"] for o in args.only)}
        specs = [s for s in specs if s["label"] in wanted]
        if not specs:
            print(f"{args.rerun_noisy}: no noisy case to re-time", flush=True)
            return 0
        print(f"re-timing {len(specs)} case(s) of {args.rerun_noisy}: {', '.join(s['label'] for s in specs)}")
    elif args.only:
        specs = [s for s in specs if any(o in s["label"] for o in args.only)]
        if not specs:
            print(f"no case matches {args.only}", file=sys.stderr)
            return 2
    print(f"minifcrn vs torch: {len(specs)} cases, threads={args.threads}, repeats={args.repeats}, "
          f"warmup={args.warmup}, settle={args.settle_ms:g} ms", flush=True)

    results, warnings = [], []
    t_start = time.perf_counter()
    for i, spec in enumerate(specs):
        case = Case(spec, seed=args.seed + spec["index"])
        t0 = time.perf_counter()
        case.ours()  # first call: compiles / loads the Numba kernels
        compile_s = time.perf_counter() - t0
        check = case.check()
        if not check["ok"]:
            msg = f"WARNING: {spec['label']}: minifcrn differs from torch: {check['max_scaled_err']}"
            print(msg, flush=True)
            warnings.append(msg)
        runners = [("ours", case.ours), ("torch", case.torch)]
        if not args.no_raw:
            try:
                case.raw()
                runners.append(("raw", case.raw))
            except Exception as exc:  # noqa: BLE001 - the raw column is optional
                print(f"note: {spec['label']}: raw Function timing unavailable ({exc!r})")
        attempts = []
        for attempt in range(args.retries + 1):
            quiet = common.wait_for_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
            monitor = common.CpuMonitor().start()
            timing = harness.time_interleaved(runners, args.repeats, args.warmup, args.settle_ms / 1e3, wake=True)
            contention = monitor.stop()
            attempts.append((contention, timing, quiet))
            load = contention["others_cores"]
            if load is None or load <= NOISY_CORES or attempt == args.retries:
                break
            print(f"        {spec['label']}: other processes kept {load:.2f} cores busy; "
                  f"retrying ({attempt + 1}/{args.retries})", flush=True)
        # keep the quietest attempt
        contention, timing, quiet = min(attempts, key=lambda a: a[0]["others_cores"] or 0.0)
        res = dict(spec, check=check, first_call_s=compile_s, contention=contention, **timing)
        res["attempts"] = [{"others_cores": a[0]["others_cores"],
                            "median_ms": {k: v["median_ms"] for k, v in a[1].items()}} for a in attempts]
        if quiet is not None:
            res["wait_quiet"] = quiet
        if args.breakdown:
            if args.wait_quiet > 0:
                common.wait_for_quiet(args.wait_quiet)
            monitor = common.CpuMonitor().start()
            res["breakdown"] = {"split": fwd_bwd_split(case, args.repeats),
                                "profile": profile_case(case, max(3, args.repeats // 3))}
            res["breakdown"]["contention"] = monitor.stop()
        results.append(res)
        ours, theirs = timing["ours"]["median_ms"], timing["torch"]["median_ms"]
        raw = f"  raw {timing['raw']['median_ms']:8.2f}" if "raw" in timing else ""
        print(f"[{i + 1:2d}/{len(specs)}] {spec['label']:<28s} ours {ours:8.2f} ms  torch {theirs:8.2f} ms  "
              f"ratio {ours / theirs:5.2f}x{raw}  (first call {compile_s:.2f} s, other processes "
              f"{fmt_load(contention['others_cores'])} cores)", flush=True)
        del case
        gc.collect()

    run = {
        "benchmark": "ops",
        "date": common.now_iso(),
        "command": common.command_line(),
        "config": {"threads": args.threads, "repeats": args.repeats, "warmup": args.warmup,
                   "settle_ms": args.settle_ms, "batch": args.batch, "size": args.size, "seed": args.seed,
                   "quick": args.quick, "only": args.only, "breakdown": args.breakdown,
                   "wait_quiet_s": args.wait_quiet, "retries": args.retries, "noisy_cores": NOISY_CORES,
                   "target_ratio": TARGET_RATIO},
        "threads": threads,
        "minifcrn_emulation": emulation,
        "machine": common.machine_info(),
        "env": {v: os.environ.get(v) for v in common.THREAD_ENV_VARS},
        "wall_s": time.perf_counter() - t_start,
        "warnings": warnings,
        "results": results,
    }
    if prev is not None:
        run = merge_runs(prev, run, args.rerun_noisy)
    run["totals"] = totals(run["results"])
    if args.out:
        path = Path(args.out)
        try:
            run["json_path"] = str(path.resolve().relative_to(common.REPO_DIR))
        except ValueError:
            run["json_path"] = str(path)
        common.write_json(path, run)
    print_table(run)
    if args.out:
        print(f"wrote {args.out}")
    if args.results:
        common.update_results_section(Path(args.results), "ops", markdown_section(run))
        print(f"updated the ops section of {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
