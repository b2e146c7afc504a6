"""GGUF quants of a PyTorch decoder, made the way llama.cpp users make them.

:func:`write_gguf` converts a model folder with llama.cpp's own ``convert_hf_to_gguf.py``
(to f16) and quantizes that file with llama.cpp's quantizer (``llama_model_quantize``
through llama-cpp-python), so the gate checks the file a team would publish. Both run in
child processes: the converter is a script of a llama.cpp source folder (it is not in the
llama-cpp-python wheel), and a llama.cpp built for another CPU dies by signal, which is
turned into one line here rather than ending the caller.

The llama.cpp source folder is ``llama_cpp=`` (``--llama-cpp DIR``), else the
``MINIATURE_LLAMA_CPP`` environment variable: a llama.cpp checkout, or the llama-cpp-python
sdist (its ``vendor/llama.cpp``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from miniature.errors import MiniatureError

#: ``--quantization`` with ``--format gguf``: llama.cpp's file types (llama-quantize's names)
GGUF_QUANTIZATIONS: dict[str, str | None] = {
    "f16": None,  # the converter's output, not quantized
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q5_k_s": "LLAMA_FTYPE_MOSTLY_Q5_K_S",
    "q5_1": "LLAMA_FTYPE_MOSTLY_Q5_1",
    "q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "iq4_xs": "LLAMA_FTYPE_MOSTLY_IQ4_XS",
    "iq4_nl": "LLAMA_FTYPE_MOSTLY_IQ4_NL",
    "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K",
}
ENVIRONMENT = "MINIATURE_LLAMA_CPP"
CONVERTER = "convert_hf_to_gguf.py"
#: a child process quantizing argv[1] into argv[2] as the llama_ftype named argv[3]
QUANTIZE_CODE = """
import ctypes, sys
import llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, sys.argv[3])
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
"""


#: config.json keys llama.cpp's converter reads under an old name that transformers no longer
#: writes: model type -> {old name: current name} (GPT-2's ``n_ctx``, its ``n_positions``)
LEGACY_CONFIG_KEYS: dict[str, dict[str, str]] = {"gpt2": {"n_ctx": "n_positions"}}
#: the last line of the converter's refusal of a BPE tokenizer whose pre-tokenizer it does not know
UNKNOWN_BPE = "BPE pre-tokenizer was not recognized"


class GgufExportError(MiniatureError, ValueError):
    """A GGUF conversion that cannot be done here (no converter, an architecture llama.cpp
    does not convert, a failed step), with the fix."""


def converter_path(llama_cpp: str | Path | None = None) -> Path:
    """llama.cpp's ``convert_hf_to_gguf.py``: in ``llama_cpp`` (or ``$MINIATURE_LLAMA_CPP``),
    a llama.cpp source folder or the llama-cpp-python sdist holding one in vendor/llama.cpp."""
    given = llama_cpp if llama_cpp is not None else os.environ.get(ENVIRONMENT)
    fix = (
        f"fix: pass --llama-cpp DIR (llama_cpp=, or set {ENVIRONMENT}) naming a llama.cpp source "
        "folder, e.g. the llama-cpp-python sdist's: pip download llama-cpp-python==VERSION "
        "--no-binary :all: --no-deps, then tar xf it and pass the extracted folder"
    )
    if not given:
        raise GgufExportError(
            f"--format gguf converts with llama.cpp's {CONVERTER}, which the llama-cpp-python wheel "
            f"does not ship, and no llama.cpp source folder was named; {fix}"
        )
    root = Path(given).expanduser()
    for candidate in (root / CONVERTER, root / "vendor" / "llama.cpp" / CONVERTER):
        if candidate.is_file():
            return candidate
    raise GgufExportError(f"{str(root)!r} holds no {CONVERTER} (nor vendor/llama.cpp/{CONVERTER}); {fix}")


def converted_architectures(converter: Path) -> set[str]:
    """The Hugging Face architecture names the converter registers (read from its source
    text, nothing imported); empty when its layout is not one known here."""
    folder = converter.parent
    names: set[str] = set()
    for file in [converter, *sorted((folder / "conversion").glob("*.py"))]:
        text = file.read_text("utf-8", errors="replace")
        for call in re.findall(r"register\(([^)]*)\)", text):
            names.update(re.findall(r"[\"']([A-Za-z0-9_]+)[\"']", call))
        if file.name == "__init__.py":
            names.update(re.findall(r"^\s*[\"']([A-Za-z0-9_]+)[\"']\s*:\s*[\"'][a-z0-9_]+[\"'],", text, re.M))
    return names


def check_architecture(architectures: list[str], converter: Path, name: str) -> None:
    """Refuse a model whose architecture llama.cpp's converter does not convert (one line)."""
    known = converted_architectures(converter)
    if known and not any(a in known for a in architectures):
        raise GgufExportError(
            f"reference {name!r} is a {', '.join(architectures) or 'model with no architecture named'}, "
            f"which llama.cpp's converter ({converter}) does not convert to GGUF; fix: gate it as "
            "PyTorch or ONNX (--format pytorch/onnx), or convert a Llama-, GPT-2-, Qwen- or "
            "Mistral-style decoder"
        )


