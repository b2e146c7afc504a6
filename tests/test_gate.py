"""The gate engine end to end on tiny models: figures equal a direct re-computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from miniature.core.characteristics.representation import knn_jaccard
from miniature.core.gate import AFTER, BEFORE, Gate
from miniature.core.models import load_model
from miniature.core.settings import make_settings


@pytest.mark.slow
def test_representation_before_and_after_fine_tuning_match_direct_computation(tiny_models, tmp_path: Path) -> None:
    settings = make_settings(
        reference=str(tiny_models["reference"]),
        candidate=[str(tiny_models["small"])],
        reference_base=str(tiny_models["reinit"]),
        candidate_base=[str(tiny_models["distil"])],
        cache_dir=tmp_path,
        data_limit=80,
        bootstrap=0,
        k=5,
    )
    gate = Gate(settings)
    assert gate.stages() == [BEFORE, AFTER]
    pair = gate.pairs()[0]
    texts = gate.data.test.texts
    expected = {
        BEFORE: knn_jaccard(
            load_model(str(tiny_models["reinit"])).encode(texts),
            load_model(str(tiny_models["distil"])).encode(texts),
            5,
        ).mean(),
        AFTER: knn_jaccard(
            load_model(str(tiny_models["reference"]), head="classification").encode(texts),
            load_model(str(tiny_models["small"]), head="classification").encode(texts),
            5,
        ).mean(),
    }
    for stage, value in expected.items():
        result = gate.compare("data_representation", pair, stage=stage)
        assert result.stage == stage and result.figure == pytest.approx(value, abs=1e-12)
    assert expected[BEFORE] != expected[AFTER]


@pytest.mark.slow
def test_prediction_errors_match_direct_argmax(tiny_models, tmp_path: Path) -> None:
    gate = Gate(
        make_settings(
            reference=str(tiny_models["reference"]),
            candidate=[str(tiny_models["small"])],
            cache_dir=tmp_path,
            data_limit=120,
            bootstrap=0,
        )
    )
    result = gate.compare("prediction_errors", gate.pairs()[0])
    labels = np.asarray(gate.data.test.labels)
    wrong = [
        load_model(str(tiny_models[n]), head="classification").logits(gate.data.test.texts).argmax(1) != labels
        for n in ("reference", "small")
    ]
    union = (wrong[0] | wrong[1]).sum()
    assert result.figure == pytest.approx((wrong[0] & wrong[1]).sum() / union if union else 1.0)
    assert result.details["reference_accuracy"] == pytest.approx(1 - wrong[0].mean())


def test_noise_floor_of_a_reloaded_reference_is_one(tiny_models, tmp_path: Path) -> None:
    gate = Gate(
        make_settings(
            reference=str(tiny_models["reference"]),
            candidate=[str(tiny_models["reinit"])],
            cache_dir=tmp_path,
            data_limit=80,
            bootstrap=0,
            noise_floor=True,
        )
    )
    result = gate.compare("data_representation", gate.pairs()[0])
    assert result.noise_floor == 1.0 and result.figure < 1.0
    assert "self-agreement 1" in result.summary()


def test_mismatched_label_maps_fail_the_errors_check_clearly(tiny_models, tmp_path: Path) -> None:
    import json
    import shutil

    from miniature.errors import MiniatureError

    other = tmp_path / "renamed"
    shutil.copytree(tiny_models["small"], other)
    config = json.loads((other / "config.json").read_text())
    config["id2label"] = {"0": "POSITIVE", "1": "NEGATIVE"}
    config["label2id"] = {"POSITIVE": 0, "NEGATIVE": 1}
    (other / "config.json").write_text(json.dumps(config))
    reference = tmp_path / "named"
    shutil.copytree(tiny_models["reference"], reference)
    config = json.loads((reference / "config.json").read_text())
    config["id2label"] = {"0": "NEGATIVE", "1": "POSITIVE"}
    config["label2id"] = {"NEGATIVE": 0, "POSITIVE": 1}
    (reference / "config.json").write_text(json.dumps(config))
    gate = Gate(
        make_settings(
            reference=str(reference), candidate=[str(other)], cache_dir=tmp_path / "cache", data_limit=50, bootstrap=0
        )
    )
    with pytest.raises(MiniatureError, match="label maps differ.*--label-map"):
        gate.compare("prediction_errors", gate.pairs()[0])
    mapped = Gate(
        make_settings(
            reference=str(reference),
            candidate=[str(other)],
            cache_dir=tmp_path / "cache",
            data_limit=50,
            bootstrap=0,
            label_map="NEGATIVE=0,POSITIVE=1",
        )
    )
    result = mapped.compare("prediction_errors", mapped.pairs()[0])
    assert 0.0 <= result.figure <= 1.0


@pytest.mark.slow
def test_qa_task_errors_follow_squad_exact_match(tiny_models, tmp_path: Path) -> None:
    from miniature.core.tasks.qa import predict_qa, qa_correct
    from miniature.tools.testing import make_tiny_model

    paths = [
        make_tiny_model(
            tmp_path / f"qa{seed}", tiny_models.tokenizer_dir, layers=2, hidden=32, heads=2, seed=seed, head="qa"
        )
        for seed in (5, 6)
    ]
    gate = Gate(
        make_settings(
            reference=str(paths[0]),
            candidate=[str(paths[1])],
            task="qa",
            cache_dir=tmp_path / "cache",
            data_limit=40,
            bootstrap=0,
            max_length=64,
        )
    )
    test = gate.data.test
    assert test.examples is not None and test.pairs == [e.context for e in test.examples]
    wrong = [
        ~qa_correct(
            predict_qa(load_model(str(p), head="qa", max_length=64), test.examples, doc_stride=21), test.examples
        )
        for p in paths
    ]
    assert [(~gate.correct(name)).tolist() for name in gate.names] == [w.tolist() for w in wrong]
    from miniature.errors import NotApplicable

    if wrong[0].all() and wrong[1].all():  # untrained QA heads: both error sets are everything
        with pytest.raises(NotApplicable, match="erred on every one of the 40 test items.*chance 1"):
            gate.compare("prediction_errors", gate.pairs()[0])
    else:
        result = gate.compare("prediction_errors", gate.pairs()[0])
        assert result.figure == pytest.approx((wrong[0] & wrong[1]).sum() / (wrong[0] | wrong[1]).sum())
    representation = gate.compare("data_representation", gate.pairs()[0])
    assert 0.0 <= representation.figure < 1.0
    with pytest.raises(NotApplicable, match="--task classification"):
        gate.compare("adversarial_vulnerability", gate.pairs()[0])
