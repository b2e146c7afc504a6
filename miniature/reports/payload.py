"""Reports of a gate run: the terminal table and the JSON every figure lands in.

The JSON payload is the single source of truth: the summary page
(:func:`miniature.reports.page.render_summary_page`) is rendered from it, both are written
by :func:`miniature.reports.write.write_reports`, and ``--compare-to``
reads a previous run's payload back (:func:`load_report`) to show what changed.
Each payload result rebuilds with ``ComparisonResult(**d)``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from miniature.core.characteristics.base import (
    CHARACTERISTIC_TITLES,
    ComparisonResult,
    format_number,
    result_schema_problem,
    result_value_problem,
)
from miniature.errors import MiniatureError

REPORT_SCHEMA = 1

#: (reference, candidate, characteristic, stage): what a result is about
ResultKey = tuple[str, str, str, "str | None"]
#: (characteristic, stage): one column of the pairs × characteristics table
Column = tuple[str, "str | None"]

DATA_ROLES = (
    ("train", "--train-data"),
    ("holdout", "--holdout-data"),
    ("test", "--test-data"),
    ("challenge", "--challenge-data"),
)
BUILTIN_DATA = "built-in synthetic sentiment data"


class ReportError(MiniatureError):
    """A previous report (``--compare-to``) that is missing or not a miniature JSON report."""


# -- ordering --------------------------------------------------------------------------------
def result_key(result: ComparisonResult) -> ResultKey:
    return (result.reference, result.candidate, result.characteristic, result.stage)


def columns_of(results: Sequence[ComparisonResult]) -> list[Column]:
    """The (characteristic, stage) columns present, in the paper's order."""
    order = list(CHARACTERISTIC_TITLES)
    stage_order = {None: 0, "before fine-tuning": 1, "after fine-tuning": 2}
    found = {(r.characteristic, r.stage) for r in results}
    return sorted(
        found,
        key=lambda c: (order.index(c[0]) if c[0] in order else len(order), c[0], stage_order.get(c[1], 3), c[1] or ""),
    )


def column_title(column: Column, *, short: bool = False) -> str:
    """``data representation (before fine-tuning)``; ``short``: ``(before FT)`` for the terminal."""
    characteristic, stage = column
    if stage and short:
        stage = stage.replace("fine-tuning", "FT")
    return CHARACTERISTIC_TITLES.get(characteristic, characteristic) + (f" ({stage})" if stage else "")


def pairs_of(results: Sequence[ComparisonResult], model_order: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Model pairs as in the paper's Table 2: gating pairs first, then by model order.

    ``model_order`` is the reference then the candidates as given; models it does not
    name sort after it, alphabetically (results arrive in any order under pytest-xdist).
    """
    rank = {name: i for i, name in enumerate(model_order)}
    gating = {(r.reference, r.candidate) for r in results if r.gating}

    def key(pair: tuple[str, str]) -> tuple[Any, ...]:
        return (pair not in gating, rank.get(pair[0], len(rank)), pair[0], rank.get(pair[1], len(rank)), pair[1])

    return sorted({(r.reference, r.candidate) for r in results}, key=key)


def models_of(settings: Any, models: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The run's model table (see :func:`miniature.core.model_table.model_table`): the one
    the run resolved when given, else read from ``settings`` (a report written without a run)."""
    if models is not None:
        return dict(models)
    from miniature.core.model_table import given_models, model_table, name_models

    return model_table(name_models(given_models(settings), strict=False))


def model_order(settings: Any, models: Mapping[str, Any] | None = None) -> list[str]:
    """Report names of the reference and candidates, in the order given (as the gate names them)."""
    return list(models_of(settings, models)["order"])


def cell_text(result: ComparisonResult | None) -> str:
    if result is None:
        return "-"
    return f"{result.verdict} {format_number(result.figure)}" if result.computed else result.verdict


# -- terminal --------------------------------------------------------------------------------
def summary_table(results: Sequence[ComparisonResult], model_names: Sequence[str] = ()) -> list[str]:
    """Pairs × characteristics, each cell ``PASS 0.61`` / ``FAIL 0.07``; a threshold row last."""
    columns = columns_of(results)
    cells: dict[tuple[str, str], dict[Column, ComparisonResult]] = {}
    for result in results:
        cells.setdefault((result.reference, result.candidate), {})[(result.characteristic, result.stage)] = result
    table = [["pair"] + [column_title(c, short=True) for c in columns]]
    for pair in pairs_of(results, model_names):
        row = cells[pair]
        informational = not any(r.gating for r in row.values())
        label = f"{pair[0]} vs {pair[1]}" + (" (reported only)" if informational else "")
        table.append([label] + [cell_text(row.get(column)) for column in columns])
    thresholds = []
    for column in columns:
        values = {r.threshold for r in results if (r.characteristic, r.stage) == column and r.threshold is not None}
        thresholds.append(">= " + "/".join(format_number(v) for v in sorted(values)) if values else "-")
    table.append(["threshold"] + thresholds)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table]
    return lines + [
        f"{result.verdict}: {result.reference} vs {result.candidate} "
        f"{column_title((result.characteristic, result.stage))}: {result.reason}"
        for result in results
        if not result.computed
    ]


