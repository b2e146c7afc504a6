"""The gate from Python: ``miniature.compare(reference, candidates, **options)``.

The same gate as ``pytest --reference ... --candidate ...``, run in this process: the same
options (as keyword arguments, ``data_limit=60`` for ``--data-limit``), parsed by the same
parsers, the same pairs, stages and characteristics, the same cache. It returns a
:class:`Report` of every check's result. Nothing heavy is imported until :func:`compare` runs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miniature.core import settings as opt
from miniature.errors import MiniatureError

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from miniature.core.characteristics.base import ComparisonResult
    from miniature.core.registry import Characteristic

__all__ = ["OptionError", "Report", "compare", "settings_from_keywords"]


class OptionError(MiniatureError, ValueError):
    """A bad option value given to :func:`compare`: the command line's one-line message."""


def _flag(keyword: str) -> str:
    return "--" + keyword.replace("_", "-")


def _words(option: opt.Option, value: Any) -> list[str]:
    """A Python value as the command-line word(s) the option's parser reads."""
    if option.multiple:
        if isinstance(value, Mapping):  # threshold={"name": 0.5}
            return [f"{name}={number}" for name, number in value.items()]
        values = [value] if isinstance(value, (str, Path)) or not isinstance(value, Iterable) else list(value)
        return [str(v) for v in values]
    if isinstance(value, (list, tuple)):  # k_sweep=(1, 5, 10)
        return [",".join(str(v) for v in value)]
    return [str(value)]


def settings_from_keywords(**options: Any) -> opt.Settings:
    """:class:`~miniature.core.settings.Settings` from keyword arguments, each value parsed
    as the command line parses it; a bad one raises :class:`OptionError` with the command
    line's message (``argument --data-limit: 0 is below the minimum 1``)."""
    values: dict[str, Any] = {o.flag: ([] if o.multiple else o.default) for o in opt.OPTIONS}
    for keyword, value in options.items():
        flag = _flag(keyword)
        if flag not in opt.BY_FLAG:
            known = ", ".join(opt.attribute(o.flag) for o in opt.OPTIONS)
            raise OptionError(f"unknown option {keyword}= (no {flag}); known: {known}")
        option = opt.BY_FLAG[flag]
        if value is None:
            continue
        parse = opt.boolean if option.switch else option.parse
        try:
            parsed = [parse(word) for word in _words(option, value)]
        except argparse.ArgumentTypeError as error:
            raise OptionError(f"argument {flag}: {error}") from None
        values[flag] = parsed if option.multiple else parsed[0]
    try:
        opt.check_combinations(values)
    except ValueError as error:
        raise OptionError(str(error)) from None
    return opt.Settings.from_flags(values)


def compare(
    reference: str | Path,
    candidates: str | Path | Sequence[str | Path],
    *,
    characteristics: Sequence["Characteristic"] = (),
    **options: Any,
) -> "Report":
    """Run the gate on ``reference`` against each of ``candidates`` and return its :class:`Report`.

    ``options`` are the command line's, by keyword (``test_data="test.jsonl"``,
    ``data_limit=60``, ``threshold={"data_representation": 0.4}``); ``characteristics``
    adds a project's own, as ``pytest_miniature_characteristics`` does. Reports are written
    only when asked (:meth:`Report.save_html`, :meth:`Report.to_json`); outputs are cached in
    ``cache_dir`` as in a pytest run, so a second call costs no forward pass.
    """
    from miniature.core.gate import Gate
    from miniature.core.models import check_device
    from miniature.core.registry import BUILTIN, Registry, activate, for_models

    started = time.time()
    if isinstance(candidates, (str, Path)):
        candidates = [candidates]
    settings = settings_from_keywords(reference=reference, candidate=list(candidates), **options)
    registry = Registry(BUILTIN)
    try:
        for characteristic in characteristics:
            registry.add(characteristic)
    except (TypeError, ValueError) as error:
        raise OptionError(f"characteristics: {error}") from None
    unknown = [name for name in settings.thresholds if name not in registry]
    if unknown:
        raise OptionError(
            f"{opt.THRESHOLDS} {unknown[0]}=...: no such characteristic; registered: {', '.join(registry.names)}"
        )
    check_device(settings.device)
    registry = for_models(registry, [str(settings.reference), *settings.candidates])
    activate(registry)
    gate = Gate(settings, registry=registry)
    gate.selected = registry.names
    # the plugin's selection: every pair of the gate x every characteristic x (for staged ones) every stage
    results = []
    for characteristic in registry:
        for pair in gate.pairs():
            for stage in gate.stages() if characteristic.staged else [None]:
                results.append(gate.outcome(characteristic.name, pair, stage=stage))
    return Report(
        results, settings, duration_s=time.time() - started, execution=gate.execution, models=gate.models.table()
    )


