"""The figures of every characteristic on the tiny models, compared with the figures recorded
before the registry restructuring: a refactoring must not move a single number.

Regenerate the record only for a deliberate change of method:
``python tests/test_figures_unchanged.py --write``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from miniature.testing import figures_close, gate_figures

RECORD = Path(__file__).parent / "data" / "figures_before_registry.json"
CHARACTERISTICS = ("prediction_errors", "data_representation", "data_distribution", "adversarial_vulnerability")


def current_figures(models: Any, cache_dir: Path) -> dict[str, Any]:
    from miniature.core.gate import Gate
    from miniature.core.settings import make_settings

    settings = make_settings(
        reference=str(models["reference"]),
        candidate=[str(models["reference"]), str(models["small"]), str(models["distil"])],
        attack_model=str(models["attacker"]),
        cache_dir=cache_dir,
        data_limit=120,
        attack_size=40,
        bootstrap=200,
        seed=3,
    )
    return gate_figures(Gate(settings), CHARACTERISTICS)


@pytest.mark.slow
def test_figures_equal_the_record(tiny_models, tmp_path: Path) -> None:
    recorded = json.loads(RECORD.read_text())
    current = current_figures(tiny_models, tmp_path / "cache")
    assert current.keys() == recorded.keys()
    moved = {key: (recorded[key], current[key]) for key in recorded if not figures_close(recorded[key], current[key])}
    assert not moved, moved


if __name__ == "__main__" and "--write" in sys.argv:
    import tempfile

    import torch

    from miniature.tools.testing import make_tiny_models

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        models = make_tiny_models(Path(folder) / "tiny")
        figures = current_figures(models, Path(folder) / "cache")
    RECORD.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
    print(f"wrote {RECORD}: {len(figures)} results")
