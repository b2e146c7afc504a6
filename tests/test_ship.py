"""A gate in anyone's CI: the checks ship with the package, models are found before any
work, offline failures take seconds, skipped and errored checks are reported, the CI recipe runs.

The slow tests run the gate as a team would: from a folder that is not this repository,
with miniature installed from a wheel built from this checkout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from miniature.core import settings as opt
from miniature.core.models import HUB_PROBE_TIMEOUT_S
from miniature.plugin.runtime import SHIPPED_CHECKS_NODEID

REPOSITORY = Path(__file__).resolve().parent.parent
#: an address nothing answers on: the connection is refused at once
REFUSED_ENDPOINT = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def silent_endpoint():
    """A hub that accepts connections and never answers (a firewall that drops replies)."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)  # connections complete in the backlog; nothing is ever accepted or read
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def small_gate(tiny_models, where: Path, *extra: str, candidate: str = "small") -> list[str]:
    return [
        f"--reference={tiny_models['reference']}",
        f"--candidate={tiny_models[candidate]}",
        f"--attack-model={tiny_models['attacker']}",
        f"--cache-dir={where / 'cache'}",
        f"--report-dir={where / 'reports'}",
        "--data-limit=60",
        "--attack-size=4",
        "--bootstrap=20",
        "-p",
        "no:cacheprovider",
        *extra,
    ]


# -- the checks ship with the package ------------------------------------------------------------
@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `python -m build` makes of this checkout (no isolation: offline, this
    environment's setuptools)."""
    dist = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(REPOSITORY)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return next(dist.glob("pytest_miniature-*.whl"))


@pytest.fixture(scope="module")
def installed_wheel(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python whose only miniature is the wheel (not the editable install): a fresh venv,
    `pip install` of the wheel, this environment's other packages (torch, ...) on its path."""
    venv = tmp_path_factory.mktemp("wheel") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # without PYTHONPATH: a checkout on it (with the build's egg-info) would count as installed already
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(built_wheel)],
        check=True,
        capture_output=True,
        env=env,
    )
    # the other packages from this environment, as plain path entries: its editable-install
    # hook for miniature is a .pth file that is *not* processed this way
    (purelib / "zz-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_the_wheel_holds_what_the_plugin_reads_and_not_the_projects_tests(built_wheel: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_wheel", REPOSITORY / ".ci" / "check_wheel.py")
    check_wheel = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_wheel)
    assert check_wheel.problems(built_wheel) == []


