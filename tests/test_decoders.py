"""Decoder LMs gated end to end: a tiny Llama against its own torchao int4 and int8 copies,
from an empty project folder, every characteristic, and the figures recomputed by brute
force (one unpadded forward pass per text or choice, numpy for the arithmetic)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torchao", reason="the int4/int8 copies need torchao: pip install 'miniature[quantize]'")

N_ITEMS = 60
ATTACK_SIZE = 60


@pytest.fixture(scope="module")
def decoders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from miniature.tools.compress import compress
    from miniature.tools.testing_decoder import make_tiny_decoders

    root = tmp_path_factory.mktemp("decoders")
    paths = make_tiny_decoders(root)
    for name, quantization in (("llama-int4", "int4-weight-only"), ("llama-int8", "int8-dynamic")):
        paths[name] = compress(paths["llama"], root / name, method="int8", quantization=quantization)
    return paths


def load(path: Path):
    from miniature.core.models import load_model

    return load_model(str(path), head="classification")


def brute_choice_answers(wrapper, texts: list[str], words: list[str], template: str) -> np.ndarray:
    """lm-evaluation-harness's answer, one unpadded pass per (text, choice)."""
    import torch

    tokenizer, model = wrapper.tokenizer, wrapper.model
    answers = []
    for text in texts:
        prompt = template.replace("{text}", text)
        scores = []
        for word in words:
            context = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            whole = tokenizer(prompt + " " + word, add_special_tokens=False)["input_ids"]
            with torch.inference_mode():
                log_probs = torch.log_softmax(model(input_ids=torch.tensor([whole[:-1]])).logits[0].double(), -1)
            scores.append(sum(float(log_probs[i - 1, whole[i]]) for i in range(len(context), len(whole))))
        answers.append(int(np.argmax(scores)))
    return np.array(answers)


def brute_last_token_vectors(wrapper, texts: list[str]) -> np.ndarray:
    import torch

    rows = []
    for text in texts:
        ids = wrapper.tokenizer(text, truncation=True, max_length=wrapper.max_length)["input_ids"]
        with torch.inference_mode():
            hidden = wrapper.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1]
        rows.append(hidden[0, -1].double().numpy())
    return np.stack(rows)


def brute_knn_jaccard(a: np.ndarray, b: np.ndarray, k: int) -> float:
    def neighbours(x: np.ndarray) -> list[set[int]]:
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        similarity = unit @ unit.T
        out = []
        for i in range(len(x)):
            order = sorted((j for j in range(len(x)) if j != i), key=lambda j: (-similarity[i, j], j))
            out.append(set(order[:k]))
        return out

    return float(np.mean([len(p & q) / len(p | q) for p, q in zip(neighbours(a), neighbours(b))]))


def brute_token_figures(reference, candidate, texts: list[str]) -> tuple[float, float, int]:
    """Same-top rate and mean KL(reference ‖ candidate) over every next token of every text."""
    import torch

    same, klds = [], []
    for text in texts:
        ids = reference.tokenizer(text, truncation=True, max_length=reference.max_length)["input_ids"]
        with torch.inference_mode():
            p = torch.log_softmax(reference.model(input_ids=torch.tensor([ids])).logits[0].double(), -1).numpy()
            q = torch.log_softmax(candidate.model(input_ids=torch.tensor([ids])).logits[0].double(), -1).numpy()
        for t in range(len(ids) - 1):
            same.append(int(np.argmax(p[t])) == int(np.argmax(q[t])))
            klds.append(float(np.sum(np.exp(p[t]) * (p[t] - q[t]))))
    return float(np.mean(same)), float(np.mean(klds)), len(klds)


