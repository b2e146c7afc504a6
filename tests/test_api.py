"""miniature.compare(): the gate from Python gives a pytest run's figures, errors and reports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import miniature
from miniature.core.characteristics.base import ERROR, ComparisonResult
from miniature.core.settings import make_settings
from miniature.testing import figures_close

REPOSITORY = Path(__file__).resolve().parent.parent
#: what a result must agree on between the two runs (the numbers, the verdict and its reasons)
COMPARED = (
    "status",
    "gating",
    "figure_name",
    "figure",
    "chance",
    "corrected",
    "ci_low",
    "ci_high",
    "n",
    "k",
    "threshold",
    "threshold_on",
    "sweep",
    "conditions",
)


def fresh_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def keyed(results: list[dict]) -> dict[tuple, dict]:
    return {(r["characteristic"], r["reference"], r["candidate"], r["stage"]): r for r in results}


@pytest.mark.slow
def test_compare_gives_the_pytest_runs_figures_and_uses_the_same_cache(tiny_models, tmp_path: Path) -> None:
    models = [tiny_models["reference"], tiny_models["small"], tiny_models["distil"]]
    options = dict(attack_model=str(tiny_models["attacker"]), data_limit=60, attack_size=4, bootstrap=20)
    gate = [
        f"--reference={models[0]}",
        *(f"--candidate={m}" for m in models[1:]),
        *(f"--{k.replace('_', '-')}={v}" for k, v in options.items()),
    ]
    pytest_run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            *gate,
            f"--cache-dir={tmp_path / 'cache-pytest'}",
            f"--report-dir={tmp_path / 'reports'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY), "HF_HUB_OFFLINE": "1"},
    )
    assert pytest_run.returncode == 1, pytest_run.stdout + pytest_run.stderr  # the random models fail
    expected = json.loads((tmp_path / "reports" / "latest.json").read_text())["results"]

    api_run = fresh_python(
        f"""
        import json, sys
        import miniature
        report = miniature.compare({str(models[0])!r}, {[str(m) for m in models[1:]]!r},
                                   cache_dir={str(tmp_path / "cache-api")!r}, **{options!r})
        frame = report.to_pandas()
        print(json.dumps({{"passed": report.passed, "rows": len(frame), "columns": list(frame.columns),
                          "torch_before": "torch" in sys.modules}}))
        report.to_json({str(tmp_path / "api.json")!r})
        report.save_html({str(tmp_path / "api" / "summary.html")!r})
        """,
        tmp_path,
    )
    assert api_run.returncode == 0, api_run.stderr
    seen = json.loads(api_run.stdout.strip().splitlines()[-1])
    got = json.loads((tmp_path / "api.json").read_text())["results"]

    # one result per check the pytest run ran: 3 pairs x 5 characteristics, the same keys
    assert len(expected) == 15 and seen["rows"] == 15 and keyed(got).keys() == keyed(expected).keys()
    assert {"characteristic", "reference", "candidate", "stage", "verdict", "figure"} <= set(seen["columns"])
    for key, want in keyed(expected).items():
        have = keyed(got)[key]
        assert figures_close({f: have[f] for f in COMPARED}, {f: want[f] for f in COMPARED}), key
        assert have["reason"] == want["reason"], key
    assert seen["passed"] is False  # as the pytest run's exit status 1 says

    # the same cache: the API's cold run wrote the entries the pytest run wrote, under the same keys
    # (a shared chunk's file name carries its writer's clock and process id)
    def entries(root: Path) -> set[str]:
        return {
            re.sub(r"chunk-\d+-\d+-", "chunk-", str(p.relative_to(root)))
            for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        }

    assert entries(tmp_path / "cache-api") == entries(tmp_path / "cache-pytest")
    page = (tmp_path / "api" / "summary.html").read_text()
    assert "Agreement between model pairs (Table 2)" in page and 'data-characteristic="data_representation"' in page


def test_import_miniature_imports_no_torch(tmp_path: Path) -> None:
    done = fresh_python(
        "import sys, miniature; print(callable(miniature.compare), 'torch' in sys.modules, 'numpy' in sys.modules)",
        tmp_path,
    )
    assert done.stdout.split() == ["True", "False", "False"], done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "keyword, value, flag",
    [
        ("data_limit", 0, "--data-limit"),
        ("k", "ten", "--k"),
        ("threshold_errors", 1.5, "--threshold-errors"),
        ("attack_drop_tolerance", float("nan"), "--attack-drop-tolerance"),
    ],
)
def test_a_bad_value_is_the_command_lines_one_line_error(pytester: pytest.Pytester, keyword, value, flag) -> None:
    with pytest.raises(miniature.OptionError) as raised:
        miniature.compare("reference", ["candidate"], **{keyword: value})
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, miniature.MiniatureError)
    command_line = pytester.runpytest_subprocess(f"{flag}={value}")
    assert command_line.ret == pytest.ExitCode.USAGE_ERROR
    assert any(line.endswith(f": error: {raised.value}") for line in command_line.stderr.lines), (
        command_line.stderr.lines
    )  # word for word the same line


def test_options_that_do_not_go_together_or_do_not_exist_are_refused() -> None:
    with pytest.raises(miniature.OptionError, match="--threshold-on ci_lower with --bootstrap 0"):
        miniature.compare("reference", ["candidate"], threshold_on="ci_lower", bootstrap=0)
    with pytest.raises(miniature.OptionError, match="unknown option data_limt="):
        miniature.compare("reference", ["candidate"], data_limt=60)
    with pytest.raises(miniature.OptionError, match="--threshold nope=...: no such characteristic"):
        miniature.compare("reference", ["candidate"], threshold={"nope": 0.5})


def test_keywords_are_parsed_as_the_command_line_parses_them() -> None:
    settings = miniature.api.settings_from_keywords(
        reference="r",
        candidate=["a", "b"],
        k_sweep=(5, 1),
        threshold={"data_representation": 0.4},
        data_limit="60",
        refresh=True,
        cache_dir="~/c",
    )
    assert settings.k_sweep == (1, 5) and settings.thresholds == {"data_representation": 0.4}
    assert settings.data_limit == 60 and settings.refresh is True and settings.candidates == ["a", "b"]
    assert settings.cache_dir == Path("~/c").expanduser()


def test_notebook_table_escapes_text_and_a_report_passes_as_the_run_would() -> None:
    settings = make_settings(reference="a", candidate=["b"])
    hostile = ComparisonResult.not_computed(
        "data_distribution", "a<b>", "<img src=x onerror=alert(1)>", status=ERROR, reason="<script>alert(1)</script>"
    )
    report = miniature.Report([hostile], settings)
    html = report._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img" not in html and 'class="cell error"' in html and "FAILED" in html
    assert report.passed is False  # an errored check fails the run, as in pytest
    passing = ComparisonResult("prediction_errors", "a", "b", "error-set Jaccard", 0.7, 100, threshold=0.5)
    informational = ComparisonResult(
        "prediction_errors", "b", "c", "error-set Jaccard", 0.1, 100, threshold=0.5, gating=False
    )
    assert miniature.Report([passing, informational], settings).passed is True
    assert len(miniature.Report([passing, informational], settings).to_pandas()) == 2
