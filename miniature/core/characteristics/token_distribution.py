"""Token distribution: do two decoder LMs predict the same next tokens, with the same
probabilities, on the same text?

What ``llama-perplexity --kl-divergence`` reports for a quantized GGUF against its base,
here for any two causal LMs that share a tokenizer: the KL divergence of the candidate's
next-token distribution from the reference's (mean with its standard error, percentiles),
the rate at which both models' most likely token is the same, Δp (the change in the
probability of the observed token) and ln(PPL(candidate)/PPL(reference)) with its paired
error; the figures come from :mod:`miniature.core.token_stats`. The gate judges the same-top
rate; mean KLD stands beside it.

Two ways to choose the scored positions (``--token-scoring``): ``texts`` scores every next
token of every text on its own; ``llama-cpp`` joins the texts, tokenizes them once, cuts
windows of ``--n-ctx`` tokens and scores the second half of each, exactly as the perplexity
tool does, so the figures can be set beside its printout for the same models.

Exact over the whole vocabulary without holding a corpus's logits: both models run on one
batch, the per-token values are kept (five numbers and two token ids a position), the
logits dropped; the per-token values are cached, so a warm run computes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from miniature.core.characteristics.base import Measurement
from miniature.core.token_stats import per_token_torch, summarise
from miniature.errors import NotApplicable

if TYPE_CHECKING:  # pragma: no cover
    from miniature.core.characteristics.base import Pair
    from miniature.core.characteristics.view import GateView
    from miniature.core.models import ModelWrapper

#: fewer scored tokens than this and the statistics mean little (llama.cpp prints none below 100)
MIN_TOKENS = 100
#: evidence rows: the positions of largest KL divergence
EVIDENCE_ROWS = 10
#: the largest :class:`StoredLogits` file written (bytes): 2 GiB, e.g. 16,000 positions of a
#: 32,000-token vocabulary
STORED_LOGITS_MAX_BYTES = 2 * 1024**3
#: tokens of context shown before a position in the evidence
CONTEXT_TOKENS = 12
#: per-token arrays kept for each scored position
ARRAYS = (
    "kld",
    "same_top",
    "nll_reference",
    "nll_candidate",
    "delta_p",
    "top_reference",
    "top_candidate",
    "target",
    "item",
    "position",
)


def same_tokenizer_problem(reference: "ModelWrapper", candidate: "ModelWrapper") -> str | None:
    """Why the two models' next-token distributions cannot be compared token by token, else None."""
    for wrapper in (reference, candidate):
        if not getattr(wrapper, "decoder", False):
            return (
                f"model {wrapper.name!r} is not a decoder LM (a masked LM or an encoder has no "
                "next-token distribution); the token distribution compares causal LMs only"
            )
    if reference.tokenizer.get_vocab() != candidate.tokenizer.get_vocab():
        return (
            f"{reference.name!r} and {candidate.name!r} have different tokenizers, so their "
            "next-token distributions are over different vocabularies; fix: compare models that "
            "share a tokenizer (a compressed copy and its base do)"
        )
    if int(reference.model.config.vocab_size) != int(candidate.model.config.vocab_size):
        return (
            f"{reference.name!r} and {candidate.name!r} have output layers of different sizes "
            f"({reference.model.config.vocab_size} and {candidate.model.config.vocab_size})"
        )
    return None


def text_windows(
    wrapper: "ModelWrapper", texts: list[str], *, scoring: str, n_ctx: int, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Batches of ``(input ids (b, L), attention mask (b, L), first scored position)`` in the
    reference's tokenization; windows are right-padded with the pad id."""
    tokenizer = wrapper.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if scoring == "llama-cpp":
        from miniature.core.token_stats import llama_cpp_chunks

        ids = tokenizer("\n".join(texts), add_special_tokens=True)["input_ids"]
        bos = tokenizer.bos_token_id
        adds_bos = bos is not None and len(ids) > 0 and ids[0] == bos
        try:
            chunks = llama_cpp_chunks(np.asarray(ids), n_ctx, bos_token_id=bos if adds_bos else None)
        except ValueError as error:
            raise NotApplicable(f"token distribution: {error}") from None
        for start in range(0, len(chunks), batch_size):
            batch = np.stack([c.tokens for c in chunks[start : start + batch_size]])
            yield batch, np.ones_like(batch), chunks[0].first
        return
    encoded = [
        tokenizer(text, add_special_tokens=True, truncation=True, max_length=wrapper.max_length)["input_ids"]
        for text in texts
    ]
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), i))
    for start in range(0, len(order), batch_size):
        rows = [encoded[i] for i in order[start : start + batch_size]]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), pad, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = row
            mask[r, : len(row)] = 1
        yield ids, mask, 0


