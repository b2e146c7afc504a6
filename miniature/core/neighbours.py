"""Nearest-neighbour search, shared by the characteristics that compare neighbours.

Data representation (kNN sets by cosine similarity), data distribution (Deep-KNN distances
to training items) and representation similarity (mutual kNN) all search here. The search
is exact (FAISS flat indexes) up to :data:`AUTO_EXACT_MAX` indexed items and runs in query
blocks, never building an n x n matrix; candidates are re-scored in float64 so ties
(duplicate texts give identical vectors) are broken the same way every time: nearer first,
then lower index.

Above that size exact search is quadratic (a million items: hours), so ``index="auto"``
turns to an approximate index (:data:`KNN_INDEXES`: FAISS inverted lists, ``ivf``, or a
graph, ``hnsw``). Its candidates are re-scored the same way, and a seeded sample of
:data:`RECALL_SAMPLE` queries is also searched exactly, so every approximate search says
how far it can be trusted (:attr:`Neighbours.recall`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import faiss
import numpy as np

from miniature.core.checks import check_2d, check_k, check_real_finite, check_whole
from miniature.errors import DataWarning

__all__ = [
    "AUTO_EXACT_MAX",
    "DEFAULT_KS",
    "KNN_INDEXES",
    "RECALL_SAMPLE",
    "RECALL_WARNING",
    "NeighbourIndex",
    "Neighbours",
    "knn_indices",
    "knn_search",
    "recall_at_k",
    "resolve_index",
    "sample_rows",
    "search_details",
    "normalized_float32",
    "exact_search",
    "usable_ks",
]

#: the Ks of a sensitivity sweep when none are given
DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 20, 50, 100)

#: what an item-vs-items K beyond the items says (see :func:`miniature.core.checks.check_k`)
TOO_FEW_ITEMS = (
    "K={k} neighbours requested but there are only n={n} items, so each item has "
    "{others} others: choose K < n ({n}) or evaluate on more items"
)

# Re-scored candidate entries (rows x candidates x dims) held in memory at once.
_RESCORE_CHUNK_ELEMENTS = 1 << 22

#: how neighbours are searched: ``auto`` (exact up to :data:`AUTO_EXACT_MAX` indexed items,
#: ``ivf`` above), ``exact`` (FAISS flat index), ``ivf`` (FAISS ``IndexIVFScalarQuantizer``, 8-bit
#: codes) or ``hnsw`` (FAISS ``IndexHNSWFlat``)
KNN_INDEXES: tuple[str, ...] = ("auto", "exact", "ivf", "hnsw")
#: ``auto`` searches exactly while the index holds at most this many items (d = 384 on two
#: shared cores: at 10,000 items IVF tuned for recall 0.99 or more scans every list and is 10x slower
#: than exact search; at 100,000 it is about twice as fast; see docs/benchmarks.md)
AUTO_EXACT_MAX = 50_000
#: queries of an approximate search that are also searched exactly, to measure its recall
RECALL_SAMPLE = 1000
#: a mean recall@K below this on the sample warns (the figures then may move by more than
#: the sampling error of the check)
RECALL_WARNING = 0.9
#: the recall an IVF index is tuned for on a separate sample (see :meth:`NeighbourIndex._tune`)
IVF_TARGET_RECALL = 0.995
_TUNING_SAMPLE = 256
# ivf fetches this many times k candidates (8-bit codes misorder near ties; the float64
# re-scoring restores the order: at 100,000 items recall equals IndexIVFFlat's)
_IVF_FETCH_PER_K = 4


def resolve_index(index: str, n_base: int) -> str:
    """The search ``index`` (one of :data:`KNN_INDEXES`) stands for with ``n_base`` indexed
    items: ``auto`` is ``exact`` up to :data:`AUTO_EXACT_MAX` items and ``ivf`` above."""
    if index not in KNN_INDEXES:
        raise ValueError(f"knn index must be one of {', '.join(KNN_INDEXES)}; got {index!r}")
    if index == "auto":
        return "exact" if n_base <= AUTO_EXACT_MAX else "ivf"
    return index


def sample_rows(m: int, seed: int | None, size: int = RECALL_SAMPLE) -> np.ndarray:
    """The seeded sample of query rows (sorted) whose neighbours are also searched exactly.

    It depends on ``m`` and ``seed`` alone, so two models' searches of the same items
    sample the same items (their figure can then be computed on the sample both ways)."""
    rng = np.random.default_rng(0 if seed is None else seed)
    return np.sort(rng.choice(m, size=min(m, size), replace=False))


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Per query, the share of its exact k neighbours that the search found: |found & exact| / k.

    Both are (m, k) arrays of item indices, each row listing distinct items."""
    found, exact = np.asarray(found), np.asarray(exact)
    if found.shape != exact.shape or found.ndim != 2 or found.shape[1] == 0:
        raise ValueError(
            f"found and exact must be (m, k) index arrays of one shape, got {found.shape} and {exact.shape}"
        )
    both = np.sort(np.concatenate([found, exact], axis=1), axis=1)
    return np.count_nonzero(both[:, 1:] == both[:, :-1], axis=1) / exact.shape[1]


