"""Shared plumbing for the benchmark scripts (not a benchmark itself).

Every benchmark runs each variant in its own fresh Python process (``--worker``), so
peak memory is that variant's alone and nothing is memoised between variants; rounds
are interleaved (A B C, A B C, ...) so a noisy neighbour on the machine slows every
variant alike, and figures are medians. Peak RSS is read from the kernel: the worker
resets its high-water mark (``/proc/self/clear_refs``) just before the measured call
and reads ``VmHWM`` after it (``resource.getrusage`` ``ru_maxrss`` where /proc is
missing, which then includes set-up). tracemalloc is not used: it misses torch's and
BLAS's allocations.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

MARK = "@@benchmark-result@@ "
MIB = 1024 * 1024

#: CPU seconds per step of the last :func:`interleave_in_process`, by variant.
CPU_STEPS: dict[str, list[float]] = {}

#: Extra environment for worker processes (``--threads`` sets the thread-pool sizes here).
WORKER_ENV: dict[str, str] = {}


# -- memory ------------------------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else None


def rss_bytes() -> int:
    """Resident set size now."""
    value = _status_kib("VmRSS")
    if value is not None:
        return value * 1024
    import psutil  # pragma: no cover - non-Linux

    return psutil.Process().memory_info().rss


def reset_peak() -> bool:
    """Reset this process's peak-RSS mark to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_bytes() -> int:
    """Peak RSS since the last :func:`reset_peak` (or since the process started)."""
    value = _status_kib("VmHWM")
    if value is not None:
        return value * 1024
    scale = 1 if sys.platform == "darwin" else 1024  # pragma: no cover
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class Measure:
    """Wall time and peak RSS of the enclosed block (``with Measure() as m: ...``)."""

    def __enter__(self) -> "Measure":
        import gc

        gc.collect()
        self.exact = reset_peak()
        self.rss_before = rss_bytes()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start
        self.peak = peak_bytes()
        self.extra = max(0, self.peak - self.rss_before)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "rss_before": self.rss_before,
            "peak_rss": self.peak,
            "peak_extra": self.extra,
            "peak_exact": self.exact,
        }


# -- machine -----------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU, cores, thread pools (threadpoolctl) and library versions, for the report."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }
    try:
        import torch

        info["torch"] = (
            f"{torch.__version__} ({torch.get_num_threads()} threads, {torch.get_num_interop_threads()} inter-op)"
        )
    except ImportError:
        pass
    for name in ("transformers", "faiss", "numpy", "sklearn", "textattack"):
        try:
            from importlib.metadata import version

            dist = {"faiss": "faiss-cpu", "sklearn": "scikit-learn"}.get(name, name)
            info[name] = version(dist)
        except Exception:  # noqa: BLE001
            pass
    try:
        import faiss  # noqa: F401 - load its BLAS so threadpoolctl sees it
        import numpy  # noqa: F401
        from threadpoolctl import threadpool_info

        pools = []
        for pool in threadpool_info():
            lib = Path(pool.get("filepath", "")).name
            pools.append(
                f"{pool.get('internal_api')} {pool.get('version') or ''} "
                f"{pool.get('architecture') or ''} x{pool.get('num_threads')} ({lib})".replace("  ", " ")
            )
        info["thread_pools"] = pools
    except ImportError:
        info["thread_pools"] = ["threadpoolctl not installed"]
    return info


def print_machine(info: dict[str, Any]) -> None:
    print(
        f"machine: {info['cpu']}, {info['usable_cpus']} usable of {info['logical_cpus']} logical "
        f"CPUs, {info['memory_gib']} GiB RAM, load average {info['load_average']}"
    )
    print(
        f"python {info['python']}, torch {info.get('torch')}, transformers "
        f"{info.get('transformers')}, faiss-cpu {info.get('faiss')}, numpy {info.get('numpy')}, "
        f"scikit-learn {info.get('sklearn')}; OPENBLAS_CORETYPE={info['OPENBLAS_CORETYPE']}, "
        f"OMP_NUM_THREADS={info['OMP_NUM_THREADS']}"
    )
    for pool in info.get("thread_pools", []):
        print(f"  thread pool: {pool}")


# -- workers -----------------------------------------------------------------------------------
def emit(result: dict[str, Any]) -> None:
    """A worker's result, as one marked JSON line on stdout."""
    print(MARK + json.dumps(result), flush=True)