@pytest.mark.slow
def test_a_tiny_llama_against_its_int4_copy_runs_every_characteristic(
    gate_checks: pytest.Pytester, decoders, tiny_models
) -> None:
    where = gate_checks.path
    result = gate_checks.runpytest(
        f"--reference={decoders['llama']}",
        f"--candidate={decoders['llama-int4']}",
        f"--attack-model={tiny_models['attacker']}",
        f"--data-limit={N_ITEMS}",
        f"--attack-size={ATTACK_SIZE}",
        "--bootstrap=20",
        f"--cache-dir={where / 'cache'}",
        f"--report-dir={where / 'reports'}",
        "--threshold-token-top=0",
        "-p",
        "no:cacheprovider",
    )
    payload = json.loads((where / "reports" / "latest.json").read_text())
    by_name = {r["characteristic"]: r for r in payload["results"]}
    assert set(by_name) == {
        "prediction_errors",
        "data_representation",
        "data_distribution",
        "adversarial_vulnerability",
        "representation_similarity",
        "token_distribution",
    }
    not_computed = {name: r["reason"] for name, r in by_name.items() if r["status"] != "computed"}
    assert not not_computed, not_computed
    assert "LlamaForCausalLM, decoder" in payload["models"]["architecture"]["llama-int4"]
    assert "int4" in payload["models"]["quantization"]["llama-int4"]
    assert result.ret in (0, 1)  # random tiny weights: whether a check passes is not the point

    from miniature.core.data import BUILTIN_LABEL_WORDS, builtin_sentiment_data
    from miniature.core.stats import jaccard

    test = builtin_sentiment_data().test.head(N_ITEMS)
    reference, candidate = load(decoders["llama"]), load(decoders["llama-int4"])

    # prediction errors and the flips, from brute-force answers
    template = "{text}\nAnswer:"
    labels = np.array(test.labels)
    answers = {
        name: brute_choice_answers(w, test.texts, list(BUILTIN_LABEL_WORDS), template)
        for name, w in (("ref", reference), ("cand", candidate))
    }
    errors = by_name["prediction_errors"]
    assert errors["figure"] == pytest.approx(jaccard(answers["ref"] != labels, answers["cand"] != labels))
    assert errors["details"]["reference_accuracy"] == pytest.approx((answers["ref"] == labels).mean())
    wrong_both = (answers["ref"] != labels) & (answers["cand"] != labels)
    flips = errors["details"]["flips"]
    assert flips["wrong_to_other_wrong"] == int((wrong_both & (answers["ref"] != answers["cand"])).sum())
    assert flips["correct_to_incorrect"] == errors["details"]["negative_flips"]
    assert flips["flip_rate"] == pytest.approx((answers["ref"] == labels).__ne__(answers["cand"] == labels).mean())
    assert errors["details"]["negative_flips"] == int(((answers["ref"] == labels) & (answers["cand"] != labels)).sum())

    # representation: last-token vectors, K = 10 neighbours by cosine
    vectors = {name: brute_last_token_vectors(w, test.texts) for name, w in (("ref", reference), ("cand", candidate))}
    assert by_name["data_representation"]["figure"] == pytest.approx(
        brute_knn_jaccard(vectors["ref"], vectors["cand"], 10), abs=1e-9
    )

    # representation similarity: debiased CKA from the HSIC formula on the n x n Gram matrices
    def hsic1(gram_a: np.ndarray, gram_b: np.ndarray) -> float:
        n = len(gram_a)
        a, b = gram_a - np.diag(np.diag(gram_a)), gram_b - np.diag(np.diag(gram_b))
        one = np.ones(n)
        return float(
            (
                np.trace(a @ b)
                + (one @ a @ one) * (one @ b @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * (one @ a @ b @ one)
            )
            / (n * (n - 3))
        )

    gram = {name: v @ v.T for name, v in vectors.items()}
    cka = hsic1(gram["ref"], gram["cand"]) / math.sqrt(
        hsic1(gram["ref"], gram["ref"]) * hsic1(gram["cand"], gram["cand"])
    )
    assert by_name["representation_similarity"]["figure"] == pytest.approx(cka, abs=1e-5)

    # token distribution: every next token of every test text, exact over the vocabulary
    same_top, mean_kld, n_tokens = brute_token_figures(reference, candidate, test.texts)
    tokens = by_name["token_distribution"]
    assert tokens["n"] == n_tokens
    assert tokens["figure"] == pytest.approx(same_top, abs=1e-12)
    assert tokens["details"]["mean_kld"] == pytest.approx(mean_kld, rel=1e-6, abs=1e-9)
    assert (
        0 < tokens["details"]["mean_kld"] and tokens["evidence"][0]["kld"] >= tokens["details"]["kld_percentiles"]["99"]
    )

    # the rest ran on the same models: values in range, attacked items counted
    assert 0.0 <= by_name["data_distribution"]["figure"] <= 1.0
    assert by_name["adversarial_vulnerability"]["n"] >= 10


def test_int8_is_closer_to_the_reference_than_int4_on_the_token_distribution(decoders) -> None:
    from miniature.core.characteristics.token_distribution import token_values
    from miniature.core.data import builtin_sentiment_data
    from miniature.core.token_stats import summarise

    texts = builtin_sentiment_data().test.head(30).texts
    reference = load(decoders["llama"])
    figures = {}
    for name in ("llama-int8", "llama-int4", "llama"):
        stats = summarise(token_values(reference, load(decoders[name]), texts, scoring="texts", n_ctx=0, batch_size=8))
        figures[name] = stats
    assert figures["llama"].mean_kld == pytest.approx(0.0, abs=1e-9) and figures["llama"].same_top == 1.0
    assert figures["llama-int8"].mean_kld < figures["llama-int4"].mean_kld


def test_llama_cpp_scoring_scores_the_second_half_of_each_window(decoders) -> None:
    from miniature.core.characteristics.token_distribution import token_values
    from miniature.core.data import builtin_sentiment_data

    texts = builtin_sentiment_data().test.head(40).texts
    reference = load(decoders["llama"])
    ids = reference.tokenizer("\n".join(texts), add_special_tokens=True)["input_ids"]
    values = token_values(reference, load(decoders["llama-int4"]), texts, scoring="llama-cpp", n_ctx=32, batch_size=4)
    chunks = len(ids) // 32
    assert values["kld"].size == chunks * (32 - 1 - 16)
    assert set(values["position"].tolist()) == set(range(17, 32))  # targets at positions 17..31 of each window


@pytest.mark.parametrize("scoring", ["texts", "llama-cpp"])
def test_stored_logits_let_each_model_run_once_with_the_same_values(decoders, tmp_path: Path, scoring: str) -> None:
    """A model's logits are kept in the cache: the next pair it is in reads them instead of
    running it, and every value is the same as when both models run."""
    from miniature.core.cache import OutputCache
    from miniature.core.characteristics.token_distribution import token_values
    from miniature.core.data import builtin_sentiment_data

    texts = builtin_sentiment_data().test.head(20).texts
    reference, int8, int4 = (load(decoders[name]) for name in ("llama", "llama-int8", "llama-int4"))
    common = dict(scoring=scoring, n_ctx=32, batch_size=4)
    cache = OutputCache(tmp_path / "cache")
    plain = token_values(reference, int4, texts, **common)
    calls = reference.forward_calls
    first = token_values(reference, int8, texts, **common, cache=cache, model_keys=("ref", "int8"))
    assert reference.forward_calls - calls == int8.forward_calls > 0  # both ran, both stored
    assert len(list((tmp_path / "cache" / "token_logits").glob("*.npy"))) == 2
    calls = reference.forward_calls
    second = token_values(reference, int4, texts, **common, cache=cache, model_keys=("ref", "int4"))
    assert reference.forward_calls == calls  # read from its file
    for name in plain:
        np.testing.assert_array_equal(second[name], plain[name], err_msg=name)
    calls = (reference.forward_calls, int8.forward_calls)
    again = token_values(reference, int8, texts, **common, cache=cache, model_keys=("ref", "int8"))
    assert (reference.forward_calls, int8.forward_calls) == calls  # neither ran
    for name in first:
        np.testing.assert_array_equal(again[name], first[name], err_msg=name)
    refreshed = OutputCache(tmp_path / "cache", refresh=True)
    token_values(reference, int8, texts, **common, cache=refreshed, model_keys=("ref", "int8"))
    assert reference.forward_calls > calls[0]  # --refresh-cache runs them again


def test_encoders_skip_the_token_distribution_with_the_reason(tiny_models, tmp_path: Path) -> None:
    from miniature.core.gate import Gate
    from miniature.core.settings import make_settings

    gate = Gate(
        make_settings(
            reference=str(tiny_models["reference"]),
            candidate=[str(tiny_models["small"])],
            cache_dir=tmp_path / "cache",
            data_limit=30,
            bootstrap=0,
        )
    )
    result = gate.outcome("token_distribution", gate.pairs()[0])
    assert result.status == "skipped" and "not a decoder LM" in result.reason


def test_decoders_with_other_tokenizers_skip_the_token_distribution(decoders, tmp_path: Path) -> None:
    from miniature.core.characteristics.token_distribution import same_tokenizer_problem

    reference = load(decoders["llama"])
    other = load(decoders["gpt2"])
    other.tokenizer.add_tokens(["zzzz"])
    assert "different tokenizers" in same_tokenizer_problem(reference, other)


def test_a_decoder_without_label_words_is_told_to_name_them(decoders, tmp_path: Path) -> None:
    from miniature.core.data import write_jsonl
    from miniature.core.gate import Gate
    from miniature.core.settings import make_settings

    data = tmp_path / "ids.jsonl"
    write_jsonl(data, [{"text": f"the film was {w}", "label": i % 2} for i, w in enumerate(["good", "bad"] * 10)])
    gate = Gate(
        make_settings(
            reference=str(decoders["llama"]),
            candidate=[str(decoders["llama-int8"])],
            test_data=str(data),
            cache_dir=tmp_path / "cache",
            bootstrap=0,
        )
    )
    result = gate.outcome("prediction_errors", gate.pairs()[0])
    assert result.status == "skipped" and "--verbalizer" in result.reason
    named = Gate(
        make_settings(
            reference=str(decoders["llama"]),
            candidate=[str(decoders["llama-int8"])],
            test_data=str(data),
            cache_dir=tmp_path / "cache",
            bootstrap=0,
            verbalizer={0: "bad", 1: "good"},
        )
    )
    assert named.outcome("prediction_errors", named.pairs()[0]).status == "computed"


def write_multiple_choice(path: Path, n: int = 40) -> Path:
    from miniature.core.data import write_jsonl

    words = ["good", "bad", "dull", "superb", "slow"]
    rows = []
    for i in range(n):
        choices = [words[(i + j) % 5] for j in range(2 + i % 2)]  # two or three choices
        answer = choices[i % len(choices)] if i % 3 else i % len(choices)  # its text, or its index
        rows.append(
            {
                "text": f"the film was {words[i % 5]} and the cast was {words[(i * 3) % 5]}",
                "choices": choices,
                "answer": answer,
            }
        )
    write_jsonl(path, rows)
    return path


@pytest.mark.slow
def test_multiple_choice_items_are_answered_by_their_own_choices(decoders, tmp_path: Path) -> None:
    from miniature.core.data import load_text_data
    from miniature.core.gate import Gate
    from miniature.core.settings import make_settings

    data = write_multiple_choice(tmp_path / "mc.jsonl")
    loaded = load_text_data(data)
    assert loaded.choices is not None and {len(c) for c in loaded.choices} == {2, 3}
    assert loaded.labels[1] == loaded.choices[1].index("dull") and loaded.labels[3] == 0 and loaded.labels[0] == 0
    gate = Gate(
        make_settings(
            reference=str(decoders["llama"]),
            candidate=[str(decoders["llama-int8"])],
            test_data=str(data),
            cache_dir=tmp_path / "cache",
            bootstrap=0,
        )
    )
    pair = gate.pairs()[0]
    result = gate.outcome("prediction_errors", pair)
    assert result.status == "computed", result.reason
    template = "{text}\nAnswer:"
    for name in (pair.reference, pair.candidate):
        wrapper = load(decoders["llama" if name == pair.reference else "llama-int8"])
        expected = [
            brute_choice_answers(wrapper, [text], options, template)[0]
            for text, options in zip(loaded.texts, loaded.choices)
        ]
        assert gate.predicted(name).tolist() == expected
    attack = gate.outcome("adversarial_vulnerability", pair)
    assert attack.status == "skipped" and "multiple-choice" in attack.reason


def test_multiple_choice_data_skips_encoders_with_the_reason(tiny_models, tmp_path: Path) -> None:
    from miniature.core.gate import Gate
    from miniature.core.settings import make_settings

    data = write_multiple_choice(tmp_path / "mc.jsonl")
    gate = Gate(
        make_settings(
            reference=str(tiny_models["reference"]),
            candidate=[str(tiny_models["small"])],
            test_data=str(data),
            cache_dir=tmp_path / "cache",
            bootstrap=0,
        )
    )
    result = gate.outcome("prediction_errors", gate.pairs()[0])
    assert result.status == "skipped" and "multiple-choice" in result.reason and "decoder" in result.reason


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"text": "x", "choices": ["a"], "answer": 0}, "at least two"),
        ({"text": "x", "choices": ["a", "b"], "answer": "c"}, "neither the index"),
        ({"text": "x", "choices": ["a", "b"], "answer": 2}, "neither the index"),
        ({"text": "x", "choices": "a,b", "answer": 0}, "is not a list"),
    ],
)
def test_bad_multiple_choice_rows_are_one_line_naming_the_row(tmp_path: Path, row: dict, message: str) -> None:
    from miniature.core.data import load_text_data, write_jsonl
    from miniature.errors import DataError

    path = tmp_path / "mc.jsonl"
    write_jsonl(path, [{"text": "y", "choices": ["a", "b"], "answer": 1}, row])
    with pytest.raises(DataError, match=message) as error:
        load_text_data(path)
    assert "row 1" in str(error.value) and "\n" not in str(error.value)


