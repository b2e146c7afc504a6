"""Vulnerability to adversarial attacks (paper, section 6 and Table 3): the figures and the
comparison of two targets attacked on the same items.

The attack itself (BERT-Attack, offline: settings, recipe, engines, runner) is
:mod:`miniature.core.attack`; this module reads its outcomes. Each target gets the paper's
Table 3 figures (accuracy before and after the attack, absolute and % change) and, beyond
the paper, queries per item and the set of items it lost to the attack ("broken"). Two
targets are compared by the Jaccard coefficient of their broken sets, by the difference of
their % accuracy drops, and by how often the adversarial texts found against the reference
also fool the candidate (:func:`~miniature.core.attack.transfer_predictions`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from miniature.core.attack import RESULTS, transfer_predictions
from miniature.core.attack.runner import check_outcomes
from miniature.core.checks import MIN_ITEMS  # fewest items attacked against both models
from miniature.core.characteristics.base import Measurement, judged
from miniature.errors import NotApplicable

if TYPE_CHECKING:  # pragma: no cover
    from miniature.core.characteristics.base import Pair
    from miniature.core.characteristics.view import GateView

__all__ = [
    "MIN_ITEMS",
    "attack_figures",
    "compare_adversarial",
    "compare_in_gate",
]


def attack_figures(outcomes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One target's Table 3 row and more, from its outcomes.

    ``original_accuracy``; ``accuracy_after_attack`` (items still right after the
    attack); ``absolute_change`` and ``percent_change`` (the drop, positive when the
    attack hurts, % relative to the original accuracy, as in Table 3; None when the
    original accuracy is 0); counts per result; ``attack_success_rate`` (successes over
    attacked items); ``queries_per_item`` (mean over attacked items); ``broken`` (indices
    of the successfully attacked items).
    """
    check_outcomes(outcomes, "outcomes")
    n = len(outcomes)
    counts = {result: 0 for result in RESULTS}
    for outcome in outcomes:
        counts[outcome["result"]] += 1
    attacked = [o for o in outcomes if o["result"] != "skipped"]
    correct = len(attacked)
    survived = correct - counts["successful"]
    original = correct / n
    after = survived / n
    drop = original - after
    queries = [o["queries"] for o in attacked if o.get("queries") is not None]
    changed = [
        o["words_changed"] for o in outcomes if o["result"] == "successful" and o.get("words_changed") is not None
    ]
    return {
        "n": n,
        "original_accuracy": original,
        "accuracy_after_attack": after,
        "absolute_change": drop,
        "percent_change": 100.0 * drop / original if correct else None,
        "successful": counts["successful"],
        "failed": counts["failed"],
        "maximum_queries": counts["maximum queries"],
        "skipped": counts["skipped"],
        "attack_success_rate": counts["successful"] / correct if correct else None,
        "queries_per_item": sum(queries) / len(queries) if queries else None,
        "queries_total": sum(int(o.get("queries") or 0) for o in outcomes),
        "words_changed_per_success": sum(changed) / len(changed) if changed else None,
        "broken": [i for i, o in enumerate(outcomes) if o["result"] == "successful"],
    }


