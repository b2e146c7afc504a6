"""How a gate check's result rides on its pytest test report: the user property
:data:`RESULT_PROPERTY` holds the :class:`ComparisonResult` as JSON (set by the check
fixture in :mod:`miniature.plugin.runtime`, read back by the run's session and by
the pytest-html columns in :mod:`miniature.plugin.html_columns`).

Light, like the hooks that import it when the plugin loads: nothing else is imported
until a result is read back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from miniature.core.characteristics.base import ComparisonResult

RESULT_PROPERTY = "miniature_result"


def result_of(report: Any) -> ComparisonResult | None:
    """The ComparisonResult a check attached to its test report, if any."""
    from miniature.core.characteristics.base import ComparisonResult

    for name, value in getattr(report, "user_properties", ()) or ():
        if name == RESULT_PROPERTY:
            return ComparisonResult.from_json(value)
    return None
