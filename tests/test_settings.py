"""Tests for miniature.core.settings.Settings: its typed fields are exactly the options."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import pytest

from miniature.core import settings as opt


def _accepts(hint, value) -> bool:
    """Whether ``value`` is of the type ``hint`` (unions, tuples, dicts and plain classes)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in args)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_accepts(args[0], item) for item in value)
        return len(args) == len(value) and all(map(_accepts, args, value))
    if origin is dict:
        return isinstance(value, dict) and all(_accepts(args[0], k) and _accepts(args[1], v) for k, v in value.items())
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is type(None):
        return value is None
    return isinstance(value, hint)


CORE_OPTIONS = [option for option in opt.OPTIONS if option.flag not in opt.DECLARED_FLAGS]


def test_the_fields_are_exactly_the_options():
    fields = [field.name for field in dataclasses.fields(opt.Settings)]
    assert fields == [opt.attribute(option.flag) for option in CORE_OPTIONS] + ["declared"]


@pytest.mark.parametrize("flag", sorted(opt.DECLARED_FLAGS))
def test_an_option_a_characteristic_declares_is_read_by_flag(flag):
    option = opt.BY_FLAG[flag]
    assert opt.make_settings()[flag] == option.default
    other = next(c for c in ("debiased", "linear", "other") if c != option.default)
    assert opt.Settings.from_flags({flag: other})[flag] == other
    assert flag in opt.make_settings().values


@pytest.mark.parametrize("option", CORE_OPTIONS, ids=lambda option: option.flag)
def test_each_field_has_the_option_default_and_a_type_that_accepts_it(option):
    field = {f.name: f for f in dataclasses.fields(opt.Settings)}[opt.attribute(option.flag)]
    default = () if option.multiple else option.default
    assert field.default == default and type(field.default) is type(default)
    hint = typing.get_type_hints(opt.Settings)[field.name]
    assert hint is not typing.Any, f"{option.flag}: give its field a type"
    assert _accepts(hint, default), f"{option.flag}: {hint} does not accept its default {default!r}"
    if option.multiple:
        assert typing.get_origin(hint) is tuple, f"{option.flag} is given several times: a tuple"


@pytest.mark.parametrize(
    "flag, text",
    [
        (opt.K_SWEEP, "1,5"),
        (opt.VERBALIZER, "0=no,1=yes"),
        (opt.CACHE_DIR, "cache"),
        (opt.ATTACK_DROP_TOLERANCE, "3"),
        (opt.K, "7"),
        (opt.THRESHOLD_ON, "corrected"),
    ],
)
def test_a_parsed_value_fits_its_field(flag, text):
    value = opt.BY_FLAG[flag].parse(text)
    assert _accepts(typing.get_type_hints(opt.Settings)[opt.attribute(flag)], value)


def test_the_type_check_catches_a_wrong_annotation():
    assert not _accepts(int | None, "200") and not _accepts(tuple[int, ...], [1, 5])
    assert _accepts(Path | None, None) and _accepts(tuple[tuple[str, float], ...], (("a", 0.5),))


def test_settings_read_as_before():
    settings = opt.make_settings(
        reference="ref",
        candidate=["a", "b"],
        k=5,
        threshold=[("data_representation", 0.4)],
        onnx_output=[("logits", "out")],
    )
    assert settings.k == 5 and settings[opt.K] == 5
    assert settings.candidate == ("a", "b") and settings[opt.CANDIDATE] == ["a", "b"]
    assert settings.candidates == ["a", "b"]
    assert settings.thresholds == {"data_representation": 0.4}
    assert settings.onnx_outputs == {"logits": "out"}
    assert settings.values[opt.CACHE_DIR] == Path(".miniature-cache")
    assert list(settings.values) == [option.flag for option in opt.OPTIONS]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.k = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="unknown setting 'kk'"):
        opt.make_settings(kk=1)
