"""The batched BERT-Attack engine: same outcomes as TextAttack's sequential path,
attack-model work shared across targets and runs, a store that survives a kill and is
never read under another attack model or constraint setting.

Tiny models (miniature.tools.testing_attack): a trained tiny classifier and a magnitude-pruned
copy of it, attacked with a tiny masked LM. Torch runs on one thread (conftest).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from miniature.core.cache import OutputCache
from miniature.core.attack import AttackSettings, attack_model_outcomes
from miniature.core.models import load_model
from miniature.core.builtin_data import sentiment_reviews
from miniature.tools.testing_attack import build

N_ITEMS = 40


def _batched():
    """The batched engine's module (imported late: it imports TextAttack)."""
    from miniature.core.attack import engine

    return engine


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build(tmp_path_factory.mktemp("attack-batching-models"), candidates=(0.4,))


@pytest.fixture(scope="module")
def reviews():
    items = sentiment_reviews(N_ITEMS, seed=11, mixed=0.0)
    return [r.text for r in items], [r.label for r in items]


def _attacker(models):
    return load_model(str(models["attacker"]), head="masked-lm")


def _target(models, name="reference"):
    return load_model(str(models[name]), head="classification")


def _strip(outcomes):
    return [{k: v for k, v in o.items() if k not in ("seconds", "index")} for o in outcomes]


@pytest.mark.slow
@pytest.mark.parametrize("top_k", [1, 3])
def test_batched_outcomes_equal_the_sequential_attack_item_by_item(models, reviews, top_k):
    texts, labels = reviews
    attacker = _attacker(models)
    for name in ("reference", "pruned-40"):
        target = _target(models, name)
        sequential = attack_model_outcomes(
            attacker,
            target,
            texts,
            labels,
            progress=False,
            settings=AttackSettings(top_k_words=top_k, engine="textattack"),
        )
        fast = attack_model_outcomes(
            attacker,
            target,
            texts,
            labels,
            progress=False,
            window=16,
            settings=AttackSettings(top_k_words=top_k, engine="batched"),
        )
        results = Counter(o["result"] for o in sequential)
        assert results["successful"] and results["skipped"], results
        if top_k == 1:
            assert results["failed"], f"no item held: {results}"
        differ = [i for i, (a, b) in enumerate(zip(_strip(sequential), _strip(fast))) if a != b]
        assert not differ, (name, [(sequential[i], fast[i]) for i in differ[:2]])


@pytest.mark.slow
def test_attack_model_work_is_shared_across_targets_and_target_queries_memoised(models, reviews):
    texts, labels = reviews
    settings = AttackSettings(engine="batched")
    attacker = _attacker(models)
    attack_model_outcomes(attacker, _target(models), texts, labels, progress=False, settings=settings)
    store = _batched().shared_outputs(attacker, settings, None)
    first = store.mlm_texts, store.encoded_texts
    assert first[0] > 0 and first[1] > 0
    candidate = _target(models, "pruned-40")
    attack_model_outcomes(attacker, candidate, texts, labels, progress=False, settings=settings)
    second = store.mlm_texts - first[0], store.encoded_texts - first[1]
    # a cold run of the candidate alone would run the attack model on about as many texts
    # as the reference's did; the shared store saves most of it
    assert second[0] < first[0] / 2 and second[1] < first[1] / 2, (first, second)
    # the target runs few, full batches: many items' queries per forward pass
    sequential_target, batched_target = _target(models), _target(models)
    attack_model_outcomes(
        attacker, sequential_target, texts, labels, progress=False, settings=AttackSettings(engine="textattack")
    )
    attack_model_outcomes(attacker, batched_target, texts, labels, progress=False, settings=settings)
    assert batched_target.forward_calls < sequential_target.forward_calls / 2, (
        batched_target.forward_calls,
        sequential_target.forward_calls,
    )


