"""Data representation (paper, section 4): do two models see the same neighbours?

Embeddings of two models live in different spaces (even of different widths), so they
are compared through each item's K nearest neighbours by cosine similarity: the per-item
agreement is the Jaccard coefficient of the two neighbour sets, and the headline figure
is its mean over items. Neighbours come from an exact FAISS search, re-scored in float64
so ties (duplicate texts give identical vectors) are broken the same way every time:
higher similarity first, then lower index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from miniature.core.characteristics.base import Pair
    from miniature.core.characteristics.view import GateView

import warnings
from collections import Counter
from typing import Literal, Sequence

import faiss
import numpy as np

from miniature.core.characteristics.base import ComparisonResult, Measurement, check_threshold_on, judge
from miniature.core.stats import chance_jaccard, informative, jaccard_rows, mean_agreement
from miniature.errors import DataWarning, NotApplicable

__all__ = [
    "DEFAULT_KS",
    "knn_indices",
    "knn_jaccard",
    "knn_sweep",
    "compare_representation",
]

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 20, 50, 100)

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
    k = _check_k(k, n)
    check_block_size(block_size)
    neighbours, _ = exact_search(vectors, vectors, k, metric="ip", exclude_self=True, block_size=block_size)
    return neighbours


def knn_jaccard(emb_a: np.ndarray, emb_b: np.ndarray, k: int) -> np.ndarray:
    """Per-item Jaccard coefficient of the two models' k-nearest-neighbour sets.

    The paper's data-representation agreement is the mean of this array. Embedding
    widths may differ between the models; the items (rows) must be the same.
    """
    _check_same_items(emb_a, emb_b)
    return jaccard_rows(knn_indices(emb_a, k), knn_indices(emb_b, k))


def knn_sweep(emb_a: np.ndarray, emb_b: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[int, float]:
    """Mean kNN Jaccard for each K in ``ks`` (K >= n is skipped: there are only n - 1 others).

    Neighbour lists are computed once for the largest K and sliced, which is valid
    because every list is sorted nearest first.
    """
    n = _check_same_items(emb_a, emb_b)
    usable = usable_ks(ks, n)
    if not usable:
        return {}
    neighbours_a = knn_indices(emb_a, max(usable))
    neighbours_b = knn_indices(emb_b, max(usable))
    return _sweep_from_lists(neighbours_a, neighbours_b, usable)


def measure_representation(
    emb_ref: np.ndarray,
    emb_cand: np.ndarray,
    *,
    reference: str,
    candidate: str,
    k: int = 10,
    ks: Sequence[int] = DEFAULT_KS,
    stage: str | None = None,
    n_bootstrap: int = 1000,
    seed: int | None = 0,
    item_texts: Sequence[str] | None = None,
    max_evidence: int = 20,
) -> Measurement:
    """Compare two models' data representations through their kNN sets (paper, section 4).

    The figure is the mean per-item kNN Jaccard; details hold the spread (population
    variance as in the paper's Table 2, median, min, max). Chance is the expected
    Jaccard of two random k-subsets of the n - 1 other items. The bootstrap interval
    resamples items with the neighbour lists held fixed. ``stage`` labels embeddings
    taken "before fine-tuning" or "after fine-tuning". Evidence lists the items whose
    neighbourhoods disagree most, with both models' neighbours.
    """
    n = _check_same_items(emb_ref, emb_cand)
    check_texts(item_texts, n)
    k = _check_k(k, n)
    usable = usable_ks(ks, n)
    deepest = max([k, *usable])
    neighbours_ref = knn_indices(emb_ref, deepest)
    neighbours_cand = knn_indices(emb_cand, deepest)
    per_item = jaccard_rows(neighbours_ref[:, :k], neighbours_cand[:, :k])

    agreement = mean_agreement(per_item, chance_jaccard(n - 1, k, k), n_bootstrap=n_bootstrap, seed=seed)
    figure = agreement.figure

    worst = np.argsort(per_item, kind="stable")[: max(0, int(max_evidence))]
    evidence = []
    for index in worst:
        entry: dict = {"index": int(index)}
        if item_texts is not None:
            entry["text"] = item_texts[index]
        entry["jaccard"] = float(per_item[index])
        entry["reference_neighbours"] = neighbours_ref[index, :k].tolist()
        entry["candidate_neighbours"] = neighbours_cand[index, :k].tolist()
        if item_texts is not None:
            entry["reference_neighbour_texts"] = [item_texts[j] for j in neighbours_ref[index, :k]]
            entry["candidate_neighbour_texts"] = [item_texts[j] for j in neighbours_cand[index, :k]]
        evidence.append(entry)

    return Measurement(
        figure_name="kNN Jaccard",
        n=n,
        **agreement.result_fields(),
        k=k,
        details={
            "mean": figure,
            "variance": float(per_item.var()),
            "median": float(np.median(per_item)),
            "min": float(per_item.min()),
            "max": float(per_item.max()),
        },
        sweep={str(K): value for K, value in _sweep_from_lists(neighbours_ref, neighbours_cand, usable).items()},
        evidence=evidence,
    )

def compare_representation(*args: Any, reference: str, candidate: str, threshold: float | None = None,
                           threshold_on: str = "raw", gating: bool = True, **kwargs: Any) -> ComparisonResult:
    """:func:`measure_representation` judged against ``threshold`` (see
    :func:`~miniature.core.characteristics.base.judge`), for use outside a gate run."""
    check_threshold_on(threshold_on)
    measured = measure_representation(*args, reference=reference, candidate=candidate, **kwargs)
    return judge(measured, characteristic="data_representation", reference=reference, candidate=candidate,
                 threshold=threshold, threshold_on=threshold_on, gating=gating, stage=kwargs.get('stage'))


# --------------------------------------------------------------------------------------
# Exact search shared with the data-distribution characteristic.


def normalized_float32(values: np.ndarray, name: str) -> np.ndarray:
    """C-contiguous float32 copy of a non-empty (n, d) matrix with unit-length rows.

    Zero rows stay zero. Raises a ValueError naming ``name`` for a wrong shape, no rows,
    or non-finite values (counting the affected rows).
    """
    array = np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (items, dimensions) array, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}); embed at least one item")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    finite_rows = np.isfinite(array).all(axis=1)
    if not finite_rows.all():
        bad = int(array.shape[0] - finite_rows.sum())
        raise ValueError(
            f"{name}: {bad} of {array.shape[0]} rows contain NaN or inf values. Likely cause: "
            f"fp16/bf16 overflow or a diverged model; compute embeddings in float32"
        )
    vectors = np.array(array, dtype=np.float32, order="C", copy=True)
    # In float64, a block of rows at a time: never a float64 copy of the whole matrix.
    step = max(1, _RESCORE_CHUNK_ELEMENTS // vectors.shape[1])
    for low in range(0, vectors.shape[0], step):
        block = vectors[low:low + step]
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


# --------------------------------------------------------------------------------------


def _sweep_from_lists(neighbours_a: np.ndarray, neighbours_b: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    return {K: float(jaccard_rows(neighbours_a[:, :K], neighbours_b[:, :K]).mean()) for K in ks}


def usable_ks(ks: Sequence[int], n: int) -> list[int]:
    """The Ks of a sweep that fit ``n`` items (each K < n), sorted, each once; a K that is not a whole number >= 1 is refused."""
    usable = []
    for K in ks:
        if isinstance(K, (bool, np.bool_)) or int(K) != K or K < 1:
            raise ValueError(f"every K in ks must be a whole number >= 1, got {K!r}")
        if K < n and int(K) not in usable:
            usable.append(int(K))
    return sorted(usable)


def _check_k(k: int, n: int) -> int:
    if isinstance(k, (bool, np.bool_)) or int(k) != k or k < 1:
        raise ValueError(f"k must be a whole number >= 1, got {k!r}")
    if k >= n:
        raise ValueError(
            f"K={k} neighbours requested but there are only n={n} items, so each item has "
            f"{n - 1} others: choose K < n ({n}) or evaluate on more items"
        )
    return int(k)


def check_block_size(block_size: int) -> None:
    """Refuse a ``block_size`` that is not a whole number >= 1."""
    if int(block_size) != block_size or block_size < 1:
        raise ValueError(f"block_size must be a whole number >= 1, got {block_size!r}")


def _check_same_items(emb_a: np.ndarray, emb_b: np.ndarray) -> int:
    shape_a, shape_b = np.shape(emb_a), np.shape(emb_b)
    if len(shape_a) != 2 or len(shape_b) != 2:
        raise ValueError(
            f"embeddings must be 2-D (items, dimensions) arrays, got shapes {shape_a} and {shape_b}"
        )
    if shape_a[0] != shape_b[0]:
        raise ValueError(
            f"the two models embedded different numbers of items ({shape_a[0]} vs {shape_b[0]}); "
            f"embed the same items, in the same order, with both models"
        )
    return int(shape_a[0])


def check_texts(item_texts: Sequence[str] | None, n: int) -> None:
    """Refuse ``item_texts`` that is not one text per item (None passes)."""
    if item_texts is not None and len(item_texts) != n:
        raise ValueError(f"item_texts has {len(item_texts)} entries but there are {n} items; pass one text per item")


def uninformative_reason(texts: Sequence[str], k: int, source: str) -> str | None:
    """Why the mean kNN Jaccard of these items at ``k`` would be the same for any two models
    (one line with the fix), or None. Two cases: the K neighbours are nearly all the n - 1
    other items, so chance agreement is :data:`~miniature.core.stats.UNINFORMATIVE_CHANCE`
    or more (:func:`~miniature.core.stats.informative`); or every item has K or more
    duplicates, whose identical vectors fill its neighbour set in every model (ties are
    broken by index). When only some items are such duplicates, a DataWarning counts them."""
    n = len(texts)
    if not 1 <= k < n:
        return None  # the comparison refuses it with its own message
    chance = chance_jaccard(n - 1, k, k)
    if not informative(chance):
        return (f"K={k} neighbours of the {n - 1} other test items ({source}) are nearly all of "
                f"them, so two unrelated models already agree at chance {chance:.3f} and the kNN "
                f"Jaccard measures K, not the models; fix: choose a K well below n/2 (--k, "
                f"e.g. 10) or pass more test data")
    counts = Counter(texts)
    forced = sum(c for c in counts.values() if c > k)
    if forced == n:
        return (f"every one of the {n} test items ({source}) has {k} or more identical copies "
                f"({len(counts)} distinct text(s)), so each neighbour set is its copies in any "
                f"model and agreement is 1.0 whatever the models; fix: remove the duplicates from "
                f"--test-data")
    if forced:
        warnings.warn(DataWarning(
            f"{forced} of the {n} test items ({source}) have {k} or more identical copies, so "
            f"their neighbour sets are those copies in any model and agree by construction; "
            f"remove the duplicates to compare the models on them"), stacklevel=3)
    return None


# -- in a gate run ----------------------------------------------------------------------
def compare_in_gate(gate: "GateView", pair: "Pair", stage: str | None) -> Measurement:
    """The gate's comparison of one pair: its per-item outputs fed to the function above,
    skipped when the figure could not tell the models apart (:func:`uninformative_reason`)."""
    n = len(gate.data.test)
    reason = uninformative_reason(gate.data.test.texts, gate.settings.k, gate.data.test.source)
    if reason is not None:
        raise NotApplicable(f"data representation, {pair.reference} vs {pair.candidate}: {reason}")
    ks = tuple(k for k in gate.settings.k_sweep if k < n)
    return measure_representation(
        gate.outputs(pair.reference, "test", stage=stage)["embeddings"],
        gate.outputs(pair.candidate, "test", stage=stage)["embeddings"],
        reference=pair.reference, candidate=pair.candidate, k=gate.settings.k, ks=ks, stage=stage,
        n_bootstrap=gate.settings.bootstrap, seed=gate.settings.seed, item_texts=gate.data.test.texts)
