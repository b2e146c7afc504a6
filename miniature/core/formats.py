"""The compressed-model file format: what ``miniature compress`` writes and the loader reads.

A compressed folder holds the reference's tokenizer, its config and a record
(:data:`RECORD_NAME`, JSON) of what was done, from what, with which library versions. An
int8 folder also holds :data:`INT8_WEIGHTS`: the int8 weights, their scales and zero points
and the fp32 biases as plain tensors (``int8::<module>.weight`` ...), all other weights in
fp32 beside them. :func:`read_record` reads the record; :func:`load_quantized` rebuilds the
fp32 architecture from ``config.json`` (no code from the folder runs, nothing is
unpickled), quantizes the same modules and sets the stored int8 weights exactly.

Both :mod:`miniature.tools.compress` (the writer) and :mod:`miniature.core.models` (the
loader) import it, so core never imports a tool.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miniature.core.model_files import model_file_boundary, safetensors_header
from miniature.errors import ModelReferenceError

if TYPE_CHECKING:  # pragma: no cover
    import torch

RECORD_NAME = "miniature_compression.json"
INT8_WEIGHTS = "model_int8.safetensors"
#: Bump when a method's output changes, so older folders are rebuilt rather than reused.
FORMAT_VERSION = 2


def read_record(path: str | Path, *, method: str | None = None) -> dict[str, Any] | None:
    """The compression record of a model folder (None if it has none, or another method)."""
    file = Path(path) / RECORD_NAME
    if not file.is_file():
        return None
    with model_file_boundary(Path(path), RECORD_NAME,
                             fix="re-create the folder with `miniature compress`"):
        record = json.loads(file.read_text("utf-8"))
    if not isinstance(record, dict) or (method is not None and record.get("method") != method):
        return None
    return record


def load_quantized(path: str | Path, head: str = "auto") -> "torch.nn.Module":
    """Rebuild an int8 folder written by :func:`miniature.tools.compress.compress` (no pickle, no code from the folder).

    ``head`` is ``auto`` (the architecture that was quantized), ``encoder`` (its base
    model) or the head it was quantized with (``classification``, ``qa``, ``masked-lm``).
    The int8 weights, scales and zero points are set exactly as stored.
    """
    import torch
    import transformers
    from safetensors.torch import load_file

    folder = Path(path)
    record = read_record(folder, method="int8")
    if record is None:
        raise ModelReferenceError(f"model folder {str(folder)!r} has no int8 {RECORD_NAME}; fix: "
                                  "create it with `miniature compress --method int8`")
    stored_head = record.get("head", "encoder")
    head = stored_head if head == "auto" else head
    if head not in (stored_head, "encoder"):
        raise ModelReferenceError(
            f"model folder {str(folder)!r} holds an int8 {stored_head} model, which has no "
            f"{head} head; fix: load it with head={stored_head!r} (or 'encoder'), or quantize a "
            f"model fine-tuned for {head}")
    transformers.logging.set_verbosity_error()
    with model_file_boundary(folder, "config.json"):
        config = transformers.AutoConfig.from_pretrained(str(folder))
    with _quiet_init():
        model = _auto_classes()[head].from_config(config)
    safetensors_header(folder, INT8_WEIGHTS)
    with model_file_boundary(folder, INT8_WEIGHTS):
        tensors = load_file(str(folder / INT8_WEIGHTS))
    modules: dict[str, dict[str, Any]] = record.get("quantized_modules", {})
    rename = _key_map(model, stored_head, head)
    plain = {rename(k): v for k, v in tensors.items() if not k.startswith("int8::")}
    plain = {k: v for k, v in plain.items() if k is not None}
    quantized = {rename(name): info for name, info in modules.items()}
    quantized = {k: v for k, v in quantized.items() if k is not None}
    expected = {k for k in model.state_dict()
                if not any(k.startswith(name + ".") for name in quantized)}
    missing = sorted(expected - set(plain) - _tied_keys(model))
    if missing:
        raise ModelReferenceError(f"model folder {str(folder)!r}: {INT8_WEIGHTS} lacks "
                                  f"{len(missing)} weight(s) (first {missing[0]!r}); fix: re-create "
                                  "the folder with `miniature compress --method int8`")
    model.load_state_dict(plain, strict=False)
    by_stored = {rename(name): name for name in modules}
    with quiet_quantization():
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

        model = quantize_dynamic(model, {name: default_dynamic_qconfig for name in quantized},
                                 dtype=torch.qint8)
        for name, info in quantized.items():
            stored = by_stored[name]
            module = model.get_submodule(name)
            weight = _quantized_tensor(tensors, stored, info)
            bias = tensors.get(f"int8::{stored}.bias")
            module.set_weight_bias(weight, bias)
    model.eval()
    return model


def _auto_classes() -> dict[str, Any]:
    import transformers

    return {"encoder": transformers.AutoModel,
            "classification": transformers.AutoModelForSequenceClassification,
            "qa": transformers.AutoModelForQuestionAnswering,
            "masked-lm": transformers.AutoModelForMaskedLM}


# -- loading helpers --------------------------------------------------------------------------
def _key_map(model: Any, stored_head: str, head: str) -> Any:
    """Map stored names to ``model``'s names (stripping the base prefix for an encoder)."""
    prefix = getattr(model, "base_model_prefix", "")
    if head == stored_head or not prefix:
        return lambda key: key

    def rename(key: str) -> str | None:
        return key[len(prefix) + 1:] if key.startswith(prefix + ".") else None

    return rename


def _tied_keys(model: Any) -> set[str]:
    """State-dict keys that share storage with an earlier key (tied embeddings)."""
    seen: dict[int, str] = {}
    tied = set()
    for key, value in model.state_dict(keep_vars=True).items():
        pointer = value.data_ptr()
        if pointer in seen:
            tied.add(key)
        else:
            seen[pointer] = key
    return tied


def _quantized_tensor(tensors: dict[str, Any], name: str, info: dict[str, Any]) -> "torch.Tensor":
    import torch

    values = tensors[f"int8::{name}.weight"]
    scale = tensors[f"int8::{name}.scale"]
    zero_point = tensors[f"int8::{name}.zero_point"]
    if info["qscheme"] == "per_channel_affine":
        return torch._make_per_channel_quantized_tensor(values, scale, zero_point, info["axis"])
    return torch._make_per_tensor_quantized_tensor(values, float(scale), int(zero_point))


@contextlib.contextmanager
def quiet_quantization() -> Iterator[None]:
    """torch.ao.quantization warns that it is deprecated on every call; say it once, in docs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.ao")
        yield


@contextlib.contextmanager
def _quiet_init() -> Iterator[None]:
    """Skip the random initialisation of weights that are overwritten right after."""
    try:
        from transformers.modeling_utils import no_init_weights
    except ImportError:  # pragma: no cover
        yield
        return
    with no_init_weights():
        yield
