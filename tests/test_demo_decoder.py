"""The decoder demo (``miniature demo --decoder``): causal-LM distillation, the phenomenon and
table functions on hand-made rows, the request checks, and the quick size end to end (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from miniature.errors import MiniatureError
from miniature.tools import demo_decoder
from miniature.tools.demo_decoder import MODEL_NAMES, phenomenon, phenomenon_lines, tables

REFERENCE = MODEL_NAMES["reference"]


@pytest.mark.slow
def test_distil_retrains_a_layer_dropped_causal_lm_towards_its_reference(tmp_path: Path) -> None:
    """KL on the next-token distributions: the student agrees with the teacher more after."""
    from safetensors.torch import load_file

    from miniature.core.data import builtin_sentiment_data
    from miniature.tools.compress import compress, read_record
    from miniature.tools.testing_decoder import make_tiny_decoders

    llama = make_tiny_decoders(tmp_path)["llama"]
    texts = builtin_sentiment_data(scale=0.1).train.texts
    path = compress(
        llama,
        tmp_path / "kd",
        method="layers",
        keep_layers=[0],
        distil=True,
        distil_texts=texts,
        distil_epochs=4.0,
        distil_learning_rate=3e-3,
        progress=False,
    )
    record = read_record(path)
    measured = record["measured"]["distillation"]
    assert measured["agreement"] == "next-token top choice"
    assert measured["agreement_with_reference_after"] > measured["agreement_with_reference_before"] + 0.05
    assert measured["loss_first_last"][1] < measured["loss_first_last"][0]
    assert record["head"] == "causal-lm" and record["settings"]["distil"]["temperature"] == 2.0
    plain = compress(llama, tmp_path / "plain", method="layers", keep_layers=[0], progress=False)
    trained, dropped = load_file(str(path / "model.safetensors")), load_file(str(plain / "model.safetensors"))
    assert trained.keys() == dropped.keys() and any(not (trained[k] == dropped[k]).all() for k in trained)
    # seeded: the same request elsewhere gives the same weights
    again = compress(
        llama,
        tmp_path / "kd2",
        method="layers",
        keep_layers=[0],
        distil=True,
        distil_texts=texts,
        distil_epochs=4.0,
        distil_learning_rate=3e-3,
        progress=False,
    )
    other = load_file(str(again / "model.safetensors"))
    assert all((trained[k] == other[k]).all() for k in trained)


def row(candidate: str, characteristic: str, figure: float = 0.5, /, **details) -> dict:
    return {
        "reference": REFERENCE,
        "candidate": candidate,
        "characteristic": characteristic,
        "figure": figure,
        "status": "computed",
        "details": details,
    }


def hand_made_rows(int4_kld: float) -> list[dict]:
    int8, int4, layers = MODEL_NAMES["int8"], MODEL_NAMES["int4"], MODEL_NAMES["layers"]
    flips = {"correct_to_incorrect": 3, "incorrect_to_correct": 2, "wrong_to_other_wrong": 0, "flip_rate": 0.05}
    return [
        row(f"{REFERENCE}#2", "prediction_errors", 1.0, reference_accuracy=0.8, candidate_accuracy=0.8),
        row(int8, "prediction_errors", 0.9, reference_accuracy=0.8, candidate_accuracy=0.79, flips=flips),
        row(int4, "prediction_errors", 0.7, reference_accuracy=0.8, candidate_accuracy=0.77, flips=flips),
        row(layers, "prediction_errors", 0.4, reference_accuracy=0.8, candidate_accuracy=0.70, flips=flips),
        row(int8, "data_representation", 0.9),
        row(int4, "data_representation", 0.6),
        row(int8, "token_distribution", 0.98, mean_kld=0.001, same_top_se=0.002, kld_percentiles={"99": 0.01}),
        row(int4, "token_distribution", 0.90, mean_kld=int4_kld, same_top_se=0.004, kld_percentiles={"99": 0.2}),
        row(
            int8,
            "adversarial_vulnerability",
            reference={"attack_success_rate": 0.4, "original_accuracy": 1.0},
            candidate={"attack_success_rate": 0.5, "original_accuracy": 1.0},
        ),
    ]


def test_phenomenon_reads_each_candidates_figures_and_judges_the_goals() -> None:
    int8, int4, layers = MODEL_NAMES["int8"], MODEL_NAMES["int4"], MODEL_NAMES["layers"]
    figures = phenomenon(hand_made_rows(int4_kld=0.05))
    assert figures["accuracy"] == {REFERENCE: 0.8, int8: 0.79, int4: 0.77, layers: 0.70}
    assert figures["same_top"] == {int8: 0.98, int4: 0.90} and figures["knn_jaccard"][int4] == 0.6
    assert figures["flip_rate"][int8] == 0.05
    checks = figures["checks"]
    assert checks["reference_accuracy"]["met"] and checks["int8_same_top"]["met"]
    assert checks["four_bit_kld_over_int8"]["value"] == pytest.approx(50.0) and checks["four_bit_kld_over_int8"]["met"]
    # the quantized copies only: the distilled one is 10 points behind, int4 3
    assert checks["largest_quantized_accuracy_drop"]["value"] == pytest.approx(0.03)
    assert checks["largest_quantized_accuracy_drop"]["met"]
    # 4 bits no further than int8 on the token distribution: the goal is not met, and said so
    close = phenomenon(hand_made_rows(int4_kld=0.0015))
    assert not close["checks"]["four_bit_kld_over_int8"]["met"]
    assert any("NOT MET" in line and "four_bit_kld_over_int8" in line for line in phenomenon_lines(close))
    # no figures at all: nothing is met
    empty = phenomenon([])
    assert not any(check["met"] for check in empty["checks"].values())


def test_tables_show_table_2_the_token_distribution_and_the_flips() -> None:
    text = tables(hand_made_rows(int4_kld=0.05))
    assert "Table 2" in text and f"| {REFERENCE} | {MODEL_NAMES['int4']} | 0.700 | 0.600 | n/a |" in text
    assert f"| {MODEL_NAMES['int4']} | 0.900 ± 0.004 | 0.0500 | 0.2000 |" in text
    assert f"| {MODEL_NAMES['int8']} | 0.790 | 3 | 2 | 0 | 0.050 |" in text
    assert f"{REFERENCE}#2" not in text.split("Token distribution")[1]  # the self-check row is not a candidate


def test_bad_decoder_demo_requests_are_clear(tmp_path: Path) -> None:
    with pytest.raises(MiniatureError, match="unknown demo candidate.*'prune'.*some of reference, int8, int4"):
        demo_decoder.decoder_demo(cache_dir=tmp_path, report_dir=tmp_path, candidates=["prune"], progress=False)
    with pytest.raises(MiniatureError, match="unknown demo size 'huge'"):
        demo_decoder.decoder_demo(cache_dir=tmp_path, report_dir=tmp_path, size="huge", progress=False)


def test_gguf_candidates_are_skipped_in_one_line_without_llama_cpp_or_its_converter(
    capsys, monkeypatch, tmp_path
) -> None:
    """A GGUF candidate needs llama_cpp and llama.cpp's converter; without either it is
    skipped with one line saying what to install or name."""
    import importlib.util

    monkeypatch.delenv("MINIATURE_LLAMA_CPP", raising=False)
    assert demo_decoder.available("layers")
    assert not demo_decoder.available("q4_k_m")
    line = capsys.readouterr().err.strip()
    assert "skipping candidate 'q4_k_m'" in line and len(line.splitlines()) == 1
    if importlib.util.find_spec("llama_cpp") is None:
        assert "pytest-miniature[gguf]" in line
        return
    assert "MINIATURE_LLAMA_CPP" in line
    (tmp_path / "convert_hf_to_gguf.py").write_text("# llama.cpp's converter\n")
    monkeypatch.setenv("MINIATURE_LLAMA_CPP", str(tmp_path))
    assert demo_decoder.available("q4_k_m")


def test_training_texts_are_the_prompt_then_the_label_word() -> None:
    from miniature.core.data import builtin_sentiment_data

    train = builtin_sentiment_data(scale=0.01).train
    texts = demo_decoder.training_texts(train)
    assert texts[0] == f"Review: {train.texts[0]}\nSentiment: " + ("positive" if train.labels[0] else "negative")


@pytest.mark.slow
def test_quick_decoder_demo_end_to_end(tmp_path: Path) -> None:
    """``miniature demo --decoder --quick`` in a fresh cache (cold): every characteristic, the
    reference matches itself, a real classifier, and the figures and tables written."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "miniature.tools.cli",
            "demo",
            "--decoder",
            "--quick",
            "--no-progress",
            "--threads=1",
            "--no-html",
            f"--cache-dir={tmp_path / 'cache'}",
            f"--report-dir={tmp_path / 'reports'}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=1200,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    results = json.loads((tmp_path / "reports" / "latest.json").read_text())["results"]
    assert {r["characteristic"] for r in results} == {
        "prediction_errors",
        "data_representation",
        "data_distribution",
        "adversarial_vulnerability",
        "representation_similarity",
        "token_distribution",
    }
    candidates = {r["candidate"] for r in results if r["reference"] == REFERENCE}
    assert {f"{REFERENCE}#2", MODEL_NAMES["int8"], MODEL_NAMES["int4"], MODEL_NAMES["layers"]} <= candidates
    own = [r for r in results if r["candidate"] == f"{REFERENCE}#2" and r["reference"] == REFERENCE]
    assert own and all(r["figure"] == 1.0 for r in own if r["status"] == "computed"), own
    payload = json.loads((tmp_path / "reports" / "demo.json").read_text())
    figures = payload["phenomenon"]
    assert figures == phenomenon(results)
    assert figures["checks"]["reference_accuracy"]["met"], "the demo's decoder is no classifier"
    assert payload["reference_training"]["holdout_accuracy"] >= 0.7
    top = figures["same_top"]
    assert top[MODEL_NAMES["int8"]] > top[MODEL_NAMES["int4"]]  # 4 bits further than 8
    text = (tmp_path / "reports" / "tables.md").read_text()
    assert "Table 2" in text and "Token distribution" in text and MODEL_NAMES["layers"] in text
    assert "the phenomenon" in completed.stdout


@pytest.mark.parametrize(
    ("argv", "size"),
    [
        (["demo", "--decoder"], "quick"),
        (["demo"], "full"),
        (["demo", "--decoder", "--size", "full"], "full"),
        (["demo", "--quick"], "quick"),
    ],
)
def test_the_decoder_demo_defaults_to_its_300_item_size(monkeypatch, argv: list[str], size: str) -> None:
    """`miniature demo --decoder` runs the size that fits its time budget; the encoder demo
    keeps the whole data."""
    from miniature.tools import cli, demo, demo_decoder

    seen: dict[str, str] = {}

    def fake_run(**kwargs):
        seen["size"] = kwargs["size"]
        raise SystemExit(0)

    monkeypatch.setattr(demo_decoder, "decoder_demo", fake_run)
    monkeypatch.setattr(demo, "demo", fake_run)
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert seen["size"] == size
