"""ONNX models run by onnxruntime behind the same interface as a PyTorch model.

A model folder holding ``model.onnx`` (or a single other ``*.onnx`` file, such as optimum's
``model_quantized.onnx``) beside ``config.json`` and the tokenizer files, as optimum's
exporter writes them, loads as an :class:`OnnxModel`: a callable that takes the tokenizer's
padded batch and returns an object with the fields a transformers model's output has
(``logits``, ``start_logits``/``end_logits``, ``last_hidden_state`` and
``hidden_states[-1]``), as CPU torch tensors. So :class:`miniature.core.models.ModelWrapper`
batches, pools, caches and attacks it unchanged.

Which outputs the export has decides what it can serve: ``logits`` the prediction-error and
attack checks, ``last_hidden_state`` the representation and distribution checks.
onnxruntime is imported only when such a folder is loaded (``pip install pytest-miniature[onnx]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miniature.core.model_files import ModelSpec, model_file_boundary, model_file_error
from miniature.errors import ModelReferenceError

if TYPE_CHECKING:  # pragma: no cover
    import torch

ONNX_FILE = "model.onnx"
HIDDEN_OUTPUT = "last_hidden_state"
#: The roles an export's outputs can serve, by optimum's names (see :func:`output_roles`).
ROLES = ("logits", "start_logits", "end_logits", HIDDEN_OUTPUT)
#: The outputs each task head needs from an export.
HEAD_OUTPUTS: dict[str, tuple[str, ...]] = {
    "encoder": (),
    "classification": ("logits",),
    "qa": ("start_logits", "end_logits"),
    "masked-lm": ("logits",),
}
_HEAD_NAMES = {
    "encoder": "encoder",
    "classification": "classification",
    "qa": "question-answering",
    "masked-lm": "masked-LM",
}
#: The optimum task that adds each head's outputs to an export (named in skip reasons).
EXPORT_TASKS: dict[str, str] = {
    "classification": "text-classification",
    "qa": "question-answering",
    "masked-lm": "fill-mask",
    "encoder": "feature-extraction",
}
_INT_TYPES = {"tensor(int64)": "int64", "tensor(int32)": "int32"}


def onnx_file(folder: str | Path) -> Path | None:
    """The ONNX file of a model folder: ``model.onnx``, else its only ``*.onnx`` file; None
    when it has none. Several ``*.onnx`` files and no ``model.onnx`` is refused by name."""
    path = Path(folder)
    if not path.is_dir():
        return None
    if (path / ONNX_FILE).is_file():
        return path / ONNX_FILE
    found = sorted(p for p in path.glob("*.onnx") if p.is_file())
    if len(found) > 1:
        raise ModelReferenceError(
            f"model folder {str(path)!r} holds several ONNX files ({', '.join(p.name for p in found)}) "
            f"and no {ONNX_FILE}; fix: keep one of them, or rename the one to gate to {ONNX_FILE}"
        )
    return found[0] if found else None


def graph_outputs(file: Path, spec: ModelSpec | None = None) -> list[tuple[str, tuple[Any, ...]]]:
    """The outputs of an ONNX graph, read without running it (the ``onnx`` package when
    installed, else an onnxruntime session): each name with its shape (an int per fixed
    axis, a name or None per dynamic one). An empty file, or a graph without outputs, is
    refused by name: it is no export at all."""
    where = spec or file.parent
    with model_file_boundary(where, file.name, fix="export the model to ONNX again"):
        if file.stat().st_size == 0:
            raise model_file_error(where, file.name, "it is empty (0 bytes)", fix="export the model to ONNX again")
        try:
            import onnx
        except ImportError:
            found = [(o.name, tuple(o.shape or ())) for o in _session(file, "cpu").get_outputs()]
        else:
            graph = onnx.load(str(file), load_external_data=False).graph
            found = [
                (
                    o.name,
                    tuple(
                        d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                        for d in o.type.tensor_type.shape.dim
                    ),
                )
                for o in graph.output
            ]
        if not found:
            raise model_file_error(where, file.name, "its graph has no outputs", fix="export the model to ONNX again")
    return found


def onnx_outputs(file: Path, spec: ModelSpec | None = None) -> list[str]:
    """The output names of an ONNX graph (see :func:`graph_outputs`)."""
    return [name for name, _ in graph_outputs(file, spec)]


def output_roles(
    outputs: list[tuple[str, tuple[Any, ...]]], config: Any, named: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Which graph output serves each role (``logits``, ``start_logits``, ``end_logits``,
    ``last_hidden_state``): the one the user named (``--onnx-output ROLE=NAME``), else the one
    of optimum's name, else, for the hidden state and a classifier's logits, the only output
    of their shape ([batch, sequence, hidden_size] and [batch, num_labels]). Other exporters
    name outputs differently (even by number); an ambiguous shape serves no role."""
    names = [name for name, _ in outputs]
    roles = {role: name for role, name in (named or {}).items() if name in names}
    roles.update({role: role for role in ROLES if role in names and role not in roles})
    shapes = {
        "last_hidden_state": (3, getattr(config, "hidden_size", None)),
        "logits": (2, getattr(config, "num_labels", None)),
    }
    for role, (rank, width) in shapes.items():
        if role in roles or not isinstance(width, int):
            continue
        taken = set(roles.values())
        fits = [name for name, shape in outputs if name not in taken and len(shape) == rank and shape[-1] == width]
        if len(fits) == 1:
            roles[role] = fits[0]
    return roles


