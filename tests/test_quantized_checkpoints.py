"""Quantized decoder checkpoints: the backend and scheme named from config.json, and the
one-line refusal of those that cannot run on this build (tests/data/quantized_configs holds
config.json files written by transformers' save_pretrained for tiny Llamas quantized on the CPU)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from miniature.core import quantized_checkpoints as qc
from miniature.core.quantized_checkpoints import (
    check_quantized_checkpoint,
    quantization_of,
)
from miniature.errors import ModelReferenceError

SAVED = Path(__file__).parent / "data" / "quantized_configs"


def saved(name: str) -> dict:
    return json.loads((SAVED / f"{name}.json").read_text())


def torchao(type_name: str, **data) -> dict:
    return {
        "quantization_config": {
            "quant_method": "torchao",
            "quant_type": {"default": {"_type": type_name, "_data": data, "_version": 2}},
            "quant_type_kwargs": {},
        }
    }


@pytest.fixture
def installed(monkeypatch):
    """Pretend exactly the given modules are installed (find_spec of anything else is None)."""

    def pretend(*modules: str) -> None:
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name in modules else None)

    return pretend


@pytest.fixture
def no_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("torchao_int8-weight-only", "torchao int8 weight-only"),
        ("torchao_intx-int4-weight-only", "torchao int4 weight-only"),
        ("bitsandbytes_4bit-nf4", "bitsandbytes 4-bit nf4"),
        ("bitsandbytes_8bit", "bitsandbytes 8-bit"),
        ("hqq_4bit-g32", "HQQ 4-bit"),
        ("gptq-packed", "GPTQ 4-bit"),
    ],
)
def test_names_saved_configs(name, expected):
    assert quantization_of(saved(name)) == expected


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"model_type": "llama"}, None),
        ({"quantization_config": {}}, None),
        (torchao("Int8DynamicActivationInt8WeightConfig"), "torchao int8 dynamic"),
        (torchao("Int4WeightOnlyConfig", group_size=128), "torchao int4 weight-only"),
        (torchao("Float8WeightOnlyConfig"), "torchao float8 weight-only"),
        (
            torchao("Int8DynamicActivationIntxWeightConfig", weight_dtype={"_type": "torch.dtype", "_data": "int4"}),
            "torchao int8 dynamic, int4 weights",
        ),
        (
            {"quantization_config": {"quant_method": "torchao", "quant_type": "int4_weight_only"}},
            "torchao int4 weight-only",
        ),
        ({"quantization_config": {"load_in_8bit": True}}, "bitsandbytes 8-bit"),
        ({"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}}, "bitsandbytes 4-bit fp4"),
        ({"quantization_config": {"quant_method": "awq", "bits": 4, "version": "gemm"}}, "AWQ 4-bit"),
        ({"quantization_config": {"quant_method": "gptq", "bits": 8}}, "GPTQ 8-bit"),
        (
            {"quantization_config": {"quant_method": "quanto", "weights": "int4", "activations": None}},
            "quanto int4 weights",
        ),
        ({"quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic"}}, "fp8"),
    ],
)
def test_names_config_dicts(config, expected):
    assert quantization_of(config) == expected


@pytest.mark.parametrize(
    "config, modules",
    [
        (saved("torchao_int8-weight-only"), ("torchao",)),
        (saved("torchao_intx-int4-weight-only"), ("torchao",)),
        (torchao("Int8DynamicActivationInt8WeightConfig"), ("torchao",)),
        (saved("bitsandbytes_4bit-nf4"), ("bitsandbytes",)),
        (saved("bitsandbytes_8bit"), ("bitsandbytes",)),
        (saved("hqq_4bit-g32"), ("hqq",)),
        ({"quantization_config": {"quant_method": "quanto", "weights": "int8"}}, ("optimum.quanto",)),
        (saved("gptq-packed"), ("optimum", "auto_gptq")),
        (saved("gptq-packed"), ("optimum", "gptqmodel")),
        ({"model_type": "llama"}, ()),
        ({"quantization_config": {"quant_method": "fp8"}}, ()),  # not tried here: left to transformers
    ],
)
def test_cpu_backends_pass_when_installed(config, modules, installed, no_gpu):
    installed(*modules)
    check_quantized_checkpoint(config, "team/llama-q")


@pytest.mark.parametrize(
    "config, fix",
    [
        (saved("torchao_int8-weight-only"), "pip install 'miniature[quantize]'"),
        (saved("bitsandbytes_4bit-nf4"), "pip install 'bitsandbytes>=0.50'"),
        (saved("hqq_4bit-g32"), "pip install hqq"),
        ({"quantization_config": {"quant_method": "quanto", "weights": "int8"}}, "pip install optimum-quanto"),
        (saved("gptq-packed"), "pip install 'optimum<2' auto-gptq"),
    ],
)
def test_missing_package_is_one_line_with_the_install(config, fix, installed):
    installed()
    with pytest.raises(ModelReferenceError) as caught:
        check_quantized_checkpoint(config, "team/llama-q")
    message = str(caught.value)
    assert "\n" not in message and "'team/llama-q'" in message and quantization_of(config) in message
    assert "not installed" in message and fix in message


def test_gptq_needs_a_kernel_package_besides_optimum(installed):
    installed("optimum")
    with pytest.raises(ModelReferenceError, match="needs auto-gptq or gptqmodel, not installed"):
        check_quantized_checkpoint(saved("gptq-packed"), "team/llama-gptq")


@pytest.mark.parametrize(
    "config",
    [
        torchao("Int4WeightOnlyConfig", group_size=128),
        torchao("Float8DynamicActivationFloat8WeightConfig"),
        {"quantization_config": {"quant_method": "awq", "bits": 4, "version": "gemm"}},
    ],
)
def test_gpu_only_schemes_are_refused_without_a_gpu(config, installed, no_gpu):
    installed("torchao", "awq")
    with pytest.raises(ModelReferenceError) as caught:
        check_quantized_checkpoint(config, "team/llama-q")
    message = str(caught.value)
    assert "\n" not in message and "'team/llama-q'" in message and quantization_of(config) in message
    assert "need a CUDA GPU" in message and "--device cuda" in message


def test_gpu_only_schemes_pass_with_a_gpu(installed, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    installed("torchao", "awq")
    check_quantized_checkpoint(torchao("Int4WeightOnlyConfig", group_size=128), "team/llama-int4")
    check_quantized_checkpoint({"quantization_config": {"quant_method": "awq", "bits": 4}}, "team/llama-awq")


def test_torchao_string_quant_type_is_refused(installed):
    installed("torchao")
    config = {"quantization_config": {"quant_method": "torchao", "quant_type": "int8_weight_only"}}
    with pytest.raises(ModelReferenceError, match=r"^model 'team/old': .*old string 'int8_weight_only'.*fix: re-save"):
        check_quantized_checkpoint(config, "team/old")


def test_checks_import_nothing(monkeypatch):
    """The backends are found, not imported: a check costs no torchao/bitsandbytes import."""
    import sys

    for name in ("bitsandbytes", "hqq"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    for name in ("bitsandbytes_8bit", "hqq_4bit-g32"):
        try:
            check_quantized_checkpoint(saved(name), "team/llama-q")
        except ModelReferenceError:
            pass
    assert "bitsandbytes" not in sys.modules and "hqq" not in sys.modules
    assert qc._installed("no_such_parent.child") is False


def test_torchao_folder_saved_by_transformers_loads_and_is_named(tmp_path):
    """A tiny Llama quantized on load with TorchAoConfig(Int8WeightOnlyConfig()), saved by
    transformers (pickle: it refuses safetensors for int8), reloads with plain from_pretrained
    on the CPU and gives logits close to fp32; config.json names it and passes the check."""
    pytest.importorskip("torchao", reason="torchao is not installed (pip install 'miniature[quantize]')")
    import torch
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import (
        AutoModelForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
        TorchAoConfig,
    )

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    LlamaForCausalLM(config).eval().save_pretrained(tmp_path / "fp32")
    fp32 = AutoModelForCausalLM.from_pretrained(tmp_path / "fp32").eval()
    quantized = AutoModelForCausalLM.from_pretrained(
        tmp_path / "fp32", quantization_config=TorchAoConfig(Int8WeightOnlyConfig())
    )
    quantized.save_pretrained(tmp_path / "int8", safe_serialization=False)

    saved_config = json.loads((tmp_path / "int8" / "config.json").read_text())
    assert quantization_of(saved_config) == "torchao int8 weight-only"
    check_quantized_checkpoint(saved_config, str(tmp_path / "int8"))
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "int8").eval()
    assert type(reloaded.model.layers[0].mlp.down_proj.weight).__name__ == "Int8Tensor"
    ids = torch.randint(4, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = fp32(input_ids=ids).logits, reloaded(input_ids=ids).logits
    assert torch.isfinite(got).all()
    assert 0 < (got - want).abs().max() < 0.05  # quantized (not identical), and close


def _quantization_config(backend: str):
    import transformers

    if backend == "bitsandbytes-8bit":
        return transformers.BitsAndBytesConfig(load_in_8bit=True)
    if backend == "bitsandbytes-4bit":
        return transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
    return transformers.HqqConfig(nbits=4, group_size=32)


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend, module, named",
    [
        ("bitsandbytes-8bit", "bitsandbytes", "bitsandbytes 8-bit"),
        ("bitsandbytes-4bit", "bitsandbytes", "bitsandbytes 4-bit nf4"),
        ("hqq-4bit", "hqq", "HQQ 4-bit"),
    ],
)
def test_cpu_backend_checkpoints_are_gated_against_their_original(tmp_path, backend, module, named):
    """A tiny Llama quantized on load by transformers with the backend, saved as safetensors,
    is loaded by miniature and gated: named in the model table, its layers the backend's, and
    its next-token distribution measured against the original (changed, not identical)."""
    pytest.importorskip(module, reason=f"{module} is not installed")
    from transformers import AutoModelForCausalLM

    from miniature.core.gate import Gate
    from miniature.core.models import load_model
    from miniature.core.settings import make_settings
    from miniature.tools.testing_decoder import make_tiny_decoders

    original = make_tiny_decoders(tmp_path / "tiny")["llama"]
    quantized = AutoModelForCausalLM.from_pretrained(original, quantization_config=_quantization_config(backend))
    quantized.save_pretrained(tmp_path / backend, safe_serialization=True)
    (tmp_path / "tiny" / "tokenizer").rename(tmp_path / "tokenizer")
    for file in (tmp_path / "tokenizer").iterdir():
        (tmp_path / backend / file.name).write_bytes(file.read_bytes())
    config = json.loads((tmp_path / backend / "config.json").read_text())
    assert quantization_of(config) == named

    wrapper = load_model(str(tmp_path / backend), head="classification")
    layer = wrapper.model.model.layers[0].mlp.down_proj
    assert type(layer).__module__.split(".")[0] == module, type(layer)
    gate = Gate(
        make_settings(
            reference=str(original),
            candidate=[str(tmp_path / backend)],
            cache_dir=tmp_path / "cache",
            data_limit=30,
            bootstrap=0,
        )
    )
    assert gate.models.table()["quantization"][gate.candidates[0]].startswith(named)
    result = gate.outcome("token_distribution", gate.pairs()[0])
    assert result.status == "computed", result.reason
    assert 0 < result.details["mean_kld"] < 1 and 0 < result.figure <= 1