@dataclass
class Neighbours:
    """The k nearest base items of every query (nearest first), how they were searched and,
    for an approximate search, the exact neighbours of a seeded sample of the queries."""

    indices: np.ndarray
    scores: np.ndarray
    method: str = "exact"
    #: the index's parameters (an approximate index: nlist and nprobe, or M and efSearch)
    parameters: dict[str, Any] = field(default_factory=dict)
    #: query rows also searched exactly (approximate searches only)
    sample: np.ndarray | None = None
    exact_indices: np.ndarray | None = None
    exact_scores: np.ndarray | None = None

    @property
    def approximate(self) -> bool:
        return self.method != "exact"

    def exact_on(self, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The exact (indices, scores) of the ``sample`` rows (an exact search: its own)."""
        if not self.approximate:
            return self.indices[sample], self.scores[sample]
        if self.sample is None or not np.array_equal(self.sample, sample):
            raise ValueError("the exact neighbours are known only on this search's own sample")
        return self.exact_indices, self.exact_scores  # type: ignore[return-value]

    def recall(self, k: int | None = None) -> float:
        """Mean recall@k (default: every neighbour searched) on the sample; 1.0 when exact."""
        if not self.approximate:
            return 1.0
        k = self.indices.shape[1] if k is None else int(k)
        return float(recall_at_k(self.indices[self.sample, :k], self.exact_indices[:, :k]).mean())  # type: ignore[index]

    def describe(self) -> str:
        """The method and its parameters in words, e.g. ``ivf (nlist 4000, nprobe 16)``."""
        if not self.parameters:
            return self.method
        return f"{self.method} ({', '.join(f'{key} {value}' for key, value in self.parameters.items())})"


def knn_search(
    embeddings: np.ndarray, k: int, *, index: str = "exact", seed: int | None = 0, block_size: int = 4096
) -> Neighbours:
    """:func:`knn_indices` with the search it came from: the cosine k nearest other items
    of every item, searched as ``index`` says (:data:`KNN_INDEXES`); an approximate search
    carries the exact neighbours of a ``seed``-ed sample of the items."""
    vectors = normalized_float32(embeddings, "embeddings")
    n = vectors.shape[0]
    k = check_k(k, n, TOO_FEW_ITEMS)
    check_whole(block_size, "block_size")
    return NeighbourIndex(vectors, metric="ip", index=index, seed=seed).search(
        vectors, k, exclude_self=True, block_size=block_size
    )


def knn_indices(
    embeddings: np.ndarray, k: int, *, block_size: int = 4096, index: str = "exact", seed: int | None = 0
) -> np.ndarray:
    """The k nearest neighbours of every item by cosine similarity, itself excluded.

    Returns an (n, k) int64 array, each row sorted by decreasing similarity with ties
    broken by lower index. Similarity is the float64 dot product of the L2-normalised
    float32 vectors (a zero vector stays zero, so it is equally similar, 0, to all);
    "itself" is excluded by index, so a duplicate of an item is still its neighbour.
    The search is exact (FAISS ``IndexFlatIP``) by default and runs in query blocks, never
    building an n x n matrix; ``index`` may ask for an approximate one (:func:`knn_search`).
    """
    return knn_search(embeddings, k, index=index, seed=seed, block_size=block_size).indices


def normalized_float32(values: np.ndarray, name: str) -> np.ndarray:
    """C-contiguous float32 copy of a non-empty (n, d) matrix with unit-length rows.

    Zero rows stay zero. Raises a ValueError naming ``name`` for a wrong shape, no rows,
    or non-finite values (counting the affected rows).
    """
    array = check_2d(values, name)
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}); embed at least one item")
    check_real_finite(array, name)
    vectors = np.array(array, dtype=np.float32, order="C", copy=True)
    # In float64, a block of rows at a time: never a float64 copy of the whole matrix.
    step = max(1, _RESCORE_CHUNK_ELEMENTS // vectors.shape[1])
    for low in range(0, vectors.shape[0], step):
        block = vectors[low : low + step]
        norms = np.linalg.norm(block.astype(np.float64), axis=1)
        nonzero = norms > 0
        block[nonzero] = (block[nonzero] / norms[nonzero, None]).astype(np.float32)
    return vectors


def exact_search(
    base: np.ndarray,
    queries: np.ndarray,
    k: int,
    *,
    metric: Literal["ip", "l2"],
    exclude_self: bool,
    block_size: int = 4096,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest base rows for every query row (or only the query ``rows`` given, one
    result row each), deterministic under ties.

    ``base`` and ``queries`` are C-contiguous float32 (see :func:`normalized_float32`);
    with ``exclude_self`` the queries are the base itself and row i never lists i.
    Returns (indices, scores): int64 (m, k) and float64 (m, k), nearest first. The score
    is the float64 inner product ("ip", larger is nearer) or float64 squared Euclidean
    distance ("l2", smaller is nearer), and order is by score, then lower index.

    FAISS finds candidates in float32 and does not say which of several tied items it
    returns at its cut-off, so each block fetches a few extra candidates, re-scores them
    in float64, and fetches more for any row where an unfetched item could still tie
    with or beat the k-th (float32 error bound included).
    """
    n_base, dim = base.shape
    index = faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
    index.add(base)
    # Worst-case float32 rounding error of one FAISS score for (at most) unit vectors.
    tolerance = 4.0 * (dim + 4) * 2.0**-24
    first_fetch = min(n_base, k + int(exclude_self) + max(8, k // 4))

    selected = np.arange(queries.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    m = selected.shape[0]
    indices = np.empty((m, k), dtype=np.int64)
    scores = np.empty((m, k), dtype=np.float64)
    for start in range(0, m, block_size):
        stop = min(m, start + block_size)
        pending = np.arange(start, stop)  # result rows; the query rows are selected[pending]
        fetch = first_fetch
        while pending.size:
            found_scores, found = index.search(queries[selected[pending]], fetch)
            # Larger is nearer from here on.
            faiss_nearness = found_scores if metric == "ip" else -found_scores
            kept, nearness = _rescore(base, queries, selected[pending], found, metric, exclude_self, k)
            indices[pending] = kept
            scores[pending] = nearness if metric == "ip" else -nearness
            if fetch >= n_base:
                break
            kth = nearness[:, k - 1]
            unsure = faiss_nearness[:, -1].astype(np.float64) + tolerance >= kth
            pending = pending[unsure]
            fetch = min(n_base, 2 * fetch)
    return indices, scores


class NeighbourIndex:
    """Base vectors (C-contiguous float32, see :func:`normalized_float32`) and the search
    structure over them, built once for every query set searched against it.

    ``exact`` runs :func:`exact_search`. ``ivf`` is FAISS ``IndexIVFScalarQuantizer``
    (8-bit codes: a quarter of float32's bytes to scan; :data:`_IVF_FETCH_PER_K` x k
    candidates re-scored) with nlist = 2 sqrt(n) lists, trained by seeded k-means
    (10 iterations) on 40 items per list, and nprobe tuned for each query set searched: raised by half from 8 until the
    recall@k of a separate seeded sample of :data:`_TUNING_SAMPLE` queries reaches
    :data:`IVF_TARGET_RECALL`. ``hnsw`` is FAISS ``IndexHNSWFlat`` (M 32, efConstruction
    80, efSearch 128); its graph, built on several threads, can
    differ from run to run. Approximate candidates are re-scored in float64 and ordered as
    the exact ones are (nearer, then lower index); a query that gets fewer than k usable
    candidates is searched exactly.
    """

    def __init__(self, base: np.ndarray, *, metric: Literal["ip", "l2"], index: str = "exact", seed: int | None = 0):
        self.base, self.metric = base, metric
        self.seed = 0 if seed is None else int(seed)
        self.method = resolve_index(index, base.shape[0])
        self._faiss: Any = None
        self.parameters: dict[str, Any] = {}

    def search(self, queries: np.ndarray, k: int, *, exclude_self: bool, block_size: int = 4096) -> Neighbours:
        """The k nearest base items of every query row (``exclude_self``: queries are the base)."""
        if self.method == "exact":
            indices, scores = exact_search(
                self.base, queries, k, metric=self.metric, exclude_self=exclude_self, block_size=block_size
            )
            return Neighbours(indices, scores)
        fetch = self._fetch(k, exclude_self)
        if self._faiss is None:
            self._build()
        if self.method == "ivf":
            self._tune(queries, k, fetch, exclude_self)
        indices = np.empty((queries.shape[0], k), dtype=np.int64)
        scores = np.empty((queries.shape[0], k), dtype=np.float64)
        order = self._list_order() if exclude_self else np.arange(queries.shape[0])
        for start in range(0, queries.shape[0], block_size):
            rows = order[start : start + block_size]
            indices[rows], scores[rows] = self._approximate(queries, rows, k, fetch, exclude_self)
        sample = sample_rows(queries.shape[0], self.seed)
        exact_indices, exact_scores = exact_search(
            self.base, queries, k, metric=self.metric, exclude_self=exclude_self, block_size=block_size, rows=sample
        )
        return Neighbours(indices, scores, self.method, dict(self.parameters), sample, exact_indices, exact_scores)

    def _fetch(self, k: int, exclude_self: bool) -> int:
        """Candidates fetched per query: ``ivf`` scores 8-bit codes, so it fetches
        :data:`_IVF_FETCH_PER_K` x k and lets the exact float64 re-scoring pick the k."""
        wanted = _IVF_FETCH_PER_K * k if self.method == "ivf" else k + max(8, k // 4)
        return min(self.base.shape[0], wanted + int(exclude_self))

    def _list_order(self) -> np.ndarray:
        """The base items list by list (IVF; else in order): searched in this order, the items
        of a block probe the same lists, which stay in cache (each row's result is the same in
        any order)."""
        if self.method != "ivf":
            return np.arange(self.base.shape[0])
        lists = self._faiss.invlists
        return np.concatenate(
            [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy() for i in range(lists.nlist)]
        ).astype(np.int64)

    def _approximate(
        self, queries: np.ndarray, rows: np.ndarray, k: int, fetch: int, exclude_self: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate neighbours of the query ``rows``, re-scored in float64 (larger nearer
        for "ip", squared distance for "l2"); rows short of k candidates are searched exactly."""
        _, found = self._faiss.search(queries[rows], fetch)
        indices, nearness = _rescore(self.base, queries, rows, found, self.metric, exclude_self, k)
        short = ~np.isfinite(nearness[:, -1])
        if short.any():
            indices[short], exact = exact_search(
                self.base, queries, k, metric=self.metric, exclude_self=exclude_self, rows=rows[short]
            )
            nearness[short] = exact if self.metric == "ip" else -exact
        return indices, (nearness if self.metric == "ip" else -nearness)

    def _build(self) -> None:
        n, dim = self.base.shape
        metric = faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2
        if self.method == "hnsw":
            self._faiss = faiss.IndexHNSWFlat(dim, 32, metric)
            self._faiss.hnsw.efConstruction = 80
            self._faiss.add(self.base)
            self._faiss.hnsw.efSearch = 128
            self.parameters = {"M": 32, "efSearch": 128}
            return
        nlist = max(1, min(n // 39, round(2 * math.sqrt(n))))  # FAISS wants 39 training items a list
        quantizer = faiss.IndexFlatIP(dim) if self.metric == "ip" else faiss.IndexFlatL2(dim)
        self._faiss = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, metric)
        self._faiss.cp.seed = self.seed
        self._faiss.cp.niter = 10
        self._faiss.cp.max_points_per_centroid = 40
        rng = np.random.default_rng(self.seed)
        training = self.base[np.sort(rng.choice(n, size=min(n, 40 * nlist), replace=False))]
        self._faiss.train(training)
        self._faiss.add(self.base)

    def _tune(self, queries: np.ndarray, k: int, fetch: int, exclude_self: bool) -> None:
        """The smallest nprobe (8, 12, 18, 27, ...) whose recall@k on a tuning sample, drawn apart
        from the sample the search reports on, reaches :data:`IVF_TARGET_RECALL`."""
        reported = sample_rows(queries.shape[0], self.seed)
        rest = np.setdiff1d(np.arange(queries.shape[0]), reported)
        pool = rest if rest.size else reported
        rng = np.random.default_rng(self.seed + 1)
        tuning = np.sort(rng.choice(pool, size=min(pool.size, _TUNING_SAMPLE), replace=False))
        exact, _ = exact_search(self.base, queries, k, metric=self.metric, exclude_self=exclude_self, rows=tuning)
        nlist = self._faiss.nlist
        nprobe = min(8, nlist)
        while True:
            self._faiss.nprobe = nprobe
            found, _ = self._approximate(queries, tuning, k, fetch, exclude_self)
            if nprobe >= nlist or recall_at_k(found, exact).mean() >= IVF_TARGET_RECALL:
                break
            nprobe = min(nlist, (3 * nprobe) // 2)
        self.parameters = {"nlist": nlist, "nprobe": nprobe}


def _rescore(
    base: np.ndarray,
    queries: np.ndarray,
    rows: np.ndarray,
    candidates: np.ndarray,
    metric: str,
    exclude_self: bool,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-score FAISS candidates in float64 and keep the k nearest (score, then index).

    Only the gathered candidate rows are widened to float64, chunk by chunk (exact), so no
    float64 copy of the whole base is ever held.
    """
    count, fetched = candidates.shape
    nearness = np.empty((count, fetched), dtype=np.float64)
    step = max(1, _RESCORE_CHUNK_ELEMENTS // max(1, fetched * base.shape[1]))
    for low in range(0, count, step):
        high = min(count, low + step)
        query = queries[rows[low:high]].astype(np.float64)[:, None, :]
        gathered = base[candidates[low:high]].astype(np.float64)
        if metric == "ip":
            nearness[low:high] = (gathered * query).sum(axis=-1)
        else:
            nearness[low:high] = -((gathered - query) ** 2).sum(axis=-1)
    nearness += 0.0  # turn -0.0 into 0.0
    dropped = candidates < 0
    if exclude_self:
        dropped |= candidates == rows[:, None]
    nearness[dropped] = -np.inf
    keys = np.where(dropped, np.iinfo(np.int64).max, candidates)
    order = np.lexsort((keys, -nearness), axis=-1)[:, :k]
    return np.take_along_axis(candidates, order, axis=1), np.take_along_axis(nearness, order, axis=1)


def search_details(
    searches: Mapping[str, tuple[str, Neighbours]],
    k: int,
    *,
    figure: float,
    exact_figure: float,
    what: str,
    figure_name: str = "figure",
) -> dict[str, Any] | None:
    """What approximate searches add to a measurement's details, or None when all were exact.

    ``searches`` maps a role ("reference", "candidate") to (model name, its search);
    ``figure`` and ``exact_figure`` are the measurement's figure (or the detail named
    ``figure_name``) computed on the searches' common sample from the approximate and from
    the exact neighbours. Holds the index, the
    sample size, each role's index and mean recall@k, and the figure's deviation on the sample; warns
    (one line, :class:`~miniature.errors.DataWarning`) for each model whose recall is below
    :data:`RECALL_WARNING`.
    """
    approximate = [search for _, search in searches.values() if search.approximate]
    if not approximate:
        return None
    details: dict[str, Any] = {"sample": int(approximate[0].sample.size)}  # type: ignore[union-attr]
    for role, (name, search) in searches.items():
        recall = search.recall(k)
        details[f"{role}_index"] = search.describe()
        details[f"{role}_recall_at_{k}"] = recall
        if recall < RECALL_WARNING:
            warnings.warn(
                DataWarning(
                    f"{what}: the approximate neighbours of model {name!r} ({search.describe()}) find only "
                    f"{recall:.3f} of the exact {k} on a sample of {details['sample']} items (warning below "
                    f"{RECALL_WARNING}); fix: pass --knn-index exact (slower), or hnsw"
                ),
                stacklevel=3,
            )
    details[f"{figure_name}_on_sample"] = float(figure)
    details[f"exact_{figure_name}_on_sample"] = float(exact_figure)
    details[f"{figure_name}_deviation"] = float(figure) - float(exact_figure)
    return details


def usable_ks(ks: Sequence[int], n: int) -> list[int]:
    """The Ks of a sweep that fit ``n`` items (each K < n), sorted, each once; a K that is not a whole number >= 1 is refused."""
    usable = []
    for K in ks:
        check_whole(K, "every K in ks")
        if K < n and int(K) not in usable:
            usable.append(int(K))
    return sorted(usable)
