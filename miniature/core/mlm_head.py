"""A masked LM for BERT-Attack from an encoder that ships without an MLM head: the packaged
all-MiniLM-L6-v2 with a ``BertForMaskedLM`` head fitted to some texts (the demo's attack
model), cached by content as :mod:`miniature.core.finetune` caches fine-tuned models.

Only the head's transform layer and output bias are trained; the encoder and the decoder,
tied to the word embeddings, stay frozen. ``miniature_attack_lm.json`` beside the weights
records the held-out masked-token accuracy before and after the fit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from miniature.errors import MiniatureError

#: The record written beside the fitted model.
ATTACK_LM_RECORD = "miniature_attack_lm.json"
#: Bump when the attack-model recipe changes, so an older cached one is not reused.
ATTACK_LM_VERSION = 1


def build_attack_model(
    output_root: str | Path,
    texts: Sequence[str],
    eval_texts: Sequence[str],
    *,
    steps: int = 300,
    rounds: int = 2,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """A masked LM from all-MiniLM-L6-v2: its encoder plus an MLM head fitted to ``texts``.

    Only the head's transform layer and output bias are trained (the encoder and the
    word-embedding decoder are frozen), on ``rounds`` maskings of every text with BERT's
    recipe (15 % of tokens; 80 % [MASK], 10 % random, 10 % kept), for ``steps`` AdamW
    steps of ``batch_size`` masked positions. Cached under ``output_root`` by the encoder's
    files, the texts and the settings; ``miniature_attack_lm.json`` records masked-token
    top-1/top-10 accuracy on ``eval_texts`` before and after.
    """
    from miniature.core.cache import atomic_write_text, fingerprint, fingerprint_texts
    from miniature.core.folders import building
    from miniature.core.models import fingerprint_files, packaged_model_dir

    if not texts or not eval_texts:
        raise MiniatureError(
            "the attack model needs training and evaluation texts; fix: pass non-empty texts and eval_texts"
        )
    if steps < 1 or rounds < 1 or batch_size < 1:
        raise ValueError(f"steps, rounds and batch_size must be >= 1, got {steps}, {rounds}, {batch_size}")
    source = packaged_model_dir("all-minilm-l6-v2")
    settings = {
        "steps": steps,
        "rounds": rounds,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seed": seed,
        "max_length": 128,
    }
    source_print = fingerprint_files(source)
    key = fingerprint(
        "attack-lm", ATTACK_LM_VERSION, source_print, fingerprint_texts(texts), fingerprint_texts(eval_texts), settings
    )
    root = Path(output_root).expanduser()
    target = root / key
    if (target / ATTACK_LM_RECORD).is_file() and (target / "config.json").is_file():
        return target
    with building(target, complete=lambda done: (done / ATTACK_LM_RECORD).is_file()) as built:
        started = time.perf_counter()
        record = fit_mlm_head(source, list(texts), list(eval_texts), settings, built, progress=progress)
        record.update(
            key=key,
            seconds=round(time.perf_counter() - started, 1),
            base_model={"alias": "all-minilm-l6-v2", "source": str(source), "fingerprint": source_print},
            data={"train_texts": len(texts), "eval_texts": len(eval_texts)},
            settings=settings,
        )
        atomic_write_text(built / ATTACK_LM_RECORD, json.dumps(record, indent=2, sort_keys=True))
    return target


def fit_mlm_head(
    source: Path, texts: list[str], eval_texts: list[str], settings: dict[str, Any], output: Path, *, progress: bool
) -> dict[str, Any]:
    """Fit the MLM head of ``BertForMaskedLM`` on ``source`` (encoder and decoder frozen), save
    it to ``output``; the fit's record (masked-token accuracy before and after)."""
    import platform

    import torch
    import transformers
    from tqdm.auto import tqdm

    transformers.logging.set_verbosity_error()
    transformers.set_seed(settings["seed"])
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source))
    model = transformers.BertForMaskedLM.from_pretrained(str(source), use_safetensors=True)
    model.eval()  # no dropout: the encoder is frozen and its outputs are computed once
    head = model.cls
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trained = list(head.predictions.transform.parameters()) + [head.predictions.bias]
    for parameter in trained:
        parameter.requires_grad_(True)
    generator = torch.Generator().manual_seed(settings["seed"])
    hidden, labels = masked_states(
        model, tokenizer, texts, settings["rounds"], generator, settings["max_length"], progress=progress, what="train"
    )
    eval_hidden, eval_labels = masked_states(
        model, tokenizer, eval_texts, 1, generator, settings["max_length"], progress=progress, what="eval"
    )

    def accuracy() -> dict[str, float]:
        with torch.no_grad():
            logits = head(eval_hidden)
            top = logits.topk(10, dim=-1).indices
            return {
                "loss": float(torch.nn.functional.cross_entropy(logits, eval_labels)),
                "top1": float((top[:, 0] == eval_labels).float().mean()),
                "top10": float((top == eval_labels[:, None]).any(1).float().mean()),
            }

    before = accuracy()
    optimiser = torch.optim.AdamW(trained, lr=settings["learning_rate"])
    losses = []
    for _ in tqdm(
        range(settings["steps"]),
        desc="fitting the attack model's MLM head",
        unit="step",
        disable=not progress,
        leave=False,
    ):
        index = torch.randint(len(hidden), (settings["batch_size"],), generator=generator)
        loss = torch.nn.functional.cross_entropy(head(hidden[index]), labels[index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    after = accuracy()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    model.save_pretrained(str(output), safe_serialization=True)
    tokenizer.save_pretrained(str(output))
    return {
        "what": "BertForMaskedLM: all-MiniLM-L6-v2's encoder (frozen) with an MLM head "
        "fitted to the demo's training texts (transform layer and output bias "
        "trained; decoder tied to the frozen word embeddings)",
        "masked_positions": {"train": int(len(labels)), "eval": int(len(eval_labels))},
        "eval_before": before,
        "eval_after": after,
        "train_loss_first_last": [losses[0], sum(losses[-20:]) / len(losses[-20:])],
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    }


def masked_states(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    rounds: int,
    generator: Any,
    max_length: int,
    *,
    progress: bool,
    what: str,
) -> tuple[Any, Any]:
    """Last-layer states at BERT-masked positions and the tokens that were there."""
    import torch
    from tqdm.auto import tqdm

    encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    special = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id}
    states, targets = [], []
    batches = [(r, i) for r in range(rounds) for i in range(0, len(encoded), 64)]
    for _, start in tqdm(
        batches, desc=f"encoding masked {what} texts", unit="batch", disable=not progress, leave=False
    ):
        batch = tokenizer.pad({"input_ids": encoded[start : start + 64]}, return_tensors="pt")
        inputs, mask = batch["input_ids"].clone(), batch["attention_mask"]
        candidates = ~torch.isin(inputs, torch.tensor(sorted(special)))
        chosen = (torch.rand(inputs.shape, generator=generator) < 0.15) & candidates
        draw = torch.rand(inputs.shape, generator=generator)
        random_ids = torch.randint(len(tokenizer), inputs.shape, generator=generator)
        targets.append(inputs[chosen])
        inputs[chosen & (draw < 0.8)] = tokenizer.mask_token_id
        swap = chosen & (draw >= 0.8) & (draw < 0.9)
        inputs[swap] = random_ids[swap]
        with torch.inference_mode():
            hidden = model.bert(input_ids=inputs, attention_mask=mask).last_hidden_state
        states.append(hidden[chosen].clone())
    return torch.cat(states), torch.cat(targets)
