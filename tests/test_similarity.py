"""Tests for miniature.core.characteristics.similarity: CKA, debiased CKA, mutual kNN, bootstrap, evidence."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from miniature.core.characteristics import similarity as sim
from miniature.core.characteristics.similarity import (
    cka_bootstrap_ci,
    cka_disagreement_per_item,
    cka_pair,
    debiased_cka,
    linear_cka,
    mutual_knn,
    mutual_knn_per_item,
    similarity_evidence,
)
from miniature.core.stats import paired_bootstrap_ci

FAST = settings(max_examples=40, deadline=None)


# ------------------------------------------------------------------ brute-force twins


def brute_linear_cka(X, Y) -> float:
    """Textbook: H = I - 11'/n, tr(HKH HLH) / sqrt(tr(HKH HKH) tr(HLH HLH)), n x n matrices."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    n = len(X)
    H = np.eye(n) - np.ones((n, n)) / n
    Kc, Lc = H @ X @ X.T @ H, H @ Y @ Y.T @ H
    return float(np.trace(Kc @ Lc) / math.sqrt(np.trace(Kc @ Kc) * np.trace(Lc @ Lc)))


def brute_hsic1(K, L) -> float:
    """Song et al. 2012 unbiased HSIC, literally, on (uncentred) n x n kernel matrices."""
    n = len(K)
    Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    return float(
        (
            np.trace(Kt @ Lt)
            + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ Kt @ Lt @ one)
        )
        / (n * (n - 3))
    )


def brute_debiased_cka(X, Y) -> float:
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    K, L = X @ X.T, Y @ Y.T
    return brute_hsic1(K, L) / math.sqrt(brute_hsic1(K, K) * brute_hsic1(L, L))


def brute_mutual_knn(X, Y, k) -> np.ndarray:
    """Full cosine matrices, self removed, sorted by (-similarity, index); set overlap / k."""

    def neighbours(Z):
        Z = np.asarray(Z, np.float64)
        Z = Z / np.linalg.norm(Z, axis=1, keepdims=True)
        sim_matrix = Z @ Z.T
        n = len(Z)
        rows = []
        for i in range(n):
            others = np.delete(np.arange(n), i)
            rows.append(set(others[np.lexsort((others, -sim_matrix[i, others]))[:k]].tolist()))
        return rows

    return np.array([len(a & b) / k for a, b in zip(neighbours(X), neighbours(Y))])


def related_pair(seed: int, n: int, d1: int, d2: int, offset: float = 0.0, noise: float = 1.0):
    """X Gaussian (shifted by ``offset``, so centring matters); Y a noisy linear map of X."""
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(n, d1)) + offset).astype(np.float32)
    Y = (X @ rng.normal(size=(d1, d2)) + noise * rng.normal(size=(n, d2))).astype(np.float32)
    return X, Y


