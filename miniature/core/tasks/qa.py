"""Extractive question answering as the paper runs it on SQuAD 2.0.

* :func:`normalize_answer`, :func:`exact_match`, :func:`f1` follow the official
  ``evaluate-v2.0.py`` script exactly (an unanswerable item has the single gold answer
  ``""``, so only a prediction that normalises to ``""`` matches it).
* :func:`qa_examples_from_records` validates flat SQuAD rows into :class:`QAExample`.
* :func:`prepare_qa_features` cuts long contexts into overlapping windows (document
  stride); the offsets and example index stay outside the dicts the model sees.
* :func:`postprocess_qa` picks the best span over all windows, or "no answer" (``""``)
  when the null score beats it by more than ``null_margin``.
* :func:`predict_qa` runs all of it on a :class:`~miniature.core.models.ModelWrapper`;
  :func:`qa_correct` gives the per-item correctness the error sets are built from.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from miniature.errors import DataError, ModelReferenceError
from miniature.core.tasks import OptionError

if TYPE_CHECKING:  # pragma: no cover
    from miniature.core.models import ModelWrapper

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)
_SQUAD_SCHEMA = (
    "SQuAD rows need id, question, context and answers "
    "{text: [...], answer_start: [...]} (empty lists for an unanswerable question)"
)


# -- official SQuAD 2.0 metrics ---------------------------------------------------------------
def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def _gold(answers: Sequence[str]) -> list[str]:
    """Gold answers as the official script uses them: blank ones dropped, none -> [""]."""
    kept = [a for a in answers if normalize_answer(a)]
    return kept or [""]


def _exact_one(gold: str, prediction: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(prediction))


def _f1_one(gold: str, prediction: str) -> float:
    gold_tokens, predicted = _tokens(gold), _tokens(prediction)
    if not gold_tokens or not predicted:  # no-answer on either side: 1 if both agree
        return float(gold_tokens == predicted)
    same = sum((collections.Counter(gold_tokens) & collections.Counter(predicted)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold_answers: Sequence[str]) -> int:
    """1 if the prediction equals any gold answer after normalisation, else 0.

    With no gold answers (unanswerable), only a prediction normalising to "" matches.
    """
    return max(_exact_one(gold, prediction) for gold in _gold(gold_answers))


def f1(prediction: str, gold_answers: Sequence[str]) -> float:
    """Best token-overlap F1 of the prediction against any gold answer (official v2.0)."""
    return max(_f1_one(gold, prediction) for gold in _gold(gold_answers))


# -- examples ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class QAExample:
    """One question over one context; no answers means unanswerable (SQuAD 2.0)."""

    id: str
    question: str
    context: str
    answers: tuple[str, ...] = ()
    answer_starts: tuple[int, ...] = ()

    @property
    def is_answerable(self) -> bool:
        return bool(self.answers)

    def to_record(self) -> dict[str, Any]:
        """The flat SQuAD row (as ``datasets`` gives squad_v2), for writing jsonl."""
        return {
            "id": self.id,
            "question": self.question,
            "context": self.context,
            "answers": {"text": list(self.answers), "answer_start": list(self.answer_starts)},
        }


def _as_list(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else value  # numpy arrays from parquet


def _answers(row: dict[str, Any], number: int, source: str) -> tuple[list[Any], list[Any]]:
    answers = _as_list(row["answers"])
    if isinstance(answers, list) and all(isinstance(a, dict) for a in answers):  # [{text, answer_start}]
        if any("text" not in a or "answer_start" not in a for a in answers):
            raise DataError(
                f"data {source!r}: column 'answers' in row {number} has an answer "
                f"without 'text' or 'answer_start'; fix: {_SQUAD_SCHEMA}"
            )
        return [a["text"] for a in answers], [a["answer_start"] for a in answers]
    if not isinstance(answers, dict) or "text" not in answers or "answer_start" not in answers:
        raise DataError(
            f"data {source!r}: column 'answers' in row {number} is "
            f"{type(answers).__name__} ({str(answers)[:60]!r}), expected an object with "
            f"'text' and 'answer_start' lists; fix: {_SQUAD_SCHEMA}"
        )
    texts, starts = _as_list(answers["text"]), _as_list(answers["answer_start"])
    if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
        raise DataError(
            f"data {source!r}: column 'answers' in row {number}: 'text' and "
            f"'answer_start' must be lists of the same length; fix: {_SQUAD_SCHEMA}"
        )
    return texts, starts


def qa_examples_from_records(rows: Sequence[dict[str, Any]], source: str) -> list[QAExample]:
    """Validate flat SQuAD rows (id, question, context, answers{text, answer_start}).

    Raises :class:`DataError` naming the source, row and column: missing columns, wrong
    types, empty text, duplicate ids and answers that are not found at their start.
    """
    if not rows:
        raise DataError(f"data {source!r} is empty (0 rows); fix: pass a file with questions")
    examples: list[QAExample] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(
                f"data {source!r}: row {number} is {type(row).__name__}, not an object; fix: {_SQUAD_SCHEMA}"
            )
        for column in ("id", "question", "context", "answers"):
            if column not in row:
                raise DataError(
                    f"data {source!r}: row {number} has no column {column!r} (columns: "
                    f"{', '.join(map(str, row))}); fix: {_SQUAD_SCHEMA}"
                )
        identifier = row["id"]
        if isinstance(identifier, bool) or not isinstance(identifier, (str, int)):
            raise DataError(
                f"data {source!r}: column 'id' in row {number} is "
                f"{type(identifier).__name__}, expected str or int; fix: {_SQUAD_SCHEMA}"
            )
        identifier = str(identifier)
        if identifier in seen:
            raise DataError(
                f"data {source!r}: column 'id' value {identifier!r} in row {number} "
                f"repeats row {seen[identifier]}; fix: give every question its own id"
            )
        seen[identifier] = number
        for column in ("question", "context"):
            value = row[column]
            if not isinstance(value, str) or not value.strip():
                what = "empty" if isinstance(value, str) else type(value).__name__
                raise DataError(
                    f"data {source!r}: column {column!r} in row {number} is {what}, "
                    f"expected non-empty text; fix: correct or remove the row"
                )
        texts, starts = _answers(row, number, source)
        context = row["context"]
        for text, start in zip(texts, starts):
            if not isinstance(text, str) or isinstance(start, bool) or not isinstance(start, int):
                raise DataError(
                    f"data {source!r}: column 'answers' in row {number} has text "
                    f"{text!r} / answer_start {start!r}; expected str / int; fix: "
                    f"{_SQUAD_SCHEMA}"
                )
            if context[start : start + len(text)] != text:
                raise DataError(
                    f"data {source!r}: column 'answers' in row {number}: answer "
                    f"{text[:40]!r} is not in the context at answer_start {start} "
                    f"(found {context[start : start + len(text)][:40]!r}); fix: correct "
                    "answer_start to the character offset of the answer in the context"
                )
        examples.append(QAExample(identifier, row["question"], context, tuple(texts), tuple(int(s) for s in starts)))
    return examples


# -- features ---------------------------------------------------------------------------------
@dataclass
class QAFeatures:
    """Windows over the examples' contexts.

    ``inputs`` are what the model sees (input_ids, attention_mask, token_type_ids);
    ``example_index``, ``offsets`` (character span per token, None outside the context)
    and ``cls_index`` stay here, out of the model's way.
    """

    inputs: list[dict[str, list[int]]]
    example_index: list[int]
    offsets: list[list[tuple[int, int] | None]]
    cls_index: list[int]

    def __len__(self) -> int:
        return len(self.inputs)


_MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def prepare_qa_features(
    tokenizer: Any,
    examples: Sequence[QAExample],
    *,
    max_length: int = 128,
    doc_stride: int = 64,
    max_question_tokens: int = 64,
) -> QAFeatures:
    """Tokenize question + context, cutting long contexts into windows overlapping by
    ``doc_stride`` tokens, so an answer late in a long context is still seen.

    Questions longer than ``max_question_tokens`` (or than a window leaves room for)
    are cut, as the original BERT SQuAD code does.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ModelReferenceError(
            f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer, and question answering "
            "needs its character offsets; fix: save the model with a fast tokenizer "
            "(tokenizer.json), e.g. AutoTokenizer.from_pretrained(dir, use_fast=True).save_pretrained(dir)"
        )
    if not examples:
        raise ValueError("no QA examples to prepare (0 items)")
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    limit = min(max_question_tokens, max_length - specials - doc_stride - 1)
    if doc_stride < 0 or limit < 8:
        raise OptionError(
            f"doc_stride must be in [0, {max_length - specials - 9}] for max_length "
            f"{max_length} (it is the overlap between windows and leaves room for the "
            f"question), got {doc_stride}; fix: lower doc_stride (--doc-stride) or raise max_length (--max-length)"
        )
    questions = [e.question.strip() for e in examples]
    contexts = [e.context for e in examples]
    for attempt in range(3):  # cutting mid-word can re-tokenize into more pieces: check again
        encoded_questions = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
        long = [i for i, o in enumerate(encoded_questions["offset_mapping"]) if len(o) > limit]
        for i in long:
            offsets = encoded_questions["offset_mapping"][i]
            questions[i] = questions[i][: offsets[limit - 1 - attempt][1]]
        if not long:
            break
    encoded = tokenizer(
        questions,
        contexts,
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )
    keys = [k for k in _MODEL_KEYS if k in encoded]
    cls_id = tokenizer.cls_token_id
    features = QAFeatures([], [], [], [])
    for i, sample in enumerate(encoded["overflow_to_sample_mapping"]):
        ids = encoded["input_ids"][i]
        sequence_ids = encoded.sequence_ids(i)
        features.inputs.append({k: list(encoded[k][i]) for k in keys})
        features.example_index.append(int(sample))
        features.offsets.append(
            [tuple(o) if s == 1 else None for o, s in zip(encoded["offset_mapping"][i], sequence_ids)]
        )
        features.cls_index.append(ids.index(cls_id) if cls_id is not None and cls_id in ids else 0)
    return features


