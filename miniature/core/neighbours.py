"""Exact nearest-neighbour search, shared by the characteristics that compare neighbours.

Data representation (kNN sets by cosine similarity), data distribution (Deep-KNN distances
to training items) and representation similarity (mutual kNN) all search here. The search
is exact (FAISS flat indexes) and runs in query blocks, never building an n x n matrix;
candidates are re-scored in float64 so ties (duplicate texts give identical vectors) are
broken the same way every time: nearer first, then lower index.
"""

from __future__ import annotations

from typing import Literal, Sequence

import faiss
import numpy as np

from miniature.core.checks import check_2d, check_k, check_real_finite, check_whole

__all__ = [
    "DEFAULT_KS",
    "knn_indices",
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


def knn_indices(embeddings: np.ndarray, k: int, *, block_size: int = 4096) -> np.ndarray:
    """The k nearest neighbours of every item by cosine similarity, itself excluded.

    Returns an (n, k) int64 array, each row sorted by decreasing similarity with ties
    broken by lower index. Similarity is the float64 dot product of the L2-normalised
    float32 vectors (a zero vector stays zero, so it is equally similar, 0, to all);
    "itself" is excluded by index, so a duplicate of an item is still its neighbour.
    The search is exact (FAISS ``IndexFlatIP``) and runs in query blocks, never building
    an n x n matrix.
    """
    vectors = normalized_float32(embeddings, "embeddings")
    n = vectors.shape[0]
    k = check_k(k, n, TOO_FEW_ITEMS)
    check_whole(block_size, "block_size")
    neighbours, _ = exact_search(vectors, vectors, k, metric="ip", exclude_self=True, block_size=block_size)
    return neighbours


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
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest base rows for every query row, deterministic under ties.

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

    m = queries.shape[0]
    indices = np.empty((m, k), dtype=np.int64)
    scores = np.empty((m, k), dtype=np.float64)
    for start in range(0, m, block_size):
        stop = min(m, start + block_size)
        pending = np.arange(start, stop)
        fetch = first_fetch
        while pending.size:
            found_scores, found = index.search(queries[pending], fetch)
            # Larger is nearer from here on.
            faiss_nearness = found_scores if metric == "ip" else -found_scores
            rows, nearness = _rescore(base, queries, pending, found, metric, exclude_self, k)
            indices[pending] = rows
            scores[pending] = nearness if metric == "ip" else -nearness
            if fetch >= n_base:
                break
            kth = nearness[:, k - 1]
            unsure = faiss_nearness[:, -1].astype(np.float64) + tolerance >= kth
            pending = pending[unsure]
            fetch = min(n_base, 2 * fetch)
    return indices, scores


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


def usable_ks(ks: Sequence[int], n: int) -> list[int]:
    """The Ks of a sweep that fit ``n`` items (each K < n), sorted, each once; a K that is not a whole number >= 1 is refused."""
    usable = []
    for K in ks:
        check_whole(K, "every K in ks")
        if K < n and int(K) not in usable:
            usable.append(int(K))
    return sorted(usable)
