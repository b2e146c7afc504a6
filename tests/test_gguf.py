"""GGUF candidates as llama.cpp runs them, and GGUF quants made with llama.cpp's converter and
quantizer: a tiny Llama with a SentencePiece tokenizer, written as f16, Q8_0 and Q4_0 GGUF by
``compress --format gguf``, gated against its PyTorch original from an empty folder; and a
tiny GPT-2 with GPT-2's real byte-level BPE tokenizer (rebuilt from llama.cpp's vocab file),
written as f16 and Q8_0.

They need llama-cpp-python and a llama.cpp source folder (``$MINIATURE_LLAMA_CPP``, for its
converter); without them they skip, except where ``MINIATURE_REQUIRE_GGUF=1`` (CI), where a
missing piece fails them."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from miniature.core import gguf_model
from miniature.errors import ModelReferenceError

#: the float tolerance of an f16 GGUF run by llama.cpp against the fp32 PyTorch model it was
#: converted from (docs/gguf.md): mean KL divergence per token, and the largest difference of
#: a log-probability or of a final hidden state relative to the state's largest entry
F16_MEAN_KLD = 1e-5
F16_LOG_PROB = 1e-2
F16_HIDDEN = 1e-2
N_ITEMS = 40
#: positions where the PyTorch model's two most likely tokens are closer than this (nats) are
#: near-ties the f16 rounding may swap: a tiny random GPT-2 spreads its probability over
#: 50257 tokens, so a few in a hundred positions are such ties (docs/gguf.md)
NEAR_TIE = 1e-3


def _missing() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip install 'pytest-miniature[gguf]')"
    if importlib.util.find_spec("gguf") is None:
        return "the gguf package is not installed (pip install 'pytest-miniature[gguf]')"
    from miniature.tools.gguf_export import GgufExportError, converter_path

    try:
        converter_path()
    except GgufExportError:
        return "no llama.cpp source folder for the converter: set MINIATURE_LLAMA_CPP (see docs/gguf.md)"
    return None


@pytest.fixture(scope="module")
def needs_llama_cpp() -> None:
    missing = _missing()
    if missing and os.environ.get("MINIATURE_REQUIRE_GGUF") == "1":
        pytest.fail(f"MINIATURE_REQUIRE_GGUF=1 but {missing}")
    if missing:
        pytest.skip(missing)


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory: pytest.TempPathFactory, needs_llama_cpp) -> dict[str, Path]:
    """The PyTorch Llama and its f16, Q8_0 and Q4_0 GGUF folders, written by compress."""
    from miniature.tools.compress import compress
    from miniature.tools.testing_decoder import make_tiny_sentencepiece_llama

    root = tmp_path_factory.mktemp("gguf")
    paths = {"llama": make_tiny_sentencepiece_llama(root / "llama")}
    for quantization in ("f16", "q8_0", "q4_0"):
        paths[quantization] = compress(
            paths["llama"], root / f"llama-{quantization}", output_format="gguf", quantization=quantization
        )
    return paths


def log_probs(wrapper, ids: list[int]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        logits = wrapper.model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids))).logits
    return torch.log_softmax(logits[0].double(), -1).numpy()


def hidden(wrapper, ids: list[int]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        out = wrapper.model(
            input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids)), output_hidden_states=True
        )
    return out.hidden_states[-1][0].double().numpy()


# -- end to end ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_gguf_quants_run_by_llama_cpp_are_gated_against_the_pytorch_original(
    gate_checks: pytest.Pytester, ggufs, tiny_models
) -> None:
    where = gate_checks.path
    assert not any(where.iterdir())  # an empty project folder
    result = gate_checks.runpytest(
        f"--reference={ggufs['llama']}",
        f"--candidate={ggufs['f16']}",
        f"--candidate={ggufs['q4_0']}",
        f"--attack-model={tiny_models['attacker']}",
        f"--data-limit={N_ITEMS}",
        "--attack-size=40",
        "--bootstrap=0",
        f"--cache-dir={where / 'cache'}",
        f"--report-dir={where / 'reports'}",
        "--threshold-token-top=0",
        "-p",
        "no:cacheprovider",
    )
    payload = json.loads((where / "reports" / "latest.json").read_text())
    f16, q4 = ggufs["f16"].name, ggufs["q4_0"].name
    results = {(r["candidate"], r["characteristic"]): r for r in payload["results"] if r["reference"] == "llama"}
    characteristics = {
        "prediction_errors",
        "data_representation",
        "data_distribution",
        "adversarial_vulnerability",
        "representation_similarity",
        "token_distribution",
    }
    for candidate in (f16, q4):
        assert {c for n, c in results if n == candidate} == characteristics
        not_computed = {c: r["reason"] for (n, c), r in results.items() if n == candidate and r["status"] != "computed"}
        assert not not_computed, not_computed
    assert payload["models"]["quantization"][f16].startswith("GGUF F16 (")
    assert payload["models"]["quantization"][q4].startswith("GGUF Q4_0 (")
    assert payload["models"]["quantization"][q4].endswith(", run by llama.cpp")
    assert payload["models"]["architecture"][q4] == "llama (GGUF), decoder"
    tokens = results[(f16, "token_distribution")]
    assert tokens["figure"] == 1.0  # the same top token at every position
    assert tokens["details"]["mean_kld"] < F16_MEAN_KLD
    assert results[(q4, "token_distribution")]["details"]["mean_kld"] > tokens["details"]["mean_kld"]
    assert result.ret in (0, 1)  # random tiny weights: whether a check passes is not the point


@pytest.mark.slow
def test_an_f16_gguf_run_by_llama_cpp_agrees_with_pytorch_within_the_tolerance(ggufs) -> None:
    from miniature.core.data import builtin_sentiment_data
    from miniature.core.models import load_model

    reference = load_model(str(ggufs["llama"]), head="encoder")
    candidate = load_model(str(ggufs["f16"]), head="encoder", tokenizer_from=reference_spec(ggufs))
    assert isinstance(candidate.model, gguf_model.GgufModel) and candidate.decoder
    klds, same = [], []
    for text in builtin_sentiment_data().test.head(10).texts:
        ids = reference.tokenizer(text)["input_ids"]
        p, q = log_probs(reference, ids), log_probs(candidate, ids)
        assert np.abs(p - q).max() < F16_LOG_PROB
        klds.extend((np.exp(p) * (p - q)).sum(-1))
        same.extend(p.argmax(-1) == q.argmax(-1))
        h, g = hidden(reference, ids), hidden(candidate, ids)
        assert np.abs(h - g).max() < F16_HIDDEN * np.abs(h).max()  # the final state, after the final norm
    assert np.mean(same) == 1.0 and np.mean(klds) < F16_MEAN_KLD
    # padded batches give each row what it gives alone (right padding, read through the mask)
    texts = builtin_sentiment_data().test.head(6).texts
    alone = np.stack([candidate.encode([t])[0] for t in texts])
    assert np.allclose(candidate.encode(texts), alone, atol=1e-6)
    assert np.allclose(candidate.encode(texts), reference.encode(texts), atol=F16_HIDDEN * np.abs(alone).max())


def agreement(reference, candidate, texts) -> dict[str, float]:
    """How closely ``candidate`` computes ``reference``'s log-probabilities and final hidden
    states on ``texts`` (each text alone, the reference's token ids)."""
    klds, same, ties, log_prob, state = [], [], [], 0.0, 0.0
    for text in texts:
        ids = reference.tokenizer(text)["input_ids"]
        p, q = log_probs(reference, ids), log_probs(candidate, ids)
        log_prob = max(log_prob, float(np.abs(p - q).max()))
        klds.extend((np.exp(p) * (p - q)).sum(-1))
        top_two = np.sort(p, -1)[:, -2:]
        decided = top_two[:, 1] - top_two[:, 0] > NEAR_TIE
        same.extend((p.argmax(-1) == q.argmax(-1))[decided])
        ties.extend(~decided)
        h, g = hidden(reference, ids), hidden(candidate, ids)
        state = max(state, float(np.abs(h - g).max() / np.abs(h).max()))
    return {
        "same_top": float(np.mean(same)),
        "near_ties": float(np.mean(ties)),
        "mean_kld": float(np.mean(klds)),
        "log_prob": log_prob,
        "hidden": state,
    }


def reference_spec(ggufs):
    from miniature.core.models import resolve_model

    return resolve_model(str(ggufs["llama"]))


@pytest.mark.slow
def test_the_transformers_runtime_gates_the_stored_weights_only(ggufs) -> None:
    from miniature.core.model_table import model_table, name_models
    from miniature.core.models import load_model

    reference = load_model(str(ggufs["llama"]), head="encoder")
    by_llama_cpp = load_model(str(ggufs["q8_0"]), tokenizer_from=reference_spec(ggufs))
    dequantized = load_model(str(ggufs["q8_0"]), gguf_runtime="transformers", tokenizer_from=reference_spec(ggufs))
    assert type(dequantized.model).__name__ == "LlamaForCausalLM"
    assert dequantized.fingerprint != by_llama_cpp.fingerprint  # cached apart
    ids = reference.tokenizer("the film was great and the acting was superb")["input_ids"]
    p, q, r = log_probs(reference, ids), log_probs(dequantized, ids), log_probs(by_llama_cpp, ids)
    assert 0 < np.abs(p - q).max() < 0.05  # the Q8_0 weights, dequantized
    assert np.abs(q - r).max() > 0  # llama.cpp's kernels compute otherwise (its activations too)
    table = model_table(name_models([str(ggufs["llama"]), str(ggufs["q8_0"])]), gguf_runtime="transformers")
    assert table["quantization"][ggufs["q8_0"].name].endswith(", dequantized by transformers")


@pytest.mark.slow
def test_the_record_says_which_tensor_types_the_file_holds(ggufs) -> None:
    for quantization, nominal in (("f16", "F16"), ("q8_0", "Q8_0"), ("q4_0", "Q4_0")):
        folder = ggufs[quantization]
        record = json.loads((folder / "miniature_compression.json").read_text())
        written = record["measured"]["gguf"]
        assert record["method"] == "gguf" and record["backend"] == "llama.cpp"
        assert written["file"] == f"model-{quantization}.gguf" and (folder / written["file"]).is_file()
        info = gguf_model.read_info(folder / written["file"])
        assert written["file_type"] == info.file_type == nominal
        assert written["tensor_types"] == info.tensor_types and nominal in info.tensor_types
    # the 64-column output matrix of the tiny model cannot be Q6_K (Q4_0's choice for it): Q8_0
    q4 = json.loads((ggufs["q4_0"] / "miniature_compression.json").read_text())["measured"]["gguf"]
    assert set(q4["tensor_types"]) == {"Q4_0", "Q8_0", "F32"}


@pytest.mark.slow
def test_compress_gguf_reuses_an_identical_earlier_output(ggufs) -> None:
    from miniature.tools.compress import compress

    file = ggufs["q8_0"] / "model-q8_0.gguf"
    before = file.stat().st_mtime_ns
    assert compress(ggufs["llama"], ggufs["q8_0"], output_format="gguf", quantization="q8_0") == ggufs["q8_0"]
    assert file.stat().st_mtime_ns == before


@pytest.mark.slow
def test_a_gguf_of_another_vocabulary_is_refused_with_one_line(
    gate_checks: pytest.Pytester, ggufs, tmp_path: Path
) -> None:
    from miniature.tools.testing_decoder import make_tiny_decoders

    other = make_tiny_decoders(tmp_path / "word-level")["llama"]  # a word-level tokenizer
    result = gate_checks.runpytest(f"--reference={other}", f"--candidate={ggufs['q8_0']}", "-p", "no:cacheprovider")
    lines = [line for line in result.stderr.lines if "GGUF vocabulary" in line]
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert len(lines) == 1 and "--candidate" in lines[0] and "fix:" in lines[0]


# -- refusals that need no llama.cpp -------------------------------------------------------------
def test_a_file_that_is_not_gguf_is_refused_by_name(tmp_path: Path) -> None:
    from miniature.core.models import resolve_model

    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ModelReferenceError, match="is not a GGUF file"):
        resolve_model(str(fake))
    (tmp_path / "other.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelReferenceError, match="several GGUF files"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize("number", [signal.SIGILL, signal.SIGSEGV])
def test_llama_cpp_dying_by_signal_in_the_probe_is_one_line(monkeypatch, tmp_path: Path, number) -> None:
    file = tmp_path / "model.gguf"
    file.write_bytes(b"GGUF")
    dies = f"import os, signal; os.kill(os.getpid(), {int(number)})"
    calls = []

    def command(path: Path) -> list[str]:
        calls.append(path)
        return [sys.executable, "-c", dies]

    monkeypatch.setattr(gguf_model, "probe_command", command)
    with pytest.raises(ModelReferenceError) as caught:
        gguf_model.probe(file, "model.gguf")
    message = str(caught.value)
    assert "\n" not in message and signal.Signals(number).name in message and "model.gguf" in message
    assert "-DGGML_NATIVE=OFF" in message and "CMAKE_ARGS" in message
    # a file that ran is probed once per process
    monkeypatch.setattr(gguf_model, "probe_command", lambda path: [sys.executable, "-c", "print('ok')"])
    gguf_model.probe(file, "model.gguf")
    monkeypatch.setattr(gguf_model, "probe_command", command)
    gguf_model.probe(file, "model.gguf")
    assert len(calls) == 1


def test_compress_gguf_refuses_what_llama_cpp_does_not_convert(tiny_models, tmp_path: Path, monkeypatch) -> None:
    from miniature.tools.compress import CompressionError, compress
    from miniature.tools.gguf_export import ENVIRONMENT

    with pytest.raises(CompressionError, match="writes decoder LMs"):  # an encoder classifier
        compress(tiny_models["reference"], tmp_path / "out", output_format="gguf", quantization="q8_0")
    with pytest.raises(CompressionError, match="not one of llama.cpp's types"):
        compress(tiny_models["reference"], tmp_path / "out", output_format="gguf", quantization="int8-dynamic")
    with pytest.raises(CompressionError, match="not --method int8"):
        compress(tiny_models["reference"], tmp_path / "out", method="int8", output_format="gguf")
    decoder = opt_decoder(tmp_path / "opt")
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    with pytest.raises(CompressionError, match="no llama.cpp source folder was named") as caught:
        compress(decoder, tmp_path / "out", output_format="gguf")
    assert "\n" not in str(caught.value)
    converter = tmp_path / "llama.cpp" / "convert_hf_to_gguf.py"  # a converter registering Llama only
    converter.parent.mkdir()
    converter.write_text('@ModelBase.register("LlamaForCausalLM")\nclass LlamaModel: ...\n')
    with pytest.raises(CompressionError, match="OPTForCausalLM, which llama.cpp's converter"):
        compress(decoder, tmp_path / "out", output_format="gguf", llama_cpp=converter.parent)
    assert not (tmp_path / "out").exists()


def opt_decoder(folder: Path) -> Path:
    """A tiny OPT causal LM (an architecture llama.cpp's converter has no class for)."""
    from transformers import OPTConfig, OPTForCausalLM

    from miniature.tools.testing_decoder import decoder_tokenizer

    tokenizer = decoder_tokenizer(folder)
    config = OPTConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        ffn_dim=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        word_embed_proj_dim=16,
        max_position_embeddings=64,
    )
    OPTForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def test_the_real_converter_knows_llama_and_gpt2(needs_llama_cpp) -> None:
    from miniature.tools.gguf_export import converted_architectures, converter_path

    known = converted_architectures(converter_path())
    assert {"LlamaForCausalLM", "GPT2LMHeadModel", "Qwen2ForCausalLM", "MistralForCausalLM"} <= known
    assert "OPTForCausalLM" not in known


