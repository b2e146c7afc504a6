"""The shared engine behind every check: which pairs and stages to compare, comparing them,
and the verdict.

A :class:`Gate` is built once per pytest process from the resolved options, out of parts
each built and tested alone: the run's data (:class:`~miniature.core.run_data.RunData`),
its models (:class:`~miniature.core.loading.ModelStore`), their per-item outputs
(:class:`~miniature.core.outputs.OutputStore`) and the attack
(:class:`~miniature.core.attack.runner.AttackRunner`). The gate does pairs, stages,
planning and comparing: each characteristic of the registry measures a pair through the
gate's narrow view (:class:`~miniature.core.characteristics.view.GateView`), and
:meth:`Gate.compare` alone turns the measurement into a verdict with the threshold.
"""

from __future__ import annotations

import traceback
import warnings
from typing import Any

import numpy as np

from miniature.core import settings as opt
from miniature.core.attack.runner import AttackRunner
from miniature.core.cache import OutputCache
from miniature.core.characteristics.base import (
    ERROR,
    SKIPPED,
    ComparisonResult,
    Measurement,
    Pair,
    check_threshold_on,
    judge,
)
from miniature.core.data import TaskData
from miniature.core.loading import AFTER, BEFORE, ENCODER, ModelStore
from miniature.core.models import ModelWrapper
from miniature.core.outputs import OutputStore
from miniature.core.registry import Characteristic, Registry, active
from miniature.core.run_data import RunData
from miniature.errors import DataWarning, MiniatureError, NotApplicable

__all__ = ["AFTER", "BEFORE", "ENCODER", "Gate", "Pair", "WIDE_INTERVAL_ITEMS", "not_computed", "threshold_for"]

#: Below this many items a figure's 95% interval is wide: a DataWarning says so.
WIDE_INTERVAL_ITEMS = 30


def threshold_for(settings: opt.Settings, spec: Characteristic) -> float | None:
    """``--threshold NAME=J``, else the characteristic's own flag, else its default."""
    if spec.name in settings.thresholds:
        return settings.thresholds[spec.name]
    if spec.threshold_flag in opt.BY_FLAG:
        return settings[spec.threshold_flag]
    return spec.default_threshold


def not_computed(
    settings: opt.Settings, spec: Characteristic, pair: Pair, stage: str | None, *, status: str, reason: str
) -> ComparisonResult:
    """The result of a check that was skipped or errored, with the threshold it would have met."""
    return ComparisonResult.not_computed(
        spec.name,
        pair.reference,
        pair.candidate,
        status=status,
        reason=reason,
        stage=stage,
        gating=pair.gating,
        threshold_on=settings.threshold_on,
        threshold=threshold_for(settings, spec),
    )


def verdict(
    settings: opt.Settings,
    spec: Characteristic,
    pair: Pair,
    stage: str | None,
    measured: Measurement | ComparisonResult,
) -> ComparisonResult:
    """The one place a characteristic's measurement becomes its result: the run's threshold
    for it, what the threshold is on, and whether the pair gates (a ComparisonResult a
    project's characteristic returns is judged the same way: its own verdict fields are
    replaced)."""
    threshold_on = settings.threshold_on
    check_threshold_on(threshold_on)
    if isinstance(measured, ComparisonResult):
        measured.threshold = threshold_for(settings, spec)
        measured.threshold_on, measured.gating = threshold_on, pair.gating
        return measured
    if not isinstance(measured, Measurement):
        raise TypeError(
            f"its compare function returned {type(measured).__name__}, not a Measurement (nor a ComparisonResult)"
        )
    return judge(
        measured,
        characteristic=spec.name,
        reference=pair.reference,
        candidate=pair.candidate,
        threshold=threshold_for(settings, spec),
        threshold_on=threshold_on,
        gating=pair.gating,
        stage=stage,
    )


