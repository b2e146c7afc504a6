"""BERT-Attack gate-wide: TextAttack one item at a time vs the batched engine: the same outcomes, faster.

Attacks the same items with a reference and three candidates through today's
sequential path (``AttackSettings(engine="textattack")``: TextAttack, one item and one
target at a time) and through the batched engine (``engine="batched"``: the same search
on many items in lockstep, their model calls batched across items, each target's
predictions memoised, the attack model's masked-LM candidates and sentence vectors
computed once per distinct text for all four targets), each in a fresh process with an
empty cache (a first gate run), and compares every item's outcome (result, adversarial
text, prediction, words changed, query count): the count that differs must be 0. Beside
TextAttack's query count the table shows the target texts each path actually ran (memo and
cache hits are not run) and the texts the similarity constraint's encoder ran.

Model sets (``--models``):

* ``tiny``: a 2-layer, 32-wide classifier trained for a few seconds on the synthetic
  reviews, three magnitude-pruned copies (20/40/60 %), a tiny masked LM (600-token
  vocabulary) as the attack model (``miniature.tools.testing_attack``);
* ``bert``: a BERT-base-shaped classifier (12 layers, 768 wide, random weights, the
  bert-base-uncased vocabulary) and three candidates made by dropping layers (keeping
  9, 6 and 3), attacked with all-MiniLM-L6-v2's encoder under a seeded masked-LM head
  (30,522-token vocabulary): BERT-base-sized work, so realistic ratios.

Variants: ``seq-1``/``bat-1`` attack the reference alone (batching alone, no sharing);
``seq-4``/``bat-4`` the reference and three candidates (the gate). Goals: gate-wide
time bat-4 <= 0.5x seq-4; single-target items/s bat-1 >= 1.5x seq-1; peak RSS bat-4
< 2x seq-4; 0 differing outcomes.

    python benchmarks/attack_batching.py --quick --threads 1
    python benchmarks/attack_batching.py --threads 1        # 200 tiny items, 40 BERT-size
    python benchmarks/attack_batching.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _harness as h

VARIANTS = ("seq-1", "bat-1", "seq-4", "bat-4")


def setup_worker(payload: dict) -> None:
    h.quiet_libraries()
    root = Path(payload["root"])
    if payload["models"] == "tiny":
        from miniature.tools.testing_attack import build

        paths = build(root)
        names = ["reference", "pruned-20", "pruned-40", "pruned-60"]
    else:
        import torch
        import transformers

        from miniature.core.models import packaged_model_dir

        source = packaged_model_dir("all-minilm-l6-v2")
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(source))
        torch.manual_seed(0)
        attacker = transformers.BertForMaskedLM.from_pretrained(str(source))  # head: seeded
        paths = {"attacker": root / "attacker"}
        attacker.save_pretrained(str(paths["attacker"]), safe_serialization=True)
        tokenizer.save_pretrained(str(paths["attacker"]))
        config = transformers.BertConfig(num_hidden_layers=12, num_labels=2, vocab_size=tokenizer.vocab_size)
        torch.manual_seed(12)
        reference = transformers.BertForSequenceClassification(config).eval()
        names = ["bert-base-random", "keep-9", "keep-6", "keep-3"]
        for name, keep in zip(names, (12, 9, 6, 3)):
            if keep < 12:
                model = transformers.BertForSequenceClassification(
                    transformers.BertConfig(num_hidden_layers=keep, num_labels=2, vocab_size=tokenizer.vocab_size)
                )
                state = reference.state_dict()
                model.load_state_dict(
                    {
                        k: v
                        for k, v in state.items()
                        if not k.startswith("bert.encoder.layer.") or int(k.split(".")[3]) < keep
                    },
                    strict=True,
                )
            else:
                model = reference
            paths[name] = root / name
            model.save_pretrained(str(paths[name]), safe_serialization=True)
            tokenizer.save_pretrained(str(paths[name]))
    h.emit({"paths": {k: str(v) for k, v in paths.items()}, "targets": names})


def timing_worker(variant: str, payload: dict) -> None:
    h.quiet_libraries()
    import torch

    import miniature.core.attack.engine  # noqa: F401 - imports TextAttack
    from miniature.core.attack import AttackSettings, attack_model_outcomes
    from miniature.core.models import load_model

    if payload["threads"]:
        torch.set_num_threads(payload["threads"])
    paths, targets = payload["paths"], payload["targets"]
    targets = targets[:1] if variant.endswith("-1") else targets
    engine = "textattack" if variant.startswith("seq") else "batched"
    attacker = load_model(paths["attacker"], head="masked-lm", progress=False)
    wrappers = [load_model(paths[name], head="classification", progress=False) for name in targets]
    texts, labels = payload["texts"], payload["labels"]
    settings = AttackSettings(engine=engine)
    outcomes = {}
    with h.Measure() as measure:
        for name, wrapper in zip(targets, wrappers):
            outcomes[name] = attack_model_outcomes(attacker, wrapper, texts, labels, settings=settings, progress=False)
    strip = {name: [{k: v for k, v in o.items() if k != "seconds"} for o in rows] for name, rows in outcomes.items()}
    from miniature.core.attack.recipe import similarity_encoder

    extra = {"encoded_texts": similarity_encoder(settings.similarity_encoder).forward_texts}
    if engine == "batched":
        from miniature.core.attack.engine import shared_outputs

        store = shared_outputs(attacker, settings, None)
        extra.update(mlm_texts=store.mlm_texts, mlm_calls=store.mlm_calls)
    h.emit(
        {
            **measure.as_dict(),
            "outcomes": strip,
            **extra,
            "attacked": {n: sum(o["result"] != "skipped" for o in rows) for n, rows in strip.items()},
            "target_forward_calls": {n: w.forward_calls for n, w in zip(targets, wrappers)},
            "target_texts": {n: w.forward_texts for n, w in zip(targets, wrappers)},
            "queries": {n: sum(o["queries"] for o in rows) for n, rows in strip.items()},
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    h.common_arguments(parser, rounds=1)
    parser.add_argument("--models", default="tiny,bert", help="tiny, bert or both (default)")
    parser.add_argument(
        "--items", type=int, default=None, help="items attacked (default 200 tiny / 40 bert; 20 / 6 with --quick)"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    if args.worker:
        payload = json.loads(args.payload)
        setup_worker(payload) if args.worker == "setup" else timing_worker(args.worker, payload)
        return 0

    threads_line = h.apply_threads(args)
    info = h.machine_info()
    h.print_machine(info)
    print(threads_line)
    rounds = args.rounds or 1
    variants = [v for v in args.variants.split(",") if v]
    from miniature.core.builtin_data import sentiment_reviews

    report = {"machine": info, "sets": {}}
    summary = []
    for models in [m for m in args.models.split(",") if m]:
        items = (
            args.items
            or {("tiny", False): 200, ("tiny", True): 20, ("bert", False): 40, ("bert", True): 6}[(models, args.quick)]
        )
        reviews = sentiment_reviews(items, seed=11, mixed=0.0)
        scratch = h.scratch_dir(f"miniature-bench-attack-{models}-")
        setup = h.run_worker(
            __file__, ["--worker", "setup", "--payload", json.dumps({"root": str(scratch), "models": models})]
        )
        payload = dict(
            paths=setup["paths"],
            targets=setup["targets"],
            threads=args.threads,
            texts=[r.text for r in reviews],
            labels=[r.label for r in reviews],
        )
        print(
            f"\n== {models}: {items} items, targets {', '.join(setup['targets'])}; each variant "
            f"in a fresh process, cold (no cache), {rounds} round(s)"
        )
        results = h.interleave(
            variants,
            rounds,
            lambda name, _: h.run_worker(__file__, ["--worker", name, "--payload", json.dumps(payload)]),
        )
        best = {name: min(rs, key=lambda r: r["seconds"]) for name, rs in results.items()}
        rows = []
        for name in variants:
            r = best[name]
            n_targets = len(r["outcomes"])
            seconds = h.median([x["seconds"] for x in results[name]])
            base = "seq-1" if name.endswith("-1") else "seq-4"
            differ = "-"
            if name.startswith("bat") and base in best:
                ref = best[base]["outcomes"]
                differ = sum(a != b for t in r["outcomes"] for a, b in zip(ref[t], r["outcomes"][t]))
            ratio = (h.median([x["seconds"] for x in results[base]]) / seconds) if base in results else None
            rows.append(
                [
                    name,
                    n_targets,
                    items,
                    f"{seconds:.1f} s",
                    f"{items * n_targets / seconds:.2f}",
                    f"{ratio:.2f}x" if ratio else "-",
                    differ,
                    h.mib(r["peak_rss"]),
                    f"{r['peak_rss'] / best[base]['peak_rss']:.2f}x" if base in best else "-",
                    sum(r["attacked"].values()),
                    sum(r["queries"].values()),
                    sum(r["target_texts"].values()),
                    sum(r["target_forward_calls"].values()),
                    r["encoded_texts"],
                    r.get("mlm_texts", "-"),
                ]
            )
            report["sets"].setdefault(models, {})[name] = {
                "seconds": [x["seconds"] for x in results[name]],
                "peak_rss": r["peak_rss"],
                "differ": differ,
                "attacked": r["attacked"],
                "mlm_texts": r.get("mlm_texts"),
                "encoded_texts": r["encoded_texts"],
                "queries": r["queries"],
                "target_texts": r["target_texts"],
                "target_forward_calls": r["target_forward_calls"],
            }
        print(
            "\n"
            + h.table(
                [
                    "variant",
                    "targets",
                    "items",
                    "attack time",
                    "items/s (x targets)",
                    "speed vs seq",
                    "differing outcomes",
                    "peak RSS",
                    "RSS vs seq",
                    "attacked",
                    "TextAttack queries",
                    "target texts run",
                    "target passes",
                    "texts encoded",
                    "MLM texts run",
                ],
                rows,
            )
        )
        if all(v in best for v in VARIANTS):
            gate = h.median([x["seconds"] for x in results["bat-4"]]) / h.median(
                [x["seconds"] for x in results["seq-4"]]
            )
            single = h.median([x["seconds"] for x in results["seq-1"]]) / h.median(
                [x["seconds"] for x in results["bat-1"]]
            )
            memory = best["bat-4"]["peak_rss"] / best["seq-4"]["peak_rss"]
            differ = sum(row[6] for row in rows if isinstance(row[6], int))
            lines = [
                f"gate-wide time bat-4 / seq-4: {gate:.2f}x (goal <= 0.5x) -> {'MET' if gate <= 0.5 else 'MISSED'}",
                f"single-target items/s bat-1 / seq-1: {single:.2f}x (goal >= 1.5x) -> "
                f"{'MET' if single >= 1.5 else 'MISSED'}",
                f"peak RSS bat-4 / seq-4: {memory:.2f}x (goal < 2x) -> {'MET' if memory < 2 else 'MISSED'}",
                f"differing outcomes: {differ} (goal 0) -> {'MET' if differ == 0 else 'MISSED'}",
            ]
            print("\n".join(lines))
            summary.append((models, lines))
    if args.quick:
        print("note: --quick is a smoke test at a small size; the goals are judged on a full run")
    h.write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
