"""The same attack-heavy gate in-process (1 and 2 torch threads) and on a local Ray cluster
of 2 single-threaded workers, side by side: wall time, the ratio, and whether every figure
is identical.

The gate: the tiny test models (miniature.testing; reference "small", candidate "distil",
attack model "attacker"), the built-in data cut to ``--data-limit`` items per role, and
BERT-Attack on ``--attack-size`` test items per model, whose similarity constraint runs the
real all-MiniLM-L6-v2, so the attack dominates. Each variant runs cold (a fresh cache
folder) in a fresh process, and its time includes everything: loading, Ray's start-up (the
executor starts the local cluster itself), encoding, attacking and comparing. Rounds are
interleaved, rotating the order, so a neighbour's load falls on every variant alike.

``--per-item`` instead measures the per-item costs the README's on-paper scaling table is
computed from: encoding and attacking with the real 6-layer all-MiniLM-L6-v2 (as the
classifier under attack, its masked-LM twin proposing the words), one thread.

    python benchmarks/ray_executor.py --quick          # 60 items, attack on 40
    python benchmarks/ray_executor.py                  # 200 items, attack on 160, 2 rounds
    python benchmarks/ray_executor.py --per-item       # per-item costs on all-MiniLM-L6-v2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import _harness as h

VARIANTS = ("inprocess-1", "inprocess-2", "ray-2")
CHARACTERISTICS = (
    "prediction_errors",
    "data_representation",
    "data_distribution",
    "adversarial_vulnerability",
    "representation_similarity",
)
REPO = Path(__file__).resolve().parents[1]


def setup_worker(payload: dict) -> None:
    h.quiet_libraries()
    from miniature.testing import make_tiny_models

    models = make_tiny_models(Path(payload["root"]))
    h.emit({"paths": {name: str(models[name]) for name in ("small", "distil", "attacker")}})


def timing_worker(variant: str, payload: dict) -> None:
    """One whole gate, cold: every characteristic of the one pair; its figures and time."""
    h.quiet_libraries()
    import torch

    from miniature.core.gate import Gate
    from miniature.core.settings import make_settings
    from miniature.tools.testing import gate_figures

    threads = int(variant.rsplit("-", 1)[1]) if variant.startswith("inprocess") else 1
    torch.set_num_threads(threads)
    paths = payload["paths"]
    ray = variant.startswith("ray")
    settings = make_settings(
        reference=paths["small"],
        candidate=[paths["distil"]],
        attack_model=paths["attacker"],
        cache_dir=payload["cache"],
        data_limit=payload["data_limit"],
        attack_size=payload["attack_size"],
        bootstrap=200,
        seed=0,
        **({"executor": "ray", "ray_workers": 2} if ray else {}),
    )
    start = time.perf_counter()
    gate = Gate(settings)
    figures = gate_figures(gate, CHARACTERISTICS)
    seconds = time.perf_counter() - start
    outcomes = {
        name: [{k: v for k, v in o.items() if k != "seconds"} for o in gate.attack_outcomes(name)]
        for name in gate.names
    }
    h.emit(
        {
            "seconds": seconds,
            "peak_extra": 0,
            "figures": figures,
            "execution": gate.execution,
            "attacked": {n: sum(o["result"] != "skipped" for o in rows) for n, rows in outcomes.items()},
            "outcomes": outcomes,
        }
    )


def per_item_worker(payload: dict) -> None:
    """Seconds per item to encode and to attack with the real all-MiniLM-L6-v2, 1 thread."""
    h.quiet_libraries()
    import torch
    import transformers

    from miniature.core.data import builtin_sentiment_data
    from miniature.core.attack import AttackSettings, attack_model_outcomes
    from miniature.core.models import load_model, packaged_model_dir

    torch.set_num_threads(1)
    source = packaged_model_dir("all-minilm-l6-v2")
    root = Path(payload["root"])
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source))
    torch.manual_seed(0)  # the heads are random: speed does not depend on them
    classifier = transformers.BertForSequenceClassification.from_pretrained(str(source), num_labels=2)
    classifier.save_pretrained(str(root / "minilm-classifier"), safe_serialization=True)
    tokenizer.save_pretrained(str(root / "minilm-classifier"))
    attacker = transformers.BertForMaskedLM.from_pretrained(str(source))
    attacker.save_pretrained(str(root / "minilm-mlm"), safe_serialization=True)
    tokenizer.save_pretrained(str(root / "minilm-mlm"))
    data = builtin_sentiment_data()
    texts = list(data.test.texts) + list(data.train.texts)
    encoder = load_model(str(source), head="encoder", progress=False, max_length=128, batch_size=32)
    n_encode = min(len(texts), payload["encode_items"])
    encoder.encode(texts[:32])  # warm-up
    start = time.perf_counter()
    encoder.encode(texts[:n_encode])
    encode = (time.perf_counter() - start) / n_encode
    target = load_model(str(root / "minilm-classifier"), head="classification", progress=False)
    mlm = load_model(str(root / "minilm-mlm"), head="masked-lm", progress=False)
    n_attack = payload["attack_items"]
    predicted = target.logits(list(data.test.texts[:n_attack])).argmax(axis=1)
    labels = [int(p) for p in predicted]  # every item correct: every item is attacked
    start = time.perf_counter()
    outcomes = attack_model_outcomes(
        mlm, target, list(data.test.texts[:n_attack]), labels, settings=AttackSettings(), progress=False
    )
    attack = (time.perf_counter() - start) / n_attack
    h.emit(
        {
            "seconds": 0.0,
            "peak_extra": 0,
            "encode_s_per_item": encode,
            "attack_s_per_item": attack,
            "encode_items": n_encode,
            "attack_items": n_attack,
            "queries_per_item": sum(o["queries"] for o in outcomes) / n_attack,
            "results": {r: sum(o["result"] == r for o in outcomes) for r in {o["result"] for o in outcomes}},
        }
    )


#: the paper's six models (Table 1): layers and width; compute per token ~ layers x width^2
PAPER_MODELS = {
    "BERT-large": (24, 1024),
    "BERT-base": (12, 768),
    "DistilBERT": (6, 768),
    "BERT-medium": (8, 512),
    "BERT-mini": (4, 256),
    "Tiny-BERT": (2, 128),
}
MINILM = (6, 384)  # all-MiniLM-L6-v2, where the per-item costs are measured
#: SQuAD 2.0 dev questions; every role cut to as many (--data-limit), the test role encoded
#: before and after fine-tuning: 5 encodings of 11,873 items per model
SQUAD_DEV = 11_873
ENCODINGS_PER_MODEL = 5
ATTACKED = 1_000
#: assumptions, not measurements (stated in the README)
TOKEN_FACTOR = 2.0  # a SQuAD question + context is about twice the measured reviews' tokens
GPU_ENCODE_SPEEDUP = 200  # one GPU vs one CPU core, batched encoding
GPU_ATTACK_SPEEDUP = 20  # one GPU vs one CPU core, the attack (small batches, Python search)
TARGET_SHARE, ATTACKER_SHARE = 0.57, 0.39  # benchmarks/gate.py: the attack's time in target / attack model
ATTACKER = "BERT-base"  # the paper's attack model
STARTUP_S = 60.0  # per worker: Ray, imports and loading the six models (assumed)


def scale(model: tuple[int, int]) -> float:
    """Compute per token relative to all-MiniLM-L6-v2 (layers x width^2)."""
    return model[0] * model[1] ** 2 / (MINILM[0] * MINILM[1] ** 2)


def paper_scale(encode_s: float, attack_s: float, gpus: int, startup_s: float = STARTUP_S) -> dict[str, float]:
    """Expected hours of the paper-scale gate on ``gpus`` GPUs, from per-item CPU costs: the
    jobs as the executor plans them (one per model and encoding; 2 attack shards per GPU,
    each attacking every model), longest first onto the least-loaded GPU."""
    attacker = scale(PAPER_MODELS[ATTACKER])
    jobs = [
        SQUAD_DEV * encode_s * TOKEN_FACTOR * scale(m) / GPU_ENCODE_SPEEDUP
        for m in PAPER_MODELS.values()
        for _ in range(ENCODINGS_PER_MODEL)
    ]
    shards = 2 * gpus
    per_item = (
        sum(
            attack_s * (TARGET_SHARE * scale(m) + ATTACKER_SHARE * attacker + (1 - TARGET_SHARE - ATTACKER_SHARE))
            for m in PAPER_MODELS.values()
        )
        / GPU_ATTACK_SPEEDUP
    )
    sizes = [ATTACKED // shards + (1 if i < ATTACKED % shards else 0) for i in range(shards)]
    jobs += [size * per_item for size in sizes if size]
    load = [startup_s] * gpus
    for job in sorted(jobs, reverse=True):
        load[load.index(min(load))] += job
    total = sum(jobs)
    attack = ATTACKED * per_item
    return {"hours": max(load) / 3600, "encode_h": (total - attack) / 3600, "attack_h": attack / 3600}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    h.common_arguments(parser, rounds=2)
    parser.add_argument("--data-limit", type=int, default=None, help="items per data role (default 200; 60 --quick)")
    parser.add_argument(
        "--attack-size", type=int, default=None, help="attacked items per model (default 160; 40 --quick)"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--per-item", action="store_true", help="measure per-item costs on all-MiniLM-L6-v2")
    args = parser.parse_args(argv)
    if args.worker:
        payload = json.loads(args.payload)
        if args.worker == "setup":
            setup_worker(payload)
        elif args.worker == "per-item":
            per_item_worker(payload)
        else:
            timing_worker(args.worker, payload)
        return 0

    h.WORKER_ENV["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    info = h.machine_info()
    h.print_machine(info)
    scratch = h.scratch_dir("miniature-bench-ray-")
    if args.per_item:
        result = h.run_worker(
            __file__,
            [
                "--worker",
                "per-item",
                "--payload",
                json.dumps(
                    {
                        "root": str(scratch),
                        "encode_items": 64 if args.quick else 512,
                        "attack_items": 4 if args.quick else 20,
                    }
                ),
            ],
        )
        print(
            h.table(
                ["model", "encode s/item", "attack s/item", "queries/item", "items (encode/attack)"],
                [
                    [
                        "all-MiniLM-L6-v2, 1 thread",
                        f"{result['encode_s_per_item']:.4f}",
                        f"{result['attack_s_per_item']:.2f}",
                        f"{result['queries_per_item']:.0f}",
                        f"{result['encode_items']}/{result['attack_items']}",
                    ]
                ],
            )
        )
        print(f"attack results: {result['results']}")
        costs = (result["encode_s_per_item"], result["attack_s_per_item"])
        rows, one, bare = [], paper_scale(*costs, 1), paper_scale(*costs, 1, 0.0)
        for gpus in (1, 4, 16):
            figures, work = paper_scale(*costs, gpus), paper_scale(*costs, gpus, 0.0)
            rows.append(
                [
                    gpus,
                    f"{figures['hours'] * 60:.1f} min",
                    f"{one['hours'] / figures['hours']:.1f}x",
                    f"{bare['hours'] / work['hours']:.1f}x",
                ]
            )
        print(
            f"paper-scale gate (six BERT models, SQuAD 2.0 dev {SQUAD_DEV:,} items x {ENCODINGS_PER_MODEL} "
            f"encodings, {ATTACKED:,} attacked items each): work on one GPU: encoding "
            f"{one['encode_h']:.2f} h, attack {one['attack_h']:.2f} h (GPU {GPU_ENCODE_SPEEDUP}x / "
            f"{GPU_ATTACK_SPEEDUP}x one core, tokens x{TOKEN_FACTOR}, {STARTUP_S:.0f} s start-up per worker: assumed)"
        )
        print(h.table(["GPUs", "expected wall time", "speed-up", "speed-up of the work alone (no start-up)"], rows))
        h.write_json(args.json, {"machine": info, "per_item": {k: v for k, v in result.items() if k != "log"}})
        return 0

    data_limit = args.data_limit or (60 if args.quick else 200)
    attack_size = args.attack_size or (40 if args.quick else 160)
    rounds = args.rounds or (1 if args.quick else 2)
    variants = [v for v in args.variants.split(",") if v]
    setup = h.run_worker(__file__, ["--worker", "setup", "--payload", json.dumps({"root": str(scratch / "models")})])
    print(
        f"gate: tiny models small vs distil, {data_limit} items per data role, attack on {attack_size} "
        f"items per model; every variant cold, {rounds} interleaved round(s)"
    )

    def run(variant: str, index: int) -> dict[str, Any]:
        cache = scratch / f"cache-{variant}-{index}"
        env = {"OMP_NUM_THREADS": variant.rsplit("-", 1)[1] if variant.startswith("inprocess") else "1"}
        return h.run_worker(
            __file__,
            [
                "--worker",
                variant,
                "--payload",
                json.dumps(
                    {"paths": setup["paths"], "cache": str(cache), "data_limit": data_limit, "attack_size": attack_size}
                ),
            ],
            env=env,
        )

    from miniature.tools.testing import figures_close

    results = h.interleave(variants, rounds, run)
    first = results[variants[0]][0]
    identical = all(
        figures_close(r["figures"], first["figures"]) and r["outcomes"] == first["outcomes"]
        for rows in results.values()
        for r in rows
    )
    rows = []
    for variant in variants:
        times = [r["seconds"] for r in results[variant]]
        execution = results[variant][0]["execution"]
        rows.append(
            [
                variant,
                f"{h.median(times):.1f} s",
                " / ".join(f"{t:.1f}" for t in times),
                f"{execution['executor']}, {execution['workers']} worker(s)",
            ]
        )
    print(h.table(["variant", "median", "rounds (s)", "executor"], rows))
    print(f"attacked items per model: {first['attacked']}")
    print(f"figures and per-item attack outcomes identical across variants: {identical}")
    ratios: list[float] = []
    if "ray-2" in results and any(v.startswith("inprocess") for v in variants):
        for index in range(rounds):
            best = min(results[v][index]["seconds"] for v in variants if v.startswith("inprocess"))
            ratios.append(best / results["ray-2"][index]["seconds"])
        print(
            f"speed-up of ray-2 over the best in-process thread count, per round: {h.fmt_ratio(ratios)} (goal: >= 1.3x)"
        )
    h.write_json(
        args.json,
        {
            "machine": info,
            "data_limit": data_limit,
            "attack_size": attack_size,
            "identical": identical,
            "ratios": ratios,
            "results": {
                v: [{k: x for k, x in r.items() if k not in ("log", "outcomes")} for r in rows_]
                for v, rows_ in results.items()
            },
        },
    )
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