def export_roles(
    file: Path, spec: ModelSpec, named: Mapping[str, str] | None = None
) -> tuple[dict[str, str], list[str]]:
    """The roles an export's outputs serve (see :func:`output_roles`) and all its output names."""
    import transformers

    outputs = graph_outputs(file, spec)
    with model_file_boundary(spec, "config.json"):
        config = transformers.AutoConfig.from_pretrained(str(file.parent))
    return output_roles(outputs, config, named), [name for name, _ in outputs]


def missing_outputs(roles: Mapping[str, str] | list[str], head: str) -> list[str]:
    """The outputs ``head`` needs that an export lacks (``[]`` when it has them all)."""
    return [name for name in HEAD_OUTPUTS[head] if name not in roles]


def _found(outputs: list[str] | None) -> str:
    if not outputs:
        return ""
    return f" (its outputs: {', '.join(repr(o) for o in outputs[:6])}{' ...' if len(outputs) > 6 else ''})"


def missing_output_line(model: str, head: str, missing: list[str], outputs: list[str] | None = None) -> str:
    """One line: the export lacks the outputs a head needs (its outputs listed), the export
    option that adds them, and how to name one that is there under another name."""
    names = " and ".join(repr(m) for m in missing) + (" outputs" if len(missing) > 1 else " output")
    return (
        f"model {model!r} is an ONNX export without the {names} of a "
        f"{_HEAD_NAMES[head]} head (a bare feature-extraction export){_found(outputs)}; fix: "
        f"export it with the head, e.g. `optimum-cli export onnx --task {EXPORT_TASKS[head]}` (or "
        f"torch.onnx.export of the {_HEAD_NAMES[head]} model with an output named {missing[0]!r}), "
        f"or pass --onnx-output {missing[0]}=NAME if one of its outputs is it"
    )


def hidden_output_line(model: str, outputs: list[str] | None = None) -> str:
    """One line: the export has no last hidden state (none by name, none alone of its shape),
    so no sentence vectors; its outputs, and the fix."""
    return (
        f"model {model!r} is an ONNX export without the {HIDDEN_OUTPUT!r} output{_found(outputs)} "
        "(none by that name, and not exactly one of shape [batch, sequence, hidden_size]), so it "
        "gives no sentence vectors; fix: export it with that output too (torch.onnx.export with "
        f"output_names [..., {HIDDEN_OUTPUT!r}], or optimum's feature-extraction export), or pass "
        f"--onnx-output {HIDDEN_OUTPUT}=NAME naming the one that is it"
    )


def onnx_providers(device: str) -> list[str]:
    """onnxruntime's CUDA provider where asked for (or ``auto``) and available, then the CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _session(file: Path, device: str) -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ModelReferenceError(
            f"model file {str(file)!r} is an ONNX model, which needs onnxruntime; fix: pip install "
            "'pytest-miniature[onnx]' (or onnxruntime)"
        ) from None
    import torch

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    options.intra_op_num_threads = torch.get_num_threads()  # as many threads as the PyTorch path
    return onnxruntime.InferenceSession(str(file), options, providers=onnx_providers(device))


@dataclass
class OnnxOutput:
    """An ONNX run's outputs with the field names of a transformers model output."""

    logits: "torch.Tensor | None" = None
    start_logits: "torch.Tensor | None" = None
    end_logits: "torch.Tensor | None" = None
    last_hidden_state: "torch.Tensor | None" = None

    @property
    def hidden_states(self) -> tuple["torch.Tensor", ...]:
        """Only the last layer's states: an export carries no others (pooling reads ``[-1]``)."""
        if self.last_hidden_state is None:
            from miniature.errors import NotApplicable

            raise NotApplicable("the ONNX export has no last_hidden_state output")
        return (self.last_hidden_state,)


