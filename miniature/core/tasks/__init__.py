"""Task definitions: how a model's outputs become per-item predictions and correctness.

``qa`` is extractive question answering as the paper runs it on SQuAD 2.0 (windows over
long contexts, best span or "no answer", the official EM/F1); ``classification`` is
sequence classification with label-map checks between two models. Importing this
package is cheap: torch is only imported when a model actually runs.
"""

from __future__ import annotations

from miniature.errors import MiniatureError

#: The tasks a model can be fine-tuned and evaluated on.
TASKS: tuple[str, ...] = ("classification", "qa")


class OptionError(MiniatureError, ValueError):
    """A bad setting (stride, epochs, ...): a ValueError to library callers, and a one-line
    ``miniature: error: ...`` on the command line."""
