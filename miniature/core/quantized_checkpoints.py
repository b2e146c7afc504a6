"""Quantized decoder checkpoints: which backend and scheme a folder's ``config.json`` names
(its ``quantization_config``, as transformers writes it), and one line refusing, before any
weight is read, the ones that cannot load or run on this build.

What runs where was measured on a CPU-only machine (torch 2.13 CPU, transformers 4.57,
torchao 0.18, bitsandbytes 0.50, hqq 0.2.8, optimum-quanto 0.2.7, optimum 1.27 with
auto-gptq 0.7.1): a tiny Llama quantized on load, saved, reloaded with plain
``from_pretrained`` and run. Working on the CPU: torchao int8 weight-only, int8 dynamic,
IntxWeightOnly int4, int8-dynamic/intx-int4 and float8 weight-only; bitsandbytes 8-bit and
4-bit; HQQ; quanto; a GPTQ folder. Needing a GPU: torchao ``Int4WeightOnlyConfig`` (every
packing format) and float8 dynamic; AWQ (CUDA, or IPEX kernels). Failing everywhere with
torchao 0.18: the old string form of torchao's ``quant_type``. Backends not in these lists
were not tried and are left to transformers' own error.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from miniature.errors import ModelReferenceError

#: torchao config class -> scheme, for the model table
TORCHAO_SCHEMES = {
    "Int8WeightOnlyConfig": "int8 weight-only",
    "Int4WeightOnlyConfig": "int4 weight-only",
    "Int8DynamicActivationInt8WeightConfig": "int8 dynamic",
    "Float8WeightOnlyConfig": "float8 weight-only",
    "Float8DynamicActivationFloat8WeightConfig": "float8 dynamic",
}
#: torchao configs whose kernels need a GPU (int4: mslk or tinygemm CUDA kernels; float8
#: dynamic: CUDA compute capability 8.9+)
TORCHAO_GPU_ONLY = {"Int4WeightOnlyConfig", "Float8DynamicActivationFloat8WeightConfig"}


def _method(q: Mapping[str, Any]) -> str:
    """``quant_method``, lowercased; bitsandbytes for old configs that only say load_in_*bit."""
    method = str(q.get("quant_method") or "").lower()
    if not method and (q.get("load_in_4bit") or q.get("load_in_8bit")):
        return "bitsandbytes"
    return method


def _torchao_type(q: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | str | None:
    """torchao's config: (class name, its fields) as transformers serialises a config object
    (``{"default": {"_type": ..., "_data": ...}}``), or the old string form, or None."""
    quant_type = q.get("quant_type")
    if isinstance(quant_type, str):
        return quant_type
    if isinstance(quant_type, Mapping):
        entry = quant_type.get("default", quant_type)
        if isinstance(entry, Mapping) and "_type" in entry:
            return str(entry["_type"]), dict(entry.get("_data") or {})
    return None


def _value(field: Any) -> Any:
    """A torchao field's value: ``{"_type": "torch.dtype", "_data": "int4"}`` -> ``"int4"``."""
    return field.get("_data") if isinstance(field, Mapping) else field


def quantization_of(config: Mapping[str, Any]) -> str | None:
    """The backend and scheme of ``config.json``'s ``quantization_config`` for the model
    table ("torchao int8 weight-only", "bitsandbytes 4-bit nf4", "GPTQ 4-bit"), or None
    when the checkpoint is not quantized."""
    q = config.get("quantization_config")
    if not isinstance(q, Mapping) or not q:
        return None
    return _scheme(q)


