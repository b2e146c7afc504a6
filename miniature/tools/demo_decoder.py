"""The decoder demo (``miniature demo --decoder``): a small causal LM against its quantized,
GGUF and distilled copies, offline.

No decoder LM installs offline here, so the demo trains its own, from what ships with the
package, caching each step by content as the encoder demo does (:mod:`miniature.tools.demo`):

1. **reference**: a small Llama (:data:`DECODER_CONFIG`: 4 layers, 256 wide, seeded) with a
   SentencePiece tokenizer trained on the built-in film reviews (saved as Llama's, so
   llama.cpp's converter reads it), trained with a plain causal-LM loss on the training
   reviews written as ``Review: {text}\\nSentiment: {label word}``. It is a language model of
   the review domain and, through the choice log-likelihoods the gate reads, a sentiment
   classifier; its held-out accuracy is recorded beside it (``miniature_decoder_demo.json``);
2. **candidates**: that model compressed by :func:`miniature.tools.compress.compress`: torchao
   int8 (dynamic) and int4 weight-only, llama.cpp's GGUF Q8_0 and Q4_K_M (when the GGUF
   export and ``llama_cpp`` are installed), and every other layer dropped and the rest
   re-trained by distillation from the reference's next-token distributions (``--distil``);
3. **attack model** and **gate**: as the encoder demo (the same masked LM proposes the
   substitutions; the attack reads the decoder's choice scores), plus the token distribution
   on the test reviews (``--text-data`` default), with ``--prompt-template`` and
   ``--verbalizer`` the training format.

Last, it prints the figures that show the phenomenon (:func:`phenomenon`, against
:data:`PHENOMENON_GOALS`) and writes them to ``demo.json``, with the paper's tables and the
token-distribution table in ``tables.md`` (:func:`tables`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from miniature.core.mlm_head import build_attack_model
from miniature.errors import MiniatureError
from miniature.tools import demo as encoder_demo
from miniature.tools.demo import DemoResult, DemoSize

#: The candidates the decoder demo can build; "reference" is the reference itself.
CANDIDATES: dict[str, dict[str, Any]] = {
    "reference": {},
    "int8": {"method": "int8", "quantization": "int8-dynamic"},
    "int4": {"method": "int8", "quantization": "int4-weight-only"},
    # llama.cpp's converter and quantizer, run by llama.cpp (through llama-cpp-python)
    "q8_0": {"method": "none", "output_format": "gguf", "quantization": "q8_0"},
    "q4_k_m": {"method": "none", "output_format": "gguf", "quantization": "q4_k_m"},
    # every other layer dropped, re-trained on the reference's next-token distributions
    "layers": {"method": "layers", "distil": True},
}
DEFAULT_CANDIDATES = tuple(CANDIDATES)
CANDIDATE_PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "int8": (("torchao",), "quantize"),
    "int4": (("torchao",), "quantize"),
}
#: The candidates written as GGUF by llama.cpp (they need llama-cpp-python).
GGUF = ("q8_0", "q4_k_m")
MODEL_NAMES = {
    "reference": "review-llama",
    "int8": "review-llama-int8",
    "int4": "review-llama-int4",
    "q8_0": "review-llama-q8_0",
    "q4_k_m": "review-llama-q4_k_m",
    "layers": "review-llama-2layers-distilled",
}
QUANTIZED = ("int8", "int4", "q8_0", "q4_k_m")
#: The prompt the model is trained on and the gate scores (``{text}``: the review).
PROMPT_TEMPLATE = "Review: {text}\nSentiment:"
#: The reference's shape. 256 wide (a multiple of 256), so that llama.cpp's K-quants
#: (blocks of 256 weights per row) quantize every matrix and Q4_K_M is really 4-bit.
DECODER_CONFIG: dict[str, Any] = {
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 256,
    "tie_word_embeddings": True,
}
#: The SentencePiece tokenizer: BPE, with byte fallback (the prompt's newline is a byte token).
TOKENIZER_SETTINGS: dict[str, Any] = {"vocab_size": 1024, "model_type": "bpe", "byte_fallback": True}
#: Training of the reference: AdamW at this peak rate (warm-up, then linear decay), batch 32.
LEARNING_RATE = 2e-3
#: The loss: the causal-LM loss over every token, plus this weight times the loss of the
#: answer's tokens (the label word after ``Sentiment:``). With the plain LM loss alone the
#: answer is one token in about 50 and the model stayed near chance (held-out accuracy 0.545
#: after 3 epochs of the full size; weight 1: 0.63); with weight 5 it reached 0.847 in the
#: same training time.
ANSWER_WEIGHT = 5.0
RECORD = "miniature_decoder_demo.json"
FORMAT_VERSION = 1

SIZES: dict[str, DemoSize] = {
    # the whole built-in data: train 1,000 / held-out 300 / test 500 / challenge 450 (about
    # 6 minutes cold on 2 idle cores; "quick", the default, about 4)
    "full": DemoSize(
        "full", None, finetune_epochs=3.0, attack_size=20, lm_head_steps=300, lm_mask_rounds=1, bootstrap=1000
    ),
    "quick": DemoSize(
        "quick",
        300,
        finetune_epochs=6.0,
        attack_size=20,
        lm_head_steps=100,
        lm_mask_rounds=1,
        bootstrap=200,
        distil_epochs=4.0,
    ),
}

#: What the demo must show: the reference is a real classifier (clearly above chance, so
#: the error figures mean something); int8 stays next to it on the token distribution;
#: a 4-bit copy moves visibly further (at least twice int8's mean KL divergence); and the
#: quantized copies keep the accuracy within a few points, whatever their flips.
PHENOMENON_GOALS: dict[str, Any] = {
    "reference_accuracy_min": 0.7,
    "int8_same_top_min": 0.95,
    "four_bit_kld_ratio_min": 2.0,
    "quantized_accuracy_gap_max": 0.05,
}


def phenomenon(results: Sequence[dict[str, Any]], reference: str = MODEL_NAMES["reference"]) -> dict[str, Any]:
    """The decoder demo's figures from ``latest.json``'s results, per candidate: accuracy,
    flip rate, kNN Jaccard (data representation), same-top rate and mean KL divergence
    (token distribution); and ``checks``: each of :data:`PHENOMENON_GOALS`, its value, met."""
    own = f"{reference}#2"
    out: dict[str, Any] = {"accuracy": {}, "flip_rate": {}, "knn_jaccard": {}, "same_top": {}, "mean_kld": {}}
    for row in results:
        if row.get("reference") != reference or row["candidate"] == own:
            continue
        name, details = row["candidate"], row.get("details") or {}
        if row["characteristic"] == "prediction_errors":
            out["accuracy"].setdefault(reference, details.get("reference_accuracy"))
            out["accuracy"][name] = details.get("candidate_accuracy")
            out["flip_rate"][name] = (details.get("flips") or {}).get("flip_rate")
        elif row["characteristic"] == "data_representation":
            out["knn_jaccard"][name] = row.get("figure")
        elif row["characteristic"] == "token_distribution":
            out["same_top"][name] = row.get("figure")
            out["mean_kld"][name] = details.get("mean_kld")
    goals, accuracy = PHENOMENON_GOALS, out["accuracy"]
    base = accuracy.get(reference)
    quantized = {MODEL_NAMES[k] for k in QUANTIZED}
    gaps = [base - a for n, a in accuracy.items() if n in quantized and a is not None] if base is not None else []
    int8_top = out["same_top"].get(MODEL_NAMES["int8"])
    int8_kld = out["mean_kld"].get(MODEL_NAMES["int8"])
    four_bit = [out["mean_kld"].get(MODEL_NAMES[k]) for k in ("int4", "q4_k_m")]
    ratios = [k / int8_kld for k in four_bit if k is not None and int8_kld]
    out["checks"] = {
        "reference_accuracy": {
            "value": base,
            "goal": f">= {goals['reference_accuracy_min']}",
            "met": base is not None and base >= goals["reference_accuracy_min"],
        },
        "int8_same_top": {
            "value": int8_top,
            "goal": f">= {goals['int8_same_top_min']}",
            "met": int8_top is not None and int8_top >= goals["int8_same_top_min"],
        },
        "four_bit_kld_over_int8": {
            "value": min(ratios) if ratios else None,
            "goal": f">= {goals['four_bit_kld_ratio_min']}",
            "met": bool(ratios) and min(ratios) >= goals["four_bit_kld_ratio_min"],
        },
        "largest_quantized_accuracy_drop": {
            "value": max(gaps) if gaps else None,
            "goal": f"<= {goals['quantized_accuracy_gap_max']}",
            "met": bool(gaps) and max(gaps) <= goals["quantized_accuracy_gap_max"],
        },
    }
    return out


def phenomenon_lines(figures: dict[str, Any]) -> list[str]:
    """The figures of :func:`phenomenon` as the demo prints them."""

    def number(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = [
        "miniature demo --decoder: the phenomenon (int8 stays next to the reference, 4 bits move "
        "further on the token distribution, flips and neighbours change while accuracy holds)"
    ]
    for name, accuracy in figures["accuracy"].items():
        lines.append(
            f"  {name:<32} accuracy {number(accuracy)}  flip rate {number(figures['flip_rate'].get(name))}"
            f"  kNN {number(figures['knn_jaccard'].get(name))}  same-top {number(figures['same_top'].get(name))}"
            f"  mean KLD {number(figures['mean_kld'].get(name))}"
        )
    for name, check in figures["checks"].items():
        lines.append(
            f"  {name:<32} {number(check['value']):>6}  goal {check['goal']:<8} {'met' if check['met'] else 'NOT MET'}"
        )
    return lines


def tables(results: Sequence[dict[str, Any]], reference: str = MODEL_NAMES["reference"]) -> str:
    """The encoder demo's Tables 2 and 3 (:func:`miniature.tools.demo.paper_tables`), then
    the token distribution and the flips of each pair with the reference (markdown)."""

    def cell(value: Any, digits: int = 3) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    rows = [r for r in results if r.get("reference") == reference and r["candidate"] != f"{reference}#2"]
    lines = [
        encoder_demo.paper_tables(results, reference),
        "Token distribution (this run): next tokens of the test reviews, the reference against each candidate",
        "",
        "| candidate | same-top rate | mean KLD | KLD 99 % | max KLD | RMS Δp | ln(PPL(Q)/PPL(base)) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["characteristic"] == "token_distribution" and row.get("status", "computed") == "computed":
            d = row.get("details") or {}
            lines.append(
                f"| {row['candidate']} | {cell(row.get('figure'))} ± {cell(d.get('same_top_se'))} | "
                f"{cell(d.get('mean_kld'), 4)} | {cell((d.get('kld_percentiles') or {}).get('99'), 4)} | "
                f"{cell(d.get('kld_max'), 4)} | {cell(d.get('rms_delta_p'), 4)} | {cell(d.get('ln_ppl_ratio'), 4)} |"
            )
    lines += [
        "",
        "Flips (this run): test items whose correctness changed, the reference against each candidate",
        "",
        "| candidate | accuracy | correct → incorrect | incorrect → correct | wrong → other wrong | flip rate |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["characteristic"] == "prediction_errors":
            d = row.get("details") or {}
            flips = d.get("flips") or {}
            lines.append(
                f"| {row['candidate']} | {cell(d.get('candidate_accuracy'))} | {flips.get('correct_to_incorrect', 'n/a')} | "
                f"{flips.get('incorrect_to_correct', 'n/a')} | {flips.get('wrong_to_other_wrong', 'n/a')} | "
                f"{cell(flips.get('flip_rate'))} |"
            )
    return "\n".join(lines) + "\n"


def available(candidate: str) -> bool:
    """Whether a candidate can be built here; if not, one line says why and what to install."""
    if candidate in GGUF:
        import importlib.util

        from miniature.tools import compress as compress_module

        why = (
            "this version of `miniature compress` writes no GGUF (--format gguf)"
            if "gguf" not in getattr(compress_module, "FORMATS", ())
            else "it needs llama_cpp; fix: pip install 'pytest-miniature[gguf]'"
            if importlib.util.find_spec("llama_cpp") is None
            else _converter_problem()
        )
        if why:
            print(f"miniature demo --decoder: skipping candidate {candidate!r}: {why}", file=sys.stderr, flush=True)
        return why is None
    return encoder_demo._available(candidate, CANDIDATE_PACKAGES)


def _converter_problem() -> str | None:
    """Why llama.cpp's converter cannot be found (``$MINIATURE_LLAMA_CPP``), or None."""
    from miniature.tools.gguf_export import GgufExportError, converter_path

    try:
        converter_path()
    except GgufExportError as error:
        return str(error)
    return None


