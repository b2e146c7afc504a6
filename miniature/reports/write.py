"""Write one run's reports: the JSON payload and the summary page rendered from it, each
timestamped plus a 'latest' copy.

Above both :mod:`miniature.reports.payload` (the JSON) and :mod:`miniature.reports.page`
(which renders the page from the JSON): the page imports the payload's helpers, this module
imports both.
"""

from __future__ import annotations

import datetime as _dt
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miniature.core.characteristics.base import ComparisonResult
from miniature.reports.page import render_summary_page
from miniature.reports.payload import report_payload

PAGE_NAME = "summary.html"
LATEST_JSON = "latest.json"


@dataclass(frozen=True)
class ReportPaths:
    """Where one run's reports were written (timestamped files plus the 'latest' copies)."""

    json: Path
    latest_json: Path
    page: Path
    latest_page: Path


def _stamp() -> str:
    """The time to the millisecond and a random suffix: two runs finishing at once into one
    folder get different names (and an exclusive create refuses to overwrite either way)."""
    now = _dt.datetime.now()
    return f"{now:%Y%m%d-%H%M%S}.{now.microsecond // 1000:03d}-{secrets.token_hex(2)}"


def _dumps(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, indent=2, sort_keys=True, default=str)


def write_reports(
    results: Sequence[ComparisonResult],
    settings: Any,
    report_dir: Path,
    *,
    duration_s: float | None = None,
    previous: Mapping[str, Any] | None = None,
    execution: Mapping[str, Any] | None = None,
    models: Mapping[str, Any] | None = None,
) -> ReportPaths:
    """Write the JSON and the summary page, each timestamped plus a 'latest' copy.

    ``previous`` is a :func:`~miniature.reports.payload.load_report` payload
    (``--compare-to``); the page then shows what changed since it. ``models`` is the run's
    model table (:func:`miniature.core.model_table.model_table`), as the run resolved it.
    """
    from miniature.core.cache import atomic_write_text

    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    payload = report_payload(
        results,
        settings,
        duration_s=duration_s,
        execution=execution,
        models=models,
        compare_to=None if previous is None else str(previous.get("path")),
    )
    text = _dumps(payload)
    for _ in range(100):  # a name another run took since is never overwritten: take another
        stamp = _stamp()
        paths = ReportPaths(
            json=report_dir / f"miniature-{stamp}.json",
            latest_json=report_dir / LATEST_JSON,
            page=report_dir / f"summary-{stamp}.html",
            latest_page=report_dir / PAGE_NAME,
        )
        try:
            atomic_write_text(paths.json, text, exclusive=True)
        except FileExistsError:
            continue
        page = render_summary_page(json.loads(text), previous=previous, json_name=paths.json.name)
        try:
            atomic_write_text(paths.page, page, exclusive=True)
        except FileExistsError:
            paths.json.unlink()
            continue
        break
    else:
        raise FileExistsError(f"no free report name in {report_dir} after 100 tries")
    atomic_write_text(paths.latest_json, text)
    atomic_write_text(paths.latest_page, page)
    return paths
