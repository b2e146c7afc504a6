"""Extractive QA: official SQuAD 2.0 metrics, schema checks, windows, post-processing."""

from __future__ import annotations

import numpy as np
import pytest

from miniature.errors import DataError, ModelReferenceError
from miniature.core.builtin_data import news_qa_items, news_sentences, qa_items
from miniature.core.tasks.qa import (
    QAExample,
    exact_match,
    f1,
    normalize_answer,
    postprocess_qa,
    predict_qa,
    prepare_qa_features,
    qa_correct,
    qa_examples_from_records,
    qa_logits,
    qa_scores,
)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from miniature.tools.testing import train_tokenizer

    return train_tokenizer(tmp_path_factory.mktemp("qa") / "tokenizer")


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(str(tokenizer_dir))


@pytest.fixture(scope="module")
def qa_wrapper(tokenizer_dir, tmp_path_factory):
    from miniature.core.models import load_model
    from miniature.tools.testing import make_tiny_model

    path = make_tiny_model(tmp_path_factory.mktemp("qa") / "qa-model", tokenizer_dir, head="qa", seed=5)
    return load_model(str(path), head="qa", max_length=64, batch_size=4, progress=False)


# -- official metrics, worked by hand ---------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("The  Quick, brown FOX!", "quick brown fox"),
        ("An apple a day", "apple day"),
        ("theatre and anthem", "theatre and anthem"),  # articles only as whole words
        ("  (the) end.  ", "end"),
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_takes_the_best_of_several_gold_answers():
    assert exact_match("the Eiffel Tower!", ["Eiffel Tower"]) == 1
    assert exact_match("Eiffel", ["Eiffel Tower", "the tower"]) == 0
    assert exact_match("Tower", ["Eiffel Tower", "the tower"]) == 1
    assert exact_match("", ["Eiffel Tower"]) == 0


def test_f1_hand_worked():
    # pred {big, red, ball} vs gold {red, ball, game}: 2 shared, P = R = 2/3
    assert f1("the big red ball", ["red ball game"]) == pytest.approx(2 / 3)
    # repeated tokens count once per match: P = 2/3, R = 1 -> 0.8
    assert f1("red red ball", ["red ball"]) == pytest.approx(0.8)
    assert f1("big red ball", ["blue", "a big red ball"]) == pytest.approx(1.0)
    assert f1("green", ["red ball"]) == 0.0


def test_unanswerable_is_matched_only_by_the_empty_answer():
    assert exact_match("", []) == 1 and f1("", []) == 1.0
    assert exact_match("Paris", []) == 0 and f1("Paris", []) == 0.0
    # as in evaluate-v2.0: the prediction is normalised, so "the" counts as empty
    assert exact_match("the", []) == 1
    # gold answers that normalise to nothing are dropped, leaving the question unanswerable
    assert exact_match("", ["a", "."]) == 1 and exact_match("a", ["An"]) == 1
    # an answerable question is not matched by the empty answer
    assert f1("", ["Paris"]) == 0.0


def test_qa_correct_and_scores():
    examples = [
        QAExample("1", "q", "Paris is big", ("Paris",), (0,)),
        QAExample("2", "q", "no answer here"),
        QAExample("3", "q", "red ball game", ("red ball game",), (0,)),
    ]
    predictions = ["paris", "here", "red ball"]
    assert qa_correct(predictions, examples).tolist() == [True, False, False]
    scores = qa_scores(predictions, examples)
    assert scores["exact"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 0 + 0.8) / 3)
    with pytest.raises(ValueError, match="2 predictions for 3"):
        qa_correct(predictions[:2], examples)


# -- schema -----------------------------------------------------------------------------------
def _row(**changes):
    row = {
        "id": "q1",
        "question": "Where?",
        "context": "It is in Velmora.",
        "answers": {"text": ["Velmora"], "answer_start": [9]},
    }
    row.update(changes)
    return row


def test_records_parse_both_answer_layouts():
    rows = [
        _row(),
        _row(id=7, answers=[{"text": "Velmora", "answer_start": 9}]),
        _row(id="q3", answers={"text": [], "answer_start": []}),
    ]
    examples = qa_examples_from_records(rows, "dev.jsonl")
    assert [e.id for e in examples] == ["q1", "7", "q3"]
    assert examples[0].answers == ("Velmora",) and examples[0].answer_starts == (9,)
    assert examples[1] == QAExample("7", "Where?", "It is in Velmora.", ("Velmora",), (9,))
    assert not examples[2].is_answerable and examples[0].is_answerable


