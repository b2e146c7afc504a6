"""What a characteristic measures, and the verdict the gate turns it into.

A characteristic returns a :class:`Measurement`: the headline figure (a Jaccard agreement),
the statistics around it (chance baseline, chance-corrected score, bootstrap CI), K, the
sweep, details and evidence. :func:`judge` alone adds the verdict (threshold, what it is on,
whether the pair gates) and makes the :class:`ComparisonResult` every report shows: plain
data, so it rides on pytest reports (``user_properties``) through pytest-xdist as JSON.

This module imports nothing of miniature's above it: the characteristics, the registry, the gate and
the reports all build on it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from types import UnionType
from typing import Any, Literal


ThresholdOn = Literal["raw", "corrected", "ci_lower"]
#: a check that produced a figure, one that did not apply, one that could not be computed
COMPUTED, SKIPPED, ERROR = "computed", "skipped", "error"
STATUSES: tuple[str, ...] = (COMPUTED, SKIPPED, ERROR)
#: what a threshold may be compared with: the raw figure, the chance-corrected one, the CI's lower bound
THRESHOLD_ON_CHOICES: tuple[str, ...] = ("raw", "corrected", "ci_lower")


def check_threshold_on(threshold_on: str) -> None:
    """Refuse a ``threshold_on`` that is not one of :data:`THRESHOLD_ON_CHOICES`."""
    if threshold_on not in THRESHOLD_ON_CHOICES:
        raise ValueError(f"threshold_on must be one of {', '.join(THRESHOLD_ON_CHOICES)}; got {threshold_on!r}")


def _no_titles() -> Mapping[str, str]:
    return {}


#: the running gate's characteristic titles by name, in report order; the registry installs
#: its lookup here (:func:`use_titles`), so results need not import the registry
_titles: Callable[[], Mapping[str, str]] = _no_titles


def use_titles(lookup: Callable[[], Mapping[str, str]]) -> None:
    """Where results read characteristic titles from (the registry calls this on import)."""
    global _titles
    _titles = lookup


class _Titles(Mapping[str, str]):
    """Titles of the running gate's characteristics by name, in report order (read each
    time, so characteristics a project registers are included)."""

    def __getitem__(self, name: str) -> str:
        return _titles()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_titles())

    def __len__(self) -> int:
        return len(_titles())


CHARACTERISTIC_TITLES: Mapping[str, str] = _Titles()


@dataclass(frozen=True)
class Pair:
    """Two models to compare; ``gating`` pairs (reference vs candidate) can fail the run."""

    reference: str
    candidate: str
    gating: bool

    @property
    def id(self) -> str:
        """The test id: the names made safe (see :func:`miniature.core.models.safe_id`)."""
        from miniature.core.models import safe_id

        return f"{safe_id(self.reference)}-vs-{safe_id(self.candidate)}"


@dataclass
class Measurement:
    """What a characteristic measured on one pair: everything but the verdict.

    ``conditions`` are further checks a characteristic makes against limits of its own
    options (the attack's accuracy drop within ``--attack-drop-tolerance``), each
    ``{"name", "value", "limit", "passed"}``; the threshold is the gate's to apply.
    """

    figure_name: str
    figure: float
    n: int
    chance: float | None = None
    corrected: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_level: float = 0.95
    k: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, float] = field(default_factory=dict)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    conditions: list[dict[str, Any]] = field(default_factory=list)


def judge(
    measurement: Measurement,
    *,
    characteristic: str,
    reference: str,
    candidate: str,
    threshold: float | None,
    threshold_on: str = "raw",
    gating: bool = True,
    stage: str | None = None,
) -> "ComparisonResult":
    """The one place a measurement becomes a verdict: the result of ``characteristic`` for
    the pair, judged against ``threshold`` on ``threshold_on`` (raw figure, chance-corrected
    score or the CI's lower bound)."""
    check_threshold_on(threshold_on)
    values = {item.name: getattr(measurement, item.name) for item in fields(Measurement)}
    return ComparisonResult(
        characteristic=characteristic,
        reference=reference,
        candidate=candidate,
        threshold=threshold,
        threshold_on=threshold_on,
        gating=gating,
        stage=stage,
        **values,
    )


def judged(measure: Callable[..., Measurement], characteristic: str) -> Callable[..., ComparisonResult]:
    """``measure`` as a comparison for use outside a gate run: ``compare(*arrays,
    reference=..., candidate=..., threshold=None, threshold_on="raw", gating=True, **options)``
    returns its measurement judged by :func:`judge` (the gate judges the same way)."""

    def compare(
        *args: Any,
        reference: str,
        candidate: str,
        threshold: float | None = None,
        threshold_on: str = "raw",
        gating: bool = True,
        **kwargs: Any,
    ) -> ComparisonResult:
        check_threshold_on(threshold_on)
        measured = measure(*args, reference=reference, candidate=candidate, **kwargs)
        return judge(
            measured,
            characteristic=characteristic,
            reference=reference,
            candidate=candidate,
            threshold=threshold,
            threshold_on=threshold_on,
            gating=gating,
            stage=kwargs.get("stage"),
        )

    compare.__name__ = compare.__qualname__ = measure.__name__.replace("measure_", "compare_", 1)
    compare.__doc__ = f":func:`{measure.__name__}` judged against ``threshold`` (see :func:`judged`)."
    return compare


@dataclass
class ComparisonResult:
    """One characteristic compared between two models."""

    characteristic: str
    reference: str
    candidate: str
    figure_name: str
    figure: float
    n: int
    threshold: float | None = None
    threshold_on: str = "raw"
    gating: bool = True
    chance: float | None = None
    corrected: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_level: float = 0.95
    k: int | None = None
    stage: str | None = None
    noise_floor: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, float] = field(default_factory=dict)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    #: further conditions beyond the threshold, each {"name", "value", "limit", "passed"}
    #: (e.g. the attack's "% accuracy drop within a tolerance of the reference's")
    conditions: list[dict[str, Any]] = field(default_factory=list)
    #: ``computed``, or ``skipped`` / ``error`` with the one-line ``reason`` (no figure then)
    status: str = COMPUTED
    reason: str | None = None

    @classmethod
    def not_computed(
        cls,
        characteristic: str,
        reference: str,
        candidate: str,
        *,
        status: str,
        reason: str,
        stage: str | None = None,
        gating: bool = True,
        threshold: float | None = None,
        threshold_on: str = "raw",
    ) -> "ComparisonResult":
        """A check that was skipped or errored: no figure, the reason instead."""
        if status not in (SKIPPED, ERROR):
            raise ValueError(f"status must be {SKIPPED!r} or {ERROR!r}, got {status!r}")
        return cls(
            characteristic=characteristic,
            reference=reference,
            candidate=candidate,
            figure_name="",
            figure=float("nan"),
            n=0,
            threshold=threshold,
            threshold_on=threshold_on,
            gating=gating,
            stage=stage,
            status=status,
            reason=reason,
        )

    @property
    def computed(self) -> bool:
        return self.status == COMPUTED

    @property
    def title(self) -> str:
        return CHARACTERISTIC_TITLES.get(self.characteristic, self.characteristic)

    @property
    def judged_value(self) -> float | None:
        """The number the threshold is compared with (raw, corrected or CI lower bound)."""
        if self.threshold_on == "corrected":
            return self.corrected
        if self.threshold_on == "ci_lower":
            return self.ci_low
        return self.figure

    @property
    def passed(self) -> bool:
        """True when there is no threshold or the judged value reaches it (a skipped check
        does not fail the gate; an errored one does)."""
        if self.status != COMPUTED:
            return self.status == SKIPPED
        if any(not condition["passed"] for condition in self.conditions):
            return False
        if self.threshold is None:
            return True
        value = self.judged_value
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        return value >= self.threshold

    @property
    def verdict(self) -> str:
        if self.status != COMPUTED:
            return self.status.upper()
        if self.passed:
            return "PASS"
        return "FAIL" if self.gating else "DIVERGES"

    def summary(self) -> str:
        """One line: figure, CI, chance, threshold, models, K and n (or why there is no figure)."""
        if self.status != COMPUTED:
            where = f"{self.reference} vs {self.candidate}" + (f", {self.stage}" if self.stage else "")
            return f"{self.title}: {self.status} — {self.reason} — {where}"
        parts = [f"{self.title}: {self.figure_name} {format_number(self.figure)}"]
        extra = []
        if self.ci_low is not None and self.ci_high is not None:
            extra.append(f"{self.ci_level:.0%} CI {format_number(self.ci_low)}–{format_number(self.ci_high)}")
        if self.chance is not None:
            extra.append(f"chance {format_number(self.chance)}")
        if self.corrected is not None:
            extra.append(f"corrected {format_number(self.corrected)}")
        if self.noise_floor is not None:
            extra.append(f"self-agreement {format_number(self.noise_floor)}")
        if extra:
            parts.append(f"({', '.join(extra)})")
        if self.threshold is not None:
            relation = ">=" if self.passed else "<"
            judged = "" if self.threshold_on == "raw" else f" [{self.threshold_on.replace('_', ' ')}]"
            parts.append(f"{relation} threshold {format_number(self.threshold)}{judged}")
        for condition in self.conditions:
            if not condition["passed"]:
                parts.append(
                    f"; {condition['name']} {format_number(condition['value'])} beyond limit "
                    f"{format_number(condition['limit'])}"
                )
        place = [f"{self.reference} vs {self.candidate}"]
        if self.stage:
            place.append(self.stage)
        if self.k is not None:
            place.append(f"K={self.k}")
        place.append(f"n={self.n}")
        return " ".join(parts) + " — " + ", ".join(place)

    def failure_message(self, fix: str) -> str:
        return f"{self.summary()}\n  fix: {fix}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=_json_default)

    @classmethod
    def from_json(cls, text: str) -> "ComparisonResult":
        return cls(**json.loads(text))


def format_number(value: float | None) -> str:
    """A figure as every report shows it: three decimals at most (trailing zeros dropped), two
    significant digits below 0.01, ``nan`` and ``n/a`` for missing figures."""
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if value != 0 and abs(value) < 0.01:
        return f"{value:.2g}"
    return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:.0f}"


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# -- what every report can hold ----------------------------------------------------------------
_JSON_TYPES: dict[Any, tuple[type, ...]] = {
    str: (str,),
    bool: (bool,),
    int: (int,),
    float: (int, float),
    dict: (dict,),
    list: (list,),
}
_CONDITION_KEYS = {
    "name": (str,),
    "value": (int, float, type(None)),
    "limit": (int, float, type(None)),
    "passed": (bool,),
}


