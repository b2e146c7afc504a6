"""BERT-Attack's greedy search replayed in two orders: what the similarity constraint's
encoder and the target must compute for the same adversarial texts, verdicts and query counts.

TextAttack filters each step's candidates through every constraint (the sentence encoder
last), then asks the target about the ones that pass; its query count is the number that
pass. The *lazy* order asks the target first about every candidate the cheap constraints
keep, sorts them by score as the search does and runs the encoder only in that order until
the step's decision is fixed (the first passing candidate; on success, every succeeded one,
of which the search keeps the most similar).

The attack runs through TextAttack itself (``engine="textattack"``), once per target, with
the similarity constraint wrapped so that each step records, for every candidate it sees, its
text, TextAttack's own similarity score and decision, and the target's score and goal status
(the target is asked about every candidate, as the lazy order would). The search is then
replayed from those records in TextAttack's order and in the lazy order; both replays must
give TextAttack's adversarial text and verdict on every item. Reported per model set: the
encodings and target texts each order needs, the query count TextAttack reports (it needs
the decision on every candidate, so only the eager order knows it), and the model time each
order would take at the per-text costs measured in the same run.

    python benchmarks/attack_order.py --quick --threads 1
    python benchmarks/attack_order.py --threads 1        # 200 tiny items x 4 targets, 40 BERT-size x 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import _harness as h

import attack_batching

#: A replayed candidate: text, passes the similarity constraint, similarity, target score, succeeded.
Row = tuple[str, bool, float, float, bool]


def replay(steps: list[list[Row]], score: float, *, lazy: bool) -> tuple[str | None, bool, int, int]:
    """(adversarial text or None, succeeded, encodings, target texts) of the greedy search
    (``GreedyWordSwapWIR.perform_search``) over the recorded steps, from the original's score."""
    encodings = target_texts = 0
    chosen: Row | None = None
    for rows in steps:
        if not rows:
            continue
        order = sorted(sorted(rows, key=lambda r: r[0]), key=lambda r: -r[3])  # by text, then by score
        if lazy:
            target_texts += len(rows)
            seen = next((i + 1 for i, r in enumerate(order) if r[1]), len(order))
            first = order[seen - 1] if order[seen - 1][1] else None
        else:
            encodings += len(rows)
            passing = [r for r in order if r[1]]
            target_texts += len(passing)
            first = passing[0] if passing else None
            seen = 0
        if first is None or first[3] <= score:
            encodings += seen
            continue
        score, chosen = first[3], first
        if not first[4]:
            encodings += seen
            continue
        best, top = first, first[2]
        rest = order[seen:] if lazy else [r for r in order if r[1]][1:]
        for r in rest:  # the succeeded candidates, most similar first (first of equals)
            seen += 1
            if not r[1]:
                continue
            if not r[4]:
                break
            if r[2] > top:
                top, best = r[2], r
        encodings += seen if lazy else 0
        return best[0], True, encodings, target_texts
    return (chosen[0] if chosen else None), False, encodings, target_texts


