"""Running BERT-Attack and storing its outcomes: the seeded item sample, one target's
outcomes (:func:`attack_model_outcomes`, journalled per item and resumable, sharded for an
executor), the candidate's predictions on the reference's adversarial texts, and
:class:`AttackRunner`, the attack of each model of a gate run.

Light to import: TextAttack and torch are imported only when an attack runs
(:mod:`miniature.core.attack.recipe`, :mod:`miniature.core.attack.engine`).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from miniature.core.attack.settings import DEFAULT_SAMPLE_SIZE, RESULTS, AttackSettings, is_whole_number, settings_key
from miniature.core.attack.textattack_offline import ATTACK_VERSION, english_stopwords, textattack_version
from miniature.core.cache import OutputCache, append_record, fingerprint, fingerprint_texts
from miniature.errors import NotApplicable

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from miniature.core.data import TaskData
    from miniature.core.models import ModelWrapper


# --------------------------------------------------------------------------------------
# One target's attack


def make_target_wrapper(wrapper: "ModelWrapper") -> Any:
    """A TextAttack ``ModelWrapper`` over a miniature classifier (counts its queries)."""
    check_classifier(wrapper, "target")
    from miniature.core.attack.recipe import TargetModelWrapper

    return TargetModelWrapper(wrapper)


def sample_items(n_items: int, sample_size: int | None = DEFAULT_SAMPLE_SIZE, seed: int = 0) -> list[int]:
    """A seeded sample of item indices, in data order (all items when there are fewer).

    The default, :data:`DEFAULT_SAMPLE_SIZE` (200), is smaller than the paper's 1,000:
    an attack makes hundreds of model queries per item. ``None`` takes every item.
    """
    if not is_whole_number(n_items) or n_items < 0:
        raise ValueError(f"n_items must be a whole number >= 0, got {n_items!r}")
    if sample_size is None or sample_size >= n_items:
        return list(range(n_items))
    if not is_whole_number(sample_size) or sample_size < 1:
        raise ValueError(f"sample_size must be a whole number >= 1 or None (all items), got {sample_size!r}")
    return sorted(random.Random(seed).sample(range(n_items), sample_size))


def attack_model_outcomes(
    attack_model_wrapper: "ModelWrapper",
    target_wrapper: "ModelWrapper",
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    settings: AttackSettings | None = None,
    cache: OutputCache | None = None,
    seed: int = 0,
    progress: bool = True,
    window: int | None = None,
    items: tuple[int, int] | None = None,
) -> list[dict[str, Any]]:
    """Attack every text against ``target_wrapper``; one outcome dict per item, in order.

    ``attack_model_wrapper`` is a masked LM (``load_model(..., head="masked-lm")``) and
    ``target_wrapper`` a classifier. Each outcome holds ``label``,
    ``original_prediction``, ``original_correct``, ``result`` (one of :data:`RESULTS`),
    ``original_text``, ``perturbed_text`` (None when skipped), ``perturbed_prediction``,
    ``words_changed``, ``queries`` (TextAttack's count of target queries) and
    ``seconds``. Outcomes are journalled per item in ``cache`` under the attack model's,
    the target's and the data's fingerprints and the settings, so an interrupted run
    resumes and a finished one is read back without loading TextAttack.

    ``settings.engine`` picks the path (same outcomes): ``"batched"`` attacks up to
    ``window`` items at once (default 64) and shares the attack model's outputs with
    every other target attacked with the same attack model and settings (in memory, and
    in ``cache`` across runs); ``"textattack"`` attacks one item at a time. ``seconds``
    is an item's wall time, in the batched path while it was in flight with the others.

    ``items=(start, stop)`` attacks only that range (a shard, e.g. one Ray task): its
    outcomes go to a journal of their own (:func:`shard_key`), which the next call without
    ``items`` folds into the run's journal; items the run's journal already holds are
    returned from it. The outcomes of the range are returned.
    """
    settings = settings or AttackSettings()
    texts, labels = _check_inputs(texts, labels)
    _check_masked_lm(attack_model_wrapper)
    num_labels = check_classifier(target_wrapper, "target")
    bad = [i for i, label in enumerate(labels) if not 0 <= label < num_labels]
    if bad:
        raise ValueError(
            f"labels: item {bad[0]} has label {labels[bad[0]]}, but the target "
            f"{target_wrapper.name!r} has {num_labels} classes (0..{num_labels - 1}); "
            "fix: map the labels to class indices"
        )
    vocab = int(getattr(attack_model_wrapper.model.config, "vocab_size", 0) or 0)
    if vocab and settings.max_candidates > vocab:
        raise ValueError(
            f"settings.max_candidates={settings.max_candidates} exceeds the attack "
            f"model's vocabulary ({vocab} tokens); fix: lower max_candidates"
        )
    cache = cache if cache is not None else OutputCache(None)
    key = fingerprint(
        ATTACK_VERSION,
        textattack_version(),
        attack_model_wrapper.fingerprint,
        attack_model_wrapper.max_length,
        target_wrapper.fingerprint,
        target_wrapper.max_length,
        *([signature] if (signature := getattr(target_wrapper, "answer_signature", ())) else []),
        fingerprint_texts(texts),
        labels,
        settings_key(settings),
        seed,
    )
    offset = 0
    if items is None:
        gather_shards(cache, key)
    else:
        offset, stop = items
        if not (is_whole_number(offset) and is_whole_number(stop) and 0 <= offset < stop <= len(texts)):
            raise ValueError(f"items={items!r} is not a range (start, stop) within the {len(texts)} texts")
        if not cache.refresh:
            _, whole = cache.read_journal("adversarial", key)
            if all(i in whole for i in range(offset, stop)):
                cache.hits += 1
                return [whole[i] for i in range(offset, stop)]
        texts, labels = texts[offset:stop], labels[offset:stop]
        key = shard_key(key, offset, stop)
    if settings.engine == "batched":
        return _batched_outcomes(
            attack_model_wrapper,
            target_wrapper,
            texts,
            labels,
            settings=settings,
            cache=cache,
            key=key,
            progress=progress,
            window=window,
        )
    state: dict[str, Any] = {}

    def compute(item: tuple[int, str, int]) -> dict[str, Any]:
        if "attack" not in state:
            state.update(_build(attack_model_wrapper, target_wrapper, settings))
        index, text, label = item  # the index in the whole list: a shard seeds as the whole run
        with _seeded(seed + index):
            return _attack_one(state["attack"], text, label, settings)

    def bar(todo: Iterable[int]) -> Iterable[int]:
        from tqdm.auto import tqdm

        todo = list(todo)
        return tqdm(todo, desc=f"BERT-Attack [{target_wrapper.name}]", unit="item", disable=not progress or not todo)

    todo = [(offset + i, text, label) for i, (text, label) in enumerate(zip(texts, labels))]
    return cache.records("adversarial", key, todo, compute, progress=bar)


def shard_key(key: str, start: int, stop: int) -> str:
    """The journal of the attack of items ``[start, stop)`` of the run ``key`` (indices in
    it count from ``start``)."""
    return f"{key}.items-{start:09d}-{stop:09d}"


def gather_shards(cache: OutputCache, key: str) -> int:
    """Fold the journals of the run ``key``'s shards (see :func:`shard_key`) into its own
    journal and remove them; the records already there win. Returns the records added."""
    if cache.root is None or cache.refresh:
        return 0
    folder = cache.root / "adversarial"
    shards = sorted(folder.glob(f"{key}.items-*.jsonl")) if folder.is_dir() else []
    if not shards:
        return 0
    journal, done = cache.read_journal("adversarial", key)
    added = 0
    for path in shards:
        start = int(path.name[len(key) + len(".items-") :].split("-")[0])
        _, records = cache.read_journal("adversarial", path.name[: -len(".jsonl")])
        for local, record in sorted(records.items()):
            index = start + local
            if index not in done and journal is not None:
                record = {**record, "index": index}
                append_record(journal, record)
                done[index] = record
                added += 1
        path.unlink(missing_ok=True)
    return added


def _batched_outcomes(
    attack_model_wrapper: "ModelWrapper",
    target_wrapper: "ModelWrapper",
    texts: list[str],
    labels: list[int],
    *,
    settings: AttackSettings,
    cache: OutputCache,
    key: str,
    progress: bool,
    window: int | None,
) -> list[dict[str, Any]]:
    """``engine="batched"``: the items not yet journalled, attacked in lockstep.

    Outcomes go to the same journal as the sequential path's (one JSON line per item, as
    each item ends, in the order items end), so either path resumes the other's run.
    """
    journal, done = cache.read_journal("adversarial", key)
    todo = [i for i in range(len(texts)) if i not in done]
    if not todo:
        cache.hits += 1
        return [done[i] for i in range(len(texts))]
    cache.misses += 1

    from tqdm.auto import tqdm

    from miniature.core.attack.engine import DEFAULT_WINDOW, build_batched_attacks, shared_outputs

    shared = shared_outputs(attack_model_wrapper, settings, cache)
    router, make = build_batched_attacks(attack_model_wrapper, target_wrapper, settings, english_stopwords(), shared)
    free: list[Any] = []

    def job(index: int) -> Any:
        def run() -> dict[str, Any]:
            attack = free.pop() if free else make()
            try:
                return _attack_one(attack, texts[index], labels[index], settings)
            finally:
                free.append(attack)

        return run

    bar = tqdm(total=len(todo), desc=f"BERT-Attack [{target_wrapper.name}]", unit="item", disable=not progress)

    def finished(index: int, outcome: dict[str, Any]) -> None:
        record = dict(outcome)
        record["index"] = index
        done[index] = record
        if journal is not None:
            append_record(journal, record)
        shared.flush()
        bar.update(1)

    try:
        router.lockstep.run(((i, job(i)) for i in todo), window=window or DEFAULT_WINDOW, on_done=finished)
    finally:
        shared.flush(force=True)
        bar.close()
    return [done[i] for i in range(len(texts))]


def _build(
    attack_model_wrapper: "ModelWrapper", target_wrapper: "ModelWrapper", settings: AttackSettings
) -> dict[str, Any]:
    from miniature.core.attack.recipe import TargetModelWrapper, build_attack

    target = TargetModelWrapper(target_wrapper)
    attack = build_attack(attack_model_wrapper, target, settings, english_stopwords())
    return {"attack": attack, "target": target}


def _attack_one(attack: Any, text: str, label: int, settings: AttackSettings) -> dict[str, Any]:
    from textattack.attack_results import FailedAttackResult, SkippedAttackResult, SuccessfulAttackResult

    start = time.perf_counter()
    outcome = attack.attack(text, int(label))
    seconds = time.perf_counter() - start
    original = outcome.original_result
    perturbed = outcome.perturbed_result
    queries = int(attack.goal_function.num_queries)
    if isinstance(outcome, SkippedAttackResult):
        result = "skipped"
    elif isinstance(outcome, SuccessfulAttackResult):
        result = "successful"
    elif isinstance(outcome, FailedAttackResult):
        budget = settings.query_budget
        result = "maximum queries" if budget is not None and queries >= budget else "failed"
    else:  # pragma: no cover - untargeted classification never maximizes
        raise RuntimeError(f"unexpected TextAttack result {type(outcome).__name__}")
    original_prediction = int(original.output)
    skipped = result == "skipped"
    return {
        "label": int(label),
        "original_prediction": original_prediction,
        "original_correct": original_prediction == int(label),
        "result": result,
        "original_text": text,
        "perturbed_text": None if skipped else perturbed.attacked_text.text,
        "perturbed_prediction": original_prediction if skipped else int(perturbed.output),
        "words_changed": 0 if skipped else len(perturbed.attacked_text.all_words_diff(original.attacked_text)),
        "queries": queries,
        "seconds": round(seconds, 4),
    }


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed python, numpy and torch for one item, restoring the caller's random state."""
    import numpy as np
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def transfer_predictions(
    ref_outcomes: Sequence[Mapping[str, Any]], candidate_wrapper: "ModelWrapper"
) -> dict[int, int]:
    """The candidate's predictions on the adversarial texts found against the reference.

    Keyed by item index (position in ``ref_outcomes``); only the reference's successful
    attacks are evaluated, in one batched pass. Pass the result to
    :func:`compare_adversarial` as ``transfer``.
    """
    check_outcomes(ref_outcomes, "ref_outcomes")
    check_classifier(candidate_wrapper, "candidate")
    indices = [i for i, o in enumerate(ref_outcomes) if o["result"] == "successful"]
    missing = [i for i in indices if not isinstance(ref_outcomes[i].get("perturbed_text"), str)]
    if missing:
        raise ValueError(
            f"ref_outcomes: item {missing[0]} is a successful attack with no "
            "perturbed_text; fix: pass outcomes from attack_model_outcomes"
        )
    if not indices:
        return {}
    logits = candidate_wrapper.logits([ref_outcomes[i]["perturbed_text"] for i in indices])
    return {i: int(row.argmax()) for i, row in zip(indices, logits)}


