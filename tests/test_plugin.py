"""The plugin itself, run in-process with pytester: options, ini, help, skips, gate runs."""

from __future__ import annotations

import json

import pytest

from miniature.core import settings as opt


def test_help_lists_every_option_in_one_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    out = result.stdout.str()
    assert "miniature: does a compressed model still behave like the reference?" in out
    for option in opt.OPTIONS:
        assert option.flag in out, option.flag
        assert option.ini in out, option.ini


def test_without_reference_copied_checks_skip_with_one_clear_line(gate_checks: pytest.Pytester) -> None:
    from pathlib import Path

    from miniature.plugin import checks

    gate_checks.mkdir("checks")
    (gate_checks.path / "checks" / "test_equivalence.py").write_text(
        (Path(checks.__file__).parent / "test_equivalence.py").read_text()
    )
    gate_checks.makepyfile(test_own="def test_project():\n    assert 1 + 1 == 2\n")
    result = gate_checks.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=6)  # one per characteristic
    out = result.stdout.str()
    assert out.count(f"miniature: no {opt.REFERENCE} given") >= 1
    result.stdout.fnmatch_lines([f"miniature: no {opt.REFERENCE} given, so the equivalence checks were skipped; run*"])


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        (opt.K, "zero", "not a whole number"),
        (opt.K, "0", "below the minimum 1"),
        (opt.THRESHOLD_ERRORS, "1.5", "outside [0, 1]"),
        (opt.THRESHOLD_REPRESENTATION, "high", "not a number in [0, 1]"),
        (opt.TASK, "translation", "not one of classification, qa"),
        (opt.DEVICE, "tpu", "not one of auto, cpu, cuda, mps"),
        (opt.K_SWEEP, "1,x", "comma-separated list"),
        (opt.OOD_KEEP, "1", "strictly between 0 and 1"),
    ],
)
def test_bad_values_fail_at_parse_time(pytester: pytest.Pytester, flag: str, value: str, expected: str) -> None:
    result = pytester.runpytest(f"{flag}={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert flag in err and expected in err


def test_ini_values_apply_and_command_line_overrides(pytester: pytest.Pytester, tiny_models) -> None:
    pytester.makeini(f"""
        [pytest]
        miniature_k = 7
        miniature_threshold_errors = 0.25
        miniature_candidate =
            {tiny_models["small"]}
            {tiny_models["distil"]}
    """)
    pytester.makeconftest("""
        from miniature.plugin import session_of
        def pytest_report_header(config):
            s = session_of(config).settings
            return [f"K={s['--k']} T={s['--threshold-errors']} C={s.candidates} B={s['--batch-size']}"]
    """)
    result = pytester.runpytest(f"--reference={tiny_models['reference']}", "--k=3", "--co")
    result.stdout.fnmatch_lines([f"K=3 T=0.25 C=['{tiny_models['small']}', '{tiny_models['distil']}'] B=32"])


def test_bad_ini_value_names_the_ini_key(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nminiature_k = ten\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "miniature_k" in result.stderr.str() and "not a whole number" in result.stderr.str()


def test_candidate_without_reference_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--candidate=tinybert")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"{opt.CANDIDATE} given without {opt.REFERENCE}" in result.stderr.str()


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("bert-lage", "unknown model alias 'bert-lage' (did you mean 'bert-large'"),
        ("./no/such/dir", "does not exist"),
    ],
)
def test_bad_reference_is_one_clear_line(pytester: pytest.Pytester, reference: str, expected: str) -> None:
    result = pytester.runpytest(f"--reference={reference}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    lines = [line for line in result.stderr.lines if line.strip()]
    assert len(lines) == 1 and expected in lines[0] and "fix:" in lines[0]


@pytest.mark.slow
def test_model_against_itself_passes_every_check_with_agreement_one(gate_checks: pytest.Pytester, tiny_models) -> None:
    reference = str(tiny_models["reference"])
    result = gate_checks.runpytest(
        f"--reference={reference}",
        f"--candidate={reference}",
        f"--cache-dir={gate_checks.path / 'cache'}",
        "--bootstrap=50",
        f"--report-dir={gate_checks.path / 'reports'}",
        "--data-limit=200",
        f"--attack-model={tiny_models['attacker']}",
        "--attack-size=40",
    )
    result.assert_outcomes(passed=5)
    payload = json.loads((gate_checks.path / "reports" / "latest.json").read_text())
    figures = {r["characteristic"]: r["figure"] for r in payload["results"]}
    assert set(figures) == {
        "prediction_errors",
        "data_representation",
        "data_distribution",
        "adversarial_vulnerability",
        "representation_similarity",
    }
    assert all(abs(value - 1.0) < 1e-9 for value in figures.values()), figures
    result.stdout.fnmatch_lines(["*miniature summary*", "reference vs reference#2*PASS 1*PASS 1*PASS 1*PASS 1*PASS 1*"])


@pytest.mark.slow
def test_differently_initialised_model_fails_representation_readably(gate_checks: pytest.Pytester, tiny_models) -> None:
    result = gate_checks.runpytest(
        f"--reference={tiny_models['reference']}",
        f"--candidate={tiny_models['reinit']}",
        f"--cache-dir={gate_checks.path / 'cache'}",
        "--bootstrap=50",
        "--data-limit=200",
        f"--report-dir={gate_checks.path / 'reports'}",
        "-k",
        "data_representation",
    )
    result.assert_outcomes(failed=1, deselected=4)
    result.stdout.fnmatch_lines(
        [
            "data representation: kNN Jaccard * (95% CI *, chance *) < threshold 0.5 — reference vs reinit, K=10, n=200",
            "  fix: *--threshold-representation*",
        ]
    )
    assert "Traceback" not in result.stdout.str()


@pytest.mark.slow
def test_candidate_pairs_inform_without_failing(gate_checks: pytest.Pytester, tiny_models) -> None:
    reference = str(tiny_models["reference"])
    args = [
        f"--reference={reference}",
        f"--candidate={reference}",
        f"--candidate={tiny_models['reinit']}",
        f"--cache-dir={gate_checks.path / 'cache'}",
        "--bootstrap=0",
        "--data-limit=150",
        f"--report-dir={gate_checks.path / 'reports'}",
        "-k",
        "data_representation",
    ]
    result = gate_checks.runpytest(*args)
    # reference vs its copy passes, reference vs reinit fails, copy vs reinit diverges but only informs
    result.assert_outcomes(passed=2, failed=1, deselected=12)
    result.stdout.fnmatch_lines(["reference#2 vs reinit*DIVERGES*"])
    gated = gate_checks.runpytest(*args, "--gate-all-pairs")
    gated.assert_outcomes(passed=1, failed=2, deselected=12)
