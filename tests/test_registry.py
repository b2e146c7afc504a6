"""The registry: a characteristic is one object; a project registers its own through
the ``pytest_miniature_characteristics`` hook and sees it gate the run, in the terminal
summary, the JSON and the summary page."""

from __future__ import annotations

import json

import pytest

from miniature import Characteristic
from miniature.core import settings as opt
from miniature.core.registry import BUILTIN, Registry

CONFTEST = '''
import numpy as np

from miniature import Characteristic
from miniature.core.characteristics.base import ComparisonResult
from miniature.core.stats import set_agreement


def compare_norms(gate, pair, stage):
    """Jaccard of the sets of test items whose sentence vector is longer than the median."""
    def long_items(name):
        norms = np.linalg.norm(gate.outputs(name, "test", stage=stage)["embeddings"], axis=1)
        return norms > np.median(norms)

    agreement = set_agreement(long_items(pair.reference), long_items(pair.candidate),
                              n_bootstrap=gate.settings.bootstrap, seed=gate.settings.seed)
    return ComparisonResult(
        characteristic="norm_agreement", reference=pair.reference, candidate=pair.candidate,
        figure_name="long-vector Jaccard", figure=agreement.figure, n=len(gate.data.test),
        threshold=gate.threshold("norm_agreement"), threshold_on=gate.settings.threshold_on,
        gating=pair.gating, chance=agreement.chance, corrected=agreement.corrected,
        ci_low=agreement.ci_low, ci_high=agreement.ci_high)


def pytest_miniature_characteristics(config):
    return [Characteristic("norm_agreement", "norm agreement", compare_norms, default_threshold=0.2,
                           fix="the candidate's long vectors are other items'",
                           evidence_title="Items with long vectors under one model only")]
'''


def test_builtin_registry_is_the_paper_four_and_similarity() -> None:
    names = [c.name for c in BUILTIN]
    assert names == [
        "prediction_errors",
        "data_representation",
        "data_distribution",
        "adversarial_vulnerability",
        "representation_similarity",
        "token_distribution",
    ]
    # every built-in has its threshold option, generated from the registry
    assert {c.threshold_flag for c in BUILTIN} <= set(opt.BY_FLAG)
    for characteristic in BUILTIN:
        assert callable(characteristic.compare_function)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(name="Bad Name"), "lower_case_with_underscores"),
        (dict(needs=frozenset({"gpu"})), "needs unknown"),
        (dict(default_threshold=1.5), "default_threshold must be in"),
    ],
)
def test_a_bad_characteristic_is_refused(kwargs, message) -> None:
    values = dict(name="mine", title="mine", compare=lambda gate, pair, stage: None)
    values.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Characteristic(**values)


def test_a_name_is_registered_once() -> None:
    registry = Registry(BUILTIN)
    with pytest.raises(ValueError, match="registered twice"):
        registry.add(BUILTIN[0])
    with pytest.raises(KeyError, match="no characteristic 'nope'"):
        registry["nope"]


@pytest.mark.slow
def test_a_conftest_characteristic_gates_the_run_and_is_reported(gate_checks: pytest.Pytester, tiny_models) -> None:
    gate_checks.makeconftest(CONFTEST)
    where = gate_checks.path
    args = [
        f"--reference={tiny_models['reference']}",
        f"--candidate={tiny_models['reference']}",
        f"--cache-dir={where / 'cache'}",
        f"--report-dir={where / 'reports'}",
        "--data-limit=60",
        "--bootstrap=20",
        "-k",
        "norm or representation",
    ]
    result = gate_checks.runpytest(*args)
    result.assert_outcomes(passed=3)  # norm agreement, kNN representation, CKA: the model against itself
    result.stdout.fnmatch_lines(["*miniature summary*", "pair*norm agreement*", "reference vs reference#2*PASS 1*"])
    payload = json.loads((where / "reports" / "latest.json").read_text())
    norm = [r for r in payload["results"] if r["characteristic"] == "norm_agreement"]
    assert len(norm) == 1 and norm[0]["figure"] == 1.0 and norm[0]["threshold"] == 0.2
    page = (where / "reports" / "summary.html").read_text()
    assert "norm agreement" in page and 'data-characteristic="norm_agreement"' in page

    # its threshold is set like any other, and a failure names its fix
    small = [
        a.replace(str(tiny_models["reference"]), str(tiny_models["small"])) if a.startswith("--candidate") else a
        for a in args
    ]
    failed = gate_checks.runpytest(*small, "--threshold", "norm_agreement=1", "-k", "norm")
    failed.assert_outcomes(failed=1, deselected=5)
    failed.stdout.fnmatch_lines(["*< threshold 1*", "  fix: the candidate's long vectors are other items'"])


