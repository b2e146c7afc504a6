"""Hostile input and faults: each gives one clear line naming the input and the fix, or a
warning and a correct result; nothing computed is lost; nothing from a model is executed.

Organised by subject: data, models, options, reports, cache, tools. Each case is documented
in the "Bad input" table of the docs.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from miniature.core import settings as opt
from miniature.core.data import load_text_data, write_jsonl
from miniature.core.gate import Gate
from miniature.core.outputs import OutputStore
from miniature.errors import CacheWarning, DataError, DataWarning, MiniatureError, ModelReferenceError
from miniature.core.settings import make_settings


def gate(tiny_models, tmp_path: Path, **overrides) -> Gate:
    values = dict(
        reference=str(tiny_models["reference"]),
        candidate=[str(tiny_models["small"])],
        cache_dir=tmp_path / "cache",
        data_limit=60,
        bootstrap=0,
    )
    values.update(overrides)
    return Gate(make_settings(**values))


def figures(g: Gate) -> dict[str, float]:
    pair = g.pairs()[0]
    return {c: g.compare(c, pair).figure for c in ("prediction_errors", "data_representation", "data_distribution")}


def write_rows(path: Path, texts: list[str]) -> Path:
    write_jsonl(path, [{"text": t, "label": i % 2} for i, t in enumerate(texts)])
    return path


def _one_line_naming(error: BaseException, *parts: str) -> str:
    message = str(error)
    assert "\n" not in message and "fix:" in message, message
    for part in parts:
        assert part in message, (part, message)
    return message


def one_line_usage_error(result: pytest.RunResult) -> str:
    """The single non-blank line a usage error prints (asserted to be one)."""
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    lines = [line for line in result.stderr.lines if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


# == data: files, columns, labels, texts and sample sizes ======================================
def test_empty_dataset(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(DataError, match=r"empty.jsonl' is empty \(0 rows\); fix"):
        load_text_data(path)


def test_missing_column(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "d.jsonl", ["a", "b"])
    with pytest.raises(DataError, match="has no column 'review'.*fix: rename the column or pass"):
        load_text_data(path, text_column="review")


@pytest.mark.parametrize("blank", ["", "   \t\n"])
def test_empty_and_whitespace_texts(tmp_path: Path, blank: str) -> None:
    path = write_rows(tmp_path / "d.jsonl", ["fine", blank, "also fine"])
    with pytest.raises(DataError, match=r"1 empty or whitespace-only text\(s\) in column 'text' \(first at row 1\)"):
        load_text_data(path)


def test_duplicate_texts_warn_and_ties_are_broken_by_index(tiny_models, tmp_path: Path) -> None:
    from miniature.core.characteristics.representation import knn_indices

    from miniature.core.builtin_data import sentiment_reviews

    texts = [r.text for r in sentiment_reviews(30, seed=3)] * 2
    path = write_rows(tmp_path / "dupes.jsonl", texts)
    g = gate(tiny_models, tmp_path, test_data=str(path), k=3)
    with pytest.warns(DataWarning, match="30 duplicate item"):
        g.data
    vectors = g.outputs(g.reference, "test")["embeddings"]
    neighbours = knn_indices(vectors, 3)
    assert all(neighbours[i, 0] == (i + 30) % 60 for i in range(60))  # the twin comes first
    assert np.array_equal(neighbours, knn_indices(vectors, 3))


def test_k_not_below_the_number_of_items(tiny_models, tmp_path: Path) -> None:
    g = gate(tiny_models, tmp_path, k=60)
    with pytest.raises(MiniatureError, match=r"data representation, reference vs small: .*K.*60.*fix|choose K < n"):
        g.compare("data_representation", g.pairs()[0])


def test_texts_longer_than_max_length_are_truncated_and_reported(tiny_models, tmp_path: Path) -> None:
    long = " ".join(["the plot was long and winding"] * 40)
    path = write_rows(tmp_path / "long.jsonl", [f"{long} {i}" for i in range(20)] + [f"short {i}" for i in range(20)])
    g = gate(tiny_models, tmp_path, test_data=str(path), max_length=32, k=5)
    with pytest.warns(DataWarning, match="20 of 40 items are longer than --max-length 32 tokens and were truncated"):
        result = g.compare("data_representation", g.pairs()[0])
    assert 0.0 <= result.figure <= 1.0


def test_non_english_text_and_emoji_give_finite_results(tiny_models, tmp_path: Path) -> None:
    texts = [
        "Der Film war großartig 🎬🍿",
        "映画はとても退屈だった",
        "фильм был ужасен 😡",
        "¡Qué película tan buena!",
        "😀😀😀",
        "film الجميل جدا",
    ] * 5
    path = write_rows(tmp_path / "intl.jsonl", [f"{t} {i}" for i, t in enumerate(texts)])
    g = gate(tiny_models, tmp_path, test_data=str(path), k=5)
    result = g.compare("data_representation", g.pairs()[0])
    assert np.isfinite(g.outputs(g.reference, "test")["embeddings"]).all() and 0 <= result.figure <= 1


def test_labels_that_look_like_integers_are_integers(tmp_path: Path) -> None:
    path = tmp_path / "twelve.jsonl"
    write_jsonl(path, [{"text": f"item {i}", "label": str(i % 12)} for i in range(24)])
    data = load_text_data(path)
    assert data.labels == [i % 12 for i in range(24)] and data.label_names == []  # "10" is 10, not 2


def test_label_names_that_are_integers_are_data_label_ids() -> None:
    from miniature.core.tasks.classification import check_label_maps, translation_table

    swapped = {"id2label": {"0": "1", "1": "0"}}
    mapping = check_label_maps(swapped, {"id2label": {"0": "0", "1": "1"}}, [0, 1, 1])
    assert translation_table({0: "1", 1: "0"}, mapping, "swapped").tolist() == [1, 0]


def test_blank_label_in_a_csv_is_an_error_naming_file_row_and_column(tmp_path: Path) -> None:
    path = tmp_path / "blank.csv"
    path.write_text("text,label\nfine film,1\ndull film,0\nodd film,\ngreat film,1\n")
    with pytest.raises(DataError) as info:
        load_text_data(path)
    _one_line_naming(info.value, str(path), "column 'label' in row 2 is blank")


def _squad_rows() -> list[dict]:
    return [
        {
            "id": str(i),
            "question": "who?",
            "context": "Ada wrote it.",
            "answers": {"text": ["Ada"], "answer_start": [0]},
        }
        for i in range(3)
    ]


def _parquet(path: Path, rows: dict) -> None:
    import pandas as pd

    pd.DataFrame(rows).to_parquet(path)


BAD_DATA = {  # file name, how to write it, load options, what the one line says
    "jsonl-line-not-an-object": (
        "d.jsonl",
        lambda p: p.write_text('{"text": "a", "label": 0}\n[1, 2]\n'),
        {},
        "line 2 is a JSON list, not an object",
    ),
    "json-is-a-dict": (
        "d.json",
        lambda p: p.write_text('{"text": ["a", "b"], "label": [0, 1]}'),
        {},
        "is a JSON object (keys 'text', 'label'), not a list of records",
    ),
    "json-row-not-an-object": (
        "d.json",
        lambda p: p.write_text('[{"text": "a", "label": 0}, "b"]'),
        {},
        "row 1 is a JSON string, not an object",
    ),
    "json-not-valid": (
        "d.json",
        lambda p: p.write_text('[{"text": "a",\n "label": }]'),
        {},
        "is not valid JSON (line 2 column",
    ),
    "csv-ragged-long-row": (
        "d.csv",
        lambda p: p.write_text("text,label\nfine,1\ngood, really,1\n"),
        {},
        "line 3 has 3 field(s) but the header has 2 (text, label)",
    ),
    "csv-ragged-short-row": (
        "d.csv",
        lambda p: p.write_text("text,label\nfine,1\nno label here\n"),
        {},
        "line 3 has 1 field(s) but the header has 2",
    ),
    "label-float": (
        "d.jsonl",
        lambda p: write_jsonl(p, [{"text": "a", "label": 0}, {"text": "b", "label": 1.5}]),
        {},
        "column 'label' in row 1 is float 1.5, not a whole number",
    ),
    "label-boolean": (
        "d.jsonl",
        lambda p: write_jsonl(p, [{"text": "a", "label": True}]),
        {},
        "column 'label' in row 0 is a boolean",
    ),
    "label-ids-mixed-with-names": (
        "d.jsonl",
        lambda p: write_jsonl(p, [{"text": "a", "label": 0}, {"text": "b", "label": "pos"}]),
        {},
        "column 'label' mixes integer label ids (row 0: 0) and label names (row 1: 'pos')",
    ),
    "qa-file-as-classification": (
        "qa.jsonl",
        lambda p: write_jsonl(p, _squad_rows()),
        {"text_column": "question", "label_column": "answers"},
        "column 'answers' in row 0 is a dict",
    ),
    "parquet-null-text": (
        "d.parquet",
        lambda p: _parquet(p, {"text": ["a", None], "label": [0, 1]}),
        {},
        "column 'text' in row 1 is empty (null)",
    ),
    "parquet-null-label": (
        "d.parquet",
        lambda p: _parquet(p, {"text": ["a", "b", "c"], "label": [0, 1, None]}),
        {},
        "column 'label' in row 2 is empty (null)",
    ),
    "jsonl-not-utf8": (
        "d.jsonl",
        lambda p: p.write_bytes(
            b'{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n{"text": "caf\xe9", "label": 0}\n'
        ),
        {},
        "line 3 is not UTF-8 text (byte 0xe9",
    ),
    "csv-not-utf8": (
        "d.csv",
        lambda p: p.write_bytes(b"text,label\nna\xefve,1\n"),
        {},
        "line 2 is not UTF-8 text (byte 0xef",
    ),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_is_one_line_naming_file_row_and_column(tmp_path: Path, case: str) -> None:
    name, write, options, expected = BAD_DATA[case]
    path = tmp_path / name
    write(path)
    with pytest.raises(DataError) as info:
        load_text_data(path, **options)
    _one_line_naming(info.value, str(path), expected)
    if case == "qa-file-as-classification":
        assert "--task qa" in str(info.value)


@pytest.mark.parametrize(
    ("name", "content", "labels"),
    [
        ("bom.jsonl", '\ufeff{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n', [1, 0]),
        ("bom.json", '\ufeff[{"text": "a", "label": 1}, {"text": "b", "label": 0}]', [1, 0]),
        ("whole.jsonl", '{"text": "a", "label": 1.0}\n{"text": "b", "label": 0.0}\n', [1, 0]),
        (
            "padded.jsonl",
            '{"text": "a", "label": " 1"}\n{"text": "b", "label": "0"}\n{"text": "c", "label": "10"}\n',
            [1, 0, 10],
        ),
    ],
)
def test_data_that_reads_correctly(tmp_path: Path, name: str, content: str, labels: list[int]) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    data = load_text_data(path)
    assert data.labels == labels and data.label_names == [] and data.texts[0] == "a"


def write_labelled(path: Path, n: int) -> Path:
    from miniature.core.builtin_data import sentiment_reviews

    write_jsonl(path, [{"text": r.text, "label": r.label} for r in sentiment_reviews(n, seed=3)])
    return path


@pytest.mark.slow
def test_too_few_attacked_items_skip_the_attack_with_the_reason(tiny_models, tmp_path: Path) -> None:
    from miniature.core.characteristics.adversarial import MIN_ITEMS
    from miniature.errors import NotApplicable

    reference = str(tiny_models["reference"])
    one = write_labelled(tmp_path / "one.jsonl", 1)
    g = gate(
        tiny_models, tmp_path, candidate=[reference], test_data=str(one), attack_model=str(tiny_models["attacker"])
    )
    with pytest.raises(NotApplicable) as info:
        g.compare("adversarial_vulnerability", g.pairs()[0])
    message = str(info.value)
    assert "\n" not in message and "nan" not in message
    assert "of the 1 sampled item(s) were classified correctly by both" in message
    assert f"at least {MIN_ITEMS} are needed" in message
    assert "fix: pass more labelled test items (the test data has 1)" in message
    # enough test items, too small a sample: the fix is the sample size
    many = write_labelled(tmp_path / "many.jsonl", 40)
    g = gate(
        tiny_models,
        tmp_path,
        candidate=[reference],
        test_data=str(many),
        attack_model=str(tiny_models["attacker"]),
        attack_size=2,
    )
    with pytest.raises(NotApplicable, match=r"of the 2 sampled item.*fix: raise --attack-size \(now 2\)"):
        g.compare("adversarial_vulnerability", g.pairs()[0])


def test_too_few_test_items_skip_prediction_errors(tiny_models, tmp_path: Path) -> None:
    from miniature.errors import NotApplicable

    few = write_labelled(tmp_path / "few.jsonl", 5)
    g = gate(tiny_models, tmp_path, test_data=str(few))
    with pytest.raises(NotApplicable, match=r"only 5 test item\(s\) in .*few.jsonl.*needs at least 10"):
        g.compare("prediction_errors", g.pairs()[0])


def test_no_errors_at_all_is_said_not_nan(tiny_models, tmp_path: Path) -> None:
    from miniature.errors import NotApplicable

    g = gate(tiny_models, tmp_path)
    g.correct = lambda name: np.ones(len(g.data.test), dtype=bool)  # both models always right
    with pytest.raises(
        NotApplicable,
        match="neither 'reference' nor 'small' erred on any of the 60 "
        "test items.*fix: pass a larger or harder --test-data",
    ):
        g.compare("prediction_errors", g.pairs()[0])


@pytest.mark.slow
def test_small_samples_warn_that_the_interval_is_wide(tiny_models, tmp_path: Path) -> None:
    g = gate(tiny_models, tmp_path, data_limit=20, k=5)
    with pytest.warns(
        DataWarning,
        match=r"data representation, reference vs small: computed on only "
        r"n=20 items \(fewer than 30\), so its 95% interval is wide",
    ):
        result = g.compare("data_representation", g.pairs()[0])
    assert result.n == 20 and 0.0 <= result.figure <= 1.0
    roomy = gate(tiny_models, tmp_path, data_limit=40, k=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        roomy.compare("data_representation", roomy.pairs()[0])


# -- data: label names, degenerate comparisons, invisible and odd texts -----------------------
def _relabel(source: Path, target: Path, id2label: dict[int, str]) -> Path:
    """A copy of a tiny model whose config names its labels ``id2label``."""
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config["id2label"] = {str(i): name for i, name in id2label.items()}
    config["label2id"] = {name: i for i, name in id2label.items()}
    (target / "config.json").write_text(json.dumps(config))
    return target


def _named_labels(path: Path, names: tuple[str, str], n: int = 60) -> Path:
    from miniature.core.builtin_data import sentiment_reviews

    write_jsonl(path, [{"text": r.text, "label": names[r.label]} for r in sentiment_reviews(n, seed=3)])
    return path


def test_label_names_are_matched_by_name_not_alphabetically(tiny_models, tmp_path: Path) -> None:
    # the models say {0: POSITIVE, 1: NEGATIVE}; the data says neg/pos (sorted: neg=0, pos=1)
    pos_neg = {0: "POSITIVE", 1: "NEGATIVE"}
    reference = _relabel(tiny_models["reference"], tmp_path / "ref", pos_neg)
    candidate = _relabel(tiny_models["small"], tmp_path / "cand", pos_neg)
    data = _named_labels(tmp_path / "named.jsonl", ("neg", "pos"))
    g = gate(tiny_models, tmp_path, reference=str(reference), candidate=[str(candidate)], test_data=str(data))
    gold = [row["label"] for row in map(json.loads, data.read_text().splitlines())]
    for name in g.names:
        predicted = [pos_neg[int(i)] for i in g.outputs(name, "test")["logits"].argmax(axis=1)]
        expected = [p.lower().startswith(label) for p, label in zip(predicted, gold)]
        assert g.correct(name).tolist() == expected  # alphabetical ids would invert every item


def test_label_names_match_by_unique_prefix_in_any_order_or_are_refused() -> None:
    from miniature.core.tasks.classification import check_label_maps, translation_table

    nli = {"id2label": {"0": "ENTAILMENT", "1": "NEUTRAL", "2": "CONTRADICTION"}}
    names = ["contradict", "entail", "neutral"]  # sorted by the loader: contradict=0, entail=1, neutral=2
    mapping = check_label_maps(nli, nli, [0, 1, 2], data_label_names=names)
    assert translation_table({0: "ENTAILMENT", 1: "NEUTRAL", 2: "CONTRADICTION"}, mapping, "m").tolist() == [1, 2, 0]
    # an ambiguous prefix ("ne" fits NEGATIVE and NEUTRAL) is refused, never guessed
    three = {"id2label": {"0": "NEGATIVE", "1": "NEUTRAL", "2": "POSITIVE"}}
    with pytest.raises(DataError) as info:
        check_label_maps(three, three, [0, 1, 2], data_label_names=["ne", "neu", "po"], data_source="nli.jsonl")
    _one_line_naming(info.value, "nli.jsonl", "['ne', 'neu', 'po']", "'NEGATIVE'", "--label-map")


def test_label_names_without_name_evidence_are_refused_listing_both_sets(tiny_models, tmp_path: Path) -> None:
    # LABEL_0/LABEL_1 say nothing of which is neg and which is pos
    data = _named_labels(tmp_path / "named.jsonl", ("neg", "pos"))
    g = gate(tiny_models, tmp_path, test_data=str(data))
    with pytest.raises(DataError) as info:
        g.correct(g.reference)
    _one_line_naming(
        info.value,
        str(data),
        "['neg', 'pos']",
        "{0: 'LABEL_0', 1: 'LABEL_1'}",
        "neg=0, pos=1",
        '--label-map "LABEL_0=0,LABEL_1=1"',
    )
    assert g.outcome("prediction_errors", g.pairs()[0]).status == "error"
    mapped = gate(tiny_models, tmp_path, test_data=str(data), label_map="LABEL_0=1,LABEL_1=0")
    logits = mapped.outputs(mapped.reference, "test")["logits"]
    assert mapped.correct(mapped.reference).tolist() == (1 - logits.argmax(axis=1) == mapped.data.test.labels).tolist()


def test_finetuning_keeps_the_ids_of_labels_the_model_already_names(tiny_models, tmp_path: Path) -> None:
    from miniature.core.finetune import _classification_items, finetune
    from miniature.core.tasks.classification import id2label
    from transformers import AutoConfig, AutoTokenizer

    pos_neg = {0: "POSITIVE", 1: "NEGATIVE"}
    base = _relabel(tiny_models["small"], tmp_path / "base", pos_neg)
    train = load_text_data(_named_labels(tmp_path / "train.jsonl", ("neg", "pos"), n=16))
    target = finetune(
        str(base), "classification", train, output_root=tmp_path / "ft", max_steps=1, batch_size=8, progress=False
    )
    assert id2label(AutoConfig.from_pretrained(target)) == pos_neg  # not {0: neg, 1: pos}
    items = _classification_items(AutoTokenizer.from_pretrained(target), train, {"input_ids"}, 32, pos_neg)
    assert [item["labels"] for item in items] == [1 - label for label in train.labels]  # pos -> 0


def test_challenge_equal_to_train_skips_distribution_and_warns(tiny_models, tmp_path: Path) -> None:
    from miniature.errors import NotApplicable

    data = write_labelled(tmp_path / "train.jsonl", 60)
    # K=1: each challenge item's nearest training item is itself, at distance 0, so no model flags it
    g = gate(tiny_models, tmp_path, train_data=str(data), challenge_data=str(data), k=1)
    with pytest.warns(
        DataWarning,
        match=r"challenge data \(.*train.jsonl\) shares 60 of its 60 item.*"
        r"training data \(.*train.jsonl\)",
    ):
        g.data
    with pytest.raises(NotApplicable) as info:
        g.compare("data_distribution", g.pairs()[0])
    message = str(info.value)
    assert "\n" not in message and "60 of them training items" in message and "fix:" in message
    assert "neither model flags any of the 60 challenge items" in message and "chance 1.000" in message
    assert g.outcome("data_distribution", g.pairs()[0]).status == "skipped"  # not a perfect 1.0 pass


def test_nearly_every_neighbour_skips_representation_with_the_chance(tiny_models, tmp_path: Path) -> None:
    from miniature.errors import NotApplicable

    g = gate(tiny_models, tmp_path, k=57)  # 57 of the 59 others: chance 0.93
    with pytest.raises(
        NotApplicable,
        match=r"K=57 neighbours of the 59 other test items .* chance 0\.9\d\d.*"
        r"fix: choose a K well below n/2 \(--k",
    ):
        g.compare("data_representation", g.pairs()[0])
    assert gate(tiny_models, tmp_path, k=20).compare("data_representation", g.pairs()[0]).computed


def test_both_models_wrong_on_everything_skip_prediction_errors(tiny_models, tmp_path: Path) -> None:
    from miniature.errors import NotApplicable

    g = gate(tiny_models, tmp_path)
    g.correct = lambda name: np.zeros(len(g.data.test), dtype=bool)  # both error sets are everything
    with pytest.raises(NotApplicable, match="erred on every one of the 60 test items.*chance 1.000.*fix:"):
        g.compare("prediction_errors", g.pairs()[0])


def test_zero_width_only_text_is_an_empty_text(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "d.jsonl", ["fine", "\u200b\u200b", "also fine"])
    with pytest.raises(DataError) as info:
        load_text_data(path)
    _one_line_naming(info.value, str(path), "(first at row 1)", "only invisible character(s) U+200B")
    text_file = tmp_path / "d.txt"
    text_file.write_text("one\n\u200b\u2060\ntwo\n", encoding="utf-8")
    assert load_text_data(text_file).texts == ["one", "two"]  # skipped like a blank line


def test_lone_surrogate_names_file_row_and_column(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "fine", "label": 0}\n{"text": "odd \\ud83d here", "label": 1}\n')
    with pytest.raises(DataError) as info:
        load_text_data(path)
    _one_line_naming(info.value, str(path), "column 'text' in row 1", "lone surrogate")


def test_identical_texts_skip_representation_and_cka_names_the_data(tiny_models, tmp_path: Path) -> None:
    from miniature.errors import NotApplicable

    path = write_rows(tmp_path / "same.jsonl", ["the very same review"] * 100)
    g = gate(tiny_models, tmp_path, test_data=str(path), data_limit=100)
    with pytest.warns(DataWarning, match="99 duplicate"):
        g.data
    with pytest.raises(
        NotApplicable,
        match=r"every one of the 100 test items .*same.jsonl.* identical "
        r"copies .*fix: remove the duplicates",
    ):
        g.compare("data_representation", g.pairs()[0])
    with pytest.raises(NotApplicable) as info:
        g.compare("representation_similarity", g.pairs()[0])
    _one_line_naming(info.value, str(path), "all 100 test items", "the same text")
    from miniature.core.characteristics.similarity import compare_similarity

    same = np.ones((6, 3))
    with pytest.raises(ValueError, match="model 'tiny' gives every one of the 6 items the same vector"):
        compare_similarity(same, np.random.default_rng(0).normal(size=(6, 3)), reference="tiny", candidate="b")


def test_compressed_file_is_named_as_compressed(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "d.jsonl"
    path.write_bytes(gzip.compress(b'{"text": "a", "label": 0}\n'))
    with pytest.raises(DataError) as info:
        load_text_data(path)
    message = _one_line_naming(info.value, str(path), "is a gzip-compressed file", "gunzip")
    assert "UTF-8" not in message


def test_csv_text_column_of_digits_is_text(tmp_path: Path) -> None:
    path = tmp_path / "digits.csv"
    path.write_text("text,label\n007,1\n12345,0\n3.50,1\n")
    data = load_text_data(path)
    assert data.texts == ["007", "12345", "3.50"] and data.labels == [1, 0, 1]


# == models: references, model files, heads and outputs ========================================
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bert-lage", "unknown model alias 'bert-lage'"),  # 1 unknown alias
        ("./missing-model", "does not exist"),  # 2 missing path
    ],
)
def test_bad_reference_is_a_one_line_usage_error(pytester: pytest.Pytester, value: str, expected: str) -> None:
    result = pytester.runpytest(f"{opt.REFERENCE}={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    lines = [line for line in result.stderr.lines if line.strip()]
    assert len(lines) == 1 and expected in lines[0] and "fix:" in lines[0]


def test_path_without_config(pytester: pytest.Pytester) -> None:
    pytester.mkdir("empty-model")
    result = pytester.runpytest(f"{opt.REFERENCE}=empty-model")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "has no config.json; fix: save the model there with model.save_pretrained" in result.stderr.str()


def test_model_without_tokenizer(pytester: pytest.Pytester, tiny_models) -> None:
    target = pytester.mkdir("no-tokenizer")
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_models["small"] / name, target)
    result = pytester.runpytest(f"{opt.REFERENCE}=no-tokenizer")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "has no tokenizer files" in result.stderr.str() and "tokenizer.save_pretrained" in result.stderr.str()


def test_pickle_only_weights_are_refused(tiny_models, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    target = tmp_path / "pickled"
    shutil.copytree(tiny_models["small"], target)
    torch.save(load_file(str(target / "model.safetensors")), target / "pytorch_model.bin")
    (target / "model.safetensors").unlink()
    g = gate(tiny_models, tmp_path, candidate=[str(target)])
    with pytest.raises(ModelReferenceError, match=r"only pickle weights.*fix: convert them to safetensors"):
        figures(g)


def test_model_needing_remote_code_is_refused_and_nothing_runs(tiny_models, tmp_path: Path) -> None:
    target = tmp_path / "remote"
    shutil.copytree(tiny_models["small"], target)
    marker = tmp_path / "ran"
    config = json.loads((target / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "evil.Model"}
    (target / "config.json").write_text(json.dumps(config))
    (target / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    with pytest.raises(ModelReferenceError, match="declares custom code.*--trust-remote-code"):
        figures(gate(tiny_models, tmp_path, candidate=[str(target)]))
    assert not marker.exists()


def test_different_label_sets(tiny_models, tmp_path: Path) -> None:
    from miniature.tools.testing import make_tiny_model

    three = make_tiny_model(tmp_path / "three", tiny_models.tokenizer_dir, num_labels=3, seed=9)
    config = json.loads((three / "config.json").read_text())
    config["id2label"] = {"0": "neg", "1": "neutral", "2": "pos"}
    (three / "config.json").write_text(json.dumps(config))
    g = gate(tiny_models, tmp_path, candidate=[str(three)])
    # a head for 3 labels on 2-label data: its predictions are not comparable, so skipped
    from miniature.errors import NotApplicable

    with pytest.raises(
        NotApplicable, match="'three' has a classification head for 3 label.*the data has 2 distinct label.*--label-map"
    ):
        g.compare("prediction_errors", g.pairs()[0])


def test_nan_embeddings_are_a_clear_error() -> None:
    vectors = np.ones((5, 4), dtype=np.float32)
    vectors[2, 1] = np.nan
    with pytest.raises(MiniatureError, match=r"1 of 5 embeddings contain NaN or inf.*float16.*fix"):
        OutputStore.check_embeddings(vectors, "model 'x' on the test data")


def test_all_zero_embeddings_warn_and_still_give_a_result() -> None:
    from miniature.core.characteristics.representation import knn_jaccard

    vectors = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    vectors[3] = 0.0
    with pytest.warns(DataWarning, match="1 of 12 embeddings are all zero"):
        OutputStore.check_embeddings(vectors, "model 'x' on the test data")
    agreement = knn_jaccard(vectors, vectors, 3)
    assert np.all(agreement == 1.0)


def test_unreachable_hub_is_one_line(monkeypatch: pytest.MonkeyPatch, tiny_models, tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    with pytest.raises(ModelReferenceError) as info:  # found when the gate is built, before any work
        gate(tiny_models, tmp_path, candidate=["miniature-tests/not-on-this-machine"])
    message = str(info.value)
    assert "\n" not in message and "'miniature-tests/not-on-this-machine'" in message
    assert "not in the local Hugging Face cache and HF_HUB_OFFLINE is set; fix:" in message


def _corrupt_header(path: Path) -> None:  # a header that claims 2^62 bytes
    path.write_bytes((2**62).to_bytes(8, "little") + path.read_bytes()[8:])


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


MODEL_FILE_FAULTS = {
    "safetensors-header-2^62": ("model.safetensors", _corrupt_header),
    "safetensors-truncated": ("model.safetensors", _truncate),
    "safetensors-3-bytes": ("model.safetensors", lambda p: p.write_bytes(b"abc")),
    "safetensors-header-not-json": (
        "model.safetensors",
        lambda p: p.write_bytes((16).to_bytes(8, "little") + b"{not json" * 4),
    ),
    "tokenizer-json-truncated": ("tokenizer.json", _truncate),
    "tokenizer-json-wrong-shape": ("tokenizer.json", lambda p: p.write_text('{"version": "1.0", "model": 5}')),
    "tokenizer-config-not-json": ("tokenizer_config.json", lambda p: p.write_text("{oops")),
    "config-is-a-list": ("config.json", lambda p: p.write_text("[]")),
    "config-not-json": ("config.json", lambda p: p.write_text("model_type: bert\n")),
    "config-wrong-values": (
        "config.json",
        lambda p: p.write_text('{"model_type": "bert", "hidden_size": "wide", "num_attention_heads": 2}'),
    ),
}


@pytest.mark.parametrize("fault", list(MODEL_FILE_FAULTS))
def test_corrupted_model_files_are_one_line_naming_model_and_file(tiny_models, tmp_path: Path, fault: str) -> None:
    from miniature.core.models import load_model

    name, corrupt = MODEL_FILE_FAULTS[fault]
    target = tmp_path / "broken"
    shutil.copytree(tiny_models["small"], target)
    corrupt(target / name)
    with pytest.raises(ModelReferenceError) as info:
        load_model(str(target), head="classification")
    _one_line_naming(info.value, "model ", name, "re-save")


def test_corrupted_weights_found_at_start_up_by_the_gate_and_head_detection(tiny_models, tmp_path: Path) -> None:
    from miniature.core.tasks.classification import is_finetuned

    target = tmp_path / "huge-header"
    shutil.copytree(tiny_models["small"], target)
    _corrupt_header(target / "model.safetensors")
    with pytest.raises(ModelReferenceError) as info:
        gate(tiny_models, tmp_path, candidate=[str(target)])  # before any work
    _one_line_naming(info.value, "model.safetensors", "claims")
    with pytest.raises(ModelReferenceError):
        is_finetuned(target, "classification")


@pytest.mark.parametrize("attack_model", ["small", "encoder"])
def test_attack_model_without_masked_lm_head_is_refused(tiny_models, tmp_path: Path, attack_model: str) -> None:
    import transformers

    source = tiny_models["small"]
    if attack_model == "encoder":  # a bare encoder: no head at all
        source = tmp_path / "encoder"
        transformers.AutoModel.from_pretrained(str(tiny_models["small"])).save_pretrained(str(source))
        transformers.AutoTokenizer.from_pretrained(str(tiny_models["small"])).save_pretrained(str(source))
    g = gate(tiny_models, tmp_path, attack_model=str(source), attack_size=12)
    with pytest.raises(ModelReferenceError) as info:
        g.compare("adversarial_vulnerability", g.pairs()[0])
    message = str(info.value)
    assert "\n" not in message
    assert f"attack model {source.name!r} has no masked-LM head (cls.predictions.bias" in message
    assert "fix: pass --attack-model a masked-LM checkpoint such as bert-base" in message


def test_masked_lm_attack_model_is_accepted(tiny_models, tmp_path: Path) -> None:
    g = gate(tiny_models, tmp_path, attack_model=str(tiny_models["attacker"]))
    wrapper = g.models.attack_wrapper()
    assert type(wrapper.model).__name__ == "BertForMaskedLM" and wrapper.missing_head == []


def _variant(tiny_models, tmp_path: Path, name: str, source: str = "small") -> Path:
    target = tmp_path / name
    shutil.copytree(tiny_models[source], target)
    return target


def _edit_config(folder: Path, **values) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(values)
    (folder / "config.json").write_text(json.dumps(config))


def _edit_weights(folder: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(str(folder / "model.safetensors"))
    edit(weights)
    save_file(
        {k: v.contiguous() for k, v in weights.items()}, str(folder / "model.safetensors"), metadata={"format": "pt"}
    )


def _narrow(weights) -> None:
    key = "bert.encoder.layer.0.output.dense.weight"
    weights[key] = weights[key][:, :10]


def _as_distilbert(folder: Path, tiny_models) -> None:  # a config of another model_type
    (folder / "config.json").write_text((tiny_models["distil"] / "config.json").read_text())


#: weights that do not fit their config.json: (change, what the one line says)
WEIGHT_FAULTS = {
    "config-4-layers-weights-for-2": (
        lambda d, t: _edit_config(d, num_hidden_layers=4),
        "lacks 32 of the 69 encoder weights its config.json describes",
    ),
    "config-1-layer-weights-for-2": (
        lambda d, t: _edit_config(d, num_hidden_layers=1),
        "encoder tensor(s) the architecture its config.json describes has no place for",
    ),
    "weights-file-without-tensors": (
        lambda d, t: _edit_weights(d, lambda w: w.clear()),
        "model.safetensors holds no tensors at all",
    ),
    "tensor-of-another-shape": (
        lambda d, t: _edit_weights(d, _narrow),
        "'encoder.layer.0.output.dense.weight' in model.safetensors has shape [32, 10]",
    ),
    "model-type-of-another-model": (_as_distilbert, "model_type 'distilbert' architecture"),
}


@pytest.mark.parametrize("fault", list(WEIGHT_FAULTS))
def test_weights_that_do_not_fit_the_config_are_refused_never_made_up(tiny_models, tmp_path: Path, fault: str) -> None:
    from miniature.core.models import load_model

    change, expected = WEIGHT_FAULTS[fault]
    target = _variant(tiny_models, tmp_path, fault)
    change(target, tiny_models)
    with pytest.raises(ModelReferenceError) as info:  # at start-up, before any work
        gate(tiny_models, tmp_path, candidate=[str(target)])
    _one_line_naming(info.value, f"model {fault!r}", expected, "save_pretrained")
    for head in ("encoder", "classification"):  # and by every load
        with pytest.raises(ModelReferenceError, match=re.escape(expected)):
            load_model(str(target), head=head)


def test_a_gate_run_on_weights_for_fewer_layers_is_a_usage_error(pytester: pytest.Pytester, tiny_models) -> None:
    target = Path(shutil.copytree(tiny_models["small"], pytester.path / "four-layers"))
    _edit_config(target, num_hidden_layers=4)
    line = one_line_usage_error(
        pytester.runpytest(f"{opt.REFERENCE}={tiny_models['reference']}", f"{opt.CANDIDATE}={target}")
    )
    assert "lacks 32 of the 69 encoder weights" in line and "fix:" in line


def test_pickle_weights_for_fewer_layers_are_refused_after_loading(tiny_models, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from miniature.core.models import load_model

    target = _variant(tiny_models, tmp_path, "pickled-4-layers")
    torch.save(load_file(str(target / "model.safetensors")), target / "pytorch_model.bin")
    (target / "model.safetensors").unlink()
    _edit_config(target, num_hidden_layers=4)
    with pytest.raises(ModelReferenceError) as info:
        load_model(str(target), head="classification", allow_pickle=True)
    _one_line_naming(info.value, "'pickled-4-layers'", "lack 32 of the 69 encoder weights")


def test_a_classifier_of_another_shape_names_the_tensor_and_both_shapes(tiny_models, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from miniature.core.models import load_model

    def three_labels(weights) -> None:
        weights["classifier.weight"], weights["classifier.bias"] = torch.zeros(3, 32), torch.zeros(3)

    target = _variant(tiny_models, tmp_path, "three-columns")
    _edit_weights(target, three_labels)
    with pytest.raises(ModelReferenceError) as info:
        load_model(str(target), head="classification")
    _one_line_naming(info.value, "'classifier.weight'", "shape [3, 32]", "[2, 32]")
    torch.save(load_file(str(target / "model.safetensors")), target / "pytorch_model.bin")  # pickle:
    (target / "model.safetensors").unlink()  # transformers' own error, its detail kept
    with pytest.raises(ModelReferenceError) as info:
        load_model(str(target), head="classification", allow_pickle=True)
    _one_line_naming(info.value, "size mismatch for", "torch.Size([3])", "torch.Size([2])")


def test_token_ids_beyond_the_embeddings_are_one_line(tiny_models, tmp_path: Path) -> None:
    import transformers

    from miniature.core.models import load_model

    target = _variant(tiny_models, tmp_path, "more-tokens")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(target))
    tokenizer.add_tokens([f"newword{i}" for i in range(30)])  # added, the embeddings not resized
    tokenizer.save_pretrained(str(target))
    size = json.loads((target / "config.json").read_text())["vocab_size"]
    g = gate(tiny_models, tmp_path, candidate=[str(target)])
    with pytest.raises(ModelReferenceError) as info:
        g.compare("data_representation", g.pairs()[0])
    _one_line_naming(
        info.value, "'more-tokens'", f"has {size + 30} tokens but its embeddings only {size}", "resize_token_embeddings"
    )
    with pytest.raises(ModelReferenceError):
        load_model(str(target)).encode(["newword3 is a newword29"])


def _nan_bias(weights) -> None:
    weights["classifier.bias"][0] = float("nan")


def test_nan_classifier_bias_is_an_error_naming_model_and_output(tiny_models, tmp_path: Path) -> None:
    target = _variant(tiny_models, tmp_path, "nan-bias")
    _edit_weights(target, _nan_bias)
    g = gate(tiny_models, tmp_path, candidate=[str(target)])
    with pytest.raises(ModelReferenceError) as info:  # was: every prediction class 0, Jaccard 1.0
        g.compare("prediction_errors", g.pairs()[0])
    _one_line_naming(info.value, "model 'nan-bias' gives NaN or inf logits for")
    result = g.outcome("prediction_errors", g.pairs()[0])
    assert result.status == "error" and "NaN or inf logits" in result.reason


def test_inf_start_logits_of_a_qa_model_are_an_error(tiny_models, tmp_path: Path) -> None:
    from miniature.core.builtin_data import qa_items
    from miniature.core.models import load_model
    from miniature.core.tasks.qa import predict_qa
    from miniature.tools.testing import make_tiny_model

    target = make_tiny_model(tmp_path / "inf-qa", tiny_models.tokenizer_dir, head="qa", seed=5)

    def inf_start(weights) -> None:
        weights["qa_outputs.bias"][0] = float("inf")

    _edit_weights(target, inf_start)
    with pytest.raises(ModelReferenceError) as info:
        predict_qa(load_model(str(target), head="qa"), qa_items(6, seed=1))
    _one_line_naming(info.value, "model 'inf-qa' gives NaN or inf start_logits")


# -- ONNX exports: outputs checked against the config, found by shape or named by the user ------
def _onnx_export(source: Path, target: Path, *, num_labels: int | None = None) -> Path:
    """An fp32 ONNX export of a tiny classifier (the config's num_labels replaced when given)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import transformers

    from miniature.tools.export import export_onnx

    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(source))
    export_onnx(model, transformers.AutoTokenizer.from_pretrained(str(source)), target, head="classification")
    if num_labels is not None:
        _edit_config(
            target,
            num_labels=num_labels,
            id2label={str(i): f"LABEL_{i}" for i in range(num_labels)},
            label2id={f"LABEL_{i}": i for i in range(num_labels)},
        )
    return target