def test_the_command_line_needs_a_method_unless_the_format_is_gguf(tiny_models, tmp_path: Path, capsys) -> None:
    from miniature.tools.cli import main

    assert main(["compress", str(tiny_models["reference"]), "--output-dir", str(tmp_path / "out")]) == 2
    assert "no compression method" in capsys.readouterr().err
    gguf = ["compress", str(tiny_models["reference"]), "--format", "gguf", "--output-dir", str(tmp_path / "out")]
    assert main([*gguf, "--quantization", "q4_k_m"]) == 2  # parsed: refused as an encoder, in one line
    err = capsys.readouterr().err
    assert "writes decoder LMs" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_gguf_reference_without_a_tokenizer_beside_it_is_refused(ggufs, tmp_path: Path) -> None:
    import shutil

    from miniature.core.models import load_model

    alone = tmp_path / "model-f16.gguf"
    shutil.copy(ggufs["f16"] / "model-f16.gguf", alone)
    with pytest.raises(ModelReferenceError, match="no tokenizer files beside it"):
        load_model(str(alone))
    assert load_model(str(ggufs["f16"])).decoder  # the folder compress wrote holds its tokenizer


# -- GPT-2: a byte-level BPE tokenizer ------------------------------------------------------------
@pytest.fixture(scope="module")
def gpt2_ggufs(tmp_path_factory: pytest.TempPathFactory, needs_llama_cpp) -> dict[str, Path]:
    """A tiny PyTorch GPT-2 with GPT-2's tokenizer and its f16 and Q8_0 GGUF folders, written by compress."""
    from miniature.tools.compress import compress
    from miniature.tools.testing_decoder import make_tiny_gpt2

    root = tmp_path_factory.mktemp("gguf-gpt2")
    paths = {"gpt2": make_tiny_gpt2(root / "gpt2")}
    assert "n_ctx" not in json.loads((paths["gpt2"] / "config.json").read_text())  # as transformers saves GPT-2
    for quantization in ("f16", "q8_0"):
        paths[quantization] = compress(
            paths["gpt2"], root / f"gpt2-{quantization}", output_format="gguf", quantization=quantization
        )
    return paths