# --------------------------------------------------------------------------------------
# Input checks


def _check_inputs(texts: Sequence[str], labels: Sequence[int]) -> tuple[list[str], list[int]]:
    if isinstance(texts, str):
        raise ValueError("texts must be a sequence of texts, got a single string; fix: wrap it in a list")
    texts, labels = list(texts), list(labels)
    if not texts:
        raise ValueError("texts is empty; fix: pass at least one text to attack")
    if len(texts) != len(labels):
        raise ValueError(f"texts has {len(texts)} items but labels has {len(labels)}; fix: pass one label per text")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"texts: item {i} is {text!r}, not a non-empty string; fix: drop or repair it")
    clean = []
    for i, label in enumerate(labels):
        try:
            value = int(label)
        except (TypeError, ValueError):
            value = None
        if value is None or value != label or isinstance(label, bool):
            raise ValueError(
                f"labels: item {i} is {label!r}, not a class index; fix: map labels to integers 0..num_labels-1"
            )
        clean.append(value)
    return texts, clean


def check_outcomes(outcomes: Sequence[Mapping[str, Any]], name: str) -> None:
    """A list of outcome dicts as :func:`attack_model_outcomes` returns, or a ValueError naming ``name``."""
    if isinstance(outcomes, Mapping) or not isinstance(outcomes, Sequence):
        raise ValueError(
            f"{name} must be a list of outcome dicts (from attack_model_outcomes), got {type(outcomes).__name__}"
        )
    if not outcomes:
        raise ValueError(f"{name} is empty; fix: attack at least one item")
    for i, outcome in enumerate(outcomes):
        if not isinstance(outcome, Mapping) or outcome.get("result") not in RESULTS:
            got = outcome.get("result") if isinstance(outcome, Mapping) else outcome
            raise ValueError(
                f"{name}: item {i} has result {got!r}; each outcome needs "
                f"'result' in {RESULTS}; fix: pass outcomes from "
                "attack_model_outcomes"
            )
        correct = outcome.get("original_correct")
        if correct is not None and bool(correct) != (outcome["result"] != "skipped"):
            raise ValueError(
                f"{name}: item {i} has original_correct={correct} but result "
                f"{outcome['result']!r}; only originally wrong items are skipped"
            )