def _rename_outputs(folder: Path, names: dict[str, str], copy_of: dict[str, str] | None = None) -> None:
    """Rename the export's outputs (as other exporters name them), adding ``copy_of`` outputs
    (new name -> output copied through an Identity node)."""
    import onnx

    model = onnx.load(str(folder / "model.onnx"))
    for node in model.graph.node:
        for values in (node.input, node.output):
            for i, name in enumerate(values):
                values[i] = names.get(name, name)
    for output in model.graph.output:
        output.name = names.get(output.name, output.name)
    for new, old in (copy_of or {}).items():
        model.graph.node.append(onnx.helper.make_node("Identity", [old], [new]))
        twin = onnx.ValueInfoProto()
        twin.CopyFrom(next(o for o in model.graph.output if o.name == old))
        twin.name = new
        model.graph.output.append(twin)
    onnx.save(model, str(folder / "model.onnx"))


def test_onnx_logits_wider_than_the_config_are_an_error(tiny_models, tmp_path: Path) -> None:
    from miniature.core.models import load_model
    from miniature.tools.testing import make_tiny_model

    three = make_tiny_model(tmp_path / "three", tiny_models.tokenizer_dir, num_labels=3, seed=6)
    export = _onnx_export(three, tmp_path / "three-onnx", num_labels=2)  # config: 2 labels
    wrapper = load_model(str(export), head="classification")
    for compute in (
        lambda: wrapper.logits(["a fine film"]),  # prediction errors, the attack
        lambda: wrapper.encode_and_classify(["a fine film"]),
    ):  # vectors and logits
        with pytest.raises(ModelReferenceError) as info:
            compute()
        _one_line_naming(info.value, "'three-onnx'", "output 'logits' (logits) has shape [1, 3]", "[batch, num_labels]")


