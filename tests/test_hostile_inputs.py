"""Hostile input and faults: each gives one clear line naming the input and the fix, or a
warning and a correct result; nothing computed is lost; nothing from a model is executed.

Each case is documented in the README's "Bad input" table.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from miniature import options as opt
from miniature.data import load_text_data, write_jsonl
from miniature.engine import Gate
from miniature.errors import CacheWarning, DataError, DataWarning, MiniatureError, ModelReferenceError
from miniature.options import make_settings


def gate(tiny_models, tmp_path: Path, **overrides) -> Gate:
    values = dict(reference=str(tiny_models["reference"]), candidate=[str(tiny_models["small"])],
                  cache_dir=tmp_path / "cache", data_limit=60, bootstrap=0)
    values.update(overrides)
    return Gate(make_settings(**values))


def figures(g: Gate) -> dict[str, float]:
    pair = g.pairs()[0]
    return {c: g.compare(c, pair).figure for c in ("prediction_errors", "data_representation", "data_distribution")}


def write_rows(path: Path, texts: list[str]) -> Path:
    write_jsonl(path, [{"text": t, "label": i % 2} for i, t in enumerate(texts)])
    return path


# -- model references: usage errors at parse time, one line each ---------------------------
@pytest.mark.parametrize(("value", "expected"), [
    ("bert-lage", "unknown model alias 'bert-lage'"),                       # 1 unknown alias
    ("./missing-model", "does not exist"),                                 # 2 missing path
])
def test_bad_reference_is_a_one_line_usage_error(pytester: pytest.Pytester, value: str, expected: str) -> None:
    result = pytester.runpytest(f"{opt.REFERENCE}={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    lines = [line for line in result.stderr.lines if line.strip()]
    assert len(lines) == 1 and expected in lines[0] and "fix:" in lines[0]


def test_path_without_config(pytester: pytest.Pytester) -> None:                 # 3
    pytester.mkdir("empty-model")
    result = pytester.runpytest(f"{opt.REFERENCE}=empty-model")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "has no config.json; fix: save the model there with model.save_pretrained" in result.stderr.str()


def test_model_without_tokenizer(pytester: pytest.Pytester, tiny_models) -> None:  # 4
    target = pytester.mkdir("no-tokenizer")
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_models["small"] / name, target)
    result = pytester.runpytest(f"{opt.REFERENCE}=no-tokenizer")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "has no tokenizer files" in result.stderr.str() and "tokenizer.save_pretrained" in result.stderr.str()


def test_pickle_only_weights_are_refused(tiny_models, tmp_path: Path) -> None:  # 5
    import torch
    from safetensors.torch import load_file

    target = tmp_path / "pickled"
    shutil.copytree(tiny_models["small"], target)
    torch.save(load_file(str(target / "model.safetensors")), target / "pytorch_model.bin")
    (target / "model.safetensors").unlink()
    g = gate(tiny_models, tmp_path, candidate=[str(target)])
    with pytest.raises(ModelReferenceError, match=r"only pickle weights.*fix: convert them to safetensors"):
        figures(g)


def test_model_needing_remote_code_is_refused_and_nothing_runs(tiny_models, tmp_path: Path) -> None:  # 6
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


def test_different_label_sets(tiny_models, tmp_path: Path) -> None:  # 7
    from miniature.testing import make_tiny_model

    three = make_tiny_model(tmp_path / "three", tiny_models.tokenizer_dir, num_labels=3, seed=9)
    config = json.loads((three / "config.json").read_text())
    config["id2label"] = {"0": "neg", "1": "neutral", "2": "pos"}
    (three / "config.json").write_text(json.dumps(config))
    g = gate(tiny_models, tmp_path, candidate=[str(three)])
    # a head for 3 labels on 2-label data: its predictions are not comparable, so skipped
    from miniature.errors import NotApplicable

    with pytest.raises(NotApplicable, match="'three' has a classification head for 3 label.*the data "
                                            "has 2 distinct label.*--label-map"):
        g.compare("prediction_errors", g.pairs()[0])


# -- data ----------------------------------------------------------------------------------
def test_empty_dataset(tmp_path: Path) -> None:  # 8
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(DataError, match=r"empty.jsonl' is empty \(0 rows\); fix"):
        load_text_data(path)


def test_missing_column(tmp_path: Path) -> None:  # 9
    path = write_rows(tmp_path / "d.jsonl", ["a", "b"])
    with pytest.raises(DataError, match="has no column 'review'.*fix: rename the column or pass"):
        load_text_data(path, text_column="review")


@pytest.mark.parametrize("blank", ["", "   \t\n"])
def test_empty_and_whitespace_texts(tmp_path: Path, blank: str) -> None:  # 10
    path = write_rows(tmp_path / "d.jsonl", ["fine", blank, "also fine"])
    with pytest.raises(DataError, match=r"1 empty or whitespace-only text\(s\) in column 'text' \(first at row 1\)"):
        load_text_data(path)


def test_duplicate_texts_warn_and_ties_are_broken_by_index(tiny_models, tmp_path: Path) -> None:  # 11
    from miniature.characteristics.representation import knn_indices

    from miniature.synthetic import sentiment_reviews

    texts = [r.text for r in sentiment_reviews(30, seed=3)] * 2
    path = write_rows(tmp_path / "dupes.jsonl", texts)
    g = gate(tiny_models, tmp_path, test_data=str(path), k=3)
    with pytest.warns(DataWarning, match="30 duplicate item"):
        g.data
    vectors = g.outputs(g.reference, "test")["embeddings"]
    neighbours = knn_indices(vectors, 3)
    assert all(neighbours[i, 0] == (i + 30) % 60 for i in range(60))  # the twin comes first
    assert np.array_equal(neighbours, knn_indices(vectors, 3))


def test_k_not_below_the_number_of_items(tiny_models, tmp_path: Path) -> None:  # 12
    g = gate(tiny_models, tmp_path, k=60)
    with pytest.raises(MiniatureError, match=r"data representation, reference vs small: .*K.*60.*fix|choose K < n"):
        g.compare("data_representation", g.pairs()[0])


@pytest.mark.parametrize(("value", "expected"), [("1.2", "outside [0, 1]"), ("-0.1", "outside [0, 1]"),  # 13
                                                 ("high", "not a number in [0, 1]")])                   # 14
def test_bad_thresholds_fail_at_parse_time(pytester: pytest.Pytester, value: str, expected: str) -> None:
    result = pytester.runpytest(f"{opt.THRESHOLD_DISTRIBUTION}={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert opt.THRESHOLD_DISTRIBUTION in result.stderr.str() and expected in result.stderr.str()


def test_nan_embeddings_are_a_clear_error() -> None:  # 15
    vectors = np.ones((5, 4), dtype=np.float32)
    vectors[2, 1] = np.nan
    with pytest.raises(MiniatureError, match=r"1 of 5 embeddings contain NaN or inf.*float16.*fix"):
        Gate._check_embeddings(vectors, "model 'x' on the test data")


def test_all_zero_embeddings_warn_and_still_give_a_result() -> None:  # 16
    from miniature.characteristics.representation import knn_jaccard

    vectors = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    vectors[3] = 0.0
    with pytest.warns(DataWarning, match="1 of 12 embeddings are all zero"):
        Gate._check_embeddings(vectors, "model 'x' on the test data")
    agreement = knn_jaccard(vectors, vectors, 3)
    assert np.all(agreement == 1.0)


def test_texts_longer_than_max_length_are_truncated_and_reported(tiny_models, tmp_path: Path) -> None:  # 17
    long = " ".join(["the plot was long and winding"] * 40)
    path = write_rows(tmp_path / "long.jsonl", [f"{long} {i}" for i in range(20)] + [f"short {i}" for i in range(20)])
    g = gate(tiny_models, tmp_path, test_data=str(path), max_length=32, k=5)
    with pytest.warns(DataWarning, match="20 of 40 items are longer than --max-length 32 tokens and were truncated"):
        result = g.compare("data_representation", g.pairs()[0])
    assert 0.0 <= result.figure <= 1.0


def test_non_english_text_and_emoji_give_finite_results(tiny_models, tmp_path: Path) -> None:  # 18
    texts = ["Der Film war großartig 🎬🍿", "映画はとても退屈だった", "фильм был ужасен 😡",
             "¡Qué película tan buena!", "😀😀😀", "film الجميل جدا"] * 5
    path = write_rows(tmp_path / "intl.jsonl", [f"{t} {i}" for i, t in enumerate(texts)])
    g = gate(tiny_models, tmp_path, test_data=str(path), k=5)
    result = g.compare("data_representation", g.pairs()[0])
    assert np.isfinite(g.outputs(g.reference, "test")["embeddings"]).all() and 0 <= result.figure <= 1


# -- cache and faults ----------------------------------------------------------------------
def test_corrupted_cache_file_is_recomputed(tiny_models, tmp_path: Path) -> None:  # 19
    expected = figures(gate(tiny_models, tmp_path))
    for path in (tmp_path / "cache" / "outputs").glob("*.npz"):
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # truncated
    g = gate(tiny_models, tmp_path)
    with pytest.warns(CacheWarning, match="unreadable.*recomputing"):
        assert figures(g) == expected


def test_read_only_cache_dir(tiny_models, tmp_path: Path) -> None:  # 20
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(MiniatureError, match=r"cache dir .* is not writable.*--cache-dir.*--no-cache"):
        gate(tiny_models, tmp_path, cache_dir=blocker / "cache")


def test_interrupted_encoding_resumes_from_saved_chunks(tiny_models, tmp_path: Path) -> None:  # 21
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
    reference_wrapper = resumed._wrappers[(resumed.reference, "")]
    assert reference_wrapper.forward_calls < 30  # only the missing chunks were encoded


def _run_gate(args: tuple[str, str, str, str]) -> dict[str, float]:
    reference, candidate, cache, _ = args
    g = Gate(make_settings(reference=reference, candidate=[candidate], cache_dir=Path(cache),
                           data_limit=40, bootstrap=0))
    return figures(g)


def test_two_gate_runs_at_once_on_the_same_cache(tiny_models, tmp_path: Path) -> None:  # 22
    args = (str(tiny_models["reference"]), str(tiny_models["small"]), str(tmp_path / "cache"), "")
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        first, second = pool.map(_run_gate, [args, args])
    assert first == second
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every cache file is whole: no CacheWarning
        assert _run_gate(args) == first
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_unreachable_hub_is_one_line(monkeypatch: pytest.MonkeyPatch, tiny_models, tmp_path: Path) -> None:  # 23
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    g = gate(tiny_models, tmp_path, candidate=["miniature-tests/not-on-this-machine"])
    with pytest.raises(ModelReferenceError) as info:
        figures(g)
    assert "\n" not in str(info.value) and "could not load 'miniature-tests/not-on-this-machine'" in str(info.value)


# -- round two: heads and sample sizes --------------------------------------------------------
@pytest.mark.parametrize("attack_model", ["small", "encoder"])
def test_attack_model_without_masked_lm_head_is_refused(tiny_models, tmp_path: Path,
                                                        attack_model: str) -> None:  # 24
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


def test_masked_lm_attack_model_is_accepted(tiny_models, tmp_path: Path) -> None:  # 24
    g = gate(tiny_models, tmp_path, attack_model=str(tiny_models["attacker"]))
    wrapper = g.attack_wrapper()
    assert type(wrapper.model).__name__ == "BertForMaskedLM" and wrapper.missing_head == []


def write_labelled(path: Path, n: int) -> Path:
    from miniature.synthetic import sentiment_reviews

    write_jsonl(path, [{"text": r.text, "label": r.label} for r in sentiment_reviews(n, seed=3)])
    return path


def test_too_few_attacked_items_skip_the_attack_with_the_reason(tiny_models, tmp_path: Path) -> None:  # 25
    from miniature.engine import MIN_ITEMS
    from miniature.errors import NotApplicable

    reference = str(tiny_models["reference"])
    one = write_labelled(tmp_path / "one.jsonl", 1)
    g = gate(tiny_models, tmp_path, candidate=[reference], test_data=str(one),
             attack_model=str(tiny_models["attacker"]))
    with pytest.raises(NotApplicable) as info:
        g.compare("adversarial_vulnerability", g.pairs()[0])
    message = str(info.value)
    assert "\n" not in message and "nan" not in message
    assert "of the 1 sampled item(s) were classified correctly by both" in message
    assert f"at least {MIN_ITEMS['adversarial_vulnerability']} are needed" in message
    assert "fix: pass more labelled test items (the test data has 1)" in message
    # enough test items, too small a sample: the fix is the sample size
    many = write_labelled(tmp_path / "many.jsonl", 40)
    g = gate(tiny_models, tmp_path, candidate=[reference], test_data=str(many),
             attack_model=str(tiny_models["attacker"]), attack_size=2)
    with pytest.raises(NotApplicable, match=r"of the 2 sampled item.*fix: raise --attack-size \(now 2\)"):
        g.compare("adversarial_vulnerability", g.pairs()[0])


def test_too_few_test_items_skip_prediction_errors(tiny_models, tmp_path: Path) -> None:  # 25
    from miniature.errors import NotApplicable

    few = write_labelled(tmp_path / "few.jsonl", 5)
    g = gate(tiny_models, tmp_path, test_data=str(few))
    with pytest.raises(NotApplicable, match=r"only 5 test item\(s\) in .*few.jsonl.*needs at least 10"):
        g.compare("prediction_errors", g.pairs()[0])


def test_no_errors_at_all_is_said_not_nan(tiny_models, tmp_path: Path) -> None:  # 26
    from miniature.errors import NotApplicable

    g = gate(tiny_models, tmp_path)
    g.correct = lambda name: np.ones(len(g.data.test), dtype=bool)  # both models always right
    with pytest.raises(NotApplicable, match="neither 'reference' nor 'small' erred on any of the 60 "
                                            "test items.*fix: pass a larger or harder --test-data"):
        g.compare("prediction_errors", g.pairs()[0])


def test_small_samples_warn_that_the_interval_is_wide(tiny_models, tmp_path: Path) -> None:  # 27
    g = gate(tiny_models, tmp_path, data_limit=20, k=5)
    with pytest.warns(DataWarning, match=r"data representation, reference vs small: computed on only "
                                         r"n=20 items \(fewer than 30\), so its 95% interval is wide"):
        result = g.compare("data_representation", g.pairs()[0])
    assert result.n == 20 and 0.0 <= result.figure <= 1.0
    roomy = gate(tiny_models, tmp_path, data_limit=40, k=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        roomy.compare("data_representation", roomy.pairs()[0])