class StoredLogits:
    """Each model's logits at the scored positions of one set of windows, as a float32 ``.npy``
    in the cache (read memory-mapped), so a model in several pairs runs once: the base-logits
    file of ``llama-perplexity --kl-divergence-base``, kept by miniature. Files larger than
    :data:`STORED_LOGITS_MAX_BYTES` are not written (both models then run for each pair)."""

    def __init__(self, cache: Any, windows: list[tuple[np.ndarray, np.ndarray, int]], vocab: int) -> None:
        from miniature.core.cache import fingerprint

        self.cache, self.vocab = cache, int(vocab)
        self.total = sum(max(0, int(n) - 1 - first) for _, mask, first in windows for n in mask.sum(axis=1))
        self.key = fingerprint("token-logits", [(ids.tolist(), mask.tolist(), first) for ids, mask, first in windows])
        self.enabled = cache.root is not None and self.total * self.vocab * 4 <= STORED_LOGITS_MAX_BYTES

    def path(self, model_key: str) -> Any:
        from miniature.core.cache import fingerprint

        return self.cache.path("token_logits", fingerprint(self.key, model_key), ".npy")

    def load(self, model_key: str) -> np.ndarray | None:
        """The model's stored logits (memory-mapped), or None when absent, refreshed or unfit."""
        if not self.enabled or self.cache.refresh:
            return None
        path = self.path(model_key)
        if not path.is_file():
            return None
        try:
            stored = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return None
        fits = stored.dtype == np.float32 and stored.shape == (self.total, self.vocab)
        return stored if fits else None


def token_values(
    reference: "ModelWrapper",
    candidate: "ModelWrapper",
    texts: list[str],
    *,
    scoring: str,
    n_ctx: int,
    batch_size: int,
    cache: Any = None,
    model_keys: tuple[str, str] | None = None,
) -> dict[str, np.ndarray]:
    """Per scored position: :func:`~miniature.core.token_stats.per_token`'s values, both
    models' top tokens, the observed token, and where it is (batch row order).

    With a ``cache`` and the two models' fingerprints (``model_keys``), each model's logits
    come from its :class:`StoredLogits` file when there is one, and are written there when
    it runs; the values are the same either way."""
    import torch

    windows = list(text_windows(reference, texts, scoring=scoring, n_ctx=n_ctx, batch_size=batch_size))
    wrappers = (reference, candidate)
    files = StoredLogits(cache, windows, int(reference.model.config.vocab_size)) if cache is not None else None
    stored: list[np.ndarray | None] = [None, None]
    paths: list[Any] = [None, None]
    if files is not None and model_keys is not None:
        stored = [files.load(key) for key in model_keys]
        if files.enabled:
            paths = [None if stored[i] is not None else files.path(model_keys[i]) for i in range(2)]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in ARRAYS}
    item, offset = 0, 0
    with contextlib.ExitStack() as stack, torch.inference_mode():
        writers = [
            None if path is None or files is None else stack.enter_context(_npy_writer(path, files)) for path in paths
        ]
        for ids, mask, first in windows:
            logits: list[Any] = [None, None]
            for i, wrapper in enumerate(wrappers):
                if stored[i] is None:
                    inputs = {
                        "input_ids": torch.from_numpy(ids).to(wrapper.device),
                        "attention_mask": torch.from_numpy(mask).to(wrapper.device),
                    }
                    logits[i] = wrapper.model(**inputs).logits
                    wrapper.forward_calls += 1
            # the logits at position t predict token t + 1: positions first … length − 2 of each
            # row (right padding: a slice of real tokens, read as a view, never copied)
            for row, length in enumerate(mask.sum(axis=1).tolist()):
                if length - 1 <= first:
                    continue
                span, count = slice(first, length - 1), length - 1 - first
                rows: list[Any] = []
                for i in range(2):
                    held = stored[i]
                    if held is None:
                        rows.append(logits[i][row, span].cpu())
                        writer = writers[i]
                        if writer is not None:
                            writer.write(np.ascontiguousarray(rows[i].float().numpy()).tobytes())
                    else:
                        rows.append(torch.from_numpy(np.array(held[offset : offset + count])))
                offset += count
                targets = ids[row, first + 1 : length]
                values = per_token_torch(rows[0], rows[1], torch.from_numpy(targets))
                for name, column in values.items():
                    parts[name].append(column)
                parts["target"].append(targets)
                parts["item"].append(np.full(targets.size, item + row))
                parts["position"].append(np.arange(first + 1, length))
            del logits  # one batch of logits at a time
            item += len(ids)
    if not parts["kld"]:
        raise NotApplicable("token distribution: no text to score; fix: pass --text-data")
    return {name: np.concatenate(columns) for name, columns in parts.items()}


