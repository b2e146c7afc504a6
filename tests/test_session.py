"""The run's MiniatureSession: registered by pytest_configure, reached with session_of, gone
after pytest_unconfigure; and the rootdir/ini search the start-up checks write out agrees
with pytest's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from miniature.plugin import SESSION_PLUGIN, session_of


def test_the_session_is_registered_for_the_run_and_gone_after_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_inner="""
        from miniature.plugin import SESSION_PLUGIN, session_of
        from miniature.plugin.session import MiniatureSession

        def test_registered(request):
            session = session_of(request.config)
            assert isinstance(session, MiniatureSession)
            assert request.config.pluginmanager.get_plugin(SESSION_PLUGIN) is session
            assert session.settings.reference is None and session.results == []
    """
    )
    recorded = pytester.inline_run()
    recorded.assertoutcome(passed=1)
    config = recorded.getcall("pytest_unconfigure").config
    assert config.pluginmanager.get_plugin(SESSION_PLUGIN) is None
    with pytest.raises(pytest.UsageError, match="not configured"):
        session_of(config)


def test_a_usage_error_at_start_up_still_gives_the_registry_back(pytester: pytest.Pytester) -> None:
    from miniature.core.registry import active

    pytester.makeconftest("""
        from miniature import Characteristic

        def pytest_miniature_characteristics(config):
            return [Characteristic("always_one", "always one", lambda gate, pair, stage: None)]
    """)
    before = active()
    result = pytester.runpytest_inprocess("--candidate=tinybert")  # a usage error after the registry is built
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert active() is before


def test_the_old_import_path_of_define_checks_still_works() -> None:
    """Copies of ``checks/test_equivalence.py`` made before import it from the hooks module."""
    from miniature.plugin import hooks, runtime

    assert hooks.define_checks is runtime.define_checks


def _layout(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


LAYOUTS = {
    "pyproject with ini_options above the path": (
        {"pyproject.toml": "[tool.pytest.ini_options]\nx = 1\n", "sub/t.py": ""},
        ["sub"],
    ),
    "pyproject with no pytest table, tox.ini without [pytest], setup.cfg with [tool:pytest]": (
        {
            "pyproject.toml": "[project]\nname = 'p'\n",
            "sub/tox.ini": "[tox]\n",
            "sub/setup.cfg": "[tool:pytest]\n",
            "sub/deep/t.py": "",
        },
        ["sub/deep"],
    ),
    "pytest.ini beats pyproject.toml in the same folder": (
        {"pytest.ini": "[pytest]\n", "pyproject.toml": "[tool.pytest.ini_options]\n"},
        [],
    ),
    "two paths, the settings in one of them only": ({"a/pytest.ini": "[pytest]\n", "b/t.py": ""}, ["a", "b"]),
    "no settings, setup.py above the path": ({"sub/setup.py": "", "sub/deep/t.py": ""}, ["sub/deep/t.py::test_x"]),
    "a pyproject.toml without pytest table only": (
        {"pyproject.toml": "[project]\nname = 'p'\n", "sub/t.py": ""},
        ["sub"],
    ),
    "a pyproject.toml with ini_options beats a pytest.ini further up": (
        {"pytest.ini": "[pytest]\n", "sub/pyproject.toml": "[tool.pytest.ini_options]\n", "sub/t.py": ""},
        ["sub"],
    ),
    "a tox.ini with [pytest] further up beats a pyproject.toml with no pytest table": (
        {"tox.ini": "[pytest]\n", "sub/pyproject.toml": "[project]\nname = 'p'\n", "sub/t.py": ""},
        ["sub"],
    ),
    "a path that does not exist": ({"tox.ini": "[pytest]\n"}, ["no/such/path", "-k", "x"]),
    "[tool.pytest] native table": ({"sub/pyproject.toml": "[tool.pytest]\nminversion = '9'\n"}, ["sub"]),
}


@pytest.mark.parametrize(("files", "args"), list(LAYOUTS.values()), ids=list(LAYOUTS))
@pytest.mark.parametrize("given", ["none", "-c", "--rootdir"])
def test_the_written_out_rootdir_search_is_pytests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str], args: list[str], given: str
) -> None:
    from _pytest.config.findpaths import determine_setup  # the test alone compares with pytest's own

    from miniature.plugin.startup import rootdir_and_inifile

    project = tmp_path / "project"
    project.mkdir()
    _layout(project, files)
    (tmp_path / "elsewhere").mkdir()
    _layout(tmp_path, {"elsewhere/other.ini": "[pytest]\n"})
    monkeypatch.chdir(project)
    inifile = str(tmp_path / "elsewhere" / "other.ini") if given == "-c" else None
    rootdir = str(tmp_path / "elsewhere") if given == "--rootdir" else None
    expected = determine_setup(
        inifile=inifile, override_ini=None, args=args, rootdir_cmd_arg=rootdir, invocation_dir=project
    )[:2]
    assert rootdir_and_inifile(args, invocation_dir=project, inifile=inifile, rootdir=rootdir) == expected
