#!/usr/bin/env python
"""GPU benchmark: minifcrn (CuPy + its CUDA kernels) vs PyTorch (cuDNN), FCRN-A, float32.

Workloads, each run by our FCRN-A on device "cuda" and by the same network in
PyTorch (built layer for layer, our weights copied in, outputs checked):

    train-small   training step (forward, MSE loss, backward, SGD step), batch 8 of 96x96
    train-large   the same, batch 64 of 128x128                      target: ours/torch <= 1.5
    infer-small   inference without gradients, one 256x256 image
    infer-large   inference, one 2048x2048 image                     target: ours/torch <= 1.5

Both sides compute in float32 without TF32: CUPY_TF32=0 and
NVIDIA_TF32_OVERRIDE=0 are set before CuPy, cuBLAS or cuDNN load, and PyTorch
runs with allow_tf32 off for matmul and cuDNN (cudnn.benchmark on, so it
picks its fastest algorithms for these shapes).  The SGD step is the paper's
eq. 3 (lr 0.01, momentum 0.9, weight decay 5e-4); PyTorch's SGD with
dampening = momentum does the same arithmetic (its first step aside).

Method: per workload, one forward (+ backward) on each side checks agreement
(max |ours - torch| / max |torch|, warned about above 1e-3), then warm-up
calls, then rounds alternating ours/torch; each call is timed on the wall
clock between two device synchronisations and the median is reported, with
GFLOP/s from the convolutions' analytic FLOP count (2*N*Ho*Wo*O*C*k*k per
forward; a training step is three times the forward less the first layer's
input gradient) and that as a fraction of the card's float32 matrix-product
rate, measured in the same run (an 8192x8192 matmul).

Breakdown of our train-large step: ``backend.Kernel.__call__`` is wrapped so
every launch of our kernels is timed between two CUDA events, and conv2d's
forward/backward so the matrix products it hands to cuBLAS are noted (``@``
on a CuPy array cannot be wrapped); those are then replayed alone at the same
shapes and layouts.  What remains of the step is CuPy's own elementwise
work, copies, and time the GPU waits for Python.

Usage:
    python bench/gpu.py              # needs a GPU: JSON to bench/runs/, section of bench/RESULTS.md
    python bench/gpu.py --dry-run    # CPU self-check: tiny sizes, kernels run by the CPU emulator
"""
from __future__ import annotations

import os

os.environ["CUPY_TF32"] = "0"  # read when CuPy first multiplies float32 matrices
os.environ["NVIDIA_TF32_OVERRIDE"] = "0"  # no TF32 anywhere in cuBLAS or cuDNN, for both sides

import argparse  # noqa: E402
import collections  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from minifcrn import backend  # noqa: E402
from minifcrn.models import FCRN  # noqa: E402
from minifcrn.ops import conv as conv_op  # noqa: E402
from minifcrn.cpu import upsample_conv as upsample_conv_op  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (bench/common.py)
import harness  # noqa: E402  (bench/harness.py)
from twins import step_flops  # noqa: E402  (bench/twins.py)

TARGETS = {"train-large": 1.5, "infer-large": 1.5}  # the targets: ours/torch at most this
AGREEMENT_TOL = 1e-3  # max |ours - torch| / max |torch| above this is reported
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4  # minifcrn.train's defaults


@dataclasses.dataclass(frozen=True)
class Workload:
    key: str
    kind: str  # "train" or "infer"
    batch: int
    size: int  # height = width, a multiple of 8 (three 2x2 pools): no padding, exact FLOP counts

    def __post_init__(self):
        if self.kind not in ("train", "infer") or self.size % 8:
            raise ValueError(f"bad workload {self}: kind train/infer, size a multiple of 8")

    @property
    def label(self) -> str:
        if self.kind == "train":
            return f"training step, batch {self.batch} of {self.size}x{self.size}"
        return f"inference, one {self.size}x{self.size} image"


GPU_WORKLOADS = (Workload("train-small", "train", 8, 96), Workload("train-large", "train", 64, 128),
                 Workload("infer-small", "infer", 1, 256), Workload("infer-large", "infer", 1, 2048))
DRY_RUN_WORKLOADS = (Workload("train-small", "train", 1, 16), Workload("train-large", "train", 2, 32),
                     Workload("infer-small", "infer", 1, 32), Workload("infer-large", "infer", 1, 64))
