"""The models of a gate run: resolving and locating them, fine-tuning them when asked,
checking their task heads and label maps, and loading each once (the attack's masked LM
too). A part of the gate, built and tested on its own: :class:`ModelStore`."""

from __future__ import annotations

from typing import Any

import numpy as np

from miniature.core import settings as opt
from miniature.core.cache import OutputCache
from miniature.core.data import TaskData
from miniature.core.models import (
    ModelSpec,
    ModelWrapper,
    check_device,
    head_missing_line,
    causal_lm_problem,
    local_is_decoder,
    missing_head_weights,
    resolve_model,
    locate,
)
from miniature.core.model_files import read_model_config
from miniature.core.model_table import model_table, name_models
from miniature.core.run_data import RunData
from miniature.errors import MiniatureError, ModelReferenceError, NotApplicable

#: Representation stages: the base checkpoints, the task checkpoints (fine-tuned here or given)
BEFORE, AFTER = "before fine-tuning", "after fine-tuning"
#: The stage of models that have no task head: representation compared on their encoders.
ENCODER = "pre-trained encoder"


class ModelStore:
    """The models of a gate run by report name: where each is (specs, base checkpoints,
    fine-tuned copies), what it is (decoder, head, label map) and each loaded once."""

    def __init__(self, settings: opt.Settings, cache: OutputCache, data: RunData) -> None:
        self.settings = settings
        self.cache = cache
        self.run_data = data
        if not settings.reference:
            raise MiniatureError(f"no reference model; fix: pass {opt.REFERENCE} MODEL")
        #: the reference and candidates by report name (the reference first, then the candidates
        #: as given), resolved and located once
        self.named = name_models([settings.reference, *settings.candidates])
        self.specs: dict[str, ModelSpec] = {m.name: m.spec for m in self.named if m.spec is not None}
        self.names: list[str] = [m.name for m in self.named]
        self.reference, self.candidates = self.names[0], self.names[1:]
        self.base_specs: dict[str, ModelSpec] = {}
        bases = [settings.reference_base] + list(settings.candidate_base)
        for name, base in zip(self.names, bases):
            if base:
                self.base_specs[name] = locate(resolve_model(base))
        #: why the attack model cannot be loaded (the attack is then skipped), found before any work
        self.attack_problem: str | None = None
        self.attack_spec: ModelSpec | None = None
        if self.task == "classification":
            try:
                self.attack_spec = locate(resolve_model(settings.attack_model))
            except ModelReferenceError as error:
                self.attack_problem = f"attack model: {error}"
        #: the reference once more (``--noise-floor``): re-fine-tuned with another seed, or reloaded
        self.noise_model: str | None = None
        if settings.noise_floor:
            self.noise_model = f"{self.reference}~copy"
            self.specs[self.noise_model] = self.specs[self.reference]
        self._wrappers: dict[tuple[str, str], ModelWrapper] = {}
        self._file_fingerprints: dict[str, str] = {}
        self._finetuned: dict[str, ModelSpec] = {}
        self._label_maps: dict[str, Any] = {}
        self._missing_head: dict[str, list[str] | None] = {}
        self._decoders: dict[str, bool] = {}

    @property
    def data(self) -> TaskData:
        return self.run_data.sets

    def unlabelled(self, role: str, need: str) -> str:
        """One line: the ``role`` data has no labels, what needs them, and the fix."""
        return self.run_data.unlabelled(role, need)

    def loaded(self) -> dict[tuple[str, str], ModelWrapper]:
        """The models loaded so far, by (name, stage)."""
        return dict(self._wrappers)

    def table(self) -> dict[str, Any]:
        """The report's model table (order, architecture, quantization) of these models."""
        return model_table(self.named, decoders=self.settings.decoders, gguf_runtime=self.settings.gguf_runtime)

    def spec(self, name: str, stage: str | None = None) -> ModelSpec:
        """Where a model's checkpoint for ``stage`` is: the base one before fine-tuning,
        else the task checkpoint (fine-tuned here first with ``--finetune``)."""
        finetuning = bool(self.settings.finetune)
        if stage == BEFORE:
            return self.specs[name] if finetuning else self.base_specs[name]
        if not finetuning:
            return self.specs[name]
        if name not in self._finetuned:
            self._finetuned[name] = self._finetune(name)
        return self._finetuned[name]

    def _finetune(self, name: str) -> ModelSpec:
        from miniature.core.finetune import finetune

        if self.gguf(name) is not None:
            raise MiniatureError(
                f"model {name!r} is a GGUF file, which {opt.FINETUNE} cannot train; fix: fine-tune "
                f"the PyTorch model, convert that (miniature compress --format gguf) and pass the "
                f"GGUF without {opt.FINETUNE}"
            )
        if self.onnx_export(name) is not None:
            raise MiniatureError(
                f"model {name!r} is an ONNX export, which {opt.FINETUNE} cannot train; fix: "
                "fine-tune the PyTorch model, export that (miniature compress --method none "
                f"--format onnx) and pass the export without {opt.FINETUNE}"
            )
        if self.cache.root is None:
            import tempfile
            from pathlib import Path

            root = Path(tempfile.mkdtemp(prefix="miniature-finetuned-"))
        else:
            root = self.cache.root / "finetuned"
        seed = self.settings.seed + (1 if name == self.noise_model else 0)
        if self.task != "qa" and self.data.train.labels is None:
            raise MiniatureError(self.unlabelled("train", f"{opt.FINETUNE} trains on its labels"))
        train: Any = self.data.train.examples if self.task == "qa" else self.data.train
        path = finetune(
            self.specs[name].source,
            self.task,
            train,
            output_root=root,
            seed=seed,
            max_length=self.settings.max_length,
            trust_remote_code=self.settings.trust_remote_code,
            allow_pickle=self.settings.allow_pickle,
        )
        return ModelSpec(name=name, source=str(path), is_local=True)

    @property
    def task(self) -> str:
        return self.settings.data_task

    @property
    def head(self) -> str:
        """The task head of the checkpoints: classification or extractive QA."""
        return "qa" if self.task == "qa" else "classification"

    def is_decoder(self, name: str) -> bool:
        """Whether ``name`` is a decoder-only causal LM (told from its config.json)."""
        if name not in self._decoders:
            spec = self.specs[name]
            forced = self.settings.decoders and spec.is_local and self.gguf(name) is None
            if forced and self.onnx_export(name) is None:
                problem = causal_lm_problem(read_model_config(spec), name)
                if problem:
                    raise ModelReferenceError(problem)
            self._decoders[name] = self.onnx_export(name) is None and (forced or local_is_decoder(spec))
        return self._decoders[name]

    def head_of(self, name: str) -> str:
        """The head ``name`` answers the task with: a decoder's language-modelling head."""
        return "causal-lm" if self.is_decoder(name) else self.head

    @property
    def multiple_choice(self) -> bool:
        """Whether the test items carry their own choices (``choices``/``answer`` columns)."""
        return self.task == "classification" and self.data.test.choices is not None

    def choice_problem(self) -> str | None:
        """Why a decoder cannot answer the task (no words to score as labels), else None."""
        if self.task != "classification" or self.multiple_choice:
            return None
        try:
            self.choice_words()
        except MiniatureError as error:
            return str(error)
        return None

    def decoder_signature(self, name: str) -> tuple[Any, ...]:
        """What a decoder's answers depend on beyond its weights (for the cache key): the
        prompt template, the label words and the choice score; ``()`` for other models."""
        if not self.is_decoder(name) or self.choice_problem() is not None:
            return ()
        if self.multiple_choice:
            from miniature.core.cache import fingerprint_texts

            choices = self.data.test.choices or []
            words: tuple[str, ...] = ("multiple-choice", fingerprint_texts("\x1f".join(c) for c in choices))
        else:
            words = tuple(self.choice_words())
        return (self.settings.prompt_template, words, self.settings.choice_score)

    def pooling_of(self, name: str) -> str:
        """``--pooling`` for ``name``, ``auto`` resolved: [CLS] of an encoder, a decoder's last token."""
        pooling = self.settings.pooling
        if pooling == "auto":
            return "last" if self.is_decoder(name) else "cls"
        return pooling

    def choice_words(self) -> list[str]:
        """The words a decoder scores as the labels, by label id: ``--verbalizer``, else the
        data's label names, else the built-in reviews' negative/positive."""
        given = self.settings.verbalizer
        if given:
            return [given[i] for i in range(len(given))]
        test = self.data.test
        if test.label_names:
            return list(test.label_names)
        if test.source.startswith("builtin:") and self.task == "classification":
            from miniature.core.data import BUILTIN_LABEL_WORDS

            return list(BUILTIN_LABEL_WORDS)
        raise MiniatureError(
            f"a decoder LM answers by scoring a word per label, and the test data {test.source!r} has "
            f"label ids only; fix: pass {opt.VERBALIZER} naming each label's word, e.g. "
            f"{opt.VERBALIZER} 0=negative,1=positive"
        )

    @property
    def device(self) -> str:
        device = self.settings.device
        if device == "auto":
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        check_device(device)
        return device

    def wrapper(self, name: str, *, stage: str | None = None) -> ModelWrapper:
        """The loaded model (once per process); ``stage=BEFORE`` loads the base checkpoint."""
        from miniature.core.models import load_model

        stage = None if stage == ENCODER else stage  # a headless model's task stage is its encoder
        key = (name, stage or "")
        if key not in self._wrappers:
            spec = self.spec(name, stage)
            headless = stage == BEFORE or bool(self.missing_head(name))
            options: dict[str, Any] = dict(
                device=self.device,
                trust_remote_code=self.settings.trust_remote_code,
                allow_pickle=self.settings.allow_pickle,
                max_length=self.settings.max_length,
                batch_size=self.settings.batch_size,
                pooling=self.pooling_of(name),
                onnx_outputs=self.settings.onnx_outputs,
                decoder=self.settings.decoders,
                gguf_runtime=self.settings.gguf_runtime,
                tokenizer_from=self.spec(self.reference) if name != self.reference else None,
            )
            if self.is_decoder(name) and not headless and self.choice_problem() is None:
                options.update(prompt_template=self.settings.prompt_template, choice_score=self.settings.choice_score)
                if not self.multiple_choice:
                    options.update(choices=self.choice_words())
            wrapper = load_model(spec, head="encoder" if headless else self.head, **options)
            if wrapper.missing_head:  # the headers could not tell (pickle, hub): never use a made-up head
                self._missing_head[name] = wrapper.missing_head
                wrapper = load_model(spec, head="encoder", **options)
            wrapper.name = name
            if wrapper.decoder and not headless:
                wrapper.multiple_choice = self.multiple_choice
            self._wrappers[key] = wrapper
        return self._wrappers[key]

    def model_fingerprint(self, name: str, stage: str | None) -> str:
        """Weights fingerprint without loading the model when it is a local directory."""
        from pathlib import Path

        from miniature.core.models import fingerprint_files

        spec = self.spec(name, stage)
        if not spec.is_local:
            return self.wrapper(name, stage=stage).fingerprint
        if spec.source not in self._file_fingerprints:
            self._file_fingerprints[spec.source] = fingerprint_files(Path(spec.source))
        found = self._file_fingerprints[spec.source]
        if self.settings.onnx_outputs and self.onnx_export(name) is not None:  # other outputs read
            from miniature.core.cache import fingerprint

            found = fingerprint(found, sorted(self.settings.onnx_outputs.items()))
        if self.gguf(name) is not None:  # the same file run by llama.cpp or dequantized by transformers
            from miniature.core.gguf_model import runtime_fingerprint

            found = runtime_fingerprint(found, self.settings.gguf_runtime)
        return found

    def missing_head(self, name: str) -> list[str]:
        """Task-head weights ``name``'s checkpoint lacks (read from its file headers, no
        weights loaded); ``[]`` when complete, unknown until loaded, or fine-tuned here."""
        if self.settings.finetune:
            return []
        if name not in self._missing_head:
            self._missing_head[name] = missing_head_weights(
                self.specs[name],
                self.head_of(name),
                trust_remote_code=self.settings.trust_remote_code,
                onnx_outputs=self.settings.onnx_outputs,
            )
        return self._missing_head[name] or []

    def gguf(self, name: str) -> Any:
        """The GGUF file ``name`` loads from (a Path), or None when it is no GGUF."""
        from miniature.core.gguf_model import gguf_file

        spec = self.specs[name]
        return gguf_file(spec.source) if spec.is_local else None

    def onnx_export(self, name: str) -> Any:
        """The ONNX file ``name`` loads from (a Path), or None for a PyTorch checkpoint."""
        from miniature.core.onnx_model import onnx_file

        spec = self.specs[name]
        return onnx_file(spec.source) if spec.is_local else None

    def head_problem(self, name: str) -> str | None:
        """Why ``name`` cannot run the checks that need its task head (prediction errors,
        adversarial vulnerability), in one line with the fix; None when it can. Cheap: reads
        config.json and the weight files' headers, loads no model."""
        if self.is_decoder(name) and self.choice_problem() is not None:
            return self.choice_problem()
        if self.multiple_choice and not self.is_decoder(name):
            return (
                f"model {name!r} is an encoder, and the test data {self.data.test.source!r} is multiple-choice "
                "(each item its own choices), which a classification head with fixed labels cannot "
                "answer; fix: gate decoder LMs on it, or pass text/label data"
            )
        if self.is_decoder(name) and self.task == "qa":
            return (
                f"model {name!r} is a decoder LM, and extractive QA reads answer spans from an "
                "encoder's start/end logits; fix: gate decoders with --task classification "
                "(answers scored by choice log-likelihood)"
            )
        missing = self.missing_head(name)
        if missing and self.onnx_export(name) is not None:
            from miniature.core.onnx_model import missing_output_line, onnx_outputs

            return missing_output_line(name, self.head, missing, onnx_outputs(self.onnx_export(name)))
        if missing:
            return (
                f"{head_missing_line(name, self.head_of(name), missing)}; fix: pass --finetune to "
                "fine-tune it here on the training data, or pass a checkpoint fine-tuned "
                "for the task"
            )
        return self._label_count_problem(name)

    def _label_count_problem(self, name: str) -> str | None:
        """A classifier trained for another number of labels than the data has."""
        if (
            self.task != "classification"
            or self.settings.finetune
            or self.settings.label_map
            or self.is_decoder(name)
            or self.multiple_choice
        ):  # a decoder scores the data's own labels
            return None
        test, train = self.data.test, self.data.train
        if test.labels is None:
            return None
        distinct = set(test.labels) | set(train.labels or [])
        count = max(len(distinct), len(test.label_names))
        try:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(
                self.spec(name).source, trust_remote_code=self.settings.trust_remote_code
            )
        except (OSError, ValueError):  # not readable without the network: the load will say
            return None
        num_labels = int(config.num_labels)
        if count < 2 or num_labels == count:
            return None
        return (
            f"model {name!r} has a classification head for {num_labels} label(s) "
            f"(num_labels in its config.json) but the data has {count} distinct label(s) "
            f"({test.source}); fix: pass a checkpoint fine-tuned on these labels, --finetune "
            "to fine-tune it here, or --label-map if its labels map onto the data's"
        )

    def label_translation(self, name: str) -> np.ndarray | None:
        """Model label id -> data label id, after checking the model's label map against
        the reference's and the data's (a clear error when they disagree)."""
        from transformers import AutoConfig

        from miniature.core.tasks.classification import check_label_maps, id2label, translation_table

        if self.is_decoder(name):
            return None  # its answers are the data's label ids (one choice word per label)
        if name not in self._label_maps:

            def config(model: str) -> Any:
                from miniature.core.models import model_file_boundary

                with model_file_boundary(self.spec(model), "config.json"):
                    return AutoConfig.from_pretrained(
                        self.spec(model).source, trust_remote_code=self.settings.trust_remote_code
                    )

            reference = config(self.reference)
            mapping = check_label_maps(
                reference,
                config(name) if name != self.reference else reference,
                self.data.test.labels or [],
                label_map=self.settings.label_map,
                reference_name=f"{self.reference} (reference)",
                candidate_name=name,
                data_label_names=self.data.test.label_names,
                data_source=self.data.test.source,
            )
            self._label_maps[name] = (
                None if mapping is None else translation_table(id2label(config(name)), mapping, name)
            )
        return self._label_maps[name]

    def attack_wrapper(self) -> ModelWrapper:
        """The masked LM that proposes BERT-Attack's substitutions (loaded once)."""
        from miniature.core.models import load_model

        key = ("__attack_model__", "")
        if self.attack_problem is not None or self.attack_spec is None:
            raise NotApplicable(self.attack_problem or "the attack runs only with --task classification")
        if key not in self._wrappers:
            spec = self.attack_spec
            trust = self.settings.trust_remote_code
            missing = missing_head_weights(spec, "masked-lm", trust_remote_code=trust)
            if not missing:
                wrapper = load_model(
                    spec,
                    head="masked-lm",
                    device=self.device,
                    trust_remote_code=trust,
                    allow_pickle=self.settings.allow_pickle,
                    max_length=self.settings.max_length,
                    batch_size=self.settings.batch_size,
                )
                missing = wrapper.missing_head
            if missing:
                raise ModelReferenceError(
                    f"attack {head_missing_line(spec.name, 'masked-lm', missing)}, so its word "
                    f"substitutions would be noise; fix: pass {opt.ATTACK_MODEL} a masked-LM "
                    "checkpoint such as bert-base"
                )
            self._wrappers[key] = wrapper
        return self._wrappers[key]
