"""Fine-tune a model for a task (classification or extractive QA), cached by content.

The paper fine-tunes every model before comparing prediction errors. :func:`finetune`
trains with transformers' ``Trainer`` (no hub, no reporting integrations, no
checkpoints) and saves the result (safetensors + tokenizer) to
``output_root/<fingerprint>``, where the fingerprint hashes the base model's files, the
training data and the settings. The model is built in a temporary folder and renamed
into place, so a crash never leaves a half-written model; the same inputs a second time
return the stored folder without training. ``miniature_finetune.json`` beside the
weights records what was trained and the training loss before and after.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from miniature.core.cache import atomic_write_text, fingerprint, fingerprint_texts
from miniature.core.data import TextData
from miniature.core.folders import building
from miniature.errors import DataError, MiniatureError, ModelReferenceError
from miniature.core.models import ModelSpec, fingerprint_files, hub_error, refuse_unsafe_local, resolve_model
from miniature.core.tasks import TASKS, OptionError
from miniature.core.tasks.classification import id2label, match_label_names
from miniature.core.tasks.qa import QAExample, prepare_qa_features

#: Bump when the training recipe changes, so older fine-tuned folders are not reused.
FORMAT_VERSION = 1
RECORD_NAME = "miniature_finetune.json"


def finetune(
    model_source: str,
    task: str,
    train: TextData | Sequence[QAExample],
    *,
    output_root: Path,
    epochs: float = 3,
    learning_rate: float = 5e-5,
    batch_size: int = 16,
    max_steps: int = -1,
    seed: int = 0,
    max_length: int = 128,
    doc_stride: int = 64,
    progress: bool = True,
    loss_sample: int = 512,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> Path:
    """Fine-tune ``model_source`` on ``train`` for ``task``; the folder of the result.

    ``train`` is a labelled :class:`~miniature.core.data.TextData` for ``classification`` or a
    list of :class:`~miniature.core.tasks.qa.QAExample` for ``qa``. ``max_steps > 0``
    overrides ``epochs``. The training loss before and after is measured on up to
    ``loss_sample`` training items (the same ones both times) in eval mode.
    """
    _check_arguments(
        task,
        train,
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        max_steps=max_steps,
        max_length=max_length,
        doc_stride=doc_stride,
    )
    spec = resolve_model(model_source)
    output_root = Path(output_root).expanduser()
    if spec.is_local and output_root.resolve().is_relative_to(Path(spec.source).resolve()):
        raise OptionError(
            f"output dir {str(output_root)!r} is inside the model folder {spec.source!r}, "
            "which must stay as it is (its fingerprint names the fine-tuned copy); fix: "
            "pass an --output-dir outside the model's folder"
        )
    _check_writable(output_root)
    # typed, so 10 and 10.0 epochs (library vs command line) are the same model
    settings: dict[str, Any] = {
        "epochs": float(epochs),
        "learning_rate": float(learning_rate),
        "batch_size": int(batch_size),
        "max_steps": int(max_steps),
        "seed": int(seed),
        "max_length": int(max_length),
        "loss_sample": int(loss_sample),
    }
    if task == "qa":
        settings["doc_stride"] = int(doc_stride)
    data_print = _data_fingerprint(train)
    base_print = _base_fingerprint(spec)
    if base_print is not None:
        target = output_root / _key(base_print, task, data_print, settings)
        if _is_complete(target):
            return target
    return _train(
        spec,
        task,
        train,
        output_root=output_root,
        settings=settings,
        base_print=base_print,
        data_print=data_print,
        progress=progress,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
    )


def _key(base_print: str, task: str, data_print: str, settings: dict[str, Any]) -> str:
    return fingerprint("finetune", FORMAT_VERSION, base_print, task, data_print, settings)


def _is_complete(path: Path) -> bool:
    return (path / RECORD_NAME).is_file() and (path / "config.json").is_file()


def _check_arguments(
    task: str,
    train: Any,
    *,
    epochs: float,
    learning_rate: float,
    batch_size: int,
    max_steps: int,
    max_length: int,
    doc_stride: int,
) -> None:
    if task not in TASKS:
        raise OptionError(f"task must be one of {TASKS}, got {task!r}")
    if task == "classification":
        if not isinstance(train, TextData):
            raise TypeError(f"classification trains on TextData, got {type(train).__name__}")
        if train.labels is None and train.source.lower().endswith(".txt"):
            raise DataError(
                f"data {train.source!r} is a .txt file (one text per line), which has "
                "no labels, and fine-tuning a classifier needs them; fix: pass a "
                ".jsonl/.csv/.parquet file with a text and a label column, e.g. "
                '{"text": "a fine film", "label": 1} per line'
            )
        if train.labels is None:
            raise DataError(
                f"data {train.source!r} has no labels, and fine-tuning a classifier "
                "needs them; fix: pass --label-column naming the label column"
            )
        if len(train.labels) != len(train.texts):
            raise DataError(
                f"data {train.source!r}: {len(train.texts)} texts but "
                f"{len(train.labels)} labels; fix: one label per text"
            )
        if train.labels and min(train.labels) < 0:
            raise DataError(
                f"data {train.source!r}: labels must be 0..n-1, found "
                f"{min(train.labels)}; fix: map the labels to non-negative ids"
            )
    else:
        if isinstance(train, TextData) or not all(isinstance(e, QAExample) for e in train):
            raise TypeError("qa trains on a list of QAExample (see qa_examples_from_records)")
    if len(train) == 0:
        raise DataError("training data is empty (0 items); fix: pass a file with items")
    if max_steps <= 0 and not 0 < epochs < math.inf:  # NaN too
        raise OptionError(
            f"epochs must be a finite number > 0 (or max_steps > 0), got epochs={epochs}; fix: pass --epochs above 0"
        )
    if not 0 < learning_rate < math.inf:  # NaN too: it would train on NaN weights
        raise OptionError(
            f"learning_rate must be a finite number > 0, got {learning_rate}; fix: pass --learning-rate such as 5e-5"
        )
    if batch_size < 1:
        raise OptionError(f"batch_size must be >= 1, got {batch_size}; fix: pass --batch-size 1 or more")
    if max_length < 16:
        raise OptionError(f"max_length must be >= 16 tokens, got {max_length}; fix: pass --max-length 16 or more")
    if task == "qa" and not 0 <= doc_stride <= max_length - 12:
        raise OptionError(
            f"doc_stride ({doc_stride}) must be in [0, max_length - 12 = "
            f"{max_length - 12}] to leave room for special tokens and the question; "
            "fix: lower --doc-stride or raise --max-length"
        )


def _check_writable(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=root).close()
    except OSError as error:
        raise MiniatureError(
            f"output dir {str(root)!r} is not writable "
            f"({error.strerror or error}); fix: pass --output-dir with a "
            "writable folder"
        ) from None


def _data_fingerprint(train: TextData | Sequence[QAExample]) -> str:
    if isinstance(train, TextData):
        return fingerprint(
            "classification", fingerprint_texts(train.texts), list(train.labels or []), list(train.label_names)
        )
    return fingerprint("qa", fingerprint_texts(json.dumps(e.to_record(), sort_keys=True) for e in train))


def _base_fingerprint(spec: ModelSpec) -> str | None:
    """The base model's file hash: its directory, or its snapshot in the local hub cache."""
    if spec.is_local:
        return fingerprint_files(Path(spec.source))
    try:
        from transformers.utils import cached_file

        config = cached_file(spec.source, "config.json", local_files_only=True)
        return fingerprint_files(Path(config).parent) if config else None
    except Exception:  # noqa: BLE001 - not cached yet: known once it is loaded
        return None