class OnnxModel:
    """An ONNX file run by onnxruntime, called like a transformers model on a padded batch."""

    def __init__(
        self,
        file: Path,
        config: Any,
        *,
        device: str = "cpu",
        spec: ModelSpec | None = None,
        named: Mapping[str, str] | None = None,
    ) -> None:
        with model_file_boundary(spec or file.parent, file.name, fix="export the model to ONNX again"):
            self.session = _session(file, device)
        self.file = file
        self.config = config
        self.name = spec.name if spec is not None else file.parent.name
        inputs = self.session.get_inputs()
        self.input_types = {i.name: _INT_TYPES.get(i.type, "int64") for i in inputs}
        #: the inputs the export takes (ModelWrapper passes only these)
        self.runtime_input_names = set(self.input_types)
        self.output_names = [o.name for o in self.session.get_outputs()]
        #: role (optimum's output name) -> the graph output serving it (see output_roles)
        self.roles = output_roles([(o.name, tuple(o.shape or ())) for o in self.session.get_outputs()], config, named)

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def to(self, device: Any) -> "OnnxModel":
        """The session's providers are chosen at load; moving is a no-op (as ``eval``)."""
        return self

    def eval(self) -> "OnnxModel":
        return self

    def feed(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The numpy inputs of one run: the batch's tensors the export takes, in its integer
        type; ``token_type_ids`` as zeros when the export takes them and the tokenizer gave none."""
        import numpy as np

        feed: dict[str, Any] = {}
        for name, kind in self.input_types.items():
            value = batch.get(name)
            if value is None and name == "token_type_ids" and "input_ids" in batch:
                value = np.zeros(tuple(batch["input_ids"].shape), dtype=kind)
            if value is None:
                raise ModelReferenceError(
                    f"ONNX model {str(self.file)!r} needs the input {name!r}, "
                    "which the tokenizer does not give; fix: export it with "
                    "the tokenizer's inputs (input_ids, attention_mask)"
                )
            array = value.cpu().numpy() if hasattr(value, "cpu") else np.asarray(value)
            feed[name] = array.astype(kind, copy=False)
        return feed

    def __call__(self, output_hidden_states: bool = False, **batch: Any) -> OnnxOutput:
        import torch

        feed = self.feed(batch)
        roles = list(self.roles)
        values = self.session.run([self.roles[role] for role in roles], feed)
        found = {role: torch.from_numpy(value) for role, value in zip(roles, values)}
        ids = feed.get("input_ids", next(iter(feed.values())))
        for role, value in found.items():
            self._check_shape(role, tuple(value.shape), tuple(ids.shape))
        return OnnxOutput(
            logits=found.get("logits"),
            start_logits=found.get("start_logits"),
            end_logits=found.get("end_logits"),
            last_hidden_state=found.get(HIDDEN_OUTPUT),
        )

    def _check_shape(self, role: str, shape: tuple[int, ...], tokens: tuple[int, ...]) -> None:
        """Refuse an output whose shape is not what config.json describes (a classifier's
        logits with another number of columns would be read as other labels)."""
        batch, length = tokens[0], tokens[-1]
        config = self.config
        if role == "logits":
            expected = [
                (batch, getattr(config, "num_labels", None)),
                (batch, length, getattr(config, "vocab_size", None)),
            ]
            what = "[batch, num_labels] (or [batch, sequence, vocab_size] for a masked LM)"
        elif role == HIDDEN_OUTPUT:
            expected, what = [(batch, length, getattr(config, "hidden_size", None))], "[batch, sequence, hidden_size]"
        else:
            expected, what = [(batch, length)], "[batch, sequence]"
        if shape not in expected:
            described = " or ".join(str(list(e)) for e in expected)
            raise ModelReferenceError(
                f"model {self.name!r}: the ONNX export's output {self.roles[role]!r} ({role}) has shape "
                f"{list(shape)} on a batch of {list(tokens)} tokens, but its config.json describes "
                f"{what} = {described}; fix: export the model config.json describes again (its "
                "outputs must fit config.json), or name the right output with --onnx-output "
                f"{role}=NAME"
            )


#: Operators onnxruntime's dynamic quantization writes (an int8 export holds some of them).
_QUANTIZED_OPS = {
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "QLinearMatMul",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "QGemm",
    "DequantizeLinear",
    "QuantizeLinear",
}


def _graph_nodes(file: Path) -> list[Any]:
    try:
        import onnx
    except ImportError:
        return []
    return list(onnx.load(str(file), load_external_data=False).graph.node)


def load_onnx(spec: ModelSpec, file: Path, *, device: str = "cpu", named: Mapping[str, str] | None = None) -> OnnxModel:
    """An ONNX model folder's model: its config.json (no code from the folder runs) and an
    onnxruntime session of ``file``."""
    import transformers

    with model_file_boundary(spec, "config.json"):
        config = transformers.AutoConfig.from_pretrained(spec.source)
    graph_outputs(file, spec)  # an empty file or a graph without outputs is refused by name
    return OnnxModel(file, config, device=device, spec=spec, named=named)


def is_int8_onnx(file: Path) -> bool:
    """Whether an ONNX file holds onnxruntime's quantized operators (an int8 export)."""
    return any(node.op_type in _QUANTIZED_OPS for node in _graph_nodes(file))