def test_compress_prunes_and_drops_layers_of_decoders(decoders, tmp_path: Path) -> None:
    import json as _json

    from miniature.core.models import load_model
    from miniature.tools.compress import compress

    pruned = compress(decoders["llama"], tmp_path / "pruned", method="prune", sparsity=0.5)
    fewer = compress(decoders["gpt2"], tmp_path / "layers", method="layers")
    assert _json.loads((fewer / "config.json").read_text())["n_layer"] == 1
    for folder in (pruned, fewer):
        wrapper = load_model(str(folder), head="classification", choices=["negative", "positive"])
        assert wrapper.decoder and wrapper.logits(["a fine film"]).shape == (1, 2)


def test_a_custom_code_decoder_is_told_from_its_auto_map() -> None:
    from miniature.core.models import causal_lm_problem, is_decoder

    chatglm = {
        "architectures": ["ChatGLMModel"],
        "model_type": "chatglm",
        "auto_map": {
            "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
            "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
        },
    }
    assert is_decoder(chatglm)
    assert not is_decoder({"architectures": ["BertModel"], "model_type": "bert"})
    assert not is_decoder({"architectures": ["GPT2Model"], "model_type": "gpt2"})  # a base model: told by --task
    assert causal_lm_problem({"architectures": ["GPT2Model"], "model_type": "gpt2"}, "g") is None
    bert = causal_lm_problem({"architectures": ["BertForSequenceClassification"], "model_type": "bert"}, "b")
    assert bert is not None and "an encoder (model_type 'bert'" in bert and "drop --task causal-lm" in bert


