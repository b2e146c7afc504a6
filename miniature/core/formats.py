"""The compressed-model file format: what ``miniature compress`` writes and the loader reads.

A compressed folder holds the reference's tokenizer, its config and a record
(:data:`RECORD_NAME`, JSON) of what was done, from what, with which library versions. A
quantized folder (int8 or int4, made with torchao's ``quantize_``) also holds
:data:`TORCHAO_WEIGHTS`: torchao's tensor subclasses flattened to plain tensors (int8 codes,
scales, zero points) with their types in the safetensors metadata, as JSON (torchao's own
safetensors flattening; nothing is pickled). :func:`read_record` reads the record;
:func:`load_quantized` rebuilds the fp32 architecture from ``config.json`` (no code from the
folder runs) and sets the stored quantized weights exactly, so reloaded outputs equal the
in-memory compressed model's. torchao is imported only for such folders
(``pip install 'pytest-miniature[quantize]'``).

Both :mod:`miniature.tools.compress` (the writer) and :mod:`miniature.core.models` (the
loader) import it, so core never imports a tool.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miniature.core.model_files import model_file_boundary, safetensors_header
from miniature.errors import ModelReferenceError

if TYPE_CHECKING:  # pragma: no cover
    import torch

RECORD_NAME = "miniature_compression.json"
#: The int8 weights file of the older torch.ao.quantization format (format 2; no longer read).
INT8_WEIGHTS = "model_int8.safetensors"
#: torchao's quantized weights, flattened to plain tensors (safetensors + JSON metadata).
TORCHAO_WEIGHTS = "model_torchao.safetensors"
#: Bump when a method's output changes, so older folders are rebuilt rather than reused.
FORMAT_VERSION = 3


def read_record(path: str | Path, *, method: str | None = None) -> dict[str, Any] | None:
    """The compression record of a model folder (None if it has none, or another method)."""
    file = Path(path) / RECORD_NAME
    if not file.is_file():
        return None
    with model_file_boundary(Path(path), RECORD_NAME, fix="re-create the folder with `miniature compress`"):
        record = json.loads(file.read_text("utf-8"))
    if not isinstance(record, dict) or (method is not None and record.get("method") != method):
        return None
    return record


def load_quantized(path: str | Path, head: str = "auto") -> "torch.nn.Module":
    """Rebuild an int8 (or int4) folder written by :func:`miniature.tools.compress.compress`
    (no pickle, no code from the folder): the fp32 architecture from ``config.json``, then
    torchao's quantized weights from :data:`TORCHAO_WEIGHTS` set exactly as stored.

    ``head`` is ``auto`` (the architecture that was quantized), ``encoder`` (its base
    model) or the head it was quantized with (``classification``, ``qa``, ``masked-lm``).
    A folder of the older torch.ao.quantization format is refused with the fix (re-run
    ``miniature compress``).
    """
    import transformers
    from safetensors import safe_open
    from safetensors.torch import load_file

    folder = Path(path)
    record = read_record(folder, method="int8")
    if record is None:
        raise ModelReferenceError(
            f"model folder {str(folder)!r} has no int8 {RECORD_NAME}; fix: "
            "create it with `miniature compress --method int8`"
        )
    if record.get("backend") != "torchao" or not (folder / TORCHAO_WEIGHTS).is_file():
        raise ModelReferenceError(
            f"model folder {str(folder)!r} is an int8 folder of an older miniature (torch.ao."
            f"quantization, format {record.get('format')}), which this version no longer reads; "
            "fix: re-run `miniature compress --method int8` on its reference (it is rebuilt with "
            "torchao)"
        )
    stored_head = record.get("head", "encoder")
    head = stored_head if head == "auto" else head
    if head not in (stored_head, "encoder"):
        raise ModelReferenceError(
            f"model folder {str(folder)!r} holds an int8 {stored_head} model, which has no "
            f"{head} head; fix: load it with head={stored_head!r} (or 'encoder'), or quantize a "
            f"model fine-tuned for {head}"
        )
    require_torchao(f"model folder {str(folder)!r} is quantized with torchao")
    transformers.logging.set_verbosity_error()
    with model_file_boundary(folder, "config.json"):
        config = transformers.AutoConfig.from_pretrained(str(folder))
    with _quiet_init():
        model = _auto_classes()[head].from_config(config)
    safetensors_header(folder, TORCHAO_WEIGHTS)
    with model_file_boundary(
        folder, TORCHAO_WEIGHTS, fix="re-create the folder with `miniature compress --method int8`"
    ):
        from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

        with safe_open(str(folder / TORCHAO_WEIGHTS), "pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(folder / TORCHAO_WEIGHTS))
        unflattened, rest = unflatten_tensor_state_dict(tensors, metadata)
    rename = _key_map(model, stored_head, head)
    weights = {rename(k): v for k, v in {**rest, **unflattened}.items()}
    weights = {k: v for k, v in weights.items() if k is not None}
    missing = sorted(set(model.state_dict()) - set(weights) - _tied_keys(model))
    if missing:
        raise ModelReferenceError(
            f"model folder {str(folder)!r}: {TORCHAO_WEIGHTS} lacks "
            f"{len(missing)} weight(s) (first {missing[0]!r}); fix: re-create "
            "the folder with `miniature compress --method int8`"
        )
    model.load_state_dict(weights, strict=False, assign=True)
    model.eval()
    return model


def require_torchao(what: str) -> None:
    """Raise one line naming ``what`` needs torchao and how to install it, when it is missing."""
    import importlib.util

    if importlib.util.find_spec("torchao") is None:
        raise ModelReferenceError(
            f"{what}, which needs torchao; fix: pip install 'pytest-miniature[quantize]' (or torchao)"
        )


#: torchao quantization schemes of ``miniature compress --quantization``.
QUANTIZATIONS = ("int8-dynamic", "int8-weight-only", "int4-weight-only")
#: int4 weight-only: one scale per this many input columns.
INT4_GROUP_SIZE = 32


def torchao_config(quantization: str, qscheme: str = "per-channel") -> Any:
    """The torchao config of a scheme: int8 weights with int8 activations quantized per token
    at run time (``int8-dynamic``), int8 weights only, or int4 weights only (groups of
    :data:`INT4_GROUP_SIZE`; the CPU kernels of torchao's ``IntxWeightOnlyConfig``).
    ``qscheme`` is the int8 weights' granularity: one scale per output row or per matrix."""
    import torch
    from torchao.quantization import (
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
        IntxWeightOnlyConfig,
        PerGroup,
        PerRow,
        PerTensor,
    )

    granularity = PerRow() if qscheme == "per-channel" else PerTensor()
    if quantization == "int8-dynamic":
        return Int8DynamicActivationInt8WeightConfig(granularity=granularity)
    if quantization == "int8-weight-only":
        return Int8WeightOnlyConfig(granularity=granularity)
    if quantization == "int4-weight-only":
        # torch.int4 exists at run time; torch's stubs do not declare it
        return IntxWeightOnlyConfig(
            weight_dtype=torch.int4,  # type: ignore[attr-defined]
            granularity=PerGroup(INT4_GROUP_SIZE),
        )
    raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")


def save_torchao(model: Any, folder: Path) -> dict[str, Any]:
    """Write a torchao-quantized model's weights to :data:`TORCHAO_WEIGHTS` (torchao's
    safetensors flattening: plain tensors plus JSON metadata; nothing pickled) and its
    config; the names and types of the quantized weights."""
    from safetensors.torch import save_file
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

    state = {k: v.detach() if not _is_subclass(v) else v for k, v in model.state_dict().items()}
    quantized = {k: type(v).__name__ for k, v in state.items() if _is_subclass(v)}
    tensors, metadata = flatten_tensor_state_dict(state)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / TORCHAO_WEIGHTS), metadata={**metadata, "format": "pt"})
    model.config.save_pretrained(str(folder))
    return quantized


