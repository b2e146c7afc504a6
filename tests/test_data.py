"""Data loading: formats, schema validation, the built-in default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from miniature.data import builtin_sentiment_data, load_records, load_text_data, write_jsonl
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


@pytest.mark.parametrize(("rows", "kwargs", "expected"), [
    ([], {}, "is empty"),
    (ROWS, {"text_column": "review"}, "has no column 'review'"),
    ([{"text": 3, "label": 1}], {}, "column 'text' in row 0 is int"),
    ([{"text": "ok", "label": 1.5}], {}, "column 'label' in row 0 is float"),
    ([{"text": "  ", "label": 1}], {}, "empty or whitespace-only"),
])
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


def test_builtin_data_is_deterministic_and_disjoint_by_role() -> None:
    first, second = builtin_sentiment_data(), builtin_sentiment_data()
    assert first.test.texts == second.test.texts
    assert (len(first.train), len(first.holdout), len(first.test)) == (1000, 300, 500)
    assert sum(first.challenge_is_ood) == 300 and len(first.challenge) == 450
    assert set(first.train.labels) == {0, 1}
    assert abs(sum(first.test.labels) / len(first.test) - 0.5) < 0.1
