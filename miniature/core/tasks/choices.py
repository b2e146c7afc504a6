"""Choices scored by a causal LM's log-likelihood, the lm-evaluation-harness way.

A classification or multiple-choice item is a prompt and its choices; the model's answer
is the choice whose continuation it finds most likely given the prompt (``acc``), or most
likely per character of the choice (``acc_norm``). The prompt and each continuation are
encoded as lm-evaluation-harness's ``_encode_pair`` does (trailing whitespace of the
prompt moves to the continuation; the continuation's tokens are those of the whole text
after the prompt's; an empty prompt is the BOS/EOS token), truncated from the left to the
model's context, and the continuation's token log-probabilities are summed.

:func:`choice_loglikelihoods` returns, per item, one summed log-likelihood per choice (an
array the classification task reads like logits) and whether each continuation is the
model's greedy one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ChoiceScores",
    "encode_pair",
    "choice_loglikelihoods",
    "normalised_by_length",
    "DEFAULT_TEMPLATE",
    "render_prompt",
]

#: the prompt a text/label item becomes when no ``--prompt-template`` is given
DEFAULT_TEMPLATE = "{text}\nAnswer:"


def render_prompt(template: str, text: str) -> str:
    """``template`` with ``{text}`` filled in (only that field: other braces stay as written)."""
    if "{text}" not in template:
        raise ValueError(
            f"the prompt template {template!r} has no {{text}} field; fix: write where the "
            'item\'s text goes, e.g. "Review: {text}\\nSentiment:"'
        )
    return template.replace("{text}", text)


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-evaluation-harness's encoding of a (context, continuation) request."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        continuation = context[-spaces:] + continuation
        context = context[:-spaces]
    if not context:
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if prefix is None:
            raise ValueError("an empty prompt needs a BOS or EOS token to condition on; the tokenizer has neither")
        return [int(prefix)], list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
    whole = list(tokenizer(context + continuation, add_special_tokens=False)["input_ids"])
    context_ids = list(tokenizer(context, add_special_tokens=False)["input_ids"])
    return context_ids, whole[len(context_ids) :]


@dataclass
class ChoiceScores:
    """Per item: the summed log-likelihood of each choice and whether it is the greedy one."""

    loglikelihoods: list[np.ndarray]
    greedy: list[np.ndarray]
    #: items whose prompt was cut from the left to fit the context
    truncated: int = 0
    #: the model's forward passes and the rows they ran (requests with the same inputs share one)
    batches: int = 0
    rows: int = 0


def normalised_by_length(loglikelihoods: np.ndarray, choices: Sequence[str]) -> np.ndarray:
    """``acc_norm``'s scores: each log-likelihood divided by its choice's length in characters."""
    lengths = np.array([float(len(choice)) for choice in choices])
    if (lengths == 0).any():
        raise ValueError("acc_norm divides by each choice's length; a choice is empty")
    return np.asarray(loglikelihoods, dtype=np.float64) / lengths


def choice_loglikelihoods(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    choices: Sequence[Sequence[str]],
    *,
    max_length: int,
    batch_size: int = 16,
    delimiter: str = " ",
    device: str = "cpu",
    progress: Any = None,
) -> ChoiceScores:
    """Score every choice of every item with ``model`` (a causal LM returning ``.logits``).

    Requests are run longest first in batches of ``batch_size`` distinct inputs, right-padded
    (each request's scored positions are read before its padding, so padding changes
    nothing); requests with the same inputs (the one-token choices of an item) share a row.
    The continuation ``delimiter + choice`` is scored given the prompt.
    """
    import torch

    if len(prompts) != len(choices):
        raise ValueError(f"{len(prompts)} prompts but {len(choices)} lists of choices")
    requests: list[tuple[int, int, list[int], list[int]]] = []  # item, choice, inputs, continuation
    truncated = set()
    for item, (prompt, options) in enumerate(zip(prompts, choices)):
        if not options:
            raise ValueError(f"item {item} has no choices")
        for index, option in enumerate(options):
            context_ids, continuation_ids = encode_pair(tokenizer, prompt, f"{delimiter}{option}")
            if not continuation_ids:
                raise ValueError(f"item {item}: the choice {option!r} encodes to no tokens")
            if len(continuation_ids) > max_length:
                raise ValueError(
                    f"item {item}: the choice {option!r} is {len(continuation_ids)} tokens, longer "
                    f"than the model's context of {max_length}"
                )
            ids = (context_ids + continuation_ids)[-(max_length + 1) :][:-1]
            if len(context_ids) + len(continuation_ids) > max_length + 1:
                truncated.add(item)
            requests.append((item, index, ids, continuation_ids))
    # Requests with the same inputs run once: a one-token choice's inputs are the context
    # alone, so every one-token choice of an item shares one row (exactly the same logits).
    inputs: dict[tuple[int, ...], list[int]] = {}
    for number, (_, _, ids, _) in enumerate(requests):
        inputs.setdefault(tuple(ids), []).append(number)
    rows = sorted(inputs, key=lambda inp: -len(inp))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lls: dict[tuple[int, int], float] = {}
    greedy: dict[tuple[int, int], bool] = {}
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            width = max(len(inp) for inp in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, inp in enumerate(batch):
                input_ids[row, : len(inp)] = torch.tensor(inp)
                mask[row, : len(inp)] = 1
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
            for row, inp in enumerate(batch):
                for number in inputs[inp]:
                    item, index, _, continuation = requests[number]
                    # the logits at the last len(continuation) inputs predict the continuation
                    cont = torch.tensor(continuation)
                    scores = torch.log_softmax(
                        logits[row, len(inp) - len(continuation) : len(inp)].float().cpu(), dim=-1
                    )
                    lls[(item, index)] = float(scores.gather(1, cont[:, None]).sum())
                    greedy[(item, index)] = bool((scores.argmax(dim=-1) == cont).all())
            if progress is not None:
                progress.update(sum(len(inputs[inp]) for inp in batch))
    out_ll, out_greedy = [], []
    for item, options in enumerate(choices):
        out_ll.append(np.array([lls[(item, i)] for i in range(len(options))]))
        out_greedy.append(np.array([greedy[(item, i)] for i in range(len(options))]))
    batches = -(-len(rows) // batch_size)
    return ChoiceScores(out_ll, out_greedy, truncated=len(truncated), batches=batches, rows=len(rows))
