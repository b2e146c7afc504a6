"""Shared fixtures of the project's own tests (the gate's checks ship in miniature/checks/)."""

from __future__ import annotations

import os

import pytest

#: seconds of setup + call above which a test not marked slow is listed at the end of a run
SLOW_SECONDS_VARIABLE = "MINIATURE_SLOW_TEST_SECONDS"


class SlowLane:
    """Lists the tests not marked ``slow`` whose setup + call took over the threshold: each
    belongs out of the fast lane (``pytest -m "not slow"``, kept under 3 minutes). Reports
    reach the controller under pytest-xdist, so this runs there only."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.durations: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when in ("setup", "call") and "slow" not in report.keywords:
            self.durations[report.nodeid] = self.durations.get(report.nodeid, 0.0) + report.duration

    def pytest_terminal_summary(self, terminalreporter) -> None:  # noqa: ANN001 - pytest's TerminalReporter
        over = sorted(((d, n) for n, d in self.durations.items() if d > self.seconds), reverse=True)
        if not over:
            return
        terminalreporter.write_sep("=", f"unmarked tests over {self.seconds:g} s")
        for duration, nodeid in over:
            terminalreporter.write_line(f"{duration:7.1f} s  {nodeid}")
        terminalreporter.write_line(
            'mark them @pytest.mark.slow: the fast lane (pytest -m "not slow") stays under 3 minutes'
        )


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # an xdist worker: its reports go to the controller
        seconds = float(os.environ.get(SLOW_SECONDS_VARIABLE) or 5)
        config.pluginmanager.register(SlowLane(seconds), "miniature-slow-lane")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One torch thread for the tests: on two shared cores, more threads oversubscribe and
    stall (training steps measured 10x slower with two)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_sessionstart(session: pytest.Session) -> None:
    """pytester's in-process runs restore ``sys.modules`` afterwards; a module first imported
    inside such a run is imported again later, which faiss's SWIG types and pyarrow's
    extension types (via datasets) do not survive. Import them before any run, here rather
    than in a fixture so that no test's setup time carries them; hypothesis too: its plugin
    imports it at each run's terminal summary, seconds each time it is imported again."""
    import datasets  # noqa: F401
    import faiss  # noqa: F401
    import hypothesis  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    try:  # its scheduling-strategy classes are checked by identity when a task is submitted
        import ray.util.scheduling_strategies  # noqa: F401
    except ImportError:
        pass


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory):
    """A locally trained tokenizer and tiny random BERT/DistilBERT models on disk."""
    from miniature.tools.testing import make_tiny_models

    return make_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture
def gate_checks(request: pytest.FixtureRequest) -> pytest.Pytester:
    """A pytester project of a user's own: no checks of its own, so a gate run (``--reference``)
    runs the checks shipped with the package."""
    pytester: pytest.Pytester = request.getfixturevalue("pytester")
    return pytester