BREAKDOWN_WORKLOAD = "train-large"


# -- where it runs -------------------------------------------------------------------------
class Platform:
    """Devices, clock and synchronisation of one kind of run."""

    name = device = gemm_library = other_label = ""
    xp = np

    def context(self):
        """Entered once around the whole run."""
        return contextlib.nullcontext()

    def sync(self):
        """Wait until both libraries' queued work is done."""

    def stamp(self):
        """A point on the device's timeline."""
        return time.perf_counter()

    def elapsed_ms(self, start, end) -> float:
        return (end - start) * 1e3

    def random(self, shape):
        """A float32 array of ``shape`` on our device, uniform in [0, 1)."""
        return np.random.default_rng(0).random(shape, dtype=np.float32)

    def free_memory(self):
        gc.collect()

    def describe(self) -> dict:
        raise NotImplementedError


class Gpu(Platform):
    """The benchmark proper: minifcrn on "cuda" (CuPy), PyTorch on "cuda", CUDA events as the clock."""

    name, device = "gpu", "cuda"
    gemm_library = "cuBLAS"
    other_label = "rest: CuPy elementwise ops, copies, reductions; GPU idle waiting on Python"

    def __init__(self):
        self.cp = self.xp = backend.cupy()  # DeviceError when CuPy or the GPU is missing
        if not torch.cuda.is_available():
            raise backend.DeviceError("PyTorch sees no CUDA device (a CPU-only build of torch?)")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True

    def sync(self):
        self.cp.cuda.Device().synchronize()
        torch.cuda.synchronize()

    def stamp(self):
        event = self.cp.cuda.Event()
        event.record()
        return event

    def elapsed_ms(self, start, end) -> float:
        end.synchronize()
        return self.cp.cuda.get_elapsed_time(start, end)

    def random(self, shape):
        return self.cp.random.random(shape, dtype=self.cp.float32)

    def free_memory(self):
        gc.collect()
        self.cp.get_default_memory_pool().free_all_blocks()
        torch.cuda.empty_cache()

    def describe(self) -> dict:
        cp = self.cp
        props = cp.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        runtime, driver = cp.cuda.runtime.runtimeGetVersion(), cp.cuda.runtime.driverGetVersion()
        info = {"device": name, "compute_capability": f"{props['major']}.{props['minor']}",
                "memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
                "cuda_runtime": _cuda_version(runtime), "cuda_driver": _cuda_version(driver),
                "cupy": cp.__version__, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version(), **self.float32_settings()}
        info["versions"] = (f"CUDA runtime {info['cuda_runtime']} (driver {info['cuda_driver']}), "
                            f"CuPy {info['cupy']}, PyTorch {info['torch']} (CUDA {info['torch_cuda']}, "
                            f"cuDNN {info['cudnn']})")
        return info

    def float32_settings(self) -> dict:
        """How each library multiplies float32 matrices (TF32 must be off everywhere)."""
        return {"cublas_math_mode": _probe(self._cublas_math_mode),
                "cupy_float32_compute_type": _probe(_cupy_compute_type),
                "torch_allow_tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                                     "cudnn": torch.backends.cudnn.allow_tf32},
                "cudnn_benchmark": torch.backends.cudnn.benchmark,
                "env": {v: os.environ.get(v) for v in ("CUPY_TF32", "NVIDIA_TF32_OVERRIDE")}}

    def _cublas_math_mode(self) -> str:
        """The math mode of CuPy's cuBLAS handle: CUBLAS_DEFAULT_MATH means no TF32."""
        from cupy_backends.cuda.libs import cublas

        mode = cublas.getMathMode(self.cp.cuda.device.get_cublas_handle())
        names = {0: "CUBLAS_DEFAULT_MATH", 1: "CUBLAS_TENSOR_OP_MATH", 2: "CUBLAS_PEDANTIC_MATH",
                 3: "CUBLAS_TF32_TENSOR_OP_MATH"}
        return names.get(mode & 15, str(mode & 15)) + (" | DISALLOW_REDUCED_PRECISION_REDUCTION" if mode & 16 else "")


def _cupy_compute_type() -> str:
    """CuPy's compute type for float32 GEMMs: COMPUTE_TYPE_DEFAULT is plain float32, not TF32."""
    from cupy._core import _routines_linalg as linalg

    return linalg.compute_type_to_str(linalg.get_compute_type(np.float32))


