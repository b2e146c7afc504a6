"""Export a model to ONNX as the loader reads it, optionally int8-quantized by onnxruntime.

:func:`export_onnx` writes ``model.onnx`` (torch.onnx.export, opset 17, batch and sequence
axes dynamic) with optimum's output names, ``logits`` (``start_logits``/``end_logits`` for
QA) and ``last_hidden_state``, beside the model's ``config.json`` and tokenizer files, so
``pytest --candidate=FOLDER`` gates exactly the file that ships. ``int8=True`` then replaces
it with onnxruntime's dynamic int8 quantization (``quantize_dynamic``: int8 weights, int8
activations quantized per batch), per channel or per tensor.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from miniature.errors import MiniatureError

OPSET = 17
_OUTPUTS = {
    "classification": ("logits",),
    "qa": ("start_logits", "end_logits"),
    "masked-lm": ("logits",),
    "encoder": (),
}


class ExportError(MiniatureError, ValueError):
    """An export that cannot be made (missing package, unsupported model), with the fix."""


def export_onnx(
    model: Any,
    tokenizer: Any,
    output: str | Path,
    *,
    head: str,
    features_only: bool = False,
    int8: bool = False,
    per_channel: bool = True,
) -> dict[str, Any]:
    """Write ``model`` (a transformers model with ``head``) to ``output/model.onnx`` with its
    config and ``tokenizer``; what was written (outputs, quantization) as a dict.

    ``features_only`` exports only ``last_hidden_state`` (a bare feature-extraction export);
    ``int8`` quantizes the export with onnxruntime's ``quantize_dynamic``.
    """
    import torch

    try:
        import onnx  # noqa: F401 - torch.onnx.export needs it
    except ImportError:
        raise ExportError(
            "exporting to ONNX needs the onnx package; fix: pip install 'pytest-miniature[onnx]'"
        ) from None
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    heads = () if features_only else _OUTPUTS[head]
    names = [*heads, "last_hidden_state"]
    sample = tokenizer(["an example sentence to trace", "a second one"], padding=True, return_tensors="pt")
    accepted = set(_forward_inputs(model))
    inputs = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in sample and k in accepted]

    class Traced(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args: Any) -> tuple[Any, ...]:
            out = self.inner(**dict(zip(inputs, args)), output_hidden_states=True)
            return (*(getattr(out, h) for h in heads), out.hidden_states[-1])

    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in inputs}
    axes.update({name: {0: "batch"} for name in heads})
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    if head == "qa" and not features_only:
        axes.update({name: {0: "batch", 1: "sequence"} for name in heads})
    target = folder / "model.onnx"
    model.eval()
    import warnings

    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # tracing notes constants it records (the attention mask's 1.0); the axes stay dynamic
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            Traced(),
            tuple(sample[k] for k in inputs),
            str(target),
            input_names=inputs,
            output_names=names,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    written: dict[str, Any] = {
        "file": target.name,
        "outputs": names,
        "inputs": inputs,
        "opset": OPSET,
        "quantization": None,
    }
    if int8:
        written["quantization"] = quantize_onnx(target, per_channel=per_channel)
    model.config.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return written


def quantize_onnx(file: Path, *, per_channel: bool = True) -> dict[str, Any]:
    """Replace an fp32 ONNX file with onnxruntime's dynamic int8 quantization of it."""
    try:
        import onnxruntime
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise ExportError("int8 ONNX needs onnxruntime; fix: pip install 'pytest-miniature[onnx]'") from None
    import logging

    root = logging.getLogger()
    level = root.level
    with tempfile.TemporaryDirectory(dir=file.parent, prefix=".quantize-") as work:
        quantized = Path(work) / file.name
        root.setLevel(logging.ERROR)  # its advice to pre-process (shape inference) is for CNNs
        try:
            quantize_dynamic(str(file), str(quantized), weight_type=QuantType.QInt8, per_channel=per_channel)
        finally:
            root.setLevel(level)
        shutil.move(str(quantized), str(file))
    return {
        "library": "onnxruntime",
        "version": onnxruntime.__version__,
        "method": "quantize_dynamic",
        "weight_type": "QInt8",
        "per_channel": per_channel,
    }


def _forward_inputs(model: Any) -> list[str]:
    import inspect

    return list(inspect.signature(model.forward).parameters)
