"""Label maps between two classifiers and the data; detecting trained task heads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import transformers

from miniature.errors import DataError, ModelReferenceError
from miniature.core.tasks.classification import (
    check_label_maps,
    id2label,
    is_finetuned,
    parse_label_map,
    predict_labels,
)

NEG_POS = {0: "NEGATIVE", 1: "POSITIVE"}
POS_NEG = {0: "POSITIVE", 1: "NEGATIVE"}
DATA = [0, 1, 1, 0]


def config(labels):
    return transformers.BertConfig(id2label=labels, label2id={v: k for k, v in labels.items()})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from miniature.tools.testing import make_tiny_model, train_tokenizer

    root = tmp_path_factory.mktemp("cls")
    tokenizer = train_tokenizer(root / "tokenizer")
    return {head: make_tiny_model(root / head, tokenizer, head=head) for head in ("classification", "encoder", "qa")}


def test_parse_label_map():
    assert parse_label_map("POSITIVE=1, NEGATIVE=0") == {"POSITIVE": 1, "NEGATIVE": 0}
    assert parse_label_map("a=b=2,neutral=2") == {"a=b": 2, "neutral": 2}
    for bad, words in [
        ("", "empty"),
        ("POSITIVE", "NAME=ID"),
        ("POSITIVE=one", "NAME=ID"),
        ("POS=1,pos=0", "twice"),
        ("POS=-1", "NAME=ID"),
    ]:
        with pytest.raises(DataError, match=words):
            parse_label_map(bad)


def test_matching_or_generic_maps_need_no_translation():
    assert check_label_maps(config(NEG_POS), config({0: "negative", 1: "positive"}), DATA) is None
    assert check_label_maps(config({0: "LABEL_0", 1: "LABEL_1"}), config(POS_NEG), DATA) is None
    assert id2label({"id2label": {"1": "b", "0": "a"}}) == {0: "a", 1: "b"}
    assert id2label({"num_labels": 3}) == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}


def test_mismatched_label_maps_give_a_clear_error():
    with pytest.raises(ModelReferenceError) as error:
        check_label_maps(config(NEG_POS), config(POS_NEG), DATA, reference_name="bert-large", candidate_name="tinybert")
    message = str(error.value)
    for part in (
        "'bert-large'",
        "'tinybert'",
        "{0: 'NEGATIVE', 1: 'POSITIVE'}",
        "{0: 'POSITIVE', 1: 'NEGATIVE'}",
        "--label-map",
        '"NEGATIVE=0,POSITIVE=1"',
    ):
        assert part in message


def test_label_map_option_fixes_the_mismatch():
    resolved = check_label_maps(config(NEG_POS), config(POS_NEG), DATA, label_map="POSITIVE=1,NEGATIVE=0")
    assert resolved == {"POSITIVE": 1, "NEGATIVE": 0}
    with pytest.raises(DataError, match="'NEUTRAL'"):  # a label the map does not name
        check_label_maps(
            config(NEG_POS), config({0: "NEGATIVE", 1: "NEUTRAL"}), DATA, label_map="POSITIVE=1,NEGATIVE=0"
        )
    with pytest.raises(DataError, match=r"data label id\(s\) \[1\]"):  # data label 1 unreachable
        check_label_maps(config(NEG_POS), config(POS_NEG), DATA, label_map="POSITIVE=0,NEGATIVE=0")


def test_data_label_names_resolve_named_maps():
    # string labels sorted by load_text_data: negative=0, positive=1
    resolved = check_label_maps(config(NEG_POS), config(POS_NEG), DATA, data_label_names=["negative", "positive"])
    assert resolved is not None and resolved["POSITIVE"] == 1 and resolved["NEGATIVE"] == 0
    # both models agree with each other but not with the data's order
    assert check_label_maps(config(POS_NEG), config(POS_NEG), DATA, data_label_names=["negative", "positive"]) == {
        "POSITIVE": 1,
        "NEGATIVE": 0,
    }


def test_too_few_labels_for_the_data_or_different_sizes():
    with pytest.raises(DataError, match="label ids up to 2"):
        check_label_maps(config(NEG_POS), config(NEG_POS), [0, 1, 2], reference_name="r")
    three = {0: "NEGATIVE", 1: "POSITIVE", 2: "NEUTRAL"}
    with pytest.raises(ModelReferenceError, match="different numbers of labels"):
        check_label_maps(config(three), config(NEG_POS), DATA)


def test_predict_labels_translates_through_the_map(tiny):
    from miniature.core.models import load_model

    wrapper = load_model(str(tiny["classification"]), head="classification", progress=False)
    wrapper.model.config.id2label = dict(POS_NEG)
    texts = ["a wonderful film", "a boring film", "the plot was dull", "a brilliant cast"] * 3
    raw = wrapper.logits(texts).argmax(axis=1)
    assert predict_labels(wrapper, texts).tolist() == raw.tolist()
    translated = predict_labels(wrapper, texts, "POSITIVE=1,NEGATIVE=0")
    assert translated.dtype == np.int64 and translated.tolist() == (1 - raw).tolist()
    with pytest.raises(DataError, match="'NEGATIVE'"):
        predict_labels(wrapper, texts, {"POSITIVE": 1})


def test_is_finetuned_reads_the_weight_names(tiny, tmp_path):
    assert is_finetuned(tiny["classification"], "classification")
    assert is_finetuned(str(tiny["classification"]), "classification")
    assert not is_finetuned(tiny["encoder"], "classification")
    assert not is_finetuned(tiny["encoder"], "qa")
    assert is_finetuned(tiny["qa"], "qa") and not is_finetuned(tiny["qa"], "classification")
    # sharded checkpoints list their weights in an index
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text("{}")
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps(
            {
                "weight_map": {
                    "distilbert.embeddings.word_embeddings.weight": "a.safetensors",
                    "pre_classifier.weight": "b.safetensors",
                }
            }
        )
    )
    assert is_finetuned(sharded, "classification") and not is_finetuned(sharded, "qa")
    with pytest.raises(ValueError, match="head must be"):
        is_finetuned(tiny["qa"], "summarization")
