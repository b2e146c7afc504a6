"""Data loading: formats, schema validation, the built-in default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from miniature.core.data import builtin_sentiment_data, load_records, load_text_data, write_jsonl
from miniature.errors import DataError

ROWS = [{"text": "a fine film", "label": 1}, {"text": "a dull film", "label": 0}]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet", ".json"])
def test_each_file_format_loads_the_same_rows(tmp_path: Path, suffix: str) -> None:
    import pandas as pd

    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, ROWS)
    elif suffix == ".json":
        path.write_text(json.dumps(ROWS))
    elif suffix == ".csv":
        pd.DataFrame(ROWS).to_csv(path, index=False)
    else:
        pd.DataFrame(ROWS).to_parquet(path)
    data = load_text_data(path)
    assert data.texts == ["a fine film", "a dull film"] and data.labels == [1, 0]


def test_string_labels_map_to_sorted_integers(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    write_jsonl(path, [{"text": "x", "label": "pos"}, {"text": "y", "label": "neg"}])
    data = load_text_data(path)
    assert data.label_names == ["neg", "pos"] and data.labels == [1, 0]


@pytest.mark.parametrize(
    ("rows", "kwargs", "expected"),
    [
        ([], {}, "is empty"),
        (ROWS, {"text_column": "review"}, "has no column 'review'"),
        ([{"text": 3, "label": 1}], {}, "column 'text' in row 0 is int"),
        ([{"text": "ok", "label": 1.5}], {}, "column 'label' in row 0 is float"),
        ([{"text": "  ", "label": 1}], {}, "empty or whitespace-only"),
    ],
)
def test_bad_data_names_file_and_column(tmp_path: Path, rows, kwargs, expected: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="fix:") as info:
        load_text_data(path, **kwargs)
    assert expected in str(info.value) and str(path) in str(info.value)


def test_invalid_json_line_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "ok", "label": 1}\n{oops\n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        load_records(path)
    with pytest.raises(DataError, match="does not exist"):
        load_records(tmp_path / "missing.csv")


def test_jsonl_line_with_a_number_past_the_digit_limit(tmp_path: Path) -> None:
    """json.loads raises a plain ValueError (no position) for an integer of 5000 digits."""
    path = tmp_path / "huge.jsonl"
    path.write_text('{"text": "ok", "label": 1}\n{"text": "x", "label": ' + "1" * 5000 + "}\n")
    with pytest.raises(DataError, match="line 2 is not valid JSON .*digits"):
        load_records(path)


def test_builtin_data_is_deterministic_and_disjoint_by_role() -> None:
    first, second = builtin_sentiment_data(), builtin_sentiment_data()
    assert first.test.texts == second.test.texts
    assert (len(first.train), len(first.holdout), len(first.test)) == (1000, 300, 500)
    assert sum(first.challenge_is_ood) == 300 and len(first.challenge) == 450
    assert set(first.train.labels) == {0, 1}
    assert abs(sum(first.test.labels) / len(first.test) - 0.5) < 0.1


# -- plain text: one item per line, no labels ---------------------------------------------------
def test_txt_is_one_item_per_line_without_labels(tmp_path: Path) -> None:
    path = tmp_path / "items.txt"
    path.write_bytes("first item\n\n  second, indented  \r\n   \nthird with a tab\t\nlast without newline".encode())
    data = load_text_data(path)  # label_column defaults to "label": a .txt has none anyway
    assert data.texts == ["first item", "  second, indented  ", "third with a tab\t", "last without newline"]
    assert data.labels is None and data.source == str(path)
    assert load_text_data(path, limit=2).texts == ["first item", "  second, indented  "]
    assert [r["text"] for r in load_records(path)] == data.texts


def test_bad_txt_names_the_file(tmp_path: Path) -> None:
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n")
    with pytest.raises(DataError, match=r"data '.*blank.txt' is empty \(no non-blank line\); fix:"):
        load_text_data(blank)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.txt': line 1 is not UTF-8 text \(byte 0xe9.*fix: re-encode"):
        load_text_data(latin)


@pytest.mark.slow
def test_gate_on_txt_data_compares_representations_and_says_labels_are_missing(tiny_models, tmp_path: Path) -> None:
    from miniature.core.gate import AFTER, Gate
    from miniature.errors import MiniatureError, NotApplicable
    from miniature.core.settings import make_settings

    texts = builtin_sentiment_data(scale=0.1).train.texts + builtin_sentiment_data(scale=0.1).test.texts
    files = {}
    for role, part in (
        ("train", texts[:40]),
        ("holdout", texts[40:60]),
        ("test", texts[60:100]),
        ("challenge", texts[100:140]),
    ):
        files[role] = tmp_path / f"{role}.txt"
        files[role].write_text("\n".join(part) + "\n")
    values = dict(
        reference=str(tiny_models["reference"]),
        candidate=[str(tiny_models["small"])],
        cache_dir=tmp_path / "cache",
        bootstrap=0,
        k=5,
        train_data=str(files["train"]),
        holdout_data=str(files["holdout"]),
        test_data=str(files["test"]),
        challenge_data=str(files["challenge"]),
    )
    gate = Gate(make_settings(**values))
    pair = gate.pairs()[0]
    assert 0.0 <= gate.compare("data_representation", pair).figure <= 1.0
    assert 0.0 <= gate.compare("data_distribution", pair).figure <= 1.0
    for characteristic in ("prediction_errors", "adversarial_vulnerability"):
        with pytest.raises(NotApplicable) as info:
            gate.compare(characteristic, pair)
        message = str(info.value)
        assert "\n" not in message and str(files["test"]) in message
        assert "is a .txt file, which has no labels" in message
        assert "fix: pass --test-data as a .jsonl/.csv file with a label column" in message
    finetuning = Gate(make_settings(**values, finetune=True))
    with pytest.raises(
        MiniatureError, match=r"the train data '.*train.txt' is a .txt file, which has no labels, and --finetune"
    ):
        finetuning.compare("data_representation", finetuning.pairs()[0], stage=AFTER)
