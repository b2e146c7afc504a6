"""Tests for the prediction-errors characteristic (paper, section 3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from miniature.core.characteristics.base import ComparisonResult
from miniature.core.characteristics.prediction_errors import compare_prediction_errors, error_mask
from miniature.core.stats import chance_jaccard, mcnemar_exact

# Items 0..5. Reference errs on {2, 3, 5}; candidate errs on {1, 2, 5}.
REFERENCE_CORRECT = np.array([True, True, False, False, True, False])
CANDIDATE_CORRECT = np.array([True, False, False, True, True, False])
TEXTS = ["q0", "q1", "q2", "q3", "q4", "q5"]


def compare(reference_correct, candidate_correct, **options):
    return compare_prediction_errors(
        reference_correct, candidate_correct, reference="large", candidate="small", **options
    )


def test_error_mask_for_class_ids_strings_and_rows():
    np.testing.assert_array_equal(error_mask([0, 1, 2, 2], [0, 2, 2, 1]), [False, True, False, True])
    np.testing.assert_array_equal(error_mask(np.array(["Paris", "1912"]), np.array(["Paris", "1913"])), [False, True])
    tags = np.array([[1, 2, 3], [1, 2, 4]])
    np.testing.assert_array_equal(error_mask(tags, np.array([[1, 2, 3], [1, 2, 3]])), [False, True])


def test_error_mask_shape_mismatch():
    with pytest.raises(ValueError, match=r"shape \(3,\).*shape \(2,\)"):
        error_mask([1, 2, 3], [1, 2])


def test_hand_worked_comparison():
    result = compare(REFERENCE_CORRECT, CANDIDATE_CORRECT, item_texts=TEXTS)
    assert isinstance(result, ComparisonResult)
    assert result.characteristic == "prediction_errors"
    assert result.figure_name == "error-set Jaccard"
    assert result.n == 6
    # |{2,5}| / |{1,2,3,5}|
    assert result.figure == pytest.approx(2 / 4)
    assert result.chance == pytest.approx(chance_jaccard(6, 3, 3))
    assert result.corrected == pytest.approx((0.5 - result.chance) / (1 - result.chance))
    details = result.details
    assert details["reference_accuracy"] == pytest.approx(0.5)
    assert details["candidate_accuracy"] == pytest.approx(0.5)
    assert details["reference_errors"] == 3 and details["candidate_errors"] == 3
    assert details["reference_errors_subset_of_candidate"] is False
    assert details["agreement_rate"] == pytest.approx(4 / 6)
    assert details["negative_flips"] == 1 and details["positive_flips"] == 1
    assert details["mcnemar_p"] == pytest.approx(1.0)
    assert result.evidence == [
        {"index": 1, "kind": "negative flip", "text": "q1"},
        {"index": 3, "kind": "positive flip", "text": "q3"},
    ]


def test_subset_detection_and_mcnemar_counts():
    # Candidate errs wherever the reference does, plus three more items.
    reference_correct = np.array([1, 1, 1, 1, 0, 0, 1, 1], bool)
    candidate_correct = np.array([0, 0, 0, 1, 0, 0, 1, 1], bool)
    result = compare(reference_correct, candidate_correct)
    assert result.details["reference_errors_subset_of_candidate"] is True
    assert result.figure == pytest.approx(2 / 5)
    assert result.details["negative_flips"] == 3 and result.details["positive_flips"] == 0
    assert result.details["mcnemar_p"] == pytest.approx(mcnemar_exact(3, 0))
    assert [entry["kind"] for entry in result.evidence] == ["negative flip"] * 3
    assert "text" not in result.evidence[0]


def test_evidence_lists_negative_flips_first_and_is_capped():
    reference_correct = np.array([0, 1, 0, 1, 0, 1, 0, 1], bool)  # positive flips at 0,2,4,6
    candidate_correct = ~reference_correct  # negative flips at 1,3,5,7
    result = compare(reference_correct, candidate_correct, max_evidence=5)
    assert [(entry["index"], entry["kind"]) for entry in result.evidence] == [
        (1, "negative flip"),
        (3, "negative flip"),
        (5, "negative flip"),
        (7, "negative flip"),
        (0, "positive flip"),
    ]


def test_identical_and_perfect_models_agree_fully():
    correct = np.random.default_rng(0).random(50) < 0.7
    same = compare(correct, correct.copy())
    assert same.figure == 1.0 and same.corrected == pytest.approx(1.0)
    assert same.ci_low == 1.0 and same.ci_high == 1.0
    perfect = compare(np.ones(10, bool), np.ones(10, bool))
    assert perfect.figure == 1.0 and perfect.chance == 1.0 and math.isnan(perfect.corrected)  # undefined, not 1
    assert perfect.details["mcnemar_p"] == 1.0 and perfect.evidence == []


def test_bootstrap_interval_brackets_figure_and_is_seeded():
    rng = np.random.default_rng(1)
    reference_correct = rng.random(400) < 0.75
    candidate_correct = np.where(rng.random(400) < 0.8, reference_correct, rng.random(400) < 0.6)
    result = compare(reference_correct, candidate_correct, n_bootstrap=300, seed=3)
    assert result.ci_low < result.figure < result.ci_high
    again = compare(reference_correct, candidate_correct, n_bootstrap=300, seed=3)
    assert (again.ci_low, again.ci_high) == (result.ci_low, result.ci_high)
    no_ci = compare(reference_correct, candidate_correct, n_bootstrap=0)
    assert no_ci.ci_low is None and no_ci.ci_high is None


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=60))
def test_details_are_consistent_with_the_masks(pairs):
    reference_correct = np.array([p[0] for p in pairs])
    candidate_correct = np.array([p[1] for p in pairs])
    result = compare(reference_correct, candidate_correct, n_bootstrap=0)
    details = result.details
    n = len(pairs)
    assert details["negative_flips"] + details["positive_flips"] == n - round(details["agreement_rate"] * n)
    assert (
        details["candidate_errors"] - details["reference_errors"]
        == details["negative_flips"] - details["positive_flips"]
    )
    assert 0.0 <= result.figure <= 1.0
    assert result.figure == compare(candidate_correct, reference_correct, n_bootstrap=0).figure


def test_threshold_verdicts():
    passing = compare(REFERENCE_CORRECT, CANDIDATE_CORRECT, threshold=0.5)
    assert passing.passed and passing.verdict == "PASS"
    failing = compare(REFERENCE_CORRECT, CANDIDATE_CORRECT, threshold=0.6)
    assert not failing.passed and failing.verdict == "FAIL"
    advisory = compare(REFERENCE_CORRECT, CANDIDATE_CORRECT, threshold=0.6, gating=False)
    assert advisory.verdict == "DIVERGES"


def test_result_survives_json_round_trip():
    result = compare(REFERENCE_CORRECT, CANDIDATE_CORRECT, item_texts=TEXTS, n_bootstrap=50)
    assert ComparisonResult.from_json(result.to_json()) == result


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="6 items but candidate_correct has 5"):
        compare(REFERENCE_CORRECT, CANDIDATE_CORRECT[:5])
    with pytest.raises(ValueError, match="error_mask"):
        compare(np.array([0, 1, 2]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="empty"):
        compare(np.array([], bool), np.array([], bool))
    with pytest.raises(ValueError, match="threshold_on must be one of"):
        compare(REFERENCE_CORRECT, CANDIDATE_CORRECT, threshold_on="lower")
    with pytest.raises(ValueError, match="one text per item"):
        compare(REFERENCE_CORRECT, CANDIDATE_CORRECT, item_texts=["only one"])