def _probe(read) -> str:
    """``read()``, or why it failed: these are CuPy internals, which move between versions."""
    try:
        return read()
    except (ImportError, AttributeError) as exc:
        return f"unknown ({exc})"


class Emulated(Platform):
    """--dry-run: minifcrn on "cpu" with its CUDA kernels run by the CPU emulator, PyTorch on the CPU."""

    name, device = "dry-run", "cpu"
    gemm_library = "NumPy BLAS"
    other_label = "rest: NumPy ops, Python"

    def __init__(self):
        common.apply_runtime_threads(1)  # the emulator is serial; idle pools only contend on a small box

    def context(self):
        return backend.emulate_cuda()

    def describe(self) -> dict:
        info = {"device": f"CPU, CUDA kernels emulated ({common.cpu_model()})", "numpy": np.__version__,
                "torch": torch.__version__}
        info["versions"] = f"NumPy {info['numpy']}, PyTorch {info['torch']} (CPU)"
        return info


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


# -- work -----------------------------------------------------------------------------------------
def workload_flops(model: FCRN, w: Workload) -> int:
    """Convolution FLOPs of one call: the forward, or 3x it less the first layer's input gradient."""
    return step_flops(model, w.batch, w.size, w.kind)


def make_pair(w: Workload, platform: Platform, seed: int) -> harness.Pair:
    """``harness.Pair`` of FCRN-A on ``w``: uniform [0, 1) image and target, the paper's SGD (eq. 3)."""
    rng = np.random.default_rng(seed)
    shape = (w.batch, 1, w.size, w.size)
    image, target = rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32)
    return harness.Pair("fcrn-a", w.kind, image, target, seed=seed, device=platform.device, lr=LR,
                        momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, dampening=MOMENTUM)


def matmul_rate(platform: Platform, n: int, repeats: int) -> dict:
    """The float32 rate of one n x n matrix product, the yardstick of the GFLOP/s columns."""
    a, b = platform.random((n, n)), platform.random((n, n))
    out = platform.xp.empty((n, n), dtype=np.float32)
    product = lambda: platform.xp.matmul(a, b, out=out)  # noqa: E731
    product()
    timing = common.summarize([common.timed(product, platform.sync) for _ in range(repeats)])
    return {"n": n, "ms": timing["median_ms"], "gflops": 2 * n**3 / (timing["median_ms"] * 1e6), "timing": timing}


@dataclasses.dataclass(frozen=True)
class Gemm:
    """One matrix product (m x k) @ (k x n); a transposed operand is a .T view, as conv2d passes it."""

    label: str
    m: int
    k: int
    n: int
    trans_a: bool = False
    trans_b: bool = False