def real_looking_pair(seed: int, n: int = 300, d1: int = 48, d2: int = 32):
    """Sentence-vector-like: clustered, a large shared mean direction, duplicate rows."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, d1))
    X = centres[rng.integers(0, 12, n)] + 0.5 * rng.normal(size=(n, d1)) + 4.0
    Y = np.tanh(X @ rng.normal(size=(d1, d2)) / math.sqrt(d1)) + 0.2 * rng.normal(size=(n, d2)) + 1.5
    copies = rng.choice(n, n // 10, replace=False)
    X[copies], Y[copies] = X[copies[::-1]], Y[copies[::-1]]
    return X.astype(np.float32), Y.astype(np.float32)


def random_orthogonal(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


CASES = [(50, 5, 7, 0.0), (40, 6, 6, 3.0), (30, 60, 40, 1.0), (25, 3, 90, 0.0), (200, 16, 24, 2.0), (6, 2, 3, 0.0)]


@pytest.mark.parametrize("n,d1,d2,offset", CASES)
def test_cka_matches_brute_force_gram_matrices(n, d1, d2, offset):
    X, Y = related_pair(n + d1, n, d1, d2, offset)
    linear, debiased = cka_pair(X, Y)
    assert linear == pytest.approx(brute_linear_cka(X, Y), rel=1e-6)
    assert debiased == pytest.approx(brute_debiased_cka(X, Y), rel=1e-6)
    assert linear_cka(X, Y) == linear and debiased_cka(X, Y) == debiased


@pytest.mark.parametrize("seed", [0, 1])
def test_cka_matches_brute_force_on_real_looking_inputs(seed):
    X, Y = real_looking_pair(seed)
    assert linear_cka(X, Y) == pytest.approx(brute_linear_cka(X, Y), rel=1e-6)
    assert debiased_cka(X, Y) == pytest.approx(brute_debiased_cka(X, Y), rel=1e-6)


def test_feature_space_and_gram_routes_agree(monkeypatch):
    X, Y = real_looking_pair(3, n=120, d1=20, d2=30)
    feature = cka_pair(X, Y), cka_disagreement_per_item(X, Y)
    monkeypatch.setattr(sim, "_use_feature_space", lambda *args: False)
    gram = cka_pair(X, Y), cka_disagreement_per_item(X, Y)
    np.testing.assert_allclose(feature[0], gram[0], rtol=1e-9)
    np.testing.assert_allclose(feature[1], gram[1], rtol=1e-7, atol=1e-12)


def test_row_blocks_do_not_change_the_result(monkeypatch):
    X, Y = related_pair(4, 300, 12, 9, offset=2.0)
    whole = cka_pair(X, Y)
    monkeypatch.setattr(sim, "_BLOCK_ELEMENTS", 7 * 21)  # blocks of 7 rows
    np.testing.assert_allclose(cka_pair(X, Y), whole, rtol=1e-12)


def test_hand_worked_example():
    # One dimension each, already centred: x = (-3, -1, 1, 3), y = (-1, -1, 1, 1).
    # Linear CKA = (x'y)^2 / (x'x y'y) = 8^2 / (20 * 4) = 0.8 (the squared correlation).
    # Debiased, n = 4: n(n-3) = 4, (n-1)(n-2) = 6, 2/(n-2) = 1; a = x^2 = (9,1,1,9), b = (1,1,1,1).
    # Columns sum to 0, so 1'K~1 = -sum a = -20, 1'L~1 = -4, K~1 = -a, L~1 = -b.
    #   HSIC(K,L): tr = 64 - sum ab = 44;   (44 + 80/6 - 20) / 4 = 28/3
    #   HSIC(K,K): tr = 400 - sum a^2 = 236; (236 + 400/6 - 164) / 4 = 104/3
    #   HSIC(L,L): tr = 16 - 4 = 12;        (12 + 16/6 - 4) / 4 = 8/3
    # Debiased CKA = (28/3) / sqrt(104/3 * 8/3) = 28 / sqrt(832) = 0.970725...
    x = np.array([[-3.0], [-1.0], [1.0], [3.0]], dtype=np.float32)
    y = np.array([[-1.0], [-1.0], [1.0], [1.0]], dtype=np.float32)
    assert linear_cka(x, y) == pytest.approx(0.8, rel=1e-12)
    assert debiased_cka(x, y) == pytest.approx(28 / math.sqrt(832), rel=1e-12)
    # Shifting every item by the same vector changes nothing (both estimators centre).
    assert cka_pair(x + 10, y - 5) == pytest.approx((0.8, 28 / math.sqrt(832)), rel=1e-9)


def test_mutual_knn_hand_worked():
    # Four items on the unit circle. Model X: 0°, 10°, 90°, 100°; model Y: 0°, 90°, 10°, 100°.
    # k = 1: X pairs (0,1), (2,3); Y pairs (0,2), (1,3): no item keeps its neighbour -> 0.
    # k = 2: item 0: X {1, 2}, Y {2, 1} -> 1;    item 1: X {0, 2}, Y {3, 2} -> 1/2;
    #        item 2: X {3, 1}, Y {0, 1} -> 1/2;  item 3: X {2, 1}, Y {1, 2} -> 1;  mean 0.75.
    def circle(degrees):
        radians = np.radians(degrees)
        return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)

    X, Y = circle([0, 10, 90, 100]), circle([0, 90, 10, 100])
    np.testing.assert_allclose(mutual_knn_per_item(X, Y, 1), [0, 0, 0, 0])
    np.testing.assert_allclose(mutual_knn_per_item(X, Y, 2), [1, 0.5, 0.5, 1])
    assert mutual_knn(X, Y, 2) == pytest.approx(0.75)


@pytest.mark.parametrize("seed,k", [(0, 1), (1, 5), (2, 12)])
def test_mutual_knn_matches_brute_force(seed, k):
    X, Y = related_pair(seed, 80, 6, 9, noise=3.0)
    np.testing.assert_allclose(mutual_knn_per_item(X, Y, k), brute_mutual_knn(X, Y, k))


# ---------------------------------------------------------------- hypothesis properties

shapes = st.tuples(st.integers(6, 40), st.integers(1, 8), st.integers(1, 8), st.integers(0, 2**32 - 1))


@FAST
@given(shapes, st.floats(0.0, 3.0))
def test_cka_properties(shape, noise):
    n, d1, d2, seed = shape
    X, Y = related_pair(seed, n, d1, d2, offset=1.0, noise=noise + 0.1)
    rng = np.random.default_rng(seed + 1)
    linear, debiased = cka_pair(X, Y)
    # Identity, symmetry, bounds.
    assert cka_pair(X, X) == pytest.approx((1.0, 1.0), abs=1e-9)
    assert cka_pair(Y, X) == pytest.approx((linear, debiased), rel=1e-9, abs=1e-12)
    assert 0.0 <= linear <= 1.0
    # Orthogonal transforms and isotropic scaling of either side change nothing.
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    rotated = cka_pair(X64 @ random_orthogonal(rng, d1), 7.5 * (Y64 @ random_orthogonal(rng, d2)))
    assert rotated == pytest.approx((linear, debiased), rel=1e-7, abs=1e-9)
    assert cka_pair(0.01 * X64, Y64) == pytest.approx((linear, debiased), rel=1e-7, abs=1e-9)


@FAST
@given(st.integers(3, 30), st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**32 - 1), st.data())
def test_mutual_knn_properties(n, d1, d2, seed, data):
    X, Y = related_pair(seed, n, d1, d2, noise=2.0)
    k = data.draw(st.integers(1, n - 1))
    per_item = mutual_knn_per_item(X, Y, k)
    assert per_item.shape == (n,)
    assert np.all((per_item >= 0) & (per_item <= 1))
    # Multiples of 1/k: a count of shared neighbours.
    np.testing.assert_allclose(per_item * k, np.round(per_item * k), atol=1e-12)
    assert mutual_knn(X, X, k) == 1.0
    # Cosine neighbours ignore each row's length (powers of two scale exactly in floats).
    exponents = np.random.default_rng(seed).integers(-6, 7, size=(n, 1))
    scaled = (X * np.exp2(exponents)).astype(np.float32)
    np.testing.assert_array_equal(mutual_knn_per_item(scaled, Y, k), per_item)
    assert mutual_knn(Y, X, k) == pytest.approx(per_item.mean())


def test_mutual_knn_ignores_arbitrary_row_scaling_when_neighbours_are_clear():
    X, Y = related_pair(5, 60, 4, 5, noise=1.0)
    scale = np.random.default_rng(5).uniform(0.1, 30.0, size=(60, 1))
    np.testing.assert_array_equal(mutual_knn_per_item(X * scale, Y, 5), mutual_knn_per_item(X, Y, 5))


# ------------------------------------------------------------ bias on unrelated models


def test_independent_representations_debiased_near_zero_biased_clearly_not():
    # Two independent Gaussian representations, n = 500, d = 64: the population CKA is 0.
    # Linear CKA's numerator ||Yc'Xc||^2 has expectation ~ n d1 d2 even so (pure noise in
    # the cross product), against ~ n d (n + d) for each ||Xc'Xc||, so linear CKA sits
    # near d / (n + d) = 64/564 = 0.113 (measured over 40 seeds: 0.114 +- 0.0025).
    # Debiased CKA removes exactly those diagonal (self-similarity) terms: 0.0007 +- 0.0028
    # over the same 40 seeds, all within +-0.009, so |value| < 0.02 is ~7 standard deviations.
    rng = np.random.default_rng(2024)
    X = rng.normal(size=(500, 64)).astype(np.float32)
    Y = rng.normal(size=(500, 64)).astype(np.float32)
    linear, debiased = cka_pair(X, Y)
    assert abs(debiased) < 0.02
    assert 0.09 < linear < 0.14
    assert linear == pytest.approx(64 / 564, abs=0.015)


# ------------------------------------------------------------------------- bootstrap


def test_bootstrap_uses_the_project_resampling_stream():
    # Same seed, same item draws as paired_bootstrap_ci on the rows themselves.
    X, Y = related_pair(7, 25, 3, 4)
    ours = cka_bootstrap_ci(X, Y, n_bootstrap=60, seed=3)
    reference = paired_bootstrap_ci(lambda x, y: brute_linear_cka(x, y), X, Y, n_resamples=60, seed=3)
    assert ours == pytest.approx(reference, rel=1e-6)


def test_debiased_bootstrap_centres_on_the_estimate():
    # Pairs of copies of one item are left out, so replicates are not pulled upwards.
    X, Y = related_pair(8, 300, 32, 32, noise=12.0)
    estimate = debiased_cka(X, Y)
    low, high = cka_bootstrap_ci(X, Y, n_bootstrap=200, seed=0, debiased=True)
    assert low < estimate < high
    assert cka_bootstrap_ci(X, Y, n_bootstrap=200, seed=0, debiased=True) == (low, high)


def test_debiased_bootstrap_of_independent_representations_covers_zero():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(400, 48)).astype(np.float32)
    Y = rng.normal(size=(400, 48)).astype(np.float32)
    low, high = cka_bootstrap_ci(X, Y, n_bootstrap=200, debiased=True)
    assert low < 0.0 < high


# ------------------------------------------------------- delta method (large n interval)


def weighted_cka(X, Y, weights: np.ndarray, *, debiased: bool) -> np.ndarray:
    """CKA under item weights, one value per row of ``weights``: what a bootstrap replicate computes."""
    Xc, Yc, n = sim._prepare(X, Y, min_items=4)
    sums = sim._sums(Xc, Yc, np.atleast_2d(weights).astype(np.float64))
    return sim._debiased_from_sums(sums, n) if debiased else sim._linear_from_sums(sums, n)


@pytest.mark.parametrize("debiased", [False, True], ids=["linear", "debiased"])
def test_influence_equals_finite_differences_of_the_weighted_cka(debiased: bool):
    # Brute-force twin: central differences of the replicate statistic, one item at a time.
    X, Y = related_pair(3, 30, 5, 7, noise=1.5)
    step = 1e-5
    eye = np.eye(30)
    numeric = (
        weighted_cka(X, Y, 1 + step * eye, debiased=debiased) - weighted_cka(X, Y, 1 - step * eye, debiased=debiased)
    ) / (2 * step)
    analytic = sim.cka_influence(X, Y, debiased=debiased)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


@given(seed=st.integers(0, 10_000), debiased=st.booleans())
@FAST
def test_influence_of_identical_representations_is_zero(seed: int, debiased: bool):
    # CKA(X, X) = 1 under every weighting, so no item can move it.
    X = np.random.default_rng(seed).normal(size=(12, 4))
    np.testing.assert_allclose(sim.cka_influence(X, X, debiased=debiased), 0.0, atol=1e-9)


@pytest.mark.parametrize("debiased", [False, True], ids=["linear", "debiased"])
def test_delta_interval_matches_the_bootstrap_at_moderate_n(debiased: bool):
    X, Y = related_pair(21, 1500, 12, 12, noise=6.0)
    estimate = cka_pair(X, Y)[1 if debiased else 0]
    low, high = sim.cka_delta_ci(X, Y, debiased=debiased)
    assert sim._estimate_and_influence(X, Y, debiased=debiased)[0] == pytest.approx(estimate, abs=1e-9)
    boot_low, boot_high = cka_bootstrap_ci(X, Y, n_bootstrap=400, seed=0, debiased=debiased)
    assert low < estimate < high
    assert high - low == pytest.approx(boot_high - boot_low, rel=0.2)  # same spread
    if debiased:  # the linear bootstrap runs above its estimate (repeated items); the debiased does not
        assert (low + high) / 2 == pytest.approx((boot_low + boot_high) / 2, abs=0.15 * (high - low))


def test_interval_method_follows_the_cost():
    X, Y = related_pair(2, 60, 4, 4)
    assert sim.cka_interval(X, Y, n_bootstrap=50)[2] == "bootstrap"
    assert sim.cka_interval(X, Y, method="delta")[2] == "delta"
    big = sim.bootstrap_cost(20_000, 768, 768, 1000)
    assert big > sim.BOOTSTRAP_BUDGET > sim.bootstrap_cost(60, 4, 4, 1000)
    with pytest.raises(ValueError, match="auto, bootstrap or delta"):
        sim.cka_interval(X, Y, method="jackknife")


def test_large_n_result_names_its_interval(monkeypatch):
    X, Y = related_pair(5, 200, 6, 6, noise=2.0)
    kwargs = dict(reference="r", candidate="c", n_bootstrap=100)
    assert sim.compare_similarity(X, Y, **kwargs).details["interval"] == "paired bootstrap, 100 replicates"
    monkeypatch.setattr(sim, "BOOTSTRAP_BUDGET", 0.0)  # as if n were 20,000
    result = sim.compare_similarity(X, Y, **kwargs)
    assert result.details["interval"].startswith("delta method")
    assert result.ci_low < result.figure < result.ci_high


# -------------------------------------------------------------------------- evidence


def test_per_item_disagreement_sums_to_one_minus_cka_and_matches_gram_rows():
    X, Y = real_looking_pair(4, n=90)
    shares = cka_disagreement_per_item(X, Y)
    assert shares.sum() == pytest.approx(1.0 - linear_cka(X, Y), rel=1e-9)
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    H = np.eye(90) - 1 / 90
    A, B = H @ X64 @ X64.T @ H, H @ Y64 @ Y64.T @ H
    A, B = A / np.linalg.norm(A), B / np.linalg.norm(B)
    np.testing.assert_allclose(shares, 0.5 * ((A - B) ** 2).sum(axis=1), rtol=1e-6, atol=1e-12)


def test_evidence_finds_the_item_that_moved():
    X, _ = related_pair(9, 100, 8, 8)
    Y = X.copy()
    Y[17] = -5.0 * X[17]  # one item lands somewhere else entirely in model Y
    evidence = similarity_evidence(X, Y, k=5, max_items=3)
    assert [entry["index"] for entry in evidence][0] == 17
    assert evidence[0]["cka_share"] > 10 * evidence[1]["cka_share"]
    assert set(evidence[0]) == {"index", "cka_share", "mutual_knn"}
    assert similarity_evidence(X, X, k=5, max_items=0) == []


# -------------------------------------------------------------------------- validation


def test_validation_messages():
    X = np.zeros((10, 3), np.float32) + np.arange(10, dtype=np.float32)[:, None]
    with pytest.raises(ValueError, match=r"different numbers of items \(10 vs 9\)"):
        linear_cka(X, X[:9])
    with pytest.raises(ValueError, match="2-D"):
        linear_cka(X[:, 0], X)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="1 of 10 rows contain NaN"):
        debiased_cka(X, bad)
    with pytest.raises(ValueError, match="at least 4 items"):
        debiased_cka(X[:3], X[:3])
    with pytest.raises(ValueError, match="at least 4 items"):
        cka_bootstrap_ci(X[:3], X[:3], debiased=True)
    with pytest.raises(ValueError, match="same vector"):
        linear_cka(X, np.ones((10, 2)))
    with pytest.raises(ValueError, match="k=10 neighbours"):
        mutual_knn(X, X, 10)
    with pytest.raises(ValueError, match="real numbers"):
        linear_cka(X.astype(complex), X)
    assert math.isnan(cka_pair(X[:3], X[:3] ** 2)[1])  # three items: no debiased estimate
