"""The shared engine behind every check: which pairs and stages to compare, and comparing them.

A :class:`Gate` is built once per pytest process from the resolved options. It is made of
three parts: :class:`~miniature.core.loading.ModelLoading` (resolving, fine-tuning and
loading the models, once each), :class:`~miniature.core.outputs.PerItemOutputs` (the data
and each model's per-item outputs through the :class:`~miniature.core.cache.OutputCache`),
and this module's comparing of pairs: each characteristic of the registry compares a pair
from those outputs, memoised. The characteristic modules do the arithmetic.
"""

from __future__ import annotations

import traceback
import warnings
from dataclasses import dataclass
from typing import Any

from miniature.core import settings as opt
from miniature.core.cache import OutputCache
from miniature.core.characteristics.base import ERROR, SKIPPED, ComparisonResult
from miniature.core.data import TaskData
from miniature.core.loading import AFTER, BEFORE, ENCODER, ModelLoading
from miniature.core.models import ModelSpec, ModelWrapper, locate, resolve_model, safe_id
from miniature.core.outputs import PerItemOutputs
from miniature.core.registry import Characteristic, Registry, active
from miniature.errors import DataWarning, MiniatureError, ModelReferenceError, NotApplicable

__all__ = ["AFTER", "BEFORE", "ENCODER", "Gate", "Pair", "WIDE_INTERVAL_ITEMS", "not_computed", "threshold_for"]

#: Below this many items a figure's 95% interval is wide: a DataWarning says so.
WIDE_INTERVAL_ITEMS = 30


@dataclass(frozen=True)
class Pair:
    """Two models to compare; ``gating`` pairs (reference vs candidate) can fail the run."""

    reference: str
    candidate: str
    gating: bool

    @property
    def id(self) -> str:
        """The test id: the names made safe (see :func:`miniature.core.models.safe_id`)."""
        return f"{safe_id(self.reference)}-vs-{safe_id(self.candidate)}"


def threshold_for(settings: opt.Settings, spec: Characteristic) -> float | None:
    """``--threshold NAME=J``, else the characteristic's own flag, else its default."""
    if spec.name in settings.thresholds:
        return settings.thresholds[spec.name]
    if spec.threshold_flag in opt.BY_FLAG:
        return settings[spec.threshold_flag]
    return spec.default_threshold


def not_computed(settings: opt.Settings, spec: Characteristic, pair: Pair, stage: str | None, *,
                 status: str, reason: str) -> ComparisonResult:
    """The result of a check that was skipped or errored, with the threshold it would have met."""
    return ComparisonResult.not_computed(
        spec.name, pair.reference, pair.candidate, status=status, reason=reason, stage=stage,
        gating=pair.gating, threshold_on=settings[opt.THRESHOLD_ON], threshold=threshold_for(settings, spec))


