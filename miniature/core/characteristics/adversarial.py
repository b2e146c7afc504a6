"""Vulnerability to adversarial attacks (paper, section 6 and Table 3): BERT-Attack, offline.

An attack model (a masked LM, BERT-base in the paper) proposes replacements for the
words a target classifier relies on most; an attack succeeds when the target's
prediction changes. Each target gets the paper's Table 3 figures (accuracy before and
after the attack, absolute and % change) and, beyond the paper, queries per item and the
set of items it lost to the attack ("broken"). Two targets are compared by the Jaccard
coefficient of their broken sets, by the difference of their % accuracy drops, and by
how often the adversarial texts found against the reference also fool the candidate.

The attack is TextAttack's ``BERTAttackLi2020`` recipe rebuilt from its parts so that it
runs offline on any local model:

* ``WordSwapMaskedLM(method="bert-attack", max_candidates=48)`` (the paper's 48; the
  recipe now defaults to 8) over the attack model passed in, encoding without padding;
  a word of several sub-words gets 4 candidates per sub-word and at most 24 combinations
  ranked by perplexity, as in Li et al.'s released code (TextAttack 0.3.11 enumerates
  48**n combinations and does not sort them);
* ``GreedyWordSwapWIR(wir_method="unk")``, ``RepeatModification``,
  ``StopwordModification`` (NLTK's English list, shipped in ``miniature/resources``) and
  ``MaxWordsPerturbed(max_percent=0.4)``, plus the paper's K=3 ("the attack first finds
  the top K important words") as a cap of K words changed per text (``top_k_words``);
* **difference:** the recipe's Universal Sentence Encoder constraint downloads a model
  from TF Hub, so it is replaced by another real sentence encoder that ships offline:
  the cosine similarity of all-MiniLM-L6-v2's mean-pooled embeddings
  (:data:`SIMILARITY_ENCODER`), ``compare_against_original=True``, no window. Its
  scores are not USE scores, so the recipe's threshold (0.2) is not reused: 0.8
  (:data:`SIMILARITY_THRESHOLD`) keeps a perturbed text only if it is closer to its
  original than 99 % of pairs of distinct built-in reviews are to each other.
  (``similarity_encoder=None`` restores the earlier stand-in: the attack model's own
  mean-pooled embeddings.)
* Li et al. filter antonyms out of the masked LM's proposals for sentiment tasks (a
  synonym dictionary of counter-fitted vectors, a download); TextAttack's recipe does not.
  Here a substitute may not carry a sentiment the replaced word lacks, by the VADER
  lexicon (MIT, shipped in ``miniature/resources/sentiment``) plus a few review adjectives
  it lacks (``sentiment_filter``; off: any proposal is tried, as in TextAttack).

Two engines run this same attack (:attr:`AttackSettings.engine`, same outcomes item by
item): ``"textattack"`` attacks one item at a time; ``"batched"`` (the default) runs
TextAttack's search on many items in lockstep, sends the model calls of all items in
flight through one length-sorted, dynamically padded batch per model, memoises each
target's predictions and computes the attack model's candidates and sentence vectors
once per distinct text for every target of a gate, keeping them in the cache across
runs (:mod:`miniature.characteristics.batched_attack`).

TextAttack itself needs NLTK's stopword corpus to import, and on its first import tries
to download NLTK data; :func:`prepare_textattack` (from
:mod:`miniature.core.characteristics.textattack_offline`, re-exported here) supplies the corpus
and turns those downloads into no-ops. Importing this module is cheap: TextAttack and torch are imported
only when an attack runs.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from miniature.core.cache import OutputCache, append_record, fingerprint, fingerprint_texts
from miniature.core.characteristics.base import THRESHOLD_ON_CHOICES, ComparisonResult, Measurement, judge
from miniature.core.characteristics.textattack_offline import (ATTACK_VERSION, NLTK_DATA_DIR, textattack_version,  # noqa: F401 - re-exported
                                                               english_stopwords, prepare_textattack)
from miniature.errors import NotApplicable

if TYPE_CHECKING:  # pragma: no cover
    from miniature.core.characteristics.base import Pair
    from miniature.core.characteristics.view import GateView
    from miniature.core.models import ModelWrapper

__all__ = [
    "DEFAULT_SAMPLE_SIZE",
    "RESULTS",
    "AttackSettings",
    "ENGINES",
    "prepare_textattack",
    "english_stopwords",
    "make_target_wrapper",
    "sample_items",
    "attack_model_outcomes",
    "gather_shards",
    "shard_key",
    "attack_figures",
    "transfer_predictions",
    "compare_adversarial",
]

#: Items attacked per run unless told otherwise: the paper attacked 1,000 IMDB reviews;
#: 200 keeps a BERT-base attack to minutes on a CPU while the broken-set Jaccard's
#: bootstrap interval stays usable.
DEFAULT_SAMPLE_SIZE = 200

#: What an attack on one item can end in. "skipped": the target was already wrong, so
#: there was nothing to attack; "maximum queries": the query budget ran out first.
RESULTS: tuple[str, ...] = ("skipped", "successful", "failed", "maximum queries")

#: How an attack can run (:attr:`AttackSettings.engine`): the same outcomes either way.
ENGINES: tuple[str, ...] = ("textattack", "batched")

#: The semantic-similarity constraint's sentence encoder (the recipe's Universal Sentence
#: Encoder is a TF-Hub download): the packaged all-MiniLM-L6-v2, a sentence-transformers
#: model, mean-pooled as it was trained.
SIMILARITY_ENCODER = "all-minilm-l6-v2"
#: Minimum cosine similarity (under :data:`SIMILARITY_ENCODER`) of a perturbed text to its
#: original. The recipe's 0.2 is a USE figure; with MiniLM, 0.80 is the 99th percentile
#: of the similarity of two *different* reviews of the built-in data (median 0.56), so
#: a kept perturbation is closer to its original than 99 % of pairs of distinct reviews.
SIMILARITY_THRESHOLD = 0.8

@dataclass(frozen=True)
class AttackSettings:
    """The attack's limits; every field is part of the cache key.

    ``top_k_words`` is the paper's K (at most K words changed per text; None: no cap),
    ``max_percent`` the recipe's share of words that may change, ``max_candidates`` the
    masked-LM replacements tried per word, ``similarity_threshold`` the minimum cosine
    similarity to the original text (None: no constraint) under ``similarity_encoder`` (a
    sentence-encoder model name or folder; None: the attack model's own mean-pooled
    embeddings, as before version 2), ``sentiment_filter`` rejects substitutes of another
    sentiment than the replaced word (:func:`~miniature.core.characteristics.sentiment_lexicon.word_polarity`; Li et al.'s antonym filter),
    ``query_budget`` the target
    queries allowed per item (None: unlimited), ``subword_candidates`` and
    ``max_combinations`` bound words made of several sub-words, and ``max_length`` the
    attack model's input length (None: the attack wrapper's ``max_length``).

    ``engine`` picks how the attack runs, not what it finds, so it is the one field left
    out of the cache key: ``"textattack"`` attacks one item at a time through TextAttack
    alone (the reference path); ``"batched"`` (the default; the environment variable
    ``MINIATURE_ATTACK_ENGINE`` changes the default) runs the same TextAttack search on
    many items in lockstep, batches their model calls across items, memoises each
    target's predictions and shares the attack model's outputs across targets and runs
    (see :mod:`miniature.characteristics.batched_attack`).
    """

    top_k_words: int | None = 3
    max_percent: float | None = 0.4
    max_candidates: int = 48
    similarity_threshold: float | None = SIMILARITY_THRESHOLD
    similarity_encoder: str | None = SIMILARITY_ENCODER
    sentiment_filter: bool = True
    query_budget: int | None = None
    subword_candidates: int = 4
    max_combinations: int = 24
    max_length: int | None = None
    engine: str = field(default_factory=lambda: os.environ.get("MINIATURE_ATTACK_ENGINE",
                                                               "batched"))

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"AttackSettings.engine must be one of {ENGINES}, got {self.engine!r}"
                             " (MINIATURE_ATTACK_ENGINE sets the default)")
        for name in ("top_k_words", "query_budget", "max_length"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(f"AttackSettings.{name} must be a whole number >= 1 or None, "
                                 f"got {value!r}")
        for name in ("max_candidates", "subword_candidates", "max_combinations"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"AttackSettings.{name} must be a whole number >= 1, got {value!r}")
        if self.max_percent is not None and not (0 < self.max_percent <= 1):
            raise ValueError(f"AttackSettings.max_percent must lie in (0, 1] or be None, got "
                             f"{self.max_percent!r}; the recipe uses 0.4")
        if self.similarity_threshold is not None and not (-1 <= self.similarity_threshold <= 1):
            raise ValueError("AttackSettings.similarity_threshold is a cosine similarity in "
                             f"[-1, 1] or None, got {self.similarity_threshold!r}")




def make_target_wrapper(wrapper: "ModelWrapper") -> Any:
    """A TextAttack ``ModelWrapper`` over a miniature classifier (counts its queries)."""
    _check_classifier(wrapper, "target")
    from miniature.core.characteristics.bert_attack import TargetModelWrapper

    return TargetModelWrapper(wrapper)


# --------------------------------------------------------------------------------------
# Running the attack


def sample_items(n_items: int, sample_size: int | None = DEFAULT_SAMPLE_SIZE, seed: int = 0) -> list[int]:
    """A seeded sample of item indices, in data order (all items when there are fewer).

    The default, :data:`DEFAULT_SAMPLE_SIZE` (200), is smaller than the paper's 1,000:
    an attack makes hundreds of model queries per item. ``None`` takes every item.
    """
    if not _is_int(n_items) or n_items < 0:
        raise ValueError(f"n_items must be a whole number >= 0, got {n_items!r}")
    if sample_size is None or sample_size >= n_items:
        return list(range(n_items))
    if not _is_int(sample_size) or sample_size < 1:
        raise ValueError(f"sample_size must be a whole number >= 1 or None (all items), got "
                         f"{sample_size!r}")
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
    num_labels = _check_classifier(target_wrapper, "target")
    bad = [i for i, label in enumerate(labels) if not 0 <= label < num_labels]
    if bad:
        raise ValueError(f"labels: item {bad[0]} has label {labels[bad[0]]}, but the target "
                         f"{target_wrapper.name!r} has {num_labels} classes (0..{num_labels - 1}); "
                         "fix: map the labels to class indices")
    vocab = int(getattr(attack_model_wrapper.model.config, "vocab_size", 0) or 0)
    if vocab and settings.max_candidates > vocab:
        raise ValueError(f"settings.max_candidates={settings.max_candidates} exceeds the attack "
                         f"model's vocabulary ({vocab} tokens); fix: lower max_candidates")
    cache = cache if cache is not None else OutputCache(None)
    key = fingerprint(ATTACK_VERSION, textattack_version(), attack_model_wrapper.fingerprint,
                      attack_model_wrapper.max_length, target_wrapper.fingerprint,
                      target_wrapper.max_length, fingerprint_texts(texts), labels,
                      _settings_key(settings), seed)
    offset = 0
    if items is None:
        gather_shards(cache, key)
    else:
        offset, stop = items
        if not (_is_int(offset) and _is_int(stop) and 0 <= offset < stop <= len(texts)):
            raise ValueError(f"items={items!r} is not a range (start, stop) within the "
                             f"{len(texts)} texts")
        if not cache.refresh:
            _, whole = cache.read_journal("adversarial", key)
            if all(i in whole for i in range(offset, stop)):
                cache.hits += 1
                return [whole[i] for i in range(offset, stop)]
        texts, labels = texts[offset:stop], labels[offset:stop]
        key = shard_key(key, offset, stop)
    if settings.engine == "batched":
        return _batched_outcomes(attack_model_wrapper, target_wrapper, texts, labels,
                                 settings=settings, cache=cache, key=key, progress=progress,
                                 window=window)
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
        return tqdm(todo, desc=f"BERT-Attack [{target_wrapper.name}]", unit="item",
                    disable=not progress or not todo)

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
        start = int(path.name[len(key) + len(".items-"):].split("-")[0])
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


def _settings_key(settings: AttackSettings) -> dict[str, Any]:
    """The settings in a cache key: all but ``engine`` (it changes the speed, not the outcome)."""
    return {k: v for k, v in asdict(settings).items() if k != "engine"}


def _batched_outcomes(attack_model_wrapper: "ModelWrapper", target_wrapper: "ModelWrapper",
                      texts: list[str], labels: list[int], *, settings: AttackSettings,
                      cache: OutputCache, key: str, progress: bool,
                      window: int | None) -> list[dict[str, Any]]:
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

    from miniature.core.characteristics.batched_attack import DEFAULT_WINDOW, build_batched_attacks, shared_outputs

    shared = shared_outputs(attack_model_wrapper, settings, cache)
    router, make = build_batched_attacks(attack_model_wrapper, target_wrapper, settings,
                                         english_stopwords(), shared)
    free: list[Any] = []

    def job(index: int) -> Any:
        def run() -> dict[str, Any]:
            attack = free.pop() if free else make()
            try:
                return _attack_one(attack, texts[index], labels[index], settings)
            finally:
                free.append(attack)
        return run

    bar = tqdm(total=len(todo), desc=f"BERT-Attack [{target_wrapper.name}]", unit="item",
               disable=not progress)

    def finished(index: int, outcome: dict[str, Any]) -> None:
        record = dict(outcome)
        record["index"] = index
        done[index] = record
        if journal is not None:
            append_record(journal, record)
        shared.flush()
        bar.update(1)

    try:
        router.lockstep.run(((i, job(i)) for i in todo), window=window or DEFAULT_WINDOW,
                            on_done=finished)
    finally:
        shared.flush(force=True)
        bar.close()
    return [done[i] for i in range(len(texts))]


def _build(attack_model_wrapper: "ModelWrapper", target_wrapper: "ModelWrapper",
           settings: AttackSettings) -> dict[str, Any]:
    from miniature.core.characteristics.bert_attack import TargetModelWrapper, build_attack

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
        "words_changed": 0 if skipped else len(perturbed.attacked_text.all_words_diff(
            original.attacked_text)),
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


def transfer_predictions(ref_outcomes: Sequence[Mapping[str, Any]],
                         candidate_wrapper: "ModelWrapper") -> dict[int, int]:
    """The candidate's predictions on the adversarial texts found against the reference.

    Keyed by item index (position in ``ref_outcomes``); only the reference's successful
    attacks are evaluated, in one batched pass. Pass the result to
    :func:`compare_adversarial` as ``transfer``.
    """
    _check_outcomes(ref_outcomes, "ref_outcomes")
    _check_classifier(candidate_wrapper, "candidate")
    indices = [i for i, o in enumerate(ref_outcomes) if o["result"] == "successful"]
    missing = [i for i in indices if not isinstance(ref_outcomes[i].get("perturbed_text"), str)]
    if missing:
        raise ValueError(f"ref_outcomes: item {missing[0]} is a successful attack with no "
                         "perturbed_text; fix: pass outcomes from attack_model_outcomes")
    if not indices:
        return {}
    logits = candidate_wrapper.logits([ref_outcomes[i]["perturbed_text"] for i in indices])
    return {i: int(row.argmax()) for i, row in zip(indices, logits)}


# --------------------------------------------------------------------------------------
# Figures and comparison


def attack_figures(outcomes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One target's Table 3 row and more, from its outcomes.

    ``original_accuracy``; ``accuracy_after_attack`` (items still right after the
    attack); ``absolute_change`` and ``percent_change`` (the drop, positive when the
    attack hurts, % relative to the original accuracy, as in Table 3; None when the
    original accuracy is 0); counts per result; ``attack_success_rate`` (successes over
    attacked items); ``queries_per_item`` (mean over attacked items); ``broken`` (indices
    of the successfully attacked items).
    """
    _check_outcomes(outcomes, "outcomes")
    n = len(outcomes)
    counts = {result: 0 for result in RESULTS}
    for outcome in outcomes:
        counts[outcome["result"]] += 1
    attacked = [o for o in outcomes if o["result"] != "skipped"]
    correct = len(attacked)
    survived = correct - counts["successful"]
    original = correct / n
    after = survived / n
    drop = original - after
    queries = [o.get("queries") for o in attacked if o.get("queries") is not None]
    changed = [o.get("words_changed") for o in outcomes
               if o["result"] == "successful" and o.get("words_changed") is not None]
    return {
        "n": n,
        "original_accuracy": original,
        "accuracy_after_attack": after,
        "absolute_change": drop,
        "percent_change": 100.0 * drop / original if correct else None,
        "successful": counts["successful"],
        "failed": counts["failed"],
        "maximum_queries": counts["maximum queries"],
        "skipped": counts["skipped"],
        "attack_success_rate": counts["successful"] / correct if correct else None,
        "queries_per_item": sum(queries) / len(queries) if queries else None,
        "queries_total": sum(int(o.get("queries") or 0) for o in outcomes),
        "words_changed_per_success": sum(changed) / len(changed) if changed else None,
        "broken": [i for i, o in enumerate(outcomes) if o["result"] == "successful"],
    }


