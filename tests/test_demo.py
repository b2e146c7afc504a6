"""The embedded default (the demo run with no model given): the demo's pieces, and the quick demo end to end (slow)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from miniature.tools import demo as demo_module
from miniature.core.mlm_head import ATTACK_LM_RECORD, build_attack_model
from miniature.tools.demo import MODEL_NAMES, SIZES, demo, gate_arguments, gate_folder, result_passed
from miniature.errors import MiniatureError

REPOSITORY = Path(__file__).resolve().parent.parent


def test_gate_arguments_are_the_plugin_command_line(tmp_path: Path) -> None:
    models = {name: tmp_path / MODEL_NAMES[name] for name in MODEL_NAMES}
    args = gate_arguments(
        models,
        ["reference", "int8"],
        tmp_path / "lm",
        cache=tmp_path,
        report_dir=tmp_path / "r",
        plan=SIZES["quick"],
        attack_size=None,
        html=False,
    )
    # an empty project of its own: the shipped checks, no ini or checks/ of the current folder
    assert args[:3] == [f"--rootdir={gate_folder(tmp_path)}", "-c", str(gate_folder(tmp_path) / "pytest.ini")]
    assert not any(Path(a).name == "checks" for a in args)
    assert f"--reference={models['reference']}" in args
    assert [a for a in args if a.startswith("--candidate=")] == [
        f"--candidate={models['reference']}",
        f"--candidate={models['int8']}",
    ]
    assert f"--attack-model={tmp_path / 'lm'}" in args and f"--cache-dir={tmp_path / 'gate'}" in args
    assert f"--attack-size={SIZES['quick'].attack_size}" in args
    assert f"--data-limit={SIZES['quick'].data_limit}" in args
    full = gate_arguments(
        models,
        ["int8"],
        tmp_path / "lm",
        cache=tmp_path,
        report_dir=tmp_path,
        plan=SIZES["full"],
        attack_size=7,
        html=True,
    )
    assert "--attack-size=7" in full and not any(a.startswith("--data-limit") for a in full)
    assert f"--html={tmp_path / 'report.html'}" in full and "--self-contained-html" in full


def test_full_size_uses_at_least_1000_items() -> None:
    from miniature.core.data import builtin_sentiment_data

    data = builtin_sentiment_data()
    total = sum(len(data.role(r)) for r in ("train", "holdout", "test", "challenge"))
    assert SIZES["full"].data_limit is None and total >= 1000
    quick = demo_module._demo_data(SIZES["quick"])
    assert len(quick.train) == len(quick.test) == SIZES["quick"].data_limit


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(size="huge"), "unknown demo size 'huge'; fix: pass one of full, quick"),
        (dict(candidates=["int4"]), "unknown demo candidate.*'int4'.*fix: pass --candidates"),
        (dict(attack_size=0), "attack_size=0 must be >= 1; fix: pass --attack-size"),
        (dict(threads=0), "threads=0 must be >= 1; fix: pass --threads"),
    ],
)
def test_bad_demo_requests_are_clear(tmp_path: Path, kwargs, message) -> None:
    with pytest.raises(MiniatureError, match=message):
        demo(cache_dir=tmp_path, report_dir=tmp_path, progress=False, **kwargs)


@pytest.mark.slow
def test_attack_model_fits_only_the_head_and_learns(tmp_path: Path) -> None:
    """The MLM head learns (held-out masked-token accuracy rises); the encoder is untouched."""
    import torch
    from safetensors.torch import load_file

    from miniature.core.data import builtin_sentiment_data
    from miniature.core.models import load_model, packaged_model_dir

    data = builtin_sentiment_data()
    path = build_attack_model(
        tmp_path, data.train.texts[:200], data.holdout.texts[:60], steps=60, rounds=1, progress=False
    )
    record = json.loads((path / ATTACK_LM_RECORD).read_text())
    assert record["eval_after"]["top10"] > record["eval_before"]["top10"] + 0.2
    assert record["eval_after"]["loss"] < record["eval_before"]["loss"]
    wrapper = load_model(str(path), head="masked-lm")
    assert type(wrapper.model).__name__ == "BertForMaskedLM"
    original = load_file(str(packaged_model_dir("all-minilm-l6-v2") / "model.safetensors"))
    state = wrapper.model.state_dict()
    for key, value in original.items():
        name = key if key.startswith("bert.") else f"bert.{key}"
        if name in state:
            assert torch.equal(state[name], value), name
    # cached: the same request returns the same folder without refitting
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    again = build_attack_model(
        tmp_path, data.train.texts[:200], data.holdout.texts[:60], steps=60, rounds=1, progress=False
    )
    assert again == path and (path / "model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_quick_demo_figures_in_unit_range_and_reference_passes_against_itself(tmp_path: Path) -> None:
    """``miniature demo --quick`` end to end, in a fresh cache (cold)."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "miniature.tools.cli",
            "demo",
            "--quick",
            "--no-progress",
            "--threads=1",
            f"--cache-dir={tmp_path / 'cache'}",
            f"--report-dir={tmp_path / 'reports'}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    payload = json.loads((tmp_path / "reports" / "latest.json").read_text())
    results = payload["results"]
    reference = MODEL_NAMES["reference"]
    candidates = {r["candidate"] for r in results if r["reference"] == reference}
    assert candidates == {f"{reference}#2", *(MODEL_NAMES[n] for n in ("int8", "int8-onnx", "prune", "layers"))}
    characteristics = {
        "prediction_errors",
        "data_representation",
        "data_distribution",
        "adversarial_vulnerability",
        "representation_similarity",
    }
    assert {r["characteristic"] for r in results} == characteristics
    for result in results:
        # undefined (NaN) only where no attacked item was right under both models
        assert 0.0 <= result["figure"] <= 1.0 or (math.isnan(result["figure"]) and result["n"] == 0), result
    own = [r for r in results if r["candidate"] == f"{reference}#2" and r["reference"] == reference]
    assert {r["characteristic"] for r in own} == characteristics
    assert all(result_passed(r) and r["figure"] == 1.0 for r in own), own
    errors = next(r for r in own if r["characteristic"] == "prediction_errors")
    assert errors["details"]["reference_accuracy"] >= 0.7, "the demo's fine-tuning did not learn"
    assert "miniature summary" in completed.stdout
    assert f"{reference} vs {reference}#2" in completed.stdout
    # the paper's phenomenon (the demo's goals), as far as 300 items and 20 attacked ones allow (the full size's figures, all
    # four goals met, are in the README): printed, and recorded in demo.json and tables.md
    assert "the paper's phenomenon at small scale" in completed.stdout
    figures = json.loads((tmp_path / "reports" / "demo.json").read_text())["phenomenon"]
    assert figures == demo_module.phenomenon(results)
    assert figures["errors"] >= 15, "the task is too easy: the reference errs on < 5 % of the test set"
    assert figures["auroc"] is not None and figures["auroc"] <= 0.9, "the challenge set is not near"
    accuracy = figures["accuracy"]
    assert accuracy[MODEL_NAMES["int8"]] >= accuracy[reference] - 0.05
    assert accuracy[MODEL_NAMES["int8-onnx"]] >= accuracy[reference] - 0.05  # the deployment artifact
    # re-trained after the drop (distilled), so far from chance (the undistilled one: ~0.5)
    assert accuracy[MODEL_NAMES["layers"]] >= accuracy[reference] - 0.15
    rates = figures["attack_success_rate"]
    assert set(rates) == set(accuracy) and all(r is None or 0 <= r <= 1 for r in rates.values())
    assert any(r is not None and r < 1 for r in rates.values()), "the attack won every time"
    tables = (tmp_path / "reports" / "tables.md").read_text()
    assert "Table 2" in tables and "Table 3" in tables and MODEL_NAMES["layers"] in tables