@pytest.mark.slow
def test_the_gpt2_tokenizer_rebuilt_from_llama_cpps_vocab_gives_its_expected_tokenizations(gpt2_ggufs) -> None:
    from transformers import AutoTokenizer

    from miniature.tools.testing_decoder import gpt2_vocab_file, vocab_test_cases

    tokenizer = AutoTokenizer.from_pretrained(gpt2_ggufs["gpt2"])
    cases = vocab_test_cases(gpt2_vocab_file())
    assert len(cases) > 40 and len(tokenizer) == 50257
    for text, expected in cases:
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == expected, text
    assert tokenizer("hello world")["input_ids"] == [31373, 995]  # GPT-2 adds no BOS


@pytest.mark.slow
def test_a_gpt2_gguf_from_llama_cpps_converter_has_the_reference_vocabulary(gpt2_ggufs) -> None:
    import llama_cpp
    from transformers import AutoTokenizer

    from miniature.tools.testing_decoder import gpt2_vocab_file, vocab_test_cases

    file = gpt2_ggufs["f16"] / "model-f16.gguf"
    info = gguf_model.read_info(file)
    assert info.architecture == "gpt2" and len(info.tokens) == 50257
    assert gguf_model.read_info(file) is info  # parsed once per process (50257 tokens take seconds)
    tokenizer = AutoTokenizer.from_pretrained(gpt2_ggufs["gpt2"])
    assert gguf_model.vocabulary_problem(info.tokens, tokenizer, "f16", "gpt2") is None  # id for id
    assert gguf_model.vocabulary_problem(info.tokens[::-1], tokenizer, "f16", "gpt2") is not None
    # llama.cpp's own tokenizer, reading the file, splits text as GPT-2 does
    llm = llama_cpp.Llama(model_path=str(file), vocab_only=True, verbose=False)
    assert llm.metadata["tokenizer.ggml.pre"] == "gpt-2"  # the converter recognised the tokenizer
    for text, expected in vocab_test_cases(gpt2_vocab_file()):
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == expected, text
    llm.close()


