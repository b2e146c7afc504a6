"""Hooks miniature adds to pytest (registered with ``pytest_addhooks``, as pytest-html does)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from miniature.core.registry import Characteristic


@pytest.hookspec
def pytest_miniature_characteristics(config: pytest.Config) -> "list[Characteristic]":
    """Characteristics to add to the gate, from a project's ``conftest.py`` or a plugin.

    Return a list of :class:`miniature.Characteristic`; each becomes a test per model pair,
    a column of the summary, a key of the JSON and a cell of the summary page. Set its
    threshold with ``--threshold NAME=J`` (or ``miniature_threshold`` in the ini file).
    """
    raise NotImplementedError  # a specification: pluggy calls the implementations, never this body