def decoder_demo(
    *,
    size: str = "quick",
    cache_dir: str | Path | None = None,
    report_dir: str | Path = Path("reports") / "demo-decoder",
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    attack_size: int | None = None,
    html: bool = True,
    progress: bool = True,
    threads: int | None = None,
    pytest_args: Sequence[str] = (),
) -> DemoResult:
    """Train (or reuse) the demo's decoder, build its candidates and gate them through pytest.

    The arguments are :func:`miniature.tools.demo.demo`'s; ``candidates`` pick from
    :data:`CANDIDATES` (those whose packages are missing are skipped with one line).
    """
    started, wall_start = time.perf_counter(), time.time()
    plan = encoder_demo.check_request(size, candidates, attack_size, threads, sizes=SIZES, known=CANDIDATES)
    say = encoder_demo._printer(progress)
    candidates = [c for c in candidates if available(c)]
    cache = (Path(cache_dir).expanduser() if cache_dir is not None else encoder_demo.default_cache_dir()).resolve()
    report = Path(report_dir).expanduser().resolve()
    seconds: dict[str, float] = {}
    data = encoder_demo._demo_data(plan)
    say(
        f"miniature demo --decoder ({plan.name}): the demo's own small Llama, trained on the built-in "
        f"reviews, vs {', '.join(c for c in candidates if c != 'reference') or 'itself'}; cache {cache}"
    )
    with encoder_demo._timed(seconds, "train"):
        reference_dir = train_decoder(cache / "decoder-demo", data, plan, progress=progress)
    work = cache / "demo-decoder" / plan.name
    models = {"reference": encoder_demo._named_link(work / MODEL_NAMES["reference"], reference_dir)}
    with encoder_demo._timed(seconds, "compress"):
        from miniature.tools.compress import compress

        for name in candidates:
            if name != "reference":
                extra: dict[str, Any] = (
                    {"distil_texts": training_texts(data.train), "distil_epochs": plan.distil_epochs}
                    if CANDIDATES[name].get("distil")
                    else {}
                )
                models[name] = compress(
                    models["reference"],
                    work / MODEL_NAMES[name],
                    overwrite=True,
                    progress=progress,
                    **CANDIDATES[name],
                    **extra,
                )
    with encoder_demo._timed(seconds, "attack_model"):
        attack_model = build_attack_model(
            cache / "attack-lm",
            data.train.texts,
            data.holdout.texts,
            steps=plan.lm_head_steps,
            rounds=plan.lm_mask_rounds,
            progress=progress,
        )
    args = encoder_demo.gate_arguments(
        models, candidates, attack_model, cache=cache, report_dir=report, plan=plan, attack_size=attack_size, html=html
    )
    from miniature.core.data import BUILTIN_LABEL_WORDS

    args += [
        "--prompt-template=" + PROMPT_TEMPLATE.replace("\n", "\\n"),
        "--verbalizer=" + ",".join(f"{i}={w}" for i, w in enumerate(BUILTIN_LABEL_WORDS)),
    ]
    args += (["-s"] if progress else []) + list(pytest_args)
    with encoder_demo._timed(seconds, "gate"):
        exit_code = encoder_demo._run_gate_checks(args)
    seconds["total"] = time.perf_counter() - started
    result = DemoResult(
        exit_code=exit_code,
        report_dir=report,
        report_json=encoder_demo._written_since(report / "latest.json", wall_start),
        report_html=encoder_demo._written_since(report / "report.html", wall_start),
        models={MODEL_NAMES[k]: v for k, v in models.items()},
        attack_model=attack_model,
        seconds={k: round(v, 1) for k, v in seconds.items()},
        reference_name=MODEL_NAMES["reference"],
    )
    if result.figures():
        from miniature.core.cache import atomic_write_text

        figures = phenomenon(result.figures())
        print("\n".join(phenomenon_lines(figures)), flush=True)
        atomic_write_text(report / "tables.md", tables(result.figures()))
        record = json.loads((reference_dir / RECORD).read_text("utf-8"))
        atomic_write_text(
            report / "demo.json",
            json.dumps(
                {
                    "demo": "decoder",
                    "size": plan.name,
                    "phenomenon": figures,
                    "reference_training": record,
                    "seconds": result.seconds,
                    "models": {k: str(v) for k, v in result.models.items()},
                },
                indent=2,
                default=str,
            ),
        )
    say(
        f"miniature demo --decoder: gate exit code {exit_code}; report {result.report_json or '(none)'}"
        + "; seconds "
        + ", ".join(f"{k} {v}" for k, v in result.seconds.items())
    )
    return result