def measure_adversarial(
    ref_outcomes: Sequence[Mapping[str, Any]],
    cand_outcomes: Sequence[Mapping[str, Any]],
    *,
    reference: str,
    candidate: str,
    drop_tolerance: float | None = None,
    transfer: Mapping[int, int] | None = None,
    n_bootstrap: int = 1000,
    seed: int | None = 0,
    texts: Sequence[str] | None = None,
    max_evidence: int = 20,
) -> Measurement:
    """Compare two targets' vulnerability to the same attack on the same items.

    The figure is the Jaccard coefficient of the two broken sets over the items *both*
    targets originally got right (only those could break for both; an item one model
    already gets wrong is a prediction error, not a vulnerability); ``n`` is that number
    of items, and the chance baseline, chance-corrected score and paired bootstrap
    interval are over the same items. ``details`` hold both targets'
    :func:`attack_figures`, the broken-set Jaccard over all items, ``drop_difference``
    (candidate % drop minus reference % drop, in percentage points) and, given
    ``transfer`` (from :func:`transfer_predictions`), the transfer rate: of the items the
    reference lost and the candidate originally got right, the share whose reference
    adversarial text also fools the candidate. The gate's threshold applies to the
    Jaccard; ``drop_tolerance`` adds a condition that the candidate's % drop exceeds the
    reference's by at most that many points. Evidence lists adversarial examples,
    items broken by only one model first.
    """
    import numpy as np

    from miniature.core.stats import jaccard, set_agreement

    _check_outcomes(ref_outcomes, "ref_outcomes")
    _check_outcomes(cand_outcomes, "cand_outcomes")
    if len(ref_outcomes) != len(cand_outcomes):
        raise ValueError(f"ref_outcomes has {len(ref_outcomes)} items but cand_outcomes has "
                         f"{len(cand_outcomes)}; fix: attack both targets on the same items")
    for i, (r, c) in enumerate(zip(ref_outcomes, cand_outcomes)):
        if "label" in r and "label" in c and int(r["label"]) != int(c["label"]):
            raise ValueError(f"item {i} has label {r['label']} in ref_outcomes but {c['label']} "
                             "in cand_outcomes; fix: attack both targets on the same items")
    if drop_tolerance is not None and (not isinstance(drop_tolerance, (int, float))
                                       or math.isnan(drop_tolerance)):
        raise ValueError(f"drop_tolerance is in percentage points (e.g. 10), got {drop_tolerance!r}")
    if texts is not None and len(texts) != len(ref_outcomes):
        raise ValueError(f"texts has {len(texts)} items but the outcomes have "
                         f"{len(ref_outcomes)}; fix: pass the attacked texts in the same order")

    ref_fig = attack_figures(ref_outcomes)
    cand_fig = attack_figures(cand_outcomes)
    broken_ref = np.array([o["result"] == "successful" for o in ref_outcomes])
    broken_cand = np.array([o["result"] == "successful" for o in cand_outcomes])
    both = np.array([r["result"] != "skipped" and c["result"] != "skipped"
                     for r, c in zip(ref_outcomes, cand_outcomes)])
    n_both = int(both.sum())
    a, b = broken_ref[both], broken_cand[both]
    figure = chance = corrected = ci_low = ci_high = None
    if n_both:
        agreement = set_agreement(a, b, n_bootstrap=n_bootstrap, seed=seed)
        figure, chance, corrected = agreement.figure, agreement.chance, agreement.corrected
        ci_low, ci_high = agreement.ci_low, agreement.ci_high

    drop_difference = None
    if ref_fig["percent_change"] is not None and cand_fig["percent_change"] is not None:
        drop_difference = cand_fig["percent_change"] - ref_fig["percent_change"]
    conditions = []
    if drop_tolerance is not None:
        conditions.append({
            "name": "% accuracy drop beyond the reference's",
            "value": drop_difference,
            "limit": float(drop_tolerance),
            "passed": drop_difference is not None and drop_difference <= drop_tolerance,
        })

    transfer_rate = transfer_fooled = transfer_eligible = None
    if transfer is not None:
        eligible = [i for i in range(len(ref_outcomes))
                    if ref_outcomes[i]["result"] == "successful"
                    and cand_outcomes[i]["result"] != "skipped"]
        missing = [i for i in eligible if i not in transfer]
        if missing:
            raise ValueError(f"transfer has no candidate prediction for item {missing[0]}, whose "
                             "reference attack succeeded; fix: pass "
                             "transfer_predictions(ref_outcomes, candidate_wrapper)")
        transfer_eligible = len(eligible)
        transfer_fooled = sum(int(transfer[i]) != _label(ref_outcomes[i], cand_outcomes[i])
                              for i in eligible)
        transfer_rate = transfer_fooled / transfer_eligible if transfer_eligible else None

    evidence = _evidence(ref_outcomes, cand_outcomes, transfer, texts, max_evidence)
    details: dict[str, Any] = {
        "reference": _without_broken(ref_fig),
        "candidate": _without_broken(cand_fig),
        "drop_difference": drop_difference,
        "transfer_rate": transfer_rate,
        "transfer_fooled": transfer_fooled,
        "transfer_eligible": transfer_eligible,
        "queries_per_item": {"reference": ref_fig["queries_per_item"],
                             "candidate": cand_fig["queries_per_item"]},
        "broken_reference": ref_fig["broken"],
        "broken_candidate": cand_fig["broken"],
        "broken_both": [i for i in range(len(ref_outcomes)) if broken_ref[i] and broken_cand[i]],
        "attacked_both": n_both,
        "jaccard_all_items": jaccard(broken_ref, broken_cand),
    }
    if not n_both:
        details["note"] = ("no item was attacked against both models (one of them got every "
                           "item wrong), so the broken sets cannot be compared")
    return Measurement(
        figure_name="broken-set Jaccard",
        figure=float("nan") if figure is None else float(figure),
        n=n_both,
        chance=chance,
        corrected=corrected,
        ci_low=ci_low,
        ci_high=ci_high,
        details=details,
        evidence=evidence,
        conditions=conditions,
    )


