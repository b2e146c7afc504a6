"""The data of a gate run: the four data sets (train, holdout, test, challenge), loaded once
from the options (the built-in data for each one not given), checked for duplicates and
overlaps; and the plain text the token distribution scores. A part of the gate."""

from __future__ import annotations

import warnings

from miniature.core import settings as opt
from miniature.core.data import (
    ROLES,
    TaskData,
    TextData,
    builtin_qa_data,
    builtin_sentiment_data,
    load_qa_data,
    load_text_data,
)
from miniature.errors import DataWarning


class RunData:
    """The run's data sets (``--train-data`` ... ``--challenge-data``), loaded on first use."""

    def __init__(self, settings: opt.Settings, data: TaskData | None = None) -> None:
        self.settings = settings
        self._data = data

    @property
    def task(self) -> str:
        return self.settings.data_task

    @property
    def sets(self) -> TaskData:
        """The four data sets (loaded, and checked, once)."""
        if self._data is None:
            self._data = self._load_data()
        return self._data

    def _load_data(self) -> TaskData:
        s = self.settings
        flags = {
            "train": opt.TRAIN_DATA,
            "holdout": opt.HOLDOUT_DATA,
            "test": opt.TEST_DATA,
            "challenge": opt.CHALLENGE_DATA,
        }
        given = {role: s[flag] for role, flag in flags.items() if s[flag]}
        builtin = None
        if len(given) < len(flags):
            builtin = builtin_qa_data() if self.task == "qa" else builtin_sentiment_data()
        sets: dict[str, TextData] = {}
        for role in ROLES:
            if role not in given:
                sets[role] = builtin.role(role).head(s.data_limit)  # type: ignore[union-attr]
            elif self.task == "qa":
                sets[role] = load_qa_data(given[role], limit=s.data_limit)
            else:
                sets[role] = load_text_data(
                    given[role],
                    text_column=s.text_column,
                    label_column=None if role == "challenge" else s.label_column,
                    limit=s.data_limit,
                )
        is_ood = None
        if "challenge" not in given and builtin is not None and builtin.challenge_is_ood:
            is_ood = builtin.challenge_is_ood[: len(sets["challenge"])]
        for role, data in sets.items():
            items = _items(data)
            duplicates = len(items) - len(set(items))
            if duplicates:
                warnings.warn(
                    DataWarning(
                        f"the {role} data ({data.source}) holds {duplicates} duplicate item(s); "
                        "duplicates are each other's nearest neighbours and tie exactly (ties are "
                        "broken by item order); remove them unless they are meant"
                    ),
                    stacklevel=2,
                )
        challenge, train = sets["challenge"], sets["train"]
        overlap = len(set(_items(challenge)) & set(_items(train)))
        if overlap:
            warnings.warn(
                DataWarning(
                    f"the challenge data ({challenge.source}) shares {overlap} of its {len(challenge)} "
                    f"item(s) with the training data ({train.source}); a training item is its own "
                    "nearest training neighbour, so every model calls it in-distribution; pass "
                    "challenge items that are not training items"
                ),
                stacklevel=2,
            )
        return TaskData(challenge_is_ood=is_ood, **sets)

    def unlabelled(self, role: str, need: str) -> str:
        """One line: the ``role`` data has no labels, what needs them, and the fix."""
        source = self.sets.role(role).source
        why = "is a .txt file, which has no labels" if source.lower().endswith(".txt") else "has no labels"
        return (
            f"the {role} data {source!r} {why}, and {need}; fix: pass --{role}-data as a "
            f".jsonl/.csv file with a label column (--label-column)"
        )

    def token_texts(self) -> tuple[list[str], str]:
        """The plain text the token distribution scores, and where it came from: ``--text-data``
        (a .txt file read whole when scored as llama.cpp does, else a text per line or row),
        else the test texts."""
        from pathlib import Path

        given = self.settings.text_data
        if not given:
            return list(self.sets.test.texts), self.sets.test.source
        path = Path(given)
        if path.suffix.lower() == ".txt" and self.settings.token_scoring == "llama-cpp" and path.is_file():
            from miniature.core.data import read_text_file

            return [read_text_file(path)], str(path)
        data = load_text_data(
            given, text_column=self.settings.text_column, label_column=None, limit=self.settings.data_limit
        )
        return list(data.texts), data.source


def _items(data: TextData) -> list[tuple[str, str]]:
    """A data set's items as (text, pair segment) tuples, to find duplicates and overlaps."""
    return list(zip(data.texts, data.pairs or data.texts))
