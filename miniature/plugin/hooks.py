"""pytest hooks and fixtures of miniature (registered through the ``pytest11`` entry point).

Kept thin: options come from :mod:`miniature.core.settings`, the work is done by
:class:`miniature.core.gate.Gate`, heavy imports happen inside fixtures and hooks, so
``pytest --help`` and projects that do not use miniature pay nothing.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import pytest

from miniature.core import settings as opt
from miniature.plugin.results import RESULT_PROPERTY

if TYPE_CHECKING:  # pragma: no cover
    from miniature.core.registry import Characteristic, Registry
    from miniature.core.characteristics.base import ComparisonResult
    from miniature.core.gate import Gate, Pair

#: the marker of every gate item: ``pytest -m miniature`` selects the gate, ``-m "not miniature"`` the rest
GATE_MARKER = "miniature"
CHECK_MARKER = "miniature_check"
INFORMATIONAL_MARKER = "miniature_informational"
#: a project's own copy of the checks (to customise them) in this folder is used instead of the shipped ones
CHECKS_DIR = "checks"
#: the node id the shipped checks get, wherever the package is installed
SHIPPED_CHECKS_NODEID = "checks/test_equivalence.py"
#: the fixture every gate check uses; a collected test that uses it means the project brings its own checks
PAIR_FIXTURE = "model_pair"

SETTINGS_KEY = pytest.StashKey["opt.Settings"]()
GATE_KEY = pytest.StashKey["Gate | Exception"]()
RESULTS_KEY = pytest.StashKey["list[ComparisonResult]"]()
REPORT_PATH_KEY = pytest.StashKey["Any"]()
STARTED_KEY = pytest.StashKey[float]()
PREVIOUS_KEY = pytest.StashKey["dict[str, Any] | None"]()
GATE_ONLY_KEY = pytest.StashKey[bool]()
REGISTRY_KEY = pytest.StashKey["Registry"]()
GATE_ITEMS_KEY = pytest.StashKey[int]()
PREVIOUS_REGISTRY_KEY = pytest.StashKey["Registry"]()


def skip_reason() -> str:
    from miniature.core.models import all_aliases

    return (f"miniature: no {opt.REFERENCE} given, so the equivalence checks were skipped; run "
            f"`pytest {opt.REFERENCE} MODEL {opt.CANDIDATE} MODEL` (aliases: {', '.join(all_aliases())}; "
            "or Hugging Face ids or local directories)")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(opt.GROUP, "miniature: does a compressed model still behave like the reference?")
    for option in opt.OPTIONS:
        kwargs: dict[str, Any] = {"dest": option.dest, "help": option.help}
        if option.switch:
            kwargs.update(action="store_true", default=False)
        else:
            kwargs.update(type=option.parse, default=None)
            if option.multiple:
                kwargs["action"] = "append"
            if option.metavar:
                kwargs["metavar"] = option.metavar
        if opt.default_text(option):
            kwargs["help"] += f" (default: {opt.default_text(option)})"
        group.addoption(option.flag, **kwargs)
        parser.addini(option.ini, help=f"{option.help} (same as {option.flag})",
                      type="linelist" if option.multiple else "string", default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{GATE_MARKER}: an equivalence check of the miniature gate")
    config.addinivalue_line("markers", f"{CHECK_MARKER}: a miniature equivalence check (needs {opt.REFERENCE})")
    config.addinivalue_line("markers", f"{INFORMATIONAL_MARKER}: a candidate-vs-candidate comparison, reported but not gating")
    _check_split_options(config)
    values, given = {}, {}
    for option in opt.OPTIONS:
        cli = config.getoption(option.dest)
        ini = config.getini(option.ini)
        given[option.flag] = (cli, ini)
        try:
            values[option.flag] = opt.resolve(option, cli, ini)
        except (ValueError, argparse.ArgumentTypeError) as error:
            raise pytest.UsageError(f"{error} (accepted: {option.help})") from None
    thresholds = (*opt.THRESHOLD_NAMES, opt.THRESHOLDS)
    try:
        values.update(opt.resolve_thresholds({flag: given[flag][0] for flag in thresholds},
                                             {flag: given[flag][1] for flag in thresholds}))
        opt.check_combinations(values)
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None
    settings = opt.Settings.from_flags(values)
    config.stash[SETTINGS_KEY] = settings
    config.stash[REGISTRY_KEY] = _build_registry(config, settings)
    config.stash[RESULTS_KEY] = []
    config.pluginmanager.register(ResultCollector(config), "miniature-results")
    _configure_reports(config, settings)
    if settings.candidates and not settings.reference:
        raise pytest.UsageError(f"{opt.CANDIDATE} given without {opt.REFERENCE}; fix: pass "
                                f"{opt.REFERENCE} MODEL (the large model the candidates replace)")
    config.stash[GATE_ONLY_KEY] = False
    if settings.reference:
        _locate_models(settings)
        _check_start_up(settings)
        _default_to_checks(config)
        _narrow_registry(config, settings)
    _RUNNING.append(config)


def _narrow_registry(config: pytest.Config, settings: "opt.Settings") -> None:
    """Once the models are found: a run with no decoder LM leaves out the characteristics of
    decoders only (without models every check is skipped with one line, whatever it compares)."""
    from miniature.core.registry import activate, for_models

    registry = for_models(config.stash[REGISTRY_KEY], [settings.reference, *settings.candidates])
    config.stash[REGISTRY_KEY] = registry
    activate(registry)


#: the configured run, while it runs: conftests found during collection may register characteristics
_RUNNING: list[pytest.Config] = []


def pytest_plugin_registered(plugin: Any, manager: Any) -> None:
    """A conftest loaded during collection (``checks/conftest.py`` when a gate run with no
    paths runs the project's checks folder) that registers characteristics: the registry is
    built again with them, before the checks module is imported, so they run too."""
    if not _RUNNING or not hasattr(plugin, "pytest_miniature_characteristics"):
        return
    config = _RUNNING[-1]
    before = set(config.stash[REGISTRY_KEY].names)
    registry = config.stash[REGISTRY_KEY] = _build_registry(config, config.stash[SETTINGS_KEY])
    new = [c for c in registry if c.name not in before]
    if new:
        from miniature.core.registry import Registry

        config.pluginmanager.register(CheckFixtures(Registry(new)), f"miniature-fixtures-{id(plugin)}")
    if config.stash[SETTINGS_KEY].reference:
        _narrow_registry(config, config.stash[SETTINGS_KEY])


def pytest_unconfigure(config: pytest.Config) -> None:
    """Give the process back the registry it had (an in-process run, as pytester's, ends here)."""
    if config in _RUNNING:
        _RUNNING.remove(config)
    previous = config.stash.get(PREVIOUS_REGISTRY_KEY, None)
    if previous is not None:
        from miniature.core.registry import activate

        activate(previous)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from miniature.plugin import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def _build_registry(config: pytest.Config, settings: "opt.Settings") -> "Registry":
    """The built-in characteristics and those projects register through the hook; their
    fixtures are added, and the running gate uses them. A usage error names a bad one."""
    from miniature.core.registry import BUILTIN, Registry, activate

    registry = Registry(BUILTIN)
    try:
        for found in config.hook.pytest_miniature_characteristics(config=config):
            for characteristic in found or ():
                registry.add(characteristic)
    except (TypeError, ValueError) as error:
        raise pytest.UsageError(f"pytest_miniature_characteristics: {error}") from None
    unknown = [name for name in settings.thresholds if name not in registry]
    if unknown:
        raise pytest.UsageError(f"{opt.THRESHOLDS} {unknown[0]}=...: no such characteristic; registered: "
                                f"{', '.join(registry.names)}")
    from miniature.core.registry import active

    if PREVIOUS_REGISTRY_KEY not in config.stash:
        config.stash[PREVIOUS_REGISTRY_KEY] = active()
    activate(registry)
    if not config.pluginmanager.has_plugin("miniature-fixtures"):
        config.pluginmanager.register(CheckFixtures(registry), "miniature-fixtures")
    return registry


def _locate_models(settings: "opt.Settings") -> None:
    """Every model the comparisons need, found before any work: one line per missing model.

    The attack model is found by the gate: when only it is missing, the attack is skipped.
    """
    from miniature.errors import MiniatureError
    from miniature.core.models import locate, resolve_model

    given = [(opt.REFERENCE, settings.reference), *((opt.CANDIDATE, c) for c in settings.candidates),
             (opt.REFERENCE_BASE, settings[opt.REFERENCE_BASE]),
             *((opt.CANDIDATE_BASE, b) for b in settings[opt.CANDIDATE_BASE] or [])]
    problems = []
    for flag, reference in given:
        if not reference:
            continue
        try:
            locate(resolve_model(reference))
        except MiniatureError as error:
            problems.append(f"{flag}: {error}")
    if problems:
        raise pytest.UsageError("\n".join(dict.fromkeys(problems)))


def _default_to_checks(config: pytest.Config) -> None:
    """A gate run with no paths given runs the gate only: the project's ``checks/`` when it
    has one, else the checks shipped with the package (its other tests are not collected)."""
    source = getattr(config, "args_source", None)
    if source is None or source == pytest.Config.ArgsSource.ARGS:
        return
    for root in (config.rootpath, config.invocation_params.dir):
        checks = root / CHECKS_DIR
        if checks.is_dir():
            config.args[:] = [str(checks)]
            return
    config.stash[GATE_ONLY_KEY] = True


def pytest_ignore_collect(collection_path: Any, config: pytest.Config) -> bool | None:
    """In a gate-only run (``--reference`` and no paths), collect none of the project's tests."""
    if config.stash.get(GATE_ONLY_KEY, False):
        return True
    return None


def uses_gate(item: pytest.Item) -> bool:
    return PAIR_FIXTURE in getattr(item, "fixturenames", ())


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Add the shipped checks to a gate run unless the collected tests bring their own.

    ``tryfirst``: they are added before ``-k`` and ``-m`` deselect, so both select them.
    """
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None or not settings.reference or any(uses_gate(item) for item in items):
        return
    from pathlib import Path

    from miniature.plugin import checks

    path = Path(checks.__file__).parent / "test_equivalence.py"
    module = pytest.Module.from_parent(session, path=path, nodeid=SHIPPED_CHECKS_NODEID)
    items[:0] = list(session.genitems(module))


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    config.stash[GATE_ITEMS_KEY] = sum(uses_gate(item) for item in session.items)
    gate = config.stash.get(GATE_KEY, None)
    registry = config.stash.get(REGISTRY_KEY, None)
    if gate is not None and not isinstance(gate, Exception) and registry is not None:
        # the executor computes ahead only what the collected checks (-k, -m) compare
        used = {name for item in session.items if uses_gate(item)
                for name in (*getattr(item, "fixturenames", ()),
                             getattr(item, "originalname", item.name).removeprefix("test_"))}
        gate.selected = [c.name for c in registry if c.name in used]


def execution_of(config: pytest.Config) -> "dict[str, Any] | None":
    """Where the gate's per-item work ran (``--executor``), once it ran; None before."""
    gate = config.stash.get(GATE_KEY, None)
    return None if gate is None or isinstance(gate, Exception) else gate.execution


def no_checks_line(config: pytest.Config) -> str | None:
    """Why a run with ``--reference`` ran no check (never a silent exit 5), else None."""
    settings = config.stash.get(SETTINGS_KEY, None)
    collected = config.stash.get(GATE_ITEMS_KEY, None)
    if settings is None or not settings.reference or collected is None or collected > 0:
        return None
    if getattr(config.option, "dist", "no") != "no":
        return None  # under pytest-xdist the workers collect
    if isinstance(config.stash.get(GATE_KEY, None), Exception):
        return None  # the gate could not be built: its error, already printed, is why
    selection = [f"{flag} {value!r}" for flag, value in (("-k", config.option.keyword),
                                                          ("-m", config.option.markexpr)) if value]
    why = (f"{' and '.join(selection)} deselected all of them; fix: select them with -m {GATE_MARKER}"
           if selection else "fix: run pytest with no paths, or add the shipped checks' folder")
    return f"miniature: {opt.REFERENCE} was given but no equivalence check ran: {why}"


def _split_path_options(config: pytest.Config) -> list[tuple[str, str]]:
    """Option values given as a separate word that exist as paths (``--cache-dir DIR``):
    pytest took them for test paths when it chose the rootdir and ini file, before this
    plugin loaded. Every option that takes a value counts (``opt.VALUE_FLAGS``)."""
    args = [str(arg) for arg in config.invocation_params.args]
    found = []
    for flag, value in zip(args, args[1:]):
        if flag in opt.VALUE_FLAGS and not value.startswith("-") and (config.invocation_params.dir / value).exists():
            found.append((flag, value))
    return found


def _intended_setup(config: pytest.Config) -> Any:
    """``(rootdir, inifile)`` as pytest would have chosen them had the split option values
    not been free arguments (pytest's own search, on the free arguments as finally
    parsed); ``None`` when this pytest's search cannot be called."""
    import inspect

    try:
        from _pytest.config.findpaths import determine_setup

        given = dict(inifile=config.option.inifilename, override_ini=config.option.override_ini,
                     args=[str(a) for a in config.option.file_or_dir or []],
                     rootdir_cmd_arg=config.option.rootdir or None, invocation_dir=config.invocation_params.dir)
        accepted = inspect.signature(determine_setup).parameters
        found = determine_setup(**{k: v for k, v in given.items() if k in accepted})
        return found[0], found[1]
    except Exception:  # noqa: BLE001 - a pytest without this private helper
        return None


def _check_split_options(config: pytest.Config) -> None:
    """A value written as two words moved pytest's rootdir: a usage error when that lost
    (or swapped) the project's ini file, whose thresholds would silently not apply; a
    warning when only the rootdir moved."""
    split = _split_path_options(config)
    if not split:
        return
    flag, value = split[0]
    intended = _intended_setup(config)
    if intended is not None and intended[1] != config.inipath:
        found = f"{config.inipath}" if config.inipath else "no ini file"
        raise pytest.UsageError(
            f"miniature: '{flag} {value}' written as two words made pytest look for its settings "
            f"from {value}, so it read {found} instead of the project's {intended[1] or 'ini file'} "
            f"(its thresholds, K and other settings would not apply); fix: write {flag}={value}")
    moved = config.inipath is None if intended is None else intended[0] != config.rootpath
    if moved:
        config.issue_config_time_warning(pytest.PytestConfigWarning(
            f"miniature: '{flag} {value}' written as two words made pytest take {value} as a test "
            f"path when it chose the rootdir ({config.rootpath}); fix: write {flag}={value}"), stacklevel=2)


def _check_start_up(settings: "opt.Settings") -> None:
    """What can be checked before any model loads: the other model options resolve, and
    the device exists in this torch (imported only for cuda or mps)."""
    from miniature.errors import MiniatureError
    from miniature.core.models import check_device, resolve_model

    for flag in opt.MODEL_FLAGS:
        if flag in (opt.REFERENCE, opt.CANDIDATE):
            continue  # resolved above
        given = settings[flag]
        for value in (given if isinstance(given, list) else [given] if given else []):
            try:
                resolve_model(value)
            except MiniatureError as error:
                raise pytest.UsageError(f"{flag}: {error}") from None
    _check_outputs_outside_models(settings)
    try:
        check_device(settings[opt.DEVICE])
    except MiniatureError as error:
        raise pytest.UsageError(str(error)) from None
    if settings[opt.EXECUTOR] == "ray":
        import importlib.util

        from miniature.core.executors import RAY_MISSING

        if importlib.util.find_spec("ray") is None:  # found, not imported: that waits for the first check
            raise pytest.UsageError(RAY_MISSING)


def _check_outputs_outside_models(settings: "opt.Settings") -> None:
    """A usage error when ``--report-dir`` or ``--cache-dir`` lies inside a local model
    folder: the files written there would change that model's fingerprint every run (so
    nothing cached would be reused), and a model folder is not the place for them."""
    from pathlib import Path

    from miniature.core.models import resolve_model

    written = [(opt.REPORT_DIR, settings[opt.REPORT_DIR])]
    if not settings[opt.NO_CACHE]:
        written.append((opt.CACHE_DIR, settings[opt.CACHE_DIR]))
    for model_flag in opt.MODEL_FLAGS:
        given = settings[model_flag]
        for value in (given if isinstance(given, list) else [given] if given else []):
            spec = resolve_model(value)
            if not spec.is_local:
                continue
            folder = Path(spec.source).resolve()
            for flag, where in written:
                inside = Path(where).resolve()
                if inside.is_relative_to(folder) and not any(
                        part.startswith(".") for part in inside.relative_to(folder).parts):  # hidden: not fingerprinted
                    raise pytest.UsageError(
                        f"{flag} {where} is inside the model folder {folder} ({model_flag}): the files "
                        f"written there would change the model's fingerprint every run, so nothing "
                        f"cached is reused; fix: pass a {flag} outside the model folder")


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None or not settings.reference:
        return None
    return [f"miniature: reference {settings.reference}; candidates "
            f"{', '.join(settings.candidates) or '(none)'}"]


def gate_for(config: pytest.Config, *, fail: bool = True) -> "Gate":
    """The process's :class:`Gate`, built on first use; a bad setup fails every check alike
    (``fail=False``: raise the :class:`~miniature.errors.MiniatureError` instead)."""
    __tracebackhide__ = True
    if GATE_KEY not in config.stash:
        from miniature.core.gate import Gate
        from miniature.errors import MiniatureError

        try:
            config.stash[GATE_KEY] = Gate(config.stash[SETTINGS_KEY])
        except MiniatureError as error:
            config.stash[GATE_KEY] = error
    gate = config.stash[GATE_KEY]
    if isinstance(gate, Exception):
        if not fail:
            raise gate
        pytest.fail(str(gate), pytrace=False)
    return gate


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "model_pair" not in metafunc.fixturenames:
        return
    settings = metafunc.config.stash[SETTINGS_KEY]
    if not settings.reference:
        metafunc.parametrize("model_pair", [pytest.param(None, id="no-reference", marks=[
            pytest.mark.skip(reason=skip_reason()), getattr(pytest.mark, GATE_MARKER), getattr(pytest.mark, CHECK_MARKER)])])
        if "stage" in metafunc.fixturenames:
            metafunc.parametrize("stage", [None], ids=["-"])
        return
    gate = gate_for(metafunc.config)
    params = []
    for pair in gate.pairs():
        marks = [getattr(pytest.mark, GATE_MARKER), getattr(pytest.mark, CHECK_MARKER)]
        if not pair.gating:
            marks.append(getattr(pytest.mark, INFORMATIONAL_MARKER))
        params.append(pytest.param(pair, id=pair.id, marks=marks))
    if not params:
        params.append(pytest.param(None, id="no-candidate", marks=[
            pytest.mark.skip(reason=f"miniature: no {opt.CANDIDATE} given; fix: pass {opt.CANDIDATE} MODEL")]))
    metafunc.parametrize("model_pair", params)
    if "stage" in metafunc.fixturenames:
        stages = gate.stages()
        metafunc.parametrize("stage", stages, ids=[(s or "task").replace(" ", "-") for s in stages])


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

        characteristic = self.request.config.stash[REGISTRY_KEY][self.characteristic]
        try:
            gate = gate_for(self.request.config, fail=False)
        except MiniatureError as error:
            result = not_computed(self.request.config.stash[SETTINGS_KEY], characteristic, pair, stage,
                                  status=ERROR, reason=str(error))
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
        properties.extend([("miniature_verdict", result.verdict),
                           ("miniature_figure", "" if not result.computed else f"{result.figure:.6g}"),
                           ("miniature_threshold", "" if result.threshold is None else f"{result.threshold:g}"),
                           ("miniature_threshold_on", result.threshold_on)])
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


class ResultCollector:
    """Gathers the results riding on test reports (so it works under pytest-xdist too)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        from miniature.core.characteristics.base import ComparisonResult

        for name, value in report.user_properties:
            if name == RESULT_PROPERTY:
                self.config.stash[RESULTS_KEY].append(ComparisonResult.from_json(value))


def _configure_reports(config: pytest.Config, settings: "opt.Settings") -> None:
    """Note the start time, read ``--compare-to`` (a usage error if unusable), add the
    pytest-html columns and extras when pytest-html is loaded."""
    import time

    config.stash[STARTED_KEY] = time.time()
    config.stash[PREVIOUS_KEY] = None
    if config.pluginmanager.hasplugin("html"):
        from miniature.plugin.html_columns import HtmlReportHooks

        config.pluginmanager.register(HtmlReportHooks(), "miniature-html")
    previous = settings[opt.COMPARE_TO]
    if previous is not None and not hasattr(config, "workerinput"):
        from miniature.reports.payload import ReportError, load_report

        try:
            config.stash[PREVIOUS_KEY] = load_report(previous)
        except ReportError as error:
            raise pytest.UsageError(str(error)) from None


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None:
        return
    if not settings.reference:
        skipped = terminalreporter.stats.get("skipped", [])
        if any(CHECK_MARKER in getattr(r, "keywords", {}) for r in skipped):
            terminalreporter.write_line(skip_reason(), yellow=True)
        return
    missing = no_checks_line(config)
    if missing:
        terminalreporter.write_line(missing, yellow=True)
    results = config.stash.get(RESULTS_KEY, [])
    if not results:
        return
    from miniature.reports.payload import change_lines, compare_results, model_order, summary_table

    names = model_order(settings)
    terminalreporter.write_sep("=", "miniature summary")
    for line in summary_table(results, names):
        terminalreporter.write_line(line)
    previous = config.stash.get(PREVIOUS_KEY, None)
    if previous is not None:
        for line in change_lines(compare_results(previous["results"], results, names), previous["path"]):
            terminalreporter.write_line(line, bold="  << " in line)
    execution = execution_of(config)
    if execution is not None and execution["executor"] != "inprocess":
        terminalreporter.write_line(
            f"miniature executor: {execution['executor']} ({execution['address']}), {execution['workers']} "
            f"workers, {execution['jobs']} jobs in {execution['seconds']:.1f} s")
    paths = config.stash.get(REPORT_PATH_KEY, None)
    if isinstance(paths, str):
        terminalreporter.write_line(paths, red=True)
    elif paths is not None:
        terminalreporter.write_line(f"miniature report: {paths.page} (latest: {paths.latest_page})")
        terminalreporter.write_line(f"miniature JSON:   {paths.json} (latest: {paths.latest_json})")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if hasattr(config, "workerinput"):
        return  # under pytest-xdist only the controller writes reports
    settings = config.stash.get(SETTINGS_KEY, None)
    results = config.stash.get(RESULTS_KEY, [])
    if settings is None or not settings.reference or not results:
        return
    import time

    from miniature.reports.write import write_reports

    started = config.stash.get(STARTED_KEY, None)
    try:
        config.stash[REPORT_PATH_KEY] = write_reports(
            results, settings, settings[opt.REPORT_DIR],
            duration_s=None if started is None else time.time() - started,
            previous=config.stash.get(PREVIOUS_KEY, None), execution=execution_of(config))
    except OSError as error:
        config.stash[REPORT_PATH_KEY] = (f"miniature: could not write the report to "
                                         f"{settings[opt.REPORT_DIR]} ({error}); fix: pass a writable "
                                         f"{opt.REPORT_DIR}")


