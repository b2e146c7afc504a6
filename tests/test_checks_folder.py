"""The repository's checks/ folder, the one a team copies: the shipped checks, a characteristic
of the project's own (checks/conftest.py) and thresholds in checks/pytest.ini."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent


def run_pytest(*args: str, tiny_models, where: Path, gate: bool = True) -> subprocess.CompletedProcess:
    options = (
        [
            f"--reference={tiny_models['reference']}",
            f"--candidate={tiny_models['small']}",
            f"--attack-model={tiny_models['attacker']}",
            f"--cache-dir={where / 'cache'}",
            f"--report-dir={where / 'reports'}",
            "--data-limit=60",
            "--attack-size=4",
            "--bootstrap=20",
            "-p",
            "no:cacheprovider",
        ]
        if gate
        else ["-p", "no:cacheprovider"]
    )
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", *args, *options],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_pytest_checks_runs_the_shipped_checks_and_the_projects_own(tiny_models, tmp_path: Path) -> None:
    done = run_pytest("checks", tiny_models=tiny_models, where=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out  # the small random model differs from the reference
    assert "collected 6 items" in out and "test_norm_agreement[reference-vs-small]" in out
    results = json.loads((tmp_path / "reports" / "latest.json").read_text())["results"]
    thresholds = {r["characteristic"]: r["threshold"] for r in results}
    # checks/pytest.ini's thresholds apply; the others keep their defaults
    assert thresholds == {
        "prediction_errors": 0.5,
        "data_representation": 0.4,
        "data_distribution": 0.5,
        "adversarial_vulnerability": 0.5,
        "representation_similarity": 0.85,
        "norm_agreement": 0.3,
    }
    norm = next(r for r in results if r["characteristic"] == "norm_agreement")
    assert norm["status"] == "computed" and 0.0 <= norm["figure"] <= 1.0 and norm["n"] == 60


@pytest.mark.slow
def test_the_repositorys_own_test_run_does_not_collect_the_checks_folder(tiny_models, tmp_path: Path) -> None:
    """`pytest` and `pytest tests` here collect tests/ only (testpaths); `pytest --reference ...`
    with no paths in this repository runs the gate from checks/, not tests/."""
    for args in ((), ("tests",)):
        own = run_pytest(*args, "--co", "-q", tiny_models=tiny_models, where=tmp_path, gate=False)
        assert "checks/" not in own.stdout and "tests/test_docs.py::" in own.stdout, own.stdout + own.stderr
    gate_only = run_pytest("--co", "-q", tiny_models=tiny_models, where=tmp_path)
    collected = [line for line in gate_only.stdout.splitlines() if "::" in line]
    assert collected and all(line.startswith("checks/test_equivalence.py::") for line in collected), gate_only.stdout
    # the folder's own characteristic (checks/conftest.py, found during collection) runs there too
    assert any("test_norm_agreement[reference-vs-small]" in line for line in collected), gate_only.stdout
