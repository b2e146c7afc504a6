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
from miniature.core.characteristics.adversarial import AttackSettings, attack_model_outcomes
from miniature.core.models import load_model
from miniature.core.builtin_data import sentiment_reviews
from miniature.tools.testing_attack import build

N_ITEMS = 40


def _batched():
    """The batched engine's module (imported late: it imports TextAttack)."""
    from miniature.core.characteristics import batched_attack

    return batched_attack


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
        sequential = attack_model_outcomes(attacker, target, texts, labels, progress=False,
                                           settings=AttackSettings(top_k_words=top_k,
                                                                   engine="textattack"))
        fast = attack_model_outcomes(attacker, target, texts, labels, progress=False, window=16,
                                     settings=AttackSettings(top_k_words=top_k, engine="batched"))
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
    attack_model_outcomes(attacker, sequential_target, texts, labels, progress=False,
                          settings=AttackSettings(engine="textattack"))
    attack_model_outcomes(attacker, batched_target, texts, labels, progress=False,
                          settings=settings)
    assert batched_target.forward_calls < sequential_target.forward_calls / 2, (
        batched_target.forward_calls, sequential_target.forward_calls)


KILL = textwrap.dedent("""
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from miniature.core.cache import OutputCache
    from miniature.core.characteristics import batched_attack as batched
    from miniature.core.characteristics.adversarial import AttackSettings, attack_model_outcomes
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
    proc = subprocess.run([sys.executable, str(script), json.dumps(args)], capture_output=True,
                          text=True, timeout=600)
    if args.get("kill_after"):
        assert proc.returncode == 9, proc.stderr[-2000:]
        return {}
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_shared_store_survives_a_kill_and_the_rerun_is_identical_and_cheaper(models, reviews,
                                                                             tmp_path):
    texts, labels = reviews
    script = tmp_path / "kill.py"
    script.write_text(KILL)
    common = dict(attacker=str(models["attacker"]), target=str(models["reference"]),
                  texts=texts, labels=labels)
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
    for changed in (AttackSettings(similarity_threshold=0.3), AttackSettings(max_candidates=12),
                    AttackSettings(top_k_words=1), AttackSettings(max_percent=0.2),
                    AttackSettings(max_length=16), AttackSettings(subword_candidates=2)):
        assert _batched().shared_key(attacker, changed) != key, changed
    other = build(tmp_path / "other", candidates=(), epochs=0, attacker_hidden=48)
    assert _batched().shared_key(load_model(str(other["attacker"]), head="masked-lm"), base) != key
    # and in use: a run with another constraint setting reads nothing of the first run's store
    texts, labels = reviews
    cache = tmp_path / "cache"
    attack_model_outcomes(attacker, _target(models), texts[:6], labels[:6], progress=False,
                          settings=base, cache=OutputCache(cache))
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
    from miniature.core.characteristics.adversarial import _settings_key

    assert _settings_key(AttackSettings(engine="batched")) == _settings_key(
        AttackSettings(engine="textattack"))
    assert "engine" not in _settings_key(AttackSettings())


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
