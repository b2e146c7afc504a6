"""Fine-tuning with Trainer, cached by content; the ``miniature finetune`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import miniature.core.finetune as finetune_module
from miniature.tools.cli import main
from miniature.core.data import TextData, write_jsonl
from miniature.errors import DataError
from miniature.core.finetune import RECORD_NAME, finetune
from miniature.core.models import fingerprint_files, load_model
from miniature.core.builtin_data import qa_items, sentiment_reviews
from miniature.core.tasks.classification import is_finetuned, predict_labels

# settings that make a 2-layer, 32-wide random BERT learn the synthetic reviews reliably
SETTINGS = dict(epochs=10, learning_rate=3e-3, batch_size=32, max_length=64, seed=0)
CLI_SETTINGS = ["--epochs", "10", "--learning-rate", "3e-3", "--batch-size", "32", "--max-length", "64", "--seed", "0"]


def no_training(*args, **kwargs):
    raise AssertionError("training started, but this should have been a cache hit")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """An encoder-only checkpoint: the classifier head is new, as for a hub base model."""
    from miniature.tools.testing import make_tiny_model, train_tokenizer

    root = tmp_path_factory.mktemp("finetune")
    return make_tiny_model(root / "base", train_tokenizer(root / "tokenizer"), head="encoder")


@pytest.fixture(scope="module")
def reviews():
    items = sentiment_reviews(600, seed=3, mixed=0.0)  # plain reviews: learnable by a tiny model in a second
    train = TextData("reviews", [i.text for i in items[:400]], [i.label for i in items[:400]])
    held_out = TextData("held-out", [i.text for i in items[400:]], [i.label for i in items[400:]])
    return train, held_out


@pytest.fixture(scope="module")
def finetuned(base, reviews, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return root, finetune(str(base), "classification", reviews[0], output_root=root, progress=False, **SETTINGS)


@pytest.mark.slow
def test_finetuning_lowers_the_loss_and_beats_chance(base, reviews, finetuned):
    root, path = finetuned
    assert path.parent == root
    record = json.loads((path / RECORD_NAME).read_text())
    assert record["loss_after"] < record["loss_before"] - 0.1
    assert record["base_model"]["fingerprint"] == fingerprint_files(base)
    assert record["train_items"] == 400 and record["steps"] == 10 * 13
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.bin"))
    assert not is_finetuned(base, "classification") and is_finetuned(path, "classification")
    wrapper = load_model(str(path), head="classification", progress=False)
    held_out = reviews[1]
    accuracy = float(np.mean(predict_labels(wrapper, held_out.texts) == np.array(held_out.labels)))
    assert accuracy >= 0.65, f"held-out accuracy {accuracy:.2f} is too close to chance (0.5)"
    assert [p.name for p in root.iterdir()] == [path.name]  # no temporary folders left


def test_second_call_is_a_cache_hit(base, reviews, finetuned, monkeypatch):
    root, path = finetuned
    weights = path / "model.safetensors"
    before = weights.stat().st_mtime_ns
    monkeypatch.setattr(finetune_module, "_train", no_training)
    again = finetune(str(base), "classification", reviews[0], output_root=root, progress=False, **SETTINGS)
    assert again == path and weights.stat().st_mtime_ns == before
    # another setting or other data is another model: it would train (and fails here)
    with pytest.raises(AssertionError, match="training started"):
        finetune(str(base), "classification", reviews[0], output_root=root, progress=False, **{**SETTINGS, "seed": 1})
    flipped = TextData("reviews", reviews[0].texts, [1 - y for y in reviews[0].labels])
    with pytest.raises(AssertionError, match="training started"):
        finetune(str(base), "classification", flipped, output_root=root, progress=False, **SETTINGS)
    assert [p.name for p in root.iterdir()] == [path.name]  # failed runs leave nothing


def test_bad_training_input_is_refused(base, tmp_path):
    with pytest.raises(DataError, match="--label-column"):
        finetune(str(base), "classification", TextData("x.jsonl", ["a", "b"]), output_root=tmp_path)
    with pytest.raises(TypeError, match="QAExample"):
        finetune(str(base), "qa", TextData("x.jsonl", ["a"], [0]), output_root=tmp_path)
    with pytest.raises(ValueError, match="task must be"):
        finetune(str(base), "ner", TextData("x.jsonl", ["a"], [0]), output_root=tmp_path)


# -- the command line -------------------------------------------------------------------------
def test_cli_finetune_passes_every_setting_through(base, reviews, finetuned, tmp_path, monkeypatch, capsys):
    root, path = finetuned
    train = tmp_path / "train.jsonl"
    write_jsonl(train, [{"review": t, "stars": y} for t, y in zip(reviews[0].texts, reviews[0].labels)])
    monkeypatch.setattr(finetune_module, "_train", no_training)  # same inputs: the stored model
    status = main(
        [
            "finetune",
            str(base),
            "--train",
            str(train),
            "--text-column",
            "review",
            "--label-column",
            "stars",
            *CLI_SETTINGS,
            "--output-dir",
            str(root),
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert (status, captured.out) == (0, f"{path}\n")


@pytest.mark.slow
def test_cli_finetune_qa_trains_a_qa_head(base, tmp_path, capsys):
    from miniature.core.tasks.qa import predict_qa

    train = tmp_path / "squad.jsonl"
    items = qa_items(48, seed=2)
    write_jsonl(train, [e.to_record() for e in items])
    status = main(
        [
            "finetune",
            str(base),
            "--task",
            "qa",
            "--train",
            str(train),
            "--max-steps",
            "12",
            "--batch-size",
            "16",
            "--learning-rate",
            "3e-3",
            "--max-length",
            "96",
            "--doc-stride",
            "32",
            "--output-dir",
            str(tmp_path / "models"),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out.strip()
    assert status == 0 and "\n" not in out  # only the path on stdout: Trainer logs go to stderr
    record = json.loads((tmp_path / "models" / out.split("/")[-1] / RECORD_NAME).read_text())
    assert record["task"] == "qa" and record["steps"] == 12
    assert record["loss_after"] < record["loss_before"]
    assert is_finetuned(out, "qa") and not is_finetuned(out, "classification")
    wrapper = load_model(out, head="qa", max_length=96, progress=False)
    answers = predict_qa(wrapper, items[:4], doc_stride=32)
    assert len(answers) == 4 and all(a in e.context for a, e in zip(answers, items))


@pytest.mark.parametrize(
    "arguments, words",
    [
        (["--train", "missing.jsonl"], ["data 'missing.jsonl'", "does not exist"]),
        (["--train", "{train}", "--label-column", "sentiment"], ["'sentiment'", "--*-column"]),
        (["--task", "qa", "--train", "{train}"], ["'id'", "SQuAD"]),
        (["--task", "qa", "--train", "{squad}", "--max-length", "64"], ["doc_stride", "--doc-stride"]),
        (["--train", "{train}", "--epochs", "0"], ["epochs", "--epochs"]),
    ],
)
def test_cli_errors_are_one_line_with_status_2(base, tmp_path, capsys, arguments, words):
    train, squad = tmp_path / "train.jsonl", tmp_path / "squad.jsonl"
    write_jsonl(train, [{"text": "a fine film", "label": 1}])
    write_jsonl(squad, [e.to_record() for e in qa_items(3)])
    arguments = [a.replace("{train}", str(train)).replace("{squad}", str(squad)) for a in arguments]
    status = main(["finetune", str(base), *arguments, "--output-dir", str(tmp_path / "m")])
    error = capsys.readouterr().err
    assert status == 2
    assert error.startswith("miniature: error: ") and error.count("\n") == 1
    for word in words:
        assert word in error
    assert "fix" in error


def test_cli_usage_errors(capsys, tmp_path):
    train = tmp_path / "train.jsonl"
    write_jsonl(train, [{"text": "a fine film", "label": 1}])
    assert main([]) == 2
    assert "finetune" in capsys.readouterr().err
    assert main(["finetune", "no-such-model-alias", "--train", str(train), "--output-dir", str(tmp_path)]) == 2
    assert "unknown model alias" in capsys.readouterr().err
    assert main(["finetune"]) == 2  # argparse: the model is required
    assert "required" in capsys.readouterr().err


def test_qa_training_windows_point_at_the_answer(base):
    from transformers import AutoTokenizer

    from miniature.core.tasks.qa import prepare_qa_features

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    items = qa_items(30, seed=6)
    keys = {"input_ids", "attention_mask", "token_type_ids"}
    windows = finetune_module._qa_items(tokenizer, items, keys, 64, 16)
    features = prepare_qa_features(tokenizer, items, max_length=64, doc_stride=16)
    assert len(windows) == len(features) > len(items)  # long contexts give several windows
    found = set()
    for window, index, offsets in zip(windows, features.example_index, features.offsets):
        assert set(window) == keys | {"start_positions", "end_positions"}
        item, start, end = items[index], window["start_positions"], window["end_positions"]
        if (start, end) == (0, 0):  # [CLS]: no answer in this window
            continue
        assert item.is_answerable and start <= end
        assert item.context[offsets[start][0] : offsets[end][1]] == item.answers[0]
        found.add(index)
    assert found == {i for i, item in enumerate(items) if item.is_answerable}
