"""The models of a run by report name, resolved once: what ``--reference`` and ``--candidate``
name becomes a :class:`NamedModel` (its report name, what was given, where it is), and the
report's model table (order, architecture, quantization) is read from those, so the reports
never resolve the raw option values again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from miniature.core.models import ModelSpec, locate, resolve_model, unique_name
from miniature.errors import MiniatureError


@dataclass(frozen=True)
class NamedModel:
    """One model of the run: its report name, the option value given, and where it is
    (``None`` when it could not be resolved: the run reports that; the table only lists it)."""

    name: str
    given: str
    spec: ModelSpec | None


def name_models(given: Sequence[str], *, strict: bool = True) -> list[NamedModel]:
    """Report names for the models ``given`` (the reference, then the candidates), unique
    (``name``, ``name#2``, ...). ``strict``: each is located (a missing one raises its
    MiniatureError); otherwise one that does not resolve keeps its given text as its name."""
    named: list[NamedModel] = []
    for reference in given:
        spec: ModelSpec | None
        try:
            spec = resolve_model(str(reference))
            if strict:
                spec = locate(spec)
        except MiniatureError:
            if strict:
                raise
            spec = None
        base = spec.name if spec is not None else str(reference)
        named.append(NamedModel(unique_name(base, [m.name for m in named]), str(reference), spec))
    return named


def given_models(settings: Any) -> list[str]:
    """What ``--reference`` and ``--candidate`` name, in order (empty values left out)."""
    values = getattr(settings, "values", {})
    return [str(v) for v in [values.get("--reference"), *(values.get("--candidate") or [])] if v]


def model_table(
    models: Sequence[NamedModel], *, decoders: bool | None = None, gguf_runtime: str = "llama.cpp"
) -> dict[str, Any]:
    """The report's ``models`` entry: the reference, the candidates, their order, and for
    local models how each is quantized or exported and its architecture (e.g.
    ``LlamaForCausalLM, decoder``); what cannot be read is left out of those two.
    ``decoders`` True: every PyTorch model is read as a decoder (``--task causal-lm``). A GGUF
    file says its file type, the tensor types it holds and how it ran (``gguf_runtime``: run
    by llama.cpp, or dequantized by transformers), so the report says which was gated."""
    from miniature.core.formats import quantization_of
    from miniature.core.gguf_model import gguf_file, table_text
    from miniature.core.model_files import read_model_config
    from miniature.core.models import is_decoder
    from miniature.core.onnx_model import onnx_file

    names = [m.name for m in models]
    quantization: dict[str, str] = {}
    architecture: dict[str, str] = {}
    for model in models:
        if model.spec is None or not model.spec.is_local:
            continue
        try:
            gguf = gguf_file(model.spec.source)
            if gguf is not None:
                quantization[model.name], architecture[model.name] = table_text(gguf, gguf_runtime)
                continue
        except Exception:  # noqa: BLE001 - the table only; a load error is reported by the run
            continue
        try:
            text = quantization_of(model.spec.source)
        except Exception:  # noqa: BLE001 - the table only; a load error is reported by the run
            text = None
        if text:
            quantization[model.name] = text
        try:
            config = read_model_config(model.spec)
        except Exception:  # noqa: BLE001 - the table only
            continue
        exported = onnx_file(model.spec.source) is not None
        kind = "decoder" if (decoders and not exported) or is_decoder(config) else "encoder"
        found = ", ".join(config.get("architectures") or []) or str(config.get("model_type", "?"))
        architecture[model.name] = f"{found}, {kind}"
    return {
        "reference": names[0] if names else None,
        "candidates": names[1:],
        "order": names,
        "quantization": quantization,
        "architecture": architecture,
    }
