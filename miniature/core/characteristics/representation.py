"""Data representation (paper, section 4): do two models see the same neighbours?

Embeddings of two models live in different spaces (even of different widths), so they
are compared through each item's K nearest neighbours by cosine similarity: the per-item
agreement is the Jaccard coefficient of the two neighbour sets, and the headline figure
is its mean over items. Neighbours come from the exact search of
:mod:`miniature.core.neighbours` (ties broken the same way every time: higher similarity
first, then lower index).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from miniature.core.characteristics.base import Pair
    from miniature.core.characteristics.view import GateView

import warnings
from collections import Counter
from typing import Any, Sequence

import numpy as np

from miniature.core.characteristics.base import Measurement, judged
from miniature.core.checks import check_k, check_texts
from miniature.core.neighbours import (
    DEFAULT_KS,
    TOO_FEW_ITEMS,
    knn_indices,
    knn_search,
    sample_rows,
    search_details,
    usable_ks,
)
from miniature.core.stats import chance_jaccard, informative, jaccard_rows, mean_agreement
from miniature.errors import DataWarning, NotApplicable

__all__ = [
    "DEFAULT_KS",
    "knn_indices",
    "knn_jaccard",
    "knn_sweep",
    "compare_representation",
]


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
    knn_index: str = "exact",
) -> Measurement:
    """Compare two models' data representations through their kNN sets (paper, section 4).

    The figure is the mean per-item kNN Jaccard; details hold the spread (population
    variance as in the paper's Table 2, median, min, max). Chance is the expected
    Jaccard of two random k-subsets of the n - 1 other items. The bootstrap interval
    resamples items with the neighbour lists held fixed. ``stage`` labels embeddings
    taken "before fine-tuning" or "after fine-tuning". Evidence lists the items whose
    neighbourhoods disagree most, with both models' neighbours. ``knn_index`` chooses the
    search (:data:`~miniature.core.neighbours.KNN_INDEXES`); an approximate one adds
    ``neighbour_search`` to the details: each model's recall@k and the figure's deviation
    from exact search on a ``seed``-ed sample of items.
    """
    n = _check_same_items(emb_ref, emb_cand)
    check_texts(item_texts, n)
    k = check_k(k, n, TOO_FEW_ITEMS)
    usable = usable_ks(ks, n)
    deepest = max([k, *usable])
    search_ref = knn_search(emb_ref, deepest, index=knn_index, seed=seed)
    search_cand = knn_search(emb_cand, deepest, index=knn_index, seed=seed)
    neighbours_ref, neighbours_cand = search_ref.indices, search_cand.indices
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

    details: dict[str, Any] = {
        "mean": figure,
        "variance": float(per_item.var()),
        "median": float(np.median(per_item)),
        "min": float(per_item.min()),
        "max": float(per_item.max()),
    }
    if search_ref.approximate or search_cand.approximate:
        sample = sample_rows(n, seed)
        exact_ref, exact_cand = search_ref.exact_on(sample)[0], search_cand.exact_on(sample)[0]
        searched = search_details(
            {"reference": (reference, search_ref), "candidate": (candidate, search_cand)},
            k,
            figure=float(per_item[sample].mean()),
            exact_figure=float(jaccard_rows(exact_ref[:, :k], exact_cand[:, :k]).mean()),
            what=f"data representation, {reference} vs {candidate}",
        )
        details["neighbour_search"] = searched
    return Measurement(
        figure_name="kNN Jaccard",
        n=n,
        **agreement.result_fields(),
        k=k,
        details=details,
        sweep={str(K): value for K, value in _sweep_from_lists(neighbours_ref, neighbours_cand, usable).items()},
        evidence=evidence,
    )


compare_representation = judged(measure_representation, "data_representation")


# --------------------------------------------------------------------------------------


def _sweep_from_lists(neighbours_a: np.ndarray, neighbours_b: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    return {K: float(jaccard_rows(neighbours_a[:, :K], neighbours_b[:, :K]).mean()) for K in ks}


def _check_same_items(emb_a: np.ndarray, emb_b: np.ndarray) -> int:
    shape_a, shape_b = np.shape(emb_a), np.shape(emb_b)
    if len(shape_a) != 2 or len(shape_b) != 2:
        raise ValueError(f"embeddings must be 2-D (items, dimensions) arrays, got shapes {shape_a} and {shape_b}")
    if shape_a[0] != shape_b[0]:
        raise ValueError(
            f"the two models embedded different numbers of items ({shape_a[0]} vs {shape_b[0]}); "
            f"embed the same items, in the same order, with both models"
        )
    return int(shape_a[0])


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
        return (
            f"K={k} neighbours of the {n - 1} other test items ({source}) are nearly all of "
            f"them, so two unrelated models already agree at chance {chance:.3f} and the kNN "
            f"Jaccard measures K, not the models; fix: choose a K well below n/2 (--k, "
            f"e.g. 10) or pass more test data"
        )
    counts = Counter(texts)
    forced = sum(c for c in counts.values() if c > k)
    if forced == n:
        return (
            f"every one of the {n} test items ({source}) has {k} or more identical copies "
            f"({len(counts)} distinct text(s)), so each neighbour set is its copies in any "
            f"model and agreement is 1.0 whatever the models; fix: remove the duplicates from "
            f"--test-data"
        )
    if forced:
        warnings.warn(
            DataWarning(
                f"{forced} of the {n} test items ({source}) have {k} or more identical copies, so "
                f"their neighbour sets are those copies in any model and agree by construction; "
                f"remove the duplicates to compare the models on them"
            ),
            stacklevel=3,
        )
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
        reference=pair.reference,
        candidate=pair.candidate,
        k=gate.settings.k,
        ks=ks,
        stage=stage,
        n_bootstrap=gate.settings.bootstrap,
        seed=gate.settings.seed,
        item_texts=gate.data.test.texts,
        knn_index=gate.settings.knn_index,
    )
