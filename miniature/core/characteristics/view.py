"""What a characteristic sees of the gate: a narrow, typed view (a ``Protocol``).

A characteristic's ``compare(gate, pair, stage)`` reads the run's data, its options and
the models' per-item outputs through :class:`GateView`, and returns a
:class:`~miniature.core.characteristics.base.Measurement`; the gate judges it. The
:class:`~miniature.core.gate.Gate` satisfies this protocol, and so can any object a test
builds (a fake with arrays), so a characteristic is testable without models.

The characteristics import this module and :mod:`~miniature.core.characteristics.base`,
never the gate, the settings or the registry (the registry names them: the imports flow one
way).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from miniature.core.cache import OutputCache
    from miniature.core.characteristics.base import Pair
    from miniature.core.data import TaskData
    from miniature.core.models import ModelWrapper


class Options(Protocol):
    """The options characteristics read, as the run resolved them (command line over ini
    over default); an option a characteristic declares itself is read by flag."""

    @property
    def k(self) -> int: ...
    @property
    def k_sweep(self) -> tuple[int, ...]: ...
    @property
    def seed(self) -> int: ...
    @property
    def bootstrap(self) -> int: ...
    @property
    def ood_keep(self) -> float: ...
    @property
    def knn_index(self) -> str: ...
    @property
    def attack_size(self) -> int: ...
    @property
    def attack_drop_tolerance(self) -> float: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def max_length(self) -> int: ...
    @property
    def n_ctx(self) -> int: ...
    @property
    def token_scoring(self) -> str: ...

    def __getitem__(self, flag: str) -> Any: ...


class GateView(Protocol):
    """The gate as a characteristic sees it: data, task, options and per-item outputs."""

    @property
    def settings(self) -> Options: ...
    @property
    def data(self) -> TaskData: ...
    @property
    def task(self) -> str: ...
    @property
    def cache(self) -> OutputCache: ...

    def outputs(self, name: str, role: str, *, stage: str | None = None) -> Mapping[str, np.ndarray]:
        """Per-item ``embeddings`` (and ``logits`` of a task head) of one data role."""

    def correct(self, name: str) -> np.ndarray:
        """Per test item: does the model answer it right?"""

    def predicted(self, name: str) -> np.ndarray:
        """Per test item: the label id the model answers, in the data's ids."""

    def attack_outcomes(self, name: str) -> list[dict[str, Any]]:
        """BERT-Attack outcomes for one target on the seeded test sample."""

    def wrapper(self, name: str, *, stage: str | None = None) -> ModelWrapper:
        """The loaded model."""

    def label_translation(self, name: str) -> np.ndarray | None:
        """Model label id -> data label id (None: the same ids)."""

    def is_decoder(self, name: str) -> bool:
        """Whether the model is a decoder-only causal LM."""

    def token_texts(self) -> tuple[list[str], str]:
        """The plain text the token distribution scores, and where it came from."""

    def answer_signature(self, name: str) -> tuple[Any, ...]:
        """What the model's answers depend on beyond its weights (a decoder's prompt template,
        label words and choice score; ``()`` for other models): part of a cache key."""

    def model_fingerprint(self, name: str, stage: str | None) -> str:
        """What the model's outputs depend on (its weights), for cache keys."""

    def require_heads(self, pair: Pair) -> None:
        """Raise NotApplicable when either model of ``pair`` lacks a usable task head."""