# -- the reference ----------------------------------------------------------------------------
def training_texts(train: Any) -> list[str]:
    """The training reviews as the model learns them: the prompt, then the label word."""
    from miniature.core.data import BUILTIN_LABEL_WORDS
    from miniature.core.tasks.choices import render_prompt

    return [
        render_prompt(PROMPT_TEMPLATE, text) + " " + BUILTIN_LABEL_WORDS[label]
        for text, label in zip(train.texts, train.labels)
    ]


def train_decoder(root: Path, data: Any, plan: DemoSize, *, progress: bool = True) -> Path:
    """The demo's reference: a tokenizer and a small Llama trained on ``data.train``, in a
    folder named by the content hash of everything that shapes it (reused when present)."""
    import torch
    import transformers

    from miniature.core.cache import fingerprint, fingerprint_texts
    from miniature.core.folders import building

    settings = {
        "config": DECODER_CONFIG,
        "tokenizer": TOKENIZER_SETTINGS,
        "epochs": plan.finetune_epochs,
        "learning_rate": LEARNING_RATE,
        "batch_size": 32,
        "seed": 0,
        "prompt_template": PROMPT_TEMPLATE,
        "answer_weight": ANSWER_WEIGHT,
    }
    texts = training_texts(data.train)
    key = fingerprint(
        "decoder-demo", FORMAT_VERSION, settings, fingerprint_texts(texts), torch.__version__, transformers.__version__
    )
    target = Path(root) / key

    def complete(path: Path) -> bool:
        return (path / RECORD).is_file() and (path / "config.json").is_file()

    if complete(target):
        return target
    with building(target, complete=complete) as built:
        started = time.perf_counter()
        tokenizer = _train_tokenizer(data.train.texts, built.parent / "tokenizer", built)
        model, losses = _train_model(tokenizer, texts, settings, progress=progress)
        model.save_pretrained(str(built), safe_serialization=True)
        tokenizer.save_pretrained(str(built))
        from miniature.core.cache import atomic_write_text

        record = {
            "format": FORMAT_VERSION,
            "what": "the decoder demo's own small Llama, trained on the built-in film reviews",
            "settings": settings,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "training_texts": len(texts),
            "loss_first_last": [losses[0], sum(losses[-10:]) / len(losses[-10:])],
            "holdout_accuracy": _accuracy(built, data.holdout),
            "seconds": round(time.perf_counter() - started, 1),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        }
        atomic_write_text(built / RECORD, json.dumps(record, indent=2, sort_keys=True))
    return target