class StepProfiler:
    """While attached: times every launch of our CUDA kernels and notes conv2d's matrix products.

    Mirrors minifcrn/ops/conv.py's im2col path: forward Y = W @ cols; backward
    dW = dY @ cols.T and, when the input needs a gradient, dcols = W.T @ dY.
    """

    def __init__(self, platform: Platform):
        self.platform = platform
        self.launches = []  # (kernel name, start stamp, end stamp)
        self.gemms = []

    @contextlib.contextmanager
    def attached(self):
        """Monkeypatch Kernel.__call__ and the raw conv2d forward/backward (where conv.py and the
        fused up-sampling convolution call them) for the duration of the block."""
        users = (conv_op, upsample_conv_op)
        saved = [backend.Kernel.__call__] + [(m.conv2d_forward, m.conv2d_backward) for m in users]
        backend.Kernel.__call__ = self._timed_launch(saved[0])
        for m, (forward, backward) in zip(users, saved[1:]):
            m.conv2d_forward, m.conv2d_backward = self._noted_forward(forward), self._noted_backward(backward)
        try:
            yield self
        finally:
            backend.Kernel.__call__ = saved[0]
            for m, (forward, backward) in zip(users, saved[1:]):
                m.conv2d_forward, m.conv2d_backward = forward, backward

    def _timed_launch(self, launch):
        def timed(kernel, n, *args):
            start = self.platform.stamp()
            launch(kernel, n, *args)
            self.launches.append((kernel.function.name, start, self.platform.stamp()))
        return timed

    def _noted_forward(self, forward):
        def noted(x, w, b, stride, padding):
            y = forward(x, w, b, stride, padding)
            o, c, kh, kw = w.shape
            self.gemms.append(Gemm("conv forward Y = W @ cols", o, c * kh * kw, y.size // o))
            return y
        return noted

    def _noted_backward(self, backward):
        def noted(x, w, gy, stride, padding, need_x=True, need_w=True):
            o, c, kh, kw = w.shape
            taps, positions = c * kh * kw, gy.size // o
            if need_w:
                self.gemms.append(Gemm("conv backward dW = dY @ cols.T", o, positions, taps, trans_b=True))
            if need_x:
                self.gemms.append(Gemm("conv backward dcols = W.T @ dY", taps, o, positions, trans_a=True))
            return backward(x, w, gy, stride, padding, need_x, need_w)
        return noted

    def kernel_ms(self) -> dict:
        """{kernel name: (launches, total ms)} over everything recorded."""
        totals = collections.defaultdict(lambda: [0, 0.0])
        for name, start, end in self.launches:
            totals[name][0] += 1
            totals[name][1] += self.platform.elapsed_ms(start, end)
        return {name: tuple(v) for name, v in totals.items()}


def time_gemm(platform: Platform, g: Gemm, repeats: int) -> float:
    """Median ms of ``g`` replayed alone on random operands of its shapes and layouts."""
    a = platform.random((g.k, g.m)).T if g.trans_a else platform.random((g.m, g.k))
    b = platform.random((g.n, g.k)).T if g.trans_b else platform.random((g.k, g.n))
    a @ b  # noqa: B018  (warm-up: cuBLAS picks its kernel)
    samples = []
    for _ in range(repeats):
        start = platform.stamp()
        a @ b  # noqa: B018
        samples.append(platform.elapsed_ms(start, platform.stamp()))
    return statistics.median(samples)


def profile_step(platform: Platform, w: Workload, pair: harness.Pair, steps: int) -> dict:
    """Where our training step spends its time: our kernels, the GEMMs, the rest."""
    profiler = StepProfiler(platform)
    step_ms = []
    with profiler.attached():
        for _ in range(steps):
            platform.sync()
            start = platform.stamp()
            pair.ours()
            step_ms.append(platform.elapsed_ms(start, platform.stamp()))
    step = statistics.mean(step_ms)
    rows = [{"part": f"{name} (our kernel)", "calls": calls / steps, "ms": ms / steps}
            for name, (calls, ms) in sorted(profiler.kernel_ms().items(), key=lambda kv: -kv[1][1])]
    gemm_rows = collections.defaultdict(lambda: {"calls": 0.0, "ms": 0.0, "shapes": []})
    for g, count in collections.Counter(profiler.gemms).items():
        ms = time_gemm(platform, g, max(steps, 3))
        row = gemm_rows[f"{g.label} ({platform.gemm_library}, replayed)"]
        row["calls"] += count / steps
        row["ms"] += ms * count / steps
        row["shapes"].append({**dataclasses.asdict(g), "calls_per_step": count / steps, "ms_each": ms})
    rows += sorted(({"part": part, **row} for part, row in gemm_rows.items()), key=lambda r: -r["ms"])
    rows.append({"part": platform.other_label, "calls": None, "ms": step - sum(r["ms"] for r in rows)})
    for row in rows:
        row["share"] = row["ms"] / step
    return {"workload": w.key, "steps": steps, "step_ms": step, "step_samples_ms": step_ms,
            "rows": rows, "kernel_launches": len(profiler.launches), "gemms_noted": len(profiler.gemms)}


# -- one run ------------------------------------------------------------------------------------
def run_workload(platform: Platform, w: Workload, args, peak_gflops: float) -> tuple[dict, harness.Pair]:
    """Check agreement, time both sides, and derive the rates; the result and the live pair."""
    pair = make_pair(w, platform, args.seed)
    flops = workload_flops(pair.model, w)
    errors = pair.agreement()
    timing = harness.time_interleaved([("ours", pair.ours), ("torch", pair.theirs)], args.repeats, args.warmup,
                                      sync=platform.sync)
    result = {"workload": w.key, "label": w.label, "kind": w.kind, "batch": w.batch, "size": w.size,
              "conv_gflop": flops / 1e9, "agreement": errors,
              "agreement_ok": max(errors.values()) <= AGREEMENT_TOL, **timing}
    for side in ("ours", "torch"):
        rate = flops / (timing[side]["median_ms"] * 1e6)
        result[f"{side}_gflops"], result[f"{side}_peak_fraction"] = rate, rate / peak_gflops
    result["ratio"] = timing["ours"]["median_ms"] / timing["torch"]["median_ms"]
    return result, pair


def targets(results: list[dict]) -> list[dict]:
    """The issue's targets, each met or missed."""
    by_key = {r["workload"]: r for r in results}
    return [{"workload": key, "label": by_key[key]["label"], "target_ratio": limit, "ratio": by_key[key]["ratio"],
             "met": by_key[key]["ratio"] <= limit} for key, limit in TARGETS.items()]


def run_benchmark(platform: Platform, workloads, args) -> dict:
    """Every workload, the matmul yardstick and the breakdown, as one JSON-able run."""
    print(f"{platform.name}: float32 matmul {args.peak_size}x{args.peak_size} ...", flush=True)
    peak = matmul_rate(platform, args.peak_size, args.repeats)
    print(f"  {peak['ms']:.2f} ms, {peak['gflops']:.0f} GFLOP/s", flush=True)
    results, breakdown, warnings = [], None, []
    for w in workloads:
        result, pair = run_workload(platform, w, args, peak["gflops"])
        errors = ", ".join(f"{k} {v:.1e}" for k, v in result["agreement"].items())
        print(f"{w.label:<40s} ours {result['ours']['median_ms']:9.2f} ms  torch {result['torch']['median_ms']:9.2f}"
              f" ms  ratio {result['ratio']:5.2f}x  rel err {errors}", flush=True)
        if not result["agreement_ok"]:
            warnings.append(f"WARNING: {w.label}: ours and torch differ by more than {AGREEMENT_TOL:g} ({errors})")
            print(warnings[-1], flush=True)
        if w.key == BREAKDOWN_WORKLOAD:
            breakdown = profile_step(platform, w, pair, args.breakdown_steps)
        results.append(result)
        del pair
        platform.free_memory()
    env = platform.describe()
    if any("TF32" in str(env.get(key)) for key in ("cublas_math_mode", "cupy_float32_compute_type")):
        warnings.append("WARNING: CuPy multiplies float32 matrices in TF32: the comparison is not float32")
    return {"benchmark": "gpu", "date": common.now_iso(), "command": common.command_line(),
            "dry_run": args.dry_run, "environment": env,
            "config": {"repeats": args.repeats, "warmup": args.warmup, "breakdown_steps": args.breakdown_steps,
                       "peak_size": args.peak_size, "seed": args.seed, "lr": LR, "momentum": MOMENTUM,
                       "weight_decay": WEIGHT_DECAY, "agreement_tol": AGREEMENT_TOL},
            "matmul": peak, "workloads": results, "breakdown": breakdown, "targets": targets(results),
            "warnings": warnings}


# -- report -------------------------------------------------------------------------------------
def result_rows(run: dict) -> list[list[str]]:
    rows = []
    for r in run["workloads"]:
        rows.append([r["label"], f"{r['ours']['median_ms']:.2f}", f"{r['torch']['median_ms']:.2f}",
                     f"{r['ratio']:.2f}x", f"{r['ours_gflops']:.0f}", f"{r['torch_gflops']:.0f}",
                     f"{100 * r['ours_peak_fraction']:.1f}%", f"{100 * r['torch_peak_fraction']:.1f}%",
                     f"{max(r['agreement'].values()):.1e}" + ("" if r["agreement_ok"] else " (!)")])
    return rows


RESULT_HEADERS = ["workload", "ours ms", "torch ms", "ours/torch", "ours GFLOP/s", "torch GFLOP/s",
                  "ours % of matmul", "torch % of matmul", "rel err"]
BREAKDOWN_HEADERS = ["part of our step", "calls/step", "ms/step", "share"]


def breakdown_rows(bd: dict) -> list[list[str]]:
    rows = [[r["part"], "" if r["calls"] is None else f"{r['calls']:g}", f"{r['ms']:.3f}", f"{100 * r['share']:.1f}%"]
            for r in bd["rows"]]
    return rows + [["whole step (events around it, instrumented)", "", f"{bd['step_ms']:.3f}", "100.0%"]]


def target_lines(run: dict) -> list[str]:
    return [f"{t['label']}: ours/torch {t['ratio']:.2f}x, target <= {t['target_ratio']:g}x: "
            f"{'met' if t['met'] else 'MISSED'}" for t in run["targets"]]


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(wd) if i == 0 else h.rjust(wd) for i, (h, wd) in enumerate(zip(headers, widths)))]
    lines += ["  ".join(c.ljust(wd) if i == 0 else c.rjust(wd) for i, (c, wd) in enumerate(zip(row, widths)))
              for row in rows]
    return "\n".join(lines)


