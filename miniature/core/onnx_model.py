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

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miniature.core.model_files import ModelSpec, model_file_boundary
from miniature.errors import ModelReferenceError

if TYPE_CHECKING:  # pragma: no cover
    import torch

ONNX_FILE = "model.onnx"
HIDDEN_OUTPUT = "last_hidden_state"
#: The outputs each task head needs from an export.
HEAD_OUTPUTS: dict[str, tuple[str, ...]] = {
    "encoder": (), "classification": ("logits",), "qa": ("start_logits", "end_logits"),
    "masked-lm": ("logits",),
}
_HEAD_NAMES = {"encoder": "encoder", "classification": "classification", "qa": "question-answering",
               "masked-lm": "masked-LM"}
#: The optimum task that adds each head's outputs to an export (named in skip reasons).
EXPORT_TASKS: dict[str, str] = {"classification": "text-classification",
                                "qa": "question-answering", "masked-lm": "fill-mask",
                                "encoder": "feature-extraction"}
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
            f"and no {ONNX_FILE}; fix: keep one of them, or rename the one to gate to {ONNX_FILE}")
    return found[0] if found else None


def onnx_outputs(file: Path, spec: ModelSpec | None = None) -> list[str]:
    """The output names of an ONNX graph, read without running it (the ``onnx`` package when
    installed, else an onnxruntime session)."""
    with model_file_boundary(spec or file.parent, file.name, fix="export the model to ONNX again"):
        try:
            import onnx
        except ImportError:
            return [o.name for o in _session(file, "cpu").get_outputs()]
        model = onnx.load(str(file), load_external_data=False)
        return [o.name for o in model.graph.output]


def missing_outputs(outputs: list[str], head: str) -> list[str]:
    """The outputs ``head`` needs that an export lacks (``[]`` when it has them all)."""
    return [name for name in HEAD_OUTPUTS[head] if name not in outputs]


def missing_output_line(model: str, head: str, missing: list[str]) -> str:
    """One line: the export lacks the outputs a head needs, and the export option that adds them."""
    names = " and ".join(repr(m) for m in missing) + (" outputs" if len(missing) > 1 else " output")
    return (f"model {model!r} is an ONNX export without the {names} of a "
            f"{_HEAD_NAMES[head]} head (a bare feature-extraction export); fix: export it with the "
            f"head, e.g. `optimum-cli export onnx --task {EXPORT_TASKS[head]}` (or torch.onnx.export "
            f"of the {_HEAD_NAMES[head]} model with an output named {missing[0]!r})")


def hidden_output_line(model: str) -> str:
    """One line: the export has no last hidden state, so no sentence vectors; and the fix."""
    return (f"model {model!r} is an ONNX export without the {HIDDEN_OUTPUT!r} output, so it gives no "
            "sentence vectors; fix: export it with that output too (torch.onnx.export with "
            f"output_names [..., {HIDDEN_OUTPUT!r}], or optimum's feature-extraction export)")


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
            "'pytest-miniature[onnx]' (or onnxruntime)") from None
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

    def __init__(self, file: Path, config: Any, *, device: str = "cpu", spec: ModelSpec | None = None) -> None:
        with model_file_boundary(spec or file.parent, file.name, fix="export the model to ONNX again"):
            self.session = _session(file, device)
        self.file = file
        self.config = config
        inputs = self.session.get_inputs()
        self.input_types = {i.name: _INT_TYPES.get(i.type, "int64") for i in inputs}
        #: the inputs the export takes (ModelWrapper passes only these)
        self.runtime_input_names = set(self.input_types)
        self.output_names = [o.name for o in self.session.get_outputs()]

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
                raise ModelReferenceError(f"ONNX model {str(self.file)!r} needs the input {name!r}, "
                                          "which the tokenizer does not give; fix: export it with "
                                          "the tokenizer's inputs (input_ids, attention_mask)")
            array = value.cpu().numpy() if hasattr(value, "cpu") else np.asarray(value)
            feed[name] = array.astype(kind, copy=False)
        return feed

    def __call__(self, output_hidden_states: bool = False, **batch: Any) -> OnnxOutput:
        import torch

        values = self.session.run(self.output_names, self.feed(batch))
        found = {name: torch.from_numpy(value) for name, value in zip(self.output_names, values)}
        return OnnxOutput(logits=found.get("logits"), start_logits=found.get("start_logits"),
                          end_logits=found.get("end_logits"),
                          last_hidden_state=found.get(HIDDEN_OUTPUT))


#: Operators onnxruntime's dynamic quantization writes (an int8 export holds some of them).
_QUANTIZED_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul",
                  "MatMulIntegerToFloat", "QGemm", "DequantizeLinear", "QuantizeLinear"}


def _graph_nodes(file: Path) -> list[Any]:
    try:
        import onnx
    except ImportError:
        return []
    return list(onnx.load(str(file), load_external_data=False).graph.node)


def load_onnx(spec: ModelSpec, file: Path, *, device: str = "cpu") -> OnnxModel:
    """An ONNX model folder's model: its config.json (no code from the folder runs) and an
    onnxruntime session of ``file``."""
    import transformers

    with model_file_boundary(spec, "config.json"):
        config = transformers.AutoConfig.from_pretrained(spec.source)
    return OnnxModel(file, config, device=device, spec=spec)


def is_int8_onnx(file: Path) -> bool:
    """Whether an ONNX file holds onnxruntime's quantized operators (an int8 export)."""
    return any(node.op_type in _QUANTIZED_OPS for node in _graph_nodes(file))
