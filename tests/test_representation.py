"""Tests for the data-representation characteristic (paper, section 4)."""

from __future__ import annotations

import numpy as np
import pytest

from miniature.core.characteristics.base import ComparisonResult
from miniature.core.characteristics.representation import (
    compare_representation,
    knn_indices,
    knn_jaccard,
    knn_sweep,
)
from miniature.core.stats import chance_jaccard


def brute_force_knn(embeddings: np.ndarray, k: int) -> np.ndarray:
    """Full cosine-similarity matrix, self removed, sorted by (-similarity, index)."""
    vectors = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    # Rounding merges equal similarities that differ only in the last bits.
    similarity = np.round(vectors @ vectors.T, 9)
    n = len(vectors)
    rows = []
    for i in range(n):
        others = np.delete(np.arange(n), i)
        order = np.lexsort((others, -similarity[i, others]))
        rows.append(others[order[:k]])
    return np.array(rows, dtype=np.int64)


def data_with_ties(seed: int, n: int, d: int) -> np.ndarray:
    """Random embeddings where a third of the rows are copies of others, plus zero rows."""
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(n, d)).astype(np.float32)
    copies = rng.choice(n, size=n // 3, replace=False)
    embeddings[copies] = embeddings[rng.integers(0, n, size=copies.size)]
    embeddings[rng.integers(0, n, size=2)] = 0.0
    embeddings[5:25] = embeddings[3]  # a large block of identical texts: ties beyond any fetch margin
    return embeddings


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 4, 10, 29])
def test_knn_matches_brute_force_with_duplicates(seed, k):
    embeddings = data_with_ties(seed, n=90, d=6)
    expected = brute_force_knn(embeddings, k)
    for block_size in (7, 4096):
        result = knn_indices(embeddings, k, block_size=block_size)
        assert result.dtype == np.int64 and result.shape == (90, k)
        np.testing.assert_array_equal(result, expected)


def test_knn_hand_worked_on_the_unit_circle():
    angles = np.deg2rad([0, 10, 30, 100, 185])
    embeddings = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    # Angular gaps: 100 deg is 70 from 30, 85 from 185 and 90 from 10.
    np.testing.assert_array_equal(
        knn_indices(embeddings, 2),
        [[1, 2], [0, 2], [1, 0], [2, 4], [3, 2]],
    )


def test_zero_vector_is_equally_similar_to_everything():
    embeddings = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # Item 0 has similarity 0 to all; lower indices win the ties. Item 1: {0: 0, 2: 0, 3: -1}.
    np.testing.assert_array_equal(knn_indices(embeddings, 2), [[1, 2], [0, 2], [0, 1], [0, 2]])


def test_duplicates_are_neighbours_and_self_is_excluded_by_index():
    embeddings = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    neighbours = knn_indices(embeddings, 2)
    np.testing.assert_array_equal(neighbours, [[1, 3], [0, 3], [0, 1], [0, 1]])
    assert not (neighbours == np.arange(4)[:, None]).any()


def test_knn_is_scale_invariant_per_row():
    # No duplicates here: differently scaled copies round to slightly different unit vectors.
    embeddings = np.random.default_rng(3).normal(size=(60, 5)).astype(np.float32)
    scales = np.random.default_rng(3).uniform(0.5, 50.0, size=(60, 1)).astype(np.float32)
    np.testing.assert_array_equal(knn_indices(embeddings * scales, 7), knn_indices(embeddings, 7))


def test_knn_jaccard_matches_brute_force_sets():
    rng = np.random.default_rng(4)
    first = data_with_ties(4, n=70, d=8)
    second = first[:, :3] + 0.3 * rng.normal(size=(70, 3)).astype(np.float32)
    k = 6
    expected = [
        len(set(a) & set(b)) / len(set(a) | set(b))
        for a, b in zip(brute_force_knn(first, k), brute_force_knn(second, k))
    ]
    np.testing.assert_allclose(knn_jaccard(first, second, k), expected)


def test_identical_geometry_in_a_different_width_agrees_fully():
    embeddings = np.random.default_rng(5).normal(size=(80, 16)).astype(np.float32)
    padded = np.hstack([embeddings, np.zeros((80, 112), np.float32)])  # 16 vs 128 dimensions
    np.testing.assert_array_equal(knn_jaccard(embeddings, padded, 10), np.ones(80))