def _check_masked_lm(wrapper: "ModelWrapper") -> None:
    model = getattr(wrapper, "model", None)
    tokenizer = getattr(wrapper, "tokenizer", None)
    get_lm = getattr(model, "get_output_embeddings", None)
    if model is None or get_lm is None or get_lm() is None or "MaskedLM" not in type(model).__name__:
        raise ValueError(
            f"attack model {getattr(wrapper, 'name', wrapper)!r} has no masked-LM "
            f"head ({type(model).__name__}); fix: load it with "
            "load_model(..., head='masked-lm')"
        )
    missing = list(getattr(wrapper, "missing_head", None) or [])
    if missing:
        raise ValueError(
            f"attack model {wrapper.name!r} has no masked-LM head ({', '.join(missing[:4])} "
            "were newly initialised at random); fix: pass a masked-LM checkpoint "
            "such as bert-base"
        )
    if getattr(tokenizer, "mask_token_id", None) is None:
        raise ValueError(
            f"attack model {wrapper.name!r}: its tokenizer has no mask token; fix: "
            "use a masked language model such as BERT as the attack model"
        )


def check_classifier(wrapper: "ModelWrapper", role: str) -> int:
    """The number of classes of a sequence classifier, or a ValueError naming the ``role``."""
    model = getattr(wrapper, "model", None)
    if model is None or not getattr(wrapper, "is_classifier", False):
        raise ValueError(
            f"{role} model {getattr(wrapper, 'name', wrapper)!r} is not a sequence "
            f"classifier ({type(model).__name__}); fix: load it with "
            "load_model(..., head='classification')"
        )
    return int(wrapper.num_labels)