def run_worker(
    script: str | Path, args: Sequence[str], *, timeout: float | None = None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``python script args`` in a fresh process; its emitted result plus process figures."""
    command = [sys.executable, str(script), *args]
    start = time.perf_counter()
    process = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **WORKER_ENV, **(env or {})}
    )
    wall = time.perf_counter() - start
    lines = [line for line in process.stdout.splitlines() if line.startswith(MARK)]
    if process.returncode != 0 or not lines:
        sys.stderr.write(process.stdout[-4000:] + process.stderr[-8000:])
        raise RuntimeError(f"worker failed (exit {process.returncode}): {' '.join(command)}")
    result = json.loads(lines[-1][len(MARK) :])
    result["process_wall"] = wall
    result["log"] = "\n".join(line for line in process.stdout.splitlines() if not line.startswith(MARK))
    return result


def interleave(
    variants: Sequence[str], rounds: int, run: Callable[[str, int], dict[str, Any]], *, quiet: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """Run every variant once per round, rotating the order each round; results by variant."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for index in range(rounds):
        shift = index % len(variants)
        for name in list(variants[shift:]) + list(variants[:shift]):
            result = run(name, index)
            results[name].append(result)
            if not quiet:
                print(
                    f"  round {index + 1}/{rounds} {name:<22} {result['seconds']:8.3f} s   "
                    f"peak +{result['peak_extra'] / MIB:7.1f} MiB",
                    flush=True,
                )
    return results


def interleave_in_process(
    variants: Sequence[str],
    rounds: int,
    n_chunks: int,
    run: Callable[[str, int], Any],
    *,
    first_round_only: Sequence[str] = (),
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Fine-grained interleaving inside one process, for figures on a noisy machine.

    Each round runs every variant on every chunk of the work, rotating which variant goes
    first from chunk to chunk, so a burst of load from a neighbour lands on all variants
    alike. Returns, per variant, its total seconds in each round and its seconds for
    each (round, chunk) step in order; the CPU seconds (all threads) of each step go to
    ``CPU_STEPS``. ``run(variant, chunk)`` does the work (its return value is ignored).
    Variants in ``first_round_only`` (slow ones) run in round 1 only.
    """
    CPU_STEPS.clear()
    CPU_STEPS.update({name: [] for name in variants})
    totals: dict[str, list[float]] = {name: [0.0] * (1 if name in first_round_only else rounds) for name in variants}
    steps: dict[str, list[float]] = {name: [] for name in variants}
    for index in range(rounds):
        for chunk in range(n_chunks):
            shift = (index + chunk) % len(variants)
            for name in list(variants[shift:]) + list(variants[:shift]):
                if index and name in first_round_only:
                    continue
                start, cpu = time.perf_counter(), time.process_time()
                run(name, chunk)
                seconds = time.perf_counter() - start
                CPU_STEPS[name].append(time.process_time() - cpu)
                totals[name][index] += seconds
                steps[name].append(seconds)
        print(
            f"  round {index + 1}/{rounds}: "
            + ", ".join(f"{name} {totals[name][index]:.2f} s" for name in variants if index < len(totals[name])),
            flush=True,
        )
    return totals, steps


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def paired_ratios(
    results: dict[str, list[dict[str, Any]]], numerator: str, denominator: str, key: str = "seconds"
) -> list[float]:
    """Per round: numerator's figure over denominator's (same round, so same machine load)."""
    return [a[key] / b[key] for a, b in zip(results[numerator], results[denominator])]


def fmt_ratio(values: Sequence[float]) -> str:
    """Median ratio with the range over the paired measurements."""
    if len(values) == 1:
        return f"{values[0]:.2f}x"
    return f"{median(values):.2f}x ({min(values):.2f}-{max(values):.2f}, {len(values)} pairs)"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain Markdown table."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells[1:]]
    return "\n".join(lines)


def mib(value: float) -> str:
    return f"{value / MIB:.0f} MiB"


def common_arguments(parser: argparse.ArgumentParser, *, rounds: int | None) -> None:
    """--quick, --rounds (unless ``rounds`` is None), --json, --threads and the worker flags."""
    parser.add_argument("--quick", action="store_true", help="a small, fast run (smoke test)")
    if rounds is not None:
        parser.add_argument(
            "--rounds",
            type=int,
            default=None,
            help=f"interleaved rounds per variant (default {rounds}; fewer with --quick)",
        )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="also write every raw figure to this JSON file"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="run the workers with N threads in torch, OpenMP and BLAS (default: "
        "leave the thread pools as they are; 1 is steadier on a busy machine)",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--payload", default=None, help=argparse.SUPPRESS)


def apply_threads(args: argparse.Namespace) -> str:
    """Pass ``--threads`` to the workers through the environment; a line for the report."""
    if not args.threads:
        return "thread pools as found (see above)"
    value = str(args.threads)
    WORKER_ENV.update(OMP_NUM_THREADS=value, OPENBLAS_NUM_THREADS=value, MKL_NUM_THREADS=value)
    return f"workers limited to {value} thread(s) (OMP/OPENBLAS/MKL_NUM_THREADS={value})"


def scratch_dir(prefix: str) -> Path:
    """A temporary folder removed when this (parent) process exits."""
    import atexit
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, default=str))
        print(f"raw figures written to {path}")


def quiet_libraries() -> None:
    """Silence transformers' and TextAttack's chatter in workers."""
    import logging
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except ImportError:
        pass


def real_length_texts(n: int, *, low: int = 10, high: int = 60, seed: int = 0) -> list[str]:
    """``n`` review-like texts of ``low``..``high`` words (uniform), from the synthetic reviews.

    Each text joins generated reviews until it reaches its drawn length, then cuts there,
    so lengths spread like real short reviews rather than all being ~14 words.
    """
    import random

    from miniature.core.builtin_data import sentiment_reviews

    rng = random.Random(seed)
    pool = [r.text for r in sentiment_reviews(max(200, 4 * n), seed=seed + 1000)]
    texts = []
    cursor = 0
    for _ in range(n):
        target = rng.randint(low, high)
        words: list[str] = []
        while len(words) < target:
            words.extend(pool[cursor % len(pool)].split())
            cursor += 1
        text = " ".join(words[:target])
        texts.append(text if text.endswith(".") else text + ".")
    return texts
