"""Tests for miniature.core.stats: Jaccard, chance baseline, paired bootstrap, McNemar."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest

from miniature.core.stats import (
    chance_corrected,
    chance_jaccard,
    informative,
    set_agreement,
    jaccard,
    jaccard_batch,
    jaccard_rows,
    mcnemar_exact,
    paired_bootstrap_ci,
)

FAST = settings(max_examples=60, deadline=None)

masks = st.integers(min_value=0, max_value=40).flatmap(
    lambda n: st.tuples(
        st.lists(st.booleans(), min_size=n, max_size=n), st.lists(st.booleans(), min_size=n, max_size=n)
    )
)


def set_jaccard(a: set, b: set) -> float:
    return 1.0 if not (a | b) else len(a & b) / len(a | b)


# ----------------------------------------------------------------------------- jaccard


def test_jaccard_hand_worked():
    # A = {0, 1}, B = {1, 2}: one shared of three in the union.
    assert jaccard(np.array([1, 1, 0, 0], bool), np.array([0, 1, 1, 0], bool)) == pytest.approx(1 / 3)
    # A = {0, 1, 2, 3}, B = {1, 3}: B inside A.
    assert jaccard(np.ones(4, bool), np.array([0, 1, 0, 1], bool)) == pytest.approx(0.5)


def test_jaccard_of_two_empty_sets_is_one_and_of_one_empty_set_is_zero():
    assert jaccard(np.zeros(5, bool), np.zeros(5, bool)) == 1.0
    assert jaccard(np.zeros(5, bool), np.array([0, 0, 1, 0, 0], bool)) == 0.0


def test_jaccard_accepts_zero_one_integers():
    assert jaccard(np.array([1, 0, 1]), np.array([1, 1, 0])) == pytest.approx(1 / 3)


def test_jaccard_shape_mismatch_names_both_lengths():
    with pytest.raises(ValueError, match=r"3 \(a\) and 4 \(b\)"):
        jaccard(np.zeros(3, bool), np.zeros(4, bool))


def test_jaccard_rejects_values_that_are_not_membership():
    with pytest.raises(ValueError, match="boolean membership mask"):
        jaccard(np.array([0, 2, 1]), np.array([0, 1, 1]))


@FAST
@given(masks)
def test_jaccard_matches_python_sets_and_is_symmetric_and_bounded(pair):
    a, b = (np.array(x, dtype=bool) for x in pair)
    value = jaccard(a, b)
    assert value == pytest.approx(set_jaccard(set(np.flatnonzero(a)), set(np.flatnonzero(b))))
    assert value == jaccard(b, a)
    assert 0.0 <= value <= 1.0


@FAST
@given(st.lists(st.booleans(), min_size=0, max_size=40))
def test_jaccard_of_a_set_with_itself_is_one(values):
    a = np.array(values, dtype=bool)
    assert jaccard(a, a.copy()) == 1.0


@FAST
@given(st.lists(st.booleans(), min_size=2, max_size=40).filter(lambda v: any(v) and not all(v)))
def test_jaccard_of_disjoint_non_empty_sets_is_zero(values):
    a = np.array(values, dtype=bool)
    assert jaccard(a, ~a) == 0.0


@FAST
@given(st.integers(1, 6), st.integers(0, 30), st.data())
def test_jaccard_batch_matches_jaccard_row_by_row(rows, n, data):
    a = np.array(data.draw(st.lists(st.booleans(), min_size=rows * n, max_size=rows * n)), bool).reshape(rows, n)
    b = np.array(data.draw(st.lists(st.booleans(), min_size=rows * n, max_size=rows * n)), bool).reshape(rows, n)
    np.testing.assert_allclose(jaccard_batch(a, b), [jaccard(x, y) for x, y in zip(a, b)])


# ------------------------------------------------------------------------ jaccard_rows


def test_jaccard_rows_hand_worked():
    a = np.array([[1, 2, 3], [0, 1, 2], [7, 8, 9]])
    b = np.array([[2, 3, 4], [0, 1, 2], [1, 2, 3]])
    np.testing.assert_allclose(jaccard_rows(a, b), [0.5, 1.0, 0.0])


def test_jaccard_rows_allows_different_widths():
    # {5, 6} vs {6, 7, 8, 5}: both of A's labels found, union of four.
    np.testing.assert_allclose(jaccard_rows(np.array([[5, 6]]), np.array([[6, 7, 8, 5]])), [0.5])


@FAST
@given(
    st.integers(0, 8),
    st.integers(0, 6),
    st.integers(0, 6),
    st.sampled_from([(0, 10), (-5, 5), (0, 2**62)]),
    st.data(),
)
def test_jaccard_rows_matches_python_sets(n, k_a, k_b, bounds, data):
    labels = st.integers(*bounds)
    a = np.array(data.draw(st.lists(labels, min_size=n * k_a, max_size=n * k_a)), dtype=np.int64).reshape(n, k_a)
    b = np.array(data.draw(st.lists(labels, min_size=n * k_b, max_size=n * k_b)), dtype=np.int64).reshape(n, k_b)
    expected = [set_jaccard(set(x.tolist()), set(y.tolist())) for x, y in zip(a, b)]
    result = jaccard_rows(a, b)
    assert result.shape == (n,)
    np.testing.assert_allclose(result, expected)


def test_jaccard_rows_row_count_mismatch_names_both_counts():
    with pytest.raises(ValueError, match=r"2 \(a\) and 3 \(b\)"):
        jaccard_rows(np.zeros((2, 4), int), np.zeros((3, 4), int))


# ---------------------------------------------------------------------- chance_jaccard


def enumerated_chance(n: int, a: int, b: int) -> Fraction:
    """Average Jaccard over every pair (a-subset, b-subset) of range(n), exactly."""
    total, count = Fraction(0), 0
    for first in itertools.combinations(range(n), a):
        for second in itertools.combinations(range(n), b):
            union = len(set(first) | set(second))
            total += Fraction(1) if union == 0 else Fraction(len(set(first) & set(second)), union)
            count += 1
    return total / count


def test_chance_jaccard_n4_a2_b2_matches_enumeration():
    # Worked by hand: P(I=0)=1/6 (J=0), P(I=1)=4/6 (J=1/3), P(I=2)=1/6 (J=1) -> 7/18.
    assert enumerated_chance(4, 2, 2) == Fraction(7, 18)
    assert chance_jaccard(4, 2, 2) == pytest.approx(7 / 18, abs=1e-12)


@pytest.mark.parametrize("n", [1, 3, 5, 6])
def test_chance_jaccard_matches_exhaustive_enumeration(n):
    for a in range(n + 1):
        for b in range(n + 1):
            assert chance_jaccard(n, a, b) == pytest.approx(float(enumerated_chance(n, a, b)), abs=1e-12)


def test_chance_jaccard_matches_seeded_monte_carlo():
    n, a, b, trials = 60, 12, 25, 20000
    rng = np.random.default_rng(7)
    first = np.argsort(rng.random((trials, n)), axis=1) < a  # a random a-subset per row
    second = np.argsort(rng.random((trials, n)), axis=1) < b
    simulated = jaccard_batch(first, second)
    standard_error = simulated.std() / math.sqrt(trials)
    assert abs(chance_jaccard(n, a, b) - simulated.mean()) < 4 * standard_error


def test_chance_jaccard_is_not_the_textbook_approximation():
    # m / (2n - m) with m = a = b is only an approximation; the exact value differs for small n.
    n, m = 10, 3
    assert abs(chance_jaccard(n, m, m) - m / (2 * n - m)) > 1e-3


def test_chance_jaccard_edge_cases():
    assert chance_jaccard(0, 0, 0) == 1.0
    assert chance_jaccard(10, 0, 4) == 0.0
    assert chance_jaccard(10, 10, 10) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at most n=5"):
        chance_jaccard(5, 6, 1)
    with pytest.raises(ValueError, match="non-negative whole number"):
        chance_jaccard(5, -1, 1)


# -------------------------------------------------------------------- chance_corrected


def test_chance_corrected_scale():
    assert chance_corrected(0.25, 0.25) == 0.0
    assert chance_corrected(1.0, 0.25) == 1.0
    assert chance_corrected(0.625, 0.25) == pytest.approx(0.5)
    assert chance_corrected(0.0, 0.25) == pytest.approx(-1 / 3)


def test_chance_corrected_when_chance_is_perfect_or_nan():
    # chance 1 (both sets empty, or K = n - 1): any two models agree, so nothing beyond
    # chance is measured: undefined, never a perfect 1.0
    assert math.isnan(chance_corrected(1.0, 1.0))
    assert math.isnan(chance_corrected(0.5, 1.0))
    assert math.isnan(chance_corrected(float("nan"), 0.2))


def test_degenerate_set_agreements_have_no_corrected_score():
    empty = np.zeros(8, dtype=bool)
    both_empty = set_agreement(empty, empty, n_bootstrap=0, seed=0)
    assert both_empty.figure == 1.0 and both_empty.chance == 1.0 and math.isnan(both_empty.corrected)
    full = np.ones(8, dtype=bool)
    assert math.isnan(set_agreement(full, full, n_bootstrap=0, seed=0).corrected)
    # sizes 1 and 2 of 8 items, the one inside the two: I = 1 with probability 2/8, where J = 1/2,
    # so chance = 1/8 and corrected = (1/2 - 1/8) / (1 - 1/8) = 3/7
    one = np.zeros(8, dtype=bool)
    one[0] = True
    two = one.copy()
    two[1] = True
    worked = set_agreement(one, two, n_bootstrap=0, seed=0)
    assert worked.figure == 0.5 and worked.chance == pytest.approx(1 / 8)
    assert worked.corrected == pytest.approx(3 / 7)


def test_informative_by_hand():
    assert informative(0.0) and informative(0.5) and informative(0.8999)
    assert not informative(0.9) and not informative(1.0) and not informative(float("nan"))
    # K = 56 of the 59 others: chance 0.903, so the kNN figure is not informative; K = 55: 0.873 is
    assert not informative(chance_jaccard(59, 56, 56)) and informative(chance_jaccard(59, 55, 55))
    # K = n - 1: every neighbour set is all the others
    assert chance_jaccard(59, 59, 59) == pytest.approx(1.0) and not informative(chance_jaccard(59, 59, 59))


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 60).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(0, n))),
    st.floats(0.0, 1.0),
)
def test_corrected_is_undefined_exactly_when_chance_is_one(sizes, j):
    n, a, b = sizes
    chance = chance_jaccard(n, a, b)
    corrected = chance_corrected(j, chance)
    if chance >= 1.0:
        assert math.isnan(corrected) and not informative(chance)
        assert a == b and a in (0, n)  # only both empty or both everything
    else:
        assert corrected == pytest.approx((j - chance) / (1 - chance)) and corrected <= 1.0 + 1e-12
        assert chance_corrected(1.0, chance) == pytest.approx(1.0)


@settings(max_examples=100, deadline=None)
@given(st.integers(3, 200).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n - 1))))
def test_knn_chance_grows_with_k_and_is_informative_below_half(sizes):
    n, k = sizes  # k neighbours among n others
    chance = chance_jaccard(n, k, k)
    if k + 1 <= n - 1:
        assert chance_jaccard(n, k + 1, k + 1) >= chance - 1e-12
    if 2 * k <= n:
        assert informative(chance)  # half the items or fewer: chance about 1/3 at most


# ------------------------------------------------------------------- bootstrap


def _mean(x):
    return float(np.mean(x))


def test_bootstrap_ci_contains_estimate_and_is_reproducible():
    values = np.random.default_rng(3).normal(loc=2.0, size=300)
    low, high = paired_bootstrap_ci(_mean, values, n_resamples=500, seed=11)
    assert low < values.mean() < high
    assert high - low < 0.5  # about 4 standard errors of 1/sqrt(300)
    assert paired_bootstrap_ci(_mean, values, n_resamples=500, seed=11) == (low, high)
    assert paired_bootstrap_ci(_mean, values, n_resamples=500, seed=12) != (low, high)


def test_bootstrap_vectorized_gives_the_same_interval():
    values = np.random.default_rng(4).exponential(size=120)
    loop = paired_bootstrap_ci(_mean, values, n_resamples=300, seed=5)
    batched = paired_bootstrap_ci(lambda x: x.mean(axis=-1), values, n_resamples=300, seed=5, vectorized=True)
    assert loop == pytest.approx(batched, rel=1e-12)


def test_bootstrap_resamples_arrays_in_pairs():
    # Paired resampling keeps x[i] with y[i], so mean(x) - mean(y) is 0 in every replicate;
    # independent resampling would give a wide interval.
    x = np.random.default_rng(6).normal(size=200)
    low, high = paired_bootstrap_ci(lambda a, b: float(np.mean(a) - np.mean(b)), x, x.copy(), n_resamples=200)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.0, abs=1e-12)


def test_bootstrap_lower_level_gives_narrower_interval():
    values = np.random.default_rng(8).normal(size=200)
    wide = paired_bootstrap_ci(_mean, values, n_resamples=400, level=0.95)
    narrow = paired_bootstrap_ci(_mean, values, n_resamples=400, level=0.5)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match=r"lengths \[3, 4\]"):
        paired_bootstrap_ci(_mean, np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="empty"):
        paired_bootstrap_ci(_mean, np.zeros(0))
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap_ci(_mean, np.zeros(3), level=1.0)


# ---------------------------------------------------------------------------- McNemar


@FAST
@given(st.integers(0, 80), st.integers(0, 80))
def test_mcnemar_matches_scipy_binomial_test(b, c):
    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert mcnemar_exact(b, c) == mcnemar_exact(c, b)


def test_mcnemar_hand_worked():
    # 0 vs 5 discordant items: two-sided p = 2 * (1/2)^5 = 1/16.
    assert mcnemar_exact(0, 5) == pytest.approx(1 / 16)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(4, 4) == 1.0


def test_flips_hand_worked() -> None:
    from miniature.core.stats import flips

    labels = np.array([0, 1, 2, 0, 1, 2, 0])
    ref = np.array([0, 1, 0, 1, 2, 2, 1])  # right, right, wrong, wrong, wrong, right, wrong
    cand = np.array([0, 2, 2, 2, 2, 0, 1])  # right, wrong, right, wrong (other), wrong (same), wrong, wrong (same)
    found = flips(labels, ref, cand)
    assert (found.correct_to_incorrect, found.incorrect_to_correct, found.wrong_to_other_wrong) == (2, 1, 1)
    assert found.flipped == 3 and found.rates()["flip_rate"] == pytest.approx(3 / 7)


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=60))
def test_flips_match_a_loop_and_are_symmetric(rows) -> None:
    from miniature.core.stats import flips

    labels, ref, cand = (np.array(column) for column in zip(*rows))
    found = flips(labels, ref, cand)
    assert found.correct_to_incorrect == sum(r == y != c for y, r, c in rows)
    assert found.incorrect_to_correct == sum(c == y != r for y, r, c in rows)
    assert found.wrong_to_other_wrong == sum(r != y and c != y and r != c for y, r, c in rows)
    swapped = flips(labels, cand, ref)  # the reverse direction swaps the two kinds of flip
    assert (swapped.correct_to_incorrect, swapped.incorrect_to_correct) == (
        found.incorrect_to_correct,
        found.correct_to_incorrect,
    )
    accuracy_change = (cand == labels).mean() - (ref == labels).mean()
    assert accuracy_change == pytest.approx((found.incorrect_to_correct - found.correct_to_incorrect) / len(rows))