def train_sentencepiece(texts: Sequence[str], scratch: Path, settings: dict[str, Any]) -> Any:
    """A SentencePiece model of ``texts`` (unk 0, BOS 1, EOS 2 as Llama's; one thread:
    deterministic) trained in ``scratch``, as a slow ``LlamaTokenizer``: llama.cpp's converter
    reads its ``tokenizer.model`` (it cannot convert a word-level tokenizer)."""
    try:
        import sentencepiece
    except ImportError:
        raise MiniatureError(
            "a SentencePiece tokenizer is trained here; fix: pip install 'pytest-miniature[decoder]'"
        ) from None
    import transformers

    scratch.mkdir(parents=True, exist_ok=True)
    corpus = scratch / "corpus.txt"
    corpus.write_text("\n".join(" ".join(t.split()) for t in texts) + "\n", "utf-8")
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(scratch / "sp"),
        **settings,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    return transformers.LlamaTokenizer(str(scratch / "sp.model"), legacy=False)


def _train_tokenizer(texts: Sequence[str], scratch: Path, out: Path) -> Any:
    """The demo's tokenizer (:data:`TOKENIZER_SETTINGS`), loaded fast, as the gate loads it."""
    import transformers

    slow = train_sentencepiece(texts, scratch, TOKENIZER_SETTINGS)
    slow.save_pretrained(str(scratch / "slow"))
    return transformers.AutoTokenizer.from_pretrained(str(scratch / "slow"))


