"""Task data from local files (jsonl, json, csv, parquet, txt) or ``datasets`` names.

Every loader validates against the task's schema and raises :class:`DataError` naming the
source, the column and the fix: missing columns, empty data and wrong types never surface
as a KeyError from deep inside a characteristic.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

from miniature.errors import DataError

FILE_FORMATS = (".jsonl", ".json", ".csv", ".parquet", ".txt")


def load_records(
    source: str | Path, *, split: str | None = None, text_columns: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Rows of a local file or of a ``datasets`` dataset (``name`` or ``name:split``);
    ``text_columns`` of a CSV file are read as text ("007" stays "007", not the number 7)."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_file():
        return _read_file(path, text_columns)
    if path.is_dir() or text.startswith((".", "/", "~")) or path.suffix.lower() in FILE_FORMATS:
        what = "is a directory" if path.is_dir() else "does not exist"
        raise DataError(
            f"data {text!r}: the path {what}; fix: pass a {'/'.join(FILE_FORMATS)} "
            "file or a `datasets` name such as 'imdb:test'"
        )
    name, _, named_split = text.partition(":")
    return _load_hub_dataset(name, split or named_split or "test")


#: Leading bytes of compressed or binary files, so they are named rather than read as text.
_MAGIC = {
    b"\x1f\x8b": ("gzip-compressed", "decompress it (gunzip)"),
    b"PK\x03\x04": ("zip archive", "extract it (unzip)"),
    b"BZh": ("bzip2-compressed", "decompress it (bunzip2)"),
    b"\xfd7zXZ\x00": ("xz-compressed", "decompress it (unxz)"),
    b"\x28\xb5\x2f\xfd": ("zstd-compressed", "decompress it (unzstd)"),
    b"PAR1": ("Parquet", "rename it to .parquet"),
}


def _decode(path: Path) -> str:
    """The file as text (UTF-8, a byte-order mark dropped); a compressed or binary file is
    named as such, and bytes that are not UTF-8 are refused naming the line and the byte."""
    data = path.read_bytes()
    for magic, (kind, fix) in _MAGIC.items():
        if data.startswith(magic):
            raise DataError(
                f"data {str(path)!r} is a {kind} file, not {path.suffix} text; fix: "
                f"{fix} and pass the {path.suffix} text file it holds"
            )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(
            f"data {str(path)!r}: line {line} is not UTF-8 text (byte "
            f"0x{data[error.start]:02x} at offset {error.start}); fix: re-encode the "
            "file as UTF-8"
        ) from None


def read_text_file(path: Path) -> str:
    """A plain-text file whole, as a tool that reads it raw sees it (llama.cpp's perplexity tool)."""
    return _decode(Path(path))


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def _check_csv_fields(path: Path, text: str) -> None:
    """Every CSV row has as many fields as the header (pandas fills short rows silently)."""
    import csv
    import io

    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        return
    for row in reader:
        if row and len(row) != len(header):
            raise DataError(
                f"data {str(path)!r}: line {reader.line_num} has {len(row)} field(s) but "
                f"the header has {len(header)} ({', '.join(header)}); fix: quote fields "
                'that contain commas ("a, b") and give every row one value per column'
            )


def _read_file(path: Path, text_columns: Sequence[str] = ()) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            rows = []
            for number, line in enumerate(_decode(path).splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as error:  # a JSONDecodeError, or a number past Python's digit limit
                    detail = error.msg if isinstance(error, json.JSONDecodeError) else _one_line(error)
                    raise DataError(
                        f"data {str(path)!r}: line {number} is not valid JSON ({detail}); fix: one JSON object per line"
                    ) from None
                if not isinstance(row, dict):
                    raise DataError(
                        f"data {str(path)!r}: line {number} is a JSON "
                        f"{_json_kind(row)}, not an object; fix: one JSON object per "
                        'line, e.g. {"text": "...", "label": 0}'
                    )
                rows.append(row)
        elif suffix == ".json":
            try:
                loaded = json.loads(_decode(path))
            except ValueError as error:
                where = f"line {error.lineno} column {error.colno}: " if isinstance(error, json.JSONDecodeError) else ""
                raise DataError(
                    f"data {str(path)!r} is not valid JSON ({where}{_one_line(error)}); "
                    "fix: a JSON list of objects, or jsonl (one object per line)"
                ) from None
            if isinstance(loaded, dict):
                if not isinstance(loaded.get("data"), list):
                    keys = ", ".join(repr(k) for k in list(loaded)[:6])
                    raise DataError(
                        f"data {str(path)!r} is a JSON object (keys {keys}), not a list "
                        "of records; fix: a list of objects, one per item, such as "
                        '[{"text": "...", "label": 0}, ...] (or that list '
                        'under the key "data")'
                    )
                loaded = loaded["data"]
            rows = loaded
            if isinstance(rows, list) and rows and isinstance(rows[0], dict) and "paragraphs" in rows[0]:
                rows = _flatten_squad(rows)
            if isinstance(rows, list):
                for number, row in enumerate(rows):
                    if not isinstance(row, dict):
                        raise DataError(
                            f"data {str(path)!r}: row {number} is a JSON "
                            f"{_json_kind(row)}, not an object; fix: one object per "
                            "item with named columns"
                        )
        elif suffix == ".csv":
            import csv
            import io

            import pandas as pd

            text = _decode(path)
            _check_csv_fields(path, text)
            header = next(csv.reader(io.StringIO(text)), [])
            as_text = {column: str for column in text_columns if column in header}
            rows = pd.read_csv(io.StringIO(text), keep_default_na=False, dtype=as_text).to_dict("records")
        elif suffix == ".parquet":
            import pandas as pd

            rows = pd.read_parquet(path).to_dict("records")
        elif suffix == ".txt":
            rows = [{"text": line} for line in read_lines(path)]
        else:
            raise DataError(
                f"data {str(path)!r}: unsupported format {suffix or '(no suffix)'}; "
                f"fix: use one of {', '.join(FILE_FORMATS)}"
            )
    except DataError:
        raise
    except UnicodeDecodeError:
        raise DataError(f"data {str(path)!r} is not UTF-8 text; fix: re-encode it as UTF-8") from None
    except (ValueError, OSError) as error:
        raise DataError(
            f"data {str(path)!r} could not be parsed as {suffix} ({_one_line(error)}); fix: check the file's format"
        ) from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataError(
            f"data {str(path)!r}: expected a list of records (objects); fix: one object per row with named columns"
        )
    if not rows:
        raise DataError(f"data {str(path)!r} is empty (0 rows); fix: pass a file with items")
    return rows


def _json_kind(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def read_lines(path: Path) -> list[str]:
    """The items of a plain-text file, one per line: only the line ending is stripped
    (``\n`` or ``\r\n``); blank lines, whitespace or invisible characters only, are skipped."""
    lines = _decode(path).split("\n")
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    return [line for line in lines if not is_blank(line)]


def is_blank(text: str) -> bool:
    """Whether a text has nothing a tokenizer keeps: only whitespace, zero-width and other
    format or control characters (U+200B, U+FEFF, ...), which tokenize like ""."""
    return all(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in text)


def check_texts(texts: Sequence[str], column: str, source: str, first_row: int = 0) -> None:
    """Refuse blank texts (:func:`is_blank`) and texts with a lone surrogate (a JSON escape
    such as \\ud83d without its pair, which no tokenizer or UTF-8 file can hold), by row."""
    blank = [i for i, t in enumerate(texts) if is_blank(t)]
    if blank:
        first = texts[blank[0]]
        invisible = sorted({f"U+{ord(ch):04X}" for ch in first if not ch.isspace()})
        what = (
            f"; row {blank[0] + first_row} holds only invisible character(s) "
            f"{', '.join(invisible[:4])}, which tokenize like an empty text"
            if invisible
            else ""
        )
        raise DataError(
            f"data {source!r}: {len(blank)} empty or whitespace-only text(s) in column "
            f"{column!r} (first at row {blank[0] + first_row}){what}; fix: remove them"
        )
    for number, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise DataError(
                f"data {source!r}: column {column!r} in row {number + first_row} holds "
                f"a lone surrogate {text[error.start]!r} (half of a character, from a "
                "JSON escape such as \\ud83d without its pair); fix: write the whole "
                "character, or both halves of its escape (\\ud83d\\ude00)"
            ) from None


def _flatten_squad(articles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """SQuAD's nested JSON (data → paragraphs → qas) as flat question rows."""
    rows = []
    for article in articles:
        for paragraph in article.get("paragraphs", []):
            for qa in paragraph.get("qas", []):
                answers = qa.get("answers", [])
                rows.append(
                    {
                        "id": qa.get("id"),
                        "question": qa.get("question"),
                        "context": paragraph.get("context"),
                        "answers": {
                            "text": [a["text"] for a in answers],
                            "answer_start": [a["answer_start"] for a in answers],
                        },
                    }
                )
    return rows


def _load_hub_dataset(name: str, split: str) -> list[dict[str, Any]]:
    try:
        import datasets

        dataset = datasets.load_dataset(name, split=split)
    except Exception as error:  # noqa: BLE001 - any failure here is the user's source
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(
            f"data {name!r} (split {split!r}): could not load it as a local file or "
            f"from the `datasets` hub ({first}); fix: check the name and split, or "
            "pass a local jsonl/csv/parquet file"
        ) from None
    rows = [dict(row) for row in dataset]
    if not rows:
        raise DataError(f"data {name!r} split {split!r} is empty; fix: choose another split")
    return rows


def require_columns(rows: Sequence[dict[str, Any]], columns: dict[str, type | tuple[type, ...]], source: str) -> None:
    """Every row has each column with a value of the given type(s); else a clear DataError."""
    if not rows:
        raise DataError(f"data {source!r} is empty (0 rows); fix: pass a file with items")
    available = sorted(rows[0])
    for column, kind in columns.items():
        for number, row in enumerate(rows):
            if column not in row:
                raise DataError(
                    f"data {source!r}: row {number} has no column {column!r} "
                    f"(columns: {', '.join(map(str, available))}); fix: rename the "
                    f"column or pass the matching --*-column option"
                )
            value = row[column]
            if kind is object:  # present; the caller checks the values
                continue
            if _is_null(value):
                raise DataError(
                    f"data {source!r}: column {column!r} in row {number} is empty "
                    "(null); fix: fill in the value or remove the row"
                )
            if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
                names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
                raise DataError(
                    f"data {source!r}: column {column!r} in row {number} is "
                    f"{type(value).__name__} ({str(value)[:40]!r}), expected {names}; "
                    "fix: correct the value or choose another column"
                )


@dataclass
class TextData:
    """Texts with optional integer labels, as a classification task or OOD set uses them."""

    source: str
    texts: list[str]
    labels: list[int] | None = None
    label_names: list[str] = field(default_factory=list)
    #: second segments of text pairs (extractive QA: the contexts of the questions in texts)
    pairs: list[str] | None = None
    #: the task's own items when they carry more than text and label (QA examples)
    examples: list[Any] | None = None
    #: multiple-choice items: each item's choices (its label is the index of the right one)
    choices: list[list[str]] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, limit: int | None) -> "TextData":
        """The first ``limit`` items (all of them when ``limit`` is None)."""
        if limit is None or len(self) <= limit:
            return self
        return TextData(
            source=self.source,
            texts=self.texts[:limit],
            labels=self.labels[:limit] if self.labels is not None else None,
            label_names=self.label_names,
            pairs=self.pairs[:limit] if self.pairs is not None else None,
            examples=self.examples[:limit] if self.examples is not None else None,
            choices=self.choices[:limit] if self.choices is not None else None,
        )


#: a multiple-choice item's choices (a list of texts) and its right answer (an index or the choice's text)
CHOICES_COLUMN, ANSWER_COLUMN = "choices", "answer"


def _multiple_choice(
    rows: list[dict[str, Any]], name: str, *, text_column: str, label_column: str | None
) -> "TextData":
    """Multiple-choice items: the question in ``text_column``, its ``choices`` (a list of at
    least two texts) and the right one in ``answer`` (or ``label_column``): its index, or
    its text. Checked by row."""
    answer_column = ANSWER_COLUMN if label_column in (None, "label") and ANSWER_COLUMN in rows[0] else label_column
    require_columns(rows, {text_column: str}, name)
    texts, choices, labels = [], [], []
    for number, row in enumerate(rows):
        options = row.get(CHOICES_COLUMN)
        if (
            not isinstance(options, list)
            or len(options) < 2
            or not all(isinstance(o, str) and o.strip() for o in options)
        ):
            raise DataError(
                f"data {name!r}: row {number}, column {CHOICES_COLUMN!r} is not a list of at least "
                f"two non-empty texts ({options!r}); fix: write each item's choices as a list"
            )
        answer = row.get(answer_column) if answer_column else None
        if isinstance(answer, str) and answer in options:
            answer = options.index(answer)
        elif isinstance(answer, str) and answer.strip().isdigit():
            answer = int(answer)
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(options):
            raise DataError(
                f"data {name!r}: row {number}, column {answer_column!r} = {answer!r} is neither the "
                f"index (0..{len(options) - 1}) nor the text of one of its choices; fix: give "
                "the right choice's index or text"
            )
        text = row[text_column]
        if not str(text).strip():
            raise DataError(f"data {name!r}: row {number}, column {text_column!r} is empty; fix: remove it")
        texts.append(str(text))
        choices.append([str(o) for o in options])
        labels.append(int(answer))
    return TextData(source=name, texts=texts, labels=labels, choices=choices)


def load_text_data(
    source: str | Path,
    *,
    text_column: str = "text",
    label_column: str | None = "label",
    split: str | None = None,
    limit: int | None = None,
) -> TextData:
    """Texts (and labels, if ``label_column``) from a file or dataset, validated.

    Labels that look like integers (``1``, ``1.0``, ``"10"``) are label ids; other string
    labels are names, mapped to integers in sorted order (recorded in ``label_names``).
    Blank, null and fractional labels, and ids mixed with names, are refused by row.
    Empty texts, and texts of only whitespace or invisible characters (zero-width spaces),
    are refused: they have no content to compare; so are lone surrogates, by row. The text
    column of a CSV file is read as text, so a text of digits stays a text.
    A ``.txt`` file holds one text per line and no labels (``labels`` is None whatever
    ``label_column`` says; the checks that need labels say so); blank lines are skipped.
    """
    if is_text_file(source):
        texts = read_lines(Path(str(source)).expanduser())
        if not texts:
            raise DataError(f"data {str(source)!r} is empty (no non-blank line); fix: one item per line")
        return TextData(source=str(source), texts=texts[:limit] if limit is not None else texts)
    rows = load_records(source, split=split, text_columns=[text_column])
    if limit is not None:
        rows = rows[:limit]
    name = str(source)
    if rows and CHOICES_COLUMN in rows[0]:
        return _multiple_choice(rows, name, text_column=text_column, label_column=label_column)
    columns: dict[str, Any] = {text_column: str}
    if label_column is not None:
        columns[label_column] = object  # present here; the values are checked below
    require_columns(rows, columns, name)
    texts = [row[text_column] for row in rows]
    check_texts(texts, text_column, name)
    if label_column is None:
        return TextData(source=name, texts=texts)
    raw = [_label_value(row, label_column, number, name) for number, row in enumerate(rows)]
    ids = [i for i, v in enumerate(raw) if isinstance(v, int)]
    if len(ids) == len(raw):
        return TextData(source=name, texts=texts, labels=[int(v) for v in raw])
    if ids:
        named = next(i for i, v in enumerate(raw) if not isinstance(v, int))
        raise DataError(
            f"data {name!r}: column {label_column!r} mixes integer label ids (row "
            f"{ids[0]}: {raw[ids[0]]!r}) and label names (row {named}: {raw[named]!r}); "
            "fix: use ids 0..n-1 or names throughout"
        )
    names = sorted({str(v) for v in raw})
    index = {label: i for i, label in enumerate(names)}
    return TextData(source=name, texts=texts, labels=[index[str(v)] for v in raw], label_names=names)


_INTEGER = re.compile(r"[+-]?\d+")


def _is_null(value: Any) -> bool:
    return value is None or isinstance(value, float) and math.isnan(value)


def _label_value(row: dict[str, Any], column: str, number: int, source: str) -> int | str:
    """A label as an integer id (ints, whole floats such as 1.0, digit strings such as
    "10") or a label name; blank, null, fractional and other values are refused by row."""
    value = row[column]
    where = f"data {source!r}: column {column!r} in row {number}"
    if _is_null(value):
        raise DataError(f"{where} is empty (null); fix: give every row a label, or remove the row")
    if isinstance(value, bool):
        raise DataError(f"{where} is a boolean ({value}); fix: use integer label ids 0..n-1 or label names")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise DataError(
            f"{where} is float {value}, not a whole number; fix: labels are integer ids "
            "0..n-1 or label names (for a regression target, this task does not apply)"
        )
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{where} is blank; fix: give every row a label, or remove the row")
        if _INTEGER.fullmatch(value.strip()):
            return int(value.strip())
        return value
    hint = " (this looks like a QA file: pass --task qa)" if {"question", "context"} <= set(row) else ""
    raise DataError(
        f"{where} is a {type(value).__name__} ({str(value)[:40]!r}), expected an "
        f"integer label id or a label name{hint}; fix: correct the value or choose "
        "another --label-column"
    )


def is_text_file(source: str | Path) -> bool:
    """Whether ``source`` is a plain-text file (``.txt``: one item per line, no labels)."""
    path = Path(str(source)).expanduser()
    return path.suffix.lower() == ".txt" and path.is_file()


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write rows as UTF-8 jsonl atomically."""
    from miniature.core.cache import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


@dataclass
class TaskData:
    """The data sets a gate uses, by role."""

    train: TextData
    holdout: TextData
    test: TextData
    challenge: TextData
    #: per challenge item: True if known to be out-of-distribution (None when unknown)
    challenge_is_ood: list[bool] | None = None

    def role(self, name: str) -> TextData:
        return getattr(self, name)


ROLES = ("train", "holdout", "test", "challenge")


#: the words a decoder scores for the built-in reviews' labels 0 and 1
BUILTIN_LABEL_WORDS = ("negative", "positive")


def builtin_sentiment_data(*, seed: int = 0, scale: float = 1.0) -> TaskData:
    """The embedded offline default: generated film reviews (ID) and book reviews (shifted).

    Train 1,000 / held-out 300 / test 500 film reviews of one to four sentences
    (:func:`miniature.core.builtin_data.domain_reviews`: the aspects lean towards the verdict only
    by chance and a third state no verdict, so some reviews are genuinely ambiguous); the
    challenge set mixes 150 unseen film reviews (in-distribution) with 300 book reviews
    written with the same sentiment vocabulary and sentence shapes (out-of-distribution: a
    shifted topic, like NewsQA beside SQuAD, not another kind of text), so the OOD
    detector's AUROC can be measured too. ``scale`` shrinks every set (for quick runs).
    """
    from miniature.core.builtin_data import domain_reviews

    sizes = {
        name: max(20, int(round(size * scale)))
        for name, size in dict(train=1000, holdout=300, test=500, extra=150, shifted=300).items()
    }
    reviews = domain_reviews(
        sizes["train"] + sizes["holdout"] + sizes["test"] + sizes["extra"], domain="film", seed=seed
    )
    cuts = list(accumulate([sizes["train"], sizes["holdout"], sizes["test"]]))
    parts = [reviews[: cuts[0]], reviews[cuts[0] : cuts[1]], reviews[cuts[1] : cuts[2]], reviews[cuts[2] :]]

    def as_data(name: str, items: list) -> TextData:
        return TextData(source=f"builtin:{name}", texts=[i.text for i in items], labels=[i.label for i in items])

    shifted = [i.text for i in domain_reviews(sizes["shifted"], domain="book", seed=seed + 1)]
    extra = parts[3]
    # interleaved (2 books after each film review), so --data-limit keeps both kinds
    texts, is_ood = [], []
    for i, item in enumerate(extra):
        texts += [item.text] + shifted[2 * i : 2 * i + 2]
        is_ood += [False] + [True] * len(shifted[2 * i : 2 * i + 2])
    texts += shifted[2 * len(extra) :]
    is_ood += [True] * len(shifted[2 * len(extra) :])
    challenge = TextData(source="builtin:challenge", texts=texts)
    return TaskData(
        train=as_data("train", parts[0]),
        holdout=as_data("holdout", parts[1]),
        test=as_data("test", parts[2]),
        challenge=challenge,
        challenge_is_ood=is_ood,
    )


def qa_data(source: str, examples: Sequence[Any]) -> TextData:
    """Extractive-QA items as TextData: questions in ``texts``, contexts in ``pairs``."""
    examples = list(examples)
    return TextData(
        source=source, texts=[e.question for e in examples], pairs=[e.context for e in examples], examples=examples
    )


def load_qa_data(source: str | Path, *, split: str | None = None, limit: int | None = None) -> TextData:
    """SQuAD-format QA items (flat rows or SQuAD's nested JSON), validated."""
    from miniature.core.tasks.qa import qa_examples_from_records

    rows = load_records(source, split=split)
    return qa_data(str(source), qa_examples_from_records(rows, str(source))).head(limit)


def builtin_qa_data(*, seed: int = 0, scale: float = 1.0) -> TaskData:
    """Generated SQuAD 2.0-style items (ID) and NewsQA-style long news items (OOD).

    Train 600 / held-out 200 / test 300 biographies; the challenge set mixes 100 unseen
    biographies (in-distribution) with 200 news stories (out-of-distribution).
    """
    from miniature.core.builtin_data import news_qa_items, qa_items

    sizes = {
        name: max(20, int(round(size * scale)))
        for name, size in dict(train=600, holdout=200, test=300, extra=100, news=200).items()
    }
    items = qa_items(sum(sizes[k] for k in ("train", "holdout", "test", "extra")), seed=seed)
    cuts = list(accumulate([sizes["train"], sizes["holdout"], sizes["test"]]))
    parts = [items[: cuts[0]], items[cuts[0] : cuts[1]], items[cuts[1] : cuts[2]], items[cuts[2] :]]
    news = news_qa_items(sizes["news"], seed=seed + 1)
    return TaskData(
        train=qa_data("builtin-qa:train", parts[0]),
        holdout=qa_data("builtin-qa:holdout", parts[1]),
        test=qa_data("builtin-qa:test", parts[2]),
        challenge=qa_data("builtin-qa:challenge", parts[3] + news),
        challenge_is_ood=[False] * len(parts[3]) + [True] * len(news),
    )
