"""The state of one configured pytest run and the hooks that read it.

``pytest_configure`` (in :mod:`miniature.plugin.hooks`) builds a :class:`MiniatureSession`
and registers it with the plugin manager (as pytest-html registers its report object); its
``pytest_*`` methods are hooks, and it unregisters itself at ``pytest_unconfigure``. Fixtures
and tests reach it with :func:`miniature.plugin.session_of`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from miniature.core import settings as opt
from miniature.plugin.results import RESULT_PROPERTY
from miniature.plugin.runtime import (
    CHECK_MARKER,
    GATE_MARKER,
    INFORMATIONAL_MARKER,
    SHIPPED_CHECKS_NODEID,
    CheckFixtures,
    uses_gate,
)
from miniature.plugin.startup import check_start_up, default_to_checks, locate_models, no_checks_line

if TYPE_CHECKING:  # pragma: no cover
    from miniature.core.characteristics.base import ComparisonResult
    from miniature.core.gate import Gate
    from miniature.core.registry import Registry
    from miniature.errors import MiniatureError
    from miniature.reports.write import ReportPaths

#: the name the shared fixtures of the registry's characteristics are registered under
FIXTURES_PLUGIN = "miniature-fixtures"
#: the name the pytest-html columns are registered under (when pytest-html is loaded)
HTML_PLUGIN = "miniature-html"


def skip_reason() -> str:
    from miniature.core.models import all_aliases

    return (
        f"miniature: no {opt.REFERENCE} given, so the equivalence checks were skipped; run "
        f"`pytest {opt.REFERENCE} MODEL {opt.CANDIDATE} MODEL` (aliases: {', '.join(all_aliases())}; "
        "or Hugging Face ids or local directories)"
    )


class MiniatureSession:
    """One pytest run of miniature: its settings, registry, gate and results; its methods
    are the run's hooks."""

    def __init__(self, config: pytest.Config, settings: "opt.Settings") -> None:
        self.config = config
        self.settings = settings
        #: the characteristics this run compares (built by :meth:`start`)
        self.registry: Registry
        #: the registry the process had before this run, given back at unconfigure
        self.previous_registry: Registry | None = None
        #: the gate once built (:meth:`gate_for`), or the error that stopped it being built
        self.gate: Gate | MiniatureError | None = None
        #: every check's result, read back from the test reports (so pytest-xdist's too)
        self.results: list[ComparisonResult] = []
        #: where the reports were written, or the line saying why they could not be
        self.report_paths: ReportPaths | str | None = None
        self.started = time.time()
        #: the ``--compare-to`` report, loaded at start
        self.previous_report: dict[str, Any] | None = None
        #: a gate run with no paths and no ``checks/`` folder: the project's tests are not collected
        self.gate_only = False
        #: the collected gate items (None until collection finished)
        self.gate_items: int | None = None
        #: the run's model table (names, order, architecture, quantization), resolved at start
        self.models: dict[str, Any] | None = None
        self._ready = False  # until start() ends, conftests registering characteristics are not looked at

    def start(self) -> None:
        """Build the registry, prepare the reports and, with ``--reference``, check what can
        be checked before any model loads; each problem is a usage error."""
        settings = self.settings
        self.registry = self._build_registry()
        self._configure_reports()
        if settings.candidates and not settings.reference:
            raise pytest.UsageError(
                f"{opt.CANDIDATE} given without {opt.REFERENCE}; fix: pass "
                f"{opt.REFERENCE} MODEL (the large model the candidates replace)"
            )
        if settings.reference:
            self.models = locate_models(settings)
            check_start_up(settings)
            self.gate_only = default_to_checks(self.config)
            self._narrow_registry()
        self._ready = True

    def _build_registry(self) -> "Registry":
        """The built-in characteristics and those projects register through the hook; their
        fixtures are added, and the running gate uses them. A usage error names a bad one."""
        from miniature.core.registry import BUILTIN, Registry, activate, active

        registry = Registry(BUILTIN)
        try:
            for found in self.config.hook.pytest_miniature_characteristics(config=self.config):
                for characteristic in found or ():
                    registry.add(characteristic)
        except (TypeError, ValueError) as error:
            raise pytest.UsageError(f"pytest_miniature_characteristics: {error}") from None
        unknown = [name for name in self.settings.thresholds if name not in registry]
        if unknown:
            raise pytest.UsageError(
                f"{opt.THRESHOLDS} {unknown[0]}=...: no such characteristic; registered: {', '.join(registry.names)}"
            )
        if self.previous_registry is None:
            self.previous_registry = active()
        activate(registry)
        if not self.config.pluginmanager.has_plugin(FIXTURES_PLUGIN):
            self.config.pluginmanager.register(CheckFixtures(registry), FIXTURES_PLUGIN)
        return registry

    def _narrow_registry(self) -> None:
        """Once the models are found: a run with no decoder LM leaves out the characteristics of
        decoders only (without models every check is skipped with one line, whatever it compares)."""
        from miniature.core.registry import activate, for_models

        self.registry = for_models(
            self.registry,
            [str(self.settings.reference), *self.settings.candidates],
            decoders=self.settings.decoders,
        )
        activate(self.registry)

    def _configure_reports(self) -> None:
        """Read ``--compare-to`` (a usage error if unusable), add the pytest-html columns and
        extras when pytest-html is loaded."""
        config = self.config
        if config.pluginmanager.hasplugin("html"):
            from miniature.plugin.html_columns import HtmlReportHooks

            config.pluginmanager.register(HtmlReportHooks(), HTML_PLUGIN)
        previous = self.settings.compare_to
        if previous is not None and not hasattr(config, "workerinput"):
            from miniature.reports.payload import ReportError, load_report

            try:
                self.previous_report = load_report(previous)
            except ReportError as error:
                raise pytest.UsageError(str(error)) from None

    def gate_for(self, *, fail: bool = True) -> "Gate":
        """The run's :class:`Gate`, built on first use; a bad setup fails every check alike
        (``fail=False``: raise the :class:`~miniature.errors.MiniatureError` instead)."""
        __tracebackhide__ = True
        if self.gate is None:
            from miniature.core.gate import Gate
            from miniature.errors import MiniatureError

            try:
                self.gate = Gate(self.settings)
            except MiniatureError as error:
                self.gate = error
        if isinstance(self.gate, Exception):
            if not fail:
                raise self.gate
            pytest.fail(str(self.gate), pytrace=False)
        return self.gate

    def execution(self) -> "dict[str, Any] | None":
        """Where the gate's per-item work ran (``--executor``), once it ran; None before."""
        return None if self.gate is None or isinstance(self.gate, Exception) else self.gate.execution

    # -- hooks -------------------------------------------------------------------------------

    def pytest_plugin_registered(self, plugin: Any) -> None:
        """A conftest loaded during collection (``checks/conftest.py`` when a gate run with no
        paths runs the project's checks folder) that registers characteristics: the registry is
        built again with them, before the checks module is imported, so they run too."""
        if not self._ready or not hasattr(plugin, "pytest_miniature_characteristics"):
            return
        before = set(self.registry.names)
        self.registry = self._build_registry()
        new = [c for c in self.registry if c.name not in before]
        if new:
            from miniature.core.registry import Registry

            self.config.pluginmanager.register(CheckFixtures(Registry(new)), f"{FIXTURES_PLUGIN}-{id(plugin)}")
        if self.settings.reference:
            self._narrow_registry()

    def pytest_report_header(self) -> list[str] | None:
        if not self.settings.reference:
            return None
        return [
            f"miniature: reference {self.settings.reference}; candidates "
            f"{', '.join(self.settings.candidates) or '(none)'}"
        ]

    def pytest_ignore_collect(self) -> bool | None:
        """In a gate-only run (``--reference`` and no paths), collect none of the project's tests."""
        return True if self.gate_only else None

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "model_pair" not in metafunc.fixturenames:
            return
        if not self.settings.reference:
            metafunc.parametrize(
                "model_pair",
                [
                    pytest.param(
                        None,
                        id="no-reference",
                        marks=[
                            pytest.mark.skip(reason=skip_reason()),
                            getattr(pytest.mark, GATE_MARKER),
                            getattr(pytest.mark, CHECK_MARKER),
                        ],
                    )
                ],
            )
            if "stage" in metafunc.fixturenames:
                metafunc.parametrize("stage", [None], ids=["-"])
            return
        gate = self.gate_for()
        params = []
        for pair in gate.pairs():
            marks = [getattr(pytest.mark, GATE_MARKER), getattr(pytest.mark, CHECK_MARKER)]
            if not pair.gating:
                marks.append(getattr(pytest.mark, INFORMATIONAL_MARKER))
            params.append(pytest.param(pair, id=pair.id, marks=marks))
        if not params:
            params.append(
                pytest.param(
                    None,
                    id="no-candidate",
                    marks=[
                        pytest.mark.skip(reason=f"miniature: no {opt.CANDIDATE} given; fix: pass {opt.CANDIDATE} MODEL")
                    ],
                )
            )
        metafunc.parametrize("model_pair", params)
        if "stage" in metafunc.fixturenames:
            stages = gate.stages()
            metafunc.parametrize("stage", stages, ids=[(s or "task").replace(" ", "-") for s in stages])

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, items: list[pytest.Item]) -> None:
        """Add the shipped checks to a gate run unless the collected tests bring their own.

        ``tryfirst``: they are added before ``-k`` and ``-m`` deselect, so both select them.
        """
        if not self.settings.reference or any(uses_gate(item) for item in items):
            return
        from pathlib import Path

        from miniature.plugin import checks

        path = Path(checks.__file__).parent / "test_equivalence.py"
        module = pytest.Module.from_parent(session, path=path, nodeid=SHIPPED_CHECKS_NODEID)
        items[:0] = list(session.genitems(module))

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.gate_items = sum(uses_gate(item) for item in session.items)
        if self.gate is not None and not isinstance(self.gate, Exception):
            # the executor computes ahead only what the collected checks (-k, -m) compare
            used = {
                name
                for item in session.items
                if uses_gate(item)
                for name in (
                    *getattr(item, "fixturenames", ()),
                    getattr(item, "originalname", item.name).removeprefix("test_"),
                )
            }
            self.gate.selected = [c.name for c in self.registry if c.name in used]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Gather the results riding on test reports (so it works under pytest-xdist too)."""
        if report.when != "call":
            return
        from miniature.core.characteristics.base import ComparisonResult

        for name, value in report.user_properties:
            if name == RESULT_PROPERTY:
                self.results.append(ComparisonResult.from_json(str(value)))

    def pytest_sessionfinish(self) -> None:
        if hasattr(self.config, "workerinput"):
            return  # under pytest-xdist only the controller writes reports
        settings = self.settings
        if not settings.reference or not self.results:
            return
        from miniature.reports.write import write_reports

        try:
            self.report_paths = write_reports(
                self.results,
                settings,
                settings.report_dir,
                duration_s=time.time() - self.started,
                previous=self.previous_report,
                execution=self.execution(),
                models=self.models,
            )
        except OSError as error:
            self.report_paths = (
                f"miniature: could not write the report to {settings.report_dir} "
                f"({error}); fix: pass a writable {opt.REPORT_DIR}"
            )

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        settings = self.settings
        if not settings.reference:
            skipped = terminalreporter.stats.get("skipped", [])
            if any(CHECK_MARKER in getattr(r, "keywords", {}) for r in skipped):
                terminalreporter.write_line(skip_reason(), yellow=True)
            return
        missing = no_checks_line(
            self.config, settings, collected=self.gate_items, gate_failed=isinstance(self.gate, Exception)
        )
        if missing:
            terminalreporter.write_line(missing, yellow=True)
        if not self.results:
            return
        from miniature.reports.payload import change_lines, compare_results, model_order, summary_table

        names = model_order(settings, self.models)
        terminalreporter.write_sep("=", "miniature summary")
        for line in summary_table(self.results, names):
            terminalreporter.write_line(line)
        if self.previous_report is not None:
            for line in change_lines(
                compare_results(self.previous_report["results"], self.results, names), self.previous_report["path"]
            ):
                terminalreporter.write_line(line, bold="  << " in line)
        execution = self.execution()
        if execution is not None and execution["executor"] != "inprocess":
            terminalreporter.write_line(
                f"miniature executor: {execution['executor']} ({execution['address']}), {execution['workers']} "
                f"workers, {execution['jobs']} jobs in {execution['seconds']:.1f} s"
            )
        paths = self.report_paths
        if isinstance(paths, str):
            terminalreporter.write_line(paths, red=True)
        elif paths is not None:
            terminalreporter.write_line(f"miniature report: {paths.page} (latest: {paths.latest_page})")
            terminalreporter.write_line(f"miniature JSON:   {paths.json} (latest: {paths.latest_json})")

    def pytest_unconfigure(self) -> None:
        """Give the process back the registry it had (an in-process run, as pytester's, ends
        here) and leave the plugin manager."""
        if self.previous_registry is not None:
            from miniature.core.registry import activate

            activate(self.previous_registry)
        self.config.pluginmanager.unregister(self)