def result_schema_problem(entry: Mapping[str, Any]) -> str | None:
    """What is wrong with one JSON result against :class:`ComparisonResult`'s fields (a
    missing required field, a value of the wrong type), worded to follow "result 3 ", or
    ``None``."""
    import typing

    hints = typing.get_type_hints(ComparisonResult)
    for item in fields(ComparisonResult):
        if item.name not in entry:
            required = item.default is MISSING and item.default_factory is MISSING
            if required:
                return f"is incomplete: field {item.name!r} is missing"
            continue
        value = entry[item.name]
        hint = hints[item.name]
        options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, UnionType) else (hint,)
        accepted: tuple[type, ...] = ()
        for option in options:
            accepted += (
                (type(None),) if option is type(None) else _JSON_TYPES.get(typing.get_origin(option) or option, ())
            )
        if not accepted:
            continue  # a type JSON cannot hold: not checked
        if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
            names = " or ".join(sorted({"null" if t is type(None) else t.__name__ for t in accepted}))
            return f"is malformed: field {item.name!r} is {json.dumps(value)[:40]}, not {names}"
    for condition in entry.get("conditions") or []:
        if not isinstance(condition, dict) or any(
            not isinstance(condition.get(key, ...), types) or (key != "passed" and isinstance(condition.get(key), bool))
            for key, types in _CONDITION_KEYS.items()
        ):
            return (
                f"is malformed: field 'conditions' holds {json.dumps(condition)[:60]}, not an object with "
                "name, value, limit and passed (true/false)"
            )
    return None