def measure_adversarial(
    ref_outcomes: Sequence[Mapping[str, Any]],
    cand_outcomes: Sequence[Mapping[str, Any]],
    *,
    reference: str,
    candidate: str,
    drop_tolerance: float | None = None,
    transfer: Mapping[int, int] | None = None,
    n_bootstrap: int = 1000,
    seed: int | None = 0,
    texts: Sequence[str] | None = None,
    max_evidence: int = 20,
) -> Measurement:
    """Compare two targets' vulnerability to the same attack on the same items.

    The figure is the Jaccard coefficient of the two broken sets over the items *both*
    targets originally got right (only those could break for both; an item one model
    already gets wrong is a prediction error, not a vulnerability); ``n`` is that number
    of items, and the chance baseline, chance-corrected score and paired bootstrap
    interval are over the same items. ``details`` hold both targets'
    :func:`attack_figures`, the broken-set Jaccard over all items, ``drop_difference``
    (candidate % drop minus reference % drop, in percentage points) and, given
    ``transfer`` (from :func:`~miniature.core.attack.transfer_predictions`), the transfer rate: of the items the
    reference lost and the candidate originally got right, the share whose reference
    adversarial text also fools the candidate. the gate's threshold applies to the Jaccard;
    ``drop_tolerance`` adds a condition that the candidate's % drop exceeds the
    reference's by at most that many points. Evidence lists adversarial examples,
    items broken by only one model first.
    """
    import numpy as np

    from miniature.core.stats import jaccard, set_agreement

    check_outcomes(ref_outcomes, "ref_outcomes")
    check_outcomes(cand_outcomes, "cand_outcomes")
    if len(ref_outcomes) != len(cand_outcomes):
        raise ValueError(
            f"ref_outcomes has {len(ref_outcomes)} items but cand_outcomes has "
            f"{len(cand_outcomes)}; fix: attack both targets on the same items"
        )
    for i, (r, c) in enumerate(zip(ref_outcomes, cand_outcomes)):
        if "label" in r and "label" in c and int(r["label"]) != int(c["label"]):
            raise ValueError(
                f"item {i} has label {r['label']} in ref_outcomes but {c['label']} "
                "in cand_outcomes; fix: attack both targets on the same items"
            )
    if drop_tolerance is not None and (not isinstance(drop_tolerance, (int, float)) or math.isnan(drop_tolerance)):
        raise ValueError(f"drop_tolerance is in percentage points (e.g. 10), got {drop_tolerance!r}")
    if texts is not None and len(texts) != len(ref_outcomes):
        raise ValueError(
            f"texts has {len(texts)} items but the outcomes have "
            f"{len(ref_outcomes)}; fix: pass the attacked texts in the same order"
        )

    ref_fig = attack_figures(ref_outcomes)
    cand_fig = attack_figures(cand_outcomes)
    broken_ref = np.array([o["result"] == "successful" for o in ref_outcomes])
    broken_cand = np.array([o["result"] == "successful" for o in cand_outcomes])
    both = np.array(
        [r["result"] != "skipped" and c["result"] != "skipped" for r, c in zip(ref_outcomes, cand_outcomes)]
    )
    n_both = int(both.sum())
    a, b = broken_ref[both], broken_cand[both]
    figure = chance = corrected = ci_low = ci_high = None
    if n_both:
        agreement = set_agreement(a, b, n_bootstrap=n_bootstrap, seed=seed)
        figure, chance, corrected = agreement.figure, agreement.chance, agreement.corrected
        ci_low, ci_high = agreement.ci_low, agreement.ci_high

    drop_difference = None
    if ref_fig["percent_change"] is not None and cand_fig["percent_change"] is not None:
        drop_difference = cand_fig["percent_change"] - ref_fig["percent_change"]
    conditions = []
    if drop_tolerance is not None:
        conditions.append(
            {
                "name": "% accuracy drop beyond the reference's",
                "value": drop_difference,
                "limit": float(drop_tolerance),
                "passed": drop_difference is not None and drop_difference <= drop_tolerance,
            }
        )

    transfer_rate = transfer_fooled = transfer_eligible = None
    if transfer is not None:
        eligible = [
            i
            for i in range(len(ref_outcomes))
            if ref_outcomes[i]["result"] == "successful" and cand_outcomes[i]["result"] != "skipped"
        ]
        missing = [i for i in eligible if i not in transfer]
        if missing:
            raise ValueError(
                f"transfer has no candidate prediction for item {missing[0]}, whose "
                "reference attack succeeded; fix: pass "
                "transfer_predictions(ref_outcomes, candidate_wrapper)"
            )
        transfer_eligible = len(eligible)
        transfer_fooled = sum(int(transfer[i]) != _label(ref_outcomes[i], cand_outcomes[i]) for i in eligible)
        transfer_rate = transfer_fooled / transfer_eligible if transfer_eligible else None

    evidence = _evidence(ref_outcomes, cand_outcomes, transfer, texts, max_evidence)
    details: dict[str, Any] = {
        "reference": _without_broken(ref_fig),
        "candidate": _without_broken(cand_fig),
        "drop_difference": drop_difference,
        "transfer_rate": transfer_rate,
        "transfer_fooled": transfer_fooled,
        "transfer_eligible": transfer_eligible,
        "queries_per_item": {"reference": ref_fig["queries_per_item"], "candidate": cand_fig["queries_per_item"]},
        "broken_reference": ref_fig["broken"],
        "broken_candidate": cand_fig["broken"],
        "broken_both": [i for i in range(len(ref_outcomes)) if broken_ref[i] and broken_cand[i]],
        "attacked_both": n_both,
        "jaccard_all_items": jaccard(broken_ref, broken_cand),
    }
    if not n_both:
        details["note"] = (
            "no item was attacked against both models (one of them got every "
            "item wrong), so the broken sets cannot be compared"
        )
    return Measurement(
        figure_name="broken-set Jaccard",
        figure=float("nan") if figure is None else float(figure),
        n=n_both,
        chance=chance,
        corrected=corrected,
        ci_low=ci_low,
        ci_high=ci_high,
        details=details,
        evidence=evidence,
        conditions=conditions,
    )


compare_adversarial = judged(measure_adversarial, "adversarial_vulnerability")


