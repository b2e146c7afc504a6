"""Target-model queries during an attack: miniature's TextAttack wrapper vs TextAttack's own.

BERT-Attack spends almost all its time asking the target model to classify lists of
perturbed texts. This replays realistic query batches against the same classifier
(all-MiniLM-L6-v2 with a seeded, randomly initialised classification head; weights do
not matter for speed) through:

* ``miniature``: ``TargetModelWrapper`` (what miniature's attack uses): tokenize without
  padding, length-sorted batches padded to their own longest text, max_length 128;
* ``textattack-128``: TextAttack's ``HuggingFaceModelWrapper`` with the tokenizer's
  ``model_max_length`` set to 128, as a careful user would: it pads every text to 128;
* ``textattack-as-loaded``: the same with the tokenizer as loaded (``model_max_length``
  512 for all-MiniLM-L6-v2), as a user who does not know TextAttack pads to it would.

The query batches mimic ``GreedyWordSwapWIR(wir_method="unk")`` with BERT-Attack's 48
candidates: per source text (10-60 words) one query per word with that word replaced by
[UNK] (the importance ranking), then 48 single-word substitutions at each of the 3 most
important positions, each list cut into chunks of 32 as TextAttack's goal function
does. Goal: >= 2x the queries per second of textattack-128 with identical predictions
(argmax equal); the max logit difference is printed. Times come from one process that
runs the variants interleaved every few batches; peak memory from each variant alone.

    python benchmarks/attack_queries.py --quick
    python benchmarks/attack_queries.py            # 8 source texts (~1,500 queries), 3 rounds
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import _harness as h

VARIANTS = ("miniature", "textattack-128", "textattack-as-loaded")
MODEL = "all-minilm-l6-v2"


def query_batches(
    n_texts: int, *, seed: int, batch_size: int = 32, candidates: int = 48, positions: int = 3
) -> list[list[str]]:
    """Lists of perturbed texts as BERT-Attack's search sends them to the target."""
    rng = random.Random(seed)
    texts = h.real_length_texts(n_texts, seed=seed)
    vocabulary = sorted(
        {
            w.strip(".,").lower()
            for t in h.real_length_texts(300, seed=seed + 7)
            for w in t.split()
            if w.strip(".,").isalpha()
        }
    )
    batches: list[list[str]] = []

    def send(queries: list[str]) -> None:
        batches.extend(queries[i : i + batch_size] for i in range(0, len(queries), batch_size))

    for text in texts:
        words = text.split()
        send([" ".join(words[:i] + ["[UNK]"] + words[i + 1 :]) for i in range(len(words))])
        current = list(words)
        for position in rng.sample(range(len(words)), min(positions, len(words))):
            swaps = rng.sample(vocabulary, min(candidates, len(vocabulary)))
            send([" ".join(current[:position] + [w] + current[position + 1 :]) for w in swaps])
            current[position] = swaps[0]  # the search keeps one and moves on
    return batches


def build(payload: dict) -> dict:
    """The classifier (seeded random head) and one query function per variant."""
    h.quiet_libraries()
    import numpy as np
    import torch

    from miniature.core.attack import make_target_wrapper, prepare_textattack
    from miniature.core.models import load_model

    prepare_textattack()
    from textattack.models.wrappers import HuggingFaceModelWrapper
    from transformers import AutoTokenizer

    torch.manual_seed(0)  # the same random classification head in every process
    wrapper = load_model(MODEL, head="classification", max_length=payload["max_length"], batch_size=32, progress=False)
    targets, lengths = {}, {}
    for name in VARIANTS:
        if name == "miniature":
            targets[name] = make_target_wrapper(wrapper)
            lengths[name] = wrapper.max_length
            continue
        tokenizer = AutoTokenizer.from_pretrained(wrapper.tokenizer.name_or_path)  # as loaded
        if name == "textattack-128":
            tokenizer.model_max_length = payload["max_length"]
        lengths[name] = int(tokenizer.model_max_length)
        targets[name] = HuggingFaceModelWrapper(wrapper.model, tokenizer)

    def caller(target):
        def call(batch: list[str]) -> np.ndarray:
            out = target(batch)
            return out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)

        return call

    return {"calls": {name: caller(t) for name, t in targets.items()}, "lengths": lengths}


def timing_worker(payload: dict) -> None:
    """Every variant in one process on the same query batches, interleaved group by group."""
    import numpy as np

    batches = query_batches(payload["n_texts"], seed=payload["seed"])
    built = build(payload)
    calls = built["calls"]
    variants = payload["variants"]
    for name in variants:
        calls[name](batches[0])  # warm-up
    group = payload["group"]
    groups = [batches[i : i + group] for i in range(0, len(batches), group)]
    outputs: dict[str, list] = {name: [None] * len(groups) for name in variants}

    def run(name: str, index: int) -> None:
        logits = np.concatenate([calls[name](batch) for batch in groups[index]])
        if outputs[name][index] is None:
            outputs[name][index] = logits

    slow = [v for v in variants if v == "textattack-as-loaded"] if payload["slow_once"] else []
    totals, steps = h.interleave_in_process(variants, payload["rounds"], len(groups), run, first_round_only=slow)
    for name in variants:
        np.save(Path(payload["scratch"]) / f"{name}.npy", np.concatenate(outputs[name]))
    h.emit(
        {
            "totals": totals,
            "steps": steps,
            "cpu_steps": h.CPU_STEPS,
            "lengths": built["lengths"],
            "queries": sum(len(b) for b in batches),
            "batches": len(batches),
            "groups": len(groups),
        }
    )