def qa_logits(wrapper: "ModelWrapper", features: QAFeatures) -> tuple[np.ndarray, np.ndarray]:
    """Start and end logits per window, (n_features, longest window), NaN past each end."""
    width = max(len(f["input_ids"]) for f in features.inputs)
    right = getattr(wrapper.tokenizer, "padding_side", "right") == "right"

    def step(outputs: Any, batch: dict) -> np.ndarray:
        if getattr(outputs, "start_logits", None) is None or getattr(outputs, "end_logits", None) is None:
            raise ModelReferenceError(
                f"model {wrapper.name!r} has no question-answering head (its outputs have no "
                "start_logits); fix: load it with head='qa' (a *ForQuestionAnswering checkpoint)"
            )
        starts = outputs.start_logits.float().cpu().numpy()
        ends = outputs.end_logits.float().cpu().numpy()
        if "attention_mask" in batch:
            mask = batch["attention_mask"].cpu().numpy().astype(bool)
        else:  # no mask given to the model: right padding unless the tokenizer pads left
            mask = batch["input_ids"].cpu().numpy() != wrapper.tokenizer.pad_token_id
            if not right:
                mask = np.ones_like(mask)
        rows = np.full((len(starts), 2, width), np.nan, dtype=np.float32)
        for r in range(len(starts)):
            kept_start, kept_end = starts[r][mask[r]], ends[r][mask[r]]
            rows[r, 0, : len(kept_start)] = kept_start
            rows[r, 1, : len(kept_end)] = kept_end
        return rows

    both = wrapper.run(features.inputs, step, description="answering")
    return both[:, 0], both[:, 1]