class Gate:
    """Everything one gate run computes, shared by all checks of a process."""

    def __init__(
        self, settings: opt.Settings, *, data: TaskData | None = None, registry: Registry | None = None
    ) -> None:
        self.settings = settings
        #: the characteristics this gate compares (the running one's by default)
        self.registry = registry if registry is not None else active()
        if not settings.reference:
            raise MiniatureError(f"no reference model; fix: pass {opt.REFERENCE} MODEL")
        try:
            opt.check_combinations(settings.values)
        except ValueError as error:
            raise MiniatureError(str(error)) from None
        cache_root = None if settings.no_cache else settings.cache_dir
        self.cache = OutputCache(cache_root, refresh=settings.refresh)
        self.run_data = RunData(settings, data)
        self.models = ModelStore(settings, self.cache, self.run_data)
        self.per_item = OutputStore(settings, self.models, self.cache)
        self.attacks = AttackRunner(self.models)
        self._results: dict[tuple[str, str, str, str | None], ComparisonResult] = {}
        #: the characteristics this run compares (the plugin narrows it to the collected checks);
        #: the executor computes their per-item outputs ahead of the first comparison
        self.selected: list[str] | None = None
        #: what ran where (``--executor``), once :meth:`prepare` ran; the JSON report's ``execution``
        self.execution: dict[str, Any] | None = None
        self._prepare_error: MiniatureError | None = None

    # -- the view characteristics see (GateView) -------------------------------------------

    @property
    def data(self) -> TaskData:
        return self.run_data.sets

    @property
    def task(self) -> str:
        return self.models.task

    @property
    def names(self) -> list[str]:
        """Report names of the reference and candidates, in the order given."""
        return self.models.names

    @property
    def reference(self) -> str:
        return self.models.reference

    @property
    def candidates(self) -> list[str]:
        return self.models.candidates

    @property
    def noise_model(self) -> str | None:
        return self.models.noise_model

    @property
    def chunk_size(self) -> int:
        """Items per saved chunk of outputs (an interrupted run resumes at the last chunk)."""
        return self.per_item.chunk_size

    @chunk_size.setter
    def chunk_size(self, value: int) -> None:
        self.per_item.chunk_size = value

    def outputs(self, name: str, role: str, *, stage: str | None = None) -> dict[str, np.ndarray]:
        return self.per_item.outputs(name, role, stage=stage)

    def correct(self, name: str) -> np.ndarray:
        return self.per_item.correct(name)

    def predicted(self, name: str) -> np.ndarray:
        return self.per_item.predicted(name)

    def attack_outcomes(self, name: str) -> list[dict[str, Any]]:
        return self.attacks.outcomes(name)

    def attack_items(self, name: str) -> int:
        return self.attacks.items(name)

    def attack_shard(self, name: str, start: int, stop: int) -> list[dict[str, Any]]:
        return self.attacks.shard(name, start, stop)

    def wrapper(self, name: str, *, stage: str | None = None) -> ModelWrapper:
        return self.models.wrapper(name, stage=stage)

    def label_translation(self, name: str) -> np.ndarray | None:
        return self.models.label_translation(name)

    def is_decoder(self, name: str) -> bool:
        return self.models.is_decoder(name)

    def head_problem(self, name: str) -> str | None:
        return self.models.head_problem(name)

    def spec(self, name: str, stage: str | None = None) -> Any:
        return self.models.spec(name, stage)

    def token_texts(self) -> tuple[list[str], str]:
        return self.run_data.token_texts()

    def model_fingerprint(self, name: str, stage: str | None) -> str:
        return self.models.model_fingerprint(name, stage)

    def answer_signature(self, name: str) -> tuple[Any, ...]:
        return self.models.decoder_signature(name)

    def require_heads(self, pair: Pair) -> None:
        """Raise NotApplicable when either model of ``pair`` lacks a usable task head."""
        for name in (pair.reference, pair.candidate):
            problem = self.models.head_problem(name)
            if problem:
                raise NotApplicable(problem)

    # -- pairs, stages, planning, comparing -------------------------------------------------

    def pairs(self) -> list[Pair]:
        """Reference vs each candidate (gating), then candidates with each other (reported)."""
        gating_all = bool(self.settings.gate_all_pairs)
        pairs = [Pair(self.reference, c, True) for c in self.candidates]
        for i, first in enumerate(self.candidates):
            for second in self.candidates[i + 1 :]:
                pairs.append(Pair(first, second, gating_all))
        return pairs

    def stages(self) -> list[str | None]:
        """Representation stages: before/after fine-tuning when base checkpoints are known;
        ``ENCODER`` when no model has its task head (None: the task checkpoints)."""
        models = self.models
        if self.settings.finetune or (models.base_specs and len(models.base_specs) == len(self.names)):
            return [BEFORE, AFTER]
        if all(models.missing_head(name) for name in self.names):
            return [ENCODER]
        return [None]

    def threshold(self, characteristic: str) -> float | None:
        """``--threshold NAME=J``, else the characteristic's own flag, else its default."""
        return threshold_for(self.settings, self.registry[characteristic])

    def prepare(self) -> dict[str, Any]:
        """Run the per-item work of the selected characteristics on the ``--executor`` (once;
        in-process: nothing ahead, each output is computed when first asked for). Returns
        what ran where, as the report records it."""
        if self.execution is None:
            from miniature.core.executors import run_jobs

            if self._prepare_error is not None:
                raise self._prepare_error
            try:
                execution = run_jobs(self, self.selected)
            except MiniatureError as error:  # every comparison reports it; Ray is not retried each time
                self._prepare_error = error
                raise
            if execution.executor != "inprocess":
                self.cache.refresh = False  # the workers refreshed the outputs; read what they wrote
            self.execution = execution.to_json()
        return self.execution

    def measure(self, characteristic: str, pair: Pair, stage: str | None = None) -> Measurement | ComparisonResult:
        """What ``characteristic`` measures on ``pair`` (its compare function, no verdict)."""
        return self.registry[characteristic].compare_function(self, pair, stage)

    def compare(self, characteristic: str, pair: Pair, *, stage: str | None = None) -> ComparisonResult:
        """The memoised, judged comparison of one characteristic for one pair (and stage)."""
        key = (characteristic, pair.reference, pair.candidate, stage)
        if key not in self._results:
            self.prepare()
            spec = self.registry[characteristic]
            try:
                result = verdict(self.settings, spec, pair, stage, self.measure(characteristic, pair, stage))
                check_reportable(result)
                if self.noise_model is not None:
                    try:
                        floor = self.measure(characteristic, Pair(self.reference, self.noise_model, False), stage)
                        result.noise_floor = floor.figure
                    except NotApplicable:  # the reference against itself has no figure: no floor
                        result.noise_floor = None
            except ValueError as error:  # the numeric layer's input checks
                raise MiniatureError(
                    f"{characteristic.replace('_', ' ')}, {pair.reference} vs {pair.candidate}: {error}"
                ) from None
            if result.n < WIDE_INTERVAL_ITEMS:
                more = "raise --attack-size" if characteristic == "adversarial_vulnerability" else "pass more data"
                warnings.warn(
                    DataWarning(
                        f"{characteristic.replace('_', ' ')}, {pair.reference} vs {pair.candidate}: "
                        f"computed on only n={result.n} items (fewer than {WIDE_INTERVAL_ITEMS}), so "
                        f"its 95% interval is wide; read the figure with care, or {more}"
                    ),
                    stacklevel=2,
                )
            self._results[key] = result
        return self._results[key]

    def outcome(self, characteristic: str, pair: Pair, *, stage: str | None = None) -> ComparisonResult:
        """:meth:`compare`, never raising: a check that does not apply is a *skipped* result;
        one that cannot be computed is an *error* result with the reason — a MiniatureError,
        or any other exception (a full disk, a bug in a project's characteristic), whose
        traceback then rides in ``details["traceback"]``."""
        spec = self.registry[characteristic]
        try:
            return self.compare(characteristic, pair, stage=stage)
        except NotApplicable as error:
            return not_computed(self.settings, spec, pair, stage, status=SKIPPED, reason=str(error))
        except MiniatureError as error:
            return not_computed(self.settings, spec, pair, stage, status=ERROR, reason=str(error))
        except Exception as error:  # noqa: BLE001 - every failure of a check is a result, never a gap
            result = not_computed(
                self.settings, spec, pair, stage, status=ERROR, reason=crash_reason(spec, pair, error)
            )
            result.details["traceback"] = traceback.format_exc()
            return result