def _label(ref: Mapping[str, Any], cand: Mapping[str, Any]) -> int:
    for outcome in (ref, cand):
        if outcome.get("label") is not None:
            return int(outcome["label"])
    raise ValueError(
        "the transfer rate needs each item's label; fix: pass outcomes from attack_model_outcomes (they carry 'label')"
    )


def _without_broken(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in figures.items() if k != "broken"}


def _evidence(
    ref_outcomes: Sequence[Mapping[str, Any]],
    cand_outcomes: Sequence[Mapping[str, Any]],
    transfer: Mapping[int, int] | None,
    texts: Sequence[str] | None,
    max_evidence: int,
) -> list[dict[str, Any]]:
    rows = []
    for i, (r, c) in enumerate(zip(ref_outcomes, cand_outcomes)):
        by_ref, by_cand = r["result"] == "successful", c["result"] == "successful"
        if not (by_ref or by_cand):
            continue
        entry: dict[str, Any] = {
            "index": i,
            "text": texts[i] if texts is not None else r.get("original_text", c.get("original_text")),
            "label": r.get("label", c.get("label")),
            "broken_by": "both" if by_ref and by_cand else ("reference" if by_ref else "candidate"),
            "reference_result": r["result"],
            "candidate_result": c["result"],
            "reference_perturbed": r.get("perturbed_text") if by_ref else None,
            "candidate_perturbed": c.get("perturbed_text") if by_cand else None,
            "reference_words_changed": r.get("words_changed") if by_ref else None,
            "candidate_words_changed": c.get("words_changed") if by_cand else None,
        }
        if transfer is not None and by_ref and i in transfer and entry["label"] is not None:
            entry["transfers_to_candidate"] = int(transfer[i]) != int(entry["label"])
        rows.append(entry)
    rows.sort(key=lambda e: (e["broken_by"] == "both", e["index"]))
    return rows[: max(0, int(max_evidence))]


# -- in a gate run ----------------------------------------------------------------------
def compare_in_gate(gate: "GateView", pair: "Pair", stage: str | None) -> Measurement:
    """The gate's comparison of one pair: its per-item outputs fed to the function above."""
    if gate.task == "classification":
        gate.require_heads(pair)  # before attacking either model
    reference = gate.attack_outcomes(pair.reference)
    candidate = gate.attack_outcomes(pair.candidate)
    attacked = sum(r["result"] != "skipped" and c["result"] != "skipped" for r, c in zip(reference, candidate))
    least = MIN_ITEMS
    if attacked < least:
        size, items = gate.settings.attack_size, len(gate.data.test)
        fix = (
            f"raise --attack-size (now {size})"
            if size is not None and size < items
            else f"pass more labelled test items (the test data has {items})"
        )
        raise NotApplicable(
            f"only {attacked} of the {len(reference)} sampled item(s) were classified correctly "
            f"by both {pair.reference!r} and {pair.candidate!r}, so only they were attacked; at "
            f"least {least} are needed for a broken-set Jaccard; fix: {fix}"
        )
    transfer = _cached_transfer(gate, pair, reference)
    translation = gate.label_translation(pair.candidate)  # the candidate's ids as the data's
    if translation is not None:
        transfer = {i: int(translation[p]) for i, p in transfer.items()}
    return measure_adversarial(
        reference,
        candidate,
        reference=pair.reference,
        candidate=pair.candidate,
        drop_tolerance=gate.settings.attack_drop_tolerance,
        transfer=transfer,
        n_bootstrap=gate.settings.bootstrap,
        seed=gate.settings.seed,
    )


def _cached_transfer(gate: "GateView", pair: "Pair", reference: list[dict[str, Any]]) -> dict[int, int]:
    """:func:`transfer_predictions` of the candidate, kept in the cache by the candidate's
    fingerprint and the adversarial texts, so a warm run neither loads nor runs it."""
    from miniature.core.cache import fingerprint, fingerprint_texts

    texts = [str(o.get("perturbed_text")) for o in reference if o["result"] == "successful"]
    key = fingerprint(
        "attack-transfer",
        gate.model_fingerprint(pair.candidate, None),
        gate.answer_signature(pair.candidate),
        gate.settings.max_length,
        fingerprint_texts(texts),
    )
    stored = gate.cache.load_arrays("outputs", key)
    if stored is not None and set(stored) == {"items", "predicted"}:
        return dict(zip(stored["items"].tolist(), stored["predicted"].tolist()))
    transfer = transfer_predictions(reference, gate.wrapper(pair.candidate))
    items = np.array(sorted(transfer), dtype=np.int64)
    gate.cache.save_arrays(
        "outputs", key, {"items": items, "predicted": np.array([transfer[i] for i in items.tolist()], dtype=np.int64)}
    )
    return transfer