def compare_adversarial(*args: Any, reference: str, candidate: str, threshold: float | None = None,
                        threshold_on: str = "raw", gating: bool = True, **kwargs: Any) -> ComparisonResult:
    """:func:`measure_adversarial` judged against ``threshold`` on the broken-set Jaccard (see
    :func:`~miniature.core.characteristics.base.judge`), for use outside a gate run."""
    if threshold_on not in THRESHOLD_ON_CHOICES:
        raise ValueError(f"threshold_on must be one of {THRESHOLD_ON_CHOICES}, got {threshold_on!r}")
    measured = measure_adversarial(*args, reference=reference, candidate=candidate, **kwargs)
    return judge(measured, characteristic="adversarial_vulnerability", reference=reference, candidate=candidate,
                 threshold=threshold, threshold_on=threshold_on, gating=gating)


def _label(ref: Mapping[str, Any], cand: Mapping[str, Any]) -> int:
    for outcome in (ref, cand):
        if outcome.get("label") is not None:
            return int(outcome["label"])
    raise ValueError("the transfer rate needs each item's label; fix: pass outcomes from "
                     "attack_model_outcomes (they carry 'label')")


def _without_broken(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in figures.items() if k != "broken"}


def _evidence(ref_outcomes: Sequence[Mapping[str, Any]], cand_outcomes: Sequence[Mapping[str, Any]],
              transfer: Mapping[int, int] | None, texts: Sequence[str] | None,
              max_evidence: int) -> list[dict[str, Any]]:
    rows = []
    for i, (r, c) in enumerate(zip(ref_outcomes, cand_outcomes)):
        by_ref, by_cand = r["result"] == "successful", c["result"] == "successful"
        if not (by_ref or by_cand):
            continue
        entry: dict[str, Any] = {
            "index": i,
            "text": texts[i] if texts is not None else r.get("original_text", c.get("original_text")),
            "label": r.get("label", c.get("label")),
            "broken_by": "both" if by_ref and by_cand else ("reference" if by_ref else "candidate"),
            "reference_result": r["result"],
            "candidate_result": c["result"],
            "reference_perturbed": r.get("perturbed_text") if by_ref else None,
            "candidate_perturbed": c.get("perturbed_text") if by_cand else None,
            "reference_words_changed": r.get("words_changed") if by_ref else None,
            "candidate_words_changed": c.get("words_changed") if by_cand else None,
        }
        if transfer is not None and by_ref and i in transfer and entry["label"] is not None:
            entry["transfers_to_candidate"] = int(transfer[i]) != int(entry["label"])
        rows.append(entry)
    rows.sort(key=lambda e: (e["broken_by"] == "both", e["index"]))
    return rows[: max(0, int(max_evidence))]