def _is_subclass(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor) and type(value) not in (torch.Tensor, torch.nn.Parameter)


def quantization_of(folder: str | Path) -> str | None:
    """How a model folder is quantized, in a few words for the report's model table (None
    for a plain fp32 checkpoint): an ONNX export (int8 or fp32), a ``miniature compress``
    torchao folder, or a checkpoint saved with transformers' ``TorchAoConfig``."""
    path = Path(folder)
    if not path.is_dir():
        return None
    from miniature.core.onnx_model import is_int8_onnx, onnx_file

    try:
        exported = onnx_file(path)
    except ModelReferenceError:
        return None
    record = read_record(path)
    settings = (record or {}).get("settings") or {}
    if exported is not None:
        int8 = settings["onnx_int8"] if "onnx_int8" in settings else is_int8_onnx(exported)
        return f"ONNX {'int8 (onnxruntime dynamic)' if int8 else 'fp32'}, run by onnxruntime"
    if record is not None and record.get("method") == "int8":
        scheme = settings.get("quantization", "int8-dynamic")
        if scheme.startswith("int8"):
            scheme += f", {settings.get('qscheme', 'per-channel')}"
        return f"torchao {scheme} (miniature compress)"
    config_file = path / "config.json"
    try:
        config = json.loads(config_file.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(config, dict) and isinstance(config.get("quantization_config"), dict):
        from miniature.core.quantized_checkpoints import quantization_of as scheme_of

        return f"{scheme_of(config) or config['quantization_config'].get('quant_method', '?')} (transformers quantization_config)"
    return None


def _auto_classes() -> dict[str, Any]:
    import transformers

    return {
        "encoder": transformers.AutoModel,
        "classification": transformers.AutoModelForSequenceClassification,
        "qa": transformers.AutoModelForQuestionAnswering,
        "masked-lm": transformers.AutoModelForMaskedLM,
        "causal-lm": transformers.AutoModelForCausalLM,
    }


# -- loading helpers --------------------------------------------------------------------------
def _key_map(model: Any, stored_head: str, head: str) -> Any:
    """Map stored names to ``model``'s names (stripping the base prefix for an encoder)."""
    prefix = getattr(model, "base_model_prefix", "")
    if head == stored_head or not prefix:
        return lambda key: key

    def rename(key: str) -> str | None:
        return key[len(prefix) + 1 :] if key.startswith(prefix + ".") else None

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