KILL = textwrap.dedent("""
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from miniature.core.cache import OutputCache
    from miniature.core.attack import engine as batched
    from miniature.core.attack import AttackSettings, attack_model_outcomes
    from miniature.core.models import load_model
    args = json.loads(sys.argv[1])
    batched.FLUSH_SECONDS = 0.0
    if args["kill_after"]:
        run = batched.Lockstep.run
        def killing_run(self, jobs, *, window, on_done):
            seen = []
            def done(index, outcome):
                on_done(index, outcome)
                seen.append(index)
                if len(seen) == args["kill_after"]:
                    os._exit(9)  # no finally, no flush: as a kill
            return run(self, jobs, window=window, on_done=done)
        batched.Lockstep.run = killing_run
    attacker = load_model(args["attacker"], head="masked-lm")
    target = load_model(args["target"], head="classification")
    settings = AttackSettings(engine="batched")
    outcomes = attack_model_outcomes(attacker, target, args["texts"], args["labels"],
                                     settings=settings, cache=OutputCache(args["cache"]),
                                     progress=False, window=8)
    store = batched.shared_outputs(attacker, settings, OutputCache(args["cache"]))
    print(json.dumps({"outcomes": outcomes, "mlm_texts": store.mlm_texts,
                      "encoded_texts": store.encoded_texts, "loaded": store.loaded}))
""")


def _run(script: Path, **args) -> dict:
    proc = subprocess.run([sys.executable, str(script), json.dumps(args)], capture_output=True, text=True, timeout=600)
    if args.get("kill_after"):
        assert proc.returncode == 9, proc.stderr[-2000:]
        return {}
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_shared_store_survives_a_kill_and_the_rerun_is_identical_and_cheaper(models, reviews, tmp_path):
    texts, labels = reviews
    script = tmp_path / "kill.py"
    script.write_text(KILL)
    common = dict(attacker=str(models["attacker"]), target=str(models["reference"]), texts=texts, labels=labels)
    cold = _run(script, cache=str(tmp_path / "cold"), kill_after=0, **common)
    _run(script, cache=str(tmp_path / "killed"), kill_after=10, **common)
    journal = list((tmp_path / "killed" / "adversarial").glob("*.jsonl"))
    assert len(journal) == 1 and len(journal[0].read_text().splitlines()) == 10
    chunks = list((tmp_path / "killed" / "adversarial").glob("shared-*/*.npz"))
    assert chunks, "nothing of the attack model's work was written before the kill"
    resumed = _run(script, cache=str(tmp_path / "killed"), kill_after=0, **common)
    assert _strip(resumed["outcomes"]) == _strip(cold["outcomes"])
    assert resumed["loaded"] >= 1
    assert resumed["mlm_texts"] < cold["mlm_texts"]
    assert resumed["encoded_texts"] < cold["encoded_texts"]
    # another target in a fresh process reads the store: far fewer attack-model passes
    other = dict(common, target=str(models["pruned-40"]))
    fresh = _run(script, cache=str(tmp_path / "other-cold"), kill_after=0, **other)
    warm = _run(script, cache=str(tmp_path / "cold"), kill_after=0, **other)
    assert _strip(warm["outcomes"]) == _strip(fresh["outcomes"])
    assert warm["mlm_texts"] < fresh["mlm_texts"] / 2, (warm["mlm_texts"], fresh["mlm_texts"])