def gate_counts(results: Sequence[ComparisonResult]) -> dict[str, int]:
    """Gating checks by outcome: ``total``, ``failed`` (below threshold), ``error``, ``skipped``."""
    gating = [r for r in results if r.gating]
    return {
        "total": len(gating),
        "failed": sum(r.computed and not r.passed for r in gating),
        "error": sum(r.status == "error" for r in gating),
        "skipped": sum(r.status == "skipped" for r in gating),
    }


# -- what changed since a previous run -------------------------------------------------------
@dataclass(frozen=True)
class Change:
    """One pair × characteristic compared between a previous run and this one."""

    key: ResultKey
    previous: ComparisonResult | None
    current: ComparisonResult | None

    @property
    def pair(self) -> str:
        return f"{self.key[0]} vs {self.key[1]}"

    @property
    def title(self) -> str:
        return column_title((self.key[2], self.key[3]))

    @property
    def previous_verdict(self) -> str:
        return "-" if self.previous is None else self.previous.verdict

    @property
    def current_verdict(self) -> str:
        return "-" if self.current is None else self.current.verdict

    @property
    def verdict_changed(self) -> bool:
        return self.previous_verdict != self.current_verdict

    @property
    def delta(self) -> float | None:
        if self.previous is None or self.current is None:
            return None
        return self.current.figure - self.previous.figure

    @property
    def figure_changed(self) -> bool:
        if self.previous is None or self.current is None:
            return True
        a, b = self.previous.figure, self.current.figure
        if _isnan(a) or _isnan(b):
            return _isnan(a) != _isnan(b)
        return abs(a - b) > 1e-9

    @property
    def changed(self) -> bool:
        return self.verdict_changed or self.figure_changed


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def compare_results(
    previous: Sequence[ComparisonResult], current: Sequence[ComparisonResult], model_names: Sequence[str] = ()
) -> list[Change]:
    """Every pair × characteristic of either run, previous figure against current."""
    before = {result_key(r): r for r in previous}
    after = {result_key(r): r for r in current}
    pair_rank = {pair: i for i, pair in enumerate(pairs_of([*current, *previous], model_names))}
    column_rank = {column: i for i, column in enumerate(columns_of([*current, *previous]))}
    keys = sorted(set(before) | set(after), key=lambda k: (pair_rank[(k[0], k[1])], column_rank[(k[2], k[3])]))
    return [Change(key, before.get(key), after.get(key)) for key in keys]


