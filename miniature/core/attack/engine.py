"""BERT-Attack with shared attack-model work and items batched in lockstep (``engine="batched"``).

TextAttack's own :class:`textattack.Attack` still runs every item: the same
transformation, constraints, goal function, greedy word-importance search, tie-breaking
and query counting as ``engine="textattack"``. What changes is where the expensive
calls go:

* **shared across targets**: the attack model's outputs do not depend on the attacked
  model. :class:`SharedAttackOutputs` keeps the masked-LM replacement words per
  ``(text, word index)`` and the sentence vectors of the similarity constraint per text,
  in memory for the run (one store per attack model and settings, held on the attack
  model's wrapper, so the reference and every candidate of a gate share it) and in the
  cache across runs (npz chunks written atomically while the attack runs, so a killed
  run keeps what it computed). The key holds the attack model's fingerprint, its input
  length, every attack setting and TextAttack's version: another attack model or another
  constraint setting never reads them.
* **memoised per target**: a target's logits for a text it was already asked about in
  this run are not recomputed.
* **batched across items**: :class:`Lockstep` runs up to ``window`` items at once, each
  in its own thread but strictly one at a time (a baton), so TextAttack's code runs
  unchanged and in a fixed order. Whenever every item in flight waits on a model, the
  waiting requests are gathered and sent through one length-sorted, dynamically padded
  pass per model (target queries, masked-LM passes, sentence encodings), the batch size
  bounded by the model's ``batch_size`` (masked LM: a token budget, its logits are
  vocabulary-wide), not by the item.

Outcomes equal the sequential path's: the only difference a batch can make is in the
last bits of a float (a text padded beside others), which decides nothing unless two
candidates tie to ~1e-6; ``benchmarks/attack_batching.py`` and
``tests/test_attack_batching.py`` compare item by item.

The similarity constraint's encoder runs on every candidate the cheaper constraints keep,
although the search keeps at most one per step: TextAttack's query count is the number of
candidates that pass it, so an order that asks the target first and the encoder only until a
step's choice is fixed finds the same adversarial texts but cannot report that count (and
asks the target about more texts). ``benchmarks/attack_order.py`` measures both orders.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from miniature.core.attack.recipe import (
    AttackModelSimilarity,
    LocalBertAttackSwap,
    TargetModelWrapper,
    build_attack,
    similarity_encoder,
)
from miniature.core.attack.settings import settings_key
from miniature.core.attack.textattack_offline import ATTACK_VERSION, textattack_version

if TYPE_CHECKING:  # pragma: no cover
    from miniature.core.attack.settings import AttackSettings
    from miniature.core.cache import OutputCache
    from miniature.core.models import ModelWrapper

#: Masked-LM tokens per forward pass: its output is (tokens x vocabulary) floats, 125 MB
#: for BERT's 30,522-token vocabulary at this budget.
MLM_TOKEN_BUDGET = 1024

#: Items attacked at once per target (the lockstep window).
DEFAULT_WINDOW = 64

#: Seconds between two chunks of the shared store written while an attack runs.
FLUSH_SECONDS = 2.0


# --------------------------------------------------------------------------------------
# Lockstep: many items' TextAttack searches, one model pass per kind of request


class _Abort(BaseException):
    """Raised inside a worker thread when the lockstep run is abandoned."""


class _Slot:
    def __init__(self, index: int, job: Callable[[], Any]) -> None:
        self.index = index
        self.job = job
        self.go = threading.Semaphore(0)
        self.request: tuple[str, Any] | None = None
        self.reply: Any = None
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None


class Lockstep:
    """Run jobs in worker threads, one at a time, batching the model requests they make.

    A job calls :meth:`request` (``kind``, ``payload``) where it would call a model; the
    call blocks until every job in flight has either finished or asked for something,
    then ``handlers[kind](payloads)`` answers all requests of that kind at once. Only one
    thread runs at any moment (the scheduler hands a baton round), in slot order, so the
    run is deterministic and libraries that are not thread-safe (tokenizers) are safe.
    """

    def __init__(self, handlers: dict[str, Callable[[list[Any]], list[Any]]]) -> None:
        self.handlers = handlers
        self._local = threading.local()
        self._back = threading.Semaphore(0)
        self.rounds = 0
        self.requests: dict[str, int] = {kind: 0 for kind in handlers}
        self.batches: dict[str, int] = {kind: 0 for kind in handlers}

    def request(self, kind: str, payload: Any) -> Any:
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is None:  # called outside a job (e.g. a direct call): answer it alone
            return self.handlers[kind]([payload])[0]
        slot.request = (kind, payload)
        self._back.release()
        slot.go.acquire()
        if slot.request is not None:  # the run was abandoned
            raise _Abort()
        return slot.reply

    def _work(self, slot: _Slot) -> None:
        self._local.slot = slot
        slot.go.acquire()
        try:
            if not getattr(self, "_aborted", False):
                slot.result = slot.job()
        except _Abort:
            pass
        except BaseException as error:  # noqa: BLE001 - handed to the scheduler
            slot.error = error
        finally:
            slot.done = True
            self._back.release()

    def _step(self, slot: _Slot) -> None:
        slot.go.release()
        self._back.acquire()

    def run(
        self,
        jobs: Iterable[tuple[int, Callable[[], Any]]],
        *,
        window: int = DEFAULT_WINDOW,
        on_done: Callable[[int, Any], None] | None = None,
    ) -> dict[int, Any]:
        """Run ``(index, job)`` pairs, at most ``window`` at once; ``on_done`` as each ends."""
        pending = iter(jobs)
        active: list[_Slot] = []
        results: dict[int, Any] = {}
        exhausted = False
        self._aborted = False
        try:
            while True:
                while not exhausted and len(active) < window:
                    try:
                        index, job = next(pending)
                    except StopIteration:
                        exhausted = True
                        break
                    slot = _Slot(index, job)
                    slot.thread = threading.Thread(
                        target=self._work, args=(slot,), daemon=True, name=f"miniature-attack-{index}"
                    )
                    slot.thread.start()
                    active.append(slot)
                if not active:
                    break
                for slot in active:  # each runs to its next request or its end
                    slot.request = None
                    self._step(slot)
                    if slot.error is not None:
                        raise slot.error
                still: list[_Slot] = []
                for slot in active:
                    if slot.done:
                        slot.thread.join()  # type: ignore[union-attr]
                        results[slot.index] = slot.result
                        if on_done is not None:
                            on_done(slot.index, slot.result)
                    else:
                        still.append(slot)
                active = still
                if not active:
                    continue
                self.rounds += 1
                by_kind: dict[str, list[_Slot]] = {}
                for slot in active:
                    by_kind.setdefault(slot.request[0], []).append(slot)  # type: ignore[index]
                for kind, slots in by_kind.items():
                    replies = self.handlers[kind]([s.request[1] for s in slots])  # type: ignore[index]
                    self.requests[kind] += len(slots)
                    self.batches[kind] += 1
                    for slot, reply in zip(slots, replies):
                        slot.reply = reply
        finally:
            if active:
                self._aborted = True
                for slot in active:
                    if not slot.done:
                        slot.request = ("abort", None)
                        slot.go.release()
                for slot in active:
                    slot.thread.join(timeout=5)  # type: ignore[union-attr]
        return results


# --------------------------------------------------------------------------------------
# The attack model's outputs, shared by every target


class SharedAttackOutputs:
    """Masked-LM replacement words per ``(text, index)`` and sentence vectors per text.

    ``key`` names the attack model and settings (see :func:`shared_key`); ``cache`` (an
    :class:`~miniature.core.cache.OutputCache`) stores new entries as npz chunks under
    ``adversarial/shared-<key>/`` every :data:`FLUSH_SECONDS` while an attack runs and at
    its end. ``mlm_texts`` and ``encoded_texts`` count the texts the attack model was
    actually run on (tests use them to prove reuse).
    """

    def __init__(self, key: str, cache: "OutputCache | None" = None) -> None:
        self.key = key
        self.cache = cache
        self.words: dict[tuple[str, int], tuple[str, ...]] = {}
        self.vectors: dict[str, np.ndarray] = {}
        self._new_words: list[tuple[str, int]] = []
        self._new_vectors: list[str] = []
        self._last_flush = time.monotonic()
        self._chunks = 0
        self.mlm_texts = 0
        self.mlm_calls = 0
        self.encoded_texts = 0
        self.encode_calls = 0
        self.loaded = 0
        self._load()

    # -- storage ---------------------------------------------------------------------------
    @property
    def folder(self) -> str:
        return f"shared-{self.key}"

    def _load(self) -> None:
        cache = self.cache
        if cache is None or cache.root is None or cache.refresh:
            return
        folder = cache.root / "adversarial" / self.folder
        if not folder.is_dir():
            return
        for path in sorted(folder.glob("*.npz")):
            arrays = cache.load_arrays("adversarial", f"{self.folder}/{path.stem}")
            if arrays is None:
                continue
            try:
                for text, index, words in zip(
                    arrays["word_texts"].tolist(), arrays["word_index"].tolist(), arrays["word_lists"].tolist()
                ):
                    self.words[(json.loads(text), int(index))] = tuple(json.loads(words))
                for text, vector in zip(arrays["vector_texts"].tolist(), arrays["vectors"]):
                    self.vectors[json.loads(text)] = np.asarray(vector, dtype=np.float32)
                self.loaded += 1
            except (KeyError, ValueError, TypeError):
                continue  # a chunk from another layout: recomputed

    def flush(self, force: bool = False) -> None:
        """Write the entries added since the last flush as one chunk (atomic rename)."""
        cache = self.cache
        if cache is None or cache.root is None or not (self._new_words or self._new_vectors):
            return
        if not force and time.monotonic() - self._last_flush < FLUSH_SECONDS:
            return
        words, vectors = self._new_words, self._new_vectors
        self._new_words, self._new_vectors = [], []
        width = next(iter(self.vectors.values())).shape[0] if self.vectors else 0
        arrays = {
            # texts as JSON strings: numpy's fixed-width strings drop trailing NULs
            "word_texts": np.array([json.dumps(t) for t, _ in words], dtype=str),
            "word_index": np.array([i for _, i in words], dtype=np.int64),
            "word_lists": np.array([json.dumps(list(self.words[w])) for w in words], dtype=str),
            "vector_texts": np.array([json.dumps(t) for t in vectors], dtype=str),
            "vectors": (
                np.stack([self.vectors[t] for t in vectors]) if vectors else np.zeros((0, width), dtype=np.float32)
            ),
        }
        self._chunks += 1
        name = f"{self.folder}/chunk-{time.time_ns():020d}-{os.getpid()}-{self._chunks:06d}"
        cache.save_arrays("adversarial", name, arrays)
        self._last_flush = time.monotonic()

    # -- filling ---------------------------------------------------------------------------
    def add_words(self, text: str, index: int, words: Sequence[str]) -> None:
        key = (text, int(index))
        if key not in self.words:
            self.words[key] = tuple(words)
            self._new_words.append(key)

    def add_vector(self, text: str, vector: np.ndarray) -> None:
        if text not in self.vectors:
            self.vectors[text] = np.asarray(vector, dtype=np.float32)
            self._new_vectors.append(text)


def shared_key(attack_wrapper: "ModelWrapper", settings: "AttackSettings") -> str:
    """The store's key: attack model, its input length, every setting, TextAttack's version."""
    from miniature.core.cache import fingerprint

    return fingerprint(
        "attack-model-outputs",
        ATTACK_VERSION,
        textattack_version(),
        attack_wrapper.fingerprint,
        attack_wrapper.max_length,
        settings_key(settings),
    )


def shared_outputs(
    attack_wrapper: "ModelWrapper", settings: "AttackSettings", cache: "OutputCache | None"
) -> SharedAttackOutputs:
    """The run's store for this attack model and settings (one per wrapper, so a gate's
    targets share it), loaded from ``cache`` the first time."""
    key = shared_key(attack_wrapper, settings)
    stores: dict[tuple[str, str | None], SharedAttackOutputs] = attack_wrapper.__dict__.setdefault(
        "_miniature_shared_attack_outputs", {}
    )
    root = str(cache.root) if cache is not None and cache.root is not None else None
    if (key, root) not in stores:
        stores[(key, root)] = SharedAttackOutputs(key, cache)
    return stores[(key, root)]


# --------------------------------------------------------------------------------------
# The attack's model calls, routed through the shared store and the lockstep


class SharedBertAttackSwap(LocalBertAttackSwap):
    """:class:`LocalBertAttackSwap` whose replacement words come from the shared store."""

    def __init__(self, attack_wrapper: "ModelWrapper", settings: "AttackSettings", router: "AttackRouter") -> None:
        super().__init__(attack_wrapper, settings)
        self.router = router

    def _get_transformations(self, current_text: Any, indices_to_modify: Any) -> list[Any]:
        if self.word_cap is not None and len(current_text.attack_attrs.get("modified_indices", ())) >= self.word_cap:
            return []
        indices = list(indices_to_modify)
        words = self.router.replacement_words(current_text, indices)
        transformed = []
        for i in indices:  # as WordSwapMaskedLM._get_transformations(method="bert-attack")
            word_at_index = current_text.words[i]
            for r in words[i]:
                r = r.strip("Ġ")
                if r != word_at_index:
                    transformed.append(current_text.replace_word_at_index(i, r))
        return transformed


class SharedSimilarity(AttackModelSimilarity):
    """:class:`AttackModelSimilarity` whose sentence vectors come from the shared store."""

    def __init__(self, attack_wrapper: "ModelWrapper", threshold: float, router: "AttackRouter") -> None:
        super().__init__(attack_wrapper, threshold)
        self.router = router

    def encode(self, sentences: Sequence[str]) -> np.ndarray:
        return self.router.vectors(list(sentences))


class MemoTarget(TargetModelWrapper):
    """:class:`TargetModelWrapper` that memoises logits per text and batches across items.

    ``queries`` counts the texts TextAttack sent (as the sequential wrapper does, so
    cache hits inside TextAttack are not counted); ``computed`` the texts the model ran.
    """

    def __init__(self, wrapper: "ModelWrapper", router: "AttackRouter") -> None:
        super().__init__(wrapper)
        self.router = router

    def __call__(self, text_input_list: Sequence[Any], **kwargs: Any) -> np.ndarray:
        items = list(text_input_list)
        if not items:
            return np.zeros((0, int(self.wrapper.num_labels)), dtype=np.float32)
        if not all(isinstance(item, str) for item in items):
            raise TypeError(
                "the batched attack takes single texts; fix: use AttackSettings(engine='textattack') for text pairs"
            )
        self.queries += len(items)
        self.calls += 1
        return self.router.logits(items)


class AttackRouter:
    """Answers the attack's model calls from memos, batching the misses in a :class:`Lockstep`."""

    def __init__(
        self,
        attack_wrapper: "ModelWrapper",
        target_wrapper: "ModelWrapper",
        settings: "AttackSettings",
        shared: SharedAttackOutputs,
    ) -> None:
        self.attack_wrapper = attack_wrapper
        self.target_wrapper = target_wrapper
        self.settings = settings
        self.shared = shared
        self.target_memo: dict[str, np.ndarray] = {}
        self.computed = 0
        self.lockstep = Lockstep({"target": self._target_batch, "mlm": self._mlm_batch, "encode": self._encode_batch})
        self.swap = LocalBertAttackSwap(attack_wrapper, settings)  # its replacement-word code
        self.max_length = self.swap.max_length

    # -- calls made by the attack (inside a job) -------------------------------------------
    def logits(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.target_memo]
        if missing:
            self.lockstep.request("target", missing)
        return np.stack([self.target_memo[t] for t in texts])

    def replacement_words(self, current_text: Any, indices: list[int]) -> dict[int, tuple[str, ...]]:
        text = current_text.text
        if any((text, i) not in self.shared.words for i in indices):
            self.lockstep.request("mlm", (current_text, indices))
        return {i: self.shared.words[(text, i)] for i in indices}

    def vectors(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.shared.vectors]
        if missing:
            self.lockstep.request("encode", missing)
        return np.stack([self.shared.vectors[t] for t in texts])

    # -- batched answers (in the scheduler) ------------------------------------------------
    def _target_batch(self, payloads: list[list[str]]) -> list[None]:
        texts = [t for t in dict.fromkeys(t for p in payloads for t in p) if t not in self.target_memo]
        if texts:
            progress, self.target_wrapper.progress = self.target_wrapper.progress, False
            try:
                rows = self.target_wrapper.logits(texts)
            finally:
                self.target_wrapper.progress = progress
            self.computed += len(texts)
            for text, row in zip(texts, rows):
                self.target_memo[text] = row
        return [None] * len(payloads)

    def _encode_batch(self, payloads: list[list[str]]) -> list[None]:
        texts = [t for t in dict.fromkeys(t for p in payloads for t in p) if t not in self.shared.vectors]
        if texts:
            # the similarity constraint's encoder: the configured sentence encoder, or (without
            # one) the attack model's mean-pooled vectors, as the sequential path uses
            name = self.settings.similarity_encoder
            wrapper = similarity_encoder(name) if name is not None else self.attack_wrapper
            progress, wrapper.progress = wrapper.progress, False
            try:
                rows = wrapper.encode(texts, pooling="mean")
            finally:
                wrapper.progress = progress
            self.shared.encoded_texts += len(texts)
            self.shared.encode_calls += 1
            for text, row in zip(texts, rows):
                self.shared.add_vector(text, row)
        return [None] * len(payloads)

    def _mlm_batch(self, payloads: list[tuple[Any, list[int]]]) -> list[None]:
        import torch

        wanted: dict[str, tuple[Any, set[int]]] = {}
        for current_text, indices in payloads:
            entry = wanted.setdefault(current_text.text, (current_text, set()))
            entry[1].update(i for i in indices if (current_text.text, i) not in self.shared.words)
        wanted = {t: e for t, e in wanted.items() if e[1]}
        if not wanted:
            return [None] * len(payloads)
        swap = self.swap
        tokenizer = swap._lm_tokenizer
        texts = list(wanted)
        encoded = tokenizer(texts, max_length=self.max_length, truncation=True, padding=False)
        keys = [k for k in encoded.keys() if k in swap.input_names]
        lengths = [len(ids) for ids in encoded["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: (-lengths[i], i))
        model = swap._language_model
        device = next(model.parameters()).device
        budget = max(MLM_TOKEN_BUDGET, max(lengths))
        start = 0
        with torch.no_grad():
            while start < len(order):
                size = max(1, budget // lengths[order[start]])  # longest first: it bounds the pad
                batch = order[start : start + size]
                start += size
                features = [{k: encoded[k][i] for k in keys} for i in batch]
                padded = tokenizer.pad(features, return_tensors="pt")
                inputs = {k: v.to(device) for k, v in padded.items() if k in swap.input_names}
                logits = model(**inputs)[0]
                self.shared.mlm_calls += 1
                self.shared.mlm_texts += len(batch)
                for row, i in enumerate(batch):
                    pred_probs = logits[row, : lengths[i]]
                    id_preds = torch.topk(pred_probs, swap.max_candidates)[1].cpu()
                    masked_lm_logits = pred_probs.cpu()
                    current_text, positions = wanted[texts[i]]
                    for index in sorted(positions):
                        words = swap._bert_attack_replacement_words(
                            current_text, index, id_preds=id_preds, masked_lm_logits=masked_lm_logits
                        )
                        self.shared.add_words(texts[i], index, words)
                del logits
        return [None] * len(payloads)


def build_batched_attacks(
    attack_wrapper: "ModelWrapper",
    target_wrapper: "ModelWrapper",
    settings: "AttackSettings",
    stopwords: Sequence[str],
    shared: SharedAttackOutputs,
) -> tuple[AttackRouter, Callable[[], Any]]:
    """The router and a factory of :class:`textattack.Attack` objects routed through it,
    assembled exactly as :func:`~miniature.core.attack.recipe.build_attack` assembles the sequential one."""
    router = AttackRouter(attack_wrapper, target_wrapper, settings, shared)

    def make() -> Any:
        target = MemoTarget(target_wrapper, router)
        return build_attack(
            attack_wrapper,
            target,
            settings,
            stopwords,
            transformation=SharedBertAttackSwap(attack_wrapper, settings, router),
            similarity=(
                SharedSimilarity(attack_wrapper, settings.similarity_threshold, router)
                if settings.similarity_threshold is not None
                else None
            ),
            model_batch_size=2**31 - 1,
        )

    return router, make
