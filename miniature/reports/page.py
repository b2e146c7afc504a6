"""HTML of the report: the standalone summary page and the pytest-html columns and extras.

Every string that can come from a data set, a model name or a setting goes through
:func:`esc` (``html.escape``); numbers go through the same formatter as the terminal.
The summary page is one file: inline CSS, no script, plots embedded as base64 PNG.
matplotlib is imported only when a page with K sweeps is rendered.
"""

from __future__ import annotations

import base64
import html as _html
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest

from miniature.core.registry import active
from miniature.core.characteristics.base import CHARACTERISTIC_TITLES, ComparisonResult, _fmt
from miniature.reports.payload import (Change, Column, column_title, columns_of, compare_results, gate_counts, pairs_of)

class _EvidenceTitles(dict):
    """Evidence headings by characteristic name, from the registry."""

    def get(self, name: str, default: str = "Evidence") -> str:  # type: ignore[override]
        registry = active()
        return registry[name].evidence_title if name in registry else default


EVIDENCE_TITLES = _EvidenceTitles()
VERDICT_COLOURS = {"pass": "#1b7a3a", "fail": "#b3261e", "diverges": "#8a5a00", "na": "#666",
                   "error": "#b3261e", "skipped": "#555"}
#: evidence columns first in this order (JSON sorts keys); any other key follows
EVIDENCE_COLUMNS = ("index", "kind", "broken_by", "label", "text", "jaccard", "reference_score",
                    "candidate_score", "reference_neighbour_texts", "candidate_neighbour_texts",
                    "reference_result", "candidate_result", "reference_perturbed", "candidate_perturbed",
                    "reference_words_changed", "candidate_words_changed", "transfers_to_candidate")
EVIDENCE_ROWS = 10
TEXT_LIMIT = 400
LIST_TEXT_LIMIT = 160
LIST_LIMIT = 10


