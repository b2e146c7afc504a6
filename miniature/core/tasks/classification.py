"""Sequence classification: label maps checked between two models and the data.

Two fine-tuned checkpoints can number the same labels differently (one has
``{0: NEGATIVE, 1: POSITIVE}``, the other ``{0: POSITIVE, 1: NEGATIVE}``); comparing their
predicted ids would then compare different labels and every "error" would be noise.
:func:`check_label_maps` refuses that with the fix (``--label-map``), and
:func:`predict_labels` translates a model's ids into the data's label ids through it.
:func:`is_finetuned` tells from a checkpoint's weight names whether its task head was
trained, so fine-tuning can be skipped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from miniature.errors import DataError, ModelReferenceError

if TYPE_CHECKING:  # pragma: no cover
    from miniature.core.models import ModelSpec, ModelWrapper

_GENERIC = re.compile(r"^LABEL_(\d+)$", re.IGNORECASE)
_LABEL_MAP_EXAMPLE = '--label-map "POSITIVE=1,NEGATIVE=0"'

#: Weight-name prefixes of each task head: present only when the checkpoint has that head.
HEAD_PREFIXES: dict[str, tuple[str, ...]] = {
    "classification": ("classifier.", "pre_classifier."),
    "qa": ("qa_outputs.",),
    "masked-lm": ("cls.predictions.", "vocab_projector.", "vocab_transform.", "lm_head."),
}


# -- label maps -------------------------------------------------------------------------------
def parse_label_map(text: str) -> dict[str, int]:
    """``"POSITIVE=1,NEGATIVE=0"`` -> ``{"POSITIVE": 1, "NEGATIVE": 0}`` (model label name
    to the data's label id); several names may map to the same id."""
    mapping: dict[str, int] = {}
    pieces = [p.strip() for p in str(text).split(",") if p.strip()]
    if not pieces:
        raise DataError(
            f"label map {text!r} is empty; fix: name each model label and its data label id, e.g. {_LABEL_MAP_EXAMPLE}"
        )
    for piece in pieces:
        name, equals, value = piece.rpartition("=")
        name, value = name.strip(), value.strip()
        if not equals or not name or not re.fullmatch(r"\d+", value):
            raise DataError(
                f"label map {text!r}: {piece!r} is not NAME=ID with a non-negative "
                f"integer ID; fix: e.g. {_LABEL_MAP_EXAMPLE}"
            )
        if name.casefold() in (k.casefold() for k in mapping):
            raise DataError(f"label map {text!r} names {name!r} twice; fix: give each model label one data label id")
        mapping[name] = int(value)
    return mapping


def id2label(config: Any) -> dict[int, str]:
    """A model config's id -> label name map (config object or config.json dict)."""
    if isinstance(config, Mapping):
        raw = config.get("id2label") or {i: f"LABEL_{i}" for i in range(int(config.get("num_labels", 2)))}
    else:
        raw = getattr(config, "id2label", None) or {
            i: f"LABEL_{i}" for i in range(int(getattr(config, "num_labels", 2)))
        }
    return {int(k): str(v) for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}


def _is_generic(labels: Mapping[int, str]) -> bool:
    """Names like LABEL_0 say nothing about meaning: the ids are taken as the data's ids."""
    return all((m := _GENERIC.match(name)) and int(m.group(1)) == i for i, name in labels.items())


def _is_numeric(labels: Mapping[int, str]) -> bool:
    """Label names that look like integers ("0", "1", ...) are the data's label ids."""
    return bool(labels) and all(re.fullmatch(r"\s*\d+\s*", name) for name in labels.values())


def _show(labels: Mapping[int, str]) -> str:
    return "{" + ", ".join(f"{i}: {name!r}" for i, name in labels.items()) + "}"


def match_label_names(labels: Mapping[int, str], names: Sequence[str]) -> dict[str, int] | None:
    """Model label name -> data label id (the index in ``names``), matched by name ignoring
    case: exact matches first, then a prefix either way that fits one remaining data name
    only ("neg" for NEGATIVE, "pos" for POSITIVE). None unless every data name is matched by
    a different model label: anything less would be a guess. A model label that fits no
    data name at all (the data has no "neutral" item) gets an id the data does not have, so
    predicting it is an error; one that fits several is ambiguous (None)."""
    index = {name.strip().casefold(): i for i, name in enumerate(names)}
    matched = {name: index[name.strip().casefold()] for name in labels.values() if name.strip().casefold() in index}
    left = {key: i for key, i in index.items() if i not in matched.values()}
    unused = len(names)
    for name in labels.values():
        if name in matched:
            continue
        key = name.strip().casefold()
        hits = [i for other, i in left.items() if key and (other.startswith(key) or key.startswith(other))]
        if len(hits) > 1:
            return None
        matched[name] = hits[0] if hits else unused
        unused += 0 if hits else 1
    ids = [i for i in matched.values() if i < len(names)]
    if len(matched) != len(labels) or len(set(ids)) != len(ids) or len(ids) != len(index):
        return None
    return matched


def _unmatched_line(model: str, labels: Mapping[int, str], names: Sequence[str], source: str) -> str:
    """The refusal when a model's label names do not say which data label each id is."""
    why = (
        "are generic and say nothing of their meaning"
        if _is_generic(labels)
        else "do not match them one to one by name"
    )
    ids = ", ".join(f"{name}={i}" for i, name in enumerate(names))
    first = next(iter(labels.values()), "LABEL_0")
    return (
        f"data {source!r} names its labels {list(names)} but model {model!r} has labels "
        f"{_show(labels)}, which {why}; fix: pass --label-map giving each model label its "
        f'data label id (the data\'s ids: {ids}), e.g. --label-map "{_suggest(labels)}" if '
        f"{first} means {names[0]}"
    )


def translation_table(labels: Mapping[int, str], label_map: Mapping[str, int], model: str) -> np.ndarray:
    """Model label id -> data label id (``table[model_id]``) through ``label_map``, names
    matched ignoring case; a DataError names the model's labels the map leaves out."""
    folded = {name.casefold(): value for name, value in label_map.items()}
    missing = [name for name in labels.values() if name.casefold() not in folded]
    if missing:
        raise DataError(
            f"label map {_format_map(label_map)} does not name label(s) {', '.join(map(repr, missing))} "
            f"of model {model!r} (its labels: {_show(labels)}); fix: add them to --label-map, "
            f'e.g. --label-map "{_suggest(labels)}"'
        )
    size = max(labels) + 1 if labels else 0
    table = np.full(size, -1, dtype=np.int64)
    for i, name in labels.items():
        table[i] = folded[name.casefold()]
    return table


_translation = translation_table  # the name the engine imported first


def _format_map(label_map: Mapping[str, int]) -> str:
    return repr(",".join(f"{k}={v}" for k, v in label_map.items()))


def _suggest(labels: Mapping[int, str]) -> str:
    return ",".join(f"{name}={i}" for i, name in labels.items())


def check_label_maps(
    reference_config: Any,
    candidate_config: Any,
    data_labels: Sequence[int] | np.ndarray,
    *,
    label_map: Mapping[str, int] | str | None = None,
    reference_name: str = "reference",
    candidate_name: str = "candidate",
    data_label_names: Sequence[str] = (),
    data_source: str = "the data",
) -> dict[str, int] | None:
    """Check that both models' label ids mean the same labels, and cover the data's.

    Returns the label map to give :func:`predict_labels` (``None``: the ids already agree).
    ``label_map`` decides when given. When the data names its labels (``data_label_names``,
    as :func:`~miniature.core.data.load_text_data` records them: "neg", "pos"), each model's
    label names are matched to them (:func:`match_label_names`); a model whose names do not
    match one to one, generic LABEL_i names included, is refused naming both label sets,
    since any other pairing would be a guess. With integer data labels, generic names
    (LABEL_0, ...) and names "0", "1", ... count as "ids are the data's ids", and two models
    whose names differ are refused (:class:`ModelReferenceError`) naming both maps and the fix.
    """
    labels = np.asarray(data_labels, dtype=np.int64).ravel()
    if labels.size and labels.min() < 0:
        raise DataError(
            f"data labels must be non-negative integers, found {int(labels.min())}; fix: map the labels to 0..n-1"
        )
    needed = int(labels.max()) + 1 if labels.size else 0
    maps = {reference_name: id2label(reference_config), candidate_name: id2label(candidate_config)}
    if isinstance(label_map, str):
        label_map = parse_label_map(label_map)
    if label_map is not None:
        for model, labels_of_model in maps.items():
            reachable = set(translation_table(labels_of_model, label_map, model).tolist())
            unreachable = sorted(set(range(needed)) - reachable)
            if unreachable:
                raise DataError(
                    f"label map {_format_map(label_map)} gives model {model!r} (labels "
                    f"{_show(labels_of_model)}) no label for data label id(s) {unreachable}; fix: "
                    "map one of its labels to each data label id in --label-map"
                )
        return dict(label_map)
    for model, labels_of_model in maps.items():
        if len(labels_of_model) < needed:
            raise DataError(
                f"model {model!r} has {len(labels_of_model)} label(s) {_show(labels_of_model)} but "
                f"the data has label ids up to {needed - 1}; fix: use a model fine-tuned for this "
                "task (or `miniature finetune` it on this data), or choose the right --label-column"
            )
    (ref_name, ref), (cand_name, cand) = maps.items()
    if data_label_names:  # the data names its labels: only the models' names can say which is which
        by_name: dict[str, int] = {}
        for model, labels_of_model in maps.items():
            matched = match_label_names(labels_of_model, data_label_names)
            if matched is None:
                raise DataError(_unmatched_line(model, labels_of_model, data_label_names, data_source))
            by_name.update(matched)
        identity = all(by_name[n] == i for m in (ref, cand) for i, n in m.items())
        return None if identity else by_name
    if _is_numeric(ref) and _is_numeric(cand):  # label names "0", "1", ... are data label ids
        by_id = {name: int(name) for m in (ref, cand) for name in m.values()}
        return None if all(int(n) == i for m in (ref, cand) for i, n in m.items()) else by_id
    if len(ref) != len(cand):
        raise ModelReferenceError(
            f"models {ref_name!r} and {cand_name!r} have different numbers of labels: {_show(ref)} "
            f"vs {_show(cand)}; their predictions cannot be compared id by id; fix: pass "
            f"--label-map naming every label of both with its data label id, e.g. "
            f'--label-map "{_suggest(ref)}"'
        )
    same = all(a.casefold() == b.casefold() for a, b in zip(ref.values(), cand.values()))
    if same or _is_generic(ref) or _is_generic(cand):
        return None
    raise ModelReferenceError(
        f"label maps differ: model {ref_name!r} has id2label {_show(ref)} but model {cand_name!r} "
        f"has {_show(cand)}, so the same id means different labels; fix: pass --label-map "
        f'mapping each label name to the data\'s label id, e.g. --label-map "{_suggest(ref)}"'
    )


def predict_labels(
    wrapper: "ModelWrapper",
    texts: Sequence[str],
    label_map: Mapping[str, int] | str | None = None,
) -> np.ndarray:
    """Predicted data label ids (int64), one per text: the argmax of the classifier's logits,
    translated through ``label_map`` (model label name -> data label id) when given."""
    logits = wrapper.logits(texts)
    predicted = logits.argmax(axis=1).astype(np.int64)
    if label_map is None:
        return predicted
    if isinstance(label_map, str):
        label_map = parse_label_map(label_map)
    return translation_table(id2label(wrapper.config), label_map, wrapper.name)[predicted]


# -- fine-tuned or not ------------------------------------------------------------------------
def _safetensors_keys(path: Path) -> list[str]:
    """Tensor names from a safetensors header (no tensor is read), checked by the model
    files' error boundary (:func:`miniature.core.models.safetensors_header`)."""
    from miniature.core.models import safetensors_header

    return [key for key in safetensors_header(path.parent, path.name) if key != "__metadata__"]


def _weight_names(directory: Path) -> list[str] | None:
    from miniature.core.models import read_json_file

    index = directory / "model.safetensors.index.json"
    if index.is_file():
        return list(read_json_file(directory, index.name).get("weight_map", {}))
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    return [key for file in files for key in _safetensors_keys(file)]


def _local_dir(model: "str | Path | ModelSpec") -> Path | None:
    from miniature.core.models import ModelSpec, resolve_model

    if isinstance(model, Path):
        return model if model.is_dir() else None
    spec = model if isinstance(model, ModelSpec) else resolve_model(str(model))
    if spec.is_local:
        return Path(spec.source)
    try:  # a hub id: look only in the local Hugging Face cache, never the network
        from transformers.utils import cached_file

        config = cached_file(spec.source, "config.json", local_files_only=True)
        return Path(config).parent if config else None
    except Exception:  # noqa: BLE001 - not cached: we cannot tell, so it is not fine-tuned
        return None


def is_finetuned(model: "str | Path | ModelSpec", head: str) -> bool:
    """Whether the checkpoint already has weights for the ``head`` task head.

    Reads the weight names of its safetensors files (e.g. ``classifier.*``,
    ``qa_outputs.*``); a base checkpoint has none, so it needs fine-tuning first. With
    only pickle weights, falls back to the architecture named in config.json.
    """
    if head == "encoder":
        return True  # an encoder has no task head to train
    if head not in HEAD_PREFIXES:
        raise ValueError(f"head must be one of {('encoder', *HEAD_PREFIXES)}, got {head!r}")
    directory = _local_dir(model)
    if directory is None:
        return False
    names = _weight_names(directory)
    prefixes = HEAD_PREFIXES[head]
    if names is not None:
        return any(name.startswith(prefixes) or any(f".{p}" in name for p in prefixes) for name in names)
    config_path = directory / "config.json"
    if not config_path.is_file():
        return False
    from miniature.core.models import read_model_config

    architectures = read_model_config(directory).get("architectures") or []
    suffix = {"classification": "ForSequenceClassification", "qa": "ForQuestionAnswering", "masked-lm": "ForMaskedLM"}[
        head
    ]
    return any(str(a).endswith(suffix) for a in architectures)