# --------------------------------------------------------------------------------------
# The attacks of a gate run


class Flags(Protocol):
    """The options the attacks read (``--attack-size``, ``--seed``, ``--attack-top-k``,
    ``--max-length``), as the run's ``Settings`` holds them."""

    @property
    def attack_size(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def attack_top_k(self) -> int: ...
    @property
    def max_length(self) -> int: ...


class AttackHost(Protocol):
    """What an :class:`AttackRunner` reads of the run it serves (a gate): its data, settings
    (``--attack-size``, ``--attack-top-k``, ``--max-length``, ``--seed``), cache and models."""

    @property
    def data(self) -> "TaskData": ...
    @property
    def settings(self) -> Flags: ...
    @property
    def cache(self) -> OutputCache: ...
    @property
    def task(self) -> str: ...
    @property
    def multiple_choice(self) -> bool: ...
    @property
    def attack_problem(self) -> str | None: ...
    def head_problem(self, name: str) -> str | None: ...
    def label_translation(self, name: str) -> "np.ndarray | None": ...
    def wrapper(self, name: str) -> "ModelWrapper": ...
    def attack_wrapper(self) -> "ModelWrapper": ...
    def unlabelled(self, role: str, need: str) -> str: ...


class AttackRunner:
    """BERT-Attack outcomes of each model of a run on its seeded test sample, in the data's
    label ids: cached and resumable in the host's cache, memoised per model for the run.

    Every method raises NotApplicable, with the reason and the fix, for a model that cannot
    be attacked (another task, no head, unlabelled or multiple-choice data, no attack model)
    before loading any model.
    """

    def __init__(self, host: AttackHost) -> None:
        self.host = host
        self._outcomes: dict[str, list[dict[str, Any]]] = {}

    def outcomes(self, name: str) -> list[dict[str, Any]]:
        """The outcomes of the whole sample for model ``name`` (memoised)."""
        if name not in self._outcomes:
            self._outcomes[name] = self.run(name)
        return self._outcomes[name]

    def items(self, name: str) -> int:
        """How many test items the attack of ``name`` samples (for sharding it)."""
        self.check(name)
        return min(len(self.host.data.test), self.host.settings.attack_size)

    def shard(self, name: str, start: int, stop: int) -> list[dict[str, Any]]:
        """The attack of items ``[start, stop)`` of the sample only, journalled as a shard of
        the whole attack: the next :meth:`outcomes` folds it in (an executor's job)."""
        return self.run(name, items=(start, stop))

    def check(self, name: str) -> None:
        """Raise NotApplicable when ``name`` cannot be attacked (the user's models and data first)."""
        host = self.host
        if host.task != "classification":
            raise NotApplicable(
                "the adversarial check attacks a sentiment classifier, as the paper "
                "does on IMDB; run it with --task classification"
            )
        problem = host.head_problem(name)
        if problem:
            raise NotApplicable(problem)
        if host.data.test.labels is None:
            raise NotApplicable(host.unlabelled("test", "the attack needs each item's gold label"))
        if host.multiple_choice:
            raise NotApplicable(
                f"the test data {host.data.test.source!r} is multiple-choice; the attack perturbs "
                "a text/label classifier's input, as the paper does on IMDB; fix: pass text/label "
                "data to run the attack"
            )
        if host.attack_problem is not None:
            raise NotApplicable(host.attack_problem)

    def run(self, name: str, items: tuple[int, int] | None = None) -> list[dict[str, Any]]:
        """Attack model ``name`` on the sample (``items``: that range of it only), not memoised."""
        host = self.host
        self.check(name)
        test = host.data.test
        index = sample_items(len(test), host.settings.attack_size, host.settings.seed)
        labels = [test.labels[i] for i in index]  # type: ignore[index]
        translation = host.label_translation(name)  # model id -> data id; the attack runs on model ids
        if translation is not None:
            if len(set(translation.tolist())) != len(translation):
                raise NotApplicable(
                    f"model {name!r} gives several of its labels the same data label "
                    "(--label-map), so an attack on its ids has no single target "
                    "label; fix: map each model label to its own data label id"
                )
            to_model = {int(data): model for model, data in enumerate(translation)}
            labels = [to_model[label] for label in labels]
        outcomes = attack_model_outcomes(
            host.attack_wrapper(),
            host.wrapper(name),
            [test.texts[i] for i in index],
            labels,
            settings=AttackSettings(
                top_k_words=host.settings.attack_top_k,
                max_length=min(host.settings.max_length, host.attack_wrapper().max_length),
            ),
            cache=host.cache,
            seed=host.settings.seed,
            items=items,
        )
        if translation is None:
            return outcomes
        ids = ("label", "original_prediction", "perturbed_prediction")  # back to the data's ids
        return [{**o, **{key: int(translation[o[key]]) for key in ids if o.get(key) is not None}} for o in outcomes]
