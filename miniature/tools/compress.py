"""Compress a model three ways, so a gate has real candidates to check out of the box.

:func:`compress` turns a reference model directory into a loadable candidate directory
(the reference's tokenizer, its config and a record ``miniature_compression.json`` of
what was done, from what, with which library versions):

* ``int8``: quantization of every ``nn.Linear`` with torchao's ``quantize_``
  (``--quantization``): ``int8-dynamic`` (int8 weights, activations quantized to int8 per
  token at run time; the default), ``int8-weight-only``, or ``int4-weight-only`` (groups of
  32 columns; torchao's CPU kernels). The quantized weights are stored with torchao's
  safetensors flattening in ``model_torchao.safetensors`` (the format is
  :mod:`miniature.core.formats`); :func:`load_quantized` rebuilds the architecture from
  ``config.json`` (no code from the folder runs, nothing is unpickled) and sets them exactly,
  so reloaded outputs equal the in-memory compressed model's;
  :func:`miniature.core.models.load_model` does this transparently.
* ``none``: no compression, for ``--format onnx`` of the reference itself.

``output_format="onnx"`` (``--format onnx``) writes the result as ``model.onnx`` run by
onnxruntime instead (:mod:`miniature.tools.export`): for ``int8`` the fp32 model exported and
quantized by onnxruntime's ``quantize_dynamic`` (int8 weights and dynamic int8 activations);
for the others the compressed fp32 model, int8-quantized the same way with ``onnx_int8``.
So the gate checks exactly the file that ships.
``output_format="gguf"`` (``--format gguf``) writes a decoder as a GGUF file run by llama.cpp
(:mod:`miniature.tools.gguf_export`): llama.cpp's converter writes it in f16, llama.cpp's
quantizer makes the ``quantization`` asked for (``q8_0``, ``q4_k_m``, ``iq4_xs``, ...).
* ``prune``: unstructured L1 magnitude pruning of the encoder's Linear weights to a
  sparsity (``torch.nn.utils.prune``, over all layers at once or layer by layer), made
  permanent, saved as safetensors.
* ``layers``: keep a subset of the encoder layers (default every other one from the first,
  as DistilBERT was initialised from BERT); BERT (``encoder.layer``) and DistilBERT
  (``transformer.layer``). Saved as safetensors.

Results are built in a temporary sibling folder and renamed into place; asking again
for the same compression of the same reference files returns the stored folder.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miniature.core.formats import (
    FORMAT_VERSION,
    QUANTIZATIONS,
    RECORD_NAME,  # noqa: F401 - re-exported
    TORCHAO_WEIGHTS,
    load_quantized,  # noqa: F401 - re-exported
    read_record,
    require_torchao,
    save_torchao,
    torchao_config,
)
from miniature.errors import MiniatureError

if TYPE_CHECKING:  # pragma: no cover
    import torch

METHODS = ("int8", "prune", "layers", "none")
FORMATS = ("pytorch", "onnx", "gguf")
PRUNE_SCOPES = ("global", "layer")
QSCHEMES = ("per-channel", "per-tensor")
#: ``--distil`` (layers): epochs and learning rate of the distillation, and its temperature.
DISTIL_EPOCHS = 3.0
DISTIL_LEARNING_RATE = 1e-4
DISTIL_TEMPERATURE = 2.0
_HEAD_SUFFIXES = (
    ("ForSequenceClassification", "classification"),
    ("ForQuestionAnswering", "qa"),
    ("ForMaskedLM", "masked-lm"),
    ("ForCausalLM", "causal-lm"),
    ("LMHeadModel", "causal-lm"),
)


class CompressionError(MiniatureError, ValueError):
    """A bad compression request (option value, model shape, output folder), with the fix."""


# -- public API -------------------------------------------------------------------------------
def compress(
    reference_dir: str | Path,
    output_dir: str | Path,
    *,
    method: str | None = None,
    sparsity: float = 0.5,
    prune_scope: str = "global",
    keep_layers: Sequence[int] | None = None,
    qscheme: str = "per-channel",
    quantization: str | None = None,
    output_format: str = "pytorch",
    onnx_int8: bool = False,
    llama_cpp: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    distil: bool = False,
    distil_texts: Sequence[str] | None = None,
    distil_epochs: float = DISTIL_EPOCHS,
    distil_learning_rate: float = DISTIL_LEARNING_RATE,
) -> Path:
    """Compress the model in ``reference_dir`` with ``method``; the folder of the result.

    ``output_format="gguf"`` needs no ``method``: the decoder is converted by llama.cpp and
    quantized to ``quantization`` (default ``q8_0``; ``f16`` for none) into
    ``model-QUANT.gguf``, with ``llama_cpp`` (or ``$MINIATURE_LLAMA_CPP``) naming the
    llama.cpp source folder whose converter is used. ``quantization`` for ``int8`` is
    torchao's scheme (default ``int8-dynamic``).

    ``distil`` (layers only; classifiers and causal LMs) re-trains the smaller model after its
    layers are dropped, by distillation from the reference's outputs (a classifier's label
    distribution, a causal LM's next-token distribution at every token) on ``distil_texts`` (default:
    the built-in sentiment training texts; no labels are needed): ``distil_epochs`` of
    AdamW at ``distil_learning_rate``, batch 32, seeded, on the KL divergence between the
    reference's and the student's softened outputs (temperature 2). What it reached
    (agreement with the reference's predictions on those texts, before and after) is in
    the record's ``measured.distillation``.

    ``sparsity`` (prune) is the fraction of encoder Linear weights set to zero, in
    [0, 1); ``prune_scope`` ``global`` ranks all those weights together, ``layer`` prunes
    each matrix to the sparsity. ``keep_layers`` (layers) lists encoder layer indices to
    keep (0-based); default every other layer from the first (0, 2, 4 of 6). ``qscheme`` (int8)
    is ``per-channel`` (one scale per output row) or ``per-tensor``.

    If ``output_dir`` already holds this compression of the same reference files it is
    returned as is; if it holds another compression, :class:`CompressionError` unless
    ``overwrite``. A folder holding anything but an earlier output of this function, or
    one that contains the reference, is never replaced, not even with ``overwrite``.
    """
    from miniature.core.models import fingerprint_files, resolve_model

    if output_format == "gguf":
        method, settings = _check_gguf(method, quantization, onnx_int8, distil)
    else:
        if method is None:
            raise CompressionError(
                f"no compression method; fix: pass --method (method=) one of {', '.join(METHODS)}, or --format gguf"
            )
        settings = _check_settings(
            method,
            sparsity=sparsity,
            prune_scope=prune_scope,
            keep_layers=keep_layers,
            qscheme=qscheme,
            quantization=quantization or "int8-dynamic",
        )
        settings.update(_check_format(method, output_format, onnx_int8, settings))
    texts: list[str] = []
    if distil_texts is not None and not distil:
        raise CompressionError(
            "distil_texts (--distil-data) given without distil (--distil); fix: "
            "add --distil (distil=True), or drop the texts"
        )
    if distil:
        texts = _distil_texts(method, distil_texts)
        settings["distil"] = _check_distil(distil_epochs, distil_learning_rate, texts)
    spec = resolve_model(str(reference_dir))
    if not spec.is_local:
        raise CompressionError(
            f"reference {str(reference_dir)!r} is not a local directory; fix: "
            "save the model with save_pretrained and pass its folder"
        )
    if read_record(spec.source, method="int8") is not None:
        raise CompressionError(
            f"reference {spec.source!r} is already int8-quantized; fix: compress its fp32 source model instead"
        )
    from miniature.core.onnx_model import onnx_file

    if onnx_file(spec.source) is not None:
        raise CompressionError(
            f"reference {spec.source!r} is an ONNX export; fix: compress the "
            "PyTorch model it was exported from (--format onnx exports the result)"
        )
    output = Path(output_dir).expanduser()
    if output.resolve().is_relative_to(Path(spec.source).resolve()):
        raise CompressionError(
            f"output_dir {str(output)!r} is inside the reference's own folder "
            f"{spec.source!r}, which must stay as it is; fix: pass an --output-dir "
            "outside it, such as a new sibling folder"
        )
    if output.is_symlink():  # found now, not when the finished model is moved into place
        raise CompressionError(
            f"output_dir {str(output)!r} is a symbolic link (to "
            f"{str(output.resolve())!r}), which is never replaced; fix: pass the "
            "folder it points to, or another --output-dir"
        )
    source_print = fingerprint_files(Path(spec.source))
    existing = read_record(output) if output.exists() else None
    if existing is not None and _same_job(existing, method, settings, source_print):
        return output
    source = Path(spec.source).resolve()
    if source.is_relative_to(output.resolve()):
        raise CompressionError(
            f"output_dir {str(output)!r} contains the reference "
            f"{spec.source!r}, which writing there would delete; fix: pass an "
            "--output-dir outside the reference's folder, such as a new "
            "sibling folder"
        )
    if output.exists() and not output.is_dir():
        raise CompressionError(f"output_dir {str(output)!r} is a file; fix: pass a folder as --output-dir")
    if output.exists() and any(output.iterdir()):
        if existing is None:
            raise CompressionError(
                f"output_dir {str(output)!r} already holds other files (no "
                f"{RECORD_NAME}: not an earlier `miniature compress` output), "
                "which are never replaced, not even with --overwrite; fix: "
                "pass another --output-dir, or empty it yourself"
            )
        if not overwrite:
            raise CompressionError(
                f"output_dir {str(output)!r} already holds another compression; "
                "fix: pass another --output-dir, or --overwrite "
                "(overwrite=True) to replace it"
            )
    from miniature.core.cache import atomic_write_text
    from miniature.core.folders import building

    with building(output, replace=True) as built:  # output is empty, or a compression to replace
        if method == "gguf":
            measured, head, architecture = _build_gguf(spec, settings, built, llama_cpp=llama_cpp)
        else:
            measured, head, architecture = _build(spec, method, settings, built, progress=progress, distil_texts=texts)
        record = _record(spec, source_print, method, settings, head, architecture, measured)
        atomic_write_text(built / RECORD_NAME, json.dumps(record, indent=2, sort_keys=True))
    return output


def encoder_linear_weights(model: "torch.nn.Module") -> dict[str, "torch.Tensor"]:
    """The weight matrices of the Linear modules inside the encoder layers, by module name."""
    import torch

    container, _ = _layer_container(model)
    return {name: module.weight for name, module in container.named_modules() if isinstance(module, torch.nn.Linear)}


def measured_sparsity(model: "torch.nn.Module") -> float:
    """The fraction of exactly-zero entries over all encoder Linear weight matrices."""
    weights = list(encoder_linear_weights(model).values())
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / max(1, sum(w.numel() for w in weights))


def encoder_layer_count(model: "torch.nn.Module") -> int:
    """How many transformer layers the encoder has."""
    container, attribute = _layer_container(model)
    return len(getattr(container, attribute))


def default_keep_layers(num_layers: int) -> list[int]:
    """Every other layer from the first (0, 2, 4 of 6), DistilBERT's choice when it was
    initialised from BERT. (On the demo's fine-tuned MiniLM it kept 80.4 % test accuracy
    without retraining; layers 1, 3, 5 kept 75.4 %.)"""
    return list(range(0, num_layers, 2))


# -- settings ---------------------------------------------------------------------------------
def _check_format(method: str, output_format: str, onnx_int8: bool, settings: dict[str, Any]) -> dict[str, Any]:
    """The output format's settings: ``format`` and, for ONNX, whether it is int8."""
    if output_format not in FORMATS:
        raise CompressionError(
            f"format {output_format!r} is unknown; fix: pass --format (output_format=) one of {', '.join(FORMATS)}"
        )
    if output_format == "pytorch":
        if method == "none":
            raise CompressionError(
                "--method none leaves the model as it is, which is only useful "
                "as an export; fix: add --format onnx (output_format='onnx')"
            )
        if onnx_int8:
            raise CompressionError(
                "--onnx-int8 (onnx_int8) quantizes an ONNX export; fix: add --format onnx, or drop --onnx-int8"
            )
        return {"format": "pytorch"}
    if method == "int8":
        if settings["quantization"] != "int8-dynamic":
            raise CompressionError(
                f"--format onnx quantizes with onnxruntime's dynamic int8 only, not "
                f"{settings['quantization']!r}; fix: drop --quantization, or "
                "drop --format onnx to quantize with torchao"
            )
        onnx_int8 = True
    return {"format": "onnx", "onnx_int8": bool(onnx_int8)}


def _check_gguf(
    method: str | None, quantization: str | None, onnx_int8: bool, distil: bool
) -> tuple[str, dict[str, Any]]:
    """``--format gguf``'s settings: the llama.cpp quantization (default q8_0)."""
    from miniature.tools.gguf_export import GGUF_QUANTIZATIONS

    if method not in (None, "none"):
        raise CompressionError(
            f"--format gguf quantizes with llama.cpp (--quantization), not --method {method}; "
            "fix: drop --method (method=)"
        )
    if onnx_int8 or distil:
        raise CompressionError(
            f"--{'onnx-int8' if onnx_int8 else 'distil'} does not apply to --format gguf; fix: drop it"
        )
    chosen = (quantization or "q8_0").lower()
    if chosen not in GGUF_QUANTIZATIONS:
        raise CompressionError(
            f"--format gguf: quantization {quantization!r} is not one of llama.cpp's types here; fix: "
            f"pass --quantization (quantization=) one of {', '.join(GGUF_QUANTIZATIONS)}"
        )
    return "gguf", {"format": "gguf", "quantization": chosen}


def _build_gguf(
    spec: Any, settings: dict[str, Any], built: Path, *, llama_cpp: str | Path | None
) -> tuple[dict[str, Any], str, str]:
    """A decoder converted and quantized by llama.cpp, its tokenizer beside the file."""
    import transformers

    from miniature.core.models import model_file_boundary, read_model_config, tokenizer_file_name
    from miniature.tools.gguf_export import GgufExportError, check_architecture, converter_path, write_gguf

    config = read_model_config(spec)
    architectures = [str(a) for a in config.get("architectures") or []]
    head = detect_head(transformers.PretrainedConfig(architectures=architectures))
    if head != "causal-lm":
        raise CompressionError(
            f"reference {spec.name!r} is a {', '.join(architectures) or 'model'} ({head}), and --format gguf "
            "writes decoder LMs (GGUF files are gated as causal LMs, as llama.cpp runs them); fix: "
            "compress a *ForCausalLM / *LMHeadModel checkpoint, or use --format pytorch/onnx"
        )
    try:
        check_architecture(architectures, converter_path(llama_cpp), spec.name)
        measured = {
            "gguf": write_gguf(Path(spec.source), built, settings["quantization"], name=spec.name, llama_cpp=llama_cpp)
        }
    except GgufExportError as error:
        raise CompressionError(str(error)) from None
    with model_file_boundary(spec, tokenizer_file_name(spec)):
        transformers.AutoTokenizer.from_pretrained(spec.source).save_pretrained(str(built))
    return measured, head, ", ".join(architectures)


def _check_settings(
    method: str,
    *,
    sparsity: float,
    prune_scope: str,
    keep_layers: Sequence[int] | None,
    qscheme: str,
    quantization: str = "int8-dynamic",
) -> dict[str, Any]:
    if method not in METHODS:
        raise CompressionError(
            f"unknown compression method {method!r}; fix: pass --method (method=) one of {', '.join(METHODS)}"
        )
    if method == "prune":
        if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= float(sparsity) < 1.0:
            raise CompressionError(
                f"sparsity={sparsity!r} is outside [0, 1); fix: pass --sparsity "
                "(sparsity=) the fraction of weights to zero, e.g. 0.5"
            )
        if prune_scope not in PRUNE_SCOPES:
            raise CompressionError(
                f"prune_scope={prune_scope!r} is unknown; fix: pass "
                f"--prune-scope (prune_scope=) one of {', '.join(PRUNE_SCOPES)}"
            )
        return {"sparsity": float(sparsity), "prune_scope": prune_scope}
    if method == "none":
        return {}
    if method == "layers":
        if keep_layers is None:
            return {"keep_layers": None}
        layers = list(keep_layers)
        if not layers or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
            raise CompressionError(
                f"keep_layers={keep_layers!r} must be a non-empty list of layer "
                "indices; fix: pass --keep-layers (keep_layers=) e.g. 1,3,5"
            )
        if len(set(layers)) != len(layers):
            raise CompressionError(
                f"keep_layers={layers} repeats a layer; fix: list each layer index once in --keep-layers (keep_layers=)"
            )
        return {"keep_layers": sorted(layers)}
    if qscheme not in QSCHEMES:
        raise CompressionError(
            f"qscheme={qscheme!r} is unknown; fix: pass --qscheme (qscheme=) one of {', '.join(QSCHEMES)}"
        )
    if quantization not in QUANTIZATIONS:
        raise CompressionError(
            f"quantization={quantization!r} is unknown; fix: pass --quantization "
            f"(quantization=) one of {', '.join(QUANTIZATIONS)}"
        )
    return {"qscheme": qscheme, "quantization": quantization}


def _distil_texts(method: str, texts: Sequence[str] | None) -> list[str]:
    if method != "layers":
        raise CompressionError(
            f"--distil applies to --method layers (re-training after layers "
            f"are dropped), not {method!r}; fix: drop --distil"
        )
    if texts is None:
        from miniature.core.data import builtin_sentiment_data

        texts = builtin_sentiment_data().train.texts
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise CompressionError("distillation needs texts; fix: pass --distil-data with a text column")
    return texts


def _check_distil(epochs: float, learning_rate: float, texts: Sequence[str]) -> dict[str, Any]:
    from miniature.core.cache import fingerprint_texts

    for name, value in (("distil_epochs", epochs), ("distil_learning_rate", learning_rate)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise CompressionError(
                f"{name}={value!r} must be a finite number > 0; fix: pass "
                f"--{name.replace('_', '-')} (e.g. {DISTIL_EPOCHS:g} epochs)"
            )
    return {
        "epochs": float(epochs),
        "learning_rate": float(learning_rate),
        "temperature": DISTIL_TEMPERATURE,
        "batch_size": 32,
        "seed": 0,
        "max_length": 128,
        "texts": len(texts),
        "texts_fingerprint": fingerprint_texts(list(texts)),
    }


def _distil(
    teacher: Any,
    student: Any,
    tokenizer: Any,
    texts: list[str],
    settings: dict[str, Any],
    *,
    progress: bool,
    causal_lm: bool = False,
) -> dict[str, Any]:
    """Train ``student`` in place on the teacher's softened outputs over ``texts``.

    A classifier learns the teacher's label distribution of each text; a causal LM
    (``causal_lm``) the teacher's next-token distribution at every real token of each text,
    computed batch by batch (a vocabulary-wide target per token is too large to keep).
    Agreement is on the predicted label, or on the most likely next token.
    """
    import math

    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(settings["seed"])
    generator = torch.Generator().manual_seed(settings["seed"])
    encoded = tokenizer(texts, truncation=True, max_length=settings["max_length"])["input_ids"]
    size = settings["batch_size"]
    # right-padded by hand: a causal LM's tokenizer often has no pad token (GPT-2, Llama)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def padded(rows: list[int]) -> dict[str, Any]:
        if not causal_lm:
            return dict(tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="pt"))
        width = max(len(encoded[i]) for i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, i in enumerate(rows):
            ids[k, : len(encoded[i])] = torch.tensor(encoded[i])
            mask[k, : len(encoded[i])] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def batches(order: list[int]) -> Iterator[tuple[list[int], dict[str, Any]]]:
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            yield rows, padded(rows)

    def outputs(model: Any, batch: dict[str, Any]) -> Any:
        """Logits per text (classifier) or per real token (causal LM)."""
        logits = model(**batch).logits
        return logits[batch["attention_mask"].bool()] if causal_lm else logits

    by_length = sorted(range(len(texts)), key=lambda i: len(encoded[i]))

    def logits_of(model: Any) -> Any:
        model.eval()
        out = torch.empty(len(texts), model.config.num_labels)
        with torch.inference_mode():
            for rows, batch in batches(by_length):
                out[rows] = model(**batch).logits.float()
        return out

    def top_choices(model: Any) -> Any:
        model.eval()
        with torch.inference_mode():
            return torch.cat([outputs(model, batch).argmax(-1) for _, batch in batches(by_length)])

    temperature = settings["temperature"]
    if causal_lm:
        reference_top = top_choices(teacher)
        agreement_before = float((top_choices(student) == reference_top).float().mean())
    else:
        targets = logits_of(teacher)
        agreement_before = float((logits_of(student).argmax(1) == targets.argmax(1)).float().mean())
        soft = torch.softmax(targets / temperature, dim=-1)
    optimiser = torch.optim.AdamW(student.parameters(), lr=settings["learning_rate"])
    total = max(1, math.ceil(settings["epochs"] * len(texts) / size))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1 - step / total)
    losses: list[float] = []
    student.train()
    with tqdm(total=total, desc="distilling from the reference", unit="step", disable=not progress, leave=False) as bar:
        while len(losses) < total:
            order = torch.randperm(len(texts), generator=generator).tolist()
            for rows, batch in batches(order):
                if len(losses) >= total:
                    break
                if causal_lm:
                    with torch.no_grad():  # not inference_mode: the target is saved for backward
                        target = torch.softmax(outputs(teacher, batch).float() / temperature, dim=-1)
                else:
                    target = soft[rows]
                log_probs = torch.log_softmax(outputs(student, batch) / temperature, dim=-1)
                loss = torch.nn.functional.kl_div(log_probs, target, reduction="batchmean")
                loss = loss * temperature**2
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                losses.append(float(loss.detach()))
                bar.update(1)
    student.eval()
    if causal_lm:
        agreement_after = float((top_choices(student) == reference_top).float().mean())
    else:
        agreement_after = float((logits_of(student).argmax(1) == targets.argmax(1)).float().mean())
    return {
        "steps": total,
        "loss_first_last": [losses[0], sum(losses[-10:]) / len(losses[-10:])],
        "agreement": "next-token top choice" if causal_lm else "predicted label",
        "agreement_with_reference_before": round(agreement_before, 4),
        "agreement_with_reference_after": round(agreement_after, 4),
    }


def _same_job(record: dict[str, Any], method: str, settings: dict[str, Any], source_print: str) -> bool:
    return (
        record.get("format") == FORMAT_VERSION
        and record.get("method") == method
        and record.get("requested") == settings
        and record.get("source", {}).get("fingerprint") == source_print
    )


# -- building ---------------------------------------------------------------------------------
def detect_head(config: Any) -> str:
    """The task head a config's architecture carries (``encoder`` when none is known)."""
    for architecture in getattr(config, "architectures", None) or []:
        for suffix, head in _HEAD_SUFFIXES:
            if architecture.endswith(suffix):
                return head
    return "encoder"


def _build(
    spec: Any, method: str, settings: dict[str, Any], built: Path, *, progress: bool, distil_texts: Sequence[str] = ()
) -> tuple[dict[str, Any], str, str]:
    import transformers

    from miniature.core.models import load_model, model_file_boundary, tokenizer_file_name

    transformers.logging.set_verbosity_error()
    with model_file_boundary(spec, "config.json"):
        config = transformers.AutoConfig.from_pretrained(spec.source)
    head = detect_head(config)
    model = load_model(spec, head=head).model
    # a fresh tokenizer: the wrapper's copy has its model_max_length changed for encoding
    with model_file_boundary(spec, tokenizer_file_name(spec)):
        tokenizer = transformers.AutoTokenizer.from_pretrained(spec.source)
    before = _count(model)
    as_onnx = settings.get("format") == "onnx"
    steps = {"int8": _quantize, "prune": _prune, "layers": _drop_layers, "none": _unchanged}
    with _bar(progress, f"compress {method} [{spec.name}]") as bar:
        # int8 as ONNX: onnxruntime quantizes the fp32 export (below), torchao is not used
        measured = (
            _unchanged(model, settings, built)
            if as_onnx and method == "int8"
            else steps[method](model, settings, built)
        )
        bar.update(1)
    if settings.get("distil"):
        if head not in ("classification", "causal-lm"):
            raise CompressionError(
                f"--distil re-trains a classifier or a causal LM from the reference's outputs, "
                f"but {spec.name!r} has a {head!r} head; fix: distil a "
                "sequence-classification model or a causal LM, or drop --distil"
            )
        teacher = load_model(spec, head=head).model
        measured["distillation"] = _distil(
            teacher,
            model,
            tokenizer,
            list(distil_texts),
            settings["distil"],
            progress=progress,
            causal_lm=head == "causal-lm",
        )
        model.save_pretrained(str(built), safe_serialization=True)
    measured["parameters_before"] = before
    measured.setdefault("parameters_after", _count(model))
    if as_onnx:
        measured["onnx"] = _export(model, tokenizer, head, settings, built)
    tokenizer.save_pretrained(str(built))
    return measured, head, type(model).__name__


def _unchanged(model: Any, settings: dict[str, Any], built: Path) -> dict[str, Any]:
    """No compression (the model as loaded, for an ONNX export)."""
    built.mkdir(parents=True, exist_ok=True)
    return {}


def _export(model: Any, tokenizer: Any, head: str, settings: dict[str, Any], built: Path) -> dict[str, Any]:
    """Replace the built folder's PyTorch weights with ``model.onnx`` (int8 when asked)."""
    from miniature.tools.export import ExportError, export_onnx

    try:
        written = export_onnx(
            model,
            tokenizer,
            built,
            head=head,
            int8=settings["onnx_int8"],
            per_channel=settings.get("qscheme", "per-channel") == "per-channel",
        )
    except ExportError as error:
        raise CompressionError(str(error)) from None
    for weights in built.glob("*.safetensors"):
        weights.unlink()
    written["bytes"] = (built / written["file"]).stat().st_size
    return written


@contextlib.contextmanager
def _bar(progress: bool, description: str) -> Iterator[Any]:
    from tqdm.auto import tqdm

    with tqdm(total=1, desc=description, unit="step", disable=not progress, leave=False) as bar:
        yield bar


def _count(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _quantize(model: Any, settings: dict[str, Any], built: Path) -> dict[str, Any]:
    """torchao's ``quantize_`` of every Linear, saved in the format the loader reads."""
    from miniature.errors import ModelReferenceError

    try:
        require_torchao("--method int8 quantizes with torchao")
    except ModelReferenceError as error:  # the same line, as a compression error
        raise CompressionError(str(error)) from None
    from torchao.quantization import quantize_

    quantize_(model, torchao_config(settings["quantization"], settings["qscheme"]))
    quantized = save_torchao(model, built)
    import torchao

    return {
        "quantized_modules": sorted({name.rsplit(".", 1)[0] for name in quantized}),
        "quantized_count": len(quantized),
        "tensor_types": sorted(set(quantized.values())),
        "torchao": torchao.__version__,
        "weights_bytes": (built / TORCHAO_WEIGHTS).stat().st_size,
    }


def _prune(model: Any, settings: dict[str, Any], built: Path) -> dict[str, Any]:
    import torch
    from torch.nn.utils import prune

    modules = [module for module in _layer_container(model)[0].modules() if isinstance(module, torch.nn.Linear)]
    before = measured_sparsity(model)
    amount = settings["sparsity"]
    if amount > 0:
        if settings["prune_scope"] == "global":
            prune.global_unstructured(
                [(m, "weight") for m in modules], pruning_method=prune.L1Unstructured, amount=amount
            )
        else:
            for module in modules:
                prune.l1_unstructured(module, "weight", amount=amount)
        for module in modules:
            prune.remove(module, "weight")
    model.save_pretrained(str(built), safe_serialization=True)
    return {
        "encoder_sparsity_before": before,
        "encoder_sparsity": measured_sparsity(model),
        "pruned_matrices": len(modules),
        "encoder_weights": int(sum(m.weight.numel() for m in modules)),
    }


def _drop_layers(model: Any, settings: dict[str, Any], built: Path) -> dict[str, Any]:
    import torch

    container, attribute = _layer_container(model)
    layers = getattr(container, attribute)
    total = len(layers)
    keep = settings["keep_layers"]
    if keep is None:
        if total < 2:
            raise CompressionError(
                f"the model has {total} encoder layer, so there is none to "
                "drop; fix: compress it another way (--method int8 or prune)"
            )
        keep = default_keep_layers(total)
    bad = [i for i in keep if not 0 <= i < total]
    if bad:
        raise CompressionError(
            f"keep_layers: layer {bad[0]} is out of range; the model has "
            f"{total} encoder layers (0..{total - 1}); fix: pass --keep-layers "
            f"(keep_layers=) indices between 0 and {total - 1}"
        )
    kept = torch.nn.ModuleList([layers[i] for i in keep])
    for position, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                setattr(module, "layer_idx", position)
    setattr(container, attribute, kept)
    model.config.num_hidden_layers = len(keep)  # DistilBERT maps this to n_layers, GPT-2 to n_layer
    if isinstance(getattr(model.config, "layer_types", None), list):  # per-layer attention kinds
        model.config.layer_types = [model.config.layer_types[i] for i in keep]
    model.save_pretrained(str(built), safe_serialization=True)
    return {"kept_layers": list(keep), "layers_before": total, "layers_after": len(keep)}


def _layer_container(model: Any) -> tuple[Any, str]:
    """The module holding the encoder's layer list and the list's attribute name."""
    import torch

    base = getattr(model, "base_model", model)
    for holder in ("encoder", "transformer"):
        container = getattr(base, holder, None)
        if container is not None and isinstance(getattr(container, "layer", None), torch.nn.ModuleList):
            return container, "layer"
    for attribute in ("layers", "h"):  # decoders: Llama, Qwen, Mistral (model.layers), GPT-2 (transformer.h)
        if isinstance(getattr(base, attribute, None), torch.nn.ModuleList):
            return base, attribute
    raise CompressionError(
        f"cannot find the transformer layers of a {type(model).__name__} "
        "(looked for encoder.layer, transformer.layer, layers and h); fix: compress a "
        "BERT-, DistilBERT-, Llama- or GPT-2-style model"
    )


def _record(
    spec: Any,
    source_print: str,
    method: str,
    settings: dict[str, Any],
    head: str,
    architecture: str,
    measured: dict[str, Any],
) -> dict[str, Any]:
    import platform

    import torch
    import transformers

    from miniature import __version__

    resolved = dict(settings)
    if method == "layers":
        resolved["keep_layers"] = measured["kept_layers"]
    record: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "method": method,
        "requested": settings,
        "settings": resolved,
        "head": head,
        "architecture": architecture,
        "source": {"name": spec.name, "path": spec.source, "fingerprint": source_print},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "miniature": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    }
    if method == "gguf":
        record["backend"] = "llama.cpp"
    if method == "int8" and "quantized_modules" in measured:
        record["backend"] = "torchao"
        record["quantized_modules"] = measured.pop("quantized_modules")
    record["measured"] = measured
    return record
