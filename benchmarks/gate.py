"""The whole gate on a BERT-base-sized pair: wall time, peak RSS and where the time goes.

Reference: a BERT-base-shaped classifier (``BertConfig()`` defaults: 12 layers, 768
wide, 110M parameters); candidate: the same with 6 layers (67M). Weights are random
(speed does not depend on them), saved as safetensors with the bert-base-uncased
vocabulary of all-MiniLM-L6-v2. Data: the built-in generated sentiment reviews and
news sentences, with ``--items`` test items (train the same number, held-out 30%,
challenge 45%, as in the built-in proportions). The attack model is the MiniLM-sized
masked LM (all-MiniLM-L6-v2 with a masked-LM head) and BERT-Attack runs on
``--attack-size`` test items per model.

Runs cold (an empty cache folder, as a first run would) in one fresh process, phase by
phase (load, encode, prediction errors, kNN representation, OOD distribution, attack),
each with its wall time and peak RSS; the phases after "encode" read the outputs it
stored. Prints the attack's queries per item. ``--profile`` adds cProfile's top functions.
``--demo`` also times ``miniature demo`` cold and warm (a fresh MINIATURE_CACHE_DIR) when
that command exists; ``--demo-only`` times just that.

    python benchmarks/gate.py --quick                 # 100 items, attack on 10
    python benchmarks/gate.py                         # 1,000 items, attack on 100
    python benchmarks/gate.py --demo-only             # `miniature demo`, cold then warm
    python benchmarks/gate.py --demo-only --demo-args="--decoder --threads 2"   # the decoder demo
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _harness as h

PHASES = ("load", "encode", "prediction errors", "kNN representation", "OOD distribution", "attack")


def setup_worker(payload: dict) -> None:
    """Save the BERT-base-sized reference and its 6-layer candidate (random weights)."""
    h.quiet_libraries()
    import torch
    import transformers

    from miniature.core.models import packaged_model_dir

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(packaged_model_dir("all-minilm-l6-v2")))
    root = Path(payload["root"])
    paths = {}
    for name, layers in (("bert-base-random", 12), ("bert-6l-random", 6)):
        config = transformers.BertConfig(num_hidden_layers=layers, num_labels=2, vocab_size=tokenizer.vocab_size)
        torch.manual_seed(layers)
        model = transformers.BertForSequenceClassification(config)
        folder = root / name
        model.save_pretrained(str(folder), safe_serialization=True)
        tokenizer.save_pretrained(str(folder))
        paths[name] = str(folder)
        paths[f"{name} parameters"] = sum(p.numel() for p in model.parameters())
        del model
    h.emit({"seconds": 0.0, "peak_extra": 0, "paths": paths})


def task_data(items: int):
    """The built-in data with ``items`` test items (train alike, held-out 30%, challenge 45%)."""
    from miniature.core.data import TaskData, TextData, builtin_sentiment_data

    base = builtin_sentiment_data(seed=0, scale=items / 500)
    holdout, extra, news = round(0.3 * items), round(0.15 * items), round(0.3 * items)

    def cut(data: TextData, n: int) -> TextData:
        return TextData(
            source=data.source, texts=data.texts[:n], labels=data.labels[:n] if data.labels is not None else None
        )

    flags = base.challenge_is_ood or []
    reviews = [t for t, ood in zip(base.challenge.texts, flags) if not ood][:extra]
    newswire = [t for t, ood in zip(base.challenge.texts, flags) if ood][:news]
    challenge = TextData(source="builtin:challenge", texts=reviews + newswire)
    return TaskData(
        train=cut(base.train, items),
        holdout=cut(base.holdout, holdout),
        test=cut(base.test, items),
        challenge=challenge,
        challenge_is_ood=[False] * len(reviews) + [True] * len(newswire),
    )


def time_forward(model, name: str, totals: dict[str, float]) -> None:
    """Add the wall time of every forward pass of ``model`` to ``totals[name]``."""
    starts: list[float] = []

    def before(module, args, kwargs=None):
        starts.append(time.perf_counter())

    def after(module, args, output):
        totals[name] = totals.get(name, 0.0) + time.perf_counter() - starts.pop()

    model.register_forward_pre_hook(before)
    model.register_forward_hook(after)


def gate_worker(payload: dict) -> None:
    h.quiet_libraries()
    import cProfile
    import io
    import pstats

    from miniature.core.gate import Gate
    from miniature.core.settings import make_settings

    import torch

    # all-MiniLM-L6-v2 ships no masked-LM head: loading it as the attack model initialises
    # one at random from torch's global generator; seed it so reruns attack alike.
    torch.manual_seed(0)
    paths = payload["paths"]
    data = task_data(payload["items"])
    settings = make_settings(
        reference=paths["bert-base-random"],
        candidate=[paths["bert-6l-random"]],
        attack_model=payload["attack_model"],
        attack_size=payload["attack_size"],
        cache_dir=Path(payload["cache_dir"]),
        bootstrap=payload["bootstrap"],
        device=payload["device"],
    )
    profiler = cProfile.Profile() if payload["profile"] else None
    phases: dict[str, dict] = {}
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    gate = Gate(settings, data=data)
    pair = gate.pairs()[0]
    names = [gate.reference, *gate.candidates]
    steps = {
        "load": lambda: ([gate.wrapper(n) for n in names], gate.models.attack_wrapper()),
        "encode": lambda: [gate.outputs(n, role) for n in names for role in ("train", "holdout", "test", "challenge")],
        "prediction errors": lambda: gate.compare("prediction_errors", pair),
        "kNN representation": lambda: gate.compare("data_representation", pair),
        "OOD distribution": lambda: gate.compare("data_distribution", pair),
        "attack": lambda: gate.compare("adversarial_vulnerability", pair),
    }
    results = {}
    forward: dict[str, float] = {}
    hooked: set[int] = set()
    for phase in PHASES:
        forward.clear()
        with h.Measure() as measure:
            results[phase] = steps[phase]()
            if phase == "load":
                for (name, _), wrapper in gate.models.loaded().items():
                    if id(wrapper.model) not in hooked:
                        hooked.add(id(wrapper.model))
                        time_forward(wrapper.model, name, forward)
        phases[phase] = measure.as_dict()
        phases[phase]["forward_seconds"] = dict(forward)
        print(
            f"  {phase:<20} {measure.seconds:8.2f} s   peak RSS {h.mib(measure.peak)}   forward "
            "passes: " + ", ".join(f"{k} {v:.1f} s" for k, v in forward.items()),
            flush=True,
        )
    total = time.perf_counter() - start
    if profiler:
        profiler.disable()
    attack = results["attack"]
    queries = attack.details["queries_per_item"]
    out = {
        "phases": phases,
        "total": total,
        "counts": {role: len(data.role(role)) for role in ("train", "holdout", "test", "challenge")},
        "forward_calls": {
            f"{k[0]}{'/' + k[1] if k[1] else ''}": w.forward_calls for k, w in gate.models.loaded().items()
        },
        "figures": {
            c: results[p].figure
            for c, p in (
                ("prediction_errors", "prediction errors"),
                ("data_representation", "kNN representation"),
                ("data_distribution", "OOD distribution"),
                ("adversarial_vulnerability", "attack"),
            )
        },
        "queries_per_item": queries,
        "attack_reference": attack.details["reference"],
        "attack_candidate": attack.details["candidate"],
    }
    if profiler:
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(payload["top"])
        out["profile"] = stream.getvalue()
    h.emit(out)


def short(name: str) -> str:
    return "attack model" if name == "__attack_model__" else name


def time_demo(args: argparse.Namespace) -> list[list[str]]:
    """``miniature demo`` cold then warm (fresh cache folder), when the command exists."""
    try:
        from miniature.tools.cli import COMMANDS
    except ImportError:
        COMMANDS = {}
    if "demo" not in COMMANDS:
        print("\nminiature demo: not available in this checkout yet; skipped")
        return []
    beside = Path(sys.executable).parent / "miniature"
    exe = str(beside) if beside.exists() else (shutil.which("miniature") or "")
    command = [exe, "demo"] if exe else [sys.executable, "-m", "miniature.tools.cli", "demo"]
    command += args.demo_args.split() if args.demo_args else []
    cache = h.scratch_dir("miniature-bench-demo-")
    rows = []
    print(f"\nminiature demo ({' '.join(command[1:])}), MINIATURE_CACHE_DIR={cache}")
    for run in ("cold", "warm"):
        load_before = os.getloadavg()
        start = time.perf_counter()
        process = subprocess.run(
            ["/usr/bin/time", "-f", "%M %U %S", *command],
            capture_output=True,
            text=True,
            cwd=cache,
            env={**os.environ, **h.WORKER_ENV, "MINIATURE_CACHE_DIR": str(cache)},
        )
        wall = time.perf_counter() - start
        last = process.stderr.strip().splitlines()[-1].split() if process.stderr.strip() else []
        peak = last[0] if last else "?"
        peak_text = f"{int(peak) / 1024:.0f} MiB" if peak.isdigit() else "?"
        # CPU seconds (user + system, the demo and its children): on a busy machine, the time a
        # one-thread demo would take on an idle core, as near as this run can tell
        cpu = sum(float(x) for x in last[1:3]) if len(last) == 3 else float("nan")
        load = f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
        print(f"  {run}: {wall:.1f} s, {cpu:.1f} CPU s, exit {process.returncode}, peak RSS {peak_text}, {load}")
        if process.returncode not in (0, 1):
            print(process.stdout[-2000:] + process.stderr[-2000:])
        rows.append(
            [f"miniature demo ({run})", f"{wall:.1f} s", f"{cpu:.1f} s", peak_text, f"exit {process.returncode}", load]
        )
        lines = process.stdout.splitlines()
        steps = [line for line in lines if "; seconds " in line]
        if steps:  # the demo's own split: training, compression, attack model, gate
            print("    " + steps[-1].split("; seconds ", 1)[1])
        block = next((i for i, line in enumerate(lines) if "phenomenon" in line), None)
        if block is not None and run == "cold":  # the figures the timing came with (the demo's phenomenon goals)
            print("\n".join("    " + line for line in lines[block : block + 12] if line.strip()))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    h.common_arguments(parser, rounds=None)
    parser.add_argument("--items", type=int, default=None, help="test items (default 1000; 100 with --quick)")
    parser.add_argument(
        "--attack-size", type=int, default=None, help="items attacked per model (default 100; 10 with --quick)"
    )
    parser.add_argument(
        "--attack-model",
        default="all-minilm-l6-v2",
        help="masked LM proposing substitutions (default: all-minilm-l6-v2)",
    )
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions")
    parser.add_argument("--top", type=int, default=25, help="functions listed by --profile")
    parser.add_argument("--demo", action="store_true", help="also time `miniature demo` cold and warm, if it exists")
    parser.add_argument("--demo-args", default="", help="arguments passed to `miniature demo`")
    parser.add_argument("--demo-only", action="store_true", help="time `miniature demo` only")
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="keep the saved models here and reuse them (default: a temp folder)",
    )
    args = parser.parse_args(argv)
    if args.worker:
        payload = json.loads(args.payload)
        (setup_worker if args.worker == "setup" else gate_worker)(payload)
        return 0

    items = args.items or (100 if args.quick else 1000)
    attack_size = args.attack_size or (10 if args.quick else 100)
    threads = h.apply_threads(args)
    info = h.machine_info()
    h.print_machine(info)
    print(threads)
    if args.demo_only:
        demo_rows = time_demo(args)
        if demo_rows:
            print("\n" + h.table(["run", "wall", "CPU", "peak RSS", "status", "load"], demo_rows))
        h.write_json(args.json, {"machine": info, "demo": demo_rows})
        return 0
    root = args.models_dir or h.scratch_dir("miniature-bench-gate-")
    marker = root / "paths.json"
    if marker.exists():
        paths = json.loads(marker.read_text())
    else:
        start = time.perf_counter()
        paths = h.run_worker(__file__, ["--worker", "setup", "--payload", json.dumps({"root": str(root)})])["paths"]
        marker.write_text(json.dumps(paths))
        print(f"\nsaved the random BERT-base pair in {time.perf_counter() - start:.0f} s")
    print(
        f"\nwhole gate: {paths['bert-base-random parameters'] / 1e6:.0f}M-parameter reference "
        f"vs {paths['bert-6l-random parameters'] / 1e6:.0f}M candidate, {items} test items, "
        f"attack on {attack_size} per model with {args.attack_model}, cold cache, one fresh "
        "process\n"
    )
    payload = dict(
        paths=paths,
        items=items,
        attack_size=attack_size,
        attack_model=args.attack_model,
        cache_dir=str(h.scratch_dir("miniature-bench-gate-cache-")),
        bootstrap=args.bootstrap,
        device=args.device,
        profile=args.profile,
        top=args.top,
    )
    result = h.run_worker(__file__, ["--worker", "gate", "--payload", json.dumps(payload)])
    print(result["log"])
    total = result["total"]
    rows = []
    for phase in PHASES:
        figures = result["phases"][phase]
        spent = figures["forward_seconds"]
        rows.append(
            [
                phase,
                f"{figures['seconds']:.1f} s",
                f"{figures['seconds'] / total:.0%}",
                h.mib(figures["peak_rss"]),
                ", ".join(f"{short(k)} {v:.1f} s" for k, v in spent.items()) or "-",
            ]
        )
    rows.append(
        [
            "gate (all phases)",
            f"{total:.1f} s",
            "100%",
            h.mib(max(p["peak_rss"] for p in result["phases"].values())),
            "",
        ]
    )
    rows.append(["process (start to end)", f"{result['process_wall']:.1f} s", "", "", ""])
    counts = result["counts"]
    print(f"items encoded per model: {sum(counts.values())} ({counts}); forward passes {result['forward_calls']}\n")
    print(h.table(["phase", "wall", "share", "peak RSS", "in forward passes"], rows))
    queries = result["queries_per_item"]
    ref, cand = result["attack_reference"], result["attack_candidate"]
    attack = result["phases"]["attack"]
    total_queries = (ref["queries_total"] or 0) + (cand["queries_total"] or 0)
    spent = attack["forward_seconds"]
    targets = sum(v for k, v in spent.items() if k != "__attack_model__")
    masked_lm = spent.get("__attack_model__", 0.0)

    def per_item(value: float | None) -> str:
        return "n/a (none attacked)" if value is None else f"{value:.1f}"

    print(
        f"\nattack: queries per attacked item: reference {per_item(queries['reference'])}, "
        f"candidate {per_item(queries['candidate'])}; {total_queries} target queries in all, "
        f"{total_queries / attack['seconds']:.1f} per second of the attack phase; skipped "
        f"(already wrong): {ref['skipped']} / {cand['skipped']} of {attack_size}; successful: "
        f"{ref['successful']} / {cand['successful']}"
    )
    print(
        f"attack phase {attack['seconds']:.1f} s: target models' forward passes {targets:.1f} s "
        f"({targets / attack['seconds']:.0%}), attack model's (masked-LM proposals and the "
        f"similarity constraint) {masked_lm:.1f} s ({masked_lm / attack['seconds']:.0%}), the rest "
        f"(TextAttack's search and constraints, tokenizing, padding) "
        f"{attack['seconds'] - targets - masked_lm:.1f} s"
    )
    print("figures: " + ", ".join(f"{k}={v:.3f}" for k, v in result["figures"].items()))
    if "profile" in result:
        print(
            "\ncProfile, top functions by own time:\n"
            + "\n".join(line for line in result["profile"].splitlines() if line.strip())
        )
    demo_rows = time_demo(args) if args.demo else []
    if demo_rows:
        print("\n" + h.table(["run", "wall", "CPU", "peak RSS", "status", "load"], demo_rows))
    h.write_json(args.json, {"machine": info, "settings": payload, "result": result, "demo": demo_rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
