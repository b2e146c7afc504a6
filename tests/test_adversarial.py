"""BERT-Attack through TextAttack, offline (paper section 6, Table 3).

Tiny models only: a locally trained tokenizer, a masked-LM attack model, a classifier
trained for about a second on synthetic reviews, and a constant classifier. Torch runs
on one thread here: on a shared 2-core machine that is many times faster for these
tiny models.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from miniature.core.cache import OutputCache
from miniature.core.attack import (
    DEFAULT_SAMPLE_SIZE,
    AttackSettings,
    attack_model_outcomes,
    english_stopwords,
    make_target_wrapper,
    sample_items,
    transfer_predictions,
)
from miniature.core.characteristics.adversarial import attack_figures, compare_adversarial
from miniature.core.models import load_model
from miniature.core.builtin_data import sentiment_reviews
from miniature.tools.testing import make_tiny_model, train_tokenizer

N_ATTACKED = 12


@pytest.fixture(scope="module")
def adv_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tokenizer, masked-LM attack model, trained and constant classifiers, on disk."""
    import torch
    import transformers

    root = tmp_path_factory.mktemp("adversarial-models")
    tokenizer_dir = train_tokenizer(root / "tokenizer")
    attacker = make_tiny_model(root / "attacker", tokenizer_dir, layers=2, hidden=32, heads=2, seed=5, head="masked-lm")

    constant = make_tiny_model(root / "constant", tokenizer_dir, layers=1, hidden=32, heads=2, seed=6)
    model = transformers.BertForSequenceClassification.from_pretrained(str(constant))
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([4.0, -4.0]))  # always class 0
    model.save_pretrained(str(constant), safe_serialization=True)

    trained = make_tiny_model(root / "trained", tokenizer_dir, layers=2, hidden=32, heads=2, seed=7)
    model = transformers.BertForSequenceClassification.from_pretrained(str(trained))
    tokenizer = transformers.BertTokenizerFast.from_pretrained(str(trained))
    reviews = sentiment_reviews(800, seed=1, mixed=0.0)
    batch = tokenizer([r.text for r in reviews], padding=True, truncation=True, max_length=64, return_tensors="pt")
    labels = torch.tensor([r.label for r in reviews])
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(8):
        order = torch.randperm(len(reviews))
        for start in range(0, len(reviews), 32):
            rows = order[start : start + 32]
            loss = model(
                input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows], labels=labels[rows]
            ).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.save_pretrained(str(trained), safe_serialization=True)
    return {"attacker": attacker, "constant": constant, "trained": trained}


@pytest.fixture(scope="module")
def test_reviews():
    return sentiment_reviews(N_ATTACKED, seed=11, mixed=0.0)


@pytest.fixture(scope="module")
def trained_run(adv_models, test_reviews, tmp_path_factory):
    """The attack on the trained classifier, journalled in a cache dir."""
    cache_dir = tmp_path_factory.mktemp("adversarial-cache")
    attacker = load_model(str(adv_models["attacker"]), head="masked-lm")
    target = load_model(str(adv_models["trained"]), head="classification")
    outcomes = attack_model_outcomes(
        attacker,
        target,
        [r.text for r in test_reviews],
        [r.label for r in test_reviews],
        cache=OutputCache(cache_dir),
        progress=False,
    )
    return {"outcomes": outcomes, "cache_dir": cache_dir, "target_calls": target.forward_calls}


def _without_timing(outcomes):
    return [{k: v for k, v in o.items() if k != "seconds"} for o in outcomes]


def _changed_words(original: str, perturbed: str) -> int:
    a, b = original.split(), perturbed.split()
    assert len(a) == len(b), f"a word swap changed the number of words: {original!r} -> {perturbed!r}"
    return sum(x != y for x, y in zip(a, b))


# --------------------------------------------------------------------------------------
# Offline TextAttack


