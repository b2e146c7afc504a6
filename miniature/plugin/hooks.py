"""The module pytest loads for miniature (the ``pytest11`` entry point): the options, the
hook specs, and the ``pytest_configure`` that builds and registers the run's
:class:`~miniature.plugin.session.MiniatureSession`, whose methods are the other hooks.

Kept thin: options come from :mod:`miniature.core.settings`, the work is done by
:class:`miniature.core.gate.Gate`, heavy imports happen inside fixtures and hooks, so
``pytest --help`` and projects that do not use miniature pay nothing.
"""

from __future__ import annotations

from typing import Any, Literal

import pytest

from miniature.core import settings as opt
from miniature.plugin import SESSION_PLUGIN
from miniature.plugin.runtime import CHECK_MARKER, GATE_MARKER, INFORMATIONAL_MARKER
from miniature.plugin.runtime import define_checks as define_checks  # copies of the checks import it from here


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
        kind: Literal["linelist", "string"] = "linelist" if option.multiple else "string"
        parser.addini(option.ini, help=f"{option.help} (same as {option.flag})", type=kind, default=None)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from miniature.plugin import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_configure(config: pytest.Config) -> None:
    """Resolve the options and register the run's session; it is registered before its
    start-up checks run, so a usage error there still ends in its ``pytest_unconfigure``."""
    from miniature.plugin.session import MiniatureSession
    from miniature.plugin.startup import check_split_options, settings_from

    config.addinivalue_line("markers", f"{GATE_MARKER}: an equivalence check of the miniature gate")
    config.addinivalue_line("markers", f"{CHECK_MARKER}: a miniature equivalence check (needs {opt.REFERENCE})")
    config.addinivalue_line(
        "markers", f"{INFORMATIONAL_MARKER}: a candidate-vs-candidate comparison, reported but not gating"
    )
    check_split_options(config)
    session = MiniatureSession(config, settings_from(config))
    config.pluginmanager.register(session, SESSION_PLUGIN)
    session.start()
