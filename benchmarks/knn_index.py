"""Neighbours at scale: data representation + data distribution through an approximate index.

Two models' sentence vectors of the same n items, d = 384, K = 10. The vectors are
SYNTHETIC (no model is run): a seeded hierarchical Gaussian mixture (100 topics x 20
sub-topics, plus a shared 24-dimensional low-rank spread and a little isotropic noise,
so the points are clustered at two scales as a real embedding model's are, and
neighbours are neither trivial nor random); the candidate is the reference plus small
Gaussian noise, as a quantized model's vectors are. Both are unit-normalised float32.

Representation compares the kNN sets of all n items. Distribution uses the same rows
(views, no copies): the first 80 % are the training items the Deep-KNN index holds, the
next 10 % the held-out items that set the threshold, the last 10 % the challenge items,
half of them from 20 further topics (out of distribution).

Each n runs in a fresh process with FAISS (OpenMP) limited to 2 threads; the time is
``measure_representation`` + ``measure_distribution`` with ``--knn-index`` as asked
(no bootstrap, ``ks=(10,)``: the search is what is measured), the peak RSS of the two
calls over the two matrices, each model's recall@10 of the approximate neighbour sets on
the seeded sample of 1,000 queries, the figure's deviation from exact on that sample,
and the CPU seconds (steadier than wall time on a shared machine). ``--exact-up-to N``
also runs exact search for n <= N, so the whole approximate figure can be compared with
the exact one. The table ends with the cost growth: the
exponent b of time ~ n^b between successive sizes.

    python benchmarks/knn_index.py --quick                      # n = 10,000
    python benchmarks/knn_index.py --n 10000,100000 --exact-up-to 100000
    python benchmarks/knn_index.py --n 1000000                  # several minutes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import _harness as h

THREADS = 2


def make_vectors(n: int, d: int, *, seed: int, noise: float = 0.3):
    """(reference, candidate) float32 (n, d) matrices, synthetic (see the module docstring)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(120, d)).astype(np.float32)  # the last 20: out of distribution
    subs = (topics[:, None, :] + 0.6 * rng.normal(size=(120, 20, d))).reshape(-1, d).astype(np.float32)
    spread = (rng.normal(size=(24, d)) * (1.5 / math.sqrt(24))).astype(np.float32)
    reference = np.empty((n, d), dtype=np.float32)
    candidate = np.empty((n, d), dtype=np.float32)
    ood_from = n - n // 20
    step = 65536
    for low in range(0, n, step):
        high = min(n, low + step)
        rows = np.arange(low, high)
        sub = np.where(
            rows < ood_from, rng.integers(0, 100 * 20, rows.size), rng.integers(100 * 20, 120 * 20, rows.size)
        )
        block = subs[sub] + rng.normal(size=(rows.size, 24)).astype(np.float32) @ spread
        block += rng.normal(scale=0.1, size=block.shape).astype(np.float32)
        reference[low:high] = block
        candidate[low:high] = block + rng.normal(scale=noise, size=block.shape).astype(np.float32)
    for matrix in (reference, candidate):
        for low in range(0, n, step):
            part = matrix[low : low + step]
            part /= np.linalg.norm(part, axis=1, keepdims=True)
    return reference, candidate


def worker(payload: dict) -> None:
    """One n, one index: both measurements, timed, with peak RSS."""
    import faiss
    import numpy as np

    from miniature.core.characteristics.distribution import measure_distribution
    from miniature.core.characteristics.representation import measure_representation

    faiss.omp_set_num_threads(THREADS)
    n, index = payload["n"], payload["index"]
    reference, candidate = make_vectors(n, payload["d"], seed=payload["seed"])
    train, holdout = int(0.8 * n), int(0.9 * n)

    def splits(x: np.ndarray):
        return x[:train], x[train:holdout], x[holdout:]

    common = dict(reference="reference", candidate="candidate", k=10, ks=(10,), n_bootstrap=0, seed=0)
    common["knn_index"] = index

    def progress(line: str) -> None:  # visible while the worker runs (its stdout comes at the end)
        if payload.get("progress"):
            with open(payload["progress"], "a") as handle:
                handle.write(f"{time.strftime('%H:%M:%S')} n={n} {index}: {line} (load {os.getloadavg()[0]:.1f})\n")

    progress("vectors made, measuring")
    cpu = h.cpu_seconds()
    with h.Measure() as measure:
        rep = measure_representation(reference, candidate, **common)
        middle = time.perf_counter()
        progress(
            f"representation {middle - measure.start:.1f} s ({h.cpu_seconds() - cpu:.0f} CPU s): "
            f"{rep.details.get('neighbour_search')}"
        )
        dist = measure_distribution(splits(reference), splits(candidate), **common)
    progress(f"distribution {measure.seconds - (middle - measure.start):.1f} s: {dist.details.get('neighbour_search')}")
    result = measure.as_dict()
    result.update(
        cpu_seconds=h.cpu_seconds() - cpu,
        inputs=int(reference.nbytes + candidate.nbytes),
        representation_seconds=middle - measure.start,
        distribution_seconds=measure.seconds - (middle - measure.start),
        representation=rep.figure,
        distribution=dist.figure,
        representation_search=rep.details.get("neighbour_search"),
        distribution_search=dist.details.get("neighbour_search"),
        load=os.getloadavg(),
    )
    h.emit(result)


