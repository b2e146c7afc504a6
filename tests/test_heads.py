"""Missing task heads: checks that need the head are skipped with the reason, never run on
weights transformers would make up; representation and distribution run on the encoder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from miniature.core.characteristics.representation import knn_jaccard
from miniature.core.gate import ENCODER, Gate
from miniature.errors import NotApplicable
from miniature.core.models import load_model, missing_head_weights
from miniature.core.settings import make_settings

HEAD_CHECKS = ("prediction_errors", "adversarial_vulnerability")


def save_encoder(source: Path, target: Path) -> Path:
    """The bare encoder (``BertModel``, no head) of a tiny classifier, saved beside its tokenizer."""
    import transformers

    if not target.exists():
        model = transformers.AutoModel.from_pretrained(str(source))
        model.save_pretrained(str(target), safe_serialization=True)
        transformers.AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(target))
    return target


@pytest.fixture(scope="module")
def encoders(tiny_models, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("encoders")
    return {name: save_encoder(tiny_models[name], root / f"encoder-{name}") for name in ("reference", "small")}


def encoder_gate(encoders: dict[str, Path], tmp_path: Path, **overrides) -> Gate:
    values = dict(
        reference=str(encoders["reference"]),
        candidate=[str(encoders["small"])],
        cache_dir=tmp_path / "cache",
        data_limit=40,
        bootstrap=0,
        k=5,
    )
    values.update(overrides)
    return Gate(make_settings(**values))


def test_missing_head_weights_reads_the_headers(tiny_models, encoders) -> None:
    assert missing_head_weights(str(tiny_models["reference"]), "classification") == []
    assert missing_head_weights(str(encoders["reference"]), "classification") == [
        "classifier.weight",
        "classifier.bias",
    ]
    assert missing_head_weights(str(encoders["reference"]), "qa") == ["qa_outputs.weight", "qa_outputs.bias"]
    assert missing_head_weights(str(encoders["reference"]), "encoder") == []
    # DistilBERT's classification head has two layers: both must be there
    assert missing_head_weights(str(tiny_models["distil"]), "classification") == []
    assert missing_head_weights(str(tiny_models["distil"]), "qa") == ["qa_outputs.weight", "qa_outputs.bias"]
    # the MLM decoder tied to the word embeddings is not asked for
    assert missing_head_weights(str(tiny_models["attacker"]), "masked-lm") == []
    assert "cls.predictions.bias" in missing_head_weights(str(tiny_models["reference"]), "masked-lm")


def test_partly_missing_head_is_missing(tiny_models, tmp_path: Path) -> None:
    """A DistilBERT checkpoint with ``classifier`` but no ``pre_classifier`` is not complete."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "partial"
    shutil.copytree(tiny_models["distil"], folder)
    tensors = load_file(str(folder / "model.safetensors"))
    save_file(
        {k: v for k, v in tensors.items() if not k.startswith("pre_classifier.")},
        str(folder / "model.safetensors"),
        metadata={"format": "pt"},
    )
    assert missing_head_weights(str(folder), "classification") == ["pre_classifier.weight", "pre_classifier.bias"]
    assert load_model(str(folder), head="classification").missing_head == [
        "pre_classifier.bias",
        "pre_classifier.weight",
    ]


@pytest.mark.skipif(
    importlib.util.find_spec("torchao") is None,
    reason="compress --method int8 needs torchao (pip install 'pytest-miniature[quantize]')",
)
def test_int8_folder_of_an_encoder_has_no_head(tiny_models, encoders, tmp_path: Path) -> None:
    from miniature.tools.compress import compress

    bare = compress(encoders["reference"], tmp_path / "int8-encoder", method="int8", progress=False)
    full = compress(tiny_models["reference"], tmp_path / "int8-classifier", method="int8", progress=False)
    assert missing_head_weights(str(bare), "classification") == ["classifier.weight", "classifier.bias"]
    assert missing_head_weights(str(full), "classification") == []
    gate = encoder_gate({"reference": bare, "small": encoders["small"]}, tmp_path)
    assert "head" in gate.head_problem("int8-encoder")
    with pytest.raises(NotApplicable, match="'int8-encoder' has no classification head"):
        gate.compare("prediction_errors", gate.pairs()[0])
    assert 0.0 <= gate.compare("data_representation", gate.pairs()[0], stage=ENCODER).figure <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "qa"])
