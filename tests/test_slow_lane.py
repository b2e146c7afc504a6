"""The fast lane's guard: a run ends by listing the tests not marked slow that took longer
than the threshold (the project's conftest.py), with and without pytest-xdist."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).parent.parent / "conftest.py"
TESTS = """
import time

import pytest


def test_sleeps_unmarked():
    time.sleep(0.6)


@pytest.mark.slow
def test_sleeps_marked():
    time.sleep(0.6)


def test_quick():
    pass
"""


def lane(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_lane=TESTS)
    monkeypatch.setenv("MINIATURE_SLOW_TEST_SECONDS", "0.3")
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=3)
    return result.stdout.str()


def test_unmarked_slow_test_is_listed(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    out = lane(pytester, monkeypatch, "-p", "no:cacheprovider")
    section = out[out.index("unmarked tests over 0.3 s") :]
    assert "test_lane.py::test_sleeps_unmarked" in section and "mark them @pytest.mark.slow" in section
    assert "test_sleeps_marked" not in section and "test_quick" not in section


def test_nothing_listed_under_the_threshold(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_lane="def test_quick():\n    pass\n")
    monkeypatch.setenv("MINIATURE_SLOW_TEST_SECONDS", "0.3")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "unmarked tests over" not in result.stdout.str()


@pytest.mark.slow
def test_listed_once_under_xdist(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers' reports reach the controller, which alone lists them (once)."""
    pytest.importorskip("xdist")
    out = lane(pytester, monkeypatch, "-p", "no:cacheprovider", "-n", "2")
    assert out.count("unmarked tests over 0.3 s") == 1
    section = out[out.index("unmarked tests over 0.3 s") :]
    assert "test_lane.py::test_sleeps_unmarked" in section
    assert "test_sleeps_marked" not in section and "test_quick" not in section
