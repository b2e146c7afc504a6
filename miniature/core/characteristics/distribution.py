"""Data distribution (paper, section 5): do two models call the same items out-of-distribution?

Each model runs Deep Nearest Neighbors OOD detection (Sun et al., 2022): an item's
score is the Euclidean distance, between L2-normalised features, to its k-th nearest
training item; the threshold keeps a chosen fraction (95%) of held-out in-distribution
items; challenge items scoring above it are flagged OOD. The two models' OOD sets on the
same challenge items are compared with the Jaccard coefficient.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from miniature.core.characteristics.base import Pair
    from miniature.core.characteristics.view import GateView

import math
from typing import Sequence

import numpy as np
from scipy import stats as _scipy_stats

from miniature.core.characteristics.base import Measurement, judged
from miniature.core.checks import booleans, check_k, check_texts, check_whole
from miniature.core.neighbours import (
    DEFAULT_KS,
    NeighbourIndex,
    Neighbours,
    exact_search,
    normalized_float32,
    sample_rows,
    search_details,
    usable_ks,
)
from miniature.core.stats import informative, jaccard, set_agreement
from miniature.errors import NotApplicable

__all__ = [
    "FeatureSplits",
    "knn_distances",
    "fit_threshold",
    "ood_flags",
    "auroc",
    "ood_sweep",
    "compare_distribution",
]

# (training features, held-out in-distribution features, challenge features) of one model.
FeatureSplits = tuple[np.ndarray, np.ndarray, np.ndarray]

#: what a K beyond the training items says (see :func:`miniature.core.checks.check_k`)
TOO_FEW_TRAINING = "k={k} but there are only {n} training items: choose k < {n} or pass more training items"


def knn_distances(train_feats: np.ndarray, query_feats: np.ndarray, k: int, *, block_size: int = 4096) -> np.ndarray:
    """Deep-KNN OOD score of every query: distance to its k-th nearest training item.

    Both sets are L2-normalised (zero rows stay zero) and the distance is Euclidean, so
    scores lie in [0, 2]; larger means further from the training data. Queries are
    separate items, so nothing is excluded. Exact, blocked FAISS search re-scored in
    float64; returns an (m,) float64 array.
    """
    return _sorted_knn_distances(train_feats, query_feats, k, block_size=block_size)[:, k - 1]


def fit_threshold(holdout_scores: np.ndarray, keep: float = 0.95) -> float:
    """Score threshold that keeps ``keep`` of held-out in-distribution items as in-distribution.

    Convention: with m held-out scores the threshold is the ceil(keep * m)-th smallest
    score (NumPy's "inverted_cdf" quantile), the smallest value such that at least
    ``keep`` of the held-out items score at or below it. Items scoring strictly above
    it are OOD (:func:`ood_flags`).
    """
    _check_keep(keep)
    scores = np.asarray(holdout_scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise ValueError("holdout_scores is empty; score at least one held-out in-distribution item")
    if not np.isfinite(scores).all():
        raise ValueError(f"holdout_scores: {int((~np.isfinite(scores)).sum())} of {scores.size} scores are NaN or inf")
    # Guard the product against float noise (0.95 * 100 must give rank 95, not 96).
    rank = min(scores.size, max(1, math.ceil(keep * scores.size - 1e-9)))
    return float(np.partition(scores, rank - 1)[rank - 1])


def ood_flags(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean OOD flags: True where the score is strictly above the threshold."""
    return np.asarray(scores, dtype=np.float64) > float(threshold)


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Area under the ROC curve for telling OOD from ID items by score (higher = more OOD).

    Equals the Mann-Whitney probability that a random OOD item outscores a random ID
    item, ties counted half; 0.5 is chance, 1.0 perfect separation.
    """
    id_scores = np.asarray(id_scores, dtype=np.float64).ravel()
    ood_scores = np.asarray(ood_scores, dtype=np.float64).ravel()
    if id_scores.size == 0 or ood_scores.size == 0:
        raise ValueError(
            f"auroc needs at least one ID and one OOD score, got {id_scores.size} ID and {ood_scores.size} OOD"
        )
    ranks = _scipy_stats.rankdata(np.concatenate([ood_scores, id_scores]))  # ties get mean ranks
    n_ood = ood_scores.size
    u_statistic = ranks[:n_ood].sum() - n_ood * (n_ood + 1) / 2.0
    return float(u_statistic / (n_ood * id_scores.size))


def ood_sweep(
    reference_features: FeatureSplits,
    candidate_features: FeatureSplits,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    keep: float = 0.95,
) -> dict[int, float]:
    """OOD-set Jaccard for each K in ``ks``, refitting both models' thresholds per K.

    K values not below the smaller training set are skipped. Distances are computed
    once for the largest K and sliced (each row is sorted nearest first).
    """
    _check_keep(keep)
    reference_splits = _check_splits(reference_features, "reference_features")
    candidate_splits = _check_splits(candidate_features, "candidate_features")
    _check_same_challenge(reference_splits, candidate_splits)
    n_train = min(reference_splits[0].shape[0], candidate_splits[0].shape[0])
    usable = usable_ks(ks, n_train)
    if not usable:
        return {}
    reference_scores = _split_scores(reference_splits, max(usable), "reference_features")
    candidate_scores = _split_scores(candidate_splits, max(usable), "candidate_features")
    sweep = {}
    for K in usable:
        flags = [
            _flags_at(holdout, challenge, K, keep)[0] for holdout, challenge in (reference_scores, candidate_scores)
        ]
        sweep[K] = jaccard(flags[0], flags[1])
    return sweep


def measure_distribution(
    reference_features: FeatureSplits,
    candidate_features: FeatureSplits,
    *,
    reference: str,
    candidate: str,
    k: int = 10,
    keep: float = 0.95,
    ks: Sequence[int] = DEFAULT_KS,
    n_bootstrap: int = 1000,
    seed: int | None = 0,
    challenge_is_ood: np.ndarray | None = None,
    item_texts: Sequence[str] | None = None,
    max_evidence: int = 20,
    knn_index: str = "exact",
) -> Measurement:
    """Compare the two models' Deep-KNN OOD sets on the same challenge items (paper, section 5).

    Each ``*_features`` is (train, holdout, challenge) features of one model: training
    items the detector searches, held-out in-distribution items that set its threshold
    (keeping ``keep`` of them), and the challenge items both models judge. The figure is
    the Jaccard coefficient of the two OOD sets; chance is that of random sets of the
    same sizes; the bootstrap interval resamples challenge items with thresholds held
    fixed. ``challenge_is_ood`` (optional ground truth per challenge item) adds each
    model's AUROC, with held-out and challenge ID items as the negatives. Evidence lists
    items only one model flags, furthest past that model's threshold first. ``knn_index``
    chooses the search of the training items (:data:`~miniature.core.neighbours.KNN_INDEXES`);
    an approximate one adds ``neighbour_search`` to the details: each model's recall@k on a
    ``seed``-ed sample of held-out and challenge items, and the figure computed on that
    sample (thresholds fitted on the held-out sample) from approximate and exact distances.
    """
    _check_keep(keep)
    reference_splits = _check_splits(reference_features, "reference_features")
    candidate_splits = _check_splits(candidate_features, "candidate_features")
    m = _check_same_challenge(reference_splits, candidate_splits)
    check_texts(item_texts, m)
    labels = _check_labels(challenge_is_ood, m)
    n_train = min(reference_splits[0].shape[0], candidate_splits[0].shape[0])
    check_k(k, n_train, TOO_FEW_TRAINING)
    usable = usable_ks(ks, n_train)
    deepest = max([k, *usable])

    reference_searches = _split_searches(reference_splits, deepest, "reference_features", knn_index, seed)
    candidate_searches = _split_searches(candidate_splits, deepest, "candidate_features", knn_index, seed)
    reference_scores = _distances(*reference_searches)
    candidate_scores = _distances(*candidate_searches)
    reference_flags, reference_threshold, reference_challenge = _flags_at(*reference_scores, k, keep)
    candidate_flags, candidate_threshold, candidate_challenge = _flags_at(*candidate_scores, k, keep)

    agreement = set_agreement(reference_flags, candidate_flags, n_bootstrap=n_bootstrap, seed=seed)

    details: dict = {
        "reference_ood_rate": float(reference_flags.mean()),
        "candidate_ood_rate": float(candidate_flags.mean()),
        "reference_threshold": reference_threshold,
        "candidate_threshold": candidate_threshold,
        "reference_ood": int(reference_flags.sum()),
        "candidate_ood": int(candidate_flags.sum()),
        "both_ood": int((reference_flags & candidate_flags).sum()),
        "keep": float(keep),
    }
    if any(search.approximate for search in (*reference_searches, *candidate_searches)):
        details["neighbour_search"] = _search_details(
            {reference: reference_searches, candidate: candidate_searches},
            k,
            keep,
            seed,
            f"data distribution, {reference} vs {candidate}",
        )
    if labels is not None:
        for name, (holdout, _), challenge in (
            ("reference", reference_scores, reference_challenge),
            ("candidate", candidate_scores, candidate_challenge),
        ):
            details[f"{name}_auroc"] = (
                auroc(np.concatenate([holdout[:, k - 1], challenge[~labels]]), challenge[labels])
                if labels.any()
                else None
            )

    evidence = _disagreements(
        reference_flags,
        candidate_flags,
        reference_challenge,
        candidate_challenge,
        reference_threshold,
        candidate_threshold,
        item_texts,
        max_evidence,
    )
    return Measurement(
        figure_name="OOD-set Jaccard",
        n=m,
        **agreement.result_fields(),
        k=int(k),
        details=details,
        sweep={
            str(K): jaccard(_flags_at(*reference_scores, K, keep)[0], _flags_at(*candidate_scores, K, keep)[0])
            for K in usable
        },
        evidence=evidence,
    )


compare_distribution = judged(measure_distribution, "data_distribution")


# --------------------------------------------------------------------------------------


def _sorted_knn_distances(
    train_feats: np.ndarray,
    query_feats: np.ndarray,
    k: int,
    *,
    block_size: int = 4096,
    names: tuple[str, str] = ("train_feats", "query_feats"),
) -> np.ndarray:
    """(m, k) distances to the 1st..k-th nearest training items, nearest first."""
    train = normalized_float32(train_feats, names[0])
    queries = normalized_float32(query_feats, names[1])
    if train.shape[1] != queries.shape[1]:
        raise ValueError(
            f"{names[0]} has {train.shape[1]} dimensions but {names[1]} has {queries.shape[1]}; "
            f"use the same model (and layer) for both"
        )
    check_k(k, train.shape[0], TOO_FEW_TRAINING)
    check_whole(block_size, "block_size")
    _, squared = exact_search(train, queries, int(k), metric="l2", exclude_self=False, block_size=block_size)
    return np.sqrt(np.maximum(squared, 0.0))


def _split_scores(splits: FeatureSplits, deepest: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted k-NN distances of the holdout and challenge items, up to ``deepest`` (exact)."""
    return _distances(*_split_searches(splits, deepest, name, "exact", 0))


def _split_searches(
    splits: FeatureSplits, deepest: int, name: str, knn_index: str, seed: int | None
) -> tuple[Neighbours, Neighbours]:
    """The ``deepest`` nearest training items (squared distances) of the holdout and the
    challenge items, from one index of the training items."""
    train, holdout, challenge = splits
    base = normalized_float32(train, f"{name} train")
    index: NeighbourIndex | None = None
    searches = []
    for role, part in (("holdout", holdout), ("challenge", challenge)):
        queries = normalized_float32(part, f"{name} {role}")
        if base.shape[1] != queries.shape[1]:
            raise ValueError(
                f"{name} train has {base.shape[1]} dimensions but {name} {role} has {queries.shape[1]}; "
                f"use the same model (and layer) for both"
            )
        check_k(deepest, base.shape[0], TOO_FEW_TRAINING)
        index = index or NeighbourIndex(base, metric="l2", index=knn_index, seed=seed)
        searches.append(index.search(queries, int(deepest), exclude_self=False))
    return searches[0], searches[1]


def _distances(holdout: Neighbours, challenge: Neighbours) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances from the two searches' squared ones."""
    return np.sqrt(np.maximum(holdout.scores, 0.0)), np.sqrt(np.maximum(challenge.scores, 0.0))


def _search_details(
    searches: dict[str, tuple[Neighbours, Neighbours]],
    k: int,
    keep: float,
    seed: int | None,
    what: str,
) -> dict | None:
    """:func:`~miniature.core.neighbours.search_details` of the four searches: recall on the
    held-out and challenge samples together, the OOD-set Jaccard of the challenge sample
    with thresholds fitted on the held-out sample, from approximate and exact distances."""
    (reference, reference_searches), (candidate, candidate_searches) = searches.items()
    holdout_sample = sample_rows(reference_searches[0].indices.shape[0], seed)
    challenge_sample = sample_rows(reference_searches[1].indices.shape[0], seed)

    def flags(searches: tuple[Neighbours, Neighbours], exact: bool) -> np.ndarray:
        holdout, challenge = (
            (search.exact_on(rows)[1] if exact else search.scores[rows])[:, k - 1]
            for search, rows in zip(searches, (holdout_sample, challenge_sample))
        )
        return ood_flags(np.sqrt(np.maximum(challenge, 0)), fit_threshold(np.sqrt(np.maximum(holdout, 0)), keep))

    return search_details(
        {
            "reference": (reference, _on_samples(reference_searches, holdout_sample, challenge_sample)),
            "candidate": (candidate, _on_samples(candidate_searches, holdout_sample, challenge_sample)),
        },
        k,
        figure=jaccard(flags(reference_searches, False), flags(candidate_searches, False)),
        exact_figure=jaccard(flags(reference_searches, True), flags(candidate_searches, True)),
        what=what,
    )


def _on_samples(searches: tuple[Neighbours, Neighbours], *samples: np.ndarray) -> Neighbours:
    """The held-out and challenge searches' sampled rows as one search (for its recall)."""
    exact = [search.exact_on(rows) for search, rows in zip(searches, samples)]
    return Neighbours(
        np.concatenate([search.indices[rows] for search, rows in zip(searches, samples)]),
        np.concatenate([search.scores[rows] for search, rows in zip(searches, samples)]),
        searches[0].method,
        searches[0].parameters,
        np.arange(sum(rows.size for rows in samples)),
        np.concatenate([indices for indices, _ in exact]),
        np.concatenate([scores for _, scores in exact]),
    )


def _flags_at(holdout: np.ndarray, challenge: np.ndarray, k: int, keep: float) -> tuple[np.ndarray, float, np.ndarray]:
    """OOD flags, threshold and challenge scores at neighbour depth k."""
    threshold = fit_threshold(holdout[:, k - 1], keep)
    scores = challenge[:, k - 1]
    return ood_flags(scores, threshold), threshold, scores


def _disagreements(
    reference_flags: np.ndarray,
    candidate_flags: np.ndarray,
    reference_scores: np.ndarray,
    candidate_scores: np.ndarray,
    reference_threshold: float,
    candidate_threshold: float,
    item_texts: Sequence[str] | None,
    max_evidence: int,
) -> list[dict]:
    entries = []
    for kind, only, scores, threshold in (
        ("OOD for reference only", reference_flags & ~candidate_flags, reference_scores, reference_threshold),
        ("OOD for candidate only", candidate_flags & ~reference_flags, candidate_scores, candidate_threshold),
    ):
        indices = np.flatnonzero(only)
        excess = scores[indices] - threshold
        for index in indices[np.argsort(-excess, kind="stable")]:
            entry: dict = {"index": int(index), "kind": kind}
            if item_texts is not None:
                entry["text"] = item_texts[index]
            entry["reference_score"] = float(reference_scores[index])
            entry["candidate_score"] = float(candidate_scores[index])
            entries.append(entry)
    return entries[: max(0, int(max_evidence))]


def _check_keep(keep: float) -> None:
    if not isinstance(keep, (int, float, np.floating)) or not 0.0 < float(keep) < 1.0:
        raise ValueError(
            f"keep must lie strictly between 0 and 1 (the fraction of held-out in-distribution "
            f"items kept as in-distribution, e.g. 0.95), got {keep!r}"
        )


def _check_splits(features: FeatureSplits, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not isinstance(features, (tuple, list)) or len(features) != 3:
        raise ValueError(f"{name} must be a (train, holdout, challenge) triple of feature arrays")
    arrays = tuple(np.asarray(part) for part in features)
    for part_name, array in zip(("train", "holdout", "challenge"), arrays):
        if array.ndim != 2 or array.shape[0] == 0:
            raise ValueError(
                f"{name}: the {part_name} features must be a non-empty 2-D (items, dimensions) "
                f"array, got shape {array.shape}"
            )
    dims = {array.shape[1] for array in arrays}
    if len(dims) != 1:
        raise ValueError(
            f"{name}: train, holdout and challenge features have different widths "
            f"{[array.shape[1] for array in arrays]}; take all three from the same model and layer"
        )
    return arrays  # type: ignore[return-value]


def _check_same_challenge(reference_splits: FeatureSplits, candidate_splits: FeatureSplits) -> int:
    m_ref, m_cand = reference_splits[2].shape[0], candidate_splits[2].shape[0]
    if m_ref != m_cand:
        raise ValueError(
            f"the models scored different numbers of challenge items ({m_ref} vs {m_cand}); "
            f"both must judge the same challenge items in the same order"
        )
    return int(m_ref)


def _check_labels(challenge_is_ood: np.ndarray | None, m: int) -> np.ndarray | None:
    if challenge_is_ood is None:
        return None
    labels = np.asarray(challenge_is_ood)
    if labels.shape != (m,):
        raise ValueError(f"challenge_is_ood must hold one boolean per challenge item ({m}), got shape {labels.shape}")
    return booleans(labels, "challenge_is_ood must be booleans (True = truly out-of-distribution)")


# -- in a gate run ----------------------------------------------------------------------
def compare_in_gate(gate: "GateView", pair: "Pair", stage: str | None) -> Measurement:
    """The gate's comparison of one pair: its per-item outputs fed to the function above."""

    def feats(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(
            gate.outputs(name, role)["embeddings"]  # type: ignore[return-value]
            for role in ("train", "holdout", "challenge")
        )

    n_train = len(gate.data.train)
    ks = tuple(k for k in gate.settings.k_sweep if k < n_train)
    labels = gate.data.challenge_is_ood
    result = measure_distribution(
        feats(pair.reference),
        feats(pair.candidate),
        reference=pair.reference,
        candidate=pair.candidate,
        k=gate.settings.k,
        keep=gate.settings.ood_keep,
        ks=ks,
        challenge_is_ood=np.asarray(labels) if labels is not None else None,
        n_bootstrap=gate.settings.bootstrap,
        seed=gate.settings.seed,
        item_texts=gate.data.challenge.texts,
        knn_index=gate.settings.knn_index,
    )
    if not informative(result.chance):
        challenge, train = gate.data.challenge, gate.data.train
        a, b, m = result.details["reference_ood"], result.details["candidate_ood"], result.n
        overlap = len(set(challenge.texts) & set(train.texts))
        seen = f", {overlap} of them training items ({train.source})" if overlap else ""
        where = f"of the {m} challenge items ({challenge.source}{seen})"
        if a == b == 0:
            why = f"neither model flags any {where} as out-of-distribution"
        elif a == b == m:
            why = f"both models flag every one {where} as out-of-distribution"
        else:
            why = f"the models flag {a} and {b} {where} as out-of-distribution"
        raise NotApplicable(
            f"data distribution, {pair.reference} vs {pair.candidate}: {why}, so unrelated models "
            f"would agree at chance {result.chance:.3f} and the OOD-set Jaccard says nothing of "
            "these models; fix: pass a --challenge-data that mixes unseen in-distribution "
            "items with items from another distribution (none of them training items)"
        )
    return result
