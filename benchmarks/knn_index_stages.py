"""Where the time of an approximate search of a million items goes, stage by stage.

One model's self-kNN (K = 10) over n synthetic vectors (the generator of ``knn_index.py``:
SYNTHETIC, clustered; d = 384) through ``--knn-index ivf``: normalising, building the index
(k-means training and adding), tuning nprobe, the search of the first ``--queries`` items
in list order (the rest cost the same per item: the time is also scaled to all n), and
the exact search of the 1,000-item sample that checks it. FAISS on 2 threads; wall and
CPU seconds per stage, and the peak RSS.

    python benchmarks/knn_index_stages.py                       # n = 1,000,000, 50,000 queries
    python benchmarks/knn_index_stages.py --n 100000 --queries 100000
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import _harness as h


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=50_000, help="items searched (the time is scaled to n)")
    parser.add_argument("--d", type=int, default=384)
    args = parser.parse_args(argv)

    import faiss

    from knn_index import make_vectors
    from miniature.core import neighbours as nb

    faiss.omp_set_num_threads(2)

    def stage(name: str, run):
        cpu, start = h.cpu_seconds(), time.perf_counter()
        out = run()
        print(
            f"{name}: {time.perf_counter() - start:.1f} s wall, {h.cpu_seconds() - cpu:.1f} CPU s "
            f"(load average {os.getloadavg()[0]:.1f})",
            flush=True,
        )
        return out

    vectors, other = make_vectors(args.n, args.d, seed=0)
    del other
    unit = stage("normalise", lambda: nb.normalized_float32(vectors, "vectors"))
    index = nb.NeighbourIndex(unit, metric="ip", index="ivf")
    fetch = index._fetch(10, True)  # what NeighbourIndex.search fetches for K = 10, itself excluded
    stage("build (train + add)", index._build)
    stage("tune nprobe", lambda: index._tune(unit, 10, fetch, True))
    print(f"  {index.parameters}")
    order = index._list_order()
    queries = min(args.queries, args.n)

    def search() -> None:
        for start in range(0, queries, 4096):
            index._approximate(unit, order[start : min(queries, start + 4096)], 10, fetch, True)

    stage(f"search {queries:,} of {args.n:,} items (scale by {args.n / queries:g} for all)", search)
    sample = nb.sample_rows(args.n, 0)
    stage(
        "exact search of the sample",
        lambda: nb.exact_search(unit, unit, 10, metric="ip", exclude_self=True, rows=sample),
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"peak RSS {h.mib(peak)}; the matrix {h.mib(vectors.nbytes)} (its twin was made and freed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
