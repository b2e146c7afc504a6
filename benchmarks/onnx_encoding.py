"""Encoding through onnxruntime vs through PyTorch, on the same model, fp32 and int8.

The real all-MiniLM-L6-v2 (packaged; offline), raw texts to [CLS] vectors, six ways:

* ``torch-fp32``: ``ModelWrapper.encode`` on the PyTorch model;
* ``onnx-fp32``: ``ModelWrapper.encode`` on its ONNX export (``miniature.tools.export``),
  run by onnxruntime on the CPU;
* ``bare-onnx-fp32``: a hand-written ``session.run`` loop over the very same sorted batches
  (one tokenizer call, ``tokenizer.pad`` per batch): what miniature's ONNX path costs over
  the least code that does the same thing;
* ``torch-int8``, ``onnx-int8``, ``bare-onnx-int8``: the same after int8 quantization, each
  with its runtime's own dynamic int8 (torchao's ``Int8DynamicActivationInt8WeightConfig``,
  as ``miniature compress --method int8``; onnxruntime's ``quantize_dynamic``, as
  ``--format onnx``).

Figures: onnx/torch speed ratio for fp32 and int8 (no goal: a measurement); goal: each ONNX
path >= 0.95x the speed of its bare loop; fp32 vectors within 1e-4 of PyTorch's. One process,
variants interleaved chunk by chunk, medians of the rounds.

    python benchmarks/onnx_encoding.py --quick
    python benchmarks/onnx_encoding.py --threads 1     # 500 texts, 3 rounds
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _harness as h

VARIANTS = ("torch-fp32", "onnx-fp32", "bare-onnx-fp32", "torch-int8", "onnx-int8", "bare-onnx-int8")
MODEL = "all-minilm-l6-v2"


def build(payload: dict) -> tuple[list[str], dict]:
    """The texts and the six encoders (exports written to the scratch folder)."""
    h.quiet_libraries()
    import transformers
    from torchao.quantization import quantize_

    from miniature.core.formats import torchao_config
    from miniature.core.models import load_model
    from miniature.tools.export import export_onnx

    texts = h.real_length_texts(payload["n"], low=payload["min_words"], high=payload["max_words"], seed=payload["seed"])
    options = dict(max_length=payload["max_length"], batch_size=payload["batch_size"], progress=False)
    scratch = Path(payload["scratch"])
    torch_fp32 = load_model(MODEL, **options)
    tokenizer = transformers.AutoTokenizer.from_pretrained(torch_fp32.model.name_or_path)
    for name, int8 in (("onnx-fp32", False), ("onnx-int8", True)):
        export_onnx(load_model(MODEL).model, tokenizer, scratch / name, head="encoder", int8=int8)
    torch_int8 = load_model(MODEL, **options)
    quantize_(torch_int8.model, torchao_config("int8-dynamic"))
    onnx_fp32 = load_model(str(scratch / "onnx-fp32"), **options)
    onnx_int8 = load_model(str(scratch / "onnx-int8"), **options)
    runs = {
        "torch-fp32": torch_fp32.encode,
        "onnx-fp32": onnx_fp32.encode,
        "bare-onnx-fp32": bare_loop(onnx_fp32, payload),
        "torch-int8": torch_int8.encode,
        "onnx-int8": onnx_int8.encode,
        "bare-onnx-int8": bare_loop(onnx_int8, payload),
    }
    return texts, runs


def bare_loop(wrapper, payload: dict):
    """``session.run`` over the same length-sorted, per-batch padded batches."""
    import numpy as np

    session, tokenizer = wrapper.model.session, wrapper.tokenizer
    names = [i.name for i in session.get_inputs()]
    bs, max_length = payload["batch_size"], payload["max_length"]

    def encode(items: list[str]) -> np.ndarray:
        encoded = tokenizer(items, truncation=True, max_length=max_length)
        keys = list(encoded.keys())
        features = [{k: encoded[k][i] for k in keys} for i in range(len(items))]
        order = sorted(range(len(items)), key=lambda i: (-len(features[i]["input_ids"]), i))
        out = None
        for start in range(0, len(order), bs):
            index = order[start : start + bs]
            batch = tokenizer.pad([features[i] for i in index], return_tensors="np")
            hidden = session.run(["last_hidden_state"], {k: batch[k].astype(np.int64) for k in names})[0]
            if out is None:
                out = np.empty((len(items), hidden.shape[-1]), dtype=np.float32)
            out[index] = hidden[:, 0]
        return out

    return encode


def timing_worker(payload: dict) -> None:
    import numpy as np

    texts, runs = build(payload)
    chunk = payload["chunk"]
    chunks = [texts[i : i + chunk] for i in range(0, len(texts), chunk)]
    for run in runs.values():
        run(texts[: 2 * payload["batch_size"]])  # warm-up
    outputs: dict[str, list] = {name: [None] * len(chunks) for name in VARIANTS}

    def run(name: str, index: int) -> None:
        vectors = runs[name](chunks[index])
        if outputs[name][index] is None:
            outputs[name][index] = vectors

    totals, steps = h.interleave_in_process(VARIANTS, payload["rounds"], len(chunks), run)
    vectors = {name: np.concatenate(outputs[name]) for name in VARIANTS}
    diff = {
        "onnx-fp32 vs torch-fp32": float(np.abs(vectors["onnx-fp32"] - vectors["torch-fp32"]).max()),
        "onnx-int8 vs torch-fp32": float(np.abs(vectors["onnx-int8"] - vectors["torch-fp32"]).max()),
        "torch-int8 vs torch-fp32": float(np.abs(vectors["torch-int8"] - vectors["torch-fp32"]).max()),
        "bare-onnx-fp32 vs onnx-fp32": float(np.abs(vectors["bare-onnx-fp32"] - vectors["onnx-fp32"]).max()),
        "bare-onnx-int8 vs onnx-int8": float(np.abs(vectors["bare-onnx-int8"] - vectors["onnx-int8"]).max()),
    }
    h.emit({"totals": totals, "steps": steps, "diff": diff})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    h.common_arguments(parser, rounds=3)
    parser.add_argument("--n", type=int, default=None, help="texts to encode (default 500; 128 with --quick)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--min-words", type=int, default=10)
    parser.add_argument("--max-words", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=None, help="texts per interleaving step (default 100)")
    args = parser.parse_args(argv)
    if args.worker:
        timing_worker(json.loads(args.payload))
        return 0
    n = args.n or (128 if args.quick else 500)
    rounds = args.rounds or (1 if args.quick else 3)
    chunk = min(args.chunk or 100, n)
    threads = h.apply_threads(args)
    info = h.machine_info()
    h.print_machine(info)
    print(threads)
    scratch = h.scratch_dir("miniature-bench-onnx-")
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
        f"\nencoding {n} texts of {args.min_words}-{args.max_words} words with {MODEL} ([CLS], "
        f"batch {args.batch_size}, max_length {args.max_length}); {rounds} round(s) over chunks of "
        f"{chunk} texts, the variants interleaved chunk by chunk"
    )
    timing = h.run_worker(__file__, ["--worker", "timing", "--payload", json.dumps(payload)])
    totals = timing["totals"]

    def ratio(numerator: str, denominator: str) -> list[float]:
        """Per round: the denominator's time over the numerator's (> 1: numerator faster)."""
        return [b / a for a, b in zip(totals[numerator], totals[denominator])]

    rows = [[name, f"{h.median(totals[name]):.2f} s", f"{n / h.median(totals[name]):.0f}"] for name in VARIANTS]
    print(h.table(["variant", "time (median round)", "texts/s"], rows))
    fp32, int8 = ratio("onnx-fp32", "torch-fp32"), ratio("onnx-int8", "torch-int8")
    bare32, bare8 = ratio("onnx-fp32", "bare-onnx-fp32"), ratio("onnx-int8", "bare-onnx-int8")
    print(f"\nonnxruntime vs PyTorch, fp32: {h.fmt_ratio(fp32)} the speed")
    print(f"onnxruntime vs PyTorch, int8: {h.fmt_ratio(int8)} the speed")
    for label, values in (("fp32", bare32), ("int8", bare8)):
        met = h.median(values) >= 0.95
        print(
            f"goal ONNX path >= 0.95x its bare session.run loop, {label}: {h.median(values):.3f}x -> "
            f"{'MET' if met else 'MISSED'}"
        )
    for label, value in timing["diff"].items():
        print(f"max |diff| {label}: {value:.1e}")
    ok = timing["diff"]["onnx-fp32 vs torch-fp32"] <= 1e-4
    print(f"fp32 vectors within 1e-4 of PyTorch's: {'MET' if ok else 'MISSED'}")
    if args.quick:
        print("note: --quick is a smoke test at a small size; the goals are judged on a full run")
    h.write_json(args.json, {"machine": info, "settings": payload, "timing": timing})
    return 0


if __name__ == "__main__":
    sys.exit(main())