@pytest.mark.parametrize(
    "row, words",
    [
        ({"id": "q1", "question": "Where?", "answers": {"text": [], "answer_start": []}}, ["dev.jsonl", "'context'"]),
        (_row(answers="Velmora"), ["dev.jsonl", "'answers'", "answer_start"]),
        (_row(answers={"text": ["Velmora"], "answer_start": [3]}), ["dev.jsonl", "answer_start 3"]),
        (_row(answers={"text": ["Velmora", "x"], "answer_start": [9]}), ["same length"]),
        (_row(question="  "), ["'question'", "empty"]),
        (_row(id=None), ["'id'", "NoneType"]),
    ],
)
def test_bad_records_name_source_and_column(row, words):
    with pytest.raises(DataError) as error:
        qa_examples_from_records([row], "dev.jsonl")
    for word in words:
        assert word in str(error.value)
    assert "fix" in str(error.value)


def test_duplicate_ids_and_empty_data_are_refused():
    with pytest.raises(DataError, match="repeats row 0"):
        qa_examples_from_records([_row(), _row()], "dev.jsonl")
    with pytest.raises(DataError, match="empty"):
        qa_examples_from_records([], "dev.jsonl")


# -- synthetic items --------------------------------------------------------------------------
def test_synthetic_items_are_valid_squad_rows_with_the_requested_share_unanswerable():
    items = qa_items(60, seed=4)
    again = qa_examples_from_records([e.to_record() for e in items], "synthetic")
    assert again == items  # every answer sits at its answer_start
    assert sum(not e.is_answerable for e in items) == round(60 * 0.33)
    assert qa_items(60, seed=4) == items and qa_items(60, seed=5) != items
    assert all(not e.is_answerable for e in qa_items(10, seed=1, unanswerable=1.0))
    news = news_qa_items(30, seed=4)
    assert qa_examples_from_records([e.to_record() for e in news], "news") == news
    words = lambda xs: np.mean([len(x.context.split()) for x in xs])  # noqa: E731
    assert words(news) > 2.5 * words(items)
    with pytest.raises(ValueError, match="unanswerable"):
        qa_items(5, unanswerable=1.5)


# -- windows and post-processing on hand-made logits ------------------------------------------
ANSWER = "Velmora harbour"


@pytest.fixture(scope="module")
def long_example():
    filler = " ".join(news_sentences(12, seed=2))
    context = f"{filler} The old map was hidden in {ANSWER}. {' '.join(news_sentences(2, seed=3))}"
    return QAExample("long", "where was the old map hidden", context, (ANSWER,), (context.index(ANSWER),))


def _span_tokens(features, f, start, end):
    """Token positions of window ``f`` whose offsets begin at ``start`` and end at ``end``."""
    offsets = features.offsets[f]
    first = [j for j, o in enumerate(offsets) if o is not None and o[0] == start]
    last = [j for j, o in enumerate(offsets) if o is not None and o[1] == end]
    return (first[0], last[0]) if first and last else None


def _logits(features, value=0.0):
    width = max(len(o) for o in features.offsets)
    return np.full((len(features), width), value), np.full((len(features), width), value)


@pytest.fixture(scope="module")
def windows(tokenizer, long_example):
    features = prepare_qa_features(tokenizer, [long_example], max_length=64, doc_stride=16)
    start = long_example.answer_starts[0]
    spans = [_span_tokens(features, f, start, start + len(ANSWER)) for f in range(len(features))]
    return features, spans


def test_model_inputs_hold_no_offsets_and_windows_overlap(windows, tokenizer, long_example):
    features, spans = windows
    assert len(features) >= 3 and set(features.example_index) == {0}
    for inputs in features.inputs:
        assert set(inputs) == {"input_ids", "attention_mask", "token_type_ids"}
        assert len(inputs["input_ids"]) <= 64
    # every context character is covered, and consecutive windows overlap
    covered = [(min(o[0] for o in offs if o), max(o[1] for o in offs if o)) for offs in features.offsets]
    assert covered[0][0] == 0 and covered[-1][1] >= len(long_example.context.rstrip(".")) - 1
    assert all(nxt[0] < prev[1] for prev, nxt in zip(covered, covered[1:]))
    assert spans[0] is None, "the answer must lie beyond the first window for this test"


def _answer_window(spans):
    return next(f for f, span in enumerate(spans) if span is not None)


def test_answer_in_a_later_window_is_found(windows, long_example):
    features, spans = windows
    f = _answer_window(spans)
    assert f >= 1
    starts, ends = _logits(features)
    starts[:, 0] = ends[:, 0] = -10.0  # [CLS]: no-answer unlikely
    starts[0, 20], ends[0, 22] = 4.0, 4.0  # a weaker span in the first window
    s, e = spans[f]
    starts[f, s], ends[f, e] = 10.0, 10.0
    assert postprocess_qa([long_example], features, starts, ends) == [ANSWER]


