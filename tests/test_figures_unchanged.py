"""The figures of every characteristic on the tiny models, compared with the figures recorded
before the registry restructuring (#15): a refactoring must not move a single number.

Regenerate the record only for a deliberate change of method:
``python tests/test_figures_unchanged.py --write``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

RECORD = Path(__file__).parent / "data" / "figures_before_registry.json"
CHARACTERISTICS = ("prediction_errors", "data_representation", "data_distribution",
                   "adversarial_vulnerability")
NUMBERS = ("figure", "chance", "corrected", "ci_low", "ci_high", "n", "k", "threshold")


def current_figures(models: Any, cache_dir: Path) -> dict[str, Any]:
    from miniature.engine import Gate
    from miniature.errors import NotApplicable
    from miniature.options import make_settings

    settings = make_settings(reference=str(models["reference"]),
                             candidate=[str(models["reference"]), str(models["small"]), str(models["distil"])],
                             attack_model=str(models["attacker"]), cache_dir=cache_dir,
                             data_limit=120, attack_size=40, bootstrap=200, seed=3)
    gate = Gate(settings)
    found: dict[str, Any] = {}
    for pair in gate.pairs():
        for characteristic in CHARACTERISTICS:
            key = f"{characteristic}:{pair.reference}-vs-{pair.candidate}"
            try:
                result = gate.compare(characteristic, pair)
            except NotApplicable as error:
                found[key] = {"skipped": str(error).split(";")[0]}
                continue
            entry = {name: getattr(result, name) for name in NUMBERS}
            entry["sweep"] = dict(result.sweep)
            entry["details"] = {k: v for k, v in result.details.items() if isinstance(v, (int, float))}
            found[key] = entry
    return found


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


@pytest.mark.slow
def test_figures_equal_the_record(tiny_models, tmp_path: Path) -> None:
    recorded = json.loads(RECORD.read_text())
    current = json.loads(json.dumps(current_figures(tiny_models, tmp_path / "cache")))
    assert current.keys() == recorded.keys()
    moved = {key: (recorded[key], current[key]) for key in recorded if not _close(recorded[key], current[key])}
    assert not moved, moved


if __name__ == "__main__" and "--write" in sys.argv:
    import tempfile

    import torch

    from miniature.testing import make_tiny_models

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        models = make_tiny_models(Path(folder) / "tiny")
        figures = current_figures(models, Path(folder) / "cache")
    RECORD.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
    print(f"wrote {RECORD}: {len(figures)} results")