MEASURING_CONFTEST = '''
import numpy as np

from miniature import Characteristic
from miniature.core.characteristics.base import Measurement
from miniature.core.stats import set_agreement


def measure_norms(gate, pair, stage):
    """What it measured only: no threshold, no threshold_on, no gating."""
    def long_items(name):
        norms = np.linalg.norm(gate.outputs(name, "test", stage=stage)["embeddings"], axis=1)
        return norms > np.median(norms)

    agreement = set_agreement(long_items(pair.reference), long_items(pair.candidate),
                              n_bootstrap=gate.settings.bootstrap, seed=gate.settings.seed)
    return Measurement(figure_name="long-vector Jaccard", n=len(gate.data.test), **agreement.result_fields())


def pytest_miniature_characteristics(config):
    return [Characteristic("norm_agreement", "norm agreement", measure_norms, default_threshold=1.0,
                           fix="the candidate's long vectors are other items'")]
'''


def test_a_characteristic_that_returns_a_measurement_is_gated_like_a_built_in_one(
    gate_checks: pytest.Pytester, tiny_models
) -> None:
    gate_checks.makeconftest(MEASURING_CONFTEST)
    where = gate_checks.path
    args = [
        f"--reference={tiny_models['reference']}",
        f"--cache-dir={where / 'cache'}",
        f"--report-dir={where / 'reports'}",
        "--data-limit=60",
        "--bootstrap=20",
        "-k",
        "norm",
    ]
    same = gate_checks.runpytest(*args, f"--candidate={tiny_models['reference']}")
    same.assert_outcomes(passed=1, deselected=5)  # the model against itself: Jaccard 1 reaches 1
    below = gate_checks.runpytest(*args, f"--candidate={tiny_models['small']}")
    below.assert_outcomes(failed=1, deselected=5)  # below its default threshold: the run fails
    below.stdout.fnmatch_lines(
        ["*norm agreement: long-vector Jaccard*< threshold 1*", "  fix: the candidate's long vectors are other items'"]
    )
    result = next(
        r
        for r in json.loads((where / "reports" / "latest.json").read_text())["results"]
        if r["characteristic"] == "norm_agreement"
    )
    assert (result["threshold"], result["threshold_on"], result["gating"]) == (1.0, "raw", True)
    assert result["figure"] < 1.0 and result["status"] == "computed"
    with_flag = gate_checks.runpytest(
        *args, f"--candidate={tiny_models['small']}", "--threshold", f"norm_agreement={result['figure']}"
    )
    with_flag.assert_outcomes(passed=1, deselected=5)  # the command line's threshold is applied to it too


def test_threshold_of_an_unknown_characteristic_is_a_usage_error(pytester: pytest.Pytester, tiny_models) -> None:
    result = pytester.runpytest(f"--reference={tiny_models['reference']}", "--threshold=nope=0.5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--threshold nope=...: no such characteristic; registered: prediction_errors" in result.stderr.str()


def test_the_fifth_characteristic_lives_in_one_module_and_one_registration() -> None:
    # What adding representation similarity touched, as the package stands: its own module and
    # its BUILTIN entry. No other file of the package names its key, its module or its option.
    from pathlib import Path

    import miniature

    root = Path(miniature.__file__).parent
    import re

    marks = re.compile(r"representation_similarity|characteristics\.similarity|\.similarity:|\bcka", re.I)
    naming = sorted(
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file()
        and path.suffix in {".py", ".html", ".j2", ".css", ".js", ".toml"}
        and marks.search(path.read_text(encoding="utf-8"))
    )
    assert naming == ["core/characteristics/similarity.py", "core/registry.py"], naming
    registration = [
        line
        for line in (root / "core" / "registry.py").read_text().splitlines()
        if ("similarity" in line.lower() or re.search(r"\bcka", line, re.I)) and not line.startswith("#")
    ]
    assert registration and all(line.startswith(" ") for line in registration)  # inside one BUILTIN entry