# -- the phenomenon's ingredients: the demo's data, the distilled candidate, the attack's constraints
def test_builtin_data_is_film_reviews_with_a_near_shifted_challenge_set() -> None:
    from miniature.core.data import builtin_sentiment_data

    data = builtin_sentiment_data()
    assert (len(data.train), len(data.holdout), len(data.test)) == (1000, 300, 500)
    assert len(data.challenge) == 450 and sum(data.challenge_is_ood) == 300
    assert abs(sum(data.test.labels) - 250) <= 10  # balanced
    ood = [t for t, o in zip(data.challenge.texts, data.challenge_is_ood) if o]
    ind = [t for t, o in zip(data.challenge.texts, data.challenge_is_ood) if not o]
    # the same kind of text on another topic: book reviews, not film reviews or news
    assert all(" film" not in t.lower() for t in ood) and sum("book" in t or "novel" in t for t in ood) > 100
    assert not set(ind) & set(data.train.texts)
    # --data-limit keeps both kinds (interleaved), as the quick demo uses it
    assert 0 < sum(data.challenge_is_ood[: SIZES["quick"].data_limit]) < SIZES["quick"].data_limit


@pytest.mark.slow
def test_distil_retrains_the_layer_dropped_model_towards_the_reference(tiny_models, tmp_path: Path) -> None:
    from miniature.tools.compress import CompressionError, compress, read_record
    from miniature.core.data import builtin_sentiment_data

    texts = builtin_sentiment_data(scale=0.1).train.texts
    path = compress(
        tiny_models["reference"],
        tmp_path / "kd",
        method="layers",
        distil=True,
        distil_texts=texts,
        distil_epochs=3.0,
        distil_learning_rate=1e-3,
        progress=False,
    )
    record = read_record(path)
    measured = record["measured"]["distillation"]
    assert measured["agreement_with_reference_after"] >= measured["agreement_with_reference_before"]
    assert record["settings"]["distil"]["texts"] == len(texts)
    plain = compress(tiny_models["reference"], tmp_path / "plain", method="layers", progress=False)
    assert "distil" not in read_record(plain)["settings"]  # not distilled: the record says so
    from safetensors.torch import load_file

    trained, dropped = load_file(str(path / "model.safetensors")), load_file(str(plain / "model.safetensors"))
    assert trained.keys() == dropped.keys()
    assert any(not (trained[k] == dropped[k]).all() for k in trained)  # re-trained
    with pytest.raises(CompressionError, match="--distil applies to --method layers"):
        compress(tiny_models["reference"], tmp_path / "q", method="int8", distil=True, progress=False)
    with pytest.raises(CompressionError, match="without distil.*fix: add --distil"):
        compress(tiny_models["reference"], tmp_path / "q", method="layers", distil_texts=texts, progress=False)