@pytest.mark.slow
def test_a_gpt2_f16_gguf_run_by_llama_cpp_agrees_with_pytorch_within_the_tolerance(gpt2_ggufs) -> None:
    from miniature.core.data import builtin_sentiment_data
    from miniature.core.models import load_model, resolve_model

    reference = load_model(str(gpt2_ggufs["gpt2"]), head="encoder")
    source = resolve_model(str(gpt2_ggufs["gpt2"]))
    f16 = load_model(str(gpt2_ggufs["f16"]), head="encoder", tokenizer_from=source)
    assert isinstance(f16.model, gguf_model.GgufModel) and f16.decoder
    texts = builtin_sentiment_data().test.head(10).texts
    found = agreement(reference, f16, texts)
    assert found["same_top"] == 1.0 and found["near_ties"] < 0.05
    assert found["mean_kld"] < F16_MEAN_KLD and found["log_prob"] < F16_LOG_PROB and found["hidden"] < F16_HIDDEN
    alone = np.stack([f16.encode([t])[0] for t in texts[:6]])
    assert np.allclose(f16.encode(texts[:6]), alone, atol=1e-6)  # padded with EOS: no pad token in GPT-2
    q8 = agreement(reference, load_model(str(gpt2_ggufs["q8_0"]), head="encoder", tokenizer_from=source), texts)
    assert q8["mean_kld"] > found["mean_kld"] and q8["log_prob"] > found["log_prob"]