def check_reportable(result: Any) -> None:
    """Raise TypeError unless ``result`` is a ComparisonResult every report can hold (a
    project's compare function that returns something else, or a figure that is not a
    number in [0, 1], is its check's error, not a crash of the terminal table or the JSON)."""
    import json

    from miniature.core.characteristics.base import result_schema_problem, result_value_problem

    if not isinstance(result, ComparisonResult):
        raise TypeError(f"its compare function returned {type(result).__name__}, not a ComparisonResult")
    try:
        entry = json.loads(result.to_json())
        problem = result_schema_problem(entry) or result_value_problem(entry)
    except (TypeError, ValueError) as error:
        problem = str(error)
    if problem:
        raise TypeError(f"its result cannot be reported: {problem}")


def crash_reason(spec: Characteristic, pair: Pair, error: BaseException) -> str:
    """One line for an exception no check expected: what crashed, where, and the fix an
    operating-system error suggests."""
    where = f"{spec.title}, {pair.reference} vs {pair.candidate}"
    line = f"{where}: crashed with {type(error).__name__}: {error}"
    if isinstance(error, OSError):
        return f"{line}; fix: free disk space or pass a writable {opt.CACHE_DIR} / {opt.REPORT_DIR}"
    return f"{line} (the traceback is in the report's details)"
