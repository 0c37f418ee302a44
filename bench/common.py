"""Shared helpers for the benchmark scripts in ``bench/``.

Nothing here imports NumPy at module level: ``configure_threads`` must run
*before* NumPy (OpenBLAS), Numba and PyTorch are first imported, because their
thread pools read the environment when they start.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import shlex
import statistics
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RUNS_DIR = BENCH_DIR / "runs"
RESULTS_MD = BENCH_DIR / "RESULTS.md"

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                   "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMBA_NUM_THREADS")


# -- threads -------------------------------------------------------------------------
def configure_threads(n: int) -> None:
    """Ask every thread pool for ``n`` threads.  Call before importing numpy/numba/torch.

    Also gives Numba its own 'workqueue' thread pool: once PyTorch is loaded, Numba's
    OpenMP layer would share PyTorch's OpenMP runtime, so minifcrn's sleeping-threads
    default (OMP_WAIT_POLICY=PASSIVE, set on import) would either not apply to us or
    also apply to PyTorch, which it slows (a 32->64 conv at 48x48: 11 -> 20 ms).  With
    its own pool, each library runs as it would alone.  Import torch before minifcrn.
    """
    already = [m for m in ("numpy", "numba", "torch") if m in sys.modules]
    if already:
        print(f"warning: {', '.join(already)} imported before configure_threads(); "
              "environment thread settings may be ignored", file=sys.stderr)
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(n)
    os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")


def configure_training_process(n: int) -> None:
    """``configure_threads(n)``, then keep freed memory for reuse as the ``minifcrn`` command
    does (``minifcrn.backend.keep_freed_memory``; process-wide, so not for the side-by-side benches)."""
    configure_threads(n)
    from minifcrn.backend import keep_freed_memory  # imports NumPy: after the thread settings

    keep_freed_memory()


def apply_runtime_threads(n: int) -> dict:
    """Set the thread count through each library's API (after import); return what each reports."""
    import numba
    import torch

    torch.set_num_threads(n)
    numba.set_num_threads(n)
    info = {"requested": n, "torch": torch.get_num_threads(), "numba": numba.get_num_threads()}
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=n, user_api="blas")
    except ImportError:
        pass
    return info


def threadpool_report() -> list | None:
    """threadpoolctl's view of the loaded BLAS/OpenMP pools, or None if it is not installed."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    keys = ("user_api", "internal_api", "prefix", "version", "num_threads", "threading_layer",
            "architecture")
    return [{k: pool.get(k) for k in keys if pool.get(k) is not None} for pool in threadpool_info()]


# -- machine -------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_name(device: str = "cpu") -> str:
    """What a run on ``device`` ran on: the CPU's model, and for "cuda" the GPU's name first."""
    if device != "cuda":
        return cpu_model()
    import cupy as cp

    name = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"]
    return f"{name.decode() if isinstance(name, bytes) else name}, {cpu_model()}"


def cpu_flags() -> list[str]:
    """The SIMD flags of interest (AVX2 / AVX-512 ...) from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return sorted(f for f in flags if f in {"avx", "avx2", "fma", "avx512f", "avx512_bf16",
                                                        "avx512_vnni", "amx_tile"})
    except OSError:
        pass
    return []


def git_commit() -> str:
    """The short hash of the checked-out commit ('' outside a git checkout)."""
    import subprocess
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_DIR, check=False,
                          capture_output=True, text=True, timeout=5).stdout.strip()


def machine_info() -> dict:
    import numba
    import numpy
    import torch

    info = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_flags": cpu_flags(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "numba": numba.__version__,
        "torch": torch.__version__,
        "torch_mkldnn": bool(torch.backends.mkldnn.is_available()),
        "threadpools": threadpool_report(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "engine_fingerprint": engine_fingerprint(),
    }
    try:
        info["numba_threading_layer"] = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        info["numba_threading_layer"] = None
    try:
        import subprocess
        info["git_commit"] = git_commit()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "minifcrn"], cwd=REPO_DIR, check=False,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        info["engine_dirty"] = bool(dirty)
    except Exception:  # noqa: BLE001 - git is optional
        pass
    return info


ENGINE_SOURCES = ("ops/*.py", "cpu/*.py", "backend/*.py", "autograd.py", "functional.py")  # what the op timings run


def engine_fingerprint() -> str:
    """A short hash of the engine sources the ops run (``ENGINE_SOURCES``): equal hashes, same code."""
    import hashlib

    h = hashlib.sha1()
    root = REPO_DIR / "minifcrn"
    for path in sorted(p for pattern in ENGINE_SOURCES for p in root.glob(pattern)):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def machine_line(m: dict) -> str:
    blas = ""
    for pool in m.get("threadpools") or ():
        if pool.get("user_api") == "blas":
            blas = (f"; numpy BLAS {pool.get('internal_api')} {pool.get('version')} "
                    f"({pool.get('architecture', '?')}, {pool.get('num_threads')} threads)")
            break
    flags = f" [{', '.join(m['cpu_flags'])}]" if m.get("cpu_flags") else ""
    return (f"{m['cpu_model']}{flags}, {m['cpu_count']} logical cores; Python {m['python']}, "
            f"numpy {m['numpy']}, numba {m['numba']} (threading layer "
            f"{m.get('numba_threading_layer')}), torch {m['torch']}{blas}")


