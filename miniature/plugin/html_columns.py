"""The pytest-html columns and per-test extras of the gate checks.

Registered by :class:`miniature.plugin.session.MiniatureSession` only when pytest-html is
loaded (its hooks exist then). The markup comes from the report templates
(``columns.html.j2``; the extras are :func:`miniature.reports.page.evidence_html`), escaped
by the template engine.
"""

from __future__ import annotations

from typing import Any

import pytest

from miniature.core.characteristics.base import ComparisonResult, format_number
from miniature.plugin.results import result_of
from miniature.reports.page import (
    VERDICT_COLOURS,
    ci_text,
    evidence_html,
    template_module,
    threshold_text,
    verdict_class,
)

HTML_COLUMNS = ("Verdict", "Figure", "Threshold", "95% CI", "Chance")
COLUMNS_TEMPLATE = "columns.html.j2"


def result_cells(result: ComparisonResult | None) -> list[str]:
    """The pytest-html row cells of :data:`HTML_COLUMNS` (empty ones for other tests)."""
    cell = template_module(COLUMNS_TEMPLATE).cell
    if result is None:
        return [str(cell())] * len(HTML_COLUMNS)
    return [
        str(cell(result.verdict, VERDICT_COLOURS[verdict_class(result)])),
        str(cell(f"{result.figure_name} {format_number(result.figure)}")),
        str(cell(threshold_text(result))),
        str(cell(ci_text(result))),
        str(cell(format_number(result.chance))),
    ]


class HtmlReportHooks:
    """pytest-html hooks, registered only when pytest-html is loaded (its hooks exist then)."""

    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        header = template_module(COLUMNS_TEMPLATE).header
        cells[2:2] = [str(header(title)) for title in HTML_COLUMNS]

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