def print_report(run: dict):
    env, peak = run["environment"], run["matmul"]
    print(f"\n{env['device']}; {env['versions']}")
    if "cublas_math_mode" in env:
        print(f"cuBLAS math mode {env['cublas_math_mode']}, CuPy float32 compute type "
              f"{env['cupy_float32_compute_type']}, torch allow_tf32 {env['torch_allow_tf32']}")
    print(f"float32 matmul {peak['n']}x{peak['n']}: {peak['ms']:.2f} ms = {peak['gflops']:.0f} GFLOP/s\n")
    print(text_table(RESULT_HEADERS, result_rows(run)))
    if run["breakdown"]:
        print(f"\nBreakdown of our step ({run['breakdown']['workload']}):")
        print(text_table(BREAKDOWN_HEADERS, breakdown_rows(run["breakdown"])))
    print()
    for line in target_lines(run):
        print(line)


def markdown_section(run: dict) -> str:
    env, peak, cfg = run["environment"], run["matmul"], run["config"]
    title = "## GPU: minifcrn (CuPy + CUDA kernels) vs PyTorch (cuDNN), FCRN-A, float32"
    if run["dry_run"]:
        title += " -- DRY RUN (CPU emulation, tiny sizes: not a benchmark)"
    lines = [title, "",
             f"- Date: {run['date']}",
             f"- Device: {env['device']}",
             f"- Versions: {env['versions']}",
             f"- Command: `{run['command']}`"]
    if "cublas_math_mode" in env:
        lines.append(f"- Float32 without TF32: CUPY_TF32={env['env']['CUPY_TF32']}, NVIDIA_TF32_OVERRIDE="
                     f"{env['env']['NVIDIA_TF32_OVERRIDE']}; cuBLAS math mode {env['cublas_math_mode']}, CuPy "
                     f"compute type {env['cupy_float32_compute_type']}; torch allow_tf32 "
                     f"matmul={env['torch_allow_tf32']['matmul']}, cudnn={env['torch_allow_tf32']['cudnn']}; "
                     f"cudnn.benchmark={env['cudnn_benchmark']}")
    lines += [f"- Method: per workload, {cfg['warmup']} warm-up call(s) each, then {cfg['repeats']} rounds "
              "alternating ours/torch; median wall time of one call between two device synchronisations. "
              "GFLOP/s count only the convolutions (2*N*Ho*Wo*O*C*k*k per forward; a training step is 3x less "
              f"the first layer's input gradient). Yardstick: float32 matmul {peak['n']}x{peak['n']} in the same "
              f"run, {peak['ms']:.2f} ms = {peak['gflops']:.0f} GFLOP/s. Training: MSE loss, SGD eq. 3 "
              f"(lr {cfg['lr']:g}, momentum {cfg['momentum']:g}, weight decay {cfg['weight_decay']:g}); torch "
              "SGD with dampening = momentum. rel err = max|ours - torch| / max|torch| over the output (and, "
              "for training, the loss and every gradient) of one call from the same weights"
              + (": all within " if all(r["agreement_ok"] for r in run["workloads"]) else ": SOME ABOVE ")
              + f"{cfg['agreement_tol']:g}.",
              "", common.md_table(RESULT_HEADERS, result_rows(run), "lrrrrrrrr")]
    if run["breakdown"]:
        bd = run["breakdown"]
        lines += ["", f"Breakdown of our {bd['workload']} step (mean of {bd['steps']} instrumented steps; each "
                  "launch of our kernels timed between two clock stamps, CUDA events on the GPU; conv2d's matrix products replayed alone at "
                  "their shapes and layouts; the rest is the step's time not accounted for by either):", "",
                  common.md_table(BREAKDOWN_HEADERS, breakdown_rows(bd), "lrrr")]
    lines += ["", "Targets:", ""] + [f"- {line}" for line in target_lines(run)]
    if run["warnings"]:
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in run["warnings"]]
    return "\n".join(lines)


