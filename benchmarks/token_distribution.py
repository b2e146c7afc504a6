"""The token distribution's cost per token against one plain forward pass of both models.

Two decoder LMs of a realistic vocabulary (32,000 tokens; Llama-shaped, 4 layers of width
256, random weights: only time and memory are measured here, no figure) run on the same
batches of the built-in reviews:

* ``forward``: both models' forward passes, logits computed and dropped;
* ``token-distribution``: what the characteristic does (``token_values``: the same passes,
  then every position's statistics exact over the whole vocabulary, kept per token).

Goal: token-distribution ≤ 1.3x forward per token, in wall time and in CPU time (one thread:
the CPU time is what a loaded machine distorts least). Peak memory of each variant alone in a
fresh process (``ru_maxrss``), against the two models plus one batch of logits.

    python benchmarks/token_distribution.py --quick
    python benchmarks/token_distribution.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

VOCAB, HIDDEN, LAYERS = 32000, 256, 4


def build(folder: Path) -> None:
    """Two Llama-shaped models (the second a perturbed copy) sharing a word-level tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from miniature.tools.testing_decoder import decoder_tokenizer

    tokenizer = decoder_tokenizer(folder / "tokenizer")
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=4 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    for name, seed in (("reference", 0), ("candidate", 0)):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()
        if name == "candidate":
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.add_(torch.randn_like(parameter) * 1e-3)
        model.save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)


def run(folder: Path, variant: str, n_texts: int, batch_size: int) -> dict:
    import torch

    from miniature.core.characteristics.token_distribution import text_windows, token_values
    from miniature.core.data import builtin_sentiment_data
    from miniature.core.models import load_model

    torch.set_num_threads(1)
    texts = builtin_sentiment_data().test.head(n_texts).texts
    reference = load_model(str(folder / "reference"), max_length=128)
    candidate = load_model(str(folder / "candidate"), max_length=128)
    tokens = sum(
        int(mask[:, 1:].sum())
        for _, mask, _ in text_windows(reference, texts, scoring="texts", n_ctx=0, batch_size=batch_size)
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    if variant == "forward":
        with torch.inference_mode():
            for ids, mask, _ in text_windows(reference, texts, scoring="texts", n_ctx=0, batch_size=batch_size):
                inputs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
                reference.model(**inputs).logits.float().numpy()
                candidate.model(**inputs).logits.float().numpy()
    else:
        token_values(reference, candidate, texts, scoring="texts", n_ctx=0, batch_size=batch_size)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    return {
        "cpu_ms_per_token": 1000 * cpu_seconds / tokens,
        "variant": variant,
        "seconds": seconds,
        "tokens": tokens,
        "ms_per_token": 1000 * seconds / tokens,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 texts, 2 rounds")
    parser.add_argument("--folder", type=Path, default=Path(".benchmark-token-distribution"))
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "TEXTS", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run(args.folder, args.child[0], int(args.child[1]), int(args.child[2]))))
        return
    if not (args.folder / "candidate").exists():
        build(args.folder)
    n_texts, rounds, batch = (60, 2, 8) if args.quick else (300, 3, 8)
    load_before = os.getloadavg()[0]
    found: dict[str, list[dict]] = {"forward": [], "token-distribution": []}
    for _ in range(rounds):  # interleaved, each in a fresh process, so load from others hits both alike
        for variant in found:
            out = subprocess.run(
                [sys.executable, __file__, "--folder", str(args.folder), "--child", variant, str(n_texts), str(batch)],
                capture_output=True,
                text=True,
                check=True,
            )
            found[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = {v: min(r["ms_per_token"] for r in rows) for v, rows in found.items()}
    cpu = {v: min(r["cpu_ms_per_token"] for r in rows) for v, rows in found.items()}
    memory = {v: max(r["peak_rss_mb"] for r in rows) for v, rows in found.items()}
    logits_mb = batch * 128 * VOCAB * 4 * 2 / 2**20
    print(f"{found['forward'][0]['tokens']} scored tokens, {rounds} rounds, batch {batch}, vocabulary {VOCAB}")
    print(f"load average (1 min): {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores")
    print("| variant | ms per token (best, wall) | CPU ms per token (best) | peak RSS (MB) |")
    print("|---|---|---|---|")
    for variant in found:
        print(f"| {variant} | {best[variant]:.3f} | {cpu[variant]:.3f} | {memory[variant]:.0f} |")
    for clock, figures in (("wall", best), ("CPU", cpu)):
        ratio = figures["token-distribution"] / figures["forward"]
        print(
            f"token distribution / forward ({clock} time): {ratio:.2f}x (goal <= 1.3x: {'met' if ratio <= 1.3 else 'missed'})"
        )
    print(
        f"peak memory over forward: {memory['token-distribution'] - memory['forward']:+.0f} MB "
        f"(one batch of both models' logits at most: {logits_mb:.0f} MB)"
    )


if __name__ == "__main__":
    main()