def order_worker(payload: dict) -> None:
    h.quiet_libraries()
    import torch

    if payload["threads"]:
        torch.set_num_threads(payload["threads"])
    from miniature.core.attack import AttackSettings
    from miniature.core.attack.recipe import SentenceEncoderSimilarity, TargetModelWrapper, build_attack
    from miniature.core.attack.runner import _attack_one
    from miniature.core.attack.textattack_offline import english_stopwords
    from miniature.core.models import load_model
    from textattack.shared import AttackedText  # after the recipe: it makes TextAttack import offline

    settings = AttackSettings(engine="textattack")
    attacker = load_model(payload["paths"]["attacker"], head="masked-lm", progress=False)
    target = TargetModelWrapper(load_model(payload["paths"][payload["target"]], head="classification", progress=False))
    attack = build_attack(attacker, target, settings, english_stopwords())
    similarity = next(c for c in attack.constraints if isinstance(c, SentenceEncoderSimilarity))
    goal = attack.goal_function
    steps: list[list[Row]] = []
    clock = {"encoder": 0.0, "encoded": 0, "target": 0.0, "target_texts": 0}
    check, encode, ask = similarity._check_constraint_many, similarity.encode, goal._call_model_uncached

    def timed_encode(sentences):  # the encoder's own time (memo hits cost nothing)
        start = time.perf_counter()
        before = len(similarity._memo)
        vectors = encode(sentences)
        clock["encoder"] += time.perf_counter() - start
        clock["encoded"] += len(similarity._memo) - before
        return vectors

    def timed_target(texts):  # the texts TextAttack's cache does not hold
        start = time.perf_counter()
        outputs = ask(texts)
        clock["target"] += time.perf_counter() - start
        clock["target_texts"] += len(texts)
        return outputs

    def recording_check(texts, reference):
        passed = check(texts, reference)
        kept = {id(t) for t in passed}
        texts = list(texts)
        outputs = goal._call_model(texts)  # TextAttack's cache: the kept ones are asked next anyway
        steps.append(
            [
                (
                    t.text,
                    id(t) in kept,
                    t.attack_attrs["similarity_score"],
                    float(goal._get_score(o, t)),
                    bool(goal._is_goal_complete(o, t)),
                )
                for t, o in zip(texts, outputs)
            ]
        )
        return passed

    similarity.encode, similarity._check_constraint_many = timed_encode, recording_check
    goal._call_model_uncached = timed_target
    totals = dict.fromkeys(
        (
            "attacked",
            "queries",
            "eager_same",
            "lazy_same",
            "eager_enc",
            "lazy_enc",
            "eager_target",
            "lazy_target",
            "repeats",
        ),
        0,
    )
    for text, label in zip(payload["texts"], payload["labels"]):
        steps.clear()
        initial, _ = goal.init_attack_example(AttackedText(text), int(label))
        outcome = _attack_one(attack, text, label, settings)
        if outcome["result"] == "skipped":
            continue
        totals["attacked"] += 1
        totals["queries"] += outcome["queries"]
        texts_seen = [r[0] for rows in steps for r in rows]  # an earlier step's candidate again?
        totals["repeats"] += len(texts_seen) - len(set(texts_seen))
        for name, lazy in (("eager", False), ("lazy", True)):
            found, succeeded, encodings, asked = replay(steps, initial.score, lazy=lazy)
            same = succeeded == (outcome["result"] == "successful") and (found or text) == outcome["perturbed_text"]
            totals[f"{name}_same"] += same
            totals[f"{name}_enc"] += encodings
            totals[f"{name}_target"] += asked
    h.emit({**totals, **clock})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    h.common_arguments(parser, rounds=None)
    parser.add_argument("--models", default="tiny,bert", help="tiny, bert or both (default)")
    parser.add_argument(
        "--items", type=int, default=None, help="items (default 200 tiny / 40 bert; 20 / 6 with --quick)"
    )
    args = parser.parse_args(argv)
    if args.worker:
        order_worker(json.loads(args.payload))
        return 0
    threads_line = h.apply_threads(args)
    info = h.machine_info()
    h.print_machine(info)
    print(threads_line)
    from miniature.core.builtin_data import sentiment_reviews

    report: dict = {"machine": info, "sets": {}}
    rows = []
    for models in [m for m in args.models.split(",") if m]:
        items = (
            args.items
            or {("tiny", False): 200, ("tiny", True): 20, ("bert", False): 40, ("bert", True): 6}[(models, args.quick)]
        )
        reviews = sentiment_reviews(items, seed=11, mixed=0.0)
        scratch = h.scratch_dir(f"miniature-bench-order-{models}-")
        setup = h.run_worker(
            attack_batching.__file__,
            ["--worker", "setup", "--payload", json.dumps({"root": str(scratch), "models": models})],
        )
        targets = setup["targets"] if models == "tiny" else [setup["targets"][0], setup["targets"][-1]]
        if args.quick:
            targets = targets[:1]
        sums: dict = {}
        for name in targets:
            payload = dict(
                paths=setup["paths"],
                target=name,
                threads=args.threads,
                texts=[r.text for r in reviews],
                labels=[r.label for r in reviews],
            )
            result = h.run_worker(__file__, ["--worker", "order", "--payload", json.dumps(payload)])
            report["sets"].setdefault(models, {})[name] = result
            for key, value in result.items():
                if isinstance(value, (int, float)):
                    sums[key] = sums.get(key, 0) + value
        per_encoding = sums["encoder"] / max(sums["encoded"], 1)
        per_target = sums["target"] / max(sums["target_texts"], 1)
        eager = sums["eager_enc"] * per_encoding + sums["eager_target"] * per_target
        lazy = sums["lazy_enc"] * per_encoding + sums["lazy_target"] * per_target
        rows.append(
            [
                f"{models}, {items} items x {len(targets)}",
                sums["attacked"],
                f"{sums['eager_same']} / {sums['lazy_same']}",
                sums["queries"],
                sums["eager_enc"],
                f"{sums['lazy_enc']} ({sums['lazy_enc'] / sums['eager_enc']:.2f}x)",
                sums["eager_target"],
                f"{sums['lazy_target']} ({sums['lazy_target'] / sums['eager_target']:.2f}x)",
                f"{per_encoding * 1e3:.2f} / {per_target * 1e3:.2f} ms",
                f"{eager:.1f} s",
                f"{lazy:.1f} s ({lazy / eager:.2f}x)",
                sums["repeats"],
            ]
        )
    print(
        "\n"
        + h.table(
            [
                "models",
                "attacked",
                "TextAttack's text + verdict: eager / lazy replay",
                "TextAttack queries",
                "encodings eager",
                "encodings lazy",
                "target texts eager",
                "target texts lazy",
                "per encoding / target text",
                "model time eager",
                "model time lazy",
                "candidates repeated across steps",
            ],
            rows,
        )
    )
    print(
        "the query count needs the similarity decision on every candidate the cheap constraints keep:"
        " only the eager order has it"
    )
    if args.quick:
        print("note: --quick is a smoke test at a small size")
    h.write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