class Report:
    """One gate run's results: ``results`` (one
    :class:`~miniature.core.characteristics.base.ComparisonResult` per pair, characteristic
    and stage), ``passed``, and the views of them (a data frame, the JSON, the summary page,
    Table 2 in a notebook)."""

    def __init__(
        self,
        results: Sequence["ComparisonResult"],
        settings: opt.Settings,
        *,
        duration_s: float | None = None,
        execution: Mapping[str, Any] | None = None,
        models: Mapping[str, Any] | None = None,
    ) -> None:
        self.results = list(results)
        self.settings = settings
        self.duration_s = duration_s
        self.execution = execution
        #: the model table the run resolved (names, order, architecture, quantization)
        self.models = models

    @property
    def passed(self) -> bool:
        """Whether the gate passes, as the pytest run's exit status says: no check errored and
        no gating pair is below its threshold (skipped checks and reported-only pairs do not fail)."""
        from miniature.core.characteristics.base import ERROR

        return not any(r.status == ERROR or (r.gating and not r.passed) for r in self.results)

    def result(
        self, characteristic: str, reference: str, candidate: str, stage: str | None = None
    ) -> "ComparisonResult":
        """The result of one check, by characteristic, model names (as the report names them) and stage."""
        for r in self.results:
            if (r.characteristic, r.reference, r.candidate, r.stage) == (characteristic, reference, candidate, stage):
                return r
        raise KeyError(
            f"no result for {characteristic} {reference} vs {candidate} (stage {stage}); "
            f"have: {sorted({(r.characteristic, r.reference, r.candidate, r.stage) for r in self.results}, key=str)}"
        )

    def payload(self) -> dict[str, Any]:
        """The JSON report as a dict (the same as a pytest run's ``latest.json``)."""
        from miniature.reports.payload import report_payload

        return report_payload(
            self.results, self.settings, duration_s=self.duration_s, execution=self.execution, models=self.models
        )

    def to_json(self, path: str | Path | None = None) -> str:
        """The JSON report's text; written to ``path`` too when given."""
        import json

        text = json.dumps(self.payload(), indent=2, sort_keys=True, default=str)
        if path is not None:
            from miniature.core.cache import atomic_write_text

            atomic_write_text(Path(path), text)
        return text

    def save_html(self, path: str | Path) -> Path:
        """Write the summary page (Tables 2 and 3, Figure 1, evidence, the run) to ``path``."""
        import json

        from miniature.core.cache import atomic_write_text
        from miniature.reports.page import render_summary_page

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, render_summary_page(json.loads(self.to_json())))
        return path

    def to_pandas(self) -> "pandas.DataFrame":
        """One row per check (pair x characteristic x stage): models, verdict, figure and its statistics."""
        import pandas

        rows = [
            {
                "reference": r.reference,
                "candidate": r.candidate,
                "characteristic": r.characteristic,
                "stage": r.stage,
                "gating": r.gating,
                "status": r.status,
                "verdict": r.verdict,
                "passed": r.passed,
                "figure_name": r.figure_name,
                "figure": r.figure if r.computed else None,
                "threshold": r.threshold,
                "threshold_on": r.threshold_on,
                "chance": r.chance,
                "corrected": r.corrected,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "n": r.n if r.computed else None,
                "k": r.k,
                "reason": r.reason,
            }
            for r in self.results
        ]
        return pandas.DataFrame(rows)

    def _repr_html_(self) -> str:
        """Table 2 (pairs x characteristics), as on the summary page, for Jupyter; all text escaped."""
        from miniature.reports.page import matrix_view, template_module
        from miniature.reports.payload import model_order

        view = matrix_view(self.results, model_order(self.settings, self.models))
        return str(template_module("matrix.html.j2").notebook_matrix(view, self.passed))

    def __repr__(self) -> str:
        verdicts: dict[str, int] = {}
        for r in self.results:
            verdicts[r.verdict] = verdicts.get(r.verdict, 0) + 1
        counts = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
        return f"<miniature Report: {'PASSED' if self.passed else 'FAILED'}, {len(self.results)} checks ({counts})>"
