"""The shared engine behind every check: compute or load cached outputs, compare, explain.

A :class:`Gate` is built once per pytest process from the resolved options. It resolves
the models, loads them lazily (once each), loads the data, computes per-item outputs
through the :class:`~miniature.core.cache.OutputCache`, and memoises each comparison. The
characteristic modules do the arithmetic; the gate only feeds them arrays.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from miniature.core import settings as opt
from miniature.core.cache import OutputCache, fingerprint, fingerprint_texts
from miniature.core.characteristics.base import ComparisonResult
from miniature.core.registry import Registry, active
from miniature.core.data import (ROLES, TaskData, TextData, builtin_qa_data, builtin_sentiment_data, load_qa_data,
                   load_text_data)
from miniature.errors import DataWarning, MiniatureError, ModelReferenceError, NotApplicable
from miniature.core.models import (ModelSpec, ModelWrapper, check_device, head_missing_line, locate,
                     missing_head_weights, resolve_model, safe_id, unique_name)

BEFORE, AFTER = "before fine-tuning", "after fine-tuning"
#: The stage of models that have no task head: representation compared on their encoders.
ENCODER = "pre-trained encoder"

#: Below this many items a figure's 95% interval is wide: a DataWarning says so.
WIDE_INTERVAL_ITEMS = 30


@dataclass(frozen=True)
class Pair:
    """Two models to compare; ``gating`` pairs (reference vs candidate) can fail the run."""

    reference: str
    candidate: str
    gating: bool

    @property
    def id(self) -> str:
        """The test id: the names made safe (see :func:`miniature.core.models.safe_id`)."""
        return f"{safe_id(self.reference)}-vs-{safe_id(self.candidate)}"


class Gate:
    """Everything one gate run computes, shared by all checks of a process."""

    def __init__(self, settings: opt.Settings, *, data: TaskData | None = None,
                 registry: Registry | None = None) -> None:
        self.settings = settings
        #: the characteristics this gate compares (the running one's by default)
        self.registry = registry if registry is not None else active()
        if not settings.reference:
            raise MiniatureError(f"no reference model; fix: pass {opt.REFERENCE} MODEL")
        try:
            opt.check_combinations(settings.values)
        except ValueError as error:
            raise MiniatureError(str(error)) from None
        cache_root = None if settings[opt.NO_CACHE] else settings[opt.CACHE_DIR]
        self.cache = OutputCache(cache_root, refresh=settings[opt.REFRESH])
        self.specs: dict[str, ModelSpec] = {}
        self.names: list[str] = []
        self.reference = self._add(settings.reference)
        self.candidates = [self._add(c) for c in settings.candidates]
        self.base_specs: dict[str, ModelSpec] = {}
        bases = [settings[opt.REFERENCE_BASE]] + list(settings[opt.CANDIDATE_BASE] or [])
        for name, base in zip(self.names, bases):
            if base:
                self.base_specs[name] = locate(resolve_model(base))
        #: why the attack model cannot be loaded (the attack is then skipped), found before any work
        self.attack_problem: str | None = None
        self.attack_spec: ModelSpec | None = None
        if self.task == "classification":
            try:
                self.attack_spec = locate(resolve_model(settings[opt.ATTACK_MODEL]))
            except ModelReferenceError as error:
                self.attack_problem = f"attack model: {error}"
        self._data = data
        self._wrappers: dict[tuple[str, str], ModelWrapper] = {}
        self._results: dict[tuple[str, str, str, str | None], ComparisonResult] = {}
        self._file_fingerprints: dict[str, str] = {}
        self._attacks: dict[str, list[dict[str, Any]]] = {}
        self._finetuned: dict[str, ModelSpec] = {}
        #: items per saved chunk of outputs: an interrupted run resumes at the last chunk
        self.chunk_size = 1024
        self._label_maps: dict[str, Any] = {}
        self._missing_head: dict[str, list[str] | None] = {}
        self.noise_model: str | None = None
        if settings[opt.NOISE_FLOOR]:
            # the reference once more: re-fine-tuned with another seed, or simply reloaded
            self.noise_model = f"{self.reference}~copy"
            self.specs[self.noise_model] = self.specs[self.reference]

    # -- models ----------------------------------------------------------------------------
    def _add(self, reference: str) -> str:
        spec = locate(resolve_model(reference))
        name = unique_name(spec.name, list(self.specs))
        self.specs[name] = spec
        self.names.append(name)
        return name

    def pairs(self) -> list[Pair]:
        """Reference vs each candidate (gating), then candidates with each other (reported)."""
        gating_all = bool(self.settings[opt.GATE_ALL_PAIRS])
        pairs = [Pair(self.reference, c, True) for c in self.candidates]
        for i, first in enumerate(self.candidates):
            for second in self.candidates[i + 1:]:
                pairs.append(Pair(first, second, gating_all))
        return pairs

    def stages(self) -> list[str | None]:
        """Representation stages: before/after fine-tuning when base checkpoints are known;
        ``ENCODER`` when no model has its task head (None: the task checkpoints)."""
        if self.settings[opt.FINETUNE] or (self.base_specs and len(self.base_specs) == len(self.names)):
            return [BEFORE, AFTER]
        if all(self.missing_head(name) for name in self.names):
            return [ENCODER]
        return [None]

    def missing_head(self, name: str) -> list[str]:
        """Task-head weights ``name``'s checkpoint lacks (read from its file headers, no
        weights loaded); ``[]`` when complete, unknown until loaded, or fine-tuned here."""
        if self.settings[opt.FINETUNE]:
            return []
        if name not in self._missing_head:
            self._missing_head[name] = missing_head_weights(
                self.specs[name], self.head, trust_remote_code=self.settings[opt.TRUST_REMOTE_CODE])
        return self._missing_head[name] or []

    def head_problem(self, name: str) -> str | None:
        """Why ``name`` cannot run the checks that need its task head (prediction errors,
        adversarial vulnerability), in one line with the fix; None when it can. Cheap: reads
        config.json and the weight files' headers, loads no model."""
        missing = self.missing_head(name)
        if missing:
            return (f"{head_missing_line(name, self.head, missing)}; fix: pass --finetune to "
                    "fine-tune it here on the training data, or pass a checkpoint fine-tuned "
                    "for the task")
        return self._label_count_problem(name)

    def _label_count_problem(self, name: str) -> str | None:
        """A classifier trained for another number of labels than the data has."""
        if self.task != "classification" or self.settings[opt.FINETUNE] or self.settings[opt.LABEL_MAP]:
            return None
        test, train = self.data.test, self.data.train
        if test.labels is None:
            return None
        distinct = set(test.labels) | set(train.labels or [])
        count = max(len(distinct), len(test.label_names))
        try:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(self.spec(name).source,
                                                trust_remote_code=self.settings[opt.TRUST_REMOTE_CODE])
        except (OSError, ValueError):  # not readable without the network: the load will say
            return None
        num_labels = int(config.num_labels)
        if count < 2 or num_labels == count:
            return None
        return (f"model {name!r} has a classification head for {num_labels} label(s) "
                f"(num_labels in its config.json) but the data has {count} distinct label(s) "
                f"({test.source}); fix: pass a checkpoint fine-tuned on these labels, --finetune "
                "to fine-tune it here, or --label-map if its labels map onto the data's")

    def spec(self, name: str, stage: str | None = None) -> ModelSpec:
        """Where a model's checkpoint for ``stage`` is: the base one before fine-tuning,
        else the task checkpoint (fine-tuned here first with ``--finetune``)."""
        finetuning = bool(self.settings[opt.FINETUNE])
        if stage == BEFORE:
            return self.specs[name] if finetuning else self.base_specs[name]
        if not finetuning:
            return self.specs[name]
        if name not in self._finetuned:
            self._finetuned[name] = self._finetune(name)
        return self._finetuned[name]

    def _finetune(self, name: str) -> ModelSpec:
        from miniature.core.finetune import finetune

        if self.cache.root is None:
            import tempfile

            root = tempfile.mkdtemp(prefix="miniature-finetuned-")
        else:
            root = self.cache.root / "finetuned"
        seed = self.settings[opt.SEED] + (1 if name == self.noise_model else 0)
        if self.task != "qa" and self.data.train.labels is None:
            raise MiniatureError(self.unlabelled("train", f"{opt.FINETUNE} trains on its labels"))
        train = self.data.train.examples if self.task == "qa" else self.data.train
        path = finetune(self.specs[name].source, self.task, train,
                        output_root=root, seed=seed, max_length=self.settings[opt.MAX_LENGTH],
                        trust_remote_code=self.settings[opt.TRUST_REMOTE_CODE],
                        allow_pickle=self.settings[opt.ALLOW_PICKLE])
        return ModelSpec(name=name, source=str(path), is_local=True)

    @property
    def task(self) -> str:
        return self.settings[opt.TASK]

    @property
    def head(self) -> str:
        """The task head of the checkpoints: classification or extractive QA."""
        return "qa" if self.task == "qa" else "classification"

    @property
    def device(self) -> str:
        device = self.settings[opt.DEVICE]
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
            options = dict(device=self.device, trust_remote_code=self.settings[opt.TRUST_REMOTE_CODE],
                           allow_pickle=self.settings[opt.ALLOW_PICKLE],
                           max_length=self.settings[opt.MAX_LENGTH],
                           batch_size=self.settings[opt.BATCH_SIZE], pooling=self.settings[opt.POOLING])
            wrapper = load_model(spec, head="encoder" if headless else self.head, **options)
            if wrapper.missing_head:  # the headers could not tell (pickle, hub): never use a made-up head
                self._missing_head[name] = wrapper.missing_head
                wrapper = load_model(spec, head="encoder", **options)
            wrapper.name = name
            self._wrappers[key] = wrapper
        return self._wrappers[key]

    # -- data ------------------------------------------------------------------------------
    @property
    def data(self) -> TaskData:
        if self._data is None:
            self._data = self._load_data()
        return self._data

    def _load_data(self) -> TaskData:
        s = self.settings
        flags = {"train": opt.TRAIN_DATA, "holdout": opt.HOLDOUT_DATA, "test": opt.TEST_DATA,
                 "challenge": opt.CHALLENGE_DATA}
        given = {role: s[flag] for role, flag in flags.items() if s[flag]}
        builtin = None
        if len(given) < len(flags):
            builtin = builtin_qa_data() if self.task == "qa" else builtin_sentiment_data()
        sets: dict[str, TextData] = {}
        for role in ROLES:
            if role not in given:
                sets[role] = builtin.role(role).head(s[opt.DATA_LIMIT])  # type: ignore[union-attr]
            elif self.task == "qa":
                sets[role] = load_qa_data(given[role], limit=s[opt.DATA_LIMIT])
            else:
                sets[role] = load_text_data(
                    given[role], text_column=s[opt.TEXT_COLUMN],
                    label_column=None if role == "challenge" else s[opt.LABEL_COLUMN],
                    limit=s[opt.DATA_LIMIT])
        is_ood = None
        if "challenge" not in given and builtin is not None and builtin.challenge_is_ood:
            is_ood = builtin.challenge_is_ood[: len(sets["challenge"])]
        for role, data in sets.items():
            items = list(zip(data.texts, data.pairs or data.texts))
            duplicates = len(items) - len(set(items))
            if duplicates:
                warnings.warn(DataWarning(
                    f"the {role} data ({data.source}) holds {duplicates} duplicate item(s); "
                    "duplicates are each other's nearest neighbours and tie exactly (ties are "
                    "broken by item order); remove them unless they are meant"), stacklevel=2)
        return TaskData(challenge_is_ood=is_ood, **sets)

    # -- outputs ---------------------------------------------------------------------------
    def outputs(self, name: str, role: str, *, stage: str | None = None) -> dict[str, np.ndarray]:
        """Per-item ``embeddings`` (and ``logits`` after fine-tuning) of one data set, cached."""
        data = self.data.role(role)
        stage = None if stage == ENCODER else stage
        key = fingerprint(
            "outputs", self._model_fingerprint(name, stage), _data_fingerprint(data),
            self.settings[opt.POOLING], self.settings[opt.MAX_LENGTH], stage or "task", self.task,
        )

        truncated = []
        used = [self.settings[opt.MAX_LENGTH]]

        def compute(part: slice) -> dict[str, np.ndarray]:
            wrapper = self.wrapper(name, stage=stage)
            used[0] = wrapper.max_length  # less than --max-length past the model's positions
            texts = data.texts[part]
            if stage == BEFORE or self.task == "qa" or self.missing_head(name):
                pairs = data.pairs[part] if data.pairs is not None else None
                arrays = {"embeddings": wrapper.encode(texts, pairs=pairs)}
            else:
                embeddings, logits = wrapper.encode_and_classify(texts)
                arrays = {"embeddings": embeddings, "logits": logits}
            truncated.append(wrapper.truncated)
            return arrays

        arrays = self.cache.chunked("outputs", key, len(data), compute, chunk_size=self.chunk_size)
        where = f"model {name!r} on the {role} data ({data.source})"
        if sum(truncated):
            warnings.warn(DataWarning(
                f"{where}: {sum(truncated)} of {len(data)} items are longer than "
                f"{_length_used(used[0], self.settings[opt.MAX_LENGTH])} tokens and were "
                "truncated; raise --max-length to compare whole texts"), stacklevel=2)
        self._check_embeddings(arrays["embeddings"], where)
        return arrays

    @staticmethod
    def _check_embeddings(embeddings: np.ndarray, where: str) -> None:
        """Non-finite vectors are an error; all-zero ones a warning (their neighbours are ties)."""
        finite = np.isfinite(embeddings).all(axis=1)
        if not finite.all():
            raise MiniatureError(
                f"{where}: {int((~finite).sum())} of {len(embeddings)} embeddings contain NaN or "
                "inf (often a float16 overflow or a diverged checkpoint); fix: run the model in "
                "float32 (--device cpu) or check its weights")
        zero = ~np.any(embeddings, axis=1)
        if zero.any():
            warnings.warn(DataWarning(
                f"{where}: {int(zero.sum())} of {len(embeddings)} embeddings are all zero; they are "
                "equally far from everything, so their neighbours are ties broken by item order"),
                stacklevel=3)

    def _model_fingerprint(self, name: str, stage: str | None) -> str:
        """Weights fingerprint without loading the model when it is a local directory."""
        from pathlib import Path

        from miniature.core.models import fingerprint_files

        spec = self.spec(name, stage)
        if spec.is_local:
            if spec.source not in self._file_fingerprints:
                self._file_fingerprints[spec.source] = fingerprint_files(Path(spec.source))
            return self._file_fingerprints[spec.source]
        return self.wrapper(name, stage=stage).fingerprint

    # -- comparisons -----------------------------------------------------------------------
    def threshold(self, characteristic: str) -> float | None:
        """``--threshold NAME=J``, else the characteristic's own flag, else its default."""
        spec = self.registry[characteristic]
        if characteristic in self.settings.thresholds:
            return self.settings.thresholds[characteristic]
        if spec.threshold_flag in opt.BY_FLAG:
            return self.settings[spec.threshold_flag]
        return spec.default_threshold

    def compare(self, characteristic: str, pair: Pair, *, stage: str | None = None) -> ComparisonResult:
        """The memoised comparison of one characteristic for one pair (and stage)."""
        key = (characteristic, pair.reference, pair.candidate, stage)
        if key not in self._results:
            compare = self.registry[characteristic].compare_function
            try:
                result = compare(self, pair, stage)
                if self.noise_model is not None:
                    floor = compare(self, Pair(self.reference, self.noise_model, False), stage)
                    result.noise_floor = floor.figure
            except ValueError as error:  # the numeric layer's input checks
                raise MiniatureError(f"{characteristic.replace('_', ' ')}, {pair.reference} vs "
                                     f"{pair.candidate}: {error}") from None
            if result.n < WIDE_INTERVAL_ITEMS:
                more = ("raise --attack-size" if characteristic == "adversarial_vulnerability"
                        else "pass more data")
                warnings.warn(DataWarning(
                    f"{characteristic.replace('_', ' ')}, {pair.reference} vs {pair.candidate}: "
                    f"computed on only n={result.n} items (fewer than {WIDE_INTERVAL_ITEMS}), so "
                    f"its 95% interval is wide; read the figure with care, or {more}"), stacklevel=2)
            self._results[key] = result
        return self._results[key]

    def common(self, characteristic: str, pair: Pair) -> dict[str, Any]:
        """The arguments every characteristic's comparison takes from the run's settings."""
        return dict(reference=pair.reference, candidate=pair.candidate,
                    threshold=self.threshold(characteristic),
                    threshold_on=self.settings[opt.THRESHOLD_ON], gating=pair.gating,
                    n_bootstrap=self.settings[opt.BOOTSTRAP], seed=self.settings[opt.SEED])

    def correct(self, name: str) -> np.ndarray:
        """Per test item: does the model predict the gold label (QA: the exact answer)?"""
        problem = self.head_problem(name)
        if problem:
            raise NotApplicable(problem)
        if self.task == "qa":
            return self._qa_correct(name)
        labels = self.data.test.labels
        if labels is None:
            raise NotApplicable(self.unlabelled("test", "prediction errors need each test item's "
                                                "gold label"))
        logits = self.outputs(name, "test")["logits"]
        predicted = logits.argmax(axis=1)
        translation = self.label_translation(name)
        if translation is not None:
            predicted = translation[predicted]
        return predicted == np.asarray(labels)

    def _qa_correct(self, name: str) -> np.ndarray:
        """Exact match under SQuAD 2.0 rules of the model's answers ("" = no answer), cached."""
        from miniature.core.tasks.qa import predict_qa, qa_correct

        test = self.data.test
        doc_stride = max(8, self.settings[opt.MAX_LENGTH] // 3)
        key = fingerprint("qa-answers", self._model_fingerprint(name, None), _data_fingerprint(test),
                          self.settings[opt.MAX_LENGTH], doc_stride)
        answers = self.cache.load_json("answers", key)
        if answers is None or len(answers) != len(test):
            answers = predict_qa(self.wrapper(name), test.examples, doc_stride=doc_stride)
            self.cache.save_json("answers", key, answers)
        return qa_correct(answers, test.examples)

    def label_translation(self, name: str) -> np.ndarray | None:
        """Model label id -> data label id, after checking the model's label map against
        the reference's and the data's (a clear error when they disagree)."""
        from transformers import AutoConfig

        from miniature.core.tasks.classification import check_label_maps, id2label, translation_table

        if name not in self._label_maps:
            def config(model: str) -> Any:
                from miniature.core.models import model_file_boundary

                with model_file_boundary(self.spec(model), "config.json"):
                    return AutoConfig.from_pretrained(
                        self.spec(model).source, trust_remote_code=self.settings[opt.TRUST_REMOTE_CODE])

            reference = config(self.reference)
            mapping = check_label_maps(
                reference, config(name) if name != self.reference else reference,
                self.data.test.labels or [], label_map=self.settings[opt.LABEL_MAP],
                reference_name=f"{self.reference} (reference)", candidate_name=name,
                data_label_names=self.data.test.label_names)
            self._label_maps[name] = (None if mapping is None
                                      else translation_table(id2label(config(name)), mapping, name))
        return self._label_maps[name]

    def require_heads(self, pair: Pair) -> None:
        """Raise NotApplicable when either model of ``pair`` lacks a usable task head."""
        for name in (pair.reference, pair.candidate):
            problem = self.head_problem(name)
            if problem:
                raise NotApplicable(problem)

    def unlabelled(self, role: str, need: str) -> str:
        """One line: the ``role`` data has no labels, what needs them, and the fix."""
        source = self.data.role(role).source
        why = "is a .txt file, which has no labels" if source.lower().endswith(".txt") else "has no labels"
        return (f"the {role} data {source!r} {why}, and {need}; fix: pass --{role}-data as a "
                f".jsonl/.csv file with a label column (--label-column)")

    def attack_wrapper(self) -> ModelWrapper:
        """The masked LM that proposes BERT-Attack's substitutions (loaded once)."""
        from miniature.core.models import load_model

        key = ("__attack_model__", "")
        if self.attack_problem is not None or self.attack_spec is None:
            raise NotApplicable(self.attack_problem or "the attack runs only with --task classification")
        if key not in self._wrappers:
            spec = self.attack_spec
            trust = self.settings[opt.TRUST_REMOTE_CODE]
            missing = missing_head_weights(spec, "masked-lm", trust_remote_code=trust)
            if not missing:
                wrapper = load_model(
                    spec, head="masked-lm", device=self.device, trust_remote_code=trust,
                    allow_pickle=self.settings[opt.ALLOW_PICKLE],
                    max_length=self.settings[opt.MAX_LENGTH], batch_size=self.settings[opt.BATCH_SIZE])
                missing = wrapper.missing_head
            if missing:
                raise ModelReferenceError(
                    f"attack {head_missing_line(spec.name, 'masked-lm', missing)}, so its word "
                    f"substitutions would be noise; fix: pass {opt.ATTACK_MODEL} a masked-LM "
                    "checkpoint such as bert-base")
            self._wrappers[key] = wrapper
        return self._wrappers[key]

    def attack_outcomes(self, name: str) -> list[dict[str, Any]]:
        """BERT-Attack outcomes for one target on the seeded test sample (cached, resumable)."""
        from miniature.core.characteristics.adversarial import AttackSettings, attack_model_outcomes, sample_items

        if self.task != "classification":
            raise NotApplicable("the adversarial check attacks a sentiment classifier, as the paper "
                                "does on IMDB; run it with --task classification")
        problem = self.head_problem(name)
        if problem:
            raise NotApplicable(problem)
        if name not in self._attacks:
            test = self.data.test
            if test.labels is None:
                raise NotApplicable(self.unlabelled("test", "the attack needs each item's gold label"))
            if self.attack_problem is not None:  # the user's own models and data first
                raise NotApplicable(self.attack_problem)
            index = sample_items(len(test), self.settings[opt.ATTACK_SIZE], self.settings[opt.SEED])
            self._attacks[name] = attack_model_outcomes(
                self.attack_wrapper(), self.wrapper(name),
                [test.texts[i] for i in index], [test.labels[i] for i in index],
                settings=AttackSettings(top_k_words=self.settings[opt.ATTACK_TOP_K],
                                        max_length=min(self.settings[opt.MAX_LENGTH],
                                                       self.attack_wrapper().max_length)),
                cache=self.cache, seed=self.settings[opt.SEED])
        return self._attacks[name]

def _length_used(used: int, requested: int) -> str:
    if used == requested:
        return f"--max-length {requested}"
    return f"{used} (the model's position limit; --max-length {requested})"


def _data_fingerprint(data: TextData) -> str:
    """Content hash of a data set's texts (and pair segments)."""
    if data.pairs is None:
        return fingerprint_texts(data.texts)
    return fingerprint(fingerprint_texts(data.texts), fingerprint_texts(data.pairs))

