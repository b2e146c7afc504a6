"""Compression: each method's saved folder loads with load_model and differs from the
reference as intended, measured on the reloaded model; bad requests fail clearly."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from miniature.tools.compress import (
    RECORD_NAME,
    CompressionError,
    compress,
    default_keep_layers,
    encoder_layer_count,
    encoder_linear_weights,
    measured_sparsity,
    read_record,
)
from miniature.core.models import fingerprint_files, load_model

#: torchao is an optional extra (pytest-miniature[quantize]); CI installs it, so these run there
needs_torchao = pytest.mark.skipif(
    importlib.util.find_spec("torchao") is None,
    reason="compress --method int8 needs torchao (pip install 'pytest-miniature[quantize]')",
)

TEXTS = [
    "the film was wonderful and the cast was warm",
    "a dull, tedious script",
    "city council approved the annual budget",
    "I thought the ending was not boring",
    "the soundtrack seemed really clever. Worth the ticket.",
] * 4


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compressed")


def _logits(path: Path) -> np.ndarray:
    return load_model(str(path), head="classification").logits(TEXTS)


def _quantized_weights(model) -> dict:
    """Linear module name -> its torchao-quantized weight (tensor subclasses only)."""
    import torch

    return {
        n: m.weight
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and type(m.weight) not in (torch.Tensor, torch.nn.Parameter)
    }


@needs_torchao
@pytest.mark.parametrize("qscheme", ["per-channel", "per-tensor"])
def test_int8_reloads_as_torchao_int8_linears_close_to_reference(tiny_models, out, qscheme) -> None:
    import torch

    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = compress(
            tiny_models["reference"], out / f"int8-{qscheme}", method="int8", qscheme=qscheme, progress=False
        )
        wrapper = load_model(str(path), head="classification")
    assert not [str(w.message) for w in caught if "deprecat" in str(w.message).lower()]
    reference = load_model(str(tiny_models["reference"]), head="classification").model
    linear_names = [n for n, m in reference.named_modules() if isinstance(m, torch.nn.Linear)]
    quantized = _quantized_weights(wrapper.model)
    assert sorted(quantized) == sorted(linear_names) and len(quantized) >= 4 * 6
    for name, weight in quantized.items():
        assert type(weight).__name__ == "Int8Tensor" and weight.qdata.dtype == torch.int8
        rows = weight.shape[0]
        assert weight.scale.numel() == (rows if qscheme == "per-channel" else 1)
        # what was reloaded is what quantization made (int8 codes within half a step)
        fp32 = reference.get_submodule(name).weight.detach()
        step = weight.scale.reshape(-1, 1) if qscheme == "per-channel" else weight.scale.reshape(())
        assert torch.all((weight.dequantize() - fp32).abs() <= step / 2 + 1e-6)
    a, b = _logits(tiny_models["reference"]), wrapper.logits(TEXTS)
    assert not np.array_equal(a, b)
    assert np.abs(a - b).max() < 0.05 * max(1.0, np.abs(a).max())
    assert "model.safetensors" not in {p.name for p in path.iterdir()}
    record = read_record(path)
    assert record["backend"] == "torchao" and record["settings"]["quantization"] == "int8-dynamic"
    from miniature.core.formats import quantization_of

    assert quantization_of(path) == f"torchao int8-dynamic, {qscheme} (miniature compress)"  # the model table


@needs_torchao
@pytest.mark.parametrize("quantization", ["int8-dynamic", "int8-weight-only", "int4-weight-only"])
def test_torchao_reload_equals_the_in_memory_compressed_model(tiny_models, out, quantization) -> None:
    """Reloaded outputs equal the in-memory compressed model's bit for bit, and the stored
    codes are the reloaded ones (no re-quantization on load)."""
    import torch
    from safetensors.torch import load_file
    from torchao.quantization import quantize_

    from miniature.core.formats import TORCHAO_WEIGHTS, torchao_config

    path = compress(
        tiny_models["reference"],
        out / f"exact-{quantization}",
        method="int8",
        quantization=quantization,
        progress=False,
    )
    in_memory = load_model(str(tiny_models["reference"]), head="classification")
    quantize_(in_memory.model, torchao_config(quantization, "per-channel"))
    reloaded = load_model(str(path), head="classification")
    assert np.array_equal(in_memory.logits(TEXTS), reloaded.logits(TEXTS))
    assert np.array_equal(in_memory.encode(TEXTS), reloaded.encode(TEXTS))
    stored = load_file(str(path / TORCHAO_WEIGHTS))
    weights = _quantized_weights(reloaded.model)
    assert len(weights) == len(read_record(path)["quantized_modules"]) >= 4 * 6
    for name, weight in weights.items():
        assert torch.equal(weight.qdata, stored[f"{name}._weight_qdata"])
    # the encoder alone loads from the same folder too
    encoder = load_model(str(path), head="encoder")
    assert encoder.encode(TEXTS).shape == (len(TEXTS), 64)


def test_no_torch_ao_quantization_left() -> None:
    """torch.ao.quantization (deprecated in torch 2.13) is imported nowhere in miniature."""
    root = Path(__file__).parents[1] / "miniature"
    offenders = [
        f"{p.relative_to(root)}: {line.strip()}"
        for p in sorted(root.rglob("*.py"))
        for line in p.read_text("utf-8").splitlines()
        if line.lstrip().startswith(("from torch.ao", "import torch.ao"))
    ]
    assert offenders == []


def test_an_old_int8_folder_says_to_compress_again(tiny_models, tmp_path) -> None:
    import shutil

    from miniature.errors import ModelReferenceError

    old = tmp_path / "old-int8"
    shutil.copytree(tiny_models["reference"], old)
    (old / RECORD_NAME).write_text(json.dumps({"format": 2, "method": "int8", "head": "classification"}))
    with pytest.raises(ModelReferenceError, match=r"older miniature .*fix: re-run `miniature compress --method int8`"):
        load_model(str(old), head="classification")


@pytest.mark.parametrize(("scope", "sparsity"), [("global", 0.5), ("layer", 0.3)])
def test_prune_reaches_the_requested_sparsity(tiny_models, out, scope, sparsity) -> None:
    path = compress(
        tiny_models["reference"],
        out / f"prune-{scope}",
        method="prune",
        sparsity=sparsity,
        prune_scope=scope,
        progress=False,
    )
    model = load_model(str(path), head="classification").model
    assert measured_sparsity(model) == pytest.approx(sparsity, abs=1e-3)
    reference = load_model(str(tiny_models["reference"]), head="classification").model
    assert measured_sparsity(reference) < 0.01
    weights = encoder_linear_weights(model)
    if scope == "layer":
        for name, weight in weights.items():
            assert float((weight == 0).float().mean()) == pytest.approx(sparsity, abs=0.01), name
    # the smallest-magnitude weights went: every kept weight is at least as large as any pruned one
    kept, pruned = [], []
    for name, weight in weights.items():
        original = reference.get_submodule(f"bert.encoder.{name}").weight.detach().abs()
        if scope == "layer":
            assert original[weight == 0].max() <= original[weight != 0].min()
        kept.append(original[weight != 0])
        pruned.append(original[weight == 0])
    if scope == "global":
        import torch

        assert torch.cat(pruned).max() <= torch.cat(kept).min()
    assert not np.allclose(_logits(path), _logits(tiny_models["reference"]), atol=1e-6)
    record = json.loads((path / RECORD_NAME).read_text())
    assert record["measured"]["encoder_sparsity"] == pytest.approx(sparsity, abs=1e-3)


@pytest.mark.parametrize(
    ("model", "keep", "expected"),
    [
        ("reference", None, [0, 2]),  # BERT, 4 layers: every other, from the first
        ("reference", [3, 1], [1, 3]),
        ("distil", None, [0]),  # DistilBERT, 2 layers
    ],
)
def test_layers_keep_the_chosen_reference_layers(tiny_models, out, model, keep, expected) -> None:
    path = compress(
        tiny_models[model], out / f"layers-{model}-{keep}", method="layers", keep_layers=keep, progress=False
    )
    small = load_model(str(path), head="classification").model
    full = load_model(str(tiny_models[model]), head="classification").model
    assert encoder_layer_count(small) == encoder_layer_count(full) // 2 == len(expected)
    assert small.config.num_hidden_layers == len(expected)
    prefix = "bert.encoder.layer" if model == "reference" else "distilbert.transformer.layer"
    small_state, full_state = small.state_dict(), full.state_dict()
    for new, old in enumerate(expected):
        for key, value in full_state.items():
            if key.startswith(f"{prefix}.{old}."):
                twin = key.replace(f"{prefix}.{old}.", f"{prefix}.{new}.")
                assert np.array_equal(small_state[twin].numpy(), value.numpy()), twin
    others = [k for k in full_state if not k.startswith(prefix)]
    assert all(np.array_equal(small_state[k].numpy(), full_state[k].numpy()) for k in others)
    assert read_record(path)["settings"]["keep_layers"] == expected
    assert _logits(path).shape == (len(TEXTS), 2)


def test_default_keep_layers_is_every_other_from_the_first() -> None:
    assert default_keep_layers(6) == [0, 2, 4]
    assert default_keep_layers(12) == [0, 2, 4, 6, 8, 10]
    assert default_keep_layers(5) == [0, 2, 4]


def test_result_has_tokenizer_and_record_and_is_reused(tiny_models, out) -> None:
    path = compress(tiny_models["reference"], out / "reuse", method="prune", progress=False)
    assert {"tokenizer.json", "vocab.txt", "config.json", RECORD_NAME} <= {p.name for p in path.iterdir()}
    record = read_record(path)
    assert record["method"] == "prune" and record["settings"] == {
        "sparsity": 0.5,
        "prune_scope": "global",
        "format": "pytorch",
    }
    assert record["source"]["fingerprint"] == fingerprint_files(tiny_models["reference"])
    assert {"torch", "transformers", "miniature"} <= set(record["versions"]) and record["created"]
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert compress(tiny_models["reference"], path, method="prune", progress=False) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt
    with pytest.raises(CompressionError, match="already holds another compression.*--overwrite"):
        compress(tiny_models["reference"], path, method="prune", sparsity=0.3, progress=False)
    compress(tiny_models["reference"], path, method="prune", sparsity=0.3, overwrite=True, progress=False)
    assert read_record(path)["settings"]["sparsity"] == 0.3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(method="prune", sparsity=1.0), r"sparsity=1.0 is outside \[0, 1\); fix: pass --sparsity"),
        (dict(method="prune", sparsity=-0.1), r"sparsity=-0.1 is outside \[0, 1\)"),
        (dict(method="distill"), "unknown compression method 'distill'; fix: pass --method .*int8, prune, layers"),
        (
            dict(method="layers", keep_layers=[0, 4]),
            r"layer 4 is out of range.*4 encoder layers \(0..3\); fix: pass --keep-layers",
        ),
        (dict(method="layers", keep_layers=[1, 1]), "repeats a layer; fix:.*--keep-layers"),
        (dict(method="layers", keep_layers=[]), "non-empty list.*--keep-layers"),
        (dict(method="prune", prune_scope="row"), "prune_scope='row' is unknown; fix: pass --prune-scope"),
        (dict(method="int8", qscheme="int4"), "qscheme='int4' is unknown; fix: pass --qscheme"),
    ],
)
def test_bad_requests_name_the_option_and_fix(tiny_models, tmp_path, kwargs, message) -> None:
    with pytest.raises(CompressionError, match=message):
        compress(tiny_models["reference"], tmp_path / "x", progress=False, **kwargs)
    assert not (tmp_path / "x").exists()


@needs_torchao
def test_int8_of_int8_and_missing_reference_are_refused(tiny_models, out, tmp_path) -> None:
    from miniature.errors import ModelReferenceError

    path = compress(tiny_models["reference"], out / "int8-exact", method="int8", progress=False)
    with pytest.raises(CompressionError, match="already int8-quantized; fix"):
        compress(path, tmp_path / "again", method="prune", progress=False)
    with pytest.raises(ModelReferenceError, match="does not exist"):
        compress(tmp_path / "nowhere", tmp_path / "y", method="int8", progress=False)
    with pytest.raises(ModelReferenceError, match="has no masked-lm head; fix"):
        load_model(str(path), head="masked-lm")


def test_cli_compress_prints_the_folder_and_reports_bad_input(tiny_models, tmp_path, capsys) -> None:
    from miniature.tools.cli import main

    target = tmp_path / "cli-layers"
    assert (
        main(
            [
                "compress",
                str(tiny_models["reference"]),
                "--method",
                "layers",
                "--keep-layers",
                "0,3",
                "--output-dir",
                str(target),
                "--no-progress",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == str(target)
    assert read_record(target)["settings"]["keep_layers"] == [0, 3]
    assert (
        main(
            [
                "compress",
                str(tiny_models["reference"]),
                "--method",
                "prune",
                "--sparsity",
                "1.5",
                "--output-dir",
                str(tmp_path / "bad"),
                "--no-progress",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("miniature: error: sparsity=1.5 is outside [0, 1); fix: pass --sparsity")
    assert (
        main(
            [
                "compress",
                str(tiny_models["reference"]),
                "--method",
                "layers",
                "--keep-layers",
                "1,x",
                "--output-dir",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
    assert "not a comma-separated list of layer indices" in capsys.readouterr().err


@needs_torchao
def test_a_torchao_checkpoint_saved_by_transformers_loads_and_is_named(tiny_models, tmp_path) -> None:
    """A checkpoint quantized through transformers' TorchAoConfig (int8 weight-only; saved as
    pickle, the only way transformers 4.57 writes int8) loads with --allow-pickle, runs on the
    CPU like the in-memory model, and the model table names its quantization."""
    import torch
    import transformers
    from torchao.quantization import Int8WeightOnlyConfig

    from miniature.core.formats import quantization_of
    from miniature.errors import ModelReferenceError

    quantized = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(tiny_models["reference"]),
        device_map="cpu",
        quantization_config=transformers.TorchAoConfig(Int8WeightOnlyConfig()),
    )
    folder = tmp_path / "hf-torchao"
    quantized.save_pretrained(str(folder), safe_serialization=False)
    transformers.AutoTokenizer.from_pretrained(str(tiny_models["reference"])).save_pretrained(str(folder))
    with pytest.raises(ModelReferenceError, match="only pickle weights.*--allow-pickle"):
        load_model(str(folder), head="classification")
    wrapper = load_model(str(folder), head="classification", allow_pickle=True)
    query = wrapper.model.bert.encoder.layer[0].attention.self.query.weight
    assert type(query).__name__ == "Int8Tensor"
    in_memory = load_model(str(tiny_models["reference"]), head="classification")
    in_memory.model = quantized.eval()
    assert np.array_equal(wrapper.logits(TEXTS), in_memory.logits(TEXTS))
    assert quantization_of(folder) == "torchao int8 weight-only (transformers quantization_config)"
    assert torch.is_tensor(query.qdata) and query.qdata.dtype == torch.int8
