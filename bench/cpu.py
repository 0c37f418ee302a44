#!/usr/bin/env python
"""FCRN on the CPU: minifcrn vs PyTorch, whole training steps and inference, time and memory.

Workloads (float32, single-channel input), for FCRN-A and FCRN-B:

    train  batch 8 of 96x96   forward, MSE ('mean'), backward, momentum SGD step
    train  batch 1 of 256x256
    infer  1 x 256x256        forward only, no graph
    infer  1 x 1024x1024

Method: the same thread count for both libraries (environment before import,
then the libraries' own APIs); PyTorch is imported first and keeps its OpenMP
defaults, Numba runs its own 'workqueue' pool (``common.configure_threads``).  Both networks get the same
weights (ours copied into a PyTorch twin built from our layer list), and the
first outputs are compared.  After warm-up, ours and PyTorch's calls alternate,
``--repeats`` rounds, and the medians are reported, with the achieved
convolution GFLOP/s and its fraction of NumPy's float32 matrix-product rate
measured in the same run (a 2048x2048 product).

Peak memory of a training step: each library in a fresh subprocess builds the
model and batch, runs two steps, hands the heap pages it has freed back to the
system (glibc's ``malloc_trim``), then reads the resident set before a third
step and its high-water mark after it (``/proc/self/status`` VmRSS, VmHWM
reset through ``/proc/self/clear_refs``): the step's own peak above the live
data (model, batch, optimiser state).  Without the trim, "before" also counted
whatever freed pages each allocator happened to keep, which moved PyTorch's
figure between 180 and 270 MiB (FCRN-B, batch 8) from run to run.

Per-op breakdown of our step: every ``Function``'s forward and backward are
timed (wall clock, summed per op and direction) over ``--repeats`` steps.

Usage:
    python bench/cpu.py                    # everything; JSON to bench/runs/, table to bench/RESULTS.md
    python bench/cpu.py --arch fcrn-a --repeats 3 --no-results
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import harness  # noqa: E402

WORKLOADS = [("train", 8, 96), ("train", 1, 256), ("infer", 1, 256), ("infer", 1, 1024)]
TARGETS = {"train": 1.5, "infer": 1.0, "memory": 1.5}  # the closing thresholds (train goal 1.0)


def load():
    global np, step_flops
    import torch  # noqa: F401  (first: its OpenMP runtime keeps its own defaults, see common.configure_threads)

    import numpy as np
    from twins import step_flops  # imports minifcrn


def make_pair(arch, kind, batch, size, seed=0):
    """``harness.Pair`` on a standard-normal image and a uniform [0, 1) target; SGD lr 1e-4, momentum 0.9."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 1, size, size)).astype(np.float32)
    t = rng.random((batch, 1, size, size)).astype(np.float32)
    return harness.Pair(arch, kind, x, t, seed=seed, lr=1e-4, momentum=0.9, weight_decay=5e-4)


def matmul_gflops(repeats=5, n=2048):
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    a @ a
    return 2 * n ** 3 / min(common.timed(lambda: a @ a) for _ in range(repeats)) / 1e9


def time_pair(pair, repeats, warmup):
    """Ours and PyTorch's summaries over ``repeats`` alternating rounds after ``warmup`` calls each, and
    the cores other processes kept busy during the rounds (not the warm-up); garbage collection stays on."""
    runners = [("ours", pair.ours), ("torch", pair.theirs)]
    harness.warm_up(runners, warmup)
    monitor = common.CpuMonitor().start()
    timing = harness.time_interleaved(runners, repeats, 0, disable_gc=False)
    return timing["ours"], timing["torch"], monitor.stop()["others_cores"]