def test_cli_compress_distil_reads_texts_from_a_file(tiny_models, tmp_path: Path, capsys) -> None:
    from miniature.tools.cli import main
    from miniature.tools.compress import read_record
    from miniature.core.data import write_jsonl

    write_jsonl(tmp_path / "texts.jsonl", [{"review": f"the film was {w}"} for w in ("good", "dull", "long")])
    code = main(
        [
            "compress",
            str(tiny_models["reference"]),
            "--method",
            "layers",
            "--distil",
            "--distil-data",
            str(tmp_path / "texts.jsonl"),
            "--text-column",
            "review",
            "--distil-epochs",
            "1",
            "--output-dir",
            str(tmp_path / "kd"),
            "--no-progress",
        ]
    )
    assert code == 0 and capsys.readouterr().out.strip() == str(tmp_path / "kd")
    distil = read_record(tmp_path / "kd")["settings"]["distil"]
    assert distil["texts"] == 3 and distil["epochs"] == 1.0


@pytest.mark.slow
def test_sentiment_filter_rejects_substitutes_of_another_polarity() -> None:
    from miniature.core.attack import SIMILARITY_ENCODER, AttackSettings
    from miniature.core.attack.lexicon import word_polarity

    assert word_polarity("wonderful") == 1 and word_polarity("Terrible") == -1
    assert word_polarity("memorable") == 1 and word_polarity("tedious") == -1  # additions
    assert word_polarity("the") == word_polarity("film") == 0
    settings = AttackSettings()
    assert settings.sentiment_filter and settings.similarity_encoder == SIMILARITY_ENCODER
    assert settings.top_k_words == 3 and settings.max_candidates == 48
    from miniature.core.attack.recipe import SentimentFlipFilter  # prepares TextAttack
    from textattack.shared import AttackedText

    original = AttackedText("the film was wonderful")
    check = SentimentFlipFilter()
    for word, kept in (("terrible", False), ("special", True), ("long", True), ("superb", True)):
        swapped = original.replace_word_at_index(3, word)
        assert check._check_constraint(swapped, original) is kept, word


def test_phenomenon_reads_the_goals_of_issue_16_from_the_results() -> None:
    reference, int8, layers = MODEL_NAMES["reference"], MODEL_NAMES["int8"], MODEL_NAMES["layers"]

    def row(candidate: str, characteristic: str, /, **details) -> dict:
        return {
            "reference": reference,
            "candidate": candidate,
            "characteristic": characteristic,
            "figure": 0.5,
            "details": details,
        }

    results = [
        row(
            f"{reference}#2", "prediction_errors", reference_accuracy=0.92, candidate_accuracy=0.92, reference_errors=40
        ),
        row(int8, "prediction_errors", reference_accuracy=0.92, candidate_accuracy=0.91, reference_errors=40),
        row(layers, "prediction_errors", reference_accuracy=0.92, candidate_accuracy=0.86, reference_errors=40),
        row(
            int8,
            "adversarial_vulnerability",
            reference={"attack_success_rate": 0.4},
            candidate={"attack_success_rate": 0.6},
        ),
        row(
            layers,
            "adversarial_vulnerability",
            reference={"attack_success_rate": 0.4},
            candidate={"attack_success_rate": 0.9},
        ),
        row(int8, "data_distribution", reference_auroc=0.7, candidate_auroc=0.6),
        {
            "reference": int8,
            "candidate": layers,
            "characteristic": "prediction_errors",
            "figure": 0.3,
            "details": {"reference_accuracy": 0.91, "candidate_accuracy": 0.86, "reference_errors": 45},
        },
    ]
    figures = demo_module.phenomenon(results)
    assert figures["accuracy"] == {reference: 0.92, int8: 0.91, layers: 0.86}
    assert figures["attack_success_rate"] == {reference: 0.4, int8: 0.6, layers: 0.9}
    assert figures["errors"] == 40 and figures["auroc"] == 0.7
    checks = figures["checks"]
    assert checks["reference_errors"]["met"] and checks["reference_auroc"]["met"]
    assert checks["reference_attack_success_rate"]["met"]
    assert checks["largest_accuracy_drop"]["value"] == pytest.approx(0.06)
    assert not checks["largest_accuracy_drop"]["met"]  # the 3-layer model is 6 points behind
    lines = demo_module.phenomenon_lines(figures)
    assert any("NOT MET" in line and "largest_accuracy_drop" in line for line in lines)
    tables = demo_module.paper_tables(results)
    assert f"| {reference} | {int8} | 0.500 |" in tables and f"| {layers} | n/a | n/a | n/a | n/a | 0.900 |" in tables