def test_spans_outside_context_reversed_or_too_long_are_skipped(windows, long_example):
    features, spans = windows
    f = _answer_window(spans)
    s, e = spans[f]
    starts, ends = _logits(features, -30.0)
    starts[f, s], ends[f, e] = 10.0, 10.0  # the answer: 20
    starts[f, 2], ends[f, 3] = 50.0, 50.0  # inside the question: not a context span
    starts[f, e + 1], ends[f, s - 1] = 40.0, 40.0  # a reversed pair: end before start
    assert postprocess_qa([long_example], features, starts, ends) == [ANSWER]
    assert e - s + 1 >= 2
    assert postprocess_qa([long_example], features, starts, ends, max_answer_length=1) != [ANSWER]


def test_null_score_beats_the_span(windows, long_example):
    features, spans = windows
    f = _answer_window(spans)
    s, e = spans[f]
    starts, ends = _logits(features)
    starts[f, s], ends[f, e] = 10.0, 10.0  # span score 20
    starts[:, 0], ends[:, 0] = 15.0, 15.0  # null score 30 everywhere
    assert postprocess_qa([long_example], features, starts, ends) == [""]
    # the null score is the minimum over windows: one confident window keeps the span
    starts[f, 0] = ends[f, 0] = -10.0
    assert postprocess_qa([long_example], features, starts, ends) == [ANSWER]


def test_null_margin_changes_the_decision(windows, long_example):
    features, spans = windows
    f = _answer_window(spans)
    s, e = spans[f]
    starts, ends = _logits(features)
    starts[f, s], ends[f, e] = 10.0, 10.0  # span 20
    starts[:, 0], ends[:, 0] = 11.0, 11.0  # null 22: beats the span by 2
    answer = lambda margin: postprocess_qa(  # noqa: E731
        [long_example],
        features,
        starts,
        ends,
        null_margin=margin,
    )
    assert answer(0.0) == [""] and answer(1.5) == [""]
    assert answer(2.5) == [ANSWER]
    starts[:, 0], ends[:, 0] = 9.0, 9.0  # null 18: the span wins at margin 0 ...
    assert answer(0.0) == [ANSWER]
    assert answer(-3.0) == [""]  # ... but not with a negative margin


def test_stride_must_leave_room_for_the_question(tokenizer, long_example):
    with pytest.raises(ValueError, match="doc_stride"):
        prepare_qa_features(tokenizer, [long_example], max_length=64, doc_stride=60)


# -- end to end on a tiny QA model ------------------------------------------------------------
def test_predict_qa_returns_one_answer_per_example_in_order(qa_wrapper):
    examples = qa_items(10, seed=8) + news_qa_items(4, seed=8)
    answer = lambda items, margin: predict_qa(  # noqa: E731
        qa_wrapper,
        items,
        doc_stride=16,
        null_margin=margin,
    )
    predictions = answer(examples, 1e9)  # a huge margin: never "no answer"
    assert len(predictions) == len(examples)
    assert all(p and p in e.context for p, e in zip(predictions, examples))
    # order and batching do not change an item's answer
    assert answer(examples[::-1], 1e9) == predictions[::-1]
    assert [answer([e], 1e9)[0] for e in examples[:3]] == predictions[:3]
    # the margin moves items to "no answer"
    assert answer(examples, -1e9) == [""] * len(examples)
    correct = qa_correct(predictions, examples)
    assert correct.dtype == bool and correct.shape == (len(examples),)


def test_logits_are_padding_free_per_window(qa_wrapper):
    examples = news_qa_items(3, seed=9)
    features = prepare_qa_features(qa_wrapper.tokenizer, examples, max_length=64, doc_stride=16)
    starts, ends = qa_logits(qa_wrapper, features)
    lengths = [len(f["input_ids"]) for f in features.inputs]
    assert starts.shape == ends.shape == (len(features), max(lengths))
    for row, n in zip(starts, lengths):
        assert np.isfinite(row[:n]).all() and np.isnan(row[n:]).all()
    alone, _ = qa_logits(qa_wrapper, type(features)([features.inputs[-1]], [0], [features.offsets[-1]], [0]))
    np.testing.assert_allclose(alone[0, : lengths[-1]], starts[-1, : lengths[-1]], atol=1e-4)


def test_a_model_without_qa_head_is_refused(tokenizer_dir, tmp_path):
    from miniature.core.models import load_model
    from miniature.tools.testing import make_tiny_model

    path = make_tiny_model(tmp_path / "cls", tokenizer_dir, head="classification")
    wrapper = load_model(str(path), head="classification", progress=False)
    with pytest.raises(ModelReferenceError, match="head='qa'"):
        predict_qa(wrapper, qa_items(2))
    with pytest.raises(ValueError, match="doc_stride"):  # the default stride needs long windows
        predict_qa(load_model(str(path), head="classification", max_length=64), qa_items(2))