def test_bare_encoders_skip_head_checks_and_compare_encoders(encoders, tmp_path: Path, task: str) -> None:
    gate = encoder_gate(encoders, tmp_path, task=task)
    pair = gate.pairs()[0]
    what = "classification" if task == "classification" else "question-answering"
    weight = "classifier.weight" if task == "classification" else "qa_outputs.weight"
    problem = gate.head_problem("encoder-reference")
    assert problem is not None and "\n" not in problem
    assert f"'encoder-reference' has no {what} head ({weight}" in problem
    assert "--finetune" in problem and "fix:" in problem
    with pytest.raises(NotApplicable, match=f"'encoder-reference' has no {what} head"):
        gate.compare("prediction_errors", pair)
    # the attack needs a classifier's head; on QA it does not apply whatever the head
    reason = "has no classification head" if task == "classification" else "--task classification"
    with pytest.raises(NotApplicable, match=reason):
        gate.compare("adversarial_vulnerability", pair)
    assert gate.stages() == [ENCODER]
    representation = gate.compare("data_representation", pair, stage=ENCODER)
    assert representation.stage == ENCODER and 0.0 <= representation.figure <= 1.0
    distribution = gate.compare("data_distribution", pair)
    assert 0.0 <= distribution.figure <= 1.0
    # loaded as encoders, so no made-up weight was used anywhere
    assert {type(gate.wrapper(name).model).__name__ for name in gate.names} == {"BertModel"}
    if task == "classification":
        texts = gate.data.test.texts
        direct = knn_jaccard(
            load_model(str(encoders["reference"])).encode(texts), load_model(str(encoders["small"])).encode(texts), 5
        ).mean()
        assert representation.figure == pytest.approx(direct, abs=1e-12)


def test_one_headless_candidate_skips_only_its_pairs(tiny_models, encoders, tmp_path: Path) -> None:
    gate = Gate(
        make_settings(
            reference=str(tiny_models["reference"]),
            candidate=[str(encoders["small"]), str(tiny_models["small"])],
            cache_dir=tmp_path / "cache",
            data_limit=40,
            bootstrap=0,
            k=5,
        )
    )
    headless, headed = gate.pairs()[0], gate.pairs()[1]
    assert gate.head_problem("reference") is None and gate.stages() == [None]
    with pytest.raises(NotApplicable, match="'encoder-small' has no classification head"):
        gate.compare("prediction_errors", headless)
    assert 0.0 <= gate.compare("prediction_errors", headed).figure <= 1.0
    assert 0.0 <= gate.compare("data_representation", headless).figure <= 1.0


def test_a_head_for_another_number_of_labels_skips_head_checks(tiny_models, tmp_path: Path) -> None:
    from miniature.tools.testing import make_tiny_model

    three = make_tiny_model(tmp_path / "three-labels", tiny_models.tokenizer_dir, num_labels=3, seed=7)
    gate = Gate(
        make_settings(
            reference=str(tiny_models["reference"]),
            candidate=[str(three)],
            cache_dir=tmp_path / "cache",
            data_limit=40,
            bootstrap=0,
            k=5,
        )
    )
    problem = gate.head_problem("three-labels")
    assert problem is not None and "\n" not in problem
    assert "'three-labels' has a classification head for 3 label(s)" in problem
    assert "the data has 2 distinct label(s)" in problem and "fix:" in problem
    assert gate.head_problem("reference") is None
    for characteristic in HEAD_CHECKS:
        with pytest.raises(NotApplicable, match="3 label"):
            gate.compare(characteristic, gate.pairs()[0])
    assert 0.0 <= gate.compare("data_representation", gate.pairs()[0]).figure <= 1.0


@pytest.mark.slow
def test_gate_run_on_two_bare_encoders_passes_and_shows_the_skips(gate_checks: pytest.Pytester, encoders) -> None:
    result = gate_checks.runpytest(
        f"--reference={encoders['reference']}",
        f"--candidate={encoders['small']}",
        f"--cache-dir={gate_checks.path / 'cache'}",
        "--bootstrap=0",
        "--data-limit=60",
        f"--report-dir={gate_checks.path / 'reports'}",
        "--threshold-representation=0",
        "--threshold-distribution=0",
        "--threshold-similarity=0",
        "-rs",
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.assert_outcomes(passed=3, skipped=2)  # representation, distribution, similarity
    output = result.stdout.str()
    assert "pre-trained-encoder" in output or "pre-trained encoder" in output
    result.stdout.fnmatch_lines(
        [
            "SKIPPED*miniature: model 'encoder-reference' has no classification "
            "head (classifier.weight, classifier.bias would be newly initialised*"
            "fix: pass --finetune*"
        ]
    )
    assert "Traceback" not in output