def change_lines(changes: Sequence[Change], source: str) -> list[str]:
    """Terminal lines: what changed since ``source`` (verdict changes marked ``<<``)."""
    changed = [c for c in changes if c.changed]
    if not changed:
        return [f"no change since {source}: same figures and verdicts for all {len(changes)} checks"]
    lines = [f"changes since {source} ({len(changed)} of {len(changes)} checks):"]
    for change in changed:
        previous = (
            "absent"
            if change.previous is None
            else f"{change.previous_verdict} {format_number(change.previous.figure)}"
        )
        current = (
            "absent" if change.current is None else f"{change.current_verdict} {format_number(change.current.figure)}"
        )
        delta = "" if change.delta is None or _isnan(change.delta) else f" ({change.delta:+.3f})"
        mark = ""
        if change.previous is None:
            mark = "  << new check"
        elif change.current is None:
            mark = "  << not run this time"
        elif change.verdict_changed:
            mark = "  << verdict changed"
        lines.append(f"  {change.pair}, {change.title}: {previous} -> {current}{delta}{mark}")
    return lines


def load_report(path: Path | str) -> dict[str, Any]:
    """A previous run's JSON payload, validated; its results rebuilt as ComparisonResults.

    Raises :class:`ReportError` naming the file and the fix.
    """
    path = Path(path)
    fix = "fix: pass a JSON report an earlier gate run wrote (e.g. reports/latest.json)"
    try:
        size = path.stat().st_size
        if size > MAX_REPORT_BYTES:
            raise ReportError(
                f"--compare-to {path}: {size / 2**20:.0f} MiB, more than the "
                f"{MAX_REPORT_BYTES // 2**20} MiB a gate report can be (so it is not read); {fix}"
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"--compare-to {path}: no such file; {fix}") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError, OSError) as error:
        raise ReportError(f"--compare-to {path}: cannot be read ({type(error).__name__}: {error}); {fix}") from None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise ReportError(f"--compare-to {path}: not valid JSON ({error}); {fix}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("results"), list):
        raise ReportError(f"--compare-to {path}: not a miniature JSON report (no 'results' list); {fix}")
    known = {f.name for f in fields(ComparisonResult)}
    results = []
    for i, entry in enumerate(payload["results"]):
        if not isinstance(entry, dict):
            raise ReportError(f"--compare-to {path}: result {i} is not an object; {fix}")
        problem = result_schema_problem(entry) or result_value_problem(entry)
        if problem:
            raise ReportError(f"--compare-to {path}: result {i} {problem}; {fix}")
        results.append(ComparisonResult(**{k: v for k, v in entry.items() if k in known}))
    return {**payload, "results": results, "path": str(path)}


#: a previous report above this size is refused unread (a run's report is well under 1 MiB)
MAX_REPORT_BYTES = 64 * 2**20


# -- JSON ------------------------------------------------------------------------------------
def report_payload(
    results: Sequence[ComparisonResult],
    settings: Any,
    *,
    duration_s: float | None = None,
    compare_to: str | None = None,
    execution: Mapping[str, Any] | None = None,
    models: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a machine needs: settings, models (``models``: the table the run resolved,
    see :func:`models_of`), data, versions, where the per-item work ran (``execution``: the
    executor and its number of workers) and every result's figures."""
    raw = getattr(settings, "values", {})
    values = {k.lstrip("-"): (str(v) if isinstance(v, Path) else v) for k, v in raw.items()}
    return {
        "schema": REPORT_SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": None if duration_s is None else round(float(duration_s), 3),
        "models": models_of(settings, models),
        "data": {role: (str(raw[flag]) if raw.get(flag) else BUILTIN_DATA) for role, flag in DATA_ROLES},
        "compare_to": compare_to,
        "execution": dict(execution)
        if execution is not None
        else {"executor": values.get("executor", "inprocess"), "workers": None},
        "settings": values,
        "versions": _versions(),
        "gate": gate_counts(results),
        "results": [json.loads(r.to_json()) for r in results],
    }


def _versions() -> dict[str, str]:
    from importlib import metadata

    found = {"python": platform.python_version()}
    for package in (
        "miniature",
        "pytest",
        "pytest-html",
        "pytest-xdist",
        "torch",
        "transformers",
        "faiss-cpu",
        "numpy",
        "matplotlib",
        "textattack",
        "onnxruntime",
        "torchao",
    ):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found
