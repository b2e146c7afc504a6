"""Tests for the data-distribution characteristic: Deep-KNN OOD detection (paper, section 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from miniature.core.characteristics.base import ComparisonResult
from miniature.core.characteristics.distribution import (
    auroc,
    compare_distribution,
    fit_threshold,
    knn_distances,
    ood_flags,
    ood_sweep,
)
from miniature.core.stats import chance_jaccard, jaccard


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def brute_force_scores(train: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """All pairwise distances between normalised rows, sorted; the k-th column."""
    differences = unit_rows(queries)[:, None, :] - unit_rows(train)[None, :, :]
    return np.sort(np.linalg.norm(differences, axis=-1), axis=1)[:, k - 1]


def brute_force_flags(splits, k: int, keep: float) -> np.ndarray:
    train, holdout, challenge = splits
    holdout_scores = np.sort(brute_force_scores(train, holdout, k))
    threshold = holdout_scores[math.ceil(keep * len(holdout_scores) - 1e-9) - 1]
    return brute_force_scores(train, challenge, k) > threshold


def model_splits(seed: int, width: int, n_train=120, n_holdout=60, n_challenge=50):
    """Train/holdout drawn around one direction; half the challenge items around another."""
    rng = np.random.default_rng(seed)
    centre, elsewhere = rng.normal(size=width), rng.normal(size=width)
    train = centre + rng.normal(size=(n_train, width))
    train[10:20] = train[0]  # duplicated training items: tied neighbours
    holdout = centre + rng.normal(size=(n_holdout, width))
    challenge = np.vstack(
        [
            centre + rng.normal(size=(n_challenge // 2, width)),
            3 * elsewhere + rng.normal(size=(n_challenge - n_challenge // 2, width)),
        ]
    )
    return train.astype(np.float32), holdout.astype(np.float32), challenge.astype(np.float32)


IS_OOD = np.r_[np.zeros(25, bool), np.ones(25, bool)]


def compare(reference_splits, candidate_splits, **options):
    return compare_distribution(reference_splits, candidate_splits, reference="large", candidate="small", **options)


# --------------------------------------------------------------------------- scores


def test_knn_distance_hand_worked():
    train = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    queries = np.array([[5.0, 0.0], [0.0, 0.0]])
    # Unit query (1, 0): distances 0, sqrt(2), 2. The zero query is at distance 1 from all.
    np.testing.assert_allclose(knn_distances(train, queries, 1), [0.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(knn_distances(train, queries, 2), [math.sqrt(2), 1.0], atol=1e-7)


@pytest.mark.parametrize("k", [1, 3, 10, 40])
def test_knn_distances_match_brute_force(k):
    train, holdout, challenge = model_splits(0, width=8)
    queries = np.vstack([holdout, challenge, train[:5]])
    np.testing.assert_allclose(
        knn_distances(train, queries, k, block_size=13), brute_force_scores(train, queries, k), atol=1e-6
    )


# ----------------------------------------------------------------------- threshold


def test_fit_threshold_hand_worked():
    assert fit_threshold(np.arange(1, 101, dtype=float), keep=0.95) == 95.0
    assert fit_threshold(np.arange(10, 0, -1, dtype=float), keep=0.9) == 9.0
    assert fit_threshold(np.array([4.0, 1.0, 3.0]), keep=0.5) == 3.0  # ceil(1.5) = 2nd smallest


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0, 2, allow_nan=False), min_size=1, max_size=80),
    st.floats(0.01, 0.99),
)
def test_fit_threshold_keeps_at_least_keep_and_is_the_smallest_such_score(scores, keep):
    scores = np.array(scores)
    threshold = fit_threshold(scores, keep)
    assert threshold in scores
    assert np.mean(scores <= threshold) >= keep - 1e-9
    assert np.mean(scores < threshold) < keep
    assert (
        threshold == np.quantile(scores, keep, method="inverted_cdf")
        or abs(keep * len(scores) - round(keep * len(scores))) < 1e-6
    )


def test_ood_flags_are_strictly_above_threshold():
    np.testing.assert_array_equal(ood_flags(np.array([0.1, 0.5, 0.50001, 2.0]), 0.5), [False, False, True, True])


# -------------------------------------------------------------------------- AUROC


def brute_force_auroc(id_scores, ood_scores) -> float:
    wins = sum((o > i) + 0.5 * (o == i) for o in ood_scores for i in id_scores)
    return wins / (len(id_scores) * len(ood_scores))


def test_auroc_hand_worked():
    assert auroc([0.0, 1.0], [2.0, 3.0]) == 1.0
    assert auroc([2.0, 3.0], [0.0, 1.0]) == 0.0
    assert auroc([1.0, 1.0], [1.0]) == 0.5
    assert auroc([0.0, 2.0], [1.0, 3.0]) == pytest.approx(0.75)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=25), st.lists(st.integers(0, 5), min_size=1, max_size=25))
def test_auroc_matches_pairwise_count_with_ties(id_scores, ood_scores):
    assert auroc(id_scores, ood_scores) == pytest.approx(brute_force_auroc(id_scores, ood_scores))


def test_auroc_needs_both_classes():
    with pytest.raises(ValueError, match="at least one ID and one OOD"):
        auroc([], [1.0])


# --------------------------------------------------------------------- comparison


def test_flags_and_thresholds_match_brute_force():
    reference_splits = model_splits(1, width=10)
    candidate_splits = model_splits(2, width=4)
    result = compare(reference_splits, candidate_splits, k=5, ks=(1, 5, 20), n_bootstrap=200, challenge_is_ood=IS_OOD)
    reference_flags = brute_force_flags(reference_splits, 5, 0.95)
    candidate_flags = brute_force_flags(candidate_splits, 5, 0.95)
    assert isinstance(result, ComparisonResult)
    assert result.characteristic == "data_distribution" and result.figure_name == "OOD-set Jaccard"
    assert result.k == 5 and result.n == 50
    assert result.figure == pytest.approx(jaccard(reference_flags, candidate_flags))
    assert result.chance == pytest.approx(chance_jaccard(50, reference_flags.sum(), candidate_flags.sum()))
    assert result.details["reference_ood_rate"] == pytest.approx(reference_flags.mean())
    assert result.details["candidate_ood_rate"] == pytest.approx(candidate_flags.mean())
    holdout_scores = brute_force_scores(reference_splits[0], reference_splits[1], 5)
    assert result.details["reference_threshold"] == pytest.approx(np.sort(holdout_scores)[56], abs=1e-6)  # ceil(57)
    assert result.ci_low <= result.figure <= result.ci_high
    # AUROC: held-out and ID challenge items are the negatives.
    challenge_scores = brute_force_scores(reference_splits[0], reference_splits[2], 5)
    expected_auroc = brute_force_auroc(np.r_[holdout_scores, challenge_scores[~IS_OOD]], challenge_scores[IS_OOD])
    assert result.details["reference_auroc"] == pytest.approx(expected_auroc, abs=1e-9)
    assert result.details["reference_auroc"] > 0.9  # the shifted half is far from the training data
    # Evidence: exactly the items one model flags and the other does not.
    only_one = set(np.flatnonzero(reference_flags ^ candidate_flags))
    assert {entry["index"] for entry in result.evidence} == only_one
    for entry in result.evidence:
        assert entry["kind"] == (
            "OOD for reference only" if reference_flags[entry["index"]] else "OOD for candidate only"
        )
    assert ComparisonResult.from_json(result.to_json()) == result


def test_sweep_matches_brute_force_per_k():
    reference_splits = model_splits(3, width=6)
    candidate_splits = model_splits(4, width=6)
    sweep = ood_sweep(reference_splits, candidate_splits, ks=(1, 10, 50, 120, 500), keep=0.9)
    assert list(sweep) == [1, 10, 50]  # K >= 120 training items is skipped
    for K, value in sweep.items():
        expected = jaccard(brute_force_flags(reference_splits, K, 0.9), brute_force_flags(candidate_splits, K, 0.9))
        assert value == pytest.approx(expected)
    result = compare(reference_splits, candidate_splits, k=10, ks=(1, 10, 50, 120), keep=0.9, n_bootstrap=0)
    assert result.sweep == {str(K): value for K, value in sweep.items()}


def test_identical_models_agree_fully():
    splits = model_splits(5, width=6)
    copy = tuple(part.copy() for part in splits)
    result = compare(splits, copy, n_bootstrap=50)
    assert result.figure == 1.0 and result.evidence == []
    assert result.details["reference_threshold"] == result.details["candidate_threshold"]
    assert result.details["reference_ood_rate"] > 0  # the shifted half is flagged


def test_bad_input_raises_clear_errors():
    splits = model_splits(6, width=4)
    with pytest.raises(ValueError, match=r"k=120 but there are only 120 training items: choose k < 120"):
        compare(splits, splits, k=120)
    with pytest.raises(ValueError, match=r"choose k < 3"):
        knn_distances(np.ones((3, 2)), np.ones((1, 2)), 3)
    for keep in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="keep must lie strictly between 0 and 1"):
            compare(splits, splits, keep=keep)
        with pytest.raises(ValueError, match="keep must lie strictly between 0 and 1"):
            fit_threshold(np.ones(5), keep)
    empty = (splits[0], np.empty((0, 4), np.float32), splits[2])
    with pytest.raises(ValueError, match=r"holdout features must be a non-empty"):
        compare(empty, splits)
    with pytest.raises(ValueError, match="holdout_scores is empty"):
        fit_threshold(np.array([]))
    with pytest.raises(ValueError, match=r"different numbers of challenge items \(50 vs 49\)"):
        compare(splits, (splits[0], splits[1], splits[2][:49]))
    with pytest.raises(ValueError, match="different widths"):
        compare(splits, (splits[0], splits[1][:, :3], splits[2]))
    with pytest.raises(ValueError, match="one boolean per challenge item"):
        compare(splits, splits, challenge_is_ood=np.ones(3, bool))
    bad = (splits[0], splits[1], splits[2].copy())
    bad[2][4, 0] = np.nan
    with pytest.raises(ValueError, match=r"challenge: 1 of 50 rows contain NaN or inf"):
        compare(bad, splits)
