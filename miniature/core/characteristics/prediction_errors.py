"""Prediction errors (paper, section 3): do two models get the same items wrong?

Each model's error set E is the set of evaluation items it answers incorrectly; the
agreement is the Jaccard coefficient of the two error sets. Alongside it this module
reports what the paper discusses in words (accuracies, whether the reference's errors
are a subset of the candidate's) and what a reviewer asks next: how many items flip
from right to wrong, and whether that asymmetry is significant (exact McNemar test).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from miniature.core.characteristics.base import Pair
    from miniature.core.characteristics.view import GateView

from typing import Sequence

import numpy as np

from miniature.core.characteristics.base import Measurement, judged
from miniature.core.checks import MIN_ITEMS, booleans, check_texts
from miniature.core.stats import informative, mcnemar_exact, set_agreement
from miniature.errors import NotApplicable

__all__ = ["MIN_ITEMS", "error_mask", "compare_prediction_errors"]


def error_mask(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """True for every item whose prediction differs from its label (the model's error set).

    Works for class ids, strings or any values numpy compares element-wise. With
    multi-dimensional rows (e.g. token tags) an item is wrong if any element differs.
    """
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(
            f"predictions have shape {predictions.shape} but labels have shape {labels.shape}; "
            f"give one prediction per labelled item"
        )
    wrong: np.ndarray = np.asarray(predictions != labels, dtype=bool)
    if wrong.ndim > 1:
        wrong = np.asarray(wrong.reshape(wrong.shape[0], -1).any(axis=1))
    return wrong


def measure_prediction_errors(
    reference_correct: np.ndarray,
    candidate_correct: np.ndarray,
    *,
    reference: str,
    candidate: str,
    n_bootstrap: int = 1000,
    seed: int | None = 0,
    item_texts: Sequence[str] | None = None,
    max_evidence: int = 20,
) -> Measurement:
    """Compare two models' error sets on the same items (paper, section 3).

    ``reference_correct`` and ``candidate_correct`` are boolean per-item correctness in
    the same item order. The figure is the Jaccard coefficient of the error sets (1.0
    when neither model errs); chance is that of random error sets of the same sizes.
    Evidence lists negative flips (reference right, candidate wrong) first, then
    positive flips.
    """
    reference_ok = _correctness(reference_correct, "reference_correct")
    candidate_ok = _correctness(candidate_correct, "candidate_correct")
    if reference_ok.shape != candidate_ok.shape:
        raise ValueError(
            f"reference_correct has {reference_ok.size} items but candidate_correct has "
            f"{candidate_ok.size}; score both models on the same items"
        )
    n = reference_ok.size
    if n == 0:
        raise ValueError("no items to compare: reference_correct and candidate_correct are empty")
    check_texts(item_texts, n)

    reference_errors = ~reference_ok
    candidate_errors = ~candidate_ok
    agreement = set_agreement(reference_errors, candidate_errors, n_bootstrap=n_bootstrap, seed=seed)

    negative = reference_ok & ~candidate_ok
    positive = ~reference_ok & candidate_ok
    details = {
        "reference_accuracy": float(reference_ok.mean()),
        "candidate_accuracy": float(candidate_ok.mean()),
        "reference_errors": int(reference_errors.sum()),
        "candidate_errors": int(candidate_errors.sum()),
        "reference_errors_subset_of_candidate": bool(not (reference_errors & ~candidate_errors).any()),
        "agreement_rate": float((reference_ok == candidate_ok).mean()),
        "negative_flips": int(negative.sum()),
        "positive_flips": int(positive.sum()),
        "mcnemar_p": mcnemar_exact(int(negative.sum()), int(positive.sum())),
    }

    evidence: list[dict] = []
    for kind, flips in (("negative flip", negative), ("positive flip", positive)):
        for index in np.flatnonzero(flips):
            if len(evidence) >= max_evidence:
                break
            entry: dict = {"index": int(index), "kind": kind}
            if item_texts is not None:
                entry["text"] = item_texts[int(index)]
            evidence.append(entry)

    return Measurement(
        figure_name="error-set Jaccard",
        n=n,
        **agreement.result_fields(),
        details=details,
        evidence=evidence,
    )


compare_prediction_errors = judged(measure_prediction_errors, "prediction_errors")


def _correctness(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of per-item correctness, got shape {array.shape}")
    return booleans(
        array,
        f"{name} must be booleans (True = answered correctly); to build it from "
        f"predictions use ~error_mask(predictions, labels)",
    )


# -- in a gate run ----------------------------------------------------------------------
def compare_in_gate(gate: "GateView", pair: "Pair", stage: str | None) -> Measurement:
    """The gate's comparison of one pair: its per-item outputs fed to the function above."""
    test = gate.data.test
    least = MIN_ITEMS
    if len(test) < least:
        raise NotApplicable(
            f"only {len(test)} test item(s) in {test.source!r}; the error-set "
            f"Jaccard needs at least {least}; fix: pass more test data "
            "(--test-data, --data-limit)"
        )
    gate.require_heads(pair)
    reference, candidate = gate.correct(pair.reference), gate.correct(pair.candidate)
    if reference.all() and candidate.all():
        raise NotApplicable(
            f"neither {pair.reference!r} nor {pair.candidate!r} erred on any of "
            f"the {len(test)} test items ({test.source}), so there are no error "
            "sets to compare; fix: pass a larger or harder --test-data"
        )
    result = measure_prediction_errors(
        reference,
        candidate,
        reference=pair.reference,
        candidate=pair.candidate,
        n_bootstrap=gate.settings.bootstrap,
        seed=gate.settings.seed,
        item_texts=test.texts,
    )
    if not informative(result.chance):
        a, b = result.details["reference_errors"], result.details["candidate_errors"]
        why = (
            f"both {pair.reference!r} and {pair.candidate!r} erred on every one of the "
            f"{len(test)} test items ({test.source})"
            if a == b == len(test)
            else f"{pair.reference!r} and {pair.candidate!r} erred on {a} and {b} of the "
            f"{len(test)} test items ({test.source})"
        )
        raise NotApplicable(
            f"{why}, so unrelated models would agree at chance "
            f"{result.chance:.3f} and the error-set Jaccard says nothing of these "
            "models; fix: pass models fine-tuned for this task (--finetune) or "
            "a --test-data they can mostly answer"
        )
    if gate.task == "classification":  # the flips of Dutta et al. need the answers, not only right/wrong
        from miniature.core.stats import flips

        found = flips(np.asarray(test.labels), gate.predicted(pair.reference), gate.predicted(pair.candidate))
        result.details["flips"] = {
            "correct_to_incorrect": found.correct_to_incorrect,
            "incorrect_to_correct": found.incorrect_to_correct,
            "wrong_to_other_wrong": found.wrong_to_other_wrong,
            **{name if name == "flip_rate" else f"{name}_rate": rate for name, rate in found.rates().items()},
        }
    return result
