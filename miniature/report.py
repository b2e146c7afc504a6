"""Reports of a gate run: the terminal table and the JSON every figure lands in."""

from __future__ import annotations

import datetime as _dt
import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .characteristics.base import CHARACTERISTIC_TITLES, ComparisonResult, _fmt

REPORT_SCHEMA = 1


def summary_table(results: Sequence[ComparisonResult]) -> list[str]:
    """Pairs × characteristics, each cell ``PASS 0.61`` / ``FAIL 0.07``."""
    columns: list[tuple[str, str | None]] = []
    for result in results:
        column = (result.characteristic, result.stage)
        if column not in columns:
            columns.append(column)
    order = list(CHARACTERISTIC_TITLES)
    columns.sort(key=lambda c: (order.index(c[0]) if c[0] in order else 99, c[1] or ""))
    rows: dict[str, dict[tuple[str, str | None], ComparisonResult]] = {}
    for result in results:
        rows.setdefault(f"{result.reference} vs {result.candidate}", {})[
            (result.characteristic, result.stage)] = result
    headers = ["pair"] + [CHARACTERISTIC_TITLES.get(c, c) + (f" ({s})" if s else "") for c, s in columns]
    table = [headers]
    for pair, cells in rows.items():
        line = [pair]
        for column in columns:
            result = cells.get(column)
            line.append("-" if result is None else f"{result.verdict} {_fmt(result.figure)}")
        table.append(line)
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table]


def report_payload(results: Sequence[ComparisonResult], settings: Any) -> dict[str, Any]:
    """Everything a machine needs: settings, versions and every result's figures."""
    values = {k.lstrip("-"): (str(v) if isinstance(v, Path) else v)
              for k, v in getattr(settings, "values", {}).items()}
    return {
        "schema": REPORT_SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": values,
        "versions": _versions(),
        "results": [json.loads(r.to_json()) for r in results],
    }


def _versions() -> dict[str, str]:
    from importlib import metadata

    found = {"python": platform.python_version()}
    for package in ("miniature", "torch", "transformers", "faiss-cpu", "numpy", "textattack"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def write_json(results: Sequence[ComparisonResult], settings: Any, report_dir: Path) -> Path:
    """Write ``miniature-<timestamp>.json`` (never overwriting) and ``latest.json``."""
    from .cache import atomic_write_text

    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report_payload(results, settings), indent=2, sort_keys=True, default=str)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = report_dir / f"miniature-{stamp}.json"
    counter = 1
    while path.exists():
        counter += 1
        path = report_dir / f"miniature-{stamp}-{counter}.json"
    atomic_write_text(path, text)
    atomic_write_text(report_dir / "latest.json", text)
    return path
