"""A full gate with a warm output cache against the same gate computing everything (cold).

The gate is miniature's engine (``Gate`` with ``make_settings``) on the tiny offline
models of ``miniature.tools.testing.make_tiny_models`` (reference: 4-layer BERT, candidate:
2-layer BERT, attack model: the tiny masked LM) and the built-in sentiment data, all
four characteristics: prediction errors, data representation, data distribution and
adversarial vulnerability (BERT-Attack on ``--attack-size`` items per model).

Every run is a fresh Python process, so nothing is memoised in memory: each round
runs the gate cold into an empty cache folder, then warm from what that run stored.
Timed: building the Gate and computing every comparison, with torch, transformers,
scipy and scikit-learn imported beforehand (the "gate" column: the work the cache can
save), and the whole process including interpreter start and every import ("process":
what a user waits for). Goal: warm >= 20x faster than cold (gate); the figures must be
identical.

    python benchmarks/cache.py --quick
    python benchmarks/cache.py                 # attack on 30 items, 3 rounds
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import _harness as h


def setup_worker(payload: dict) -> None:
    h.quiet_libraries()
    from miniature.tools.testing import make_tiny_models

    models = make_tiny_models(Path(payload["root"]))
    h.emit({"seconds": 0.0, "peak_extra": 0, "paths": {k: str(v) for k, v in models.paths.items()}})


def gate_worker(payload: dict) -> None:
    start = time.perf_counter()
    h.quiet_libraries()
    # Libraries both runs load anyway, imported before the clock starts so "gate" is the
    # gate's own work. TextAttack is not among them: only a cold run needs it.
    import scipy.stats  # noqa: F401
    import sklearn  # noqa: F401
    import torch  # noqa: F401
    import transformers

    for name in ("AutoConfig", "AutoTokenizer", "AutoModelForSequenceClassification", "AutoModelForMaskedLM"):
        getattr(transformers, name)
    import miniature.core.attack  # noqa: F401
    import miniature.core.characteristics.adversarial  # noqa: F401
    import miniature.core.characteristics.distribution  # noqa: F401
    import miniature.core.characteristics.prediction_errors  # noqa: F401
    import miniature.core.characteristics.representation  # noqa: F401
    from miniature.core.gate import Gate
    from miniature.core.settings import make_settings

    imported = time.perf_counter() - start
    paths = payload["paths"]
    settings = make_settings(
        reference=paths["reference"],
        candidate=[paths["small"]],
        attack_model=paths["attacker"],
        attack_size=payload["attack_size"],
        cache_dir=Path(payload["cache_dir"]),
        data_limit=payload["data_limit"],
        bootstrap=payload["bootstrap"],
        device="cpu",
    )
    figures = {}
    with h.Measure() as measure:
        gate = Gate(settings)
        for pair in gate.pairs():
            for characteristic in gate.registry.names:
                result = gate.compare(characteristic, pair)
                figures[f"{characteristic} {pair.id}"] = result.figure
    out = measure.as_dict()
    loaded = {
        f"{name}{'/' + stage if stage else ''}": wrapper.forward_calls
        for (name, stage), wrapper in gate.models.loaded().items()
    }
    out.update(
        imports=imported,
        figures=figures,
        hits=gate.cache.hits,
        misses=gate.cache.misses,
        models_loaded=loaded,
        process_peak_rss=h.peak_bytes(),
    )
    h.emit(out)


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    h.common_arguments(parser, rounds=3)
    parser.add_argument(
        "--attack-size", type=int, default=None, help="items attacked per model (default 30; 10 with --quick)"
    )
    parser.add_argument(
        "--data-limit",
        type=int,
        default=None,
        help="at most this many items per data set (default: all of the built-in "
        "data, i.e. 1000/300/500/450; 200 with --quick)",
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    args = parser.parse_args(argv)
    if args.worker:
        payload = json.loads(args.payload)
        (setup_worker if args.worker == "setup" else gate_worker)(payload)
        return 0

    rounds = args.rounds or (1 if args.quick else 3)
    attack_size = args.attack_size or (10 if args.quick else 30)
    data_limit = args.data_limit or (200 if args.quick else None)
    threads = h.apply_threads(args)
    info = h.machine_info()
    h.print_machine(info)
    print(threads)
    scratch = h.scratch_dir("miniature-bench-cache-")
    paths = h.run_worker(__file__, ["--worker", "setup", "--payload", json.dumps({"root": str(scratch / "models")})])[
        "paths"
    ]
    print(
        f"\nfull gate, tiny models (reference 4x64 BERT vs candidate 2x32 BERT, attack model "
        f"2x32 masked LM), built-in data{f' limited to {data_limit} per set' if data_limit else ''}, "
        f"attack on {attack_size} items per model, bootstrap {args.bootstrap}; {rounds} round(s) "
        "of cold then warm, each a fresh process\n"
    )
    results: dict[str, list[dict]] = {"cold": [], "warm": []}
    for index in range(rounds):
        cache_dir = scratch / f"cache-{index}"
        for name in ("cold", "warm"):
            payload = dict(
                paths=paths,
                cache_dir=str(cache_dir),
                attack_size=attack_size,
                data_limit=data_limit,
                bootstrap=args.bootstrap,
            )
            result = h.run_worker(__file__, ["--worker", name, "--payload", json.dumps(payload)])
            results[name].append(result)
            print(
                f"  round {index + 1}/{rounds} {name}: gate {result['seconds']:7.2f} s, process "
                f"{result['process_wall']:6.2f} s, cache hits {result['hits']} misses "
                f"{result['misses']}, forward passes {result['models_loaded']}",
                flush=True,
            )

    rows = []
    for name in ("cold", "warm"):
        rs = results[name]
        rows.append(
            [
                name,
                f"{h.median([r['seconds'] for r in rs]):.2f} s",
                f"{h.median([r['process_wall'] for r in rs]):.2f} s",
                f"{h.median([r['imports'] for r in rs]):.2f} s",
                h.mib(h.median([r["peak_extra"] for r in rs])),
                h.mib(h.median([r["process_peak_rss"] for r in rs])),
            ]
        )
    print(
        "\n"
        + h.table(
            [
                "run",
                "gate (median)",
                "process (median)",
                "imports",
                "peak RSS during gate (over baseline)",
                "process peak RSS",
            ],
            rows,
        )
    )
    gate_ratio = h.paired_ratios(results, "cold", "warm")
    process_ratio = h.paired_ratios(results, "cold", "warm", key="process_wall")
    identical = all(
        same(c["figures"][key], w["figures"][key])
        for c, w in zip(results["cold"], results["warm"])
        for key in c["figures"]
    )
    print(f"\nwarm speed-up, gate: {h.fmt_ratio(gate_ratio)}; whole process: {h.fmt_ratio(process_ratio)}")
    print(
        f"goal warm >= 20x faster (gate work): {h.median(gate_ratio):.1f}x -> "
        f"{'MET' if h.median(gate_ratio) >= 20 else 'MISSED'}"
    )
    print(
        f"figures identical cold vs warm: {'yes' if identical else 'NO'}  "
        + ", ".join(f"{k.split(' ')[0]}={v:.3f}" for k, v in results["cold"][0]["figures"].items())
    )
    if args.quick:
        print("note: --quick is a smoke test at a small size; the goals are judged on a full run")
    h.write_json(args.json, {"machine": info, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