@pytest.mark.slow
def test_task_causal_lm_reads_a_base_decoder_checkpoint_as_a_causal_lm(decoders, tmp_path: Path) -> None:
    """A GPT-2 saved as its base model (``GPT2Model``, no ``*LMHeadModel`` in config.json) is
    not detected as a decoder; ``--task causal-lm`` reads it as one: its tied LM head gives the
    same next-token distribution as the original's (same top 1, KLD 0)."""
    from miniature.core.gate import Gate
    from miniature.core.models import load_model
    from miniature.core.settings import make_settings

    base = tmp_path / "gpt2-base"
    original = load_model(str(decoders["gpt2"]), head="classification")
    original.model.transformer.save_pretrained(base, safe_serialization=True)
    original.tokenizer.save_pretrained(base)
    assert json.loads((base / "config.json").read_text())["architectures"] == ["GPT2Model"]

    def gate(**task: str) -> Gate:
        return Gate(
            make_settings(
                reference=str(decoders["gpt2"]),
                candidate=[str(base)],
                cache_dir=tmp_path / "cache",
                data_limit=30,
                bootstrap=0,
                **task,
            )
        )

    detected = gate()
    assert not detected.is_decoder(detected.candidates[0])
    forced = gate(task="causal-lm")
    assert forced.is_decoder(forced.candidates[0]) and forced.task == "classification"
    assert forced.models.table()["architecture"][forced.candidates[0]] == "GPT2Model, decoder"
    result = forced.outcome("token_distribution", forced.pairs()[0])
    assert result.status == "computed", result.reason
    assert result.figure == 1.0 and result.details["mean_kld"] == pytest.approx(0.0, abs=1e-9)