def write_outputs(run: dict, json_path: Path | None, results_path: Path | None):
    """The JSON run and the Markdown section (between <!-- gpu:begin --> and <!-- gpu:end -->)."""
    if json_path:
        common.write_json(json_path, run)
        print(f"wrote {json_path}")
    if results_path:
        common.update_results_section(results_path, "gpu", markdown_section(run))
        print(f"updated the gpu section of {results_path}")


# -- dry run ------------------------------------------------------------------------------------
def dry_run_checks(run: dict, folder: Path, before: str) -> list[str]:
    """Problems the self-check found: disagreement, an empty breakdown, damaged outputs."""
    problems = list(run["warnings"])
    bd = run["breakdown"]
    if not bd or not bd["kernel_launches"] or not bd["gemms_noted"]:
        problems.append("the breakdown recorded no kernel launch or no matrix product: the wrappers missed")
    if json.loads((folder / "gpu.json").read_text())["workloads"] != run["workloads"]:
        problems.append("the JSON run does not read back as written")
    after = (folder / "RESULTS.md").read_text()
    begin, end = "<!-- gpu:begin -->", "<!-- gpu:end -->"
    if after.count(begin) != 1 or after.count(end) != 1:
        return problems + ["RESULTS.md: expected one gpu section"]
    outside = after[:after.index(begin)] + after[after.index(end) + len(end):]
    kept = before if begin not in before else before[:before.index(begin)] + before[before.index(end) + len(end):]
    if outside.strip() != kept.strip():
        problems.append("RESULTS.md: the text outside the gpu section changed")
    return problems


