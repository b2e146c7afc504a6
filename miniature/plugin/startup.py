"""What is checked when the run is configured, before any model loads: the options resolve
(command line over ini), an option value written as a separate word did not move pytest's
rootdir or ini file, every model is found, the device exists, outputs are not written into
a model folder. Each problem is one usage error naming the option and the fix.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from miniature.core import settings as opt
from miniature.plugin.runtime import GATE_MARKER

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Iterable, Sequence

#: a project's own copy of the checks (to customise them) in this folder is used instead of the shipped ones
CHECKS_DIR = "checks"
#: the files pytest reads its settings from, in the order it looks for them in each folder
CONFIG_FILES = ("pytest.toml", ".pytest.toml", "pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")


def settings_from(config: pytest.Config) -> "opt.Settings":
    """The run's settings: each option from the command line, else the ini file, else its
    default; a bad value or combination is a usage error naming it."""
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
        values.update(
            opt.resolve_thresholds(
                {flag: given[flag][0] for flag in thresholds}, {flag: given[flag][1] for flag in thresholds}
            )
        )
        opt.check_combinations(values)
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None
    return opt.Settings.from_flags(values)


def split_path_options(config: pytest.Config) -> list[tuple[str, str]]:
    """Option values given as a separate word that exist as paths (``--cache-dir DIR``):
    pytest took them for test paths when it chose the rootdir and ini file, before this
    plugin loaded. Every option that takes a value counts (``opt.VALUE_FLAGS``)."""
    args = [str(arg) for arg in config.invocation_params.args]
    found = []
    for flag, value in zip(args, args[1:]):
        if flag in opt.VALUE_FLAGS and not value.startswith("-") and (config.invocation_params.dir / value).exists():
            found.append((flag, value))
    return found


def _holds_settings(path: Path) -> bool:
    """Whether pytest takes its settings from ``path`` (one of :data:`CONFIG_FILES`): a
    dedicated file always, ``pyproject.toml`` with a ``[tool.pytest]`` table, ``tox.ini``
    with ``[pytest]``, ``setup.cfg`` with ``[tool:pytest]``."""
    if path.name == "pyproject.toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - pytest depends on tomli there
            import tomli as tomllib  # type: ignore[import-not-found, no-redef, unused-ignore]
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("tool", {}).get("pytest", {})
        return bool(set(table) - {"ini_options"}) or "ini_options" in table
    if path.name in ("tox.ini", "setup.cfg"):
        import iniconfig  # pytest's own ini parser (a dependency of pytest)

        return ("pytest" if path.name == "tox.ini" else "tool:pytest") in iniconfig.IniConfig(str(path)).sections
    return True


def _find_settings_file(starts: "Iterable[Path]") -> tuple[Path, Path] | tuple[None, None]:
    """``(folder, file)`` of the first file holding pytest settings in each start folder or
    its parents; else the first ``pyproject.toml`` seen (pytest roots there too)."""
    pyproject = None
    for start in starts:
        for folder in (start, *start.parents):
            for name in CONFIG_FILES:
                path = folder / name
                if path.is_file():
                    if name == "pyproject.toml" and pyproject is None:
                        pyproject = path
                    if _holds_settings(path):
                        return folder, path
    return (pyproject.parent, pyproject) if pyproject is not None else (None, None)


def _common_ancestor(invocation_dir: Path, paths: "Iterable[Path]") -> Path:
    """The deepest folder holding every existing path of ``paths`` (the invocation folder
    when none exists), as pytest computes it."""
    ancestor: Path | None = None
    for path in paths:
        if not path.exists():
            continue
        if ancestor is None or path in ancestor.parents:
            ancestor = path
        elif ancestor not in path.parents and path != ancestor:
            try:
                ancestor = Path(os.path.commonpath((str(path), str(ancestor))))
            except ValueError:  # on different drives: pytest keeps the first
                pass
    if ancestor is None:
        return invocation_dir
    return ancestor.parent if ancestor.is_file() else ancestor


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def rootdir_and_inifile(
    args: "Sequence[str]", *, invocation_dir: Path, inifile: str | None = None, rootdir: str | None = None
) -> tuple[Path, Path | None]:
    """``(rootdir, inifile)`` pytest chooses for the free arguments ``args`` (with ``-c``
    and ``--rootdir`` when given): the search pytest documents ("Initialization: determining
    rootdir and configfile"), written out here because pytest offers no public call for it."""
    paths = (Path(os.path.abspath(arg.split("::")[0])) for arg in args if not arg.startswith("-"))
    dirs = [path if path.is_dir() else path.parent for path in paths if _exists(path)]
    found: Path | None
    inipath: Path | None
    if inifile:
        inipath = Path(os.path.abspath(inifile))
        if inipath.is_file():
            found = inipath.parent
        else:  # not a file (``-c /dev/null``): says nothing about where the project lives
            found = _common_ancestor(invocation_dir, dirs)
            if _is_fs_root(found):
                found = invocation_dir
    else:
        ancestor = _common_ancestor(invocation_dir, dirs)
        found, inipath = _find_settings_file([ancestor])
        if found is None and rootdir is None:
            found = next((folder for folder in (ancestor, *ancestor.parents) if (folder / "setup.py").is_file()), None)
            if found is None:
                if dirs != [ancestor]:
                    found, inipath = _find_settings_file(dirs)
                if found is None:
                    found = _common_ancestor(invocation_dir, [invocation_dir, ancestor])
                    if _is_fs_root(found):  # pragma: no cover
                        found = ancestor
    if rootdir:
        found = Path(os.path.abspath(os.path.expandvars(rootdir)))
    assert found is not None
    return found, inipath


def _is_fs_root(path: Path) -> bool:
    return os.path.splitdrive(str(path))[1] == os.sep


def intended_setup(config: pytest.Config) -> tuple[Path, Path | None] | None:
    """``(rootdir, inifile)`` as pytest would have chosen them had the split option values
    not been free arguments (pytest's search, on the free arguments as finally parsed);
    ``None`` when a settings file on the way cannot be read (pytest reports that itself)."""
    try:
        return rootdir_and_inifile(
            [str(a) for a in config.option.file_or_dir or []],
            invocation_dir=config.invocation_params.dir,
            inifile=config.option.inifilename,
            rootdir=config.option.rootdir or None,
        )
    except Exception:  # noqa: BLE001 - an unreadable TOML or ini file on the way
        return None


def check_split_options(config: pytest.Config) -> None:
    """A value written as two words moved pytest's rootdir: a usage error when that lost
    (or swapped) the project's ini file, whose thresholds would silently not apply; a
    warning when only the rootdir moved."""
    split = split_path_options(config)
    if not split:
        return
    flag, value = split[0]
    intended = intended_setup(config)
    if intended is not None and intended[1] != config.inipath:
        found = f"{config.inipath}" if config.inipath else "no ini file"
        raise pytest.UsageError(
            f"miniature: '{flag} {value}' written as two words made pytest look for its settings "
            f"from {value}, so it read {found} instead of the project's {intended[1] or 'ini file'} "
            f"(its thresholds, K and other settings would not apply); fix: write {flag}={value}"
        )
    moved = config.inipath is None if intended is None else intended[0] != config.rootpath
    if moved:
        config.issue_config_time_warning(
            pytest.PytestConfigWarning(
                f"miniature: '{flag} {value}' written as two words made pytest take {value} as a test "
                f"path when it chose the rootdir ({config.rootpath}); fix: write {flag}={value}"
            ),
            stacklevel=2,
        )


def locate_models(settings: "opt.Settings") -> dict[str, Any]:
    """Every model the comparisons need, found before any work: one line per missing model.
    Returns the run's model table (report names, order, architecture, quantization), resolved
    here once and carried to the reports.

    The attack model is found by the gate: when only it is missing, the attack is skipped.
    """
    from miniature.errors import MiniatureError
    from miniature.core.model_table import NamedModel, model_table
    from miniature.core.models import check_gguf_candidate, locate, resolve_model, unique_name

    given = [
        (opt.REFERENCE, settings.reference),
        *((opt.CANDIDATE, c) for c in settings.candidates),
        (opt.REFERENCE_BASE, settings.reference_base),
        *((opt.CANDIDATE_BASE, b) for b in settings.candidate_base),
    ]
    problems = []
    named: list[NamedModel] = []
    reference_spec = None
    for flag, reference in given:
        if not reference:
            continue
        try:
            spec = locate(resolve_model(reference))
            if flag == opt.REFERENCE:
                reference_spec = spec
            elif flag == opt.CANDIDATE and reference_spec is not None:
                check_gguf_candidate(spec, reference_spec)  # its vocabulary: the reference's tokenizer's
        except MiniatureError as error:
            problems.append(f"{flag}: {error}")
            continue
        if flag in (opt.REFERENCE, opt.CANDIDATE):
            if settings.decoders:
                problem = forced_decoder_problem(spec)
                if problem:
                    problems.append(f"{flag}: {problem}")
                    continue
            named.append(NamedModel(unique_name(spec.name, [m.name for m in named]), reference, spec))
    if problems:
        raise pytest.UsageError("\n".join(dict.fromkeys(problems)))
    return model_table(named, decoders=settings.decoders, gguf_runtime=settings.gguf_runtime)


def forced_decoder_problem(spec: Any) -> str | None:
    """Why a local PyTorch checkpoint cannot be read as a causal LM (``--task causal-lm``)."""
    from miniature.core.model_files import read_model_config
    from miniature.core.models import causal_lm_problem
    from miniature.core.onnx_model import onnx_file

    from miniature.core.gguf_model import gguf_file

    if not spec.is_local or onnx_file(spec.source) is not None or gguf_file(spec.source) is not None:
        return None
    return causal_lm_problem(read_model_config(spec), spec.name)


def default_to_checks(config: pytest.Config) -> bool:
    """A gate run with no paths given runs the gate only: the project's ``checks/`` when it
    has one (then the paths become that folder), else the checks shipped with the package
    (True: its other tests are not collected)."""
    source = getattr(config, "args_source", None)
    if source is None or source == pytest.Config.ArgsSource.ARGS:
        return False
    for root in (config.rootpath, config.invocation_params.dir):
        checks = root / CHECKS_DIR
        if checks.is_dir():
            config.args[:] = [str(checks)]
            return False
    return True


def check_start_up(settings: "opt.Settings") -> None:
    """What can be checked before any model loads: the other model options resolve, and
    the device exists in this torch (imported only for cuda or mps)."""
    from miniature.errors import MiniatureError
    from miniature.core.models import check_device, resolve_model

    for flag in opt.MODEL_FLAGS:
        if flag in (opt.REFERENCE, opt.CANDIDATE):
            continue  # resolved above
        given = settings[flag]
        for value in given if isinstance(given, list) else [given] if given else []:
            try:
                resolve_model(value)
            except MiniatureError as error:
                raise pytest.UsageError(f"{flag}: {error}") from None
    check_outputs_outside_models(settings)
    check_vector_files(settings)
    try:
        check_device(settings.device)
    except MiniatureError as error:
        raise pytest.UsageError(str(error)) from None
    if settings.executor == "ray":
        import importlib.util

        from miniature.core.executors import RAY_MISSING

        if importlib.util.find_spec("ray") is None:  # found, not imported: that waits for the first check
            raise pytest.UsageError(RAY_MISSING)


def check_vector_files(settings: "opt.Settings") -> None:
    """A usage error when ``--vectors`` names a model the run does not compare, or a file
    that does not exist (its rows are checked against the data when it is read)."""
    from miniature.core.model_table import given_models, name_models

    if not settings.vectors:
        return
    models = name_models(given_models(settings), strict=False)
    known = {model.name for model in models} | {model.given for model in models}
    for name, role, file in settings.vectors:
        if name not in known:
            raise pytest.UsageError(
                f"{opt.VECTORS} {name}:{role}={file}: {name!r} is not a model of this run "
                f"({', '.join(model.name for model in models) or 'none'}); fix: name the model as "
                f"{opt.REFERENCE} or {opt.CANDIDATE} gives it"
            )
        if not Path(file).expanduser().is_file():
            raise pytest.UsageError(f"{opt.VECTORS} {name}:{role}={file}: no such file; fix: check the path")


def check_outputs_outside_models(settings: "opt.Settings") -> None:
    """A usage error when ``--report-dir`` or ``--cache-dir`` lies inside a local model
    folder: the files written there would change that model's fingerprint every run (so
    nothing cached would be reused), and a model folder is not the place for them."""
    from miniature.core.models import resolve_model

    written = [(opt.REPORT_DIR, settings.report_dir)]
    if not settings.no_cache:
        written.append((opt.CACHE_DIR, settings.cache_dir))
    for model_flag in opt.MODEL_FLAGS:
        given = settings[model_flag]
        for value in given if isinstance(given, list) else [given] if given else []:
            spec = resolve_model(value)
            if not spec.is_local:
                continue
            folder = Path(spec.source).resolve()
            for flag, where in written:
                inside = Path(where).resolve()
                if inside.is_relative_to(folder) and not any(
                    part.startswith(".") for part in inside.relative_to(folder).parts
                ):  # hidden: not fingerprinted
                    raise pytest.UsageError(
                        f"{flag} {where} is inside the model folder {folder} ({model_flag}): the files "
                        f"written there would change the model's fingerprint every run, so nothing "
                        f"cached is reused; fix: pass a {flag} outside the model folder"
                    )


def no_checks_line(
    config: pytest.Config, settings: "opt.Settings", *, collected: int | None, gate_failed: bool
) -> str | None:
    """Why a run with ``--reference`` ran no check (never a silent exit 5), else None:
    ``collected`` gate items (None before collection), ``gate_failed`` when the gate could
    not be built (its error, already printed, is why)."""
    if not settings.reference or collected is None or collected > 0:
        return None
    if getattr(config.option, "dist", "no") != "no":
        return None  # under pytest-xdist the workers collect
    if gate_failed:
        return None
    selection = [
        f"{flag} {value!r}" for flag, value in (("-k", config.option.keyword), ("-m", config.option.markexpr)) if value
    ]
    why = (
        f"{' and '.join(selection)} deselected all of them; fix: select them with -m {GATE_MARKER}"
        if selection
        else "fix: run pytest with no paths, or add the shipped checks' folder"
    )
    return f"miniature: {opt.REFERENCE} was given but no equivalence check ran: {why}"
