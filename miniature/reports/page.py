"""The standalone summary page of a gate run and the evidence of one check, as HTML.

Python prepares the data: each section of the page is a *view*, plain strings, numbers,
lists and dicts built by a small function below from the run's JSON payload. The markup,
the CSS included, lives in the Jinja2 templates of ``miniature/resources/templates``
(``summary.html.j2`` and its partials), rendered with autoescaping on: every string that can
come from a data set, a model name or a setting is escaped by the template engine. Numbers
go through the same formatter as the terminal (:func:`format_number`). The page is one file:
inline CSS, no script, plots embedded as base64 PNG. matplotlib is imported only when a
page with K sweeps is rendered.

The pytest-html columns and extras (:mod:`miniature.plugin.html_columns`) use
:func:`evidence_html` and :func:`template_module` of this module; nothing here imports
the pytest face.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from miniature.core.registry import active
from miniature.core.characteristics.base import CHARACTERISTIC_TITLES, ComparisonResult, format_number
from miniature.reports.payload import Change, Column, column_title, columns_of, compare_results, gate_counts, pairs_of


class _EvidenceTitles(dict):
    """Evidence headings by characteristic name, from the registry."""

    def get(self, name: str, default: str = "Evidence") -> str:  # type: ignore[override]
        registry = active()
        return registry[name].evidence_title if name in registry else default


EVIDENCE_TITLES = _EvidenceTitles()
VERDICT_COLOURS = {
    "pass": "#1b7a3a",
    "fail": "#b3261e",
    "diverges": "#8a5a00",
    "na": "#666",
    "error": "#b3261e",
    "skipped": "#555",
}
#: evidence columns first in this order (JSON sorts keys); any other key follows
EVIDENCE_COLUMNS = (
    "index",
    "kind",
    "broken_by",
    "label",
    "text",
    "jaccard",
    "reference_score",
    "candidate_score",
    "reference_neighbour_texts",
    "candidate_neighbour_texts",
    "reference_result",
    "candidate_result",
    "reference_perturbed",
    "candidate_perturbed",
    "reference_words_changed",
    "candidate_words_changed",
    "transfers_to_candidate",
)
EVIDENCE_ROWS = 10
TEXT_LIMIT = 400
LIST_TEXT_LIMIT = 160
LIST_LIMIT = 10
#: where the templates live, inside the package (shipped as package data)
TEMPLATES = "resources/templates"
PAGE_TEMPLATE = "summary.html.j2"
EVIDENCE_TEMPLATE = "evidence.html.j2"


# -- templates ---------------------------------------------------------------------------------
@functools.cache
def template_environment() -> Any:
    """The Jinja2 environment of the report templates; autoescaping on for every template."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("miniature", TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def template_module(name: str) -> Any:
    """A template's macros, callable from Python (each call returns escaped ``Markup``)."""
    return template_environment().get_template(name).module


# -- formatting (plain text: the templates escape) --------------------------------------------
def fmt(value: Any) -> str:
    """A value as the terminal shows it: numbers formatted, ``yes``/``no``/``–``, else ``str``."""
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "–"}[value]
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, int):
        return str(value)
    return str(value)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def verdict_class(result: ComparisonResult | None) -> str:
    """``pass``, ``fail`` (a gating pair below threshold), ``diverges`` (informational), ``error``,
    ``skipped`` or ``na``."""
    if result is None:
        return "na"
    if not result.computed:
        return result.status
    return {"PASS": "pass", "FAIL": "fail"}.get(result.verdict, "diverges")


def ci_text(result: ComparisonResult) -> str:
    if result.ci_low is None or result.ci_high is None:
        return "–"
    return f"{format_number(result.ci_low)}–{format_number(result.ci_high)}"


def threshold_text(result: ComparisonResult) -> str:
    if result.threshold is None:
        return "–"
    on = "" if result.threshold_on == "raw" else f" ({result.threshold_on.replace('_', ' ')})"
    return f"≥ {format_number(result.threshold)}{on}"


# -- evidence (pytest-html extras and the summary page) ------------------------------------
def evidence_html(result: ComparisonResult, *, style: bool = True) -> str:
    """The result's figures, details, conditions and evidence items, all text escaped."""
    return str(template_module(EVIDENCE_TEMPLATE).evidence(evidence_view(result), with_style=style))