def test_onnx_export_producing_nan_is_an_error(tiny_models, tmp_path: Path) -> None:
    from miniature.core.models import load_model

    source = _variant(tiny_models, tmp_path, "nan-source")
    _edit_weights(source, _nan_bias)
    export = _onnx_export(source, tmp_path / "nan-onnx")
    with pytest.raises(ModelReferenceError) as info:
        load_model(str(export), head="classification").logits(["a fine film"])
    _one_line_naming(info.value, "model 'nan-onnx' gives NaN or inf logits")


@pytest.fixture(scope="module")
def numbered_exports(tiny_models, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The reference exported with numbered outputs ('17' logits, '42' hidden state), and the
    same with a second hidden-state-shaped output ('99'): by shape, ambiguous."""
    root = tmp_path_factory.mktemp("numbered")
    plain = _onnx_export(tiny_models["reference"], root / "optimum-names")
    numbered = Path(shutil.copytree(plain, root / "numbered"))
    _rename_outputs(numbered, {"logits": "17", "last_hidden_state": "42"})
    ambiguous = Path(shutil.copytree(numbered, root / "ambiguous"))
    _rename_outputs(ambiguous, {}, copy_of={"99": "42"})
    return {"plain": plain, "numbered": numbered, "ambiguous": ambiguous}


def test_numbered_onnx_outputs_are_found_by_shape(tiny_models, numbered_exports, tmp_path: Path) -> None:
    from miniature.core.models import load_model

    texts = ["a fine film", "a dull and long film"]
    plain = load_model(str(numbered_exports["plain"]), head="classification")
    numbered = load_model(str(numbered_exports["numbered"]), head="classification")
    assert numbered.model.roles == {"logits": "17", "last_hidden_state": "42"} and numbered.missing_head == []
    assert np.array_equal(numbered.encode(texts), plain.encode(texts))
    assert np.array_equal(numbered.logits(texts), plain.logits(texts))
    g = gate(tiny_models, tmp_path, candidate=[str(numbered_exports["numbered"])])
    assert 0.0 <= g.compare("data_representation", g.pairs()[0]).figure <= 1.0  # was: AttributeError
    assert 0.0 <= g.compare("prediction_errors", g.pairs()[0]).figure <= 1.0


def test_ambiguous_onnx_outputs_skip_listing_them_or_use_the_one_named(
    tiny_models, numbered_exports, tmp_path: Path
) -> None:
    from miniature.errors import NotApplicable

    folder = str(numbered_exports["ambiguous"])
    g = gate(tiny_models, tmp_path, candidate=[folder])
    with pytest.raises(NotApplicable) as info:  # two outputs of the hidden state's shape
        g.compare("data_representation", g.pairs()[0])
    _one_line_naming(
        info.value, "'ambiguous'", "(its outputs: '17', '42', '99')", "--onnx-output last_hidden_state=NAME"
    )
    named = gate(tiny_models, tmp_path / "named", candidate=[folder], onnx_output=[("last_hidden_state", "99")])
    assert named.wrapper(named.names[1]).model.roles["last_hidden_state"] == "99"
    assert 0.0 <= named.compare("data_representation", named.pairs()[0]).figure <= 1.0


def test_onnx_output_named_on_the_command_line(pytester: pytest.Pytester, tiny_models, numbered_exports) -> None:
    result = pytester.runpytest(
        f"{opt.REFERENCE}={tiny_models['reference']}",
        f"{opt.CANDIDATE}={numbered_exports['ambiguous']}",
        f"{opt.ONNX_OUTPUT}=last_hidden_state=42",
        "--co",
        "-q",
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()


def test_an_empty_model_onnx_is_one_line_at_start_up(tiny_models, tmp_path: Path) -> None:
    target = tmp_path / "empty-onnx"
    target.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (tiny_models["small"] / name).is_file():
            shutil.copy(tiny_models["small"] / name, target)
    (target / "model.onnx").write_bytes(b"")
    with pytest.raises(ModelReferenceError) as info:  # was: skipped as a feature-extraction export
        gate(tiny_models, tmp_path, candidate=[str(target)])
    _one_line_naming(info.value, "model.onnx", "it is empty (0 bytes)", "export the model to ONNX again")


# == options: values, combinations and where they are given ====================================
@pytest.mark.parametrize(
    ("value", "expected"), [("1.2", "outside [0, 1]"), ("-0.1", "outside [0, 1]"), ("high", "not a number in [0, 1]")]
)
def test_bad_thresholds_fail_at_parse_time(pytester: pytest.Pytester, value: str, expected: str) -> None:
    result = pytester.runpytest(f"{opt.THRESHOLD_DISTRIBUTION}={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert opt.THRESHOLD_DISTRIBUTION in result.stderr.str() and expected in result.stderr.str()


@pytest.mark.slow
def test_max_length_above_the_position_limit_is_clamped_per_model(tiny_models, tmp_path: Path) -> None:
    long = " ".join(["the plot was long and winding"] * 60)
    path = write_rows(tmp_path / "long.jsonl", [f"{long} {i}" for i in range(10)] + [f"short {i}" for i in range(10)])
    at_limit = figures(gate(tiny_models, tmp_path / "at", test_data=str(path), max_length=128, k=3))
    with pytest.warns(DataWarning, match=r"--max-length 512 is more than its 128 position embeddings"):
        above = figures(gate(tiny_models, tmp_path / "above", test_data=str(path), max_length=512, k=3))
    assert above == at_limit


@pytest.mark.parametrize("where", ["command line", "ini", "both"])
def test_bootstrap_zero_with_ci_lower_is_refused(pytester: pytest.Pytester, where: str) -> None:
    args = [f"{opt.BOOTSTRAP}=0", f"{opt.THRESHOLD_ON}=ci_lower"]
    if where == "ini":
        pytester.makeini("[pytest]\nminiature_bootstrap = 0\nminiature_threshold_on = ci_lower\n")
        args = []
    elif where == "both":
        pytester.makeini("[pytest]\nminiature_threshold_on = ci_lower\n")
        args = args[:1]
    line = one_line_usage_error(pytester.runpytest(*args))
    assert opt.BOOTSTRAP in line and "ci_lower" in line and "fix:" in line


@pytest.mark.parametrize("flag", [opt.CACHE_DIR, opt.REPORT_DIR, opt.TRAIN_DATA])
def test_path_option_written_as_two_words_that_loses_the_project_ini(
    pytester: pytest.Pytester, tiny_models, tmp_path_factory: pytest.TempPathFactory, flag: str
) -> None:
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\nminiature_threshold_errors = 0.9\n")
    outside = tmp_path_factory.mktemp("shared")
    value = outside / "train.jsonl" if flag == opt.TRAIN_DATA else outside
    if flag == opt.TRAIN_DATA:
        write_rows(value, ["good film", "bad film"])
    models = [f"{opt.REFERENCE}={tiny_models['reference']}", f"{opt.CANDIDATE}={tiny_models['small']}"]
    line = one_line_usage_error(pytester.runpytest(*models, flag, str(value), "--co"))
    assert f"{flag} {value}" in line and "pyproject.toml" in line and f"fix: write {flag}={value}" in line
    assert pytester.runpytest(*models, f"{flag}={value}", "--co").ret != pytest.ExitCode.USAGE_ERROR


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_device_this_torch_cannot_use(
    pytester: pytest.Pytester, tiny_models, monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    line = one_line_usage_error(
        pytester.runpytest(
            f"{opt.REFERENCE}={tiny_models['reference']}",
            f"{opt.CANDIDATE}={tiny_models['small']}",
            f"{opt.DEVICE}={device}",
            "--co",
        )
    )
    assert f"{opt.DEVICE} {device}" in line and "fix:" in line and f"{opt.DEVICE} cpu" in line


BAD_OPTION_VALUES: dict[str, list[tuple[str, str]]] = {
    opt.REFERENCE: [("garbage", "unknown model alias")],
    opt.CANDIDATE: [("garbage", "unknown model alias")],
    opt.REFERENCE_BASE: [("garbage", "unknown model alias")],
    opt.CANDIDATE_BASE: [("garbage", "unknown model alias")],
    opt.TASK: [("translation", "not one of")],
    opt.TRAIN_DATA: [(" ", "empty value")],
    opt.HOLDOUT_DATA: [(" ", "empty value")],
    opt.TEST_DATA: [(" ", "empty value")],
    opt.CHALLENGE_DATA: [(" ", "empty value")],
    opt.TEXT_COLUMN: [(" ", "empty value")],
    opt.LABEL_COLUMN: [(" ", "empty value")],
    opt.LABEL_MAP: [("garbage", "is not NAME=ID"), ("POSITIVE=1,positive=0", "twice"), ("NEG=-1", "NAME=ID")],
    opt.DATA_LIMIT: [("-5", "below the minimum 1"), ("nan", "not a whole number")],
    opt.K: [("0", "below the minimum 1")],
    opt.K_SWEEP: [("0,5", "whole numbers >= 1")],
    opt.THRESHOLD_ERRORS: [("nan", "outside [0, 1]")],
    opt.THRESHOLD_REPRESENTATION: [("inf", "outside [0, 1]")],
    opt.THRESHOLD_DISTRIBUTION: [("-inf", "outside [0, 1]")],
    opt.THRESHOLD_ATTACK: [("nan", "outside [0, 1]")],
    opt.THRESHOLD_SIMILARITY: [("1.5", "outside [0, 1]")],
    opt.THRESHOLD_TOKEN_TOP: [("-0.5", "outside [0, 1]")],
    opt.THRESHOLDS: [("similarity", "is not NAME=J"), ("representation_similarity=2", "outside [0, 1]")],
    "--cka-estimator": [("rbf", "not one of")],  # representation similarity's own option
    opt.ATTACK_DROP_TOLERANCE: [
        ("nan", "not a finite number"),
        ("inf", "not a finite number"),
        ("-1", "negative"),
        ("150", "above 100"),
    ],
    opt.THRESHOLD_ON: [("ci_upper", "not one of")],
    opt.OOD_KEEP: [("nan", "outside [0, 1]")],
    opt.BOOTSTRAP: [("-1", "below the minimum 0")],
    opt.GATE_ALL_PAIRS: [("maybe", "not true/false")],
    opt.NOISE_FLOOR: [("maybe", "not true/false")],
    opt.POOLING: [("max", "not one of")],
    opt.PROMPT_TEMPLATE: [("Review:", "no {text} field")],
    opt.VERBALIZER: [("negative,positive", "is not ID=WORD"), ("1=negative,2=positive", "must name the labels 0..1")],
    opt.CHOICE_SCORE: [("mean", "not one of")],
    opt.TEXT_DATA: [(" ", "empty value")],
    opt.TOKEN_SCORING: [("windows", "not one of")],
    opt.N_CTX: [("2", "below the minimum 4")],
    opt.BATCH_SIZE: [("0", "below the minimum 1")],
    opt.MAX_LENGTH: [("4", "below the minimum 8")],
    opt.DEVICE: [("tpu", "not one of")],
    opt.SEED: [("-1", "below the minimum 0"), (str(2**64), "above the maximum")],
    opt.CACHE_DIR: [(" ", "empty value")],
    opt.NO_CACHE: [("maybe", "not true/false")],
    opt.REFRESH: [("maybe", "not true/false")],
    opt.REPORT_DIR: [(" ", "empty value")],
    opt.COMPARE_TO: [("missing.json", "no such file")],
    opt.TRUST_REMOTE_CODE: [("maybe", "not true/false")],
    opt.ALLOW_PICKLE: [("maybe", "not true/false")],
    opt.ONNX_OUTPUT: [
        ("hidden", "is not ROLE=NAME"),
        ("hidden=1234", "is not one of"),
        ("logits= ", "is not ROLE=NAME"),
    ],
    opt.FINETUNE: [("maybe", "not true/false")],
    opt.ATTACK_MODEL: [("garbage", "unknown model alias")],
    opt.ATTACK_SIZE: [("0", "below the minimum 1")],
    opt.ATTACK_TOP_K: [("0", "below the minimum 1")],
    opt.EXECUTOR: [("dask", "not one of")],
    opt.RAY_ADDRESS: [(" ", "empty value")],
    opt.RAY_WORKERS: [("0", "below the minimum 1"), ("two", "not a whole number")],
    opt.KNN_INDEX: [("annoy", "not one of")],
    opt.VECTORS: [("vectors.npy", "is not NAME[:ROLE]=FILE.npy"), ("model=vectors.txt", "is not NAME[:ROLE]=FILE.npy")],
    opt.GGUF_RUNTIME: [("ollama", "not one of")],
}


def test_every_option_has_a_bad_value_test() -> None:
    assert set(BAD_OPTION_VALUES) == {option.flag for option in opt.OPTIONS}


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [(flag, value, expected) for flag, cases in BAD_OPTION_VALUES.items() for value, expected in cases],
)
def test_every_option_refuses_a_bad_value_at_start_up(
    pytester: pytest.Pytester, tiny_models, flag: str, value: str, expected: str
) -> None:
    option = opt.BY_FLAG[flag]
    args = [] if flag == opt.REFERENCE else [f"{opt.REFERENCE}={tiny_models['reference']}"]
    if flag in (opt.REFERENCE_BASE, opt.CANDIDATE_BASE):  # the other base, so only the value is wrong
        other = opt.CANDIDATE_BASE if flag == opt.REFERENCE_BASE else opt.REFERENCE_BASE
        args += [f"{opt.CANDIDATE}={tiny_models['small']}", f"{other}={tiny_models['small']}"]
    if option.switch:  # a switch takes no value on the command line: a bad ini value
        pytester.makeini(f"[pytest]\n{option.ini} = {value}\n")
    else:
        args.append(f"{flag}={value}")
    result = pytester.runpytest(*args, "--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    named = option.ini if option.switch else flag
    lines = [line for line in result.stderr.lines if expected in line]  # argparse adds a usage line
    assert len(lines) == 1 and (named in lines[0] or flag in (opt.REFERENCE, opt.CANDIDATE)), result.stderr.lines


@pytest.mark.parametrize(("reference_base", "candidate_bases"), [(True, 0), (False, 1), (True, 2)])
def test_base_checkpoints_must_match_the_models(
    pytester: pytest.Pytester, tiny_models, reference_base: bool, candidate_bases: int
) -> None:
    args = [f"{opt.REFERENCE}={tiny_models['reference']}", f"{opt.CANDIDATE}={tiny_models['small']}"]
    if reference_base:
        args.append(f"{opt.REFERENCE_BASE}={tiny_models['reference']}")
    args += [f"{opt.CANDIDATE_BASE}={tiny_models['small']}"] * candidate_bases
    line = one_line_usage_error(pytester.runpytest(*args, "--co"))
    assert opt.REFERENCE_BASE in line and opt.CANDIDATE_BASE in line and "fix:" in line


def _thresholds(pytester: pytest.Pytester, ini: str, *args: str) -> dict[str, float | None]:
    """The threshold each characteristic gets, from an ini and command-line arguments."""
    from miniature.core.gate import threshold_for
    from miniature.plugin import session_of

    pytester.makeini(f"[pytest]\n{ini}\n")
    config = pytester.parseconfigure(*args)
    registry = session_of(config).registry
    return {c.name: threshold_for(session_of(config).settings, c) for c in registry}


@pytest.mark.parametrize(
    ("ini", "args", "expected"),
    [
        (
            "miniature_threshold = data_representation=0.1",
            [f"{opt.THRESHOLD_REPRESENTATION}=0.9"],
            {"data_representation": 0.9},
        ),
        (
            "miniature_threshold_representation = 0.1",
            [f"{opt.THRESHOLDS}=data_representation=0.9"],
            {"data_representation": 0.9},
        ),
        # a command-line --threshold for one characteristic keeps the ini's for another
        (
            "miniature_threshold = data_representation=0.1",
            [f"{opt.THRESHOLDS}=prediction_errors=0.7"],
            {"data_representation": 0.1, "prediction_errors": 0.7},
        ),
        (
            "miniature_threshold_errors = 0.3",
            [f"{opt.THRESHOLD_REPRESENTATION}=0.9"],
            {"data_representation": 0.9, "prediction_errors": 0.3},
        ),
    ],
)
def test_command_line_threshold_beats_the_ini_however_each_is_written(
    pytester: pytest.Pytester, ini: str, args: list[str], expected: dict[str, float]
) -> None:
    found = _thresholds(pytester, ini, *args)
    assert {name: found[name] for name in expected} == expected


@pytest.mark.slow
def test_command_line_threshold_beats_the_ini_in_the_gate(gate_checks: pytest.Pytester, tiny_models) -> None:
    gate_checks.makeini("[pytest]\nminiature_threshold = data_representation=0.1\n")
    result = gate_checks.runpytest(
        f"{opt.REFERENCE}={tiny_models['reference']}",
        f"{opt.CANDIDATE}={tiny_models['small']}",
        f"{opt.CACHE_DIR}={gate_checks.path / 'cache'}",
        f"{opt.REPORT_DIR}={gate_checks.path / 'reports'}",
        f"{opt.BOOTSTRAP}=0",
        f"{opt.DATA_LIMIT}=40",
        f"{opt.THRESHOLD_REPRESENTATION}=0.9",
        "-k",
        "data_representation",
    )
    payload = json.loads((gate_checks.path / "reports" / "latest.json").read_text())
    results = [r for r in payload["results"] if r["characteristic"] == "data_representation"]
    assert results and all(r["threshold"] == 0.9 for r in results), results
    assert all(r["figure"] < 0.9 for r in results) and result.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.parametrize(
    ("ini", "args"),
    [
        ("", [f"{opt.THRESHOLD_REPRESENTATION}=0.9", f"{opt.THRESHOLDS}=data_representation=0.5"]),
        ("", [f"{opt.THRESHOLDS}=data_representation=0.5", f"{opt.THRESHOLDS}=data_representation=0.6"]),
        ("miniature_threshold_representation = 0.9\nminiature_threshold = data_representation=0.5", []),
    ],
)
def test_one_threshold_given_twice_in_one_place_is_refused(
    pytester: pytest.Pytester, ini: str, args: list[str]
) -> None:
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    line = one_line_usage_error(pytester.runpytest(*args, "--co"))
    assert "two values for the data_representation threshold" in line and "0.5" in line and "fix:" in line


@pytest.mark.parametrize(("flag", "inside"), [(opt.REPORT_DIR, "reports"), (opt.CACHE_DIR, "cache")])
def test_report_or_cache_dir_inside_a_model_folder_is_refused(
    pytester: pytest.Pytester, tiny_models, tmp_path: Path, flag: str, inside: str
) -> None:
    from miniature.core.models import fingerprint_files

    candidate = tmp_path / "candidate"
    shutil.copytree(tiny_models["small"], candidate)
    before = fingerprint_files(candidate)
    line = one_line_usage_error(
        pytester.runpytest(
            f"{opt.REFERENCE}={tiny_models['reference']}",
            f"{opt.CANDIDATE}={candidate}",
            f"{flag}={candidate / inside}",
            "--co",
        )
    )
    assert f"{flag} {candidate / inside} is inside the model folder {candidate} ({opt.CANDIDATE})" in line
    assert "fix:" in line and fingerprint_files(candidate) == before


@pytest.mark.parametrize("where", ["ray.init", "ray.cluster_resources"])
def test_a_dead_ray_system_process_is_one_line(
    gate_checks: pytest.Pytester, tiny_models, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    ray = pytest.importorskip("ray")

    def dead(*args, **kwargs):  # what a driver whose GCS died gets from its next call
        raise ray.exceptions.RpcError("failed to connect to the GCS at 127.0.0.1:6379 (Connection refused)")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "shutdown", dead)
    for name in ("init", "cluster_resources"):
        monkeypatch.setattr(ray, name, dead if f"ray.{name}" == where else lambda *a, **k: {"CPU": 2.0})
    monkeypatch.setattr("miniature.core.executors.check_shared_cache", lambda ray, root: None)
    result = gate_checks.runpytest(
        f"{opt.REFERENCE}={tiny_models['reference']}",
        f"{opt.CANDIDATE}={tiny_models['small']}",
        f"{opt.CACHE_DIR}={gate_checks.path / 'cache'}",
        f"{opt.REPORT_DIR}={gate_checks.path / 'reports'}",
        f"{opt.BOOTSTRAP}=0",
        f"{opt.DATA_LIMIT}=40",
        f"{opt.EXECUTOR}=ray",
        "-k",
        "data_representation or errors",
    )
    output = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED and "Traceback" not in output, output
    lines = [line for line in result.stdout.lines if "GCS at 127.0.0.1:6379" in line and "fix:" in line]
    assert lines and all(f"{opt.EXECUTOR} inprocess" in line for line in lines), output
    payload = json.loads((gate_checks.path / "reports" / "latest.json").read_text())
    assert {r["status"] for r in payload["results"]} == {"error"}


# == reports: --compare-to, names, ids and what a run prints ===================================
def previous_report(tmp_path: Path, **changes) -> Path:
    from miniature.core.characteristics.base import ComparisonResult

    entry = json.loads(
        ComparisonResult(
            "prediction_errors", "reference", "small", "error-set Jaccard", 0.8, 60, threshold=0.5
        ).to_json()
    )
    entry.update(changes)
    for name in [name for name, value in changes.items() if value is None]:
        del entry[name]
    path = tmp_path / "previous.json"
    path.write_text(json.dumps({"schema": 1, "results": [entry]}))
    return path


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"figure": "high"}, "figure"),
        ({"n": 2.5}, "n"),
        ({"threshold": "0.5"}, "threshold"),
        ({"gating": "yes"}, "gating"),
        ({"stage": 3}, "stage"),
        ({"details": []}, "details"),
        ({"conditions": [{"name": "accuracy drop"}]}, "conditions"),
    ],
)
def test_compare_to_report_with_wrong_field_types(tmp_path: Path, changes, field: str) -> None:
    from miniature.reports.payload import ReportError, load_report

    path = previous_report(tmp_path, **changes)
    with pytest.raises(ReportError) as info:
        load_report(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and f"'{field}'" in message and "fix:" in message


def test_compare_to_report_with_wrong_field_types_is_a_usage_error(pytester: pytest.Pytester, tmp_path: Path) -> None:
    path = previous_report(tmp_path, figure="high")
    line = one_line_usage_error(pytester.runpytest(f"{opt.COMPARE_TO}={path}"))
    assert opt.COMPARE_TO in line and "'figure'" in line


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"figure": float("inf")}, "figure"),
        ({"figure": 1.5}, "figure"),
        ({"figure": -0.1}, "figure"),
        ({"threshold": float("nan")}, "threshold"),
        ({"ci_low": float("-inf")}, "ci_low"),
        ({"corrected": float("inf")}, "corrected"),
        ({"status": "passed"}, "status"),
        ({"threshold_on": "median"}, "threshold_on"),
        ({"n": -3}, "n"),
    ],
)
def test_compare_to_report_with_values_out_of_range(tmp_path: Path, changes, field: str) -> None:
    from miniature.reports.payload import ReportError, load_report

    path = previous_report(tmp_path, **changes)
    with pytest.raises(ReportError) as info:
        load_report(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and f"'{field}'" in message and "fix:" in message


def test_compare_to_report_with_a_figure_that_could_not_be_computed_is_read(tmp_path: Path) -> None:
    from miniature.reports.payload import load_report

    [result] = load_report(previous_report(tmp_path, figure=float("nan")))["results"]  # as the gate writes it
    assert np.isnan(result.figure)


def test_compare_to_a_huge_file_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from miniature.reports.payload import MAX_REPORT_BYTES, ReportError, load_report

    path = tmp_path / "huge.json"
    with open(path, "wb") as handle:
        handle.truncate(MAX_REPORT_BYTES + 1)  # sparse: no disk used
    monkeypatch.setattr(Path, "read_text", lambda *a, **k: pytest.fail("the file was read"))
    with pytest.raises(ReportError) as info:
        load_report(path)
    _one_line_naming(info.value, str(path), "MiB", "fix:")


HOSTILE_NAME = "<img src=x onerror=alert(1)>"


@pytest.mark.slow
def test_html_in_a_model_folder_name_gives_safe_test_ids(gate_checks: pytest.Pytester, tiny_models) -> None:
    folder = gate_checks.path / HOSTILE_NAME
    shutil.copytree(tiny_models["small"], folder)
    result = gate_checks.runpytest(
        f"{opt.REFERENCE}={tiny_models['reference']}",
        f"{opt.CANDIDATE}={folder}",
        "-v",
        f"{opt.CACHE_DIR}={gate_checks.path / 'cache'}",
        f"{opt.REPORT_DIR}={gate_checks.path / 'reports'}",
        f"{opt.BOOTSTRAP}=0",
        f"{opt.DATA_LIMIT}=40",
        "-k",
        "errors",
        "--html=report.html",
    )
    ids = re.findall(r"test_equivalence\.py::\S+", result.stdout.str())  # the node ids, not the messages
    assert ids and not any("<" in node or ">" in node for node in ids), ids
    assert "<img src=x" not in (gate_checks.path / "report.html").read_text()
    page = (gate_checks.path / "reports" / "summary.html").read_text()
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "<img" not in page  # the real name, escaped


def test_sanitised_ids_stay_unique(tiny_models, tmp_path: Path) -> None:
    first, second = tmp_path / "a<b", tmp_path / "a>b"
    for folder in (first, second):
        shutil.copytree(tiny_models["small"], folder)
    g = gate(tiny_models, tmp_path, candidate=[str(first), str(second)])
    ids = [pair.id for pair in g.pairs()]
    assert len(set(ids)) == len(ids) == 3 and not any(set(i) & set("<>") for i in ids), ids
    assert g.names[1] == "a<b"  # reports keep the real name


@pytest.mark.parametrize("where", ["collection", "check"])
def test_gate_errors_are_printed_once(gate_checks: pytest.Pytester, tiny_models, where: str) -> None:
    args = [
        f"{opt.REFERENCE}={tiny_models['reference']}",
        f"{opt.CANDIDATE}={tiny_models['small']}",
        f"{opt.REPORT_DIR}={gate_checks.path / 'reports'}",
        f"{opt.BOOTSTRAP}=0",
        "-k",
        "data_representation",
    ]
    if where == "collection":  # the gate cannot be built: its cache dir is under a file
        (gate_checks.path / "blocker").write_text("x")
        args += [f"{opt.CACHE_DIR}={gate_checks.path / 'blocker' / 'cache'}"]
        message = "is not writable"
    else:  # the check itself raises: K is not below the number of items
        args += [f"{opt.CACHE_DIR}={gate_checks.path / 'cache'}", f"{opt.DATA_LIMIT}=20", f"{opt.K}=30"]
        message = "choose K < n"
    result = gate_checks.runpytest(*args)
    assert result.ret != pytest.ExitCode.OK and "During handling" not in result.stdout.str()
    failed = [r for r in result.reprec.getreports("pytest_runtest_logreport pytest_collectreport") if r.failed]
    naming = [r for r in failed if message in str(r.longrepr)]  # other checks may fail on their figure
    assert naming and all(str(r.longrepr).count(message) == 1 for r in naming), [str(r.longrepr) for r in naming]


FULL_DISK_CONFTEST = """
import errno

import pytest


@pytest.fixture(autouse=True)
def full_disk(monkeypatch):
    \"\"\"The attack journal's disk is full: every append raises ENOSPC.\"\"\"
    from miniature.core import cache
    from miniature.core.attack import runner

    def append_record(journal, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(journal))

    monkeypatch.setattr(cache, "append_record", append_record)
    monkeypatch.setattr(runner, "append_record", append_record)
"""

RAISING_CHARACTERISTIC_CONFTEST = """
from miniature import Characteristic


def compare_broken(gate, pair, stage):
    raise RuntimeError("a bug in the project's own characteristic")


def pytest_miniature_characteristics(config):
    return [Characteristic("broken_check", "broken check", compare_broken, default_threshold=0.5)]
"""


MALFORMED_RESULT_CONFTEST = """
from miniature import Characteristic
from miniature.core.characteristics.base import ComparisonResult


def compare_broken(gate, pair, stage):
    return ComparisonResult("broken_check", pair.reference, pair.candidate, "agreement", "high", 40,
                            details={"items": {1, 2}})


def pytest_miniature_characteristics(config):
    return [Characteristic("broken_check", "broken check", compare_broken, default_threshold=0.5)]
"""


@pytest.mark.parametrize(
    ("conftest", "characteristic", "crash"),
    [
        (FULL_DISK_CONFTEST, "adversarial_vulnerability", "OSError: [Errno 28] No space left on device"),
        (RAISING_CHARACTERISTIC_CONFTEST, "broken_check", "RuntimeError: a bug in the project's own characteristic"),
        (MALFORMED_RESULT_CONFTEST, "broken_check", "its result cannot be reported"),
    ],
    ids=["full-disk-in-the-attack", "project-characteristic-raises", "project-characteristic-malformed-result"],
)
def test_a_check_that_crashes_is_an_error_in_every_report(
    gate_checks: pytest.Pytester, tiny_models, conftest: str, characteristic: str, crash: str
) -> None:
    import xml.etree.ElementTree as ElementTree

    gate_checks.makeconftest(conftest)
    where = gate_checks.path
    result = gate_checks.runpytest(
        f"{opt.REFERENCE}={tiny_models['reference']}",
        f"{opt.CANDIDATE}={tiny_models['small']}",
        f"{opt.ATTACK_MODEL}={tiny_models['attacker']}",
        f"{opt.ATTACK_SIZE}=12",
        f"{opt.CACHE_DIR}={where / 'cache'}",
        f"{opt.REPORT_DIR}={where / 'reports'}",
        f"{opt.BOOTSTRAP}=0",
        f"{opt.DATA_LIMIT}=40",
        "-k",
        f"{characteristic} or prediction_errors",
        f"--junitxml={where / 'junit.xml'}",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    payload = json.loads((where / "reports" / "latest.json").read_text())
    crashed = [r for r in payload["results"] if r["characteristic"] == characteristic]
    assert [r["status"] for r in crashed] == ["error"] and crash in crashed[0]["reason"], payload["results"]
    assert payload["gate"]["total"] == 2 and payload["gate"]["error"] == 1, payload["gate"]
    summary = result.stdout.lines[
        result.stdout.lines.index(next(line for line in result.stdout.lines if "miniature summary" in line)) :
    ]
    assert re.match(r"reference vs small +FAIL [\d.]+ +ERROR$", summary[2]), summary
    assert any(line.startswith("ERROR: reference vs small ") and crash in line for line in summary), summary
    page = (where / "reports" / "summary.html").read_text()
    assert re.search(r"Gate FAILED: \d of 2 gating checks below threshold, 1 errored", page), page[:2000]
    verdicts = {
        case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
        for case in ElementTree.parse(where / "junit.xml").iter("testcase")
    }
    assert verdicts[f"test_{characteristic}[reference-vs-small]"]["miniature_verdict"] == "ERROR", verdicts


def _one_result() -> list:
    from miniature.core.characteristics.base import ComparisonResult

    return [ComparisonResult("prediction_errors", "reference", "small", "error-set Jaccard", 0.8, 60, threshold=0.5)]


def _write_reports_at_once(barrier, report_dir: str, rounds: int) -> None:
    from miniature.reports.write import write_reports

    for _ in range(rounds):
        barrier.wait()  # both writers finish in the same instant
        write_reports(_one_result(), make_settings(), Path(report_dir))


@pytest.mark.slow
def test_two_runs_finishing_at_once_write_reports_of_their_own(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier, rounds = context.Barrier(2), 5
    writers = [context.Process(target=_write_reports_at_once, args=(barrier, str(tmp_path), rounds)) for _ in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
    assert [writer.exitcode for writer in writers] == [0, 0]
    reports, pages = sorted(tmp_path.glob("miniature-*.json")), sorted(tmp_path.glob("summary-*.html"))
    assert len(reports) == len(pages) == 2 * rounds, [p.name for p in reports]
    assert all(json.loads(p.read_text())["results"] for p in reports)
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_report_name_already_taken_is_never_overwritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from miniature.core.cache import atomic_write_text
    from miniature.reports import write

    taken = tmp_path / "miniature-taken.json"
    taken.write_text("another run's report")
    with pytest.raises(FileExistsError):
        atomic_write_text(taken, "{}", exclusive=True)
    stamps = iter(["taken", "taken", "free"])  # the clock and the suffix give a name in use
    monkeypatch.setattr(write, "_stamp", lambda: next(stamps))
    paths = write.write_reports(_one_result(), make_settings(), tmp_path)
    assert taken.read_text() == "another run's report"
    assert paths.json.name == "miniature-free.json" and json.loads(paths.json.read_text())["results"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "latest.json",
        "miniature-free.json",
        "miniature-taken.json",
        "summary-free.html",
        "summary.html",
    ]


def test_a_gate_that_cannot_be_built_says_why_once(gate_checks: pytest.Pytester, tiny_models) -> None:
    (gate_checks.path / "blocker").write_text("x")
    result = gate_checks.runpytest(
        f"{opt.REFERENCE}={tiny_models['reference']}",
        f"{opt.CANDIDATE}={tiny_models['small']}",
        f"{opt.CACHE_DIR}={gate_checks.path / 'blocker' / 'cache'}",
        "-k",
        "data_representation",
    )
    assert "is not writable" in result.stdout.str()
    assert "no equivalence check ran" not in result.stdout.str()  # -k deselected nothing


# == cache: corruption, permissions, interruptions and concurrency =============================
def test_corrupted_cache_file_is_recomputed(tiny_models, tmp_path: Path) -> None:
    expected = figures(gate(tiny_models, tmp_path))
    for path in (tmp_path / "cache" / "outputs").glob("*.npz"):
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # truncated
    g = gate(tiny_models, tmp_path)
    with pytest.warns(CacheWarning, match="unreadable.*recomputing"):
        assert figures(g) == expected


def test_read_only_cache_dir(tiny_models, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(MiniatureError, match=r"cache dir .* is not writable.*--cache-dir.*--no-cache"):
        gate(tiny_models, tmp_path, cache_dir=blocker / "cache")


@pytest.mark.slow
def test_interrupted_encoding_resumes_from_saved_chunks(tiny_models, tmp_path: Path) -> None:
    uninterrupted = gate(tiny_models, tmp_path / "fresh", data_limit=60)
    uninterrupted.chunk_size = 16  # the same chunks, so the same batches and the same floats
    expected = figures(uninterrupted)
    g = gate(tiny_models, tmp_path, data_limit=60)
    g.chunk_size = 16
    wrapper = g.wrapper(g.reference)
    original, calls = wrapper.encode_and_classify, []

    def interrupted(texts):
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(texts)

    wrapper.encode_and_classify = interrupted
    with pytest.raises(KeyboardInterrupt):
        figures(g)
    saved = list((tmp_path / "cache" / "outputs").glob("*.part*.npz"))
    assert len(saved) == 2
    resumed = gate(tiny_models, tmp_path, data_limit=60)
    resumed.chunk_size = 16
    assert figures(resumed) == expected
    reference_wrapper = resumed.models.loaded()[(resumed.reference, "")]
    assert reference_wrapper.forward_calls < 30  # only the missing chunks were encoded


def _run_gate(args: tuple[str, str, str, str]) -> dict[str, float]:
    reference, candidate, cache, _ = args
    g = Gate(
        make_settings(reference=reference, candidate=[candidate], cache_dir=Path(cache), data_limit=40, bootstrap=0)
    )
    return figures(g)


@pytest.mark.slow
def test_two_gate_runs_at_once_on_the_same_cache(tiny_models, tmp_path: Path) -> None:
    args = (str(tiny_models["reference"]), str(tiny_models["small"]), str(tmp_path / "cache"), "")
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        first, second = pool.map(_run_gate, [args, args])
    assert first == second
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every cache file is whole: no CacheWarning
        assert _run_gate(args) == first
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_cache_subfolder_not_writable_is_found_before_the_work(tiny_models, tmp_path: Path) -> None:
    from miniature.core.cache import OutputCache

    root = tmp_path / "cache"
    root.mkdir()
    (root / "outputs").write_text("someone else's file where the folder should be")
    with pytest.raises(MiniatureError) as info:
        gate(tiny_models, tmp_path)
    _one_line_naming(info.value, str(root), "'outputs' is not writable", "--cache-dir", "--no-cache")
    with pytest.raises(MiniatureError, match="'outputs' is not writable"):
        OutputCache(root)
    (root / "outputs").unlink()
    cache = OutputCache(root)
    (root / "answers").write_text("in the way")
    with pytest.raises(MiniatureError, match="'answers' is not writable"):
        cache.check_writable()  # the public probe a start-up can call


@pytest.mark.skipif(
    not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
    reason="root writes into read-only folders",
)
def test_cache_subfolder_without_write_permission(tiny_models, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    (root / "adversarial").mkdir(parents=True)
    (root / "adversarial").chmod(0o555)
    try:
        with pytest.raises(MiniatureError, match="'adversarial' is not writable.*--cache-dir"):
            gate(tiny_models, tmp_path)
    finally:
        (root / "adversarial").chmod(0o755)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664)])
def test_atomic_writes_get_the_mode_the_umask_gives(tmp_path: Path, umask: int, mode: int) -> None:
    import os

    from miniature.core.cache import OutputCache, atomic_write_text

    old = os.umask(umask)
    try:
        cache = OutputCache(tmp_path / "cache")
        cache.save_arrays("outputs", "k", {"x": np.zeros(3)})
        cache.save_json("answers", "k", ["a"])
        atomic_write_text(tmp_path / "reports" / "latest.json", "{}")  # how every report is written
    finally:
        os.umask(old)
    for path in (cache.path("outputs", "k"), cache.path("answers", "k", ".json"), tmp_path / "reports" / "latest.json"):
        assert path.stat().st_mode & 0o777 == mode, path


def test_cache_dir_that_is_a_file(tiny_models, tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    with pytest.raises(MiniatureError) as info:
        gate(tiny_models, tmp_path)
    message = _one_line_naming(info.value, str(tmp_path / "cache"), "is a file, not a folder", "--cache-dir")
    assert "File exists" not in message


def test_an_unreadable_journal_line_is_dropped_once(tmp_path: Path) -> None:
    from miniature.core.cache import OutputCache

    cache = OutputCache(tmp_path / "cache")
    journal = cache.path("adversarial", "k", ".jsonl")
    journal.parent.mkdir(parents=True)
    journal.write_text('{"index": 0, "out": "a"}\n{"index": 1, "ou\n{"index": 2, "out": "c"}\n')
    computed: list[str] = []

    def compute(item: str) -> dict[str, str]:
        computed.append(item)
        return {"out": item}

    with pytest.warns(CacheWarning, match=r"dropped 1 unreadable line\(s\) from .*k.jsonl.*rewrote it"):
        first = cache.records("adversarial", "k", ["a", "b", "c"], compute)
    assert computed == ["b"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the next run has nothing to drop, and nothing to compute
        second = OutputCache(tmp_path / "cache").records("adversarial", "k", ["a", "b", "c"], compute)
    assert computed == ["b"] and [r["out"] for r in first] == [r["out"] for r in second] == ["a", "b", "c"]


# == tools: miniature compress and finetune ====================================================
def _copy_source(tiny_models, tmp_path: Path) -> tuple[Path, Path]:
    parent = tmp_path / "models"
    source = parent / "src"
    shutil.copytree(tiny_models["small"], source)
    (parent / "notes.txt").write_text("unrelated")
    return parent, source


def test_compress_overwrite_never_deletes_the_source(tiny_models, tmp_path: Path, capsys) -> None:
    from miniature.tools.cli import main

    parent, source = _copy_source(tiny_models, tmp_path)
    before = sorted(p.name for p in source.iterdir())
    code = main(
        ["compress", str(source), "--method", "prune", "--output-dir", str(parent), "--overwrite", "--no-progress"]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in error and "contains the reference" in error and "fix:" in error
    assert sorted(p.name for p in source.iterdir()) == before and (parent / "notes.txt").exists()


def test_compress_overwrite_replaces_only_an_earlier_compression(tiny_models, tmp_path: Path) -> None:
    import os

    from miniature.tools.compress import RECORD_NAME, CompressionError, compress

    _, source = _copy_source(tiny_models, tmp_path)
    unrelated = tmp_path / "work"
    unrelated.mkdir()
    (unrelated / "thesis.tex").write_text("months of work")
    with pytest.raises(CompressionError, match=r"other files.*never replaced.*fix:"):
        compress(source, unrelated, method="prune", sparsity=0.2, overwrite=True, progress=False)
    assert (unrelated / "thesis.tex").read_text() == "months of work"
    output = tmp_path / "pruned"
    old = os.umask(0o022)
    try:
        compress(source, output, method="prune", sparsity=0.2, progress=False)
        compress(source, output, method="prune", sparsity=0.4, overwrite=True, progress=False)
    finally:
        os.umask(old)
    assert json.loads((output / RECORD_NAME).read_text())["requested"]["sparsity"] == 0.4
    assert {oct(p.stat().st_mode & 0o777) for p in output.iterdir()} == {"0o644"}  # readable as umask says


def test_finetuned_model_files_get_the_mode_the_umask_gives(tiny_models, tmp_path: Path) -> None:
    import os

    from miniature.core.finetune import finetune

    path = write_rows(tmp_path / "train.jsonl", [f"review number {i}" for i in range(16)])
    old = os.umask(0o022)
    try:
        target = finetune(
            str(tiny_models["small"]),
            "classification",
            load_text_data(path),
            output_root=tmp_path / "finetuned",
            max_steps=1,
            batch_size=8,
            progress=False,
        )
    finally:
        os.umask(old)
    assert {oct(p.stat().st_mode & 0o777) for p in target.iterdir()} == {"0o644"}


def test_finetune_on_a_txt_file_says_a_txt_file_has_no_labels(tiny_models, tmp_path: Path, capsys) -> None:
    from miniature.tools.cli import main

    train = tmp_path / "reviews.txt"
    train.write_text("a fine film\na dull film\n")
    code = main(
        [
            "finetune",
            str(tiny_models["small"]),
            "--train",
            str(train),
            "--output-dir",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in error and "reviews.txt" in error and ".txt file" in error
    assert "--label-column" not in error and "label column" in error and "fix:" in error


@pytest.mark.parametrize("command", ["compress", "finetune"])
def test_output_dir_inside_the_source_model_is_refused(tiny_models, tmp_path: Path, capsys, command: str) -> None:
    from miniature.core.models import fingerprint_files
    from miniature.tools.cli import main

    _, source = _copy_source(tiny_models, tmp_path)
    before = fingerprint_files(source), sorted(p.name for p in source.iterdir())
    train = write_rows(tmp_path / "train.jsonl", [f"review number {i}" for i in range(16)])
    extra = (
        ["--method", "prune"]
        if command == "compress"
        else ["--train", str(train), "--max-steps", "1", "--batch-size", "8"]
    )
    code = main([command, str(source), *extra, "--output-dir", str(source / "out"), "--no-progress"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in error and "inside" in error and str(source) in error and "fix:" in error
    assert (fingerprint_files(source), sorted(p.name for p in source.iterdir())) == before


def test_compress_onto_a_symlinked_output_dir_is_refused_before_the_work(
    tiny_models, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from miniature.tools import compress as compress_module
    from miniature.tools.cli import main

    _, source = _copy_source(tiny_models, tmp_path)
    earlier = tmp_path / "earlier"
    assert main(["compress", str(source), "--method", "prune", "--output-dir", str(earlier), "--no-progress"]) == 0
    link = tmp_path / "link"
    link.symlink_to(earlier, target_is_directory=True)
    capsys.readouterr()
    monkeypatch.setattr(compress_module, "_build", lambda *a, **k: pytest.fail("the work ran"))
    code = main(
        [
            "compress",
            str(source),
            "--method",
            "prune",
            "--sparsity",
            "0.3",
            "--output-dir",
            str(link),
            "--overwrite",
            "--no-progress",
        ]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in error and "symbolic link" in error and str(earlier) in error and "fix:" in error
    assert link.is_symlink() and (earlier / "miniature_compression.json").exists()


@pytest.mark.parametrize(
    ("flag", "value"), [("--learning-rate", "nan"), ("--learning-rate", "inf"), ("--epochs", "nan")]
)
def test_finetune_with_a_non_finite_number(tiny_models, tmp_path: Path, capsys, flag: str, value: str) -> None:
    from miniature.tools.cli import main

    train = write_rows(tmp_path / "train.jsonl", [f"review number {i}" for i in range(16)])
    code = main(
        [
            "finetune",
            str(tiny_models["small"]),
            "--train",
            str(train),
            flag,
            value,
            "--batch-size",
            "8",
            "--output-dir",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in error and "finite number > 0" in error and "fix:" in error
    assert not list((tmp_path / "out").glob("*/config.json"))
