"""Choice log-likelihoods the lm-evaluation-harness way: encoding, a brute-force twin, and
hand-worked cases."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from miniature.core.tasks.choices import choice_loglikelihoods, encode_pair, normalised_by_length, render_prompt


@pytest.fixture(scope="module")
def decoders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from miniature.tools.testing_decoder import make_tiny_decoders

    return make_tiny_decoders(tmp_path_factory.mktemp("decoders"))


def load(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


PROMPTS = [
    "Review: the plot was good .\nSentiment:",
    "Review: the cast felt dull and the pacing was slow , but the ending was good .\nSentiment: ",
    "Review: boring\nSentiment:",
]
CHOICES = [["positive", "negative"], ["negative", "positive", "good"], ["positive", "negative"]]


def brute_force(model, tokenizer, prompt: str, choice: str) -> float:
    """One unpadded forward pass over the whole text; the choice's tokens summed."""
    import torch

    context, continuation = encode_pair(tokenizer, prompt, f" {choice}")
    ids = torch.tensor([context + continuation])
    with torch.inference_mode():
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    return sum(float(log_probs[len(context) + i - 1, token]) for i, token in enumerate(continuation))


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_batched_scores_equal_one_pass_per_choice(decoders, name: str) -> None:
    model, tokenizer = load(decoders[name])
    scores = choice_loglikelihoods(model, tokenizer, PROMPTS, CHOICES, max_length=128, batch_size=3)
    for item, (prompt, options) in enumerate(zip(PROMPTS, CHOICES)):
        expected = [brute_force(model, tokenizer, prompt, option) for option in options]
        np.testing.assert_allclose(scores.loglikelihoods[item], expected, rtol=1e-4, atol=1e-4)
    assert scores.truncated == 0


def test_trailing_space_of_the_prompt_moves_to_the_continuation(decoders) -> None:
    _, tokenizer = load(decoders["llama"])
    assert encode_pair(tokenizer, "Sentiment: ", "positive") == encode_pair(tokenizer, "Sentiment:", " positive")
    context, continuation = encode_pair(tokenizer, "", "positive")
    assert context == [tokenizer.bos_token_id] and len(continuation) == 1


class Uniform:
    """A causal LM that gives every token the same probability: log-likelihood −n·ln V."""

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab

    def eval(self) -> "Uniform":
        return self

    def __call__(self, input_ids, attention_mask):
        import torch

        return SimpleNamespace(logits=torch.zeros((*input_ids.shape, self.vocab)))


def test_a_uniform_model_scores_minus_n_log_v(decoders) -> None:
    _, tokenizer = load(decoders["llama"])
    vocab = len(tokenizer)
    scores = choice_loglikelihoods(
        Uniform(vocab), tokenizer, ["Review: good"], [["positive", "very good"]], max_length=64
    )
    np.testing.assert_allclose(scores.loglikelihoods[0], [-math.log(vocab), -2 * math.log(vocab)], rtol=1e-6)
    # acc_norm divides by characters: −ln V / 8 against −2 ln V / 9
    np.testing.assert_allclose(
        normalised_by_length(scores.loglikelihoods[0], ["positive", "very good"]),
        [-math.log(vocab) / 8, -2 * math.log(vocab) / 9],
    )


def test_long_prompts_are_cut_from_the_left(decoders) -> None:
    model, tokenizer = load(decoders["llama"])
    long_prompt = "Review: " + "the plot was good . " * 30 + "\nSentiment:"
    scores = choice_loglikelihoods(model, tokenizer, [long_prompt], [["positive"]], max_length=16)
    assert scores.truncated == 1
    context, continuation = encode_pair(tokenizer, long_prompt, " positive")
    kept = (context + continuation)[-17:]
    import torch

    with torch.inference_mode():
        log_probs = torch.log_softmax(model(input_ids=torch.tensor([kept[:-1]])).logits[0].double(), dim=-1)
    assert scores.loglikelihoods[0][0] == pytest.approx(float(log_probs[-1, continuation[-1]]), abs=1e-4)


def test_bad_requests_are_refused(decoders) -> None:
    model, tokenizer = load(decoders["llama"])
    with pytest.raises(ValueError, match="has no choices"):
        choice_loglikelihoods(model, tokenizer, ["x"], [[]], max_length=16)
    with pytest.raises(ValueError, match="2 prompts but 1"):
        choice_loglikelihoods(model, tokenizer, ["x", "y"], [["a"]], max_length=16)
    with pytest.raises(ValueError, match="no {text} field"):
        render_prompt("Review:", "good")
    assert render_prompt("Review: {text} {json}", "good") == "Review: good {json}"


def test_choices_with_the_same_inputs_share_one_row(decoders) -> None:
    """One-token choices of an item have the same inputs (the context): they run as one row,
    scored as if each ran alone."""
    model, tokenizer = load(decoders["llama"])
    options = [
        [w for w in ("good", "bad", "dull", "fine") if len(encode_pair(tokenizer, p, f" {w}")[1]) == 1] for p in PROMPTS
    ]
    assert all(len(o) >= 2 for o in options), "the tiny tokenizer should have one-token words"
    rows: list[int] = []

    def counted(**inputs):
        rows.append(int(inputs["input_ids"].shape[0]))
        return model(**inputs)

    counted.eval = model.eval  # type: ignore[attr-defined]
    scores = choice_loglikelihoods(counted, tokenizer, PROMPTS, options, max_length=128, batch_size=8)
    assert sum(rows) == len(PROMPTS)
    for item, (prompt, words) in enumerate(zip(PROMPTS, options)):
        expected = [brute_force(model, tokenizer, prompt, w) for w in words]
        np.testing.assert_allclose(scores.loglikelihoods[item], expected, rtol=1e-4, atol=1e-4)