def dry_run(args) -> int:
    """The CPU self-check: the whole benchmark at tiny sizes; its outputs go to a temporary folder."""
    platform = Emulated()
    with platform.context():
        run = run_benchmark(platform, DRY_RUN_WORKLOADS, args)
    print_report(run)
    print("\n" + markdown_section(run) + "\n")
    before = common.RESULTS_MD.read_text() if common.RESULTS_MD.exists() else "# Benchmarks\n"
    with tempfile.TemporaryDirectory(prefix="minifcrn-gpu-dry-run-") as tmp:
        folder = Path(tmp)
        (folder / "RESULTS.md").write_text(before)  # a copy: the section goes in, the rest must survive
        write_outputs(run, folder / "gpu.json", folder / "RESULTS.md")
        problems = dry_run_checks(run, folder, before)
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    print("dry run: " + ("FAILED" if problems else "passed") + " (the outputs above were written to a temporary "
          "folder, checked, and removed; bench/RESULTS.md untouched)")
    return 1 if problems else 0


# -- main ---------------------------------------------------------------------------------------
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU self-check without a GPU: tiny sizes, our kernels through the CPU emulator "
                         "(needs g++), torch on the CPU; writes only to a temporary folder")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds per workload (default 20; dry run 3)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up calls per side (default 3; dry run 1)")
    ap.add_argument("--breakdown-steps", type=int, default=None,
                    help="instrumented steps of the breakdown (default 5; dry run 2)")
    ap.add_argument("--peak-size", type=int, default=None,
                    help="n of the n x n float32 matmul yardstick (default 8192; dry run 256)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON file of the run (default bench/runs/gpu-<date>.json; '' to skip)")
    ap.add_argument("--results", default=None,
                    help="Markdown file whose gpu section is rewritten (default bench/RESULTS.md; '' to skip)")
    args = ap.parse_args(argv)
    if args.dry_run and (args.out is not None or args.results is not None):
        ap.error("--dry-run writes only to a temporary folder; drop --out/--results")
    dry = args.dry_run
    args.repeats = args.repeats or (3 if dry else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if dry else 3)
    args.breakdown_steps = args.breakdown_steps or (2 if dry else 5)
    args.peak_size = args.peak_size or (256 if dry else 8192)
    if not dry:
        args.out = str(common.RUNS_DIR / f"gpu-{common.now_stamp()}.json") if args.out is None else args.out
        args.results = str(common.RESULTS_MD) if args.results is None else args.results
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        return dry_run(args)
    try:
        platform = Gpu()
    except backend.DeviceError as exc:
        print(f"bench/gpu.py needs a GPU ({exc}); use --dry-run for the CPU self-check", file=sys.stderr)
        return 2
    run = run_benchmark(platform, GPU_WORKLOADS, args)
    print_report(run)
    write_outputs(run, Path(args.out) if args.out else None, Path(args.results) if args.results else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