def postprocess_qa(
    examples: Sequence[QAExample],
    features: QAFeatures,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    *,
    n_best: int = 20,
    max_answer_length: int = 30,
    null_margin: float = 0.0,
) -> list[str]:
    """The answer text per example: the best span over all its windows, or "" (no answer).

    A span is a start/end pair among the ``n_best`` highest logits of a window, both
    inside the context, end >= start, at most ``max_answer_length`` tokens, scored
    start + end logit. The null score is the [CLS] start + end logit, its minimum over
    the windows; "" is answered when it beats the best span by more than ``null_margin``.
    """
    if len(start_logits) != len(features) or len(end_logits) != len(features):
        raise ValueError(f"{len(features)} features but {len(start_logits)}/{len(end_logits)} rows of start/end logits")
    windows: list[list[int]] = [[] for _ in examples]
    for f, example_index in enumerate(features.example_index):
        windows[example_index].append(f)
    answers: list[str] = []
    for example, feature_ids in zip(examples, windows):
        best_score, best_span, null_score = -np.inf, None, np.inf
        for f in feature_ids:
            offsets = features.offsets[f]
            starts = np.asarray(start_logits[f][: len(offsets)], dtype=np.float64)
            ends = np.asarray(end_logits[f][: len(offsets)], dtype=np.float64)
            cls = features.cls_index[f]
            null_score = min(null_score, starts[cls] + ends[cls])
            top_starts = np.argsort(-starts, kind="stable")[:n_best]
            top_ends = np.argsort(-ends, kind="stable")[:n_best]
            for s in top_starts:
                if offsets[s] is None:
                    continue
                for e in top_ends:
                    if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    score = starts[s] + ends[e]
                    if score > best_score:
                        best_score = score
                        best_span = (offsets[s][0], offsets[e][1])
        if best_span is None or null_score - best_score > null_margin:
            answers.append("")
        else:
            answers.append(example.context[best_span[0] : best_span[1]])
    return answers


def predict_qa(
    wrapper: "ModelWrapper",
    examples: Sequence[QAExample],
    *,
    doc_stride: int = 64,
    max_answer_length: int = 30,
    null_margin: float = 0.0,
    n_best: int = 20,
) -> list[str]:
    """Answer texts ("" for no answer), one per example in order, from a QA-head model."""
    if not examples:
        raise ValueError(f"{wrapper.name}: no QA examples to answer (0 items)")
    features = prepare_qa_features(wrapper.tokenizer, examples, max_length=wrapper.max_length, doc_stride=doc_stride)
    starts, ends = qa_logits(wrapper, features)
    return postprocess_qa(
        examples, features, starts, ends, n_best=n_best, max_answer_length=max_answer_length, null_margin=null_margin
    )


def qa_correct(predictions: Sequence[str], examples: Sequence[QAExample]) -> np.ndarray:
    """Per-item exact match (bool): the correctness the prediction-error sets come from."""
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
    return np.array([bool(exact_match(p, e.answers)) for p, e in zip(predictions, examples)], dtype=bool)


def qa_scores(predictions: Sequence[str], examples: Sequence[QAExample]) -> dict[str, float]:
    """Mean exact match and F1 in percent, as the official script reports them."""
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
    if not examples:
        raise ValueError("no examples to score")
    exact = [exact_match(p, e.answers) for p, e in zip(predictions, examples)]
    overlap = [f1(p, e.answers) for p, e in zip(predictions, examples)]
    return {
        "exact": 100.0 * float(np.mean(exact)),
        "f1": 100.0 * float(np.mean(overlap)),
        "total": float(len(examples)),
    }