class Gate(ModelLoading, PerItemOutputs):
    """Everything one gate run computes, shared by all checks of a process."""

    def __init__(self, settings: opt.Settings, *, data: TaskData | None = None,
                 registry: Registry | None = None) -> None:
        self.settings = settings
        #: the characteristics this gate compares (the running one's by default)
        self.registry = registry if registry is not None else active()
        if not settings.reference:
            raise MiniatureError(f"no reference model; fix: pass {opt.REFERENCE} MODEL")
        try:
            opt.check_combinations(settings.values)
        except ValueError as error:
            raise MiniatureError(str(error)) from None
        cache_root = None if settings[opt.NO_CACHE] else settings[opt.CACHE_DIR]
        self.cache = OutputCache(cache_root, refresh=settings[opt.REFRESH])
        self.specs: dict[str, ModelSpec] = {}
        self.names: list[str] = []
        self.reference = self._add(settings.reference)
        self.candidates = [self._add(c) for c in settings.candidates]
        self.base_specs: dict[str, ModelSpec] = {}
        bases = [settings[opt.REFERENCE_BASE]] + list(settings[opt.CANDIDATE_BASE] or [])
        for name, base in zip(self.names, bases):
            if base:
                self.base_specs[name] = locate(resolve_model(base))
        #: why the attack model cannot be loaded (the attack is then skipped), found before any work
        self.attack_problem: str | None = None
        self.attack_spec: ModelSpec | None = None
        if self.task == "classification":
            try:
                self.attack_spec = locate(resolve_model(settings[opt.ATTACK_MODEL]))
            except ModelReferenceError as error:
                self.attack_problem = f"attack model: {error}"
        self._data = data
        self._wrappers: dict[tuple[str, str], ModelWrapper] = {}
        self._results: dict[tuple[str, str, str, str | None], ComparisonResult] = {}
        self._file_fingerprints: dict[str, str] = {}
        self._attacks: dict[str, list[dict[str, Any]]] = {}
        self._finetuned: dict[str, ModelSpec] = {}
        #: items per saved chunk of outputs: an interrupted run resumes at the last chunk
        self.chunk_size = 1024
        self._label_maps: dict[str, Any] = {}
        self._missing_head: dict[str, list[str] | None] = {}
        self._decoders: dict[str, bool] = {}
        #: the characteristics this run compares (the plugin narrows it to the collected checks);
        #: the executor computes their per-item outputs ahead of the first comparison
        self.selected: list[str] | None = None
        #: what ran where (``--executor``), once :meth:`prepare` ran; the JSON report's ``execution``
        self.execution: dict[str, Any] | None = None
        self._prepare_error: MiniatureError | None = None
        self.noise_model: str | None = None
        if settings[opt.NOISE_FLOOR]:
            # the reference once more: re-fine-tuned with another seed, or simply reloaded
            self.noise_model = f"{self.reference}~copy"
            self.specs[self.noise_model] = self.specs[self.reference]

    # -- models ----------------------------------------------------------------------------

    def pairs(self) -> list[Pair]:
        """Reference vs each candidate (gating), then candidates with each other (reported)."""
        gating_all = bool(self.settings[opt.GATE_ALL_PAIRS])
        pairs = [Pair(self.reference, c, True) for c in self.candidates]
        for i, first in enumerate(self.candidates):
            for second in self.candidates[i + 1:]:
                pairs.append(Pair(first, second, gating_all))
        return pairs

    def stages(self) -> list[str | None]:
        """Representation stages: before/after fine-tuning when base checkpoints are known;
        ``ENCODER`` when no model has its task head (None: the task checkpoints)."""
        if self.settings[opt.FINETUNE] or (self.base_specs and len(self.base_specs) == len(self.names)):
            return [BEFORE, AFTER]
        if all(self.missing_head(name) for name in self.names):
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

    def compare(self, characteristic: str, pair: Pair, *, stage: str | None = None) -> ComparisonResult:
        """The memoised comparison of one characteristic for one pair (and stage)."""
        key = (characteristic, pair.reference, pair.candidate, stage)
        if key not in self._results:
            self.prepare()
            compare = self.registry[characteristic].compare_function
            try:
                result = compare(self, pair, stage)
                check_reportable(result)
                if self.noise_model is not None:
                    try:
                        floor = compare(self, Pair(self.reference, self.noise_model, False), stage)
                        result.noise_floor = floor.figure
                    except NotApplicable:  # the reference against itself has no figure: no floor
                        result.noise_floor = None
            except ValueError as error:  # the numeric layer's input checks
                raise MiniatureError(f"{characteristic.replace('_', ' ')}, {pair.reference} vs "
                                     f"{pair.candidate}: {error}") from None
            if result.n < WIDE_INTERVAL_ITEMS:
                more = ("raise --attack-size" if characteristic == "adversarial_vulnerability"
                        else "pass more data")
                warnings.warn(DataWarning(
                    f"{characteristic.replace('_', ' ')}, {pair.reference} vs {pair.candidate}: "
                    f"computed on only n={result.n} items (fewer than {WIDE_INTERVAL_ITEMS}), so "
                    f"its 95% interval is wide; read the figure with care, or {more}"), stacklevel=2)
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
            result = not_computed(self.settings, spec, pair, stage, status=ERROR,
                                  reason=crash_reason(spec, pair, error))
            result.details["traceback"] = traceback.format_exc()
            return result

    def common(self, characteristic: str, pair: Pair) -> dict[str, Any]:
        """The arguments every characteristic's comparison takes from the run's settings."""
        return dict(reference=pair.reference, candidate=pair.candidate,
                    threshold=self.threshold(characteristic),
                    threshold_on=self.settings[opt.THRESHOLD_ON], gating=pair.gating,
                    n_bootstrap=self.settings[opt.BOOTSTRAP], seed=self.settings[opt.SEED])

    def require_heads(self, pair: Pair) -> None:
        """Raise NotApplicable when either model of ``pair`` lacks a usable task head."""
        for name in (pair.reference, pair.candidate):
            problem = self.head_problem(name)
            if problem:
                raise NotApplicable(problem)


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