@pytest.mark.slow
def test_the_installed_wheel_is_pytest_miniature_with_its_metadata(installed_wheel: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    shown = subprocess.run(
        [str(installed_wheel), "-m", "pip", "show", "pytest-miniature"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr
    import miniature

    assert f"Version: {miniature.__version__}" in shown.stdout
    metadata = subprocess.run(
        [
            str(installed_wheel),
            "-c",
            "import importlib.metadata as m; "
            "d = m.metadata('pytest-miniature'); "
            "print('\\n'.join([d['License-Expression'], *d.get_all('Classifier')]))",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    assert metadata.splitlines()[0] == "MIT" and "Framework :: Pytest" in metadata.splitlines()
    version = subprocess.run(
        [str(installed_wheel), "-m", "pytest", "--version", "--version"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert f"pytest-miniature-{miniature.__version__}" in version.stdout + version.stderr
    command = subprocess.run(
        [str(installed_wheel.parent / "miniature"), "--version"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert command.stdout.strip() == f"miniature {miniature.__version__}"


@pytest.mark.slow
def test_wheel_in_a_folder_without_checks_runs_the_gate(installed_wheel: Path, tiny_models, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    where = subprocess.run(
        [str(installed_wheel), "-c", "import miniature.plugin.checks as c; print(c.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    ).stdout
    assert str(installed_wheel.parent.parent) in where and str(REPOSITORY) not in where
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_own.py").write_text("def test_own():\n    assert True\n")
    done = subprocess.run(
        [str(installed_wheel), "-m", "pytest", *small_gate(tiny_models, tmp_path)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout
    assert done.returncode == 1, out + done.stderr  # the small random model differs from the reference
    assert "collected 5 items" in out and "test_own" not in out  # the gate only: no paths were given
    assert f"FAILED {SHIPPED_CHECKS_NODEID}::test_data_representation[reference-vs-small-task]" in out
    assert "miniature summary" in out and re.search(r"reference vs small\s+(PASS|FAIL) ", out)
    assert (tmp_path / "reports" / "summary.html").is_file()


@pytest.mark.slow
def test_own_tests_and_the_gate_coexist(gate_checks: pytest.Pytester, tiny_models) -> None:
    gate_checks.makepyfile(test_own="def test_project():\n    assert 1 + 1 == 2\n")
    gate = small_gate(tiny_models, gate_checks.path, "-k", "distribution")
    both = gate_checks.runpytest(".", *gate)  # paths given: the project's tests and the gate
    both.assert_outcomes(passed=1, deselected=5)  # -k distribution keeps the gate's distribution check
    assert f"{SHIPPED_CHECKS_NODEID}::test_data_distribution" in "\n".join(
        gate_checks.runpytest(".", *gate, "--co", "-q").outlines
    )
    own_only = gate_checks.runpytest(".", *small_gate(tiny_models, gate_checks.path), "-m", "not miniature")
    own_only.assert_outcomes(passed=1, deselected=5)
    gate_only = gate_checks.runpytest(*small_gate(tiny_models, gate_checks.path), "--co", "-q")
    assert "test_own.py" not in gate_only.stdout.str() and "5 tests collected" in gate_only.stdout.str()


def test_without_reference_a_project_runs_only_its_own_tests(gate_checks: pytest.Pytester) -> None:
    gate_checks.makepyfile(test_own="def test_project():\n    assert True\n")
    result = gate_checks.runpytest()
    result.assert_outcomes(passed=1)
    assert "equivalence" not in result.stdout.str()


def test_a_project_copy_of_the_checks_replaces_the_shipped_ones(gate_checks: pytest.Pytester, tiny_models) -> None:
    gate_checks.mkdir("checks")
    (gate_checks.path / "checks" / "test_equivalence.py").write_text(
        "def test_only_distribution(data_distribution, model_pair):\n    data_distribution.check(model_pair)\n"
    )
    result = gate_checks.runpytest(*small_gate(tiny_models, gate_checks.path), "--co", "-q")
    assert "checks/test_equivalence.py::test_only_distribution[reference-vs-small]" in result.stdout.str()
    assert "1 test collected" in result.stdout.str()


def test_no_check_collected_is_said_in_one_line(gate_checks: pytest.Pytester, tiny_models) -> None:
    result = gate_checks.runpytest(*small_gate(tiny_models, gate_checks.path, "-k", "no_such_check"))
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    lines = [line for line in result.outlines if "no equivalence check ran" in line]
    assert len(lines) == 1 and "-k 'no_such_check' deselected all of them" in lines[0]


# -- models found before any work; offline in seconds ----------------------------------------------
def run_gate_subprocess(args: list[str], cwd: Path, **env_overrides: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "HF_HOME": str(cwd / "hf-home"), **env_overrides}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    return done, time.perf_counter() - started


OFFLINE_WAYS = [
    pytest.param({"HF_HUB_OFFLINE": "1"}, id="HF_HUB_OFFLINE"),
    pytest.param({"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": REFUSED_ENDPOINT}, id="hub-refuses"),
    pytest.param({"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "silent"}, id="hub-silent"),
]


@pytest.mark.wall_clock
@pytest.mark.slow
@pytest.mark.parametrize("offline", OFFLINE_WAYS)
def test_unreachable_attack_model_skips_the_attack_in_seconds(
    tiny_models, tmp_path: Path, offline, silent_endpoint: str
) -> None:
    if offline.get("HF_ENDPOINT") == "silent":
        offline = {**offline, "HF_ENDPOINT": silent_endpoint}
    args = small_gate(tiny_models, tmp_path, "--attack-model=google-bert/bert-base-uncased", "-k", "adversarial")
    done, seconds = run_gate_subprocess(args, tmp_path, **offline)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    # the same run with the attack model on disk: what starting Python, pytest and torch costs
    # on this machine now; the unreachable hub may add at most its one probe's timeout
    local = small_gate(tiny_models, tmp_path / "local", "-k", "adversarial")
    _, baseline = run_gate_subprocess(local, tmp_path, **offline)
    assert seconds < max(10.0, baseline + HUB_PROBE_TIMEOUT_S + 2), (
        f"took {seconds:.1f} s ({baseline:.1f} s with a local model)"
    )
    reasons = [line for line in done.stdout.splitlines() if "bert-base-uncased" in line]
    assert len(reasons) == 1 and "'google-bert/bert-base-uncased'" in reasons[0] and "fix:" in reasons[0]
    assert "not in the local Hugging Face cache" in reasons[0]
    assert not re.search(r"retry|Retrying|During handling", out, re.IGNORECASE)
    payload = json.loads((tmp_path / "reports" / "latest.json").read_text())
    attack = [r for r in payload["results"] if r["characteristic"] == "adversarial_vulnerability"]
    assert [r["status"] for r in attack] == ["skipped"] and "bert-base-uncased" in attack[0]["reason"]


@pytest.mark.wall_clock
@pytest.mark.slow
@pytest.mark.parametrize("offline", OFFLINE_WAYS[:2])
def test_unreachable_candidate_fails_the_run_in_seconds_with_one_line(tiny_models, tmp_path: Path, offline) -> None:
    args = [
        f"--reference={tiny_models['reference']}",
        "--candidate=google/bert_uncased_L-2_H-128_A-2",
        "--candidate=distilbert",
        f"--cache-dir={tmp_path / 'cache'}",
        "-p",
        "no:cacheprovider",
    ]
    done, seconds = run_gate_subprocess(args, tmp_path, **offline)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert seconds < 10, f"took {seconds:.1f} s"
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 2, lines  # one line per missing model, nothing else
    assert "'google/bert_uncased_L-2_H-128_A-2'" in lines[0] and "'distilbert'" in lines[1]
    assert all("fix:" in line for line in lines)


# -- skipped and errored checks are reported ---------------------------------------------------
@pytest.mark.slow
def test_skipped_and_errored_checks_are_cells_of_their_own(
    gate_checks: pytest.Pytester, tiny_models, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = gate_checks.path
    # an attack model that is not on this machine (offline): the attack is skipped;
    # K=70 > 60 items: representation and distribution error
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = small_gate(
        tiny_models,
        where,
        "--attack-model=miniature-tests/no-such-lm",
        f"{opt.K}=70",
        f"{opt.K_SWEEP}=5",
        "--junitxml=junit.xml",
        candidate="reference",
    )
    result = gate_checks.runpytest(*args)
    result.assert_outcomes(passed=2, failed=2, skipped=1)
    payload = json.loads((where / "reports" / "latest.json").read_text())
    statuses = {r["characteristic"]: r["status"] for r in payload["results"]}
    assert statuses == {
        "prediction_errors": "computed",
        "adversarial_vulnerability": "skipped",
        "data_representation": "error",
        "data_distribution": "error",
        "representation_similarity": "computed",
    }
    assert payload["gate"] == {"total": 5, "failed": 0, "error": 2, "skipped": 1}
    page = (where / "reports" / "summary.html").read_text()
    assert "Gate FAILED: 0 of 5 gating checks below threshold, 2 errored" in page and "1 skipped" in page
    errors = re.findall(
        r'<td class="cell error"[^>]*><div class="verdict">ERROR</div><div class="sub">([^<]*)</div>', page
    )
    assert len(errors) == 2 and all("70" in cell and "choose" in cell for cell in errors)
    skipped = re.findall(
        r'<td class="cell skipped"[^>]*><div class="verdict">SKIPPED</div><div class="sub">([^<]*)</div>', page
    )
    assert len(skipped) == 1 and "no-such-lm" in skipped[0] and "HF_HUB_OFFLINE" in skipped[0]
    out = result.stdout.str()
    assert "ERROR: reference vs reference#2 data representation:" in out
    assert "SKIPPED: reference vs reference#2 adversarial vulnerability: attack model:" in out
    junit = (where / "junit.xml").read_text()
    assert junit.count('name="miniature_verdict" value="ERROR"') == 2
    assert junit.count('name="miniature_verdict" value="SKIPPED"') == 1
    assert re.search(r'name="miniature_figure" value="[01](\.\d+)?"', junit)
    assert 'name="miniature_threshold" value="0.5"' in junit


# -- the CI recipe ------------------------------------------------------------------------------
CI_RECIPE = REPOSITORY / "examples" / "ci" / "miniature-gate.yml"


def gate_step() -> dict:
    import yaml

    workflow = yaml.safe_load(CI_RECIPE.read_text())
    steps = workflow["jobs"]["gate"]["steps"]
    return next(step for step in steps if step.get("name") == "Gate")


def test_ci_recipe_uploads_what_the_gate_writes() -> None:
    import yaml

    workflow = yaml.safe_load(CI_RECIPE.read_text())
    steps = {step.get("name"): step for step in workflow["jobs"]["gate"]["steps"]}
    assert steps["Restore the output cache"]["with"]["path"] == ".miniature-cache"
    uploaded = steps["Upload the summary page and JSON"]["with"]["path"].split()
    assert {"reports/latest.json", "reports/summary.html", "reports/junit.xml"} <= set(uploaded)
    assert steps["Last report of main"]["with"]["path"] == "baseline"
    install = steps["Install"]["run"]  # our distribution, not the unrelated `miniature` on PyPI
    assert "pip install pytest-miniature pytest-html" in install and "pip install miniature" not in install
    assert "git+https://" in install  # how to install before a release
    run = gate_step()["run"]
    assert "--cache-dir=.miniature-cache" in run and "--report-dir=reports" in run
    assert "--junitxml=reports/junit.xml" in run and "baseline/latest.json" in run


@pytest.mark.slow
def test_ci_recipe_commands_run_twice_and_compare_with_the_last_report(
    installed_wheel: Path, tiny_models, tmp_path: Path
) -> None:
    """The workflow's Gate step, run by bash as the runner would, with the installed wheel's
    Python, from a project folder with no checks; the second run finds the first one's report
    where the download step puts it and compares."""
    step = gate_step()
    project = tmp_path / "project"
    project.mkdir()
    # the team's settings live in its pyproject.toml, as the recipe says
    (project / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nminiature_data_limit = "60"\nminiature_bootstrap = "20"\n'
        f'miniature_attack_size = "4"\nminiature_attack_model = "{tiny_models["attacker"]}"\n'
    )
    env = {
        **os.environ,
        **{k: str(v) for k, v in step["env"].items()},
        "REFERENCE": str(tiny_models["reference"]),
        "CANDIDATE": str(tiny_models["small"]),
        "PATH": f"{installed_wheel.parent}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("PYTHONPATH", None)

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", step["run"]],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    first = run()
    assert first.returncode == 1, first.stdout + first.stderr  # the small random model fails representation
    reports = project / "reports"
    assert {"latest.json", "summary.html", "junit.xml", "pytest.html"} <= {p.name for p in reports.iterdir()}
    junit = (reports / "junit.xml").read_text()
    for characteristic in (
        "prediction_errors",
        "data_representation",
        "data_distribution",
        "adversarial_vulnerability",
    ):
        assert f'name="test_{characteristic}[' in junit
    assert junit.count('name="miniature_verdict"') == 5 and 'name="miniature_verdict" value="FAIL"' in junit
    assert junit.count('name="miniature_figure"') == 5 and junit.count('name="miniature_threshold"') == 5
    assert "compared with" not in (reports / "summary.html").read_text()

    (project / "baseline").mkdir()
    (project / "baseline" / "latest.json").write_bytes((reports / "latest.json").read_bytes())
    second = run()
    assert second.returncode == 1
    assert "no change since baseline/latest.json: same figures and verdicts for all 5 checks" in second.stdout
    assert json.loads((reports / "latest.json").read_text())["compare_to"] == "baseline/latest.json"
