"""Representation similarity (linear CKA + debiased CKA + mutual kNN) against the kNN check.

Two (n, d) float32 matrices stand for two models' sentence vectors of the same n items:
clustered Gaussian points (model A) and a noisy random rotation of them (model B). Timed,
in one process, one call each per round with the order rotating:

* ``similarity``: ``similarity.cka_pair`` (linear and debiased CKA from one float64
  feature-space pass) plus ``similarity.mutual_knn`` at K;
* ``knn-check``: ``representation.knn_jaccard`` at K, the core of the existing kNN check
  (what ``benchmarks/knn.py`` times as "miniature").

* ``similarity+interval`` / ``knn-check+interval``: the same with the 95% interval each check
  reports by default (1,000 replicates): CKA's ``cka_interval`` (the paired bootstrap where
  affordable, else the delta method), the kNN check's bootstrap of the per-item mean.

Goal: similarity under 1.5x the kNN check's time, with and without the intervals. The
parts of ``similarity`` (CKA pass, mutual kNN, interval) are timed too, so each cost shows.

    python benchmarks/similarity.py --quick
    python benchmarks/similarity.py          # n = 20,000, d = 768, K = 10, 3 rounds
"""

from __future__ import annotations

import argparse
import json
import sys

import _harness as h

VARIANTS = (
    "similarity",
    "knn-check",
    "cka-pair-only",
    "mutual-knn-only",
    "similarity+interval",
    "knn-check+interval",
    "cka-interval-only",
)


def make_embeddings(n: int, d: int, *, seed: int, clusters: int, noise: float):
    """A: clustered Gaussian points; B = A Q + noise for a random orthogonal Q (float32)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d)).astype(np.float32)
    a = centres[rng.integers(0, clusters, size=n)] + rng.normal(size=(n, d)).astype(np.float32)
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    rotation = (q * np.sign(np.diag(r))).astype(np.float32)
    b = a @ rotation + noise * rng.normal(size=(n, d)).astype(np.float32)
    return np.ascontiguousarray(a, dtype=np.float32), np.ascontiguousarray(b, dtype=np.float32)


def timing_worker(payload: dict) -> None:
    import faiss  # noqa: F401 - libraries loaded before any clock starts

    from miniature.core.characteristics.representation import knn_jaccard
    from miniature.core.characteristics.similarity import cka_interval, cka_pair, mutual_knn
    from miniature.core.stats import mean_agreement

    a, b = make_embeddings(
        payload["n"], payload["d"], seed=payload["seed"], clusters=payload["clusters"], noise=payload["noise"]
    )
    k = payload["k"]
    figures: dict[str, float] = {}
    methods: dict[str, str] = {}

    def run(name: str, chunk: int) -> None:
        if name == "similarity":
            figures["linear_cka"], figures["debiased_cka"] = cka_pair(a, b)
            figures["mutual_knn"] = mutual_knn(a, b, k)
        elif name == "knn-check":
            figures["knn_jaccard"] = float(knn_jaccard(a, b, k).mean())
        elif name == "cka-pair-only":
            cka_pair(a, b)
        elif name == "similarity+interval":
            figures["linear_cka"], figures["debiased_cka"] = cka_pair(a, b)
            figures["mutual_knn"] = mutual_knn(a, b, k)
            low, high, method = cka_interval(a, b, n_bootstrap=1000, debiased=True)
            figures["debiased_ci_low"], figures["debiased_ci_high"] = low, high
            methods["similarity"] = method
        elif name == "knn-check+interval":
            mean_agreement(knn_jaccard(a, b, k), 0.0, n_bootstrap=1000, seed=0)
        elif name == "cka-interval-only":
            cka_interval(a, b, n_bootstrap=1000, debiased=True)
        else:
            mutual_knn(a, b, k)

    totals, _ = h.interleave_in_process(payload["variants"], payload["rounds"], 1, run)
    h.emit({"totals": totals, "figures": figures, "methods": methods})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    h.common_arguments(parser, rounds=3)
    parser.add_argument("--n", type=int, default=None, help="items (default 20000; 4000 with --quick)")
    parser.add_argument("--d", type=int, default=768, help="embedding width")
    parser.add_argument("--k", type=int, default=10, help="neighbours K")
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--noise", type=float, default=0.5, help="noise added to the rotation of A")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.worker:
        timing_worker(json.loads(args.payload))
        return 0

    n = args.n or (4000 if args.quick else 20000)
    rounds = args.rounds or (1 if args.quick else 3)
    threads = h.apply_threads(args)
    info = h.machine_info()
    h.print_machine(info)
    print(threads)
    payload = dict(
        n=n,
        d=args.d,
        k=args.k,
        seed=args.seed,
        clusters=args.clusters,
        noise=args.noise,
        variants=list(VARIANTS),
        rounds=rounds,
    )
    print(
        f"\nrepresentation similarity: n={n}, d={args.d}, K={args.k}, B = noisy rotation of A "
        f"(noise {args.noise}); {rounds} round(s), one process, order rotating\n"
    )
    timing = h.run_worker(__file__, ["--worker", "timing", "--payload", json.dumps(payload)])
    print(timing["log"])
    totals, figures = timing["totals"], timing["figures"]
    rows = []
    for name in VARIANTS:
        ratio = [x / y for x, y in zip(totals[name], totals["knn-check"])]
        rows.append([name, f"{h.median(totals[name]):.2f} s", h.fmt_ratio(ratio)])
    print(h.table(["variant", "time (median round)", "its time / knn-check's"], rows))
    print("\nfigures: " + ", ".join(f"{key} {value:.4f}" for key, value in figures.items()))
    print(f"interval method at this size: {timing['methods'].get('similarity')}")
    ratio = h.median([x / y for x, y in zip(totals["similarity"], totals["knn-check"])])
    print(
        f"\ngoal similarity (linear + debiased CKA + mutual kNN) under 1.5x the kNN check: "
        f"{ratio:.3f}x -> {'MET' if ratio < 1.5 else 'MISSED'}"
    )
    ratio = h.median([x / y for x, y in zip(totals["similarity+interval"], totals["knn-check+interval"])])
    print(f"goal the same with both checks' 95% intervals: {ratio:.3f}x -> {'MET' if ratio < 1.5 else 'MISSED'}")
    if args.quick:
        print("note: --quick is a smoke test at a small size; the goal is judged on a full run")
    h.write_json(args.json, {"machine": info, "settings": payload, "timing": timing})
    return 0


if __name__ == "__main__":
    sys.exit(main())
