"""GGUF models (llama.cpp's file format) behind the same interface as a PyTorch decoder.

A ``.gguf`` file, or a folder holding one, is a candidate either way it can be run:

* ``llama.cpp`` (the default, ``--gguf-runtime llama.cpp``): loaded by llama.cpp through
  llama-cpp-python, so the gate sees what llama.cpp, Ollama and LM Studio compute with the
  file: its quantized kernels. :class:`GgufModel` takes the padded batch a transformers
  causal LM takes and returns its ``logits`` (every position) or, with
  ``output_hidden_states``, the final hidden state after the final norm (llama.cpp's
  per-token embeddings, the same state as transformers' ``hidden_states[-1]``), so
  :class:`~miniature.core.models.DecoderWrapper`, the token distribution and the choice
  scores use it unchanged. One sequence runs at a time (the KV cache cleared between).
* ``transformers``: the stored weights dequantized by transformers (``gguf_file=``) and run
  by PyTorch: what the quantization of the weights alone changes.

The reference's tokenizer gives the token ids both models see; a GGUF whose vocabulary
differs from it is refused (:func:`vocabulary_problem`). llama.cpp built for another CPU
dies with "Illegal instruction" (SIGILL) or a segmentation fault at its first quantized
matrix product, which would kill the whole run: :func:`probe` first runs the file once in a
child process and turns such a death into one line with the fix.

llama-cpp-python and gguf are imported only when such a file is loaded
(``pip install 'pytest-miniature[gguf]'``).
"""

from __future__ import annotations

import collections
import hashlib
import os
import signal
import subprocess
import sys
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miniature.errors import ModelReferenceError

if TYPE_CHECKING:  # pragma: no cover
    import torch

