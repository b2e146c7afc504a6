"""The gate's parts, each built and tested alone: the run's data, the model store, the output
store; and a characteristic measured through a plain object that only looks like the gate."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from miniature.core.cache import OutputCache
from miniature.core.characteristics import representation
from miniature.core.characteristics.base import ComparisonResult, Measurement, Pair, judge
from miniature.core.data import TaskData, TextData
from miniature.core.loading import ModelStore
from miniature.core.models import load_model
from miniature.core.outputs import OutputStore
from miniature.core.run_data import RunData
from miniature.core.settings import make_settings


def _store(tiny_models, tmp_path: Path, **options) -> tuple[ModelStore, OutputStore]:
    settings = make_settings(
        reference=str(tiny_models["reference"]), cache_dir=tmp_path, data_limit=40, bootstrap=0, **options
    )
    cache = OutputCache(tmp_path)
    models = ModelStore(settings, cache, RunData(settings))
    return models, OutputStore(settings, models, cache)


def test_run_data_loads_the_built_in_sets_once_and_says_what_lacks_labels() -> None:
    data = RunData(make_settings(reference="x", data_limit=12))
    sets = data.sets
    assert sets is data.sets  # loaded once
    assert [len(sets.role(role)) for role in ("train", "holdout", "test", "challenge")] == [12] * 4
    assert data.token_texts() == (list(sets.test.texts), sets.test.source)
    given = TaskData(
        train=TextData("t.txt", ["a"]),
        holdout=TextData("h", ["b"]),
        test=TextData("x.txt", ["c"]),
        challenge=TextData("c", ["d"]),
    )
    line = RunData(make_settings(reference="x"), given).unlabelled("test", "the attack needs labels")
    assert line.startswith("the test data 'x.txt' is a .txt file, which has no labels, and the attack")
    assert "fix: pass --test-data as a .jsonl/.csv file" in line


def test_the_model_store_names_each_model_once_and_loads_it_once(tiny_models, tmp_path: Path) -> None:
    models, _ = _store(tiny_models, tmp_path, candidate=[str(tiny_models["reference"]), str(tiny_models["small"])])
    assert models.names == ["reference", "reference#2", "small"]
    assert (models.reference, models.candidates) == ("reference", ["reference#2", "small"])
    assert models.specs["reference"].source == models.specs["reference#2"].source
    assert not models.is_decoder("small") and models.head_of("small") == "classification"
    assert models.head_problem("small") is None
    first = models.wrapper("small")
    assert models.wrapper("small") is first and list(models.loaded()) == [("small", "")]
    table = models.table()
    assert table["order"] == models.names and table["reference"] == "reference"
    assert table["architecture"]["small"].endswith(", encoder")


def test_the_output_store_computes_per_item_outputs_once_through_the_cache(tiny_models, tmp_path: Path) -> None:
    models, outputs = _store(tiny_models, tmp_path, candidate=[str(tiny_models["small"])])
    texts = models.data.test.texts
    arrays = outputs.outputs("small", "test")
    direct = load_model(str(tiny_models["small"]), head="classification")
    assert np.allclose(arrays["embeddings"], direct.encode(texts), atol=1e-5)
    calls = models.wrapper("small").forward_calls
    again = OutputStore(models.settings, models, models.cache).outputs("small", "test")  # a new store: read back
    assert models.wrapper("small").forward_calls == calls
    assert np.array_equal(again["logits"], arrays["logits"])
    assert np.array_equal(
        outputs.correct("small"), arrays["logits"].argmax(axis=1) == np.asarray(models.data.test.labels)
    )


def test_a_characteristic_measures_through_any_object_that_looks_like_the_gate() -> None:
    rng = np.random.default_rng(0)
    vectors = {"a": rng.normal(size=(40, 8)), "b": rng.normal(size=(40, 8))}
    texts = [f"item {i}" for i in range(40)]
    view = SimpleNamespace(
        data=SimpleNamespace(test=TextData("made here", texts)),
        settings=make_settings(reference="a", k=5, k_sweep=[1, 5], bootstrap=0),
        outputs=lambda name, role, stage=None: {"embeddings": vectors[name]},
    )
    measured = representation.compare_in_gate(view, Pair("a", "b", True), None)
    assert isinstance(measured, Measurement) and not isinstance(measured, ComparisonResult)
    expected = representation.knn_jaccard(vectors["a"], vectors["b"], 5).mean()
    assert measured.figure == pytest.approx(expected, abs=1e-12) and measured.n == 40
    # the verdict is the judge's: the same measurement passes or fails by the threshold alone
    verdicts = [
        judge(measured, characteristic="data_representation", reference="a", candidate="b", threshold=threshold).verdict
        for threshold in (measured.figure, measured.figure + 0.01)
    ]
    assert verdicts == ["PASS", "FAIL"]
