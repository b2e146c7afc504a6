"""The pytest face: options, hooks, fixtures, the shipped checks and the pytest-html columns.

``hooks`` is the module pytest loads (the ``pytest11`` entry point): options, hook specs and
the ``pytest_configure`` that registers the run's :class:`~miniature.plugin.session.MiniatureSession`,
whose methods are the other hooks; ``startup`` holds the checks made before any model loads,
``runtime`` what runs inside a check. :func:`session_of` is the one way to reach the run's state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from miniature.plugin.runtime import SESSION_PLUGIN, run_state

if TYPE_CHECKING:  # pragma: no cover
    import pytest

    from miniature.plugin.session import MiniatureSession

__all__ = ["SESSION_PLUGIN", "session_of"]


def session_of(config: "pytest.Config") -> "MiniatureSession":
    """The :class:`MiniatureSession` of a configured run (registered by ``pytest_configure``,
    gone after ``pytest_unconfigure``); a usage error when miniature is not configured."""
    return cast("MiniatureSession", run_state(config))