def test_task_causal_lm_refuses_an_encoder_in_one_line(tiny_models, tmp_path: Path) -> None:
    from miniature.core.settings import make_settings
    from miniature.plugin.startup import locate_models

    settings = make_settings(reference=str(tiny_models["reference"]), task="causal-lm", cache_dir=tmp_path)
    with pytest.raises(pytest.UsageError) as raised:
        locate_models(settings)
    (line,) = str(raised.value).splitlines()
    assert line.startswith("--reference: model ") and "an encoder (model_type 'bert'" in line


def test_task_causal_lm_keeps_the_decoder_characteristics_for_base_checkpoints(tmp_path: Path) -> None:
    from miniature.core.registry import BUILTIN, Registry, for_models

    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["GPT2Model"], "model_type": "gpt2"}))
    registry = Registry(BUILTIN)
    assert "token_distribution" not in for_models(registry, [str(folder)]).names
    assert "token_distribution" in for_models(registry, [str(folder)], decoders=True).names


@pytest.mark.slow
def test_a_warm_attack_comparison_runs_no_model_and_another_prompt_attacks_again(
    decoders, tiny_models, tmp_path: Path
) -> None:
    """The attack's outcomes and the transfer of the reference's adversarial texts to the
    candidate are cached; a decoder's answers depend on its prompt, so the key holds it."""
    from miniature.core.gate import Gate
    from miniature.core.settings import make_settings

    def gate(**extra: str) -> Gate:
        settings = make_settings(
            reference=str(decoders["llama"]),
            candidate=[str(decoders["llama-int4"])],
            attack_model=str(tiny_models["attacker"]),
            cache_dir=tmp_path / "cache",
            data_limit=N_ITEMS,
            attack_size=ATTACK_SIZE,
            bootstrap=0,
            **extra,
        )
        return Gate(settings)

    def runs(gate: Gate) -> int:
        return sum(w.forward_calls for w in gate.models.loaded().values())

    first = gate()
    figure = first.compare("adversarial_vulnerability", first.pairs()[0]).figure
    assert runs(first) > 0
    warm = gate()
    assert warm.compare("adversarial_vulnerability", warm.pairs()[0]).figure == figure
    assert runs(warm) == 0
    other = gate(prompt_template="Text: {text}\nAnswer:")
    other.compare("adversarial_vulnerability", other.pairs()[0])
    assert runs(other) > 0
