"""What runs inside a gate check: the per-characteristic fixtures, the generated test
functions and the :class:`Check` that compares a pair and records its result.

The run's state (settings, registry, gate) lives on the
:class:`~miniature.plugin.session.MiniatureSession`; a check reaches it with
:func:`run_state`, which knows it only as a :class:`RunState`. Light at import, like every
plugin module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import pytest

from miniature.plugin.results import RESULT_PROPERTY

if TYPE_CHECKING:  # pragma: no cover
    from miniature.core.characteristics.base import ComparisonResult
    from miniature.core.gate import Gate, Pair
    from miniature.core.registry import Characteristic, Registry
    from miniature.core.settings import Settings

#: the name the run's MiniatureSession is registered under with the plugin manager
SESSION_PLUGIN = "miniature-session"


class RunState(Protocol):
    """What a check reads of the run (the MiniatureSession is one)."""

    registry: "Registry"
    settings: "Settings"

    def gate_for(self, *, fail: bool = True) -> "Gate": ...


def run_state(config: pytest.Config) -> RunState:
    """The run's state, registered by ``pytest_configure`` and gone after
    ``pytest_unconfigure``; a usage error when miniature is not configured."""
    state = config.pluginmanager.get_plugin(SESSION_PLUGIN)
    if state is None:
        raise pytest.UsageError(
            "miniature: the plugin is not configured in this run (it was disabled with "
            "-p no:miniature, or the run ended); fix: run pytest with miniature enabled"
        )
    return state


#: the marker of every gate item: ``pytest -m miniature`` selects the gate, ``-m "not miniature"`` the rest
GATE_MARKER = "miniature"
CHECK_MARKER = "miniature_check"
INFORMATIONAL_MARKER = "miniature_informational"
#: the node id the shipped checks get, wherever the package is installed
SHIPPED_CHECKS_NODEID = "checks/test_equivalence.py"
#: the fixture every gate check uses; a collected test that uses it means the project brings its own checks
PAIR_FIXTURE = "model_pair"


def uses_gate(item: pytest.Item) -> bool:
    return PAIR_FIXTURE in getattr(item, "fixturenames", ())


class Check:
    """One characteristic's check: compare a pair, attach the result, fail with the reason."""

    def __init__(self, characteristic: str, request: pytest.FixtureRequest) -> None:
        self.characteristic = characteristic
        self.request = request

    def check(self, pair: "Pair", *, stage: str | None = None) -> "ComparisonResult":
        """Compare ``pair``; fail the test if a gating pair is below its threshold, skip it
        when the characteristic does not apply. Every outcome is recorded on the report."""
        __tracebackhide__ = True
        from miniature.core.characteristics.base import ERROR, SKIPPED
        from miniature.core.gate import not_computed
        from miniature.errors import MiniatureError

        session = run_state(self.request.config)
        characteristic = session.registry[self.characteristic]
        try:
            gate = session.gate_for(fail=False)
        except MiniatureError as error:
            result = not_computed(session.settings, characteristic, pair, stage, status=ERROR, reason=str(error))
        else:
            result = gate.outcome(self.characteristic, pair, stage=stage)
        self.record(result)
        if result.status == SKIPPED:
            pytest.skip(f"miniature: {result.reason}")
        if result.status == ERROR:
            crash = result.details.get("traceback")
            pytest.fail(f"{result.reason}\n{crash}" if crash else str(result.reason), pytrace=False)
        if not result.passed and result.gating:
            pytest.fail(result.failure_message(characteristic.fix), pytrace=False)
        return result

    def record(self, result: "ComparisonResult") -> None:
        """Attach the result to the test report (JSON), and its headline as JUnit properties."""
        properties = self.request.node.user_properties
        properties.append((RESULT_PROPERTY, result.to_json()))
        properties.extend(
            [
                ("miniature_verdict", result.verdict),
                ("miniature_figure", "" if not result.computed else f"{result.figure:.6g}"),
                ("miniature_threshold", "" if result.threshold is None else f"{result.threshold:g}"),
                ("miniature_threshold_on", result.threshold_on),
            ]
        )
        if result.reason:
            properties.append(("miniature_reason", result.reason))


def check_fixture(characteristic: "Characteristic") -> Any:
    """The fixture named after ``characteristic``: a :class:`Check` for it."""

    def fixture(request: pytest.FixtureRequest) -> Check:
        return Check(characteristic.name, request)

    fixture.__doc__ = characteristic.description or f"Check the {characteristic.title} of each model pair."
    return pytest.fixture(name=characteristic.name)(fixture)


def check_test(characteristic: "Characteristic") -> Any:
    """The test function ``test_<name>`` of ``characteristic`` (with ``stage`` when it is
    compared per representation stage)."""
    if characteristic.staged:

        def test(model_pair: "Pair", stage: str | None, request: pytest.FixtureRequest) -> None:
            __tracebackhide__ = True
            Check(characteristic.name, request).check(model_pair, stage=stage)
    else:

        def test(model_pair: "Pair", request: pytest.FixtureRequest) -> None:  # type: ignore[misc]
            __tracebackhide__ = True
            Check(characteristic.name, request).check(model_pair)

    test.__name__ = test.__qualname__ = f"test_{characteristic.name}"
    test.__doc__ = characteristic.description
    return test


def define_checks(namespace: dict[str, Any]) -> None:
    """Define ``test_<name>`` in a test module for every characteristic of the running gate."""
    from miniature.core.registry import active

    for characteristic in active():
        namespace[f"test_{characteristic.name}"] = check_test(characteristic)


class CheckFixtures:
    """A plugin object holding one fixture per characteristic (generated from the registry)."""

    def __init__(self, registry: "Registry") -> None:
        for characteristic in registry:
            setattr(self, characteristic.name, check_fixture(characteristic))
