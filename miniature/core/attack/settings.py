"""The attack's settings (:class:`AttackSettings`) and constants. Light to import."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

#: Items attacked per run unless told otherwise: the paper attacked 1,000 IMDB reviews;
#: 200 keeps a BERT-base attack to minutes on a CPU while the broken-set Jaccard's
#: bootstrap interval stays usable.
DEFAULT_SAMPLE_SIZE = 200

#: What an attack on one item can end in. "skipped": the target was already wrong, so
#: there was nothing to attack; "maximum queries": the query budget ran out first.
RESULTS: tuple[str, ...] = ("skipped", "successful", "failed", "maximum queries")

#: How an attack can run (:attr:`AttackSettings.engine`): the same outcomes either way.
ENGINES: tuple[str, ...] = ("textattack", "batched")

#: The semantic-similarity constraint's sentence encoder (the recipe's Universal Sentence
#: Encoder is a TF-Hub download): the packaged all-MiniLM-L6-v2, a sentence-transformers
#: model, mean-pooled as it was trained.
SIMILARITY_ENCODER = "all-minilm-l6-v2"
#: Minimum cosine similarity (under :data:`SIMILARITY_ENCODER`) of a perturbed text to its
#: original. The recipe's 0.2 is a USE figure; with MiniLM, 0.80 is the 99th percentile
#: of the similarity of two *different* reviews of the built-in data (median 0.56), so
#: a kept perturbation is closer to its original than 99 % of pairs of distinct reviews.
SIMILARITY_THRESHOLD = 0.8


@dataclass(frozen=True)
class AttackSettings:
    """The attack's limits; every field is part of the cache key.

    ``top_k_words`` is the paper's K (at most K words changed per text; None: no cap),
    ``max_percent`` the recipe's share of words that may change, ``max_candidates`` the
    masked-LM replacements tried per word, ``similarity_threshold`` the minimum cosine
    similarity to the original text (None: no constraint) under ``similarity_encoder`` (a
    sentence-encoder model name or folder; None: the attack model's own mean-pooled
    embeddings, as before version 2), ``sentiment_filter`` rejects substitutes of another
    sentiment than the replaced word (:func:`~miniature.core.attack.lexicon.word_polarity`; Li et al.'s antonym filter),
    ``query_budget`` the target
    queries allowed per item (None: unlimited), ``subword_candidates`` and
    ``max_combinations`` bound words made of several sub-words, and ``max_length`` the
    attack model's input length (None: the attack wrapper's ``max_length``).

    ``engine`` picks how the attack runs, not what it finds, so it is the one field left
    out of the cache key: ``"textattack"`` attacks one item at a time through TextAttack
    alone (the reference path); ``"batched"`` (the default; the environment variable
    ``MINIATURE_ATTACK_ENGINE`` changes the default) runs the same TextAttack search on
    many items in lockstep, batches their model calls across items, memoises each
    target's predictions and shares the attack model's outputs across targets and runs
    (see :mod:`miniature.core.attack.engine`).
    """

    top_k_words: int | None = 3
    max_percent: float | None = 0.4
    max_candidates: int = 48
    similarity_threshold: float | None = SIMILARITY_THRESHOLD
    similarity_encoder: str | None = SIMILARITY_ENCODER
    sentiment_filter: bool = True
    query_budget: int | None = None
    subword_candidates: int = 4
    max_combinations: int = 24
    max_length: int | None = None
    engine: str = field(default_factory=lambda: os.environ.get("MINIATURE_ATTACK_ENGINE", "batched"))

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(
                f"AttackSettings.engine must be one of {ENGINES}, got {self.engine!r}"
                " (MINIATURE_ATTACK_ENGINE sets the default)"
            )
        for name in ("top_k_words", "query_budget", "max_length"):
            value = getattr(self, name)
            if value is not None and (not is_whole_number(value) or value < 1):
                raise ValueError(f"AttackSettings.{name} must be a whole number >= 1 or None, got {value!r}")
        for name in ("max_candidates", "subword_candidates", "max_combinations"):
            value = getattr(self, name)
            if not is_whole_number(value) or value < 1:
                raise ValueError(f"AttackSettings.{name} must be a whole number >= 1, got {value!r}")
        if self.max_percent is not None and not (0 < self.max_percent <= 1):
            raise ValueError(
                f"AttackSettings.max_percent must lie in (0, 1] or be None, got "
                f"{self.max_percent!r}; the recipe uses 0.4"
            )
        if self.similarity_threshold is not None and not (-1 <= self.similarity_threshold <= 1):
            raise ValueError(
                "AttackSettings.similarity_threshold is a cosine similarity in "
                f"[-1, 1] or None, got {self.similarity_threshold!r}"
            )


def settings_key(settings: AttackSettings) -> dict[str, Any]:
    """The settings in a cache key: all but ``engine`` (it changes the speed, not the outcome)."""
    return {k: v for k, v in asdict(settings).items() if k != "engine"}


def is_whole_number(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)