@contextlib.contextmanager
def _npy_writer(path: Any, files: StoredLogits) -> Iterator[Any]:
    """A ``.npy`` of (files.total, files.vocab) float32 written row block by row block, in place
    atomically when complete."""
    from miniature.core.cache import atomic_file

    with atomic_file(path) as handle:
        header = {"descr": "<f4", "fortran_order": False, "shape": (files.total, files.vocab)}
        np.lib.format.write_array_header_1_0(handle, header)
        yield handle


def evidence(values: dict[str, np.ndarray], tokenizer: Any, windows: dict[int, np.ndarray]) -> list[dict[str, Any]]:
    """The positions of largest KL divergence: the text before them, the observed token and
    the token each model put first."""
    rows = []
    for index in np.argsort(-values["kld"], kind="stable")[:EVIDENCE_ROWS]:
        item, position = int(values["item"][index]), int(values["position"][index])
        ids = windows.get(item)
        context = "" if ids is None else tokenizer.decode(ids[max(0, position - CONTEXT_TOKENS) : position].tolist())
        rows.append(
            {
                "text": context,
                "observed": tokenizer.decode([int(values["target"][index])]),
                "reference_top": tokenizer.decode([int(values["top_reference"][index])]),
                "candidate_top": tokenizer.decode([int(values["top_candidate"][index])]),
                "kld": float(values["kld"][index]),
                "delta_p": float(values["delta_p"][index]),
            }
        )
    return rows


def compare_in_gate(gate: "GateView", pair: "Pair", stage: str | None) -> Measurement:
    """The gate's comparison: both models on the same tokens, their per-token values cached."""
    from miniature.core.cache import fingerprint, fingerprint_texts

    for name in (pair.reference, pair.candidate):
        if not gate.is_decoder(name):
            raise NotApplicable(
                f"model {name!r} is not a decoder LM (a masked LM or an encoder has no "
                "next-token distribution); the token distribution compares causal LMs only"
            )
    reference, candidate = gate.wrapper(pair.reference), gate.wrapper(pair.candidate)
    problem = same_tokenizer_problem(reference, candidate)
    if problem:
        raise NotApplicable(problem)
    texts, source = gate.token_texts()
    settings = gate.settings
    scoring, n_ctx = settings.token_scoring, settings.n_ctx
    key = fingerprint(
        "token-distribution",
        gate.model_fingerprint(pair.reference, None),
        gate.model_fingerprint(pair.candidate, None),
        fingerprint_texts(texts),
        scoring,
        n_ctx if scoring == "llama-cpp" else reference.max_length,
    )
    values = gate.cache.load_arrays("token_distribution", key)
    if values is None or set(values) != set(ARRAYS):
        values = token_values(
            reference,
            candidate,
            texts,
            scoring=scoring,
            n_ctx=n_ctx,
            batch_size=settings.batch_size,
            cache=gate.cache,
            model_keys=(gate.model_fingerprint(pair.reference, None), gate.model_fingerprint(pair.candidate, None)),
        )
        gate.cache.save_arrays("token_distribution", key, values)
    n = int(values["kld"].size)
    if n < MIN_TOKENS:
        raise NotApplicable(
            f"token distribution: only {n} scored tokens in {source}; at least {MIN_TOKENS} "
            "are needed (llama.cpp prints no statistics below 100); fix: pass more --text-data"
        )
    stats = summarise(values)
    windows = {
        i: ids[m == 1] for i, (ids, m) in enumerate(_all_windows(reference, texts, scoring, n_ctx, settings.batch_size))
    }
    details = stats.to_dict()
    details.pop("details", None)
    details.update(scoring=scoring, text_source=source, **({"n_ctx": n_ctx} if scoring == "llama-cpp" else {}))
    return Measurement(
        figure_name="same-top rate",
        figure=stats.same_top,
        n=n,
        ci_low=max(0.0, stats.same_top - 1.96 * stats.same_top_se),
        ci_high=min(1.0, stats.same_top + 1.96 * stats.same_top_se),
        details=details,
        evidence=evidence(values, reference.tokenizer, windows),
    )


def _all_windows(
    wrapper: "ModelWrapper", texts: list[str], scoring: str, n_ctx: int, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every window's ids and mask, in the order :func:`token_values` numbered them."""
    for ids, mask, _ in text_windows(wrapper, texts, scoring=scoring, n_ctx=n_ctx, batch_size=batch_size):
        yield from zip(ids, mask)