# -- contention ----------------------------------------------------------------------
class CpuMonitor:
    """How much CPU *other* processes used between ``start()`` and ``stop()``.

    From /proc/stat (all CPUs' busy jiffies) minus this process's own CPU time:
    ``others_cores`` is the average number of cores the rest of the machine kept
    busy, ``others_frac`` that as a fraction of all cores.  A benchmark on a
    shared 2-core box is only trustworthy while this stays near 0.
    """

    def __init__(self):
        self.ncpu = os.cpu_count() or 1
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    @staticmethod
    def _busy_jiffies():
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return None
        vals = [int(v) for v in fields]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
        return sum(vals[:8]) - idle

    def start(self):
        self.t0, self.b0, self.s0 = time.perf_counter(), self._busy_jiffies(), self._self_cpu()
        return self

    @staticmethod
    def _self_cpu():
        t = os.times()
        return t.user + t.system

    def stop(self) -> dict:
        wall = time.perf_counter() - self.t0
        b1, s1 = self._busy_jiffies(), self._self_cpu()
        if self.b0 is None or b1 is None or wall <= 0:
            return {"wall_s": wall, "others_cores": None, "others_frac": None}
        busy_s = (b1 - self.b0) / self.tick
        others = max(busy_s - (s1 - self.s0), 0.0) / wall
        return {"wall_s": wall, "others_cores": others, "others_frac": others / self.ncpu}


def wait_for_quiet(max_wait_s: float, threshold_cores: float = 0.3, probe_s: float = 2.0) -> dict:
    """Sleep until other processes use < ``threshold_cores`` cores (or ``max_wait_s`` passes)."""
    t0 = time.perf_counter()
    while True:
        mon = CpuMonitor().start()
        time.sleep(probe_s)
        load = mon.stop()["others_cores"]
        waited = time.perf_counter() - t0
        if load is None or load < threshold_cores or waited >= max_wait_s:
            return {"waited_s": waited, "others_cores": load, "quiet": load is not None and load < threshold_cores}


# -- timing --------------------------------------------------------------------------
def now_stamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def now_iso() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def timed(fn, sync=None) -> float:
    """Seconds one call of ``fn`` takes; ``sync`` (for a GPU: wait for the queued work), when
    given, runs before and after it, so the time is that of the work, not of its launch."""
    if sync:
        sync()
    t0 = time.perf_counter()
    fn()
    if sync:
        sync()
    return time.perf_counter() - t0


def summarize(samples_s: list[float]) -> dict:
    ms = sorted(s * 1e3 for s in samples_s)
    q = statistics.quantiles(ms, n=4) if len(ms) >= 2 else [ms[0]] * 3
    return {"median_ms": statistics.median(ms), "min_ms": ms[0], "max_ms": ms[-1],
            "q1_ms": q[0], "q3_ms": q[2], "n": len(ms), "samples_ms": ms}


def command_line() -> str:
    """The command as typed, relative to the repository root when possible."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(REPO_DIR)
    except ValueError:
        pass
    return " ".join(["python", shlex.quote(str(script))] + [shlex.quote(a) for a in sys.argv[1:]])


# -- output --------------------------------------------------------------------------
def write_json(path: Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def update_results_section(path: Path, key: str, body: str) -> Path:
    """Replace the text between ``<!-- key:begin -->`` and ``<!-- key:end -->`` in ``path``.

    The file is created with a ``# Benchmarks`` header if absent; a missing
    section is appended; everything outside the markers is kept as is.
    """
    path = Path(path)
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def md_table(headers: list[str], rows: list[list], align: str | None = None) -> str:
    """A GitHub-markdown table; ``align`` is one char per column: l, r or c."""
    align = align or "l" * len(headers)
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(headers) + " |",
             "| " + " | ".join(marks[a] for a in align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def publish(key: str, title: str, bullets: list[str], table: str, payload: dict | None = None,
            stem: str | None = None, path: Path = RESULTS_MD) -> str:
    """Store ``payload`` as ``runs/<stem>-<time>.json`` (if given), write the section ``key`` of
    RESULTS.md, or of the notes file ``path`` (a ``## title``, the machine, date and command of
    the payload, the bullets, the table) and print it."""
    if payload is not None:
        write_json(RUNS_DIR / f"{stem or key}-{now_stamp()}.json", payload)
        bullets = [f"Machine: {payload['machine']}; {payload['date']}", f"Command: `{payload['command']}`",
                   *bullets]
    body = "\n".join([f"## {title}", "", *[f"- {b}" for b in bullets], "", table])
    print(body)
    update_results_section(path, key, body)
    return body