# --------------------------------------------------------------------------------------
# Input checks


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_inputs(texts: Sequence[str], labels: Sequence[int]) -> tuple[list[str], list[int]]:
    if isinstance(texts, str):
        raise ValueError("texts must be a sequence of texts, got a single string; fix: wrap it "
                         "in a list")
    texts, labels = list(texts), list(labels)
    if not texts:
        raise ValueError("texts is empty; fix: pass at least one text to attack")
    if len(texts) != len(labels):
        raise ValueError(f"texts has {len(texts)} items but labels has {len(labels)}; fix: pass "
                         "one label per text")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"texts: item {i} is {text!r}, not a non-empty string; fix: drop "
                             "or repair it")
    clean = []
    for i, label in enumerate(labels):
        try:
            value = int(label)
        except (TypeError, ValueError):
            value = None
        if value is None or value != label or isinstance(label, bool):
            raise ValueError(f"labels: item {i} is {label!r}, not a class index; fix: map "
                             "labels to integers 0..num_labels-1")
        clean.append(value)
    return texts, clean


def _check_outcomes(outcomes: Sequence[Mapping[str, Any]], name: str) -> None:
    if isinstance(outcomes, Mapping) or not isinstance(outcomes, Sequence):
        raise ValueError(f"{name} must be a list of outcome dicts (from attack_model_outcomes), "
                         f"got {type(outcomes).__name__}")
    if not outcomes:
        raise ValueError(f"{name} is empty; fix: attack at least one item")
    for i, outcome in enumerate(outcomes):
        if not isinstance(outcome, Mapping) or outcome.get("result") not in RESULTS:
            got = outcome.get("result") if isinstance(outcome, Mapping) else outcome
            raise ValueError(f"{name}: item {i} has result {got!r}; each outcome needs "
                             f"'result' in {RESULTS}; fix: pass outcomes from "
                             "attack_model_outcomes")
        correct = outcome.get("original_correct")
        if correct is not None and bool(correct) != (outcome["result"] != "skipped"):
            raise ValueError(f"{name}: item {i} has original_correct={correct} but result "
                             f"{outcome['result']!r}; only originally wrong items are skipped")


