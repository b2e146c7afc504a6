"""ONNX candidates: an fp32 export of a model gives the PyTorch model's per-item outputs
within float tolerance on all four characteristics; an int8 export runs all four; a bare
feature-extraction export runs representation and distribution and skips the rest with the
missing output and the export option; ``compress --format onnx`` writes what the loader reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="ONNX candidates need onnxruntime (pip install 'pytest-miniature[onnx]')")
pytest.importorskip("onnx", reason="exporting to ONNX needs onnx (pip install 'pytest-miniature[onnx]')")

from miniature.core.characteristics.representation import knn_jaccard  # noqa: E402
from miniature.core.neighbours import normalized_float32  # noqa: E402
from miniature.core.gate import Gate  # noqa: E402
from miniature.core.models import load_model, missing_head_weights  # noqa: E402
from miniature.core.settings import make_settings  # noqa: E402
from miniature.errors import NotApplicable  # noqa: E402

CHARACTERISTICS = ("prediction_errors", "data_representation", "data_distribution", "adversarial_vulnerability")
#: The documented float tolerance of an fp32 export (README): per-item outputs within 1e-4;
#: a kNN figure may move only at near-ties, neighbours whose cosine similarities differ by
#: less than NEAR_TIE (float32 resolution).
TOLERANCE = 1e-4
NEAR_TIE = 1e-6


def export(source: Path, target: Path, **options) -> Path:
    import transformers

    from miniature.tools.export import export_onnx

    if not target.exists():
        model = transformers.AutoModelForSequenceClassification.from_pretrained(str(source))
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(source))
        export_onnx(model, tokenizer, target, head="classification", **options)
    return target


@pytest.fixture(scope="module")
def exports(tiny_models, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx")
    return {
        "cache": root / "cache",  # shared: the reference's outputs and attack computed once
        "fp32": export(tiny_models["reference"], root / "reference-onnx"),
        "int8": export(tiny_models["reference"], root / "reference-onnx-int8", int8=True),
        "features": export(tiny_models["reference"], root / "reference-features", features_only=True),
    }


def gate_of(tiny_models, candidates: list[Path], cache: Path) -> Gate:
    return Gate(
        make_settings(
            reference=str(tiny_models["reference"]),
            candidate=[str(c) for c in candidates],
            attack_model=str(tiny_models["attacker"]),
            cache_dir=cache,
            data_limit=60,
            attack_size=30,
            bootstrap=0,
            k=5,
            seed=3,
        )
    )


@pytest.mark.slow
def test_fp32_export_equals_pytorch_on_every_per_item_output(tiny_models, exports, tmp_path) -> None:
    gate = gate_of(tiny_models, [exports["fp32"]], exports["cache"])
    reference, exported = gate.names[0], gate.names[1]
    assert type(gate.wrapper(exported).model).__name__ == "OnnxModel"
    for role in ("test", "train", "holdout", "challenge"):  # representation, distribution
        ours, theirs = gate.outputs(reference, role), gate.outputs(exported, role)
        assert np.abs(ours["embeddings"] - theirs["embeddings"]).max() < TOLERANCE, role
        assert np.abs(ours["logits"] - theirs["logits"]).max() < TOLERANCE, role
    assert np.array_equal(gate.correct(reference), gate.correct(exported))  # prediction errors
    keys = ("result", "original_prediction", "perturbed_text", "perturbed_prediction")
    attacked = [[{k: o[k] for k in keys} for o in gate.attack_outcomes(name)] for name in (reference, exported)]
    assert attacked[0] == attacked[1] and len(attacked[0]) == 30  # adversarial vulnerability
    pair = next(p for p in gate.pairs() if p.candidate == exported)
    figures = {c: gate.compare(c, pair) for c in CHARACTERISTICS}
    for characteristic in ("prediction_errors", "data_distribution", "adversarial_vulnerability"):
        assert figures[characteristic].figure == 1.0, characteristic
    # representation: 1.0 but for near-ties (the tiny random models' neighbours are
    # nearly equidistant: a median gap of ~4e-7 between the 5th and 6th neighbour)
    assert figures["data_representation"].figure >= 0.95
    ours, theirs = (gate.outputs(n, "test")["embeddings"] for n in (reference, exported))
    k = figures["data_representation"].k
    moved = np.where(knn_jaccard(ours, theirs, k) < 1)[0]
    vectors = normalized_float32(ours, "embeddings")
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    ranked = -np.sort(-similarity, axis=1)
    assert np.all(ranked[moved, k - 1] - ranked[moved, k] < NEAR_TIE), moved


@pytest.mark.slow
def test_int8_export_runs_all_four_and_differs(tiny_models, exports, tmp_path) -> None:
    gate = gate_of(tiny_models, [exports["int8"]], exports["cache"])
    exported = gate.names[1]
    assert gate.wrapper(exported).missing_head == []
    pair = next(p for p in gate.pairs() if p.candidate == exported)
    figures = {c: gate.compare(c, pair).figure for c in CHARACTERISTICS}
    assert all(0.0 <= f <= 1.0 for f in figures.values()), figures
    logits = gate.outputs(exported, "test")["logits"], gate.outputs(gate.names[0], "test")["logits"]
    assert 0 < np.abs(logits[0] - logits[1]).max() < 0.05  # quantized: close, not equal


def test_feature_extraction_export_skips_the_head_checks_with_the_fix(tiny_models, exports, tmp_path) -> None:
    assert missing_head_weights(str(exports["features"]), "classification") == ["logits"]
    gate = gate_of(tiny_models, [exports["features"]], exports["cache"])
    exported = gate.names[1]
    pair = next(p for p in gate.pairs() if p.candidate == exported)
    for characteristic in ("prediction_errors", "adversarial_vulnerability"):
        with pytest.raises(NotApplicable) as skipped:
            gate.compare(characteristic, pair)
        line = str(skipped.value)
        assert "\n" not in line and "ONNX export without the 'logits' output of a classification" in line
        assert "--task text-classification" in line
    for characteristic in ("data_representation", "data_distribution"):
        assert 0.0 <= gate.compare(characteristic, pair).figure <= 1.0


def test_logits_only_export_skips_the_vector_checks(tiny_models, exports, tmp_path) -> None:
    import onnx

    folder = tmp_path / "logits-only"
    folder.mkdir()
    for file in exports["fp32"].iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    graph = onnx.load(str(folder / "model.onnx"))
    kept = [o for o in graph.graph.output if o.name == "logits"]
    del graph.graph.output[:]
    graph.graph.output.extend(kept)
    onnx.save(graph, str(folder / "model.onnx"))
    gate = gate_of(tiny_models, [folder], exports["cache"])
    pair = next(p for p in gate.pairs() if p.candidate == gate.names[1])
    assert gate.compare("prediction_errors", pair).figure == pytest.approx(1.0)
    with pytest.raises(NotApplicable, match="without the 'last_hidden_state' output.*; fix: export"):
        gate.compare("data_representation", pair)


@pytest.mark.slow
def test_compress_format_onnx_writes_a_loadable_int8_export(tiny_models, tmp_path) -> None:
    from miniature.core.formats import quantization_of
    from miniature.tools.compress import CompressionError, compress, read_record

    path = compress(
        tiny_models["reference"], tmp_path / "int8-onnx", method="int8", output_format="onnx", progress=False
    )
    names = {p.name for p in path.iterdir()}
    assert "model.onnx" in names and not any(n.endswith(".safetensors") for n in names)
    record = read_record(path)
    assert (
        record["settings"]["format"] == "onnx"
        and record["measured"]["onnx"]["quantization"]["method"] == "quantize_dynamic"
    )
    assert quantization_of(path) == "ONNX int8 (onnxruntime dynamic), run by onnxruntime"
    wrapper = load_model(str(path), head="classification")
    texts = ["a warm and clever film", "a dull script"]
    assert wrapper.logits(texts).shape == (2, 2)
    from miniature.tools.cli import main

    plain = tmp_path / "ref-onnx"
    assert (
        main(
            [
                "compress",
                str(tiny_models["reference"]),
                "--method",
                "none",
                "--format",
                "onnx",
                "--output-dir",
                str(plain),
                "--no-progress",
            ]
        )
        == 0
    )
    assert quantization_of(plain) == "ONNX fp32, run by onnxruntime"
    reference = load_model(str(tiny_models["reference"]), head="classification")
    assert (
        np.abs(load_model(str(plain), head="classification").logits(texts) - reference.logits(texts)).max() < TOLERANCE
    )
    with pytest.raises(CompressionError, match="is an ONNX export; fix"):
        compress(plain, tmp_path / "again", method="prune", progress=False)
    with pytest.raises(CompressionError, match="onnxruntime's dynamic int8 only.*fix"):
        compress(
            tiny_models["reference"],
            tmp_path / "x",
            method="int8",
            quantization="int4-weight-only",
            output_format="onnx",
            progress=False,
        )
    with pytest.raises(CompressionError, match="--method none .*fix: add --format onnx"):
        compress(tiny_models["reference"], tmp_path / "y", method="none", progress=False)


@pytest.mark.slow
def test_pytest_gate_on_onnx_candidates(gate_checks: pytest.Pytester, tiny_models, exports) -> None:
    """`pytest --reference=REF --candidate=REF_onnx` passes; the feature-extraction export's
    head checks are skipped with the reason; the report's model table names the formats."""
    import json

    from miniature.core import settings as opt

    result = gate_checks.runpytest(
        f"{opt.REFERENCE}={tiny_models['reference']}",
        f"{opt.CANDIDATE}={exports['fp32']}",
        f"{opt.CANDIDATE}={exports['features']}",
        f"{opt.ATTACK_MODEL}={tiny_models['attacker']}",
        f"{opt.CACHE_DIR}={exports['cache']}",
        f"{opt.REPORT_DIR}={gate_checks.path / 'reports'}",
        f"{opt.DATA_LIMIT}=60",
        f"{opt.ATTACK_SIZE}=30",
        f"{opt.BOOTSTRAP}=0",
        f"{opt.K}=5",
        f"{opt.SEED}=3",
        "-rs",
        "-v",
    )
    out = result.stdout.str()
    reports = [r for r in result.reprec.getreports("pytest_runtest_logreport") if r.when == "call"]
    fp32 = {r.nodeid.split("::")[-1]: r.outcome for r in reports if "reference-vs-reference-onnx" in r.nodeid}
    assert len(fp32) == 5 and set(fp32.values()) == {"passed"}, fp32
    skipped = [line for line in out.splitlines() if line.startswith("SKIPPED:")]  # the summary's
    assert len(skipped) == 4 and all(
        "reference-features" in s and "without the 'logits' output" in s and "fix: export it with the head" in s
        for s in skipped
    ), skipped
    features = {
        r.nodeid.split("::")[-1]
        for r in reports
        if "reference-vs-reference-features" in r.nodeid and r.outcome != "skipped"
    }
    assert {f.split("[")[0] for f in features} == {
        "test_data_representation",
        "test_data_distribution",
        "test_representation_similarity",
    }, features
    payload = json.loads((gate_checks.path / "reports" / "latest.json").read_text())
    assert payload["models"]["quantization"] == {
        "reference-onnx": "ONNX fp32, run by onnxruntime",
        "reference-features": "ONNX fp32, run by onnxruntime",
    }


def test_several_onnx_files_without_model_onnx_are_refused_by_name(exports, tmp_path) -> None:
    from miniature.errors import ModelReferenceError

    folder = tmp_path / "two-exports"
    folder.mkdir()
    for file in exports["fp32"].iterdir():
        name = "model_a.onnx" if file.name == "model.onnx" else file.name
        (folder / name).write_bytes(file.read_bytes())
    (folder / "model_b.onnx").write_bytes((folder / "model_a.onnx").read_bytes())
    with pytest.raises(ModelReferenceError, match=r"several ONNX files \(model_a.onnx, model_b.onnx\).*fix: keep one"):
        load_model(str(folder), head="classification")
    (folder / "model_b.onnx").unlink()  # optimum's model_quantized.onnx alone loads as the model
    assert load_model(str(folder), head="classification").missing_head == []