SUFFIX = ".gguf"
LLAMA_CPP, TRANSFORMERS = "llama.cpp", "transformers"
#: how a GGUF file can be run (``--gguf-runtime``)
RUNTIMES = (LLAMA_CPP, TRANSFORMERS)
#: GGUF architectures that are encoders (llama.cpp's embedding models), not causal LMs
ENCODER_ARCHITECTURES = ("bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "t5encoder", "neo-bert")
#: the install line named when llama-cpp-python is missing or was built for another CPU
BUILD_FLAGS = "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF"
REINSTALL = (
    f'CMAKE_ARGS="{BUILD_FLAGS}" pip install --force-reinstall --no-cache-dir --no-binary llama-cpp-python '
    "llama-cpp-python (or a prebuilt CPU wheel: pip install llama-cpp-python --extra-index-url "
    "https://abetlen.github.io/llama-cpp-python/whl/cpu)"
)
_MAGIC = b"GGUF"
#: a child process that loads and runs the file once (see :func:`probe`)
PROBE_CODE = """
import sys
import llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=16, n_batch=16, n_ubatch=16, logits_all=True,
                      verbose=False, n_threads=1, n_threads_batch=1)
ids = [max(0, int(llm.token_bos()))] + [i % llm.n_vocab() for i in range(1, 8)]
llm.eval(ids)
llama_cpp.llama_set_embeddings(llm.ctx, True)
llm.reset()
llm.eval(ids)
print("ok")
"""
#: how long the probe may take to load and run the file once
PROBE_TIMEOUT_S = 600.0
_PROBED: dict[tuple[str, int, int], None] = {}
#: headers read (:func:`read_info`), by file: a run reads each several times, and a large
#: vocabulary (GPT-2's 50257 tokens and 50000 merges) takes the gguf package seconds to parse
_INFOS: dict[tuple[str, int, int], "GgufInfo"] = {}


def gguf_file(source: str | Path) -> Path | None:
    """The GGUF file a model reference names: a ``.gguf`` file, or a folder's only ``.gguf``
    file; None for anything else. A folder holding several is refused by name."""
    path = Path(source)
    if path.is_file():
        return path if path.suffix.lower() == SUFFIX else None
    if not path.is_dir():
        return None
    found = sorted(p for p in path.glob(f"*{SUFFIX}") if p.is_file())
    if len(found) > 1:
        raise ModelReferenceError(
            f"model folder {str(path)!r} holds several GGUF files ({', '.join(p.name for p in found)}); "
            "fix: pass the one to gate as --candidate FILE.gguf"
        )
    return found[0] if found else None


def check_gguf_header(file: Path, name: str) -> None:
    """Refuse a file that is not GGUF (its first bytes are not ``GGUF``): a truncated
    download, or another format renamed."""
    try:
        with open(file, "rb") as handle:
            start = handle.read(4)
    except OSError as error:
        raise ModelReferenceError(
            f"model {name!r}: {str(file)!r} could not be read ({error}); fix: check the path"
        ) from None
    if start != _MAGIC:
        raise ModelReferenceError(
            f"model {name!r}: {str(file)!r} is not a GGUF file (it does not start with b'GGUF'); "
            "fix: download or convert it again (convert_hf_to_gguf.py, or miniature compress --format gguf)"
        )


def require_llama_cpp() -> Any:
    """llama-cpp-python, or one line with the install command."""
    try:
        import llama_cpp
    except ImportError:
        raise ModelReferenceError(
            "GGUF files run by llama.cpp need llama-cpp-python; fix: pip install 'pytest-miniature[gguf]' "
            f"(it builds llama.cpp, minutes; see docs/gguf.md), or pass --gguf-runtime {TRANSFORMERS}"
        ) from None
    return llama_cpp


def gguf_reader(file: Path) -> Any:
    try:
        from gguf import GGUFReader
    except ImportError:
        raise ModelReferenceError(
            f"reading the GGUF file {str(file)!r} needs the gguf package; fix: pip install 'pytest-miniature[gguf]'"
        ) from None
    return GGUFReader(str(file))


def metadata_value(reader: Any, key: str) -> Any:
    """A metadata value of a GGUF file (a number, a string, a list of either), None when absent."""
    found = reader.fields.get(key)
    if found is None:
        return None
    return found.contents()


@dataclass
class GgufInfo:
    """What a GGUF file's header says: architecture, nominal file type, the tensor types it
    really holds (small or odd-shaped tensors fall back to other types), its vocabulary and
    sizes."""

    architecture: str
    file_type: str
    tensor_types: dict[str, int]
    tokens: list[str] = field(repr=False)
    context_length: int | None
    embedding_length: int | None

    @property
    def tensor_summary(self) -> str:
        """``Q8_0 ×16, F32 ×5``: the tensor types by count, most first."""
        return ", ".join(f"{kind} ×{count}" for kind, count in self.tensor_types.items())

    @property
    def is_encoder(self) -> bool:
        return self.architecture in ENCODER_ARCHITECTURES


def file_type_name(value: Any) -> str:
    """llama.cpp's name of a ``general.file_type`` (``Q4_K_M``, ``F16``), ``?`` when unknown."""
    try:
        from gguf import LlamaFileType

        name = LlamaFileType(int(value)).name
    except (ImportError, TypeError, ValueError):
        return "?"
    for prefix in ("MOSTLY_", "ALL_"):
        name = name.removeprefix(prefix)
    return name


def _file_key(file: Path) -> tuple[str, int, int]:
    """A file's identity for this process's caches: its path, size and modification time."""
    stat = file.stat()
    return (str(file.resolve()), stat.st_size, stat.st_mtime_ns)


def read_info(file: Path, name: str | None = None) -> GgufInfo:
    """A GGUF file's :class:`GgufInfo`, read without loading its weights (the gguf package),
    once per file per process; an unreadable file is one line naming it."""
    try:
        key = _file_key(file)
    except OSError:
        key = None  # not there: the reader below says so in one line
    if key is not None and key in _INFOS:
        return _INFOS[key]
    try:
        reader = gguf_reader(file)
        architecture = str(metadata_value(reader, "general.architecture") or "?")
        counts = collections.Counter(t.tensor_type.name for t in reader.tensors)
        tokens = [str(t) for t in (metadata_value(reader, "tokenizer.ggml.tokens") or [])]
        context = metadata_value(reader, f"{architecture}.context_length")
        width = metadata_value(reader, f"{architecture}.embedding_length")
        file_type = metadata_value(reader, "general.file_type")
    except ModelReferenceError:
        raise
    except Exception as error:  # noqa: BLE001 - any parse error of the header: one line
        raise ModelReferenceError(
            f"model {name or file.name!r}: the GGUF file {str(file)!r} could not be read "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); fix: download or convert it again"
        ) from None
    if file_type is None:  # older files: the most common type of the 2-D weights
        file_type_text = counts.most_common(1)[0][0] if counts else "?"
    else:
        file_type_text = file_type_name(file_type)
    info = GgufInfo(
        architecture=architecture,
        file_type=file_type_text,
        tensor_types=dict(counts.most_common()),
        tokens=tokens,
        context_length=int(context) if context is not None else None,
        embedding_length=int(width) if width is not None else None,
    )
    if key is not None:
        _INFOS[key] = info
    return info