def _check_masked_lm(wrapper: "ModelWrapper") -> None:
    model = getattr(wrapper, "model", None)
    tokenizer = getattr(wrapper, "tokenizer", None)
    get_lm = getattr(model, "get_output_embeddings", None)
    if model is None or get_lm is None or get_lm() is None or \
            "MaskedLM" not in type(model).__name__:
        raise ValueError(f"attack model {getattr(wrapper, 'name', wrapper)!r} has no masked-LM "
                         f"head ({type(model).__name__}); fix: load it with "
                         "load_model(..., head='masked-lm')")
    missing = list(getattr(wrapper, "missing_head", None) or [])
    if missing:
        raise ValueError(f"attack model {wrapper.name!r} has no masked-LM head ({', '.join(missing[:4])} "
                         "were newly initialised at random); fix: pass a masked-LM checkpoint "
                         "such as bert-base")
    if getattr(tokenizer, "mask_token_id", None) is None:
        raise ValueError(f"attack model {wrapper.name!r}: its tokenizer has no mask token; fix: "
                         "use a masked language model such as BERT as the attack model")


def _check_classifier(wrapper: "ModelWrapper", role: str) -> int:
    model = getattr(wrapper, "model", None)
    if model is None or not getattr(wrapper, "is_classifier", False):
        raise ValueError(f"{role} model {getattr(wrapper, 'name', wrapper)!r} is not a sequence "
                         f"classifier ({type(model).__name__}); fix: load it with "
                         "load_model(..., head='classification')")
    return int(wrapper.num_labels)