@pytest.mark.slow
def test_import_is_cheap_and_the_attack_runs_without_network(adv_models, tmp_path):
    """First TextAttack import (fresh cache) and a whole attack, with the network cut off."""
    script = textwrap.dedent("""
        import json, socket, sys
        attempts = []
        def refuse(*args, **kwargs):
            attempts.append(repr(args[:1]))
            raise OSError("network disabled in this test")
        socket.getaddrinfo = refuse
        socket.socket.connect = refuse
        import miniature.core.attack as adv
        heavy = sorted(m for m in ("torch", "textattack", "transformers", "nltk") if m in sys.modules)
        adv.prepare_textattack()
        import nltk, torch
        torch.set_num_threads(1)
        from miniature.core.models import load_model
        stop = nltk.corpus.stopwords.words("english")
        outcomes = adv.attack_model_outcomes(
            load_model(sys.argv[1], head="masked-lm"), load_model(sys.argv[2], head="classification"),
            ["The plot was dull and the acting felt clumsy.", "A superb, moving film."], [0, 1],
            progress=False)
        print(json.dumps({"heavy": heavy, "attempts": attempts, "stop": len(stop),
                          "same": stop == adv.english_stopwords(),
                          "download_restored": nltk.download.__name__ == "download",
                          "results": [o["result"] for o in outcomes]}))
    """)
    env = dict(os.environ, HOME=str(tmp_path), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("TA_CACHE_DIR", None)
    env.pop("NLTK_DATA", None)
    done = subprocess.run(
        [sys.executable, "-c", script, str(adv_models["attacker"]), str(adv_models["trained"])],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], "importing the module must not import torch/textattack"
    assert report["attempts"] == []
    assert report["stop"] == 179 and report["same"]
    assert report["download_restored"]
    assert len(report["results"]) == 2
    # TextAttack's first-import marker now exists, written by TextAttack itself
    assert (tmp_path / ".cache" / "textattack" / "post_install_check_3").exists()


def test_the_attack_package_imports_one_way_and_nothing_of_the_gate():
    """Inside miniature.core.attack imports form no cycle, counting those under
    ``if TYPE_CHECKING:`` and inside functions, and none reaches the characteristics or the
    gate's parts (the gate uses the attack, never the other way round)."""
    import ast

    import miniature.core.attack as package

    folder = Path(package.__file__).parent
    names = {p.stem: f"{package.__name__}.{p.stem}" for p in folder.glob("*.py")}
    names["__init__"] = package.__name__
    banned = (
        "miniature.core.characteristics",
        "miniature.core.gate",
        "miniature.core.loading",
        "miniature.core.outputs",
        "miniature.core.executors",
    )
    graph: dict[str, set[str]] = {}
    wrong = []
    for stem, module in names.items():
        graph[module] = set()
        for node in ast.walk(ast.parse((folder / f"{stem}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            wrong += [(module, t) for t in targets if t.startswith(banned)]
            graph[module] |= {t for t in targets if t in names.values() and t != module}
    assert not wrong, wrong
    done: list[str] = []
    while len(done) < len(graph):  # peel off the modules whose imports are all peeled off
        ready = [m for m in graph if m not in done and graph[m] <= set(done)]
        assert ready, f"an import cycle among {sorted(set(graph) - set(done))}"
        done += ready


def test_shipped_stopwords_are_nltk_english():
    words = english_stopwords()
    assert len(words) == len(set(words)) == 179
    assert {"the", "not", "no", "very", "wouldn't"} <= set(words)
    assert "film" not in words and "good" not in words


# --------------------------------------------------------------------------------------
# TextAttack model wrapper


@pytest.mark.slow
def test_target_wrapper_predicts_like_the_model_without_padding_to_512(adv_models):
    import torch

    target = load_model(str(adv_models["trained"]), head="classification")
    ta_wrapper = make_target_wrapper(target)
    texts = [
        "Dull.",
        *[r.text for r in sentiment_reviews(9, seed=3)],
        "The film was wonderful, the cast was superb and the ending was moving. " * 3,
    ]
    lengths = []
    hook = target.model.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        logits = ta_wrapper(texts)
    finally:
        hook.remove()
    assert logits.shape == (len(texts), 2)
    assert ta_wrapper.queries == len(texts)
    longest = max(len(target.tokenizer(t)["input_ids"]) for t in texts)
    assert max(lengths) == longest < 512
    assert target.tokenizer.model_max_length == target.max_length
    with torch.no_grad():
        own = [target.model(**target.tokenizer(t, return_tensors="pt")).logits[0].numpy() for t in texts]
    np.testing.assert_allclose(logits, np.stack(own), atol=1e-4)
    assert logits.argmax(1).tolist() == [int(row.argmax()) for row in own]


def test_target_wrapper_refuses_a_non_classifier(adv_models):
    attacker = load_model(str(adv_models["attacker"]), head="masked-lm")
    with pytest.raises(ValueError, match="head='classification'"):
        make_target_wrapper(attacker)


# --------------------------------------------------------------------------------------
# Running the attack


@pytest.mark.slow
def test_constant_classifier_is_never_broken_and_a_run_resumes(adv_models, test_reviews, tmp_path):
    attacker = load_model(str(adv_models["attacker"]), head="masked-lm")
    target = load_model(str(adv_models["constant"]), head="classification")
    texts = [r.text for r in test_reviews[:6]]
    labels = [r.label for r in test_reviews[:6]]
    assert set(labels) == {0, 1}
    cache = OutputCache(tmp_path)
    outcomes = attack_model_outcomes(attacker, target, texts, labels, cache=cache, progress=False)
    assert [o["original_prediction"] for o in outcomes] == [0] * 6
    assert [o["result"] for o in outcomes] == ["failed" if y == 0 else "skipped" for y in labels]
    assert all(o["perturbed_prediction"] == 0 for o in outcomes)
    assert all(o["queries"] > 1 for o in outcomes if o["result"] == "failed")
    figures = attack_figures(outcomes)
    assert figures["accuracy_after_attack"] == figures["original_accuracy"] == labels.count(0) / 6
    assert figures["percent_change"] == 0 and figures["broken"] == []

    # a crash after two items: the next run keeps those two and computes the rest
    (journal,) = (tmp_path / "adversarial").glob("*.jsonl")
    lines = journal.read_text().splitlines()
    first = json.loads(lines[0])
    first["seconds"] = 999.0  # a marker: recomputed records would not carry it
    journal.write_text(json.dumps(first) + "\n" + lines[1] + "\n")
    fresh = load_model(str(adv_models["constant"]), head="classification")
    resumed = attack_model_outcomes(attacker, fresh, texts, labels, cache=OutputCache(tmp_path), progress=False)
    assert resumed[first["index"]]["seconds"] == 999.0  # lines are in the order items ended
    assert fresh.forward_calls > 0
    assert _without_timing(resumed) == _without_timing(outcomes)


@pytest.mark.slow
def test_attack_breaks_a_trained_classifier_within_the_word_limit(trained_run, test_reviews):
    outcomes = trained_run["outcomes"]
    assert len(outcomes) == N_ATTACKED
    assert [o["label"] for o in outcomes] == [r.label for r in test_reviews]
    figures = attack_figures(outcomes)
    assert figures["original_accuracy"] >= 0.65, "the fixture classifier did not learn"
    successes = [o for o in outcomes if o["result"] == "successful"]
    assert successes, "BERT-Attack broke no item of a barely trained classifier"
    assert figures["accuracy_after_attack"] < figures["original_accuracy"]
    for outcome in outcomes:
        if outcome["result"] == "skipped":
            assert outcome["perturbed_text"] is None and not outcome["original_correct"]
            continue
        changed = _changed_words(outcome["original_text"], outcome["perturbed_text"])
        n_words = len(outcome["original_text"].split())
        assert changed == outcome["words_changed"]
        assert changed <= 3 and changed <= math.ceil(0.4 * n_words)
        if outcome["result"] == "successful":
            assert 1 <= changed
            assert outcome["perturbed_prediction"] != outcome["label"]
        else:
            assert outcome["perturbed_prediction"] == outcome["label"]


@pytest.mark.slow
def test_second_run_is_served_from_the_cache(adv_models, trained_run, test_reviews):
    assert trained_run["target_calls"] > 0
    attacker = load_model(str(adv_models["attacker"]), head="masked-lm")
    target = load_model(str(adv_models["trained"]), head="classification")
    cache = OutputCache(trained_run["cache_dir"])
    again = attack_model_outcomes(
        attacker, target, [r.text for r in test_reviews], [r.label for r in test_reviews], cache=cache, progress=False
    )
    assert target.forward_calls == 0 and attacker.forward_calls == 0
    assert cache.hits == 1 and cache.misses == 0
    assert again == trained_run["outcomes"]


@pytest.mark.slow
def test_attack_is_reproducible_and_top_k_words_caps_changes(adv_models, trained_run, test_reviews):
    attacker = load_model(str(adv_models["attacker"]), head="masked-lm")
    target = load_model(str(adv_models["trained"]), head="classification")
    texts = [r.text for r in test_reviews]
    labels = [r.label for r in test_reviews]
    rerun = attack_model_outcomes(attacker, target, texts, labels, cache=None, progress=False)
    assert _without_timing(rerun) == _without_timing(trained_run["outcomes"])

    one_word = attack_model_outcomes(
        attacker, target, texts, labels, progress=False, settings=AttackSettings(top_k_words=1, query_budget=500)
    )
    changed = [_changed_words(o["original_text"], o["perturbed_text"]) for o in one_word if o["result"] != "skipped"]
    assert changed and max(changed) <= 1
    # reviews that say it several times: one swap is not enough, so K=3 must change more words
    emphatic = ["Awful. Terrible. Dull. Boring. Painful. Weak.", "Wonderful. Charming. Moving. Superb. Brilliant."]
    several = attack_model_outcomes(attacker, target, emphatic, [0, 1], progress=False)
    assert max(o["words_changed"] for o in [*trained_run["outcomes"], *several]) > 1, (
        "with K=3 some item should change more than one word, else K=1 proves nothing"
    )


def test_query_budget_ends_an_attack_as_maximum_queries(adv_models, test_reviews):
    attacker = load_model(str(adv_models["attacker"]), head="masked-lm")
    target = load_model(str(adv_models["constant"]), head="classification")
    review = next(r for r in test_reviews if r.label == 0)
    (outcome,) = attack_model_outcomes(
        attacker, target, [review.text], [0], progress=False, settings=AttackSettings(query_budget=3)
    )
    assert outcome["result"] == "maximum queries" and outcome["queries"] == 3


@pytest.mark.slow
def test_transfer_to_the_same_model_is_total(adv_models, trained_run):
    outcomes = trained_run["outcomes"]
    target = load_model(str(adv_models["trained"]), head="classification")
    transfer = transfer_predictions(outcomes, target)
    assert sorted(transfer) == attack_figures(outcomes)["broken"]
    result = compare_adversarial(
        outcomes, outcomes, reference="m", candidate="m", transfer=transfer, drop_tolerance=0.0, n_bootstrap=50
    )
    assert result.figure == 1.0 and result.passed
    assert result.details["transfer_rate"] == 1.0
    assert result.details["drop_difference"] == 0.0


def test_attack_inputs_are_checked(adv_models):
    attacker = load_model(str(adv_models["attacker"]), head="masked-lm")
    target = load_model(str(adv_models["constant"]), head="classification")
    with pytest.raises(ValueError, match="head='masked-lm'"):
        attack_model_outcomes(target, target, ["fine film"], [1], progress=False)
    with pytest.raises(ValueError, match="one label per text"):
        attack_model_outcomes(attacker, target, ["fine film", "bad film"], [1], progress=False)
    with pytest.raises(ValueError, match="2 classes"):
        attack_model_outcomes(attacker, target, ["fine film"], [2], progress=False)
    with pytest.raises(ValueError, match="not a class index"):
        attack_model_outcomes(attacker, target, ["fine film"], [0.5], progress=False)
    with pytest.raises(ValueError, match="vocabulary"):
        attack_model_outcomes(
            attacker, target, ["fine film"], [1], progress=False, settings=AttackSettings(max_candidates=10_000)
        )
    with pytest.raises(ValueError, match="top_k_words"):
        AttackSettings(top_k_words=0)
    with pytest.raises(ValueError, match="max_percent"):
        AttackSettings(max_percent=40)
    assert target.forward_calls == 0


def test_sample_items_is_seeded_and_sorted():
    assert DEFAULT_SAMPLE_SIZE == 200
    sample = sample_items(1000, seed=3)
    assert len(sample) == 200 == len(set(sample)) and sample == sorted(sample)
    assert sample == sample_items(1000, 200, seed=3) != sample_items(1000, 200, seed=4)
    assert sample_items(50) == list(range(50))
    assert sample_items(10, None) == list(range(10))
    with pytest.raises(ValueError, match="sample_size"):
        sample_items(100, 0)


# --------------------------------------------------------------------------------------
# Figures and comparison, checked by hand


def _outcomes(results, queries):
    return [
        {
            "label": 1,
            "result": r,
            "original_correct": r != "skipped",
            "queries": q,
            "original_text": f"text {i}",
            "perturbed_text": None if r == "skipped" else f"adv {i}",
            "words_changed": 1 if r == "successful" else 0,
        }
        for i, (r, q) in enumerate(zip(results, queries))
    ]


S, F, K = "successful", "failed", "skipped"
REF = _outcomes([S, S, S, F, F, F, F, F, K, K], [10, 20, 30, 40, 50, 60, 70, 80, 1, 1])
CAND = _outcomes([S, F, K, S, S, S, F, F, S, K], [5, 5, 1, 5, 5, 5, 5, 5, 5, 1])


def test_table_3_figures_by_hand():
    ref = attack_figures(REF)
    assert ref["original_accuracy"] == pytest.approx(0.8)
    assert ref["accuracy_after_attack"] == pytest.approx(0.5)
    assert ref["absolute_change"] == pytest.approx(0.3)
    assert ref["percent_change"] == pytest.approx(37.5)
    assert ref["queries_per_item"] == pytest.approx(45.0)
    assert ref["attack_success_rate"] == pytest.approx(3 / 8)
    assert ref["broken"] == [0, 1, 2]
    cand = attack_figures(CAND)
    assert cand["accuracy_after_attack"] == pytest.approx(0.3)
    assert cand["percent_change"] == pytest.approx(62.5)
    assert attack_figures(_outcomes([K, K], [1, 1]))["percent_change"] is None


def test_compare_adversarial_by_hand():
    transfer = {0: 0, 1: 1, 2: 0}  # item 0 fools the candidate, item 1 does not; 2 not eligible
    result = compare_adversarial(
        REF,
        CAND,
        reference="big",
        candidate="small",
        threshold=0.1,
        drop_tolerance=30,
        transfer=transfer,
        n_bootstrap=200,
    )
    # both attacked: 0, 1, 3, 4, 5, 6, 7; broken: ref {0, 1}, cand {0, 3, 4, 5}
    assert result.characteristic == "adversarial_vulnerability"
    assert result.figure_name == "broken-set Jaccard"
    assert result.n == 7
    assert result.figure == pytest.approx(1 / 5)
    # hypergeometric: P(I=0,1,2) = 5/35, 20/35, 10/35 -> E[J] = 20/35 * 1/5 + 10/35 * 2/4
    assert result.chance == pytest.approx(9 / 35)
    assert result.corrected == pytest.approx(-1 / 13)
    assert 0.0 <= result.ci_low <= result.ci_high <= 1.0
    assert result.details["jaccard_all_items"] == pytest.approx(1 / 7)
    assert result.details["drop_difference"] == pytest.approx(25.0)
    assert result.details["transfer_rate"] == pytest.approx(0.5)
    assert result.details["transfer_eligible"] == 2
    assert result.details["reference"]["original_accuracy"] == pytest.approx(0.8)
    assert result.details["candidate"]["accuracy_after_attack"] == pytest.approx(0.3)
    assert result.details["queries_per_item"] == {"reference": 45.0, "candidate": 5.0}
    assert result.conditions == [
        {"name": "% accuracy drop beyond the reference's", "value": pytest.approx(25.0), "limit": 30.0, "passed": True}
    ]
    assert result.passed and result.verdict == "PASS"
    assert [e["index"] for e in result.evidence] == [1, 2, 3, 4, 5, 8, 0]
    assert result.evidence[0]["broken_by"] == "reference"
    assert result.evidence[0]["reference_perturbed"] == "adv 1"
    assert result.evidence[0]["candidate_perturbed"] is None
    assert result.evidence[-1]["broken_by"] == "both"
    assert result.evidence[-1]["transfers_to_candidate"] is True
    json.loads(result.to_json())


def test_drop_tolerance_exceeded_fails_the_comparison():
    result = compare_adversarial(REF, CAND, reference="big", candidate="small", drop_tolerance=10, n_bootstrap=0)
    assert result.conditions[0]["passed"] is False
    assert not result.passed and result.verdict == "FAIL"
    assert "beyond limit 10" in result.summary()
    lenient = compare_adversarial(
        REF, CAND, reference="big", candidate="small", drop_tolerance=10, gating=False, n_bootstrap=0
    )
    assert lenient.verdict == "DIVERGES"
    corrected = compare_adversarial(
        REF, CAND, reference="big", candidate="small", threshold=0.1, threshold_on="corrected", n_bootstrap=0
    )
    assert not corrected.passed  # corrected -1/13 < 0.1 though raw 0.2 >= 0.1


def test_no_item_attacked_against_both_gives_no_figure():
    result = compare_adversarial(
        _outcomes([S, K], [3, 1]),
        _outcomes([K, F], [1, 3]),
        reference="a",
        candidate="b",
        threshold=0.0,
        n_bootstrap=10,
    )
    assert result.n == 0 and math.isnan(result.figure) and not result.passed
    assert "note" in result.details


def test_compare_inputs_are_checked():
    with pytest.raises(ValueError, match="same items"):
        compare_adversarial(REF, CAND[:5], reference="a", candidate="b")
    with pytest.raises(ValueError, match="result"):
        compare_adversarial(REF, [dict(o, result="broken") for o in CAND], reference="a", candidate="b")
    with pytest.raises(ValueError, match="only originally wrong items are skipped"):
        compare_adversarial(REF, [dict(o, original_correct=True) for o in CAND], reference="a", candidate="b")
    with pytest.raises(ValueError, match="transfer_predictions"):
        compare_adversarial(REF, CAND, reference="a", candidate="b", transfer={0: 0})
    with pytest.raises(ValueError, match="threshold_on"):
        compare_adversarial(REF, CAND, reference="a", candidate="b", threshold_on="lower")
