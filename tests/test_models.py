"""Model references, safe loading and the batched encoder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from miniature.errors import ModelReferenceError
from miniature.core.models import PAPER_ALIASES, load_model, resolve_model

TEXTS = [
    "a good film",
    "the plot was not boring at all and the cast felt warm, while the ending seemed quite clever",
    "bad",
    "honestly the soundtrack was superb",
    "the director's new picture felt utterly lifeless and the second half was painful to sit through",
]


def test_paper_aliases_map_to_public_hub_ids() -> None:
    assert set(PAPER_ALIASES) == {"bert-large", "bert-base", "distilbert", "bert-medium", "bert-mini", "tinybert"}
    spec = resolve_model("TinyBERT")
    assert spec.source == "google/bert_uncased_L-2_H-128_A-2" and not spec.is_local


def test_hub_id_and_local_directory_resolve(tiny_models) -> None:
    assert resolve_model("org/some-model").source == "org/some-model"
    spec = resolve_model(str(tiny_models["small"]))
    assert spec.is_local and spec.name == "small"


def test_packaged_minilm_resolves_offline() -> None:
    spec = resolve_model("all-minilm-l6-v2")
    assert spec.is_local and (Path(spec.source) / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("bert-lage", "unknown model alias 'bert-lage' (did you mean 'bert-large'"),
        ("nonsense", "unknown model alias 'nonsense', and no such directory"),
        ("/no/such/model", "does not exist"),
        ("", "empty model reference"),
    ],
)
def test_bad_references_say_what_and_how_to_fix(reference: str, expected: str) -> None:
    with pytest.raises(ModelReferenceError, match="fix:") as info:
        resolve_model(reference)
    assert expected in str(info.value)


def test_directory_without_config_or_tokenizer(tiny_models, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelReferenceError, match="has no config.json"):
        resolve_model(str(empty))
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    shutil.copy(tiny_models["small"] / "config.json", no_tokenizer)
    shutil.copy(tiny_models["small"] / "model.safetensors", no_tokenizer)
    with pytest.raises(ModelReferenceError, match="has no tokenizer files"):
        resolve_model(str(no_tokenizer))


def test_pickle_only_weights_are_refused_unless_allowed(tiny_models, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    target = tmp_path / "pickled"
    shutil.copytree(tiny_models["small"], target)
    state = load_file(str(target / "model.safetensors"))
    (target / "model.safetensors").unlink()
    torch.save(state, target / "pytorch_model.bin")
    with pytest.raises(ModelReferenceError, match="only pickle weights.*--allow-pickle"):
        load_model(str(target), head="classification")
    wrapper = load_model(str(target), head="classification", allow_pickle=True)
    reference = load_model(str(tiny_models["small"]), head="classification")
    assert np.allclose(wrapper.encode(TEXTS), reference.encode(TEXTS), atol=1e-6)


def test_remote_code_is_refused_unless_trusted(tiny_models, tmp_path: Path) -> None:
    target = tmp_path / "remote"
    shutil.copytree(tiny_models["small"], target)
    config = json.loads((target / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (target / "config.json").write_text(json.dumps(config))
    (target / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ModelReferenceError, match="custom code.*--trust-remote-code"):
        load_model(str(target))


@pytest.mark.slow
def test_unreachable_hub_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    with pytest.raises(ModelReferenceError) as info:
        load_model("miniature-tests/does-not-exist")
    message = str(info.value)
    assert "\n" not in message and "could not load 'miniature-tests/does-not-exist'" in message
    assert "fix:" in message


@pytest.mark.parametrize("name", ["reference", "small", "distil"])
def test_batched_encoding_equals_one_by_one_in_input_order(tiny_models, name: str) -> None:
    wrapper = load_model(str(tiny_models[name]), head="classification", batch_size=2)
    batched = wrapper.encode(TEXTS)
    single = np.concatenate([wrapper.encode([text]) for text in TEXTS])
    assert batched.shape == (len(TEXTS), wrapper.config.hidden_size if name != "distil" else wrapper.config.dim)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    logits = wrapper.logits(TEXTS)
    np.testing.assert_allclose(logits, np.concatenate([wrapper.logits([t]) for t in TEXTS]), atol=1e-5)
    vectors, both_logits = wrapper.encode_and_classify(TEXTS)
    np.testing.assert_allclose(vectors, batched, atol=1e-6)
    np.testing.assert_allclose(both_logits, logits, atol=1e-6)


def test_batches_are_length_sorted_and_cover_every_item(tiny_models) -> None:
    wrapper = load_model(str(tiny_models["small"]), batch_size=2)
    features = wrapper.tokenize(TEXTS)
    batches = wrapper.batches(features)
    assert sorted(i for batch in batches for i in batch) == list(range(len(TEXTS)))
    lengths = [len(features[i]["input_ids"]) for batch in batches for i in batch]
    assert lengths == sorted(lengths, reverse=True)
    wrapper.encode(TEXTS)
    assert (wrapper.forward_calls, wrapper.forward_texts) == (len(batches), len(TEXTS))


def test_mean_pooling_differs_from_cls_and_truncation_is_counted(tiny_models) -> None:
    wrapper = load_model(str(tiny_models["small"]), max_length=8)
    cls = wrapper.encode(TEXTS)
    mean = wrapper.encode(TEXTS, pooling="mean")
    assert not np.allclose(cls, mean)
    assert wrapper.truncated == sum(len(wrapper.tokenizer(t)["input_ids"]) > 8 for t in TEXTS) > 0


def test_fingerprint_follows_weights(tiny_models) -> None:
    first = load_model(str(tiny_models["reference"])).fingerprint
    again = load_model(str(tiny_models["reference"])).fingerprint
    other = load_model(str(tiny_models["reinit"])).fingerprint
    assert first == again != other


@pytest.mark.parametrize("fast", [True, False], ids=["fast-tokenizer", "slow-tokenizer"])
def test_truncation_count_is_the_same_from_one_pass_and_two(tiny_models, fast: bool) -> None:
    from transformers import AutoTokenizer

    wrapper = load_model(str(tiny_models["small"]), max_length=8)
    wrapper.tokenizer = AutoTokenizer.from_pretrained(str(tiny_models["small"]), use_fast=fast)
    assert wrapper.tokenizer.is_fast is fast
    questions = [text.split()[0] for text in TEXTS]
    for pairs in (None, questions):
        features = wrapper.tokenize(TEXTS, pairs)
        args = (TEXTS, questions) if pairs is not None else (TEXTS,)
        uncut = wrapper.tokenizer(*args)["input_ids"]
        assert wrapper.truncated == sum(len(ids) > 8 for ids in uncut) > 0
        assert all(len(item["input_ids"]) <= 8 for item in features)
