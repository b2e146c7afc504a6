"""Errors miniature raises for bad input: one line saying what was tried and the fix."""

from __future__ import annotations


class MiniatureError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class ModelReferenceError(MiniatureError):
    """A model alias, id or directory that cannot be resolved or loaded."""


class DataError(MiniatureError):
    """A data file or dataset that is missing, empty or has the wrong schema."""


class NotApplicable(MiniatureError):
    """A check that does not apply to this run (e.g. the sentiment attack on a QA task)."""


class CacheWarning(UserWarning):
    """A cache file was unreadable or partial; it is recomputed."""


class DataWarning(UserWarning):
    """Data that still gives a result, but one to read with care (truncation, ties, zeros)."""