def peak(result: dict) -> int:
    """The matrices plus the most the two calls held beyond them (RSS high-water mark)."""
    return result["inputs"] + result["peak_extra"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    h.common_arguments(parser, rounds=None)
    parser.add_argument("--n", default=None, help="comma-separated sizes (default 10000,100000; 10000 with --quick)")
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--index", default="auto", help="--knn-index for the approximate runs (default auto)")
    parser.add_argument("--exact-up-to", type=int, default=0, metavar="N", help="also run exact search for n <= N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", default=None, metavar="FILE", help="append each stage's time to FILE as it ends")
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.payload))
        return 0

    sizes = [int(v) for v in (args.n or ("10000" if args.quick else "10000,100000")).split(",")]
    h.WORKER_ENV.update(OMP_NUM_THREADS=str(THREADS), OPENBLAS_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
    info = h.machine_info()
    h.print_machine(info)
    print(f"FAISS and BLAS limited to {THREADS} threads; vectors synthetic (see the docstring); d={args.d}, K=10\n")

    runs = []
    for n in sizes:
        methods = (["exact"] if n <= args.exact_up_to else []) + [args.index]
        for method in methods:
            print(f"n={n:,} --knn-index {method} (load average before: {os.getloadavg()[0]:.2f}) ...", flush=True)
            payload = dict(n=n, d=args.d, index=method, seed=args.seed, progress=args.progress and str(args.progress))
            result = h.run_worker(__file__, ["--worker", "run", "--payload", json.dumps(payload)])
            result.update(n=n, method=method)
            runs.append(result)
            print(
                f"  {result['seconds']:.1f} s (representation {result['representation_seconds']:.1f} s, "
                f"distribution {result['distribution_seconds']:.1f} s), peak {h.mib(result['peak_rss'])} = "
                f"{result['peak_rss'] / result['inputs']:.2f}x the two matrices, load average after "
                f"{result['load'][0]:.2f}",
                flush=True,
            )

    rows = []
    exact_figures = {(r["n"]): r for r in runs if r["method"] == "exact"}
    for r in runs:
        rep, dist = r["representation_search"] or {}, r["distribution_search"] or {}
        exact = exact_figures.get(r["n"]) if r["method"] != "exact" else None
        rows.append(
            [
                f"{r['n']:,}",
                r["method"] if not rep else rep.get("reference_index", r["method"]),
                f"{r['representation_seconds']:.1f}",
                f"{r['distribution_seconds']:.1f}",
                f"{r['seconds']:.1f}",
                f"{r.get('cpu_seconds', float('nan')):.0f}",
                f"{peak(r) / r['inputs']:.2f}x",
                f"{r['representation']:.4f}",
                "–" if not rep else f"{rep['reference_recall_at_10']:.3f}/{rep['candidate_recall_at_10']:.3f}",
                "–" if not rep else f"{rep['figure_deviation']:+.4f}",
                "–" if exact is None else f"{r['representation'] - exact['representation']:+.4f}",
                f"{r['distribution']:.4f}",
                "–" if not dist else f"{dist['reference_recall_at_10']:.3f}/{dist['candidate_recall_at_10']:.3f}",
                "–" if not dist else f"{dist['figure_deviation']:+.4f}",
                "–" if exact is None else f"{r['distribution'] - exact['distribution']:+.4f}",
                f"{r['load'][0]:.1f}",
            ]
        )
    headers = [
        "n",
        "index",
        "rep s",
        "dist s",
        "total s",
        "CPU s",
        "peak/matrices",
        "kNN J",
        "rep recall@10 ref/cand",
        "rep dev (sample)",
        "rep dev (all, vs exact)",
        "OOD J",
        "dist recall@10 ref/cand",
        "dist dev (sample)",
        "dist dev (all, vs exact)",
        "load",
    ]
    print()
    print(h.table(headers, rows))
    approximate = [r for r in runs if r["method"] != "exact"]
    if len(approximate) > 1:
        print("\ncost growth of the approximate runs (time ~ n^b):")
        for first, second in zip(approximate, approximate[1:]):
            b = math.log(second["seconds"] / first["seconds"]) / math.log(second["n"] / first["n"])
            print(f"  {first['n']:,} -> {second['n']:,}: x{second['seconds'] / first['seconds']:.1f} time, b = {b:.2f}")
    h.write_json(args.json, {"machine": info, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