@pytest.mark.slow
def test_shared_store_is_keyed_by_attack_model_and_every_setting(models, reviews, tmp_path):
    attacker = _attacker(models)
    base = AttackSettings(engine="batched")
    key = _batched().shared_key(attacker, base)
    assert _batched().shared_key(attacker, AttackSettings(engine="textattack")) == key
    for changed in (
        AttackSettings(similarity_threshold=0.3),
        AttackSettings(max_candidates=12),
        AttackSettings(top_k_words=1),
        AttackSettings(max_percent=0.2),
        AttackSettings(max_length=16),
        AttackSettings(subword_candidates=2),
    ):
        assert _batched().shared_key(attacker, changed) != key, changed
    other = build(tmp_path / "other", candidates=(), epochs=0, attacker_hidden=48)
    assert _batched().shared_key(load_model(str(other["attacker"]), head="masked-lm"), base) != key
    # and in use: a run with another constraint setting reads nothing of the first run's store
    texts, labels = reviews
    cache = tmp_path / "cache"
    attack_model_outcomes(
        attacker, _target(models), texts[:6], labels[:6], progress=False, settings=base, cache=OutputCache(cache)
    )
    assert list((cache / "adversarial").glob(f"shared-{key}/*.npz"))
    fresh = _attacker(models)
    stricter = AttackSettings(engine="batched", similarity_threshold=0.5)
    store = _batched().shared_outputs(fresh, stricter, OutputCache(cache))
    assert store.loaded == 0 and not store.words and not store.vectors
    assert _batched().shared_outputs(fresh, base, OutputCache(cache)).loaded >= 1


def test_engine_switch_is_checked_and_left_out_of_the_outcome_key(monkeypatch):
    with pytest.raises(ValueError, match="engine"):
        AttackSettings(engine="fast")
    monkeypatch.setenv("MINIATURE_ATTACK_ENGINE", "textattack")
    assert AttackSettings().engine == "textattack"
    from miniature.core.attack.settings import settings_key

    assert settings_key(AttackSettings(engine="batched")) == settings_key(AttackSettings(engine="textattack"))
    assert "engine" not in settings_key(AttackSettings())


def test_lockstep_batches_requests_and_propagates_a_failure():
    sizes = []

    def handler(payloads):
        sizes.append(len(payloads))
        return [p * 2 for p in payloads]

    lockstep = _batched().Lockstep({"double": handler})

    def job(i):
        return lambda: [lockstep.request("double", i), lockstep.request("double", i + 1)]

    results = lockstep.run(((i, job(i)) for i in range(10)), window=4)
    assert results == {i: [2 * i, 2 * i + 2] for i in range(10)}
    assert max(sizes) == 4

    def bad():
        lockstep.request("double", 1)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        lockstep.run([(0, job(0)), (1, bad), (2, job(2))], window=3)


def test_shared_store_round_trips_texts_exactly_and_skips_an_unreadable_chunk(tmp_path):
    import numpy as np

    store = _batched().SharedAttackOutputs("k", OutputCache(tmp_path))
    store.add_words("ends in a NUL\x00", 2, ["a", "b"])
    store.add_words("plain", 0, [])
    store.add_vector("ends in a NUL\x00", np.arange(3, dtype=np.float32))
    store.flush(force=True)
    store.add_vector("later", np.ones(3, dtype=np.float32))
    store.flush(force=True)
    (tmp_path / "adversarial" / "shared-k" / "chunk-broken.npz").write_bytes(b"not a zip")
    with pytest.warns(Warning, match="unreadable"):
        again = _batched().SharedAttackOutputs("k", OutputCache(tmp_path))
    assert again.loaded == 2
    assert again.words == {("ends in a NUL\x00", 2): ("a", "b"), ("plain", 0): ()}
    assert ("ends in a NUL", 2) not in again.words
    assert set(again.vectors) == {"ends in a NUL\x00", "later"}
    assert again.vectors["ends in a NUL\x00"].tolist() == [0.0, 1.0, 2.0]
    assert _batched().SharedAttackOutputs("other", OutputCache(tmp_path)).loaded == 0


# --------------------------------------------------------------------------------------
# AttackRunner alone, without a Gate