@pytest.mark.slow
def test_a_gpt2_q8_0_gguf_is_gated_against_the_pytorch_original(
    gate_checks: pytest.Pytester, gpt2_ggufs, tiny_models
) -> None:
    where = gate_checks.path
    result = gate_checks.runpytest(
        f"--reference={gpt2_ggufs['gpt2']}",
        f"--candidate={gpt2_ggufs['q8_0']}",
        "--data-limit=24",
        "--bootstrap=0",
        f"--cache-dir={where / 'cache'}",
        f"--report-dir={where / 'reports'}",
        "--threshold-token-top=0",
        # the attack scores every query over GPT-2's 50257 tokens, minutes for the tiny model;
        # the Llama's gate run above attacks a GGUF run by llama.cpp
        "-k",
        "not adversarial",
        "-p",
        "no:cacheprovider",
    )
    payload = json.loads((where / "reports" / "latest.json").read_text())
    q8 = gpt2_ggufs["q8_0"].name
    results = {r["characteristic"]: r for r in payload["results"] if (r["reference"], r["candidate"]) == ("gpt2", q8)}
    assert set(results) == {
        "prediction_errors",
        "data_representation",
        "data_distribution",
        "representation_similarity",
        "token_distribution",
    }
    not_computed = {c: r["reason"] for c, r in results.items() if r["status"] != "computed"}
    assert not not_computed, not_computed
    assert payload["models"]["architecture"][q8] == "gpt2 (GGUF), decoder"
    assert payload["models"]["quantization"][q8].startswith("GGUF Q8_0 (")
    assert payload["models"]["quantization"][q8].endswith(", run by llama.cpp")
    # Q8_0 changes the tiny GPT-2's next-token distribution a little (mean KLD about 5e-7); a
    # mis-converted tensor (GPT-2's transposed Conv1D weights) would change it by orders more
    assert 0 < results["token_distribution"]["details"]["mean_kld"] < 1e-4
    assert result.ret in (0, 1)  # random tiny weights: whether a check passes is not the point