def evidence_view(result: ComparisonResult) -> dict[str, Any]:
    """What ``evidence.html.j2`` shows of one result."""
    return {
        "verdict": result.verdict,
        "colour": VERDICT_COLOURS[verdict_class(result)],
        "summary": result.summary(),
        "conditions": [
            {
                "name": str(c.get("name", "")),
                "value": fmt(c.get("value")),
                "limit": fmt(c.get("limit")),
                "met": fmt(bool(c.get("passed"))),
                "passed": bool(c.get("passed")),
            }
            for c in result.conditions
        ],
        "details": list(_flat_details(result.details)),
        "title": EVIDENCE_TITLES.get(result.characteristic, "Evidence"),
        "table": evidence_table_view(result.evidence),
    }


def _flat_details(details: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, str]]:
    for key, value in details.items():
        name = f"{prefix}{key}".replace("_", " ")
        if isinstance(value, Mapping):
            yield from _flat_details(value, f"{prefix}{key}: ")
        elif isinstance(value, (list, tuple)):
            shown = ", ".join(fmt(v) for v in value[:LIST_LIMIT])
            more = f" … ({len(value)} in all)" if len(value) > LIST_LIMIT else ""
            yield name, (shown + more) if value else "none"
        else:
            yield name, fmt(value)


def evidence_table_view(evidence: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One row per evidence item (the first :data:`EVIDENCE_ROWS`), one column per key any item has."""
    present: list[str] = []
    for entry in evidence:
        present.extend(k for k in entry if k not in present)
    keys = [k for k in EVIDENCE_COLUMNS if k in present] + [k for k in present if k not in EVIDENCE_COLUMNS]
    # neighbour indices are redundant when their texts are there
    keys = [k for k in keys if not (k.endswith("_neighbours") and f"{k[:-1]}_texts" in keys)]
    rows = [
        [_evidence_cell(entry.get(key), _shared_neighbours(entry)) for key in keys]
        for entry in evidence[:EVIDENCE_ROWS]
    ]
    return {"columns": [k.replace("_", " ") for k in keys], "rows": rows, "total": len(evidence), "shown": len(rows)}


def evidence_table(evidence: Sequence[Mapping[str, Any]]) -> str:
    """:func:`evidence_table_view` rendered (escaped HTML)."""
    return str(template_module(EVIDENCE_TEMPLATE).evidence_table(evidence_table_view(evidence)))


def _evidence_cell(value: Any, shared: set[Any]) -> dict[str, Any]:
    if isinstance(value, str):
        return {"kind": "text", "text": _clip(value, TEXT_LIMIT)}
    if isinstance(value, (list, tuple)):
        items = [
            {"text": _clip(item, LIST_TEXT_LIMIT), "shared": item in shared}
            if isinstance(item, str)
            else {"text": fmt(item), "shared": False}
            for item in value[:LIST_LIMIT]
        ]
        return {"kind": "list", "entries": items, "more": max(len(value) - LIST_LIMIT, 0)}
    if isinstance(value, Mapping):
        return {"kind": "text", "text": json.dumps(value, default=str)}
    return {"kind": "plain", "text": fmt(value)}


def _shared_neighbours(entry: Mapping[str, Any]) -> set[Any]:
    first = entry.get("reference_neighbour_texts")
    second = entry.get("candidate_neighbour_texts")
    if isinstance(first, list) and isinstance(second, list):
        return {x for x in first if isinstance(x, str)} & {x for x in second if isinstance(x, str)}
    return set()


# -- the summary page ------------------------------------------------------------------------
def render_summary_page(
    payload: Mapping[str, Any], *, previous: Mapping[str, Any] | None = None, json_name: str | None = None
) -> str:
    """The standalone page of one run's JSON payload (Table 2, Table 3, Figure 1, metadata).

    ``previous`` is a :func:`miniature.reports.payload.load_report` payload: the page then
    shows what changed since that run.
    """
    view = page_view(payload, previous=previous, json_name=json_name)
    return template_environment().get_template(PAGE_TEMPLATE).render(page=view)


def page_view(
    payload: Mapping[str, Any], *, previous: Mapping[str, Any] | None = None, json_name: str | None = None
) -> dict[str, Any]:
    """Everything ``summary.html.j2`` shows, section by section; a section that is empty
    (falsy) is left out of the page and of its navigation."""
    results = [r if isinstance(r, ComparisonResult) else ComparisonResult(**r) for r in payload["results"]]
    names = list((payload.get("models") or {}).get("order") or [])
    models = payload.get("models") or {}
    view: dict[str, Any] = {
        "title": f"miniature: {models.get('reference') or '?'} vs {', '.join(models.get('candidates') or []) or '?'}",
        "created": str(payload.get("created", "?")),
        "duration": _duration(payload.get("duration_s")),
        "banner": banner_view(results),
        "changes": changes_view(previous, results, names) if previous is not None else None,
        "matrix": matrix_view(results, names),
        "attack": attack_view(results, names, payload.get("settings") or {}),
        "sensitivity": sensitivity_view(results, names),
        "evidence": evidence_section_view(results, names),
        "run": run_view(payload, json_name, previous),
    }
    sections = (
        ("changes", "Changes", view["changes"]),
        ("agreement", "Agreement (Table 2)", True),
        ("attack", "Attack (Table 3)", view["attack"]),
        ("sensitivity", "Sensitivity to K (Figure 1)", view["sensitivity"]),
        ("evidence", "Evidence", view["evidence"]),
        ("run", "Run", True),
    )
    view["nav"] = [(key, label) for key, label, shown in sections if shown]
    return view


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return ""
    return f", took {seconds:.1f} s" if seconds < 120 else f", took {seconds / 60:.1f} min"


def banner_view(results: Sequence[ComparisonResult]) -> dict[str, Any]:
    """The gate's verdict: counts, the failing checks named, notes on skipped and diverging ones."""
    counts = gate_counts(results)
    failed = [r for r in results if r.gating and not r.passed]
    diverging = [r for r in results if not r.gating and r.computed and not r.passed]
    notes = []
    if counts["skipped"]:
        notes.append(f"{counts['skipped']} skipped (see the table for why)")
    if diverging:
        notes.append(f"{len(diverging)} informational pair check(s) diverge")
    return {
        "passed": not failed,
        "failed": counts["failed"],
        "total": counts["total"],
        "errored": counts["error"],
        "computed": counts["total"] - counts["skipped"],
        "what": ", ".join(
            f"{r.reference} vs {r.candidate} {column_title((r.characteristic, r.stage))}"
            + ("" if r.computed else f" ({r.status})")
            for r in failed
        ),
        "note": "".join(f"; {n}" for n in notes),
    }


def _result_grid(results: Sequence[ComparisonResult]) -> dict[tuple[str, str], dict[Column, ComparisonResult]]:
    grid: dict[tuple[str, str], dict[Column, ComparisonResult]] = {}
    for result in results:
        grid.setdefault((result.reference, result.candidate), {})[(result.characteristic, result.stage)] = result
    return grid


def _is_representation(column: Column) -> bool:
    return column[0] == "data_representation"


def matrix_view(results: Sequence[ComparisonResult], names: Sequence[str]) -> dict[str, Any]:
    """Table 2: column groups (a characteristic), columns (a stage of it, plus representation's
    variance) and one row per model pair; no rows when no check produced a result."""
    if not results:
        return {"groups": [], "columns": [], "rows": []}
    columns = columns_of(results)
    grid = _result_grid(results)
    # the header shows a computed result's figure name and threshold where there is one
    first = {
        c: min((r for r in results if (r.characteristic, r.stage) == c), key=lambda r: not r.computed) for c in columns
    }
    groups: list[dict[str, Any]] = []
    for column in columns:
        span = 2 if _is_representation(column) else 1
        if groups and groups[-1]["characteristic"] == column[0]:
            groups[-1]["span"] += span
        else:
            groups.append(
                {"characteristic": column[0], "span": span, "title": CHARACTERISTIC_TITLES.get(column[0], column[0])}
            )
    heads = []
    for column in columns:
        result = first[column]
        stage_label = f"{column[1]}: " if column[1] else ""
        heads.append(
            {
                "label": stage_label + result.figure_name,
                "stage_label": stage_label,
                "note": threshold_text(result) + _k_text(result),
                "variance": _is_representation(column),
            }
        )
    rows = []
    previous_first = None
    for pair in pairs_of(results, names):
        cells = grid[pair]
        row_cells: list[dict[str, Any]] = []
        for column in columns:
            cell = cells.get(column)
            row_cells.append(matrix_cell_view(cell, column))
            if _is_representation(column):
                variance = None if cell is None else cell.details.get("variance")
                row_cells.append({"kind": "variance", "cls": verdict_class(cell), "value": fmt(variance)})
        rows.append(
            {
                "pair": f"{pair[0]} vs {pair[1]}",
                "first": pair[0] if pair[0] != previous_first else "",
                "second": pair[1],
                "informational": not any(r.gating for r in cells.values()),
                "cells": row_cells,
            }
        )
        previous_first = pair[0]
    return {"groups": groups, "columns": heads, "rows": rows}


def _k_text(result: ComparisonResult) -> str:
    return f", K={result.k}" if result.k is not None else ""


def matrix_cell_view(result: ComparisonResult | None, column: Column) -> dict[str, Any]:
    """One cell of Table 2: figure, verdict and the lines under them (CI, chance, n, unmet
    conditions, a note), or the reason a check was not computed."""
    cell: dict[str, Any] = {
        "kind": "result",
        "cls": verdict_class(result),
        "characteristic": column[0],
        "stage": column[1] or "",
        "missing": result is None,
    }
    if result is None:
        return cell
    cell.update(computed=result.computed, verdict=result.verdict, reason=result.reason or "")
    if not result.computed:
        return cell
    lines = []
    if result.ci_low is not None and result.ci_high is not None:
        lines.append(f"{result.ci_level:.0%} CI {ci_text(result)}")
    lines.append(f"chance {format_number(result.chance)}")
    lines.append(f"n={result.n}")
    for condition in result.conditions:
        if not condition.get("passed"):
            lines.append(f"{condition.get('name', '')} {fmt(condition.get('value'))} > {fmt(condition.get('limit'))}")
    note = result.details.get("note")
    if isinstance(note, str):
        lines.append(_clip(note, 90))
    cell.update(figure=format_number(result.figure), lines=lines)
    return cell


def _attack_targets(results: Sequence[ComparisonResult], names: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    targets: dict[str, dict[str, Any]] = {}
    for result in results:
        if result.characteristic != "adversarial_vulnerability":
            continue
        for role, name in (("reference", result.reference), ("candidate", result.candidate)):
            figures = result.details.get(role)
            if isinstance(figures, Mapping) and name not in targets:
                targets[name] = dict(figures)
    rank = {name: i for i, name in enumerate(names)}
    return sorted(targets.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))


def attack_view(
    results: Sequence[ComparisonResult], names: Sequence[str], settings: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Table 3: one row per attacked model; the attack model named on the first row only."""
    attacker = str(settings.get("attack-model") or "?")
    rows = []
    for i, (name, figures) in enumerate(_attack_targets(results, names)):
        percent = figures.get("percent_change")
        rows.append(
            {
                "attacker": attacker if i == 0 else "",
                "target": name,
                "figures": [
                    fmt(figures.get("original_accuracy")),
                    fmt(figures.get("accuracy_after_attack")),
                    fmt(figures.get("absolute_change")),
                    "–" if not isinstance(percent, (int, float)) else f"{percent:.1f}",
                    fmt(figures.get("attack_success_rate")),
                    fmt(figures.get("n")),
                ],
            }
        )
    return rows


def sensitivity_panels(results: Sequence[ComparisonResult], names: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Figure 1's panels as (caption, base64 PNG): representation per stage, then OOD."""
    panels: list[tuple[str, list[ComparisonResult]]] = []
    for column in columns_of(results):
        if column[0] not in ("data_representation", "data_distribution"):
            continue
        chosen = [r for r in results if (r.characteristic, r.stage) == column and r.sweep]
        if not chosen:
            continue
        what = (
            "Data representation agreement (mean kNN Jaccard)"
            if column[0] == "data_representation"
            else "Data distribution agreement (OOD-set Jaccard)"
        )
        panels.append((what + (f", {column[1]}" if column[1] else ""), chosen))
    pair_rank = {pair: i for i, pair in enumerate(pairs_of(results, names))}
    out = []
    for i, (caption, chosen) in enumerate(panels):
        chosen.sort(key=lambda r: pair_rank[(r.reference, r.candidate)])
        letter = f"({chr(ord('a') + i)}) "
        out.append((letter + caption, base64.b64encode(_plot(chosen, caption)).decode("ascii")))
    return out


def _plot(results: Sequence[ComparisonResult], title: str) -> bytes:
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator

    figure = Figure(figsize=(6.4, 4.2), dpi=100)
    axes = figure.subplots()
    ks: set[int] = set()
    for result in results:
        points = sorted((int(k), float(v)) for k, v in result.sweep.items())
        ks.update(k for k, _ in points)
        style = "-" if result.gating else "--"
        axes.plot(
            [k for k, _ in points],
            [v for _, v in points],
            style,
            marker="o",
            markersize=4,
            label=f"{result.reference} vs {result.candidate}",
        )
    thresholds = {r.threshold for r in results if r.threshold is not None}
    for threshold in sorted(thresholds):
        axes.axhline(
            threshold, color="#b3261e", linestyle=":", linewidth=1, label=f"threshold {format_number(threshold)}"
        )
    used = {r.k for r in results if r.k is not None}
    for k in sorted(used):
        axes.axvline(k, color="#888", linestyle=":", linewidth=1)
    if ks and max(ks) / max(min(ks), 1) > 20:
        axes.set_xscale("log")
    if ks:
        axes.xaxis.set_major_locator(FixedLocator(sorted(ks)))
        axes.xaxis.set_minor_locator(NullLocator())
        axes.set_xticklabels([str(k) for k in sorted(ks)])
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("K (neighbours)")
    axes.set_ylabel("Jaccard agreement")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def sensitivity_view(results: Sequence[ComparisonResult], names: Sequence[str]) -> list[dict[str, str]]:
    """Figure 1: one panel per swept column, a caption and the plot as base64 PNG text."""
    return [{"caption": caption, "png_base64": data} for caption, data in sensitivity_panels(results, names)]


def evidence_section_view(results: Sequence[ComparisonResult], names: Sequence[str]) -> list[dict[str, Any]]:
    """One collapsible block per result, in table order; failing and errored ones open."""
    pair_rank = {pair: i for i, pair in enumerate(pairs_of(results, names))}
    column_rank = {column: i for i, column in enumerate(columns_of(results))}
    ordered = sorted(
        results, key=lambda r: (pair_rank[(r.reference, r.candidate)], column_rank[(r.characteristic, r.stage)])
    )
    blocks = []
    for result in ordered:
        label = (
            f"{result.reference} vs {result.candidate} — {column_title((result.characteristic, result.stage))}: "
            + (
                f"{result.verdict} {format_number(result.figure)} ({len(result.evidence)} items)"
                if result.computed
                else f"{result.verdict}: {result.reason}"
            )
        )
        blocks.append(
            {
                "label": label,
                "cls": verdict_class(result),
                "open": verdict_class(result) in ("fail", "error"),
                "evidence": evidence_view(result),
            }
        )
    return blocks


def changes_view(
    previous: Mapping[str, Any], results: Sequence[ComparisonResult], names: Sequence[str]
) -> dict[str, Any]:
    """What changed since ``previous``: changed checks (verdict flips outlined), unchanged ones apart."""
    changes: list[Change] = compare_results(previous.get("results") or [], results, names)
    rows: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for change in changes:
        delta = change.delta
        rows[change.changed].append(
            {
                "cls": "verdict-changed" if change.verdict_changed else ("changed" if change.changed else "unchanged"),
                "pair": change.pair,
                "characteristic": change.key[2],
                "title": change.title,
                "previous": "absent" if change.previous is None else format_number(change.previous.figure),
                "current": "absent" if change.current is None else format_number(change.current.figure),
                "delta": "–" if delta is None or (isinstance(delta, float) and math.isnan(delta)) else f"{delta:+.3f}",
                "previous_verdict": change.previous_verdict,
                "previous_cls": verdict_class(change.previous),
                "current_verdict": change.current_verdict,
                "current_cls": verdict_class(change.current),
            }
        )
    return {
        "path": str(previous.get("path", "?")),
        "created": str(previous.get("created", "?")),
        "total": len(changes),
        "flipped": sum(c.verdict_changed for c in changes),
        "changed": rows[True],
        "unchanged": rows[False],
    }


def _line(text: Any, *, muted: Any = None, href: str | None = None) -> dict[str, Any]:
    return {"text": str(text), "muted": None if muted is None else str(muted), "href": href}


def _with_quantization(source: Any, quantization: Any, architecture: Any = None) -> str:
    """A model's source, with its architecture and how it is quantized or exported when known."""
    about = "; ".join(str(part) for part in (architecture, quantization) if part)
    return f"{source} ({about})" if about else str(source)


def _executor_text(execution: Mapping[str, Any]) -> str:
    """``inprocess`` or ``ray (local), 2 workers, 12 jobs``: where the per-item work ran."""
    text = str(execution.get("executor") or "inprocess")
    if execution.get("address"):
        text += f" ({execution['address']})"
    if execution.get("workers") and text != "inprocess":
        text += f", {execution['workers']} workers, {execution.get('jobs', '?')} jobs"
    return text


def run_view(payload: Mapping[str, Any], json_name: str | None, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """The run's metadata (name and lines of text each) and every setting."""
    settings = payload.get("settings") or {}
    models = payload.get("models") or {}
    quantized = models.get("quantization") or {}
    architectures = models.get("architecture") or {}
    data = payload.get("data") or {}
    items: list[tuple[str, list[dict[str, Any]]]] = [
        ("created", [_line(payload.get("created", "?"))]),
        ("duration", [_line("–" if payload.get("duration_s") is None else f"{payload['duration_s']:.1f} s")]),
        ("executor", [_line(_executor_text(payload.get("execution") or {}))]),
        (
            "reference",
            [
                _line(
                    models.get("reference") or "?",
                    muted=_with_quantization(
                        settings.get("reference") or "?",
                        quantized.get(models.get("reference") or ""),
                        architectures.get(models.get("reference") or ""),
                    ),
                )
            ],
        ),
        (
            "candidates",
            [
                _line(name, muted=_with_quantization(source, quantized.get(name), architectures.get(name)))
                for name, source in zip(models.get("candidates") or [], settings.get("candidate") or [])
            ]
            or [_line("none")],
        ),
    ]
    if settings.get("reference-base") or settings.get("candidate-base"):
        bases = [settings.get("reference-base"), *(settings.get("candidate-base") or [])]
        items.append(("before fine-tuning", [_line(b) for b in bases if b]))
    items.append(
        (
            "attack model",
            [
                _line(
                    f"{settings.get('attack-model', '?')} (attack size "
                    f"{settings.get('attack-size', '?')}, top-K words "
                    f"{settings.get('attack-top-k', '?')})"
                )
            ],
        )
    )
    for role, source in data.items():
        items.append((f"{role} data", [_line(source)]))
    items.append(("K", [_line(f"{settings.get('k', '?')} (sweep {settings.get('k-sweep', '?')})")]))
    thresholds: dict[str, Any] = {}
    for result in payload.get("results") or []:  # one per characteristic, in report order
        get = result.get if isinstance(result, Mapping) else lambda key, r=result: getattr(r, key)
        thresholds.setdefault(str(get("characteristic")), get("threshold"))
    items.append(
        (
            "thresholds",
            [
                _line(
                    ", ".join(f"{CHARACTERISTIC_TITLES.get(name, name)} {value}" for name, value in thresholds.items())
                    + f" (attack: + drop within {settings.get('attack-drop-tolerance')} pp), judged on "
                    f"{settings.get('threshold-on')}"
                )
            ],
        )
    )
    if json_name:
        items.append(("JSON report", [_line(json_name, href=json_name)]))
    if previous is not None:
        items.append(("compared with", [_line(previous.get("path", "?"))]))
    versions = payload.get("versions") or {}
    items.append(("versions", [_line(", ".join(f"{k} {v}" for k, v in versions.items()))]))
    return {
        "meta": [{"name": name, "lines": lines} for name, lines in items],
        "settings": [(key, _setting_text(value)) for key, value in sorted(settings.items())],
    }


def _setting_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) if value else "–"
    return "–" if value is None else str(value)