from miniature.core.checks import MIN_ITEMS  # noqa: E402  fewest items attacked against both models


# -- in a gate run ----------------------------------------------------------------------
def compare_in_gate(gate: "GateView", pair: "Pair", stage: str | None) -> Measurement:
    """The gate's comparison of one pair: its per-item outputs fed to the function above."""
    if gate.task == "classification":
        gate.require_heads(pair)  # before attacking either model
    reference = gate.attack_outcomes(pair.reference)
    candidate = gate.attack_outcomes(pair.candidate)
    attacked = sum(r["result"] != "skipped" and c["result"] != "skipped"
                   for r, c in zip(reference, candidate))
    least = MIN_ITEMS
    if attacked < least:
        size, items = gate.settings.attack_size, len(gate.data.test)
        fix = (f"raise --attack-size (now {size})" if size is not None and size < items
               else f"pass more labelled test items (the test data has {items})")
        raise NotApplicable(
            f"only {attacked} of the {len(reference)} sampled item(s) were classified correctly "
            f"by both {pair.reference!r} and {pair.candidate!r}, so only they were attacked; at "
            f"least {least} are needed for a broken-set Jaccard; fix: {fix}")
    transfer = transfer_predictions(reference, gate.wrapper(pair.candidate))
    translation = gate.label_translation(pair.candidate)  # the candidate's ids as the data's
    if translation is not None:
        transfer = {i: int(translation[p]) for i, p in transfer.items()}
    return measure_adversarial(
        reference, candidate, reference=pair.reference, candidate=pair.candidate,
        drop_tolerance=gate.settings.attack_drop_tolerance, transfer=transfer,
        n_bootstrap=gate.settings.bootstrap, seed=gate.settings.seed)
