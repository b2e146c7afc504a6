"""Encoding real-length texts to [CLS] vectors with the real all-MiniLM-L6-v2.

Three ways to get the same (n, 384) matrix, each from raw texts (tokenization included):

* ``miniature``: ``ModelWrapper.encode`` (tokenize unpadded, plus a pass that counts truncated texts; sort by length; pad each
  batch only to its own longest item, results back in input order);
* ``bare-sorted``: a hand-written ``model(**batch)`` loop over the very same sorted
  batches (one tokenizer call, ``tokenizer.pad`` per batch, ``last_hidden_state[:, 0]``):
  what miniature costs over the least code that does the same thing;
* ``naive-pad128``: the usual loop in input order, every batch padded to max length 128.

Goals: miniature >= 3x faster than naive-pad128 and >= 0.95x the speed of bare-sorted;
vectors equal to 1e-5 (atol). Times come from one process running the variants
interleaved chunk by chunk (so load from other users hits them alike); peak memory from
each variant alone in a fresh process.

    python benchmarks/encoding.py --quick
    python benchmarks/encoding.py            # 1000 texts, 5 rounds
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _harness as h

VARIANTS = ("miniature", "bare-sorted", "naive-pad128")
MODEL = "all-minilm-l6-v2"


def load(payload: dict):
    h.quiet_libraries()
    from miniature.core.models import load_model

    texts = h.real_length_texts(payload["n"], low=payload["min_words"], high=payload["max_words"], seed=payload["seed"])
    wrapper = load_model(MODEL, max_length=payload["max_length"], batch_size=payload["batch_size"], progress=False)
    return texts, wrapper, variants(wrapper, payload["batch_size"], payload["max_length"])


def variants(wrapper, bs: int, max_length: int) -> dict:
    """The three ways to encode, each from raw texts to an (n, d) float32 matrix."""
    import numpy as np
    import torch

    model, tokenizer = wrapper.model, wrapper.tokenizer

    def bare_sorted(items: list[str]) -> np.ndarray:
        encoded = tokenizer(items, truncation=True, max_length=max_length)
        keys = list(encoded.keys())
        features = [{k: encoded[k][i] for k in keys} for i in range(len(items))]
        order = sorted(range(len(items)), key=lambda i: (-len(features[i]["input_ids"]), i))
        out = np.empty((len(items), model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), bs):
                index = order[start : start + bs]
                batch = tokenizer.pad([features[i] for i in index], return_tensors="pt")
                out[index] = model(**batch).last_hidden_state[:, 0].numpy()
        return out

    def naive_pad128(items: list[str]) -> np.ndarray:
        out = np.empty((len(items), model.config.hidden_size), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(items), bs):
                batch = tokenizer(
                    items[start : start + bs],
                    padding="max_length",
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                )
                out[start : start + bs] = model(**batch).last_hidden_state[:, 0].numpy()
        return out

    return {"miniature": wrapper.encode, "bare-sorted": bare_sorted, "naive-pad128": naive_pad128}


def padded_tokens(lengths: list[int], bs: int, chunk: int) -> int:
    """Tokens through the model when each chunk is sorted and cut into batches of ``bs``."""
    total = 0
    for low in range(0, len(lengths), chunk):
        ordered = sorted(lengths[low : low + chunk], reverse=True)
        total += sum(len(ordered[i : i + bs]) * ordered[i] for i in range(0, len(ordered), bs))
    return total


def timing_worker(payload: dict) -> None:
    """All variants in one process, interleaved chunk by chunk; vectors saved from round 1."""
    import numpy as np

    texts, wrapper, runs = load(payload)
    chunk = payload["chunk"]
    chunks = [texts[i : i + chunk] for i in range(0, len(texts), chunk)]
    for run in runs.values():
        run(texts[: 2 * payload["batch_size"]])  # warm-up
    outputs: dict[str, list] = {name: [None] * len(chunks) for name in VARIANTS}

    def run(name: str, index: int) -> None:
        vectors = runs[name](chunks[index])
        if outputs[name][index] is None:
            outputs[name][index] = vectors

    cpu = h.cpu_seconds()
    totals, steps = h.interleave_in_process(VARIANTS, payload["rounds"], len(chunks), run)
    for name in VARIANTS:
        np.save(Path(payload["scratch"]) / f"{name}.npy", np.concatenate(outputs[name]))
    lengths = [
        len(ids) for ids in wrapper.tokenizer(texts, truncation=True, max_length=payload["max_length"])["input_ids"]
    ]
    h.emit(
        {
            "totals": totals,
            "steps": steps,
            "cpu_steps": h.CPU_STEPS,
            "cpu_seconds": h.cpu_seconds() - cpu,
            "mean_words": float(np.mean([len(t.split()) for t in texts])),
            "mean_tokens": float(np.mean(lengths)),
            "max_tokens": int(max(lengths)),
            "sorted_tokens": padded_tokens(lengths, payload["batch_size"], chunk),
            "sorted_tokens_whole": padded_tokens(lengths, payload["batch_size"], len(texts)),
            "padded_tokens": len(texts) * payload["max_length"],
            "n_chunks": len(chunks),
        }
    )


def memory_worker(name: str, payload: dict) -> None:
    """One variant on all texts in one call: its peak RSS (and its wall time alone)."""
    texts, wrapper, runs = load(payload)
    runs[name](texts[: 2 * payload["batch_size"]])
    with h.Measure() as measure:
        runs[name](texts)
    h.emit(measure.as_dict())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    h.common_arguments(parser, rounds=5)
    parser.add_argument("--n", type=int, default=None, help="texts to encode (default 1000; 256 with --quick)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--min-words", type=int, default=10)
    parser.add_argument("--max-words", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--chunk",
        type=int,
        default=None,
        help="texts per interleaving step (default: all of them, as the gate encodes; "
        "smaller steps interleave more finely on a noisy machine)",
    )
    args = parser.parse_args(argv)
    if args.worker:
        payload = json.loads(args.payload)
        timing_worker(payload) if args.worker == "timing" else memory_worker(args.worker, payload)
        return 0

    n = args.n or (256 if args.quick else 1000)
    rounds = args.rounds or (2 if args.quick else 5)
    chunk = args.chunk or n
    threads = h.apply_threads(args)
    info = h.machine_info()
    h.print_machine(info)
    print(threads)
    scratch = h.scratch_dir("miniature-bench-encoding-")
    payload = dict(
        n=n,
        batch_size=args.batch_size,
        max_length=args.max_length,
        chunk=chunk,
        min_words=args.min_words,
        max_words=args.max_words,
        seed=args.seed,
        rounds=rounds,
        scratch=str(scratch),
    )
    print(
        f"\nencoding {n} texts of {args.min_words}-{args.max_words} words with {MODEL} "
        f"([CLS], batch {args.batch_size}, max_length {args.max_length})\n\ntiming: one process, "
        f"{rounds} round(s) over {-(-n // chunk)} chunks of {chunk} texts, the variants "
        "interleaved chunk by chunk"
    )
    timing = h.run_worker(__file__, ["--worker", "timing", "--payload", json.dumps(payload)])
    print(timing["log"])
    print("\nmemory: each variant alone in a fresh process, all texts in one call")
    memory = {}
    for name in VARIANTS:
        memory[name] = h.run_worker(__file__, ["--worker", name, "--payload", json.dumps(payload)])
        print(
            f"  {name:<14} peak RSS {h.mib(memory[name]['peak_rss'])} "
            f"(+{h.mib(memory[name]['peak_extra'])} over its baseline), {memory[name]['seconds']:.2f} s alone",
            flush=True,
        )

    import numpy as np

    vectors = {name: np.load(scratch / f"{name}.npy") for name in VARIANTS}
    diff = {name: float(np.abs(vectors[name] - vectors["miniature"]).max()) for name in VARIANTS[1:]}
    totals = timing["totals"]

    def ratio(name: str, which: dict = totals) -> list[float]:
        """Per round: its total time over miniature's, the chunks of both interleaved."""
        return [b / a for a, b in zip(which["miniature"], which[name])]

    n_chunks = timing["n_chunks"]
    cpu = {
        name: [sum(values[i : i + n_chunks]) for i in range(0, len(values), n_chunks)]
        for name, values in timing["cpu_steps"].items()
    }

    print(
        f"\ntexts: mean {timing['mean_words']:.1f} words, {timing['mean_tokens']:.1f} tokens "
        f"(max {timing['max_tokens']}); tokens through the model: sorted batches "
        f"{timing['sorted_tokens']} ({timing['sorted_tokens_whole']} if all {n} were sorted at "
        f"once), padded to {args.max_length}: {timing['padded_tokens']} "
        f"({timing['padded_tokens'] / timing['sorted_tokens']:.2f}x more: the speed-up's rough "
        "ceiling, attention's quadratic share aside)\n"
    )
    rows = []
    for name in VARIANTS:
        seconds = h.median(totals[name])
        rows.append(
            [
                name,
                f"{seconds:.2f} s",
                f"{n / seconds:.0f}",
                "1.00x" if name == "miniature" else h.fmt_ratio(ratio(name)),
                "1.00x" if name == "miniature" else f"{h.median(ratio(name, cpu)):.2f}x",
                h.mib(memory[name]["peak_extra"]),
                h.mib(memory[name]["peak_rss"]),
                "-" if name == "miniature" else f"{diff[name]:.1e}",
            ]
        )
    print(
        h.table(
            [
                "variant",
                "time (median round)",
                "texts/s",
                "its time / miniature's (median round)",
                "CPU-time ratio",
                "peak RSS over baseline",
                "peak RSS",
                "max |diff| vs miniature",
            ],
            rows,
        )
    )
    vs_naive = h.median(ratio("naive-pad128"))
    vs_bare = h.median(ratio("bare-sorted"))
    identical = all(value <= 1e-5 for value in diff.values())
    print(f"\ngoal >= 3x faster than naive-pad128: {vs_naive:.3f}x -> {'MET' if vs_naive >= 3 else 'MISSED'}")
    print(f"goal >= 0.95x the speed of bare-sorted: {vs_bare:.3f}x -> {'MET' if vs_bare >= 0.95 else 'MISSED'}")
    print(f"vectors identical to 1e-5: max |diff| {max(diff.values()):.1e} -> {'MET' if identical else 'MISSED'}")
    if args.quick:
        print("note: --quick is a smoke test at a small size; the goals are judged on a full run")
    h.write_json(
        args.json, {"machine": info, "settings": payload, "timing": timing, "memory": memory, "max_diff": diff}
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