# -- per-op breakdown ---------------------------------------------------------------------------
def op_breakdown(pair, steps):
    """Seconds per step spent in each Function's forward and backward (ours), largest first."""
    from minifcrn.autograd import Function

    totals = {}
    originals = []

    def wrap(cls, name, direction):
        fn = cls.__dict__[direction]

        def timed_method(self, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(self, *args, **kwargs)
            finally:
                key = (name, direction)
                totals[key] = totals.get(key, 0.0) + time.perf_counter() - t0
        setattr(cls, direction, timed_method)
        originals.append((cls, direction, fn))

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    for cls in set(subclasses(Function)):
        for direction in ("forward", "backward"):
            if direction in cls.__dict__:
                wrap(cls, getattr(cls, "name", cls.__name__), direction)
    try:
        t0 = time.perf_counter()
        for _ in range(steps):
            pair.ours()
        wall = (time.perf_counter() - t0) / steps
    finally:
        for cls, direction, fn in originals:
            setattr(cls, direction, fn)
    rows = sorted(((k, v / steps) for k, v in totals.items()), key=lambda kv: -kv[1])
    return {"step_s": wall, "ops": [{"op": k[0], "direction": k[1], "s": v} for k, v in rows]}


# -- peak memory, each library in its own process -------------------------------------------------
def _rss_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(arch, batch, size, library):
    load()
    pair = make_pair(arch, "train", batch, size)
    step = pair.ours if library == "ours" else pair.theirs
    step(), step()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back: "before" is the live set
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _rss_kib("VmRSS")
    step()
    print(json.dumps({"before_kib": before, "peak_kib": _rss_kib("VmHWM")}))


def step_memory(arch, batch, size, threads):
    out = {}
    for library in ("ours", "torch"):
        cmd = [sys.executable, __file__, "--memory-child", arch, str(batch), str(size), library,
               "--threads", str(threads)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        out[library] = (r["peak_kib"] - r["before_kib"]) / 1024
    return out


# -- report -----------------------------------------------------------------------------------------
def markdown(run):
    m = run["machine"]
    lines = [f"## FCRN on the CPU: minifcrn vs PyTorch (issue 6), {run['date']}", "",
             f"- Machine: {common.machine_line(m)}",
             f"- Threads: {run['threads']} for both; engine at git {m.get('git_commit')}"
             f"{' (uncommitted changes)' if m.get('engine_dirty') else ''}",
             f"- Command: `{run['command']}`",
             f"- NumPy float32 2048x2048 matrix product, same run: {run['matmul_gflops']:.0f} GFLOP/s (the peak below)",
             f"- Method: see `bench/cpu.py`'s docstring; median of {run['repeats']} alternating rounds after "
             f"{run['warmup']} warm-up call(s). Raw run: `{run['json']}`", ""]
    rows = []
    for r in run["results"]:
        ratio = r["ours"]["median_ms"] / r["torch"]["median_ms"]
        target = TARGETS[r["kind"]]
        rows.append([r["arch"], f"{r['kind']} {r['batch']}x{r['size']}x{r['size']}",
                     f"{r['ours']['median_ms']:.0f}", f"{r['torch']['median_ms']:.0f}", f"**{ratio:.2f}x**",
                     "yes" if ratio <= target else "no",
                     f"{r['gflops_ours']:.0f} ({r['gflops_ours'] / run['matmul_gflops']:.0%})",
                     f"{r['gflops_torch']:.0f} ({r['gflops_torch'] / run['matmul_gflops']:.0%})",
                     f"{r['agreement']:.1e}", f"{r['others_cores']:.2f}" if r["others_cores"] is not None else "?"])
    lines.append(common.md_table(
        ["model", "workload", "ours ms", "torch ms", "ours/torch", "within target", "ours GFLOP/s (of peak)",
         "torch GFLOP/s (of peak)", "max rel. diff", "other load"], rows, "llrrrcrrrr"))
    lines += ["", f"Targets: training step <= {TARGETS['train']}x PyTorch (goal 1.0x), inference <= "
              f"{TARGETS['infer']}x, training-step peak memory <= {TARGETS['memory']}x. 'max rel. diff' compares "
              "the first outputs (the loss, or the density map) of the two networks holding the same weights.", ""]
    if run.get("memory"):
        rows = [[v["arch"], f"train {v['batch']}x{v['size']}x{v['size']}", f"{v['ours']:.0f}", f"{v['torch']:.0f}",
                 f"**{v['ours'] / v['torch']:.2f}x**", "yes" if v["ours"] <= TARGETS["memory"] * v["torch"] else "no"]
                for v in run["memory"]]
        lines += ["Peak memory of one training step above what was resident before it (MiB, fresh process each):", "",
                  common.md_table(["model", "workload", "ours MiB", "torch MiB", "ours/torch", "<= 1.5x"], rows,
                                  "llrrrc"), ""]
    for arch, b in run.get("breakdown", {}).items():
        total = b["step_s"]
        rows = [[o["op"], o["direction"], f"{o['s'] * 1e3:.1f}", f"{o['s'] / total:.0%}"] for o in b["ops"][:14]]
        lines += [f"Our {arch} training step (batch 8 of 96x96), per op and direction, ms per step "
                  f"(step {total * 1e3:.0f} ms; the rest is Python, autograd and the optimiser):", "",
                  common.md_table(["op", "direction", "ms", "share"], rows, "llrr"), ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", action="append", choices=["fcrn-a", "fcrn-b"], help="default: both")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--only", choices=["train", "infer"], help="only this kind of workload")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-results", action="store_true", help="print only; no JSON, no RESULTS.md")
    ap.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    common.configure_threads(args.threads)
    if args.memory_child:
        arch, batch, size, library = args.memory_child
        return memory_child(arch, int(batch), int(size), library)
    load()
    threads = common.apply_runtime_threads(args.threads)
    peak = matmul_gflops()
    print(f"numpy float32 matmul: {peak:.0f} GFLOP/s; threads {threads}")
    results, breakdown, memory = [], {}, []
    for arch in args.arch or ["fcrn-a", "fcrn-b"]:
        for kind, batch, size in WORKLOADS:
            if args.only and kind != args.only:
                continue
            pair = make_pair(arch, kind, batch, size)
            agreement = pair.agreement()["loss" if kind == "train" else "output"]
            ours, theirs, load_ = time_pair(pair, args.repeats, args.warmup)
            flops = step_flops(pair.model, batch, size, kind)
            r = {"arch": arch, "kind": kind, "batch": batch, "size": size, "ours": ours, "torch": theirs,
                 "agreement": agreement, "others_cores": load_, "flops": flops,
                 "gflops_ours": flops / ours["median_ms"] / 1e6, "gflops_torch": flops / theirs["median_ms"] / 1e6}
            results.append(r)
            print(f"{arch} {kind} {batch}x{size}: ours {ours['median_ms']:.0f} ms, torch {theirs['median_ms']:.0f} ms, "
                  f"{ours['median_ms'] / theirs['median_ms']:.2f}x, agreement {agreement:.1e}", flush=True)
            if kind == "train" and batch == 8:
                breakdown[arch] = op_breakdown(pair, args.repeats)
            del pair
            if kind == "train" and not args.no_memory:
                mem = {"arch": arch, "batch": batch, "size": size, **step_memory(arch, batch, size, args.threads)}
                memory.append(mem)
                print(f"  peak step memory: ours {mem['ours']:.0f} MiB, torch {mem['torch']:.0f} MiB", flush=True)
    stamp = common.now_stamp()
    run = {"date": common.now_iso(), "command": common.command_line(), "threads": args.threads,
           "repeats": args.repeats, "warmup": args.warmup, "machine": common.machine_info(), "matmul_gflops": peak,
           "results": results, "breakdown": breakdown, "memory": memory,
           "json": f"bench/runs/cpu-{stamp}.json"}
    text = markdown(run)
    print(text)
    if not args.no_results:
        common.write_json(common.REPO_DIR / run["json"], run)
        common.update_results_section(common.RESULTS_MD, "cpu", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