def converter_input(source: Path, scratch: Path) -> Path:
    """The folder the converter reads: ``source``, or, where its config.json lacks a key the
    converter reads under an old name (a GPT-2 saved by transformers has ``n_positions`` but
    no ``n_ctx``, and the converter stops with ``KeyError: 'n_ctx'``), a folder in ``scratch``
    linking ``source``'s files with a config.json that has both."""
    if not (source / "config.json").is_file():
        return source  # the converter says what it lacks
    config = json.loads((source / "config.json").read_text("utf-8"))
    missing = {
        old: config[new]
        for old, new in LEGACY_CONFIG_KEYS.get(str(config.get("model_type")), {}).items()
        if old not in config and new in config
    }
    if not missing:
        return source
    folder = scratch / "model"
    folder.mkdir()
    for file in source.iterdir():
        if file.name != "config.json":
            (folder / file.name).symlink_to(file.resolve())
    (folder / "config.json").write_text(json.dumps({**config, **missing}, indent=2), "utf-8")
    return folder


def unknown_tokenizer(name: str, converter: Path, stderr: str) -> str | None:
    """One line for the converter's refusal of a BPE tokenizer it does not recognise (its own
    message is a box of warnings), None for other failures."""
    if UNKNOWN_BPE not in (stderr or ""):
        return None
    found = re.search(r"chkhsh:\s*([0-9a-f]{64})", stderr)
    digest = f" (chkhsh {found.group(1)})" if found else ""
    return (
        f"reference {name!r}: llama.cpp's converter {converter} does not recognise its BPE tokenizer{digest}: "
        "it knows a BPE tokenizer's pre-tokenizer only by the hash of the token ids it gives a check text, "
        "and a tokenizer trained or changed since its publication has a hash it does not know; fix: convert "
        "the model with the published tokenizer it was trained from, unchanged, or add this hash to "
        "get_vocab_base_pre in the converter of a llama.cpp checkout (mapped to the pre-tokenizer it uses, "
        "e.g. 'gpt-2') and pass that checkout with --llama-cpp"
    )


def _died(what: str, done: subprocess.CompletedProcess[str]) -> str:
    """One line for a child process that failed: its signal, else its last stderr line."""
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        from miniature.core.gguf_model import REINSTALL

        return (
            f"{what} died ({name}: a llama.cpp build for CPU instructions this machine does not run); "
            f"fix: reinstall llama-cpp-python built for a portable CPU: {REINSTALL}"
        )
    lines = [line.strip() for line in (done.stderr or "").strip().splitlines() if line.strip()]
    return f"{what} failed ({lines[-1][:300] if lines else f'exit status {done.returncode}'})"


def write_gguf(
    source: Path, built: Path, quantization: str, *, name: str, llama_cpp: str | Path | None
) -> dict[str, Any]:
    """Convert the model folder ``source`` to f16 GGUF with llama.cpp's converter and, unless
    ``quantization`` is ``f16``, quantize it with llama.cpp's quantizer into
    ``built/model-QUANT.gguf``; what the file really holds (its file type, the tensor types
    by count: small or odd-shaped tensors fall back to other types) is returned for the record."""
    from miniature.core.gguf_model import read_info, require_llama_cpp

    converter = converter_path(llama_cpp)
    ftype = GGUF_QUANTIZATIONS[quantization]
    if ftype is not None:
        require_llama_cpp()
    built.mkdir(parents=True, exist_ok=True)
    target = built / f"model-{quantization}.gguf"
    with tempfile.TemporaryDirectory(prefix="miniature-gguf-") as scratch:
        f16 = Path(scratch) / "model-f16.gguf"
        model = converter_input(source, Path(scratch))
        done = subprocess.run(
            [sys.executable, str(converter), str(model), "--outfile", str(f16), "--outtype", "f16"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not f16.is_file():
            refused = unknown_tokenizer(name, converter, done.stderr) if done.returncode > 0 else None
            if refused:
                raise GgufExportError(refused)
            raise GgufExportError(
                f"reference {name!r}: {_died(f'llama.cpp converter {converter}', done)}; fix: check that its "
                "architecture and tokenizer are ones the converter reads (a SentencePiece or a known BPE "
                "tokenizer), and that the converter's requirements are installed"
            )
        f16_bytes = f16.stat().st_size
        if ftype is None:
            shutil.move(str(f16), target)
        else:
            done = subprocess.run(
                [sys.executable, "-c", QUANTIZE_CODE, str(f16), str(target), ftype],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0 or not target.is_file():
                raise GgufExportError(f"reference {name!r}: {_died(f'llama.cpp quantizer ({quantization})', done)}")
    info = read_info(target, name)
    from importlib.metadata import PackageNotFoundError, version

    try:
        runtime = version("llama-cpp-python")
    except PackageNotFoundError:  # f16 only: converted, never quantized here
        runtime = None
    return {
        "file": target.name,
        "file_type": info.file_type,
        "tensor_types": info.tensor_types,
        "bytes": target.stat().st_size,
        "f16_bytes": f16_bytes,
        "converter": str(converter),
        "llama_cpp_python": runtime,
    }