def table_text(file: Path, runtime: str) -> tuple[str, str]:
    """The model table's quantization and architecture entries of a GGUF file:
    ``GGUF Q4_0 (Q4_0 ×15, F32 ×5, Q8_0 ×1), run by llama.cpp`` and ``llama (GGUF), decoder``."""
    info = read_info(file)
    how = "run by llama.cpp" if runtime == LLAMA_CPP else "dequantized by transformers"
    kind = "encoder" if info.is_encoder else "decoder"
    return f"GGUF {info.file_type} ({info.tensor_summary}), {how}", f"{info.architecture} (GGUF), {kind}"


def vocabulary_problem(tokens: list[str], tokenizer: Any, name: str, reference: str) -> str | None:
    """Why the GGUF's vocabulary is not the reference tokenizer's (one line with the fix),
    None when every token id of the reference's tokenizer is the same token in the GGUF
    (llama.cpp's converter may pad the vocabulary with tokens past the tokenizer's)."""
    size = len(tokenizer)
    ours = tokenizer.convert_ids_to_tokens(list(range(size)))
    if len(tokens) < size:
        return (
            f"model {name!r}: its GGUF vocabulary has {len(tokens)} tokens but the tokenizer of the "
            f"reference {reference!r} has {size}, so they see different token ids; fix: gate a GGUF "
            "converted from the reference (or its family), with the reference's tokenizer"
        )
    for index, (theirs, mine) in enumerate(zip(tokens, ours)):
        if theirs != mine:
            return (
                f"model {name!r}: its GGUF vocabulary differs from the tokenizer of the reference {reference!r} "
                f"(token id {index} is {theirs!r} in the GGUF, {mine!r} in the tokenizer), so the two models "
                "would read the same ids as different words; fix: gate a GGUF converted from the reference "
                "(or its family), with the reference's tokenizer"
            )
    return None


def runtime_fingerprint(files: str, runtime: str) -> str:
    """A GGUF file's fingerprint for the cache: its bytes' and the runtime's (the same file
    run by llama.cpp and dequantized by transformers gives other outputs)."""
    return hashlib.blake2b(f"{files}\0gguf\0{runtime}".encode(), digest_size=16).hexdigest()