# -- training ---------------------------------------------------------------------------------
def _load(spec: ModelSpec, task: str, train: Any, *, trust_remote_code: bool, allow_pickle: bool) -> tuple[Any, Any]:
    import transformers

    transformers.logging.set_verbosity_error()
    if spec.is_local:
        refuse_unsafe_local(spec, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    options: dict[str, Any] = {}
    try:
        from miniature.core.models import model_file_boundary, tokenizer_file_name, weights_file_name

        with model_file_boundary(spec, tokenizer_file_name(spec)):
            tokenizer = transformers.AutoTokenizer.from_pretrained(spec.source, trust_remote_code=trust_remote_code)
        if task == "classification":
            auto: Any = transformers.AutoModelForSequenceClassification
            with model_file_boundary(spec, "config.json"):
                config = transformers.AutoConfig.from_pretrained(spec.source, trust_remote_code=trust_remote_code)
            needed = max(max(train.labels) + 1, len(train.label_names))
            kept = id2label(config)
            if train.label_names and config.num_labels == needed and match_label_names(kept, train.label_names):
                names = kept  # the model already names these labels: train each on its own id
            elif train.label_names:
                names = {i: name for i, name in enumerate(train.label_names)}
            elif config.num_labels == needed:
                names = dict(config.id2label)
            else:
                names = {i: f"LABEL_{i}" for i in range(needed)}
            options = {
                "num_labels": needed,
                "id2label": names,
                "label2id": {v: k for k, v in names.items()},
                "ignore_mismatched_sizes": config.num_labels != needed,
            }
        else:
            auto = transformers.AutoModelForQuestionAnswering
        with model_file_boundary(spec, weights_file_name(spec), allow_pickle=allow_pickle):
            model = auto.from_pretrained(
                spec.source,
                trust_remote_code=trust_remote_code,
                use_safetensors=None if allow_pickle else True,
                **options,
            )
    except ModelReferenceError:
        raise
    except (OSError, ValueError) as error:
        if spec.is_local:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelReferenceError(
                f"model {spec.name!r}: could not load {spec.source!r} for "
                f"{task} fine-tuning ({first}); fix: re-save it with "
                "save_pretrained (safetensors) and its tokenizer"
            ) from None
        raise hub_error(spec, error) from None
    return model, tokenizer


def _classification_items(
    tokenizer: Any, train: TextData, keys: set[str], max_length: int, labels: dict[int, str]
) -> list[dict[str, Any]]:
    """Tokenised items with their label as the model's id: where the model names the data's
    labels (``labels``, its id2label), each data label goes to the id of its name."""
    encoded = tokenizer(list(train.texts), truncation=True, max_length=max_length)
    names = [k for k in encoded.keys() if k in keys]
    matched = match_label_names(labels, train.label_names) if train.label_names else None
    model_id = {matched[name]: i for i, name in labels.items()} if matched else {}
    return [
        {**{k: encoded[k][i] for k in names}, "labels": model_id.get(int(label), int(label))}
        for i, label in enumerate(train.labels or [])
    ]


def _qa_items(
    tokenizer: Any, examples: Sequence[QAExample], keys: set[str], max_length: int, doc_stride: int
) -> list[dict[str, Any]]:
    """One item per window; the answer's token span if the window holds all of it, else [CLS]."""
    features = prepare_qa_features(tokenizer, examples, max_length=max_length, doc_stride=doc_stride)
    items = []
    for inputs, index, offsets, cls in zip(
        features.inputs, features.example_index, features.offsets, features.cls_index
    ):
        example = examples[index]
        start = end = cls
        if example.is_answerable:
            first = example.answer_starts[0]
            last = first + len(example.answers[0])
            context = [j for j, o in enumerate(offsets) if o is not None]
            if context and offsets[context[0]][0] <= first and offsets[context[-1]][1] >= last:  # type: ignore[index]
                start = max(j for j in context if offsets[j][0] <= first)  # type: ignore[index]
                end = min(j for j in context if offsets[j][1] >= last)  # type: ignore[index]
        items.append({**{k: v for k, v in inputs.items() if k in keys}, "start_positions": start, "end_positions": end})
    return items


def _train(
    spec: ModelSpec,
    task: str,
    train: Any,
    *,
    output_root: Path,
    settings: dict[str, Any],
    base_print: str | None,
    data_print: str,
    progress: bool,
    trust_remote_code: bool,
    allow_pickle: bool,
) -> Path:
    import torch
    import transformers
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    transformers.set_seed(settings["seed"])  # the new head's initialisation
    model, tokenizer = _load(spec, task, train, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    if base_print is None:  # a hub model that was not cached before this load
        from miniature.core.models import hub_fingerprint

        base_print = hub_fingerprint(spec, model)
    key = _key(base_print, task, data_print, settings)
    target = output_root / key
    if _is_complete(target):
        return target
    keys = set(inspect.signature(model.forward).parameters)
    from miniature.core.models import effective_max_length

    max_length = effective_max_length(model.config, settings["max_length"], spec.name)
    if task == "classification":
        items = _classification_items(tokenizer, train, keys, max_length, id2label(model.config))
    else:
        items = _qa_items(tokenizer, train, keys, max_length, settings["doc_stride"])
    rng = np.random.default_rng(settings["seed"])
    sample = [items[i] for i in sorted(rng.permutation(len(items))[: settings["loss_sample"]])]
    with building(target, complete=_is_complete) as built:
        cpu = not torch.cuda.is_available()
        arguments = TrainingArguments(
            output_dir=str(built.parent / "trainer"),
            num_train_epochs=settings["epochs"],
            max_steps=settings["max_steps"],
            learning_rate=settings["learning_rate"],
            per_device_train_batch_size=settings["batch_size"],
            per_device_eval_batch_size=settings["batch_size"],
            seed=settings["seed"],
            data_seed=settings["seed"],
            report_to=[],
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="epoch",
            prediction_loss_only=True,
            disable_tqdm=not progress,
            use_cpu=cpu,
            dataloader_pin_memory=not cpu,
            dataloader_num_workers=0,
            log_level="error",
        )
        trainer = Trainer(
            model=model,
            args=arguments,
            train_dataset=items,
            data_collator=DataCollatorWithPadding(tokenizer),
            processing_class=tokenizer,
        )
        started = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its logs; stdout stays clean
            loss_before = float(trainer.evaluate(eval_dataset=sample)["eval_loss"])
            result = trainer.train()
            loss_after = float(trainer.evaluate(eval_dataset=sample)["eval_loss"])
        runtime = time.perf_counter() - started
        trainer.model.save_pretrained(str(built), safe_serialization=True)
        tokenizer.save_pretrained(str(built))
        record = {
            "format": FORMAT_VERSION,
            "key": key,
            "task": task,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "base_model": {"name": spec.name, "source": spec.source, "fingerprint": base_print},
            "data": _describe_data(train, data_print),
            "settings": settings,
            "train_items": len(items),
            "loss_before": loss_before,
            "loss_after": loss_after,
            "train_loss": float(result.training_loss),
            "steps": int(result.global_step),
            "runtime_s": round(runtime, 3),
            "log_history": [e for e in trainer.state.log_history if "loss" in e],
            "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
        }
        atomic_write_text(built / RECORD_NAME, json.dumps(record, indent=2, sort_keys=True))
    return target  # built here, or by a concurrent run that finished first


def _describe_data(train: Any, data_print: str) -> dict[str, Any]:
    if isinstance(train, TextData):
        return {
            "source": train.source,
            "items": len(train),
            "fingerprint": data_print,
            "label_names": list(train.label_names),
            "labels": {str(k): int(v) for k, v in zip(*np.unique(train.labels or [], return_counts=True))},
        }
    return {
        "source": "qa examples",
        "items": len(train),
        "fingerprint": data_print,
        "answerable": int(sum(e.is_answerable for e in train)),
    }