@pytest.mark.slow
def test_a_bpe_tokenizer_the_converter_does_not_know_is_refused_in_one_line(needs_llama_cpp, tmp_path: Path) -> None:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    from miniature.core.builtin_data import sentiment_reviews
    from miniature.tools.compress import CompressionError, compress
    from miniature.tools.testing_decoder import make_tiny_gpt2

    trained = ByteLevelBPETokenizer()  # a team's own byte-level BPE, trained offline
    trained.train_from_iterator(
        [r.text for r in sentiment_reviews(200, seed=3)], vocab_size=400, special_tokens=["<|endoftext|>"]
    )
    trained.save_model(str(tmp_path))
    tokenizer = GPT2TokenizerFast(vocab_file=str(tmp_path / "vocab.json"), merges_file=str(tmp_path / "merges.txt"))
    model = make_tiny_gpt2(tmp_path / "own-gpt2", tokenizer=tokenizer)
    with pytest.raises(CompressionError) as caught:
        compress(model, tmp_path / "out", output_format="gguf", quantization="q8_0")
    message = str(caught.value)
    assert "\n" not in message and "'own-gpt2'" in message
    assert "does not recognise its BPE tokenizer (chkhsh " in message
    assert "fix: convert the model with the published tokenizer" in message and "--llama-cpp" in message
    assert not (tmp_path / "out").exists()


def test_a_gpt2_config_gets_the_context_length_key_the_converter_reads(tmp_path: Path) -> None:
    from miniature.tools.gguf_export import converter_input

    source = tmp_path / "gpt2"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_positions": 256}))
    (source / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "scratch").mkdir()
    given = converter_input(source, tmp_path / "scratch")
    assert given != source and json.loads((given / "config.json").read_text())["n_ctx"] == 256
    assert (given / "model.safetensors").read_bytes() == b"weights"
    assert "n_ctx" not in json.loads((source / "config.json").read_text())  # the model itself is untouched
    (source / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_positions": 256, "n_ctx": 128}))
    assert converter_input(source, tmp_path / "scratch") == source
    (source / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 256}))
    assert converter_input(source, tmp_path / "scratch") == source