def _scheme(q: Mapping[str, Any]) -> str:
    """The backend and scheme of a non-empty ``quantization_config``."""
    method = _method(q)
    if method == "torchao":
        kind = _torchao_type(q)
        if isinstance(kind, str):
            return "torchao " + kind.replace("_", " ").replace("weight only", "weight-only")
        if kind is None:
            return "torchao"
        name, data = kind
        if name == "IntxWeightOnlyConfig":
            return f"torchao {_value(data.get('weight_dtype')) or 'intx'} weight-only"
        if name == "Int8DynamicActivationIntxWeightConfig":
            return f"torchao int8 dynamic, {_value(data.get('weight_dtype')) or 'intx'} weights"
        return "torchao " + TORCHAO_SCHEMES.get(name, name)
    if method == "bitsandbytes":
        if q.get("load_in_4bit"):
            return f"bitsandbytes 4-bit {q.get('bnb_4bit_quant_type') or 'fp4'}"
        return "bitsandbytes 8-bit"
    if method in ("gptq", "awq"):
        bits = q.get("bits") or q.get("w_bit")
        return f"{method.upper()} {bits}-bit" if bits else method.upper()
    if method == "hqq":
        weights = (q.get("quant_config") or {}).get("weight_quant_params") or {}
        return f"HQQ {weights['nbits']}-bit" if weights.get("nbits") else "HQQ"
    if method == "quanto":
        activations = f", {q['activations']} activations" if q.get("activations") else ""
        return f"quanto {q.get('weights') or '?'} weights{activations}"
    return method or "unknown quantization"


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (a missing parent counts as missing)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _needs_gpu(model_name: str, scheme: str, why: str) -> None:
    """Refuse a GPU-only scheme when torch sees no CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        build = "this torch was built without CUDA" if torch.version.cuda is None else "torch sees no CUDA GPU"
        raise ModelReferenceError(
            f"model {model_name!r} is quantized with {scheme}, whose kernels need a CUDA GPU ({why}) and "
            f"{build}; fix: run it on a machine with a CUDA GPU and pass --device cuda, or give a "
            f"checkpoint quantized with a CPU scheme (torchao int8 / IntxWeightOnly int4, bitsandbytes, HQQ)"
        )


def _needs(model_name: str, scheme: str, modules: tuple[str, ...], package: str, install: str) -> None:
    """Refuse when none of ``modules`` is installed, naming the package and the pip install that fixes it."""
    if not any(_installed(m) for m in modules):
        raise ModelReferenceError(
            f"model {model_name!r} is quantized with {scheme}, which needs {package}, not installed; fix: {install}"
        )


def check_quantized_checkpoint(config: Mapping[str, Any], model_name: str) -> None:
    """Raise :class:`ModelReferenceError` (one line: the model, the backend, why, the fix)
    for a quantized checkpoint this build cannot load or run; return silently otherwise,
    including for checkpoints that are not quantized and backends not tried here.

    Called before ``from_pretrained`` for a local folder whose config.json has
    ``quantization_config``, so the refusal comes before any weight is read::

        config = json.loads((folder / "config.json").read_text())
        if "quantization_config" in config:
            check_quantized_checkpoint(config, spec.name)
        model = AutoModelForCausalLM.from_pretrained(folder)

    Backends found working on the CPU are only checked for being installed (found with
    ``importlib.util.find_spec``, not imported)."""
    q = config.get("quantization_config")
    if not isinstance(q, Mapping) or not q:
        return
    scheme = _scheme(q)
    method = _method(q)
    if method == "torchao":
        _needs(model_name, scheme, ("torchao",), "torchao", "pip install 'miniature[quantize]' (or torchao)")
        kind = _torchao_type(q)
        if isinstance(kind, str):
            raise ModelReferenceError(
                f"model {model_name!r}: config.json names torchao's scheme by the old string {kind!r}, "
                f"which transformers<5 cannot load with torchao 0.18 or later (it imports torchao's removed "
                f"autoquant); fix: re-save the checkpoint with a torchao config object, e.g. "
                f"TorchAoConfig(Int8WeightOnlyConfig()) and save_pretrained(..., safe_serialization=False)"
            )
        if kind is not None and kind[0] in TORCHAO_GPU_ONLY:
            _needs_gpu(
                model_name,
                scheme,
                "torchao's int4 tensors run on mslk or tinygemm CUDA kernels"
                if kind[0] == "Int4WeightOnlyConfig"
                else "float8 needs compute capability 8.9+",
            )
    elif method == "bitsandbytes":
        _needs(
            model_name,
            scheme,
            ("bitsandbytes",),
            "bitsandbytes",
            "pip install 'bitsandbytes>=0.50' (it runs on the CPU)",
        )
    elif method == "hqq":
        _needs(model_name, scheme, ("hqq",), "hqq", "pip install hqq")
    elif method == "quanto":
        _needs(model_name, scheme, ("optimum.quanto",), "optimum-quanto", "pip install optimum-quanto")
    elif method == "gptq":
        install = (
            "pip install 'optimum<2' auto-gptq (gptqmodel, the other GPTQ kernel package, "
            "needs torch 2.14+ and transformers 5)"
        )
        _needs(model_name, scheme, ("optimum",), "optimum", install)
        _needs(model_name, scheme, ("auto_gptq", "gptqmodel"), "auto-gptq or gptqmodel", install)
    elif method == "awq":
        _needs_gpu(model_name, scheme, "AWQ's GEMM kernels; its CPU path needs intel-extension-for-pytorch")
        _needs(model_name, scheme, ("awq",), "autoawq", "pip install autoawq")