class TinyHost:
    """An AttackHost without a Gate: the tiny models, labelled test texts, its own settings.
    ``loaded`` counts the models asked for (a refusal must come before any)."""

    def __init__(self, models, texts, labels, *, task="classification", translation=None, cache=None):
        from miniature.core import settings as opt
        from miniature.core.data import TaskData, TextData

        test = TextData("tiny reviews", list(texts), None if labels is None else list(labels))
        self.data = TaskData(train=test, holdout=test, test=test, challenge=test)
        self.settings = opt.make_settings(attack_size=24, attack_top_k=3, max_length=128, seed=0)
        self.cache = cache if cache is not None else OutputCache(None)
        self.task = task
        self.multiple_choice = False
        self.attack_problem = None
        self.models = models
        self.translation = translation
        self.loaded = 0
        self._attacker = None

    def head_problem(self, name):
        return None

    def label_translation(self, name):
        return self.translation

    def wrapper(self, name):
        self.loaded += 1
        return _target(self.models, name)

    def attack_wrapper(self):
        self.loaded += 1
        if self._attacker is None:
            self._attacker = _attacker(self.models)
        return self._attacker

    def unlabelled(self, role, need):
        return f"the {role} data has no labels, and {need}"


def test_attack_runner_refuses_what_it_cannot_attack_with_the_reason_before_loading(models, reviews):
    from miniature.core.attack import AttackRunner
    from miniature.errors import NotApplicable

    texts, labels = reviews
    host = TinyHost(models, texts, labels, task="qa")
    runner = AttackRunner(host)
    for call in (
        lambda: runner.outcomes("reference"),
        lambda: runner.items("reference"),
        lambda: runner.shard("reference", 0, 4),
    ):
        with pytest.raises(NotApplicable, match="attacks a sentiment classifier.*--task classification"):
            call()
    unlabelled = TinyHost(models, texts, None)
    with pytest.raises(NotApplicable, match="the test data has no labels, and the attack needs each item's gold label"):
        AttackRunner(unlabelled).outcomes("reference")
    missing = TinyHost(models, texts, labels)
    missing.attack_problem = "attack model: 'nowhere' is not a model folder"
    with pytest.raises(NotApplicable, match="attack model: 'nowhere'"):
        AttackRunner(missing).items("reference")
    assert host.loaded == unlabelled.loaded == missing.loaded == 0


@pytest.mark.slow
def test_attack_runner_outcomes_equal_attack_model_outcomes_on_the_same_sample(models, reviews, tmp_path):
    import numpy as np

    from miniature.core.attack import AttackRunner, sample_items

    texts, labels = reviews
    index = sample_items(len(texts), 24, 0)
    assert len(index) == 24 < len(texts)
    attacker = _attacker(models)
    direct = attack_model_outcomes(
        attacker,
        _target(models),
        [texts[i] for i in index],
        [labels[i] for i in index],
        progress=False,
        settings=AttackSettings(top_k_words=3, max_length=min(128, attacker.max_length)),
    )
    host = TinyHost(models, texts, labels, cache=OutputCache(tmp_path / "cache"))
    runner = AttackRunner(host)
    assert runner.items("reference") == 24
    outcomes = runner.outcomes("reference")
    assert _strip(outcomes) == _strip(direct)
    assert runner.outcomes("reference") is outcomes  # memoised for the run
    # two shards journalled, then a fresh runner folds them into the same outcomes
    sharded = TinyHost(models, texts, labels, cache=OutputCache(tmp_path / "sharded"))
    first, second = AttackRunner(sharded).shard("reference", 0, 10), AttackRunner(sharded).shard("reference", 10, 24)
    assert _strip(first + second) == _strip(direct)
    assert _strip(AttackRunner(sharded).outcomes("reference")) == _strip(direct)
    # a model whose label ids are the data's swapped: attacked on its own ids, reported in the data's
    swapped = AttackRunner(
        TinyHost(models, texts, [1 - label for label in labels], translation=np.array([1, 0]))
    ).outcomes("reference")
    assert [o["label"] for o in swapped] == [1 - labels[i] for i in index]
    flip = ("label", "original_prediction", "perturbed_prediction")
    assert [{k: (1 - v if k in flip else v) for k, v in o.items()} for o in _strip(swapped)] == _strip(direct)