def esc(value: Any) -> str:
    """``value`` as text safe inside HTML elements and quoted attributes."""
    return _html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A number as the terminal shows it; anything else escaped."""
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "–"}[value]
    if isinstance(value, float):
        return _fmt(value)
    if isinstance(value, int):
        return str(value)
    return esc(value)


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
    return f"{_fmt(result.ci_low)}–{_fmt(result.ci_high)}"


def threshold_text(result: ComparisonResult) -> str:
    if result.threshold is None:
        return "–"
    on = "" if result.threshold_on == "raw" else f" ({result.threshold_on.replace('_', ' ')})"
    return f"≥ {_fmt(result.threshold)}{on}"


# -- evidence (pytest-html extras and the summary page) ------------------------------------
EVIDENCE_STYLE = """<style>
.miniature-evidence{font:13px/1.4 system-ui,sans-serif;margin:.5em 0}
.miniature-evidence table{border-collapse:collapse;margin:.4em 0 1em}
.miniature-evidence th,.miniature-evidence td{border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:left}
.miniature-evidence th{background:#f3f3f3}
.miniature-evidence td.text{max-width:38em;white-space:pre-wrap;word-break:break-word}
.miniature-evidence ol{margin:0;padding-left:1.4em}
.miniature-evidence li.shared{color:#1b7a3a;font-weight:600}
.miniature-evidence .failed-condition{color:#b3261e}
</style>"""


def evidence_html(result: ComparisonResult, *, style: bool = True) -> str:
    """The result's figures, details, conditions and evidence items, all text escaped."""
    parts = [EVIDENCE_STYLE if style else "", '<div class="miniature-evidence">',
             f'<p><strong style="color:{VERDICT_COLOURS[verdict_class(result)]}">{esc(result.verdict)}</strong> '
             f"{esc(result.summary())}</p>"]
    if result.conditions:
        parts.append("<table><tr><th>condition</th><th>value</th><th>limit</th><th>met</th></tr>")
        for condition in result.conditions:
            cls = "" if condition.get("passed") else ' class="failed-condition"'
            parts.append(f"<tr{cls}><td>{esc(condition.get('name', ''))}</td><td>{fmt(condition.get('value'))}</td>"
                         f"<td>{fmt(condition.get('limit'))}</td><td>{fmt(bool(condition.get('passed')))}</td></tr>")
        parts.append("</table>")
    details = list(_flat_details(result.details))
    if details:
        parts.append("<table><tr><th>detail</th><th>value</th></tr>")
        parts.extend(f"<tr><td>{esc(name)}</td><td>{value}</td></tr>" for name, value in details)
        parts.append("</table>")
    parts.append(f"<h4>{esc(EVIDENCE_TITLES.get(result.characteristic, 'Evidence'))}</h4>")
    parts.append(evidence_table(result.evidence))
    parts.append("</div>")
    return "".join(parts)


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


def evidence_table(evidence: Sequence[Mapping[str, Any]]) -> str:
    """One row per evidence item, one column per key any item has."""
    if not evidence:
        return "<p>No items: the models agree on every item this characteristic looks at.</p>"
    present: list[str] = []
    for entry in evidence:
        present.extend(k for k in entry if k not in present)
    keys = [k for k in EVIDENCE_COLUMNS if k in present] + [k for k in present if k not in EVIDENCE_COLUMNS]
    # neighbour indices are redundant when their texts are there
    keys = [k for k in keys if not (k.endswith("_neighbours") and f"{k[:-1]}_texts" in keys)]
    rows = []
    if len(evidence) > EVIDENCE_ROWS:
        rows.append(f"<p>The {EVIDENCE_ROWS} most divergent of {len(evidence)} items (all are in the JSON report).</p>")
    rows.append("<table><tr>" + "".join(f"<th>{esc(k.replace('_', ' '))}</th>" for k in keys) + "</tr>")
    for entry in evidence[:EVIDENCE_ROWS]:
        shared = _shared_neighbours(entry)
        cells = []
        for key in keys:
            value = entry.get(key)
            if isinstance(value, str):
                cells.append(f'<td class="text">{esc(_clip(value, TEXT_LIMIT))}</td>')
            elif isinstance(value, (list, tuple)):
                items = "".join(_list_item(item, shared) for item in value[:LIST_LIMIT])
                more = f"<li>… {len(value) - LIST_LIMIT} more</li>" if len(value) > LIST_LIMIT else ""
                cells.append(f'<td class="text"><ol>{items}{more}</ol></td>')
            elif isinstance(value, Mapping):
                cells.append(f'<td class="text">{esc(json.dumps(value, default=str))}</td>')
            else:
                cells.append(f"<td>{fmt(value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    rows.append("</table>")
    return "".join(rows)


def _list_item(item: Any, shared: set[Any]) -> str:
    if isinstance(item, str):
        cls = ' class="shared"' if item in shared else ""
        return f"<li{cls}>{esc(_clip(item, LIST_TEXT_LIMIT))}</li>"
    return f"<li>{fmt(item)}</li>"


def _shared_neighbours(entry: Mapping[str, Any]) -> set[Any]:
    first = entry.get("reference_neighbour_texts")
    second = entry.get("candidate_neighbour_texts")
    if isinstance(first, list) and isinstance(second, list):
        return {x for x in first if isinstance(x, str)} & {x for x in second if isinstance(x, str)}
    return set()


# -- pytest-html -----------------------------------------------------------------------------
HTML_COLUMNS = ("Verdict", "Figure", "Threshold", "95% CI", "Chance")


def result_of(report: Any) -> ComparisonResult | None:
    """The ComparisonResult a check attached to its test report, if any."""
    from miniature.plugin.hooks import RESULT_PROPERTY

    for name, value in getattr(report, "user_properties", ()) or ():
        if name == RESULT_PROPERTY:
            return ComparisonResult.from_json(value)
    return None


def result_cells(result: ComparisonResult | None) -> list[str]:
    """The pytest-html row cells of :data:`HTML_COLUMNS` (empty ones for other tests)."""
    if result is None:
        return ['<td class="col-miniature"></td>'] * len(HTML_COLUMNS)
    colour = VERDICT_COLOURS[verdict_class(result)]
    return [
        f'<td class="col-miniature" style="color:{colour};font-weight:600">{esc(result.verdict)}</td>',
        f'<td class="col-miniature">{esc(result.figure_name)} {_fmt(result.figure)}</td>',
        f'<td class="col-miniature">{esc(threshold_text(result))}</td>',
        f'<td class="col-miniature">{esc(ci_text(result))}</td>',
        f'<td class="col-miniature">{_fmt(result.chance)}</td>',
    ]


class HtmlReportHooks:
    """pytest-html hooks, registered only when pytest-html is loaded (its hooks exist then)."""

    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        cells[2:2] = [f'<th class="col-miniature">{esc(title)}</th>' for title in HTML_COLUMNS]

    def pytest_html_results_table_row(self, report: Any, cells: list[str]) -> None:
        if cells:
            cells[2:2] = result_cells(result_of(report))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        if report.when == "call":
            result = result_of(report)
            if result is not None:
                from pytest_html import extras

                report.extras = [*getattr(report, "extras", []), extras.html(evidence_html(result))]
        return report


# -- the summary page ------------------------------------------------------------------------
PAGE_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1200px;padding:1em 2em;color:#222}
h1{margin:.2em 0}h2{margin-top:1.6em;border-bottom:2px solid #ddd;padding-bottom:.2em}
nav a{margin-right:1em}
.banner{padding:.6em 1em;border-radius:6px;font-weight:600;font-size:1.1em}
.banner.pass{background:#d8f0de;color:#1b5e2f}.banner.fail{background:#f8d7d6;color:#8c1d18}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #c8c8c8;padding:4px 8px;text-align:left;vertical-align:top}
thead th{background:#f1f1f1}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.cell{min-width:9em}
td.cell .fig{font-size:1.25em;font-weight:700}
td.cell .verdict{font-weight:700;font-size:.85em;letter-spacing:.04em}
td.cell .sub{font-size:.85em;color:#444}
.pass{background:#e3f4e7}.fail{background:#fbe0df}.diverges{background:#fff1cc}.na{background:#f4f4f4;color:#777}
.error{background:#f3c2c0}.skipped{background:#ececec;color:#444}
.tag{font-size:.8em;color:#555;background:#eee;border-radius:3px;padding:0 4px}
.legend span{display:inline-block;padding:2px 8px;margin-right:.6em;border:1px solid #ccc;border-radius:3px}
tr.verdict-changed td{font-weight:700}tr.verdict-changed{outline:2px solid #b3261e}
tr.unchanged td{color:#777}
figure{display:inline-block;margin:0 1.5em 1em 0;vertical-align:top}
figure img{max-width:560px;border:1px solid #ddd}
figcaption{font-size:.9em;color:#444;max-width:560px}
details{margin:.3em 0}summary{cursor:pointer}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:.2em 1.2em}dl.meta dt{font-weight:600}dl.meta dd{margin:0}
.muted{color:#666}
"""


def render_summary_page(payload: Mapping[str, Any], *, previous: Mapping[str, Any] | None = None,
                        json_name: str | None = None) -> str:
    """The standalone page of one run's JSON payload (Table 2, Table 3, Figure 1, metadata).

    ``previous`` is a :func:`miniature.report.load_report` payload: the page then shows
    what changed since that run.
    """
    results = [r if isinstance(r, ComparisonResult) else ComparisonResult(**r) for r in payload["results"]]
    names = list((payload.get("models") or {}).get("order") or [])
    models = payload.get("models") or {}
    title = f"miniature: {models.get('reference') or '?'} vs {', '.join(models.get('candidates') or []) or '?'}"
    sections = [
        ("changes", "Changes", _changes_section(previous, results, names) if previous is not None else ""),
        ("agreement", "Agreement (Table 2)", _matrix_section(results, names)),
        ("attack", "Attack (Table 3)", _attack_section(results, names, payload.get("settings") or {})),
        ("sensitivity", "Sensitivity to K (Figure 1)", _sensitivity_section(results, names)),
        ("evidence", "Evidence", _evidence_section(results, names)),
        ("run", "Run", _run_section(payload, json_name, previous)),
    ]
    nav = " ".join(f'<a href="#{key}">{esc(label)}</a>' for key, label, body in sections if body)
    return "".join([
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{PAGE_STYLE}</style>{EVIDENCE_STYLE}</head><body>",
        f"<header><h1>{esc(title)}</h1>{_banner(results)}",
        f'<p class="muted">created {esc(payload.get("created", "?"))}'
        f'{_duration(payload.get("duration_s"))}</p><nav>{nav}</nav></header>',
        *(f'<section id="{key}">{body}</section>' for key, _, body in sections if body),
        "</body></html>\n",
    ])


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return ""
    return f", took {seconds:.1f} s" if seconds < 120 else f", took {seconds / 60:.1f} min"


def _banner(results: Sequence[ComparisonResult]) -> str:
    counts = gate_counts(results)
    failed = [r for r in results if r.gating and not r.passed]
    diverging = [r for r in results if not r.gating and r.computed and not r.passed]
    notes = []
    if counts["skipped"]:
        notes.append(f"{counts['skipped']} skipped (see the table for why)")
    if diverging:
        notes.append(f"{len(diverging)} informational pair check(s) diverge")
    note = "".join(f"; {n}" for n in notes)
    if failed:
        what = ", ".join(f"{r.reference} vs {r.candidate} {column_title((r.characteristic, r.stage))}"
                         + ("" if r.computed else f" ({r.status})") for r in failed)
        errored = f", {counts['error']} errored" if counts["error"] else ""
        return (f'<p class="banner fail">Gate FAILED: {counts["failed"]} of {counts["total"]} gating checks '
                f"below threshold{errored} ({esc(what)}){esc(note)}</p>")
    passed = counts["total"] - counts["skipped"]
    return f'<p class="banner pass">Gate PASSED: all {passed} computed gating checks pass{esc(note)}</p>'


def _result_grid(results: Sequence[ComparisonResult]) -> dict[tuple[str, str], dict[Column, ComparisonResult]]:
    grid: dict[tuple[str, str], dict[Column, ComparisonResult]] = {}
    for result in results:
        grid.setdefault((result.reference, result.candidate), {})[(result.characteristic, result.stage)] = result
    return grid


def _is_representation(column: Column) -> bool:
    return column[0] == "data_representation"


def _matrix_section(results: Sequence[ComparisonResult], names: Sequence[str]) -> str:
    if not results:
        return "<h2>Agreement (Table 2)</h2><p>No check produced a result.</p>"
    columns = columns_of(results)
    grid = _result_grid(results)
    # the header shows a computed result's figure name and threshold where there is one
    first = {c: min((r for r in results if (r.characteristic, r.stage) == c), key=lambda r: not r.computed)
             for c in columns}
    groups: list[tuple[str, list[Column]]] = []
    for column in columns:
        if groups and groups[-1][0] == column[0]:
            groups[-1][1].append(column)
        else:
            groups.append((column[0], [column]))
    head1 = ['<th rowspan="2">Model M<sub>i</sub></th><th rowspan="2">Model M<sub>j</sub></th>']
    head2 = []
    for characteristic, cols in groups:
        span = sum(2 if _is_representation(c) else 1 for c in cols)
        head1.append(f'<th colspan="{span}">{esc(CHARACTERISTIC_TITLES.get(characteristic, characteristic))}</th>')
        for column in cols:
            result = first[column]
            label = f"{column[1]}: " if column[1] else ""
            head2.append(f"<th>{esc(label + result.figure_name)}<br><span class=\"muted\">"
                         f"{esc(threshold_text(result))}{esc(_k_text(result))}</span></th>")
            if _is_representation(column):
                head2.append(f"<th>{esc(label)}variance</th>")
    rows = []
    previous_first = None
    for pair in pairs_of(results, names):
        cells = grid[pair]
        informational = not any(r.gating for r in cells.values())
        mi = esc(pair[0]) if pair[0] != previous_first else ""
        previous_first = pair[0]
        tag = ' <span class="tag">reported only</span>' if informational else ""
        row = [f"<th>{mi}</th><th>{esc(pair[1])}{tag}</th>"]
        for column in columns:
            result = cells.get(column)
            row.append(_matrix_cell(result, pair, column))
            if _is_representation(column):
                variance = None if result is None else result.details.get("variance")
                row.append(f'<td class="num {verdict_class(result)}">{fmt(variance)}</td>')
        rows.append(f'<tr class="pair" data-pair="{esc(pair[0] + " vs " + pair[1])}">' + "".join(row) + "</tr>")
    legend = ('<p class="legend"><span class="pass">pass</span><span class="fail">fail (gating pair '
              'below threshold)</span><span class="diverges">diverges (candidate pair, reported '
              'only)</span><span class="error">error (could not be computed)</span><span class="skipped">'
              'skipped (does not apply; reason given)</span><span class="na">not run</span></p>')
    return ("<h2>Agreement between model pairs (Table 2)</h2>"
            "<p>Jaccard agreement per model pair and characteristic, with the bootstrap "
            "confidence interval and the agreement expected by chance.</p>" + legend +
            '<table class="matrix"><thead><tr>' + "".join(head1) + "</tr><tr>" + "".join(head2) +
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _k_text(result: ComparisonResult) -> str:
    return f", K={result.k}" if result.k is not None else ""


def _matrix_cell(result: ComparisonResult | None, pair: tuple[str, str], column: Column) -> str:
    attrs = (f'data-pair="{esc(pair[0] + " vs " + pair[1])}" data-characteristic="{esc(column[0])}"'
             f' data-stage="{esc(column[1] or "")}"')
    if result is None:
        return f'<td class="cell na" {attrs}>–</td>'
    if not result.computed:
        return (f'<td class="cell {verdict_class(result)}" {attrs}><div class="verdict">{esc(result.verdict)}'
                f'</div><div class="sub">{esc(result.reason or "")}</div></td>')
    lines = [f'<div class="fig">{_fmt(result.figure)}</div>', f'<div class="verdict">{esc(result.verdict)}</div>']
    if result.ci_low is not None and result.ci_high is not None:
        lines.append(f'<div class="sub">{result.ci_level:.0%} CI {esc(ci_text(result))}</div>')
    lines.append(f'<div class="sub">chance {_fmt(result.chance)}</div>')
    lines.append(f'<div class="sub">n={result.n}</div>')
    for condition in result.conditions:
        if not condition.get("passed"):
            lines.append(f'<div class="sub">{esc(condition.get("name", ""))} {fmt(condition.get("value"))}'
                         f" &gt; {fmt(condition.get('limit'))}</div>")
    note = result.details.get("note")
    if isinstance(note, str):
        lines.append(f'<div class="sub">{esc(_clip(note, 90))}</div>')
    return f'<td class="cell {verdict_class(result)}" {attrs}>' + "".join(lines) + "</td>"


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


def _attack_section(results: Sequence[ComparisonResult], names: Sequence[str], settings: Mapping[str, Any]) -> str:
    targets = _attack_targets(results, names)
    if not targets:
        return ""
    attacker = settings.get("attack-model") or "?"
    rows = []
    for i, (name, figures) in enumerate(targets):
        percent = figures.get("percent_change")
        percent_text = "–" if not isinstance(percent, (int, float)) else f"{percent:.1f}"
        rows.append(
            f"<tr data-target=\"{esc(name)}\"><th>{esc(attacker) if i == 0 else ''}</th><th>{esc(name)}</th>"
            f'<td class="num">{fmt(figures.get("original_accuracy"))}</td>'
            f'<td class="num">{fmt(figures.get("accuracy_after_attack"))}</td>'
            f'<td class="num">{fmt(figures.get("absolute_change"))}</td>'
            f'<td class="num">{percent_text}</td>'
            f'<td class="num">{fmt(figures.get("attack_success_rate"))}</td>'
            f'<td class="num">{fmt(figures.get("n"))}</td></tr>')
    return ("<h2>Model behaviour under attack (Table 3)</h2>"
            "<p>Accuracy of each target on the attacked sample before and after BERT-Attack; "
            "the change is the drop (positive when the attack hurts).</p>"
            "<table class=\"attack\"><thead><tr><th>Attack model</th><th>Target model</th>"
            "<th>Original accuracy</th><th>After attack accuracy</th><th>Absolute change in accuracy</th>"
            "<th>% change in accuracy</th><th>attack success rate</th><th>items</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def sensitivity_panels(results: Sequence[ComparisonResult], names: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Figure 1's panels as (caption, base64 PNG): representation per stage, then OOD."""
    panels: list[tuple[str, list[ComparisonResult]]] = []
    for column in columns_of(results):
        if column[0] not in ("data_representation", "data_distribution"):
            continue
        chosen = [r for r in results if (r.characteristic, r.stage) == column and r.sweep]
        if not chosen:
            continue
        what = ("Data representation agreement (mean kNN Jaccard)" if column[0] == "data_representation"
                else "Data distribution agreement (OOD-set Jaccard)")
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
        axes.plot([k for k, _ in points], [v for _, v in points], style, marker="o", markersize=4,
                  label=f"{result.reference} vs {result.candidate}")
    thresholds = {r.threshold for r in results if r.threshold is not None}
    for threshold in sorted(thresholds):
        axes.axhline(threshold, color="#b3261e", linestyle=":", linewidth=1, label=f"threshold {_fmt(threshold)}")
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


def _sensitivity_section(results: Sequence[ComparisonResult], names: Sequence[str]) -> str:
    panels = sensitivity_panels(results, names)
    if not panels:
        return ""
    figures = "".join(
        f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{data}"><figcaption>{esc(caption)}; '
        "dotted vertical line: the K the checks use</figcaption></figure>"
        for caption, data in panels)
    return ("<h2>Sensitivity to K (Figure 1)</h2><p>Agreement as the number of neighbours K varies: "
            "a conclusion that holds across K does not hinge on the choice of K.</p>" + figures)


def _evidence_section(results: Sequence[ComparisonResult], names: Sequence[str]) -> str:
    if not results:
        return ""
    pair_rank = {pair: i for i, pair in enumerate(pairs_of(results, names))}
    column_rank = {column: i for i, column in enumerate(columns_of(results))}
    ordered = sorted(results, key=lambda r: (pair_rank[(r.reference, r.candidate)],
                                             column_rank[(r.characteristic, r.stage)]))
    blocks = []
    for result in ordered:
        label = (f"{result.reference} vs {result.candidate} — {column_title((result.characteristic, result.stage))}: "
                 + (f"{result.verdict} {_fmt(result.figure)} ({len(result.evidence)} items)" if result.computed
                    else f"{result.verdict}: {result.reason}"))
        opened = " open" if verdict_class(result) in ("fail", "error") else ""
        blocks.append(f'<details{opened}><summary class="{verdict_class(result)}">{esc(label)}</summary>'
                      f"{evidence_html(result, style=False)}</details>")
    return ("<h2>Evidence: where the models diverge most</h2><p>Failing checks are open; click a "
            "line to see its items.</p>" + "".join(blocks))


def _changes_section(previous: Mapping[str, Any], results: Sequence[ComparisonResult], names: Sequence[str]) -> str:
    changes: list[Change] = compare_results(previous.get("results") or [], results, names)
    changed = [c for c in changes if c.changed]
    flipped = [c for c in changes if c.verdict_changed]
    rows: dict[bool, list[str]] = {True: [], False: []}
    for change in changes:
        cls = "verdict-changed" if change.verdict_changed else ("changed" if change.changed else "unchanged")
        delta = change.delta
        delta_text = "–" if delta is None or (isinstance(delta, float) and math.isnan(delta)) else f"{delta:+.3f}"
        verdict = (f'<span class="{verdict_class(change.previous)}">{esc(change.previous_verdict)}</span> → '
                   f'<span class="{verdict_class(change.current)}">{esc(change.current_verdict)}</span>')
        rows[change.changed].append(
            f'<tr class="{cls}" data-pair="{esc(change.pair)}" data-characteristic="{esc(change.key[2])}">'
            f"<td>{esc(change.pair)}</td><td>{esc(change.title)}</td>"
            f'<td class="num">{"absent" if change.previous is None else _fmt(change.previous.figure)}</td>'
            f'<td class="num">{"absent" if change.current is None else _fmt(change.current.figure)}</td>'
            f'<td class="num">{delta_text}</td><td>{verdict}</td></tr>')
    head = ('<table class="changes"><thead><tr><th>Model pair</th><th>Characteristic</th><th>Previous figure</th>'
            "<th>Current figure</th><th>Change</th><th>Verdict</th></tr></thead><tbody>")
    changed_table = head + "".join(rows[True]) + "</tbody></table>" if rows[True] else ""
    same = (f"<details><summary>{len(rows[False])} unchanged check(s)</summary>{head}"
            + "".join(rows[False]) + "</tbody></table></details>") if rows[False] else ""
    return (f"<h2>Changes since the previous run</h2><p>Compared with <code>{esc(previous.get('path', '?'))}</code> "
            f"(created {esc(previous.get('created', '?'))}): {len(changed)} of {len(changes)} checks changed, "
            f"{len(flipped)} verdict(s) changed (outlined).</p>" + changed_table + same)


def _run_section(payload: Mapping[str, Any], json_name: str | None, previous: Mapping[str, Any] | None) -> str:
    settings = payload.get("settings") or {}
    models = payload.get("models") or {}
    data = payload.get("data") or {}
    items: list[tuple[str, str]] = [
        ("created", esc(payload.get("created", "?"))),
        ("duration", "–" if payload.get("duration_s") is None else esc(f"{payload['duration_s']:.1f} s")),
        ("reference", f"{esc(models.get('reference') or '?')} <span class=\"muted\">"
                      f"({esc(settings.get('reference') or '?')})</span>"),
        ("candidates", "<br>".join(f"{esc(name)} <span class=\"muted\">({esc(source)})</span>"
                                   for name, source in zip(models.get("candidates") or [],
                                                           settings.get("candidate") or []))
         or "none"),
    ]
    if settings.get("reference-base") or settings.get("candidate-base"):
        bases = [settings.get("reference-base"), *(settings.get("candidate-base") or [])]
        items.append(("before fine-tuning", "<br>".join(esc(b) for b in bases if b)))
    items.append(("attack model", esc(f"{settings.get('attack-model', '?')} (attack size "
                                      f"{settings.get('attack-size', '?')}, top-K words {settings.get('attack-top-k', '?')})")))
    for role, source in data.items():
        items.append((f"{role} data", esc(source)))
    items.append(("K", esc(f"{settings.get('k', '?')} (sweep {settings.get('k-sweep', '?')})")))
    items.append(("thresholds", esc(
        f"errors {settings.get('threshold-errors')}, representation {settings.get('threshold-representation')}, "
        f"distribution {settings.get('threshold-distribution')}, attack {settings.get('threshold-attack')} "
        f"(+ drop within {settings.get('attack-drop-tolerance')} pp), judged on {settings.get('threshold-on')}")))
    if json_name:
        items.append(("JSON report", f'<a href="{esc(json_name)}">{esc(json_name)}</a>'))
    if previous is not None:
        items.append(("compared with", esc(previous.get("path", "?"))))
    versions = payload.get("versions") or {}
    items.append(("versions", esc(", ".join(f"{k} {v}" for k, v in versions.items()))))
    meta = "".join(f"<dt>{esc(name)}</dt><dd>{value}</dd>" for name, value in items)
    table = "".join(f"<tr><td>{esc(key)}</td><td>{esc(_setting_text(value))}</td></tr>"
                    for key, value in sorted(settings.items()))
    return (f'<h2>Run</h2><dl class="meta">{meta}</dl><details><summary>all settings</summary>'
            f"<table>{table}</table></details>")


def _setting_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) if value else "–"
    return "–" if value is None else str(value)
