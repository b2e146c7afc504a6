"""Per-item outputs of a gate run: each model's embeddings and logits and its correctness,
computed once and kept in the :class:`~miniature.core.cache.OutputCache`.
A part of the gate, built on the :class:`~miniature.core.loading.ModelStore`:
:class:`OutputStore`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from miniature.core import settings as opt
from miniature.core.cache import OutputCache, fingerprint, fingerprint_texts
from miniature.core.data import TaskData, TextData
from miniature.core.loading import BEFORE, ENCODER, ModelStore
from miniature.errors import DataWarning, MiniatureError, NotApplicable


class OutputStore:
    """Each model's per-item outputs and correctness, computed once, through the cache."""

    def __init__(self, settings: opt.Settings, models: ModelStore, cache: OutputCache) -> None:
        self.settings = settings
        self.models = models
        self.cache = cache
        #: items per saved chunk of outputs: an interrupted run resumes at the last chunk
        self.chunk_size = 1024

    @property
    def data(self) -> TaskData:
        return self.models.data

    @property
    def task(self) -> str:
        return self.models.task

    def outputs(self, name: str, role: str, *, stage: str | None = None) -> dict[str, np.ndarray]:
        """Per-item ``embeddings`` (and ``logits`` after fine-tuning) of one data set, cached."""
        data = self.data.role(role)
        stage = None if stage == ENCODER else stage
        given = self._vector_file(name, role)
        if given is not None and stage is None:
            return {"embeddings": self.precomputed(given, name, role, len(data))}
        key = fingerprint(
            "outputs",
            self.models.model_fingerprint(name, stage),
            _data_fingerprint(data),
            self.models.pooling_of(name),
            self.settings.max_length,
            stage or "task",
            self.task,
            *self.models.decoder_signature(name),
        )

        truncated = []
        used = [self.settings.max_length]

        def compute(part: slice) -> dict[str, np.ndarray]:
            wrapper = self.models.wrapper(name, stage=stage)
            used[0] = wrapper.max_length  # less than --max-length past the model's positions
            texts = data.texts[part]
            if wrapper.hidden_problem is not None:  # an ONNX export without the hidden state
                if stage == BEFORE or self.task == "qa" or self.models.missing_head(name):
                    raise NotApplicable(wrapper.hidden_problem)  # nothing of it serves
                return {"logits": wrapper.logits(texts)}
            # a decoder scores its choices on the test items only (other roles need vectors)
            vectors_only = wrapper.decoder and (role != "test" or not wrapper.is_classifier)
            if stage == BEFORE or self.task == "qa" or self.models.missing_head(name) or vectors_only:
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
            warnings.warn(
                DataWarning(
                    f"{where}: {sum(truncated)} of {len(data)} items are longer than "
                    f"{_length_used(used[0], self.settings.max_length)} tokens and were "
                    "truncated; raise --max-length to compare whole texts"
                ),
                stacklevel=2,
            )
        if "embeddings" not in arrays:  # a logits-only ONNX export: the vectors' checks skip
            return WithoutVectors(arrays, reason=self.models.wrapper(name, stage=stage).hidden_problem or "")
        self.check_embeddings(arrays["embeddings"], where)
        return arrays

    def _vector_file(self, name: str, role: str) -> str | None:
        """The ``--vectors`` file of a model (by report name or as given) and role, if any."""
        files = self.settings.vector_files
        if not files:
            return None
        given = [model.given for model in self.models.named if model.name == name]
        return files.get((name, role)) or (files.get((given[0], role)) if given else None)

    def precomputed(self, file: str, name: str, role: str, items: int) -> np.ndarray:
        """The vectors ``--vectors`` gives for a model and data role, checked: a 2-D array of
        real numbers, one row per item, all finite (memory-mapped, not copied)."""
        where = f"{opt.VECTORS} {name}:{role}={file}"
        try:
            vectors = np.load(Path(file).expanduser(), mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise MiniatureError(
                f"{where}: cannot read it as a .npy array ({error}); fix: save the vectors with numpy.save"
            ) from None
        if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.number) or np.iscomplexobj(vectors):
            raise MiniatureError(
                f"{where}: holds a {vectors.dtype} array of shape {vectors.shape}, not a 2-D (items, "
                "dimensions) array of real numbers; fix: save one vector per row"
            )
        if vectors.shape[0] != items:
            raise MiniatureError(
                f"{where}: {vectors.shape[0]} rows but the {role} data ({self.data.role(role).source}) has "
                f"{items} items; fix: save one vector per item, in the data's order (and the same --data-limit)"
            )
        self.check_embeddings(vectors, where)
        return vectors

    @staticmethod
    def check_embeddings(embeddings: np.ndarray, where: str) -> None:
        """Non-finite vectors are an error; all-zero ones a warning (their neighbours are ties)."""
        finite = np.isfinite(embeddings).all(axis=1)
        if not finite.all():
            raise MiniatureError(
                f"{where}: {int((~finite).sum())} of {len(embeddings)} embeddings contain NaN or "
                "inf (often a float16 overflow or a diverged checkpoint); fix: run the model in "
                "float32 (--device cpu) or check its weights"
            )
        zero = ~np.any(embeddings, axis=1)
        if zero.any():
            warnings.warn(
                DataWarning(
                    f"{where}: {int(zero.sum())} of {len(embeddings)} embeddings are all zero; they are "
                    "equally far from everything, so their neighbours are ties broken by item order"
                ),
                stacklevel=3,
            )

    def correct(self, name: str) -> np.ndarray:
        """Per test item: does the model predict the gold label (QA: the exact answer)?"""
        problem = self.models.head_problem(name)
        if problem:
            raise NotApplicable(problem)
        if self.task == "qa":
            return self._qa_correct(name)
        labels = self.data.test.labels
        if labels is None:
            raise NotApplicable(self.models.unlabelled("test", "prediction errors need each test item's gold label"))
        return self.predicted(name) == np.asarray(labels)

    def predicted(self, name: str) -> np.ndarray:
        """Per test item: the label id ``name`` answers (classification), in the data's ids."""
        logits = self.outputs(name, "test")["logits"]
        predicted = logits.argmax(axis=1)
        translation = self.models.label_translation(name)
        if translation is not None:
            predicted = translation[predicted]
        return predicted

    def _qa_correct(self, name: str) -> np.ndarray:
        """Exact match under SQuAD 2.0 rules of the model's answers ("" = no answer), cached."""
        from miniature.core.tasks.qa import predict_qa, qa_correct

        test = self.data.test
        doc_stride = max(8, self.settings.max_length // 3)
        key = fingerprint(
            "qa-answers",
            self.models.model_fingerprint(name, None),
            _data_fingerprint(test),
            self.settings.max_length,
            doc_stride,
        )
        examples = test.examples or []
        answers = self.cache.load_json("answers", key)
        if answers is None or len(answers) != len(test):
            answers = predict_qa(self.models.wrapper(name), examples, doc_stride=doc_stride)
            self.cache.save_json("answers", key, answers)
        return qa_correct(answers, examples)


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


def _data_fingerprint(data: TextData) -> str:
    """Content hash of a data set's texts (and pair segments)."""
    if data.pairs is None:
        return fingerprint_texts(data.texts)
    return fingerprint(fingerprint_texts(data.texts), fingerprint_texts(data.pairs))
