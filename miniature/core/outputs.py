"""Per-item outputs of a gate run: the data, each model's embeddings and logits, correctness
and attack outcomes, computed once and kept in the :class:`~miniature.core.cache.OutputCache`.
A part of :class:`miniature.core.gate.Gate`."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from miniature.core import settings as opt
from miniature.core.attack.runner import AttackRunner
from miniature.core.cache import fingerprint, fingerprint_texts
from miniature.core.data import (ROLES, TaskData, TextData, builtin_qa_data, builtin_sentiment_data, load_qa_data,
                                 load_text_data)
from miniature.core.loading import BEFORE, ENCODER
from miniature.errors import DataWarning, MiniatureError, NotApplicable



class PerItemOutputs:
    """Computing and caching per-item outputs (state set up by ``Gate.__init__``)."""

    @property
    def data(self) -> TaskData:
        if self._data is None:
            self._data = self._load_data()
        return self._data

    def _load_data(self) -> TaskData:
        s = self.settings
        flags = {"train": opt.TRAIN_DATA, "holdout": opt.HOLDOUT_DATA, "test": opt.TEST_DATA,
                 "challenge": opt.CHALLENGE_DATA}
        given = {role: s[flag] for role, flag in flags.items() if s[flag]}
        builtin = None
        if len(given) < len(flags):
            builtin = builtin_qa_data() if self.task == "qa" else builtin_sentiment_data()
        sets: dict[str, TextData] = {}
        for role in ROLES:
            if role not in given:
                sets[role] = builtin.role(role).head(s[opt.DATA_LIMIT])  # type: ignore[union-attr]
            elif self.task == "qa":
                sets[role] = load_qa_data(given[role], limit=s[opt.DATA_LIMIT])
            else:
                sets[role] = load_text_data(
                    given[role], text_column=s[opt.TEXT_COLUMN],
                    label_column=None if role == "challenge" else s[opt.LABEL_COLUMN],
                    limit=s[opt.DATA_LIMIT])
        is_ood = None
        if "challenge" not in given and builtin is not None and builtin.challenge_is_ood:
            is_ood = builtin.challenge_is_ood[: len(sets["challenge"])]
        for role, data in sets.items():
            items = _items(data)
            duplicates = len(items) - len(set(items))
            if duplicates:
                warnings.warn(DataWarning(
                    f"the {role} data ({data.source}) holds {duplicates} duplicate item(s); "
                    "duplicates are each other's nearest neighbours and tie exactly (ties are "
                    "broken by item order); remove them unless they are meant"), stacklevel=2)
        challenge, train = sets["challenge"], sets["train"]
        overlap = len(set(_items(challenge)) & set(_items(train)))
        if overlap:
            warnings.warn(DataWarning(
                f"the challenge data ({challenge.source}) shares {overlap} of its {len(challenge)} "
                f"item(s) with the training data ({train.source}); a training item is its own "
                "nearest training neighbour, so every model calls it in-distribution; pass "
                "challenge items that are not training items"), stacklevel=2)
        return TaskData(challenge_is_ood=is_ood, **sets)

    def token_texts(self) -> tuple[list[str], str]:
        """The plain text the token distribution scores, and where it came from: ``--text-data``
        (a .txt file read whole when scored as llama.cpp does, else a text per line or row),
        else the test texts."""
        from pathlib import Path

        given = self.settings[opt.TEXT_DATA]
        if not given:
            return list(self.data.test.texts), self.data.test.source
        path = Path(given)
        if path.suffix.lower() == ".txt" and self.settings[opt.TOKEN_SCORING] == "llama-cpp" and path.is_file():
            from miniature.core.data import read_text_file

            return [read_text_file(path)], str(path)
        data = load_text_data(given, text_column=self.settings[opt.TEXT_COLUMN], label_column=None,
                              limit=self.settings[opt.DATA_LIMIT])
        return list(data.texts), data.source

    # -- outputs ---------------------------------------------------------------------------

    def outputs(self, name: str, role: str, *, stage: str | None = None) -> dict[str, np.ndarray]:
        """Per-item ``embeddings`` (and ``logits`` after fine-tuning) of one data set, cached."""
        data = self.data.role(role)
        stage = None if stage == ENCODER else stage
        key = fingerprint(
            "outputs", self._model_fingerprint(name, stage), _data_fingerprint(data),
            self.pooling_of(name), self.settings[opt.MAX_LENGTH], stage or "task", self.task,
            *self.decoder_signature(name))

        truncated = []
        used = [self.settings[opt.MAX_LENGTH]]

        def compute(part: slice) -> dict[str, np.ndarray]:
            wrapper = self.wrapper(name, stage=stage)
            used[0] = wrapper.max_length  # less than --max-length past the model's positions
            texts = data.texts[part]
            if wrapper.hidden_problem is not None:  # an ONNX export without the hidden state
                if stage == BEFORE or self.task == "qa" or self.missing_head(name):
                    raise NotApplicable(wrapper.hidden_problem)  # nothing of it serves
                return {"logits": wrapper.logits(texts)}
            # a decoder scores its choices on the test items only (other roles need vectors)
            vectors_only = wrapper.decoder and (role != "test" or not wrapper.is_classifier)
            if stage == BEFORE or self.task == "qa" or self.missing_head(name) or vectors_only:
                pairs = data.pairs[part] if data.pairs is not None else None
                arrays = {"embeddings": wrapper.encode(texts, pairs=pairs)}
            else:
                if wrapper.decoder and data.choices is not None:  # multiple-choice items
                    embeddings, logits = wrapper.encode_and_classify(texts, choices=data.choices[part])
                else:
                    embeddings, logits = wrapper.encode_and_classify(texts)
                arrays = {"embeddings": embeddings, "logits": logits}
            truncated.append(wrapper.truncated)
            return arrays

        arrays = self.cache.chunked("outputs", key, len(data), compute, chunk_size=self.chunk_size)
        where = f"model {name!r} on the {role} data ({data.source})"
        if sum(truncated):
            warnings.warn(DataWarning(
                f"{where}: {sum(truncated)} of {len(data)} items are longer than "
                f"{_length_used(used[0], self.settings[opt.MAX_LENGTH])} tokens and were "
                "truncated; raise --max-length to compare whole texts"), stacklevel=2)
        if "embeddings" not in arrays:  # a logits-only ONNX export: the vectors' checks skip
            return WithoutVectors(arrays, reason=self.wrapper(name, stage=stage).hidden_problem or "")
        self._check_embeddings(arrays["embeddings"], where)
        return arrays

    @staticmethod
    def _check_embeddings(embeddings: np.ndarray, where: str) -> None:
        """Non-finite vectors are an error; all-zero ones a warning (their neighbours are ties)."""
        finite = np.isfinite(embeddings).all(axis=1)
        if not finite.all():
            raise MiniatureError(
                f"{where}: {int((~finite).sum())} of {len(embeddings)} embeddings contain NaN or "
                "inf (often a float16 overflow or a diverged checkpoint); fix: run the model in "
                "float32 (--device cpu) or check its weights")
        zero = ~np.any(embeddings, axis=1)
        if zero.any():
            warnings.warn(DataWarning(
                f"{where}: {int(zero.sum())} of {len(embeddings)} embeddings are all zero; they are "
                "equally far from everything, so their neighbours are ties broken by item order"),
                stacklevel=3)

    def correct(self, name: str) -> np.ndarray:
        """Per test item: does the model predict the gold label (QA: the exact answer)?"""
        problem = self.head_problem(name)
        if problem:
            raise NotApplicable(problem)
        if self.task == "qa":
            return self._qa_correct(name)
        labels = self.data.test.labels
        if labels is None:
            raise NotApplicable(self.unlabelled("test", "prediction errors need each test item's "
                                                "gold label"))
        return self.predicted(name) == np.asarray(labels)

    def predicted(self, name: str) -> np.ndarray:
        """Per test item: the label id ``name`` answers (classification), in the data's ids."""
        logits = self.outputs(name, "test")["logits"]
        predicted = logits.argmax(axis=1)
        translation = self.label_translation(name)
        if translation is not None:
            predicted = translation[predicted]
        return predicted

    def _qa_correct(self, name: str) -> np.ndarray:
        """Exact match under SQuAD 2.0 rules of the model's answers ("" = no answer), cached."""
        from miniature.core.tasks.qa import predict_qa, qa_correct

        test = self.data.test
        doc_stride = max(8, self.settings[opt.MAX_LENGTH] // 3)
        key = fingerprint("qa-answers", self._model_fingerprint(name, None), _data_fingerprint(test),
                          self.settings[opt.MAX_LENGTH], doc_stride)
        answers = self.cache.load_json("answers", key)
        if answers is None or len(answers) != len(test):
            answers = predict_qa(self.wrapper(name), test.examples, doc_stride=doc_stride)
            self.cache.save_json("answers", key, answers)
        return qa_correct(answers, test.examples)

    def unlabelled(self, role: str, need: str) -> str:
        """One line: the ``role`` data has no labels, what needs them, and the fix."""
        source = self.data.role(role).source
        why = "is a .txt file, which has no labels" if source.lower().endswith(".txt") else "has no labels"
        return (f"the {role} data {source!r} {why}, and {need}; fix: pass --{role}-data as a "
                f".jsonl/.csv file with a label column (--label-column)")

    @property
    def attack_runner(self) -> AttackRunner:
        """The attacks of this run's models (built on first use)."""
        runner = getattr(self, "_attack_runner", None)
        if runner is None:
            runner = self._attack_runner = AttackRunner(self)  # type: ignore[arg-type]  # a Gate is one
        return runner

    def attack_outcomes(self, name: str) -> list[dict[str, Any]]:
        """BERT-Attack outcomes for one target on the seeded test sample (cached, resumable)."""
        return self.attack_runner.outcomes(name)

    def attack_items(self, name: str) -> int:
        """How many test items the attack of ``name`` samples (for sharding it); raises
        NotApplicable as :meth:`attack_outcomes` does, before loading any model."""
        return self.attack_runner.items(name)

    def attack_shard(self, name: str, start: int, stop: int) -> list[dict[str, Any]]:
        """The attack of items ``[start, stop)`` of the sample only, journalled as a shard of
        the whole attack: the next :meth:`attack_outcomes` folds it in (an executor's job)."""
        return self.attack_runner.shard(name, start, stop)

    def _attack_problem(self, name: str) -> None:
        """Raise NotApplicable when ``name`` cannot be attacked (the user's models and data first)."""
        self.attack_runner.check(name)

    def _attack(self, name: str, items: tuple[int, int] | None = None) -> list[dict[str, Any]]:
        return self.attack_runner.run(name, items)


class WithoutVectors(dict):
    """Outputs of a model that gives no sentence vectors: asking for ``embeddings`` skips
    the check with the reason (one line naming the missing output and the fix)."""

    def __init__(self, arrays: dict[str, np.ndarray], *, reason: str) -> None:
        super().__init__(arrays)
        self.reason = reason

    def __missing__(self, key: str) -> Any:
        if key == "embeddings":
            raise NotApplicable(self.reason)
        raise KeyError(key)


def _length_used(used: int, requested: int) -> str:
    if used == requested:
        return f"--max-length {requested}"
    return f"{used} (the model's position limit; --max-length {requested})"


def _items(data: TextData) -> list[tuple[str, str]]:
    """A data set's items as (text, pair segment) tuples, to find duplicates and overlaps."""
    return list(zip(data.texts, data.pairs or data.texts))


def _data_fingerprint(data: TextData) -> str:
    """Content hash of a data set's texts (and pair segments)."""
    if data.pairs is None:
        return fingerprint_texts(data.texts)
    return fingerprint(fingerprint_texts(data.texts), fingerprint_texts(data.pairs))