def test_unrelated_models_agree_at_about_chance():
    rng = np.random.default_rng(6)
    n, k = 400, 10
    mean = knn_jaccard(rng.normal(size=(n, 12)), rng.normal(size=(n, 12)), k).mean()
    # Counting an item as its own neighbour would put every Jaccard at >= 1/19 ~ 0.053.
    assert abs(mean - chance_jaccard(n - 1, k, k)) < 0.01


def test_sweep_equals_separate_runs_and_skips_large_k():
    rng = np.random.default_rng(7)
    first = rng.normal(size=(40, 6))
    second = first + 0.5 * rng.normal(size=(40, 6))
    sweep = knn_sweep(first, second, ks=(1, 5, 20, 40, 100))
    assert list(sweep) == [1, 5, 20]
    for K, value in sweep.items():
        assert value == pytest.approx(knn_jaccard(first, second, K).mean())


def test_compare_representation_fields():
    rng = np.random.default_rng(8)
    reference = data_with_ties(8, n=60, d=10)
    candidate = reference[:, :4] + 0.4 * rng.normal(size=(60, 4)).astype(np.float32)
    texts = [f"item {i}" for i in range(60)]
    result = compare_representation(
        reference,
        candidate,
        reference="large",
        candidate="small",
        k=5,
        ks=(1, 5, 10, 60),
        stage="after fine-tuning",
        n_bootstrap=200,
        item_texts=texts,
        max_evidence=4,
    )
    per_item = knn_jaccard(reference, candidate, 5)
    assert isinstance(result, ComparisonResult)
    assert result.characteristic == "data_representation" and result.figure_name == "kNN Jaccard"
    assert result.k == 5 and result.n == 60 and result.stage == "after fine-tuning"
    assert result.figure == pytest.approx(per_item.mean())
    assert result.details["variance"] == pytest.approx(np.mean((per_item - per_item.mean()) ** 2))
    assert result.details["median"] == pytest.approx(np.median(per_item))
    assert (result.details["min"], result.details["max"]) == (per_item.min(), per_item.max())
    assert result.chance == pytest.approx(chance_jaccard(59, 5, 5))
    assert result.corrected == pytest.approx((result.figure - result.chance) / (1 - result.chance))
    assert result.ci_low <= result.figure <= result.ci_high
    assert list(result.sweep) == ["1", "5", "10"]
    assert result.sweep["5"] == pytest.approx(result.figure)
    assert len(result.evidence) == 4
    worst = result.evidence[0]
    assert worst["jaccard"] == pytest.approx(per_item.min())
    assert [entry["jaccard"] for entry in result.evidence] == sorted(entry["jaccard"] for entry in result.evidence)
    np.testing.assert_array_equal(worst["reference_neighbours"], knn_indices(reference, 5)[worst["index"]])
    np.testing.assert_array_equal(worst["candidate_neighbours"], knn_indices(candidate, 5)[worst["index"]])
    assert worst["text"] == texts[worst["index"]]
    assert ComparisonResult.from_json(result.to_json()) == result


def test_identical_embeddings_compare_at_one():
    embeddings = np.random.default_rng(9).normal(size=(30, 4))
    result = compare_representation(embeddings, embeddings.copy(), reference="a", candidate="b", k=3, n_bootstrap=50)
    assert result.figure == 1.0 and result.details["variance"] == 0.0 and result.corrected == pytest.approx(1.0)


def test_k_not_below_n_is_rejected_with_the_fix():
    with pytest.raises(ValueError, match=r"K=5 .*n=5 items.*choose K < n"):
        knn_indices(np.eye(5), 5)
    with pytest.raises(ValueError, match=r"choose K < n"):
        compare_representation(np.eye(4), np.eye(4), reference="a", candidate="b", k=10)


def test_non_finite_embeddings_are_reported_with_a_count_and_cause():
    embeddings = np.ones((10, 3), dtype=np.float16)
    embeddings[2, 0] = np.inf
    embeddings[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"2 of 10 rows contain NaN or inf.*fp16"):
        knn_indices(embeddings, 3)


def test_mismatched_items_and_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"different numbers of items \(10 vs 9\)"):
        knn_jaccard(np.ones((10, 3)), np.ones((9, 3)), 2)
    with pytest.raises(ValueError, match="2-D"):
        knn_indices(np.ones(10), 2)
    with pytest.raises(ValueError, match="empty"):
        knn_indices(np.ones((10, 0)), 2)
