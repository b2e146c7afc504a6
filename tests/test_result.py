"""ComparisonResult: verdicts against raw, corrected or CI-bound thresholds; JSON round-trip."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from miniature.core.characteristics.base import ComparisonResult


def result(**overrides) -> ComparisonResult:
    values = dict(
        characteristic="data_representation",
        reference="large",
        candidate="tiny",
        figure_name="kNN Jaccard",
        figure=0.6,
        n=100,
        threshold=0.5,
        chance=0.1,
        corrected=(0.6 - 0.1) / 0.9,
        ci_low=0.45,
        ci_high=0.7,
        k=10,
    )
    values.update(overrides)
    return ComparisonResult(**values)


@pytest.mark.parametrize(
    ("threshold_on", "threshold", "passed"),
    [
        ("raw", 0.5, True),
        ("raw", 0.61, False),
        ("corrected", 0.55, True),
        ("corrected", 0.56, False),  # corrected = 0.5556
        ("ci_lower", 0.45, True),
        ("ci_lower", 0.46, False),
    ],
)
def test_threshold_is_compared_with_the_chosen_value(threshold_on: str, threshold: float, passed: bool) -> None:
    assert result(threshold_on=threshold_on, threshold=threshold).passed is passed


def test_gating_decides_fail_versus_diverges_and_no_threshold_passes() -> None:
    assert result(figure=0.1).verdict == "FAIL"
    assert result(figure=0.1, gating=False).verdict == "DIVERGES"
    assert result(figure=0.1, threshold=None).verdict == "PASS"
    assert not result(figure=math.nan).passed


def test_a_failed_condition_fails_even_above_threshold() -> None:
    failing = result(
        conditions=[{"name": "% accuracy drop beyond the reference's", "value": 30.0, "limit": 10.0, "passed": False}]
    )
    assert not failing.passed
    assert "% accuracy drop beyond the reference's 30 beyond limit 10" in failing.summary()


def test_summary_reads_like_the_documented_failure() -> None:
    text = result(figure=0.07, corrected=0.06, ci_low=0.06, ci_high=0.08, chance=0.0004, n=1000).failure_message(
        "raise it"
    )
    assert text.startswith(
        "data representation: kNN Jaccard 0.07 (95% CI 0.06–0.08, chance 0.0004, "
        "corrected 0.06) < threshold 0.5 — large vs tiny, K=10, n=1000"
    )
    assert text.endswith("fix: raise it")


@given(st.floats(0, 1), st.floats(0, 1), st.booleans())
def test_json_round_trip(figure: float, threshold: float, gating: bool) -> None:
    original = result(
        figure=figure,
        threshold=threshold,
        gating=gating,
        evidence=[{"index": 3, "text": "<script>alert(1)</script>"}],
        sweep={"5": 0.4},
    )
    again = ComparisonResult.from_json(original.to_json())
    assert again == original and again.passed == original.passed
