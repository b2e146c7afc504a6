"""Characteristics, each one object registered in one place.

A :class:`Characteristic` carries everything the rest of miniature needs to know about it:
its name and title, its threshold option and default, what it needs from the models, how it
compares a pair (a function ``compare(gate, pair, stage) -> ComparisonResult`` that feeds
the pure numeric functions of its module), its fix text and its evidence title. The
plugin's fixtures and test items, the gate's dispatch, the terminal summary, the JSON, the
summary page and the options table are generated from :data:`BUILTIN` plus whatever
projects register through the ``pytest_miniature_characteristics`` hook.

This module is imported by ``pytest --help``: it imports nothing heavy, and the compare
functions are named by dotted path and imported on first use.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from miniature.core.characteristics.base import use_titles

if TYPE_CHECKING:  # pragma: no cover
    from miniature.core.characteristics.base import ComparisonResult, Measurement

#: what a characteristic may need; the gate skips it with the reason when a need is unmet
NEEDS = ("task_head", "labels", "attack_model", "classification")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

#: ``compare(gate, pair, stage)``: what the characteristic measured (a ComparisonResult is
#: accepted too; the gate applies its own verdict either way)
CompareFunction = Callable[[Any, Any, "str | None"], "Measurement | ComparisonResult"]


@dataclass(frozen=True)
class Characteristic:
    """One characteristic of model behaviour, compared between two models."""

    #: identifier: test function ``test_<name>``, fixture ``<name>``, JSON ``characteristic``
    name: str
    #: shown in tables and messages, e.g. "prediction errors"
    title: str
    #: ``compare(gate, pair, stage)``: a callable, or ``"module:function"`` imported on first use
    compare: CompareFunction | str
    #: default threshold on the figure (None: reported, never failing)
    default_threshold: float | None = 0.5
    #: the command-line flag for the threshold (built-in ones have their own; any
    #: characteristic can also be set with ``--threshold NAME=J``)
    threshold_flag: str | None = None
    #: what the threshold is on, for ``--help`` ("minimum error-set Jaccard")
    threshold_help: str = "minimum agreement"
    #: compared once per representation stage (before/after fine-tuning, or pre-trained encoder)
    staged: bool = False
    #: subset of :data:`NEEDS`
    needs: frozenset[str] = field(default_factory=frozenset)
    #: what to do when it fails
    fix: str = "read the evidence in the report; lower its threshold if the difference is acceptable"
    #: heading of its evidence table
    evidence_title: str = "Evidence"
    #: the fixture's docstring
    description: str = ""
    #: options of its own, each ``(flag, help, choices, default)``: added to the option table
    #: (with an ini twin) for built-in characteristics, read as ``settings.<flag as name>``
    options: tuple[tuple[str, str, tuple[str, ...], str], ...] = ()
    #: the data roles whose per-item outputs (vectors, logits) it reads, per stage when
    #: ``staged``: an executor computes them ahead as independent jobs (``--executor ray``)
    encodes: tuple[str, ...] = ()
    #: reads the attack's per-item outcomes: an executor runs them ahead in item shards
    attacks: bool = False
    #: on a QA task, reads the predicted answers to the test questions instead of ``encodes``
    answers: bool = False
    #: compares decoder LMs only: a run with no decoder LM does not collect it (a pair with
    #: an encoder in a run that has one is skipped with the reason)
    decoders_only: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"characteristic name {self.name!r} must be lower_case_with_underscores")
        unknown = set(self.needs) - set(NEEDS)
        if unknown:
            raise ValueError(f"characteristic {self.name!r} needs unknown {sorted(unknown)}; known: {NEEDS}")
        if self.default_threshold is not None and not 0.0 <= self.default_threshold <= 1.0:
            raise ValueError(f"characteristic {self.name!r}: default_threshold must be in [0, 1]")

    @property
    def compare_function(self) -> CompareFunction:
        if callable(self.compare):
            return self.compare
        module, _, function = self.compare.partition(":")
        return getattr(importlib.import_module(module), function)


_CHARACTERISTICS = "miniature.core.characteristics"

#: The built-in characteristics, in report order: the paper's four, then representation similarity.
BUILTIN: tuple[Characteristic, ...] = (
    Characteristic(
        "prediction_errors",
        "prediction errors",
        "miniature.core.characteristics.prediction_errors:compare_in_gate",
        threshold_flag="--threshold-errors",
        threshold_help="minimum error-set Jaccard",
        needs=frozenset({"task_head", "labels"}),
        encodes=("test",),
        answers=True,
        fix="the candidate errs on other items than the reference; read the negative flips in the "
        "report, compress with more task data, or lower --threshold-errors if this is acceptable",
        evidence_title="Items the models get wrong differently: negative flips (reference right, "
        "candidate wrong) first, then positive flips",
        description="Check that the candidate errs on the same items as the reference.",
    ),
    Characteristic(
        "data_representation",
        "data representation",
        "miniature.core.characteristics.representation:compare_in_gate",
        threshold_flag="--threshold-representation",
        threshold_help="minimum mean kNN Jaccard",
        staged=True,
        encodes=("test",),
        fix="the candidate arranges the data differently (other nearest neighbours); distil on the "
        "reference's representations, or lower --threshold-representation if only labels matter",
        evidence_title="Items whose nearest neighbours agree least (lowest kNN Jaccard), with each "
        "model's neighbours (shared ones marked)",
        description="Check that items keep their nearest neighbours under the candidate.",
    ),
    Characteristic(
        "data_distribution",
        "data distribution",
        "miniature.core.characteristics.distribution:compare_in_gate",
        threshold_flag="--threshold-distribution",
        threshold_help="minimum OOD-set Jaccard",
        encodes=("train", "holdout", "challenge"),
        fix="the candidate flags other items as out-of-distribution; check the items flagged by one "
        "model only in the report, or lower --threshold-distribution",
        evidence_title="Challenge items flagged out-of-distribution by one model only, furthest past "
        "that model's threshold first",
        description="Check that the candidate flags the same challenge items as out-of-distribution.",
    ),
    Characteristic(
        "adversarial_vulnerability",
        "adversarial vulnerability",
        "miniature.core.characteristics.adversarial:compare_in_gate",
        threshold_flag="--threshold-attack",
        threshold_help="minimum Jaccard of the sets of successfully attacked items",
        needs=frozenset({"task_head", "labels", "attack_model", "classification"}),
        attacks=True,
        fix="the candidate breaks under attack on other items or much more often; add adversarial "
        "training, or relax --threshold-attack / --attack-drop-tolerance",
        evidence_title="Adversarial examples: items broken by one model only first",
        description="Check that the candidate breaks under attack on the same items, no more often.",
    ),
    Characteristic(
        "representation_similarity",
        "representation similarity",
        "miniature.core.characteristics.similarity:compare_in_gate",
        default_threshold=0.9,
        threshold_flag="--threshold-similarity",
        threshold_help="minimum linear CKA between the two models' sentence vectors",
        staged=True,
        encodes=("test",),
        fix="the candidate's sentence vectors are not a linear image of the reference's (low CKA); "
        "distil on the reference's hidden states, or lower --threshold-similarity",
        evidence_title="Items that account for most of the dissimilarity (their share of 1 - CKA), "
        "with their mutual-kNN overlap",
        options=(
            (
                "--cka-estimator",
                "representation similarity's CKA: debiased (HSIC, about 0 when unrelated) or linear (plain)",
                ("debiased", "linear"),
                "debiased",
            ),
        ),
        description="Check that the candidate's representation is linearly similar to the reference's (CKA).",
    ),
    Characteristic(
        "token_distribution",
        "token distribution",
        "miniature.core.characteristics.token_distribution:compare_in_gate",
        default_threshold=0.9,
        threshold_flag="--threshold-token-top",
        threshold_help="minimum rate at which both decoder LMs put the same token first (llama.cpp's same top p)",
        fix="the candidate's next-token predictions differ from the reference's; read the KL divergence "
        "and the positions of largest divergence in the report, quantize less aggressively, or lower "
        "--threshold-token-top",
        evidence_title="Positions where the next-token distributions differ most (largest KL divergence)",
        decoders_only=True,
        description="Check that a decoder LM candidate predicts the same next tokens as the reference.",
    ),
)


class Registry:
    """The characteristics of one run, by name, in report order."""

    def __init__(self, characteristics: Iterable[Characteristic] = BUILTIN) -> None:
        self._by_name: dict[str, Characteristic] = {}
        for characteristic in characteristics:
            self.add(characteristic)

    def add(self, characteristic: Characteristic) -> None:
        if not isinstance(characteristic, Characteristic):
            raise TypeError(f"expected a miniature Characteristic, got {type(characteristic).__name__}")
        if characteristic.name in self._by_name:
            raise ValueError(
                f"characteristic {characteristic.name!r} is registered twice; fix: give yours another name"
            )
        self._by_name[characteristic.name] = characteristic

    def __getitem__(self, name: str) -> Characteristic:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no characteristic {name!r}; registered: {', '.join(self._by_name)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Characteristic]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    @property
    def names(self) -> list[str]:
        return list(self._by_name)


def for_models(registry: Registry, models: Iterable[str], *, decoders: bool | None = None) -> Registry:
    """``registry`` without the characteristics that compare decoder LMs only when none of
    ``models`` (what ``--reference`` / ``--candidate`` name) is one: an encoder gate collects,
    reports and plans exactly what it did before they existed. Reads config.json only;
    ``decoders`` True (``--task causal-lm``) keeps them."""
    if not any(c.decoders_only for c in registry) or decoders:
        return registry
    from miniature.core.models import local_is_decoder, resolve_model
    from miniature.errors import MiniatureError

    def decoder(reference: str) -> bool:
        try:
            return local_is_decoder(resolve_model(reference))
        except MiniatureError:  # located (and refused) by the caller
            return False

    if any(decoder(m) for m in models if m):
        return registry
    return Registry(c for c in registry if not c.decoders_only)


def title(name: str, characteristics: Sequence[Characteristic] = BUILTIN) -> str:
    """A characteristic's title by name (its name with spaces when it is not known here)."""
    return next((c.title for c in characteristics if c.name == name), name.replace("_", " "))


_ACTIVE = Registry()


def active() -> Registry:
    """The registry of the running gate (the built-ins until a run adds more)."""
    return _ACTIVE


def activate(registry: Registry) -> None:
    """Make ``registry`` the running gate's (the plugin does this once per pytest run)."""
    global _ACTIVE
    _ACTIVE = registry


def active_titles() -> dict[str, str]:
    """The running gate's characteristic titles by name, in report order."""
    return {c.name: c.title for c in _ACTIVE}


use_titles(active_titles)
