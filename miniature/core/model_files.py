"""A model reference (:class:`ModelSpec`) and the one error boundary for reading a model's
files: every parse of a config, tokenizer, weights header or record runs behind
:func:`model_file_boundary`, so a bad file is one line naming the model, the file and the fix.

Below :mod:`miniature.core.models` (which re-exports these names) and
:mod:`miniature.core.formats`, so both can read files safely without importing each other.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miniature.errors import MiniatureError, ModelReferenceError


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model reference: the name shown in reports and where to load it from."""

    name: str
    source: str
    is_local: bool


def hub_error(spec: ModelSpec, error: Exception) -> ModelReferenceError:
    """The one-line error for a hub model that could not be fetched from the Hub or its cache."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ModelReferenceError(
        f"model {spec.name!r}: could not load {spec.source!r} from the Hugging Face Hub or its "
        f"local cache ({first}); fix: check the network and the id, pre-download it with "
        "`huggingface-cli download`, or pass a local directory"
    )


# -- the one error boundary for a model's files --------------------------------------------------
#: A safetensors header larger than this is not a header (the format caps it at 100 MB).
_MAX_SAFETENSORS_HEADER = 100_000_000


def _as_spec(model: "ModelSpec | str | Path") -> "ModelSpec":
    if isinstance(model, ModelSpec):
        return model
    path = Path(model)
    return ModelSpec(name=path.name or str(model), source=str(path), is_local=True)


def _first_line(error: BaseException) -> str:
    """The error's first line, with the next one when the first only announces it (torch's
    "Error(s) in loading state_dict for Linear:" is followed by the tensor and both shapes)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    line = lines[0] if lines else ""
    if line.endswith(":") and len(lines) > 1:
        line = f"{line} {lines[1]}"
    line = line[:300] + ("..." if len(line) > 300 else "")
    return f"{type(error).__name__}: {line}" if line else type(error).__name__


def model_file_error(
    model: "ModelSpec | str | Path",
    file: str | None,
    error: BaseException | str,
    *,
    allow_pickle: bool = True,
    fix: str | None = None,
) -> ModelReferenceError:
    """The one-line error for a model file that cannot be read or parsed: the model, the
    file and the fix (re-save a local folder, re-download a hub copy)."""
    spec = _as_spec(model)
    reason = error if isinstance(error, str) else _first_line(error)
    message = str(error)
    if not isinstance(error, str):
        if "trust_remote_code" in message:
            return ModelReferenceError(
                f"model {spec.name!r} needs code shipped with the model to load; it was not run. "
                "fix: if you trust its source, pass --trust-remote-code"
            )
        if (
            not allow_pickle
            and isinstance(error, (OSError, ValueError))
            and "safetensors" in message.lower()
            and "deserializ" not in message.lower()
        ):
            return ModelReferenceError(
                f"model {spec.name!r} ({spec.source}) has no safetensors weights, only pickle "
                "files, which can run code when loaded; fix: convert it to safetensors, or "
                "pass --allow-pickle if you trust its source"
            )
        if not spec.is_local and isinstance(error, OSError):
            return hub_error(spec, error)
    where = f"{file} in {spec.source!r}" if file else f"the files in {spec.source!r}"
    if fix is None:
        fix = (
            "re-save the model there with save_pretrained (safetensors) and its tokenizer with "
            "tokenizer.save_pretrained, or copy/download it again"
            if spec.is_local
            else f"delete its copy in the Hugging Face cache and download it again "
            f"(huggingface-cli download {spec.source} --force-download)"
        )
    return ModelReferenceError(f"model {spec.name!r}: {where} could not be read ({reason}); fix: {fix}")


@contextlib.contextmanager
def model_file_boundary(
    model: "ModelSpec | str | Path", file: str | None = None, *, allow_pickle: bool = True, fix: str | None = None
) -> Iterator[None]:
    """The one error boundary every parse of a model's files (config, tokenizer, weights,
    records) runs behind: any exception becomes a one-line :class:`ModelReferenceError`
    naming the model, the file and the fix (see :func:`model_file_error`).

    ``model`` is a :class:`ModelSpec` or a local model folder; ``file`` the file being
    read (relative to the folder), when one is; ``fix`` replaces the default fix (re-save or
    re-download). Errors of miniature itself pass through.
    """
    try:
        yield
    except MiniatureError:
        raise
    except Exception as error:  # noqa: BLE001 - this is the boundary: every parse error
        raise model_file_error(model, file, error, allow_pickle=allow_pickle, fix=fix) from None


def read_json_file(model: "ModelSpec | str | Path", name: str) -> dict[str, Any]:
    """A model folder's JSON file (config.json, tokenizer.json, ...) as a dict, parsed behind
    :func:`model_file_boundary`; a file that is not a JSON object is refused by name."""
    spec = _as_spec(model)
    with model_file_boundary(spec, name):
        value = json.loads((Path(spec.source) / name).read_text("utf-8"))
    if not isinstance(value, dict):
        raise model_file_error(spec, name, f"it is a JSON {type(value).__name__}, not an object")
    return value


def read_model_config(model: "ModelSpec | str | Path") -> dict[str, Any]:
    """A local model's config.json as a dict (one-line error naming the file if it is not)."""
    return read_json_file(model, "config.json")


def safetensors_header(model: "ModelSpec | str | Path", name: str) -> dict[str, Any]:
    """The header of a safetensors file in a model folder, checked against the file's size
    (a header that claims more bytes than the file has, or tensors that reach past its
    end, i.e. a truncated download); no tensor is read."""
    spec = _as_spec(model)
    file = Path(spec.source) / name
    with model_file_boundary(spec, name):
        size = file.stat().st_size
        with open(file, "rb") as handle:
            start = handle.read(8)
            if len(start) < 8:
                raise model_file_error(spec, name, f"it has {size} bytes, too few for a safetensors file")
            length = int.from_bytes(start, "little")
            if length > min(size - 8, _MAX_SAFETENSORS_HEADER):
                raise model_file_error(
                    spec, name, f"its header claims {length:,} bytes but the file has {size:,} (truncated or corrupted)"
                )
            header = json.loads(handle.read(length))
        if not isinstance(header, dict):
            raise model_file_error(spec, name, "its header is not a JSON object")
        ends = [int(info["data_offsets"][1]) for key, info in header.items() if key != "__metadata__"]
        needed = 8 + length + max(ends, default=0)
        if needed > size:
            raise model_file_error(
                spec, name, f"its tensors need {needed:,} bytes but the file has {size:,} (truncated)"
            )
    return header


def check_model_files(path: Path, reference: str | None = None) -> None:
    """Parse a local model folder's small files before anything loads it: config.json,
    the tokenizer's JSON files, each safetensors header, and that no ONNX file is empty. Each problem is one line
    naming the model and the file (see :func:`model_file_boundary`)."""
    spec = ModelSpec(name=reference or path.name, source=str(path), is_local=True)
    read_model_config(spec)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "model.safetensors.index.json"):
        if (path / name).is_file():
            read_json_file(spec, name)
    for file in sorted(path.glob("*.safetensors")):
        safetensors_header(spec, file.name)
    for file in sorted(path.glob("*.onnx")):
        if file.is_file() and file.stat().st_size == 0:
            raise model_file_error(spec, file.name, "it is empty (0 bytes)", fix="export the model to ONNX again")