def _train_model(tokenizer: Any, texts: list[str], settings: dict[str, Any], *, progress: bool) -> tuple[Any, list]:
    """The Llama of :data:`DECODER_CONFIG`, seeded, trained on ``texts`` (each with BOS and
    EOS) with the causal-LM loss plus :data:`ANSWER_WEIGHT` times the answer's loss, AdamW with
    20 warm-up steps and a linear decay."""
    import torch
    import transformers
    from tqdm.auto import tqdm

    torch.manual_seed(settings["seed"])
    generator = torch.Generator().manual_seed(settings["seed"])
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **settings["config"],
    )
    model = transformers.LlamaForCausalLM(config)
    encoded = [ids + [tokenizer.eos_token_id] for ids in tokenizer(texts)["input_ids"]]
    # where each answer starts: after the prompt's tokens, as the gate splits prompt and choice
    prompts = [text[: text.rindex(" ")] for text in texts]
    starts = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    size = settings["batch_size"]
    total = max(1, math.ceil(settings["epochs"] * len(texts) / size))
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings["learning_rate"], weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: min(1.0, (step + 1) / 20) * (1 - step / total))
    losses: list[float] = []
    model.train()
    with tqdm(total=total, desc="training the demo's decoder", unit="step", disable=not progress, leave=False) as bar:
        while len(losses) < total:
            order = torch.randperm(len(texts), generator=generator).tolist()
            for start in range(0, len(order), size):
                if len(losses) >= total:
                    break
                chosen = order[start : start + size]
                width = max(len(encoded[i]) for i in chosen)
                ids = torch.full((len(chosen), width), tokenizer.eos_token_id, dtype=torch.long)
                mask = torch.zeros_like(ids)
                answer = torch.zeros_like(ids, dtype=torch.bool)
                for k, i in enumerate(chosen):
                    ids[k, : len(encoded[i])] = torch.tensor(encoded[i])
                    mask[k, : len(encoded[i])] = 1
                    answer[k, starts[i] : len(encoded[i]) - 1] = True  # the label word, not EOS
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
                per_token = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none"
                ).view_as(ids[:, 1:])
                real, said = mask[:, 1:].bool(), answer[:, 1:]
                loss = per_token[real].mean() + settings["answer_weight"] * per_token[said].mean()
                optimiser.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimiser.step()
                schedule.step()
                losses.append(float(loss.detach()))
                bar.update(1)
    return model.eval(), losses


def _accuracy(model_dir: Path, holdout: Any) -> float:
    """Held-out accuracy of the choice log-likelihood answer, scored as the gate scores it."""
    import numpy as np

    from miniature.core.data import BUILTIN_LABEL_WORDS
    from miniature.core.models import load_model

    wrapper = load_model(
        str(model_dir), head="classification", choices=list(BUILTIN_LABEL_WORDS), prompt_template=PROMPT_TEMPLATE
    )
    answers = wrapper.logits(list(holdout.texts)).argmax(1)
    return round(float(np.mean(answers == np.asarray(holdout.labels))), 4)