#: result fields that hold a fraction in [0, 1] (NaN: no figure) or null
_FRACTION_FIELDS = ("figure", "threshold", "chance", "ci_low", "ci_high", "noise_floor")


def result_value_problem(entry: Mapping[str, Any]) -> str | None:
    """What is wrong with the values of one JSON result whose types are right (an unknown
    status, an infinite or out-of-range figure, a negative count), worded as
    :func:`result_schema_problem`, or ``None``."""

    def bad(name: str, what: str) -> str:
        return f"is malformed: field {name!r} is {json.dumps(entry[name])[:40]}, not {what}"

    if entry.get("status", STATUSES[0]) not in STATUSES:
        return bad("status", " or ".join(STATUSES))
    if entry.get("threshold_on", THRESHOLD_ON_CHOICES[0]) not in THRESHOLD_ON_CHOICES:
        return bad("threshold_on", " or ".join(THRESHOLD_ON_CHOICES))
    for name in _FRACTION_FIELDS:
        value = entry.get(name)
        if value is not None and not (0 <= value <= 1 or (math.isnan(value) and name != "threshold")):
            return bad(name, "a number in [0, 1]" + ("" if name == "threshold" else " (or NaN: no figure)"))
    corrected = entry.get("corrected")
    if corrected is not None and not (corrected <= 1 and not math.isinf(corrected) or math.isnan(corrected)):
        return bad("corrected", "a finite number up to 1")
    if entry["n"] < 0:
        return bad("n", "a count >= 0")
    return None