def memory_worker(name: str, payload: dict) -> None:
    """One variant alone: peak RSS over the batches holding the longest texts."""
    batches = query_batches(payload["n_texts"], seed=payload["seed"])
    longest = sorted(batches, key=lambda b: -max(len(t) for t in b))[: payload["memory_batches"]]
    call = build(payload)["calls"][name]
    call(batches[0])
    with h.Measure() as measure:
        for batch in longest:
            call(batch)
    h.emit(measure.as_dict())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    h.common_arguments(parser, rounds=3)
    parser.add_argument("--texts", type=int, default=None, help="source texts attacked (default 8; 2 with --quick)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--group", type=int, default=6, help="batches per interleaving step")
    parser.add_argument(
        "--every-round",
        action="store_true",
        help="run textattack-as-loaded (pads to 512, slow) in every round, not only the first",
    )
    parser.add_argument(
        "--memory-batches", type=int, default=12, help="batches (those with the longest texts) for the peak-RSS runs"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    if args.worker:
        payload = json.loads(args.payload)
        timing_worker(payload) if args.worker == "timing" else memory_worker(args.worker, payload)
        return 0

    rounds = args.rounds or (1 if args.quick else 3)
    n_texts = args.texts or (2 if args.quick else 8)
    variants = [v for v in args.variants.split(",") if v]
    if variants[0] != "miniature" or any(v not in VARIANTS for v in variants):
        parser.error(f"--variants: miniature first, then any of {', '.join(VARIANTS[1:])}")
    batches = query_batches(n_texts, seed=args.seed)
    queries = sum(len(b) for b in batches)
    threads = h.apply_threads(args)
    info = h.machine_info()
    h.print_machine(info)
    print(threads)
    scratch = h.scratch_dir("miniature-bench-attack-")
    payload = dict(
        n_texts=n_texts,
        seed=args.seed,
        max_length=args.max_length,
        group=args.group,
        rounds=rounds,
        slow_once=not args.every_round,
        variants=variants,
        memory_batches=args.memory_batches,
        scratch=str(scratch),
    )
    print(
        f"\n{queries} attack queries in {len(batches)} batches ({queries / n_texts:.0f} per source "
        f"text, {n_texts} texts of 10-60 words) against {MODEL} + classification head\n\n"
        f"timing: one process, {rounds} round(s), variants interleaved every {args.group} batches"
        f"{'' if args.every_round else ' (textattack-as-loaded in round 1 only)'}"
    )
    timing = h.run_worker(__file__, ["--worker", "timing", "--payload", json.dumps(payload)])
    print(timing["log"])
    print(f"memory: each variant alone in a fresh process, the {args.memory_batches} batches with the longest texts")
    memory = {}
    for name in variants:
        memory[name] = h.run_worker(__file__, ["--worker", name, "--payload", json.dumps(payload)])
        print(
            f"  {name:<22} peak RSS {h.mib(memory[name]['peak_rss'])} "
            f"(+{h.mib(memory[name]['peak_extra'])} over its baseline)",
            flush=True,
        )

    import numpy as np

    logits = {name: np.load(scratch / f"{name}.npy") for name in variants}
    mini = logits["miniature"]
    totals, steps = timing["totals"], timing["steps"]
    rows = []
    for name in variants:
        # per round: its total over miniature's total, the steps of both interleaved
        paired = [b / a for a, b in zip(totals["miniature"], totals[name])]
        cpu_of = {v: sum(timing["cpu_steps"][v][: len(steps[name])]) for v in ("miniature", name)}
        cpu = [cpu_of[name] / cpu_of["miniature"]]
        seconds = h.median(totals[name])
        agree = float(np.mean(logits[name].argmax(1) == mini.argmax(1)))
        rows.append(
            [
                name,
                timing["lengths"][name],
                f"{seconds:.2f} s",
                f"{queries / seconds:.1f}",
                "1.00x" if name == "miniature" else h.fmt_ratio(paired),
                "1.00x" if name == "miniature" else f"{h.median(cpu):.2f}x",
                h.mib(memory[name]["peak_extra"]),
                h.mib(memory[name]["peak_rss"]),
                "-" if name == "miniature" else f"{agree:.2%}",
                "-" if name == "miniature" else f"{np.abs(logits[name] - mini).max():.1e}",
            ]
        )
    print(
        "\n"
        + h.table(
            [
                "variant",
                "model_max_length",
                "time (median round)",
                "queries/s",
                "its time / miniature's (median round)",
                "CPU-time ratio",
                "peak RSS over baseline",
                "peak RSS",
                "same argmax",
                "max |logit diff|",
            ],
            rows,
        )
    )
    if "textattack-128" in variants:
        speed = h.median([b / a for a, b in zip(totals["miniature"], totals["textattack-128"])])
        equal = bool((logits["textattack-128"].argmax(1) == mini.argmax(1)).all())
        print(
            f"\ngoal >= 2x the queries/s of textattack-128: {speed:.3f}x -> "
            f"{'MET' if speed >= 2 else 'MISSED'}; identical predictions: {'yes' if equal else 'NO'}"
        )
    if args.quick:
        print("note: --quick is a smoke test at a small size; the goals are judged on a full run")
    h.write_json(args.json, {"machine": info, "settings": payload, "timing": timing, "memory": memory})
    return 0


if __name__ == "__main__":
    sys.exit(main())