# -- the probe: does llama.cpp run this file on this CPU? ----------------------------------------
def probe_command(file: Path) -> list[str]:
    """The child process :func:`probe` runs: load ``file`` and evaluate a few tokens."""
    return [sys.executable, "-c", PROBE_CODE, str(file)]


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def probe(file: Path, name: str) -> None:
    """Run ``file`` once in a child process (logits and embeddings of a few tokens) before it
    is loaded here, once per file per process: llama.cpp built with instructions this CPU
    does not grant (llama-cpp-python's default native build on a machine that advertises
    AVX-512 or AMX it cannot run) dies with SIGILL or SIGSEGV, which would kill the run. A
    death by signal is one line naming the file, the signal and the fix."""
    key = _file_key(file)
    if key in _PROBED:
        return
    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        done = subprocess.run(
            probe_command(file), capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise ModelReferenceError(
            f"model {name!r}: llama.cpp did not load and run {str(file)!r} within {PROBE_TIMEOUT_S:.0f} s "
            "in a test process; fix: check the file (and the machine's memory)"
        ) from None
    if done.returncode < 0:
        number = -done.returncode
        elsewhere = "llama.cpp was built for CPU instructions this machine does not run"
        what = {
            int(signal.SIGILL): f"Illegal instruction: {elsewhere}",
            int(signal.SIGSEGV): f"a segmentation fault, often because {elsewhere}",
        }.get(number, "a crash")
        raise ModelReferenceError(
            f"model {name!r}: llama.cpp died running {str(file)!r} ({_signal_name(number)}, {what}); "
            f"fix: reinstall llama-cpp-python built for a portable CPU: {REINSTALL}"
        )
    if done.returncode != 0:
        lines = [line for line in (done.stderr or "").strip().splitlines() if line.strip()]
        last = lines[-1].strip() if lines else f"exit status {done.returncode}"
        if "No module named" in last and "llama_cpp" in last:
            require_llama_cpp()  # the same line as in this process
        raise ModelReferenceError(
            f"model {name!r}: llama.cpp could not load and run {str(file)!r} ({last[:300]}); fix: check "
            "that the file is a complete GGUF of an architecture this llama-cpp-python supports "
            "(upgrade it for newer architectures)"
        )
    _PROBED[key] = None


# -- the model -----------------------------------------------------------------------------------
@dataclass
class GgufOutput:
    """A llama.cpp run's outputs with the field names of a transformers causal-LM output."""

    logits: "torch.Tensor | None" = None
    last_hidden_state: "torch.Tensor | None" = None

    @property
    def hidden_states(self) -> tuple["torch.Tensor", ...]:
        """Only the final (normed) state: pooling reads ``[-1]``."""
        if self.last_hidden_state is None:
            raise ValueError("this run asked for logits only (output_hidden_states=False)")
        return (self.last_hidden_state,)


@dataclass
class GgufConfig:
    """What the wrapper reads of a model's config, from the GGUF header."""

    vocab_size: int
    max_position_embeddings: int | None
    hidden_size: int
    model_type: str
    architectures: list[str]
    num_labels: int = 2


class GgufModel:
    """A GGUF file run by llama.cpp, called like a transformers causal LM on a padded batch
    (right padding: each row's real tokens, read through the attention mask)."""

    #: the inputs a batch may carry (ModelWrapper passes only these)
    runtime_input_names = frozenset({"input_ids", "attention_mask"})

    def __init__(self, file: Path, info: GgufInfo, *, name: str, device: str = "cpu", n_ctx: int = 512) -> None:
        self.llama_cpp = require_llama_cpp()
        self.file = file
        self.name = name
        self.info = info
        self.gpu_layers = -1 if device != "cpu" and bool(self.llama_cpp.llama_supports_gpu_offload()) else 0
        self.llm: Any = None
        self.n_ctx = 0
        self._open(max(16, n_ctx))
        llm: Any = self.llm
        self.config = GgufConfig(
            vocab_size=int(llm.n_vocab()),
            max_position_embeddings=info.context_length,
            hidden_size=int(llm.n_embd()),
            model_type=info.architecture,
            architectures=[f"{info.architecture} (GGUF)"],
        )

    def _open(self, n_ctx: int) -> None:
        """(Re)create the llama.cpp context for sequences of up to ``n_ctx`` tokens, all of
        them in one decode (so the embeddings of every position are read at once)."""
        import torch

        if self.llm is not None:  # free the old context first
            self.llm.close()
        self.llm = self.llama_cpp.Llama(
            model_path=str(self.file),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_ubatch=n_ctx,
            logits_all=True,
            n_gpu_layers=self.gpu_layers,
            n_threads=torch.get_num_threads(),
            n_threads_batch=torch.get_num_threads(),  # its default is every core
            verbose=False,
        )
        self.n_ctx = n_ctx
        self.hidden = False  # a new context gives logits
        # closed before the interpreter tears its modules down (llama-cpp-python's own
        # finaliser then finds its C functions gone and prints a traceback)
        weakref.finalize(self, self.llm.close)

    def to(self, device: Any) -> "GgufModel":
        """llama.cpp's offload is chosen at load; moving is a no-op (as ``eval``)."""
        return self

    def eval(self) -> "GgufModel":
        return self

    def sequence(self, ids: list[int], *, hidden: bool) -> Any:
        """One sequence's per-position logits (n, vocab) or final hidden states (n, width), float32."""
        import numpy as np

        if len(ids) > self.n_ctx:
            self._open(max(len(ids), 2 * self.n_ctx))
        llm = self.llm
        if hidden != self.hidden:  # switching makes llama.cpp plan its graph again: once per batch
            self.llama_cpp.llama_set_embeddings(llm.ctx, hidden)
            self.hidden = hidden
            llm.reset()
        # Logits: the tokens this sequence shares with the one before stay in llama.cpp's
        # key/value cache, and their logits in llm.scores (the same tokens at the same
        # positions); only the rest is decoded. Hidden states come from one whole decode.
        keep = 0 if hidden or llm._is_recurrent or llm._is_hybrid else _shared_prefix(llm, ids)
        if keep:
            llm.n_tokens = keep
        else:
            llm.reset()
        llm.eval(ids[keep:])
        if not hidden:
            return np.array(llm.scores[: len(ids)], dtype=np.float32)
        width = self.config.hidden_size
        pointer = self.llama_cpp.llama_get_embeddings(llm.ctx)
        return np.ctypeslib.as_array(pointer, shape=(len(ids) * width,)).reshape(len(ids), width).copy()

    def __call__(
        self, input_ids: Any = None, attention_mask: Any = None, output_hidden_states: bool = False, **_: Any
    ) -> GgufOutput:
        import numpy as np
        import torch

        ids = np.asarray(input_ids.cpu() if hasattr(input_ids, "cpu") else input_ids)
        mask = np.ones(ids.shape, dtype=bool) if attention_mask is None else np.asarray(attention_mask.cpu()) != 0
        width = self.config.hidden_size if output_hidden_states else self.config.vocab_size
        out = torch.zeros((ids.shape[0], ids.shape[1], width), dtype=torch.float32)
        rows = {row: [int(i) for i in ids[row, mask[row]]] for row in range(ids.shape[0])}  # real tokens
        for row in sorted(rows, key=lambda r: rows[r]):  # in token order: neighbours share prefixes
            if rows[row]:
                values = self.sequence(rows[row], hidden=output_hidden_states)
                out[row, torch.from_numpy(np.flatnonzero(mask[row]))] = torch.from_numpy(values)
        if output_hidden_states:
            return GgufOutput(last_hidden_state=out)
        return GgufOutput(logits=out)


def _shared_prefix(llm: Any, ids: list[int]) -> int:
    """How many leading tokens of ``ids`` llama.cpp's context already holds (one at least is
    left to decode)."""
    held = llm.input_ids[: llm.n_tokens]
    limit = min(len(held), len(ids) - 1)
    same = 0
    while same < limit and held[same] == ids[same]:
        same += 1
    return same


def load_gguf_transformers(file: Path, name: str) -> Any:
    """The GGUF file's weights dequantized by transformers (``gguf_file=``) into its
    PyTorch architecture; an architecture transformers cannot read is one line."""
    import transformers

    gguf_reader(file)  # the gguf package is there (transformers needs it too)
    try:
        return transformers.AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name)
    except Exception as error:  # noqa: BLE001 - transformers' reasons vary: one line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelReferenceError(
            f"model {name!r}: transformers could not dequantize {str(file)!r} ({first[:300]}); fix: pass "
            f"--gguf-runtime {LLAMA_CPP} to run it with llama.cpp (transformers reads fewer "
            "architectures and quantization types)"
        ) from None
