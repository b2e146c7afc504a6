"""Next-token distribution statistics of a candidate LM against its reference, as
llama.cpp's ``llama-perplexity --kl-divergence`` reports them.

Two steps, both pure numpy: :func:`per_token` turns one batch of both models' logits (and
the observed next tokens) into per-token values, exactly over the whole vocabulary, so a
corpus is processed a batch at a time and only these small arrays are kept;
:func:`summarise` turns the concatenated per-token values into the printout's figures with
the printout's formulas (``tools/perplexity/perplexity.cpp``: ``mean_and_uncertainty``,
``covariance``, its linear-interpolation percentiles). The reference plays llama.cpp's
"base" model, the candidate its "Q".

Where miniature differs from llama.cpp, on purpose: llama.cpp stores the base model's
log-probabilities in 16 bits and skips base probabilities below e^-16 in the KL sum;
here both are exact (float64 log-softmax), so figures agree to about those roundings.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["KLD_PERCENTILES", "DELTA_P_PERCENTILES", "TokenStatistics", "per_token", "summarise", "log_softmax"]

#: the percentiles llama.cpp prints for the KL divergence (besides maximum, median, minimum)
KLD_PERCENTILES: tuple[float, ...] = (99.9, 99.0, 95.0, 90.0, 10.0, 5.0, 1.0, 0.1)
#: and for Δp, the change in the probability of the observed token
DELTA_P_PERCENTILES: tuple[float, ...] = (99.9, 99.0, 95.0, 90.0, 75.0, 25.0, 10.0, 5.0, 1.0, 0.1)
#: per-token fields :func:`per_token` returns
FIELDS: tuple[str, ...] = ("kld", "same_top", "nll_reference", "nll_candidate", "delta_p")
#: and the token each model put first (the fast path returns them too, for the evidence)
TOP_FIELDS: tuple[str, ...] = ("top_reference", "top_candidate")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (max-shifted, as llama.cpp computes it)."""
    values = np.asarray(logits, dtype=np.float64)
    shifted = values - values.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def per_token(reference_logits: np.ndarray, candidate_logits: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """Per-token values for ``n`` positions: ``reference_logits`` and ``candidate_logits`` are
    (n, vocab) logits predicting ``targets`` (n,), the observed next tokens.

    - ``kld``: KL(reference ‖ candidate) = Σ_v p_ref(v) (ln p_ref(v) − ln p_cand(v));
    - ``same_top``: both models' most likely token is the same (ties: the first index, as
      llama.cpp's strict ``>`` scan keeps);
    - ``nll_reference``, ``nll_candidate``: −ln p(target) under each model;
    - ``delta_p``: p_cand(target) − p_ref(target).
    """
    reference = np.asarray(reference_logits)
    candidate = np.asarray(candidate_logits)
    targets = np.asarray(targets)
    if reference.ndim != 2 or reference.shape != candidate.shape:
        raise ValueError(
            f"per_token needs two (n, vocab) logit arrays of one shape, got {reference.shape} "
            f"(reference) and {candidate.shape} (candidate)"
        )
    if targets.shape != (reference.shape[0],) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(
            f"per_token needs one integer target per position ({reference.shape[0]}), got "
            f"shape {targets.shape} of {targets.dtype}"
        )
    if targets.size and (targets.min() < 0 or targets.max() >= reference.shape[1]):
        raise ValueError(f"a target token id is outside the vocabulary of {reference.shape[1]}")
    for name, values in (("reference", reference), ("candidate", candidate)):
        if not np.isfinite(values).all():
            raise ValueError(f"the {name} logits hold NaN or inf")
    log_p = log_softmax(reference)
    log_q = log_softmax(candidate)
    rows = np.arange(targets.size)
    p = np.exp(log_p)
    # 0 · ln 0 is 0: a reference probability that underflows to 0 adds nothing
    kld = np.where(p > 0, p * (log_p - log_q), 0.0).sum(axis=1)
    nll_reference = -log_p[rows, targets]
    nll_candidate = -log_q[rows, targets]
    return {
        "kld": kld,
        "same_top": reference.argmax(axis=1) == candidate.argmax(axis=1),
        "nll_reference": nll_reference,
        "nll_candidate": nll_candidate,
        "delta_p": np.exp(-nll_candidate) - np.exp(-nll_reference),
    }


def mean_and_uncertainty(values: np.ndarray) -> tuple[float, float]:
    """Mean and its standard error, as llama.cpp's ``mean_and_uncertainty`` (0 for n ≤ 10)."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    if n < 1:
        return 0.0, 0.0
    mean = float(values.mean())
    variance = float((values * values).mean()) - mean * mean
    return mean, math.sqrt(variance / (n - 1)) if variance > 0 and n > 10 else 0.0


def covariance_of_means(a: np.ndarray, b: np.ndarray) -> float:
    """The covariance of two paired means, as llama.cpp's ``covariance`` (0 for n < 10)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n = a.size
    if n < 10:
        return 0.0
    return (float((a * b).mean()) - float(a.mean()) * float(b.mean())) / (n - 1)


def percentile(values: np.ndarray, fraction: float) -> float:
    """llama.cpp's percentile: linear interpolation at ``fraction · (n − 1)`` of the sorted values."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    if fraction <= 0:
        return float(ordered[0])
    if fraction >= 1:
        return float(ordered[-1])
    position = fraction * (ordered.size - 1)
    low = int(position)
    weight = position - low
    return float((1 - weight) * ordered[low] + weight * ordered[min(low + 1, ordered.size - 1)])


@dataclass
class TokenStatistics:
    """What ``llama-perplexity --kl-divergence`` prints, for ``n`` scored tokens."""

    n: int
    mean_kld: float
    mean_kld_se: float
    kld_max: float
    kld_median: float
    kld_min: float
    kld_percentiles: dict[str, float]
    same_top: float
    same_top_se: float
    mean_delta_p: float
    mean_delta_p_se: float
    rms_delta_p: float
    rms_delta_p_se: float
    delta_p_max: float
    delta_p_median: float
    delta_p_min: float
    delta_p_percentiles: dict[str, float]
    ppl_reference: float
    ppl_candidate: float
    ln_ppl_ratio: float
    ln_ppl_ratio_se: float
    ln_ppl_correlation: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise(values: dict[str, np.ndarray]) -> TokenStatistics:
    """The printout's figures from :func:`per_token`'s values over all scored tokens."""
    missing = [name for name in FIELDS if name not in values]
    if missing:
        raise ValueError(f"summarise needs the per-token values {', '.join(missing)}")
    kld = np.asarray(values["kld"], dtype=np.float64)
    n = kld.size
    if n < 2:
        raise ValueError(f"token statistics need at least 2 scored tokens, got {n}")
    same = np.asarray(values["same_top"], dtype=bool)
    nll_r = np.asarray(values["nll_reference"], dtype=np.float64)
    nll_c = np.asarray(values["nll_candidate"], dtype=np.float64)
    delta = np.asarray(values["delta_p"], dtype=np.float64)

    mean_kld, mean_kld_se = mean_and_uncertainty(kld)
    top = float(same.mean())
    log_ppl_c, log_ppl_c_se = mean_and_uncertainty(nll_c)
    log_ppl_r, log_ppl_r_se = mean_and_uncertainty(nll_r)
    cov = covariance_of_means(nll_c, nll_r)
    ratio_variance = log_ppl_c_se**2 + log_ppl_r_se**2 - 2.0 * cov
    both_se = log_ppl_c_se * log_ppl_r_se
    mean_dp, mean_dp_se = mean_and_uncertainty(delta)
    mse, mse_se = mean_and_uncertainty(delta * delta)
    rms = math.sqrt(mse)
    return TokenStatistics(
        n=n,
        mean_kld=mean_kld,
        mean_kld_se=mean_kld_se,
        kld_max=float(kld.max()),
        kld_median=float(np.median(kld)),
        kld_min=float(kld.min()),
        kld_percentiles={f"{p:g}": percentile(kld, p / 100) for p in KLD_PERCENTILES},
        same_top=top,
        same_top_se=math.sqrt(top * (1 - top) / (n - 1)),
        mean_delta_p=mean_dp,
        mean_delta_p_se=mean_dp_se,
        rms_delta_p=rms,
        rms_delta_p_se=0.5 / rms * mse_se if rms > 0 else 0.0,
        delta_p_max=float(delta.max()),
        delta_p_median=float(np.median(delta)),
        delta_p_min=float(delta.min()),
        delta_p_percentiles={f"{p:g}": percentile(delta, p / 100) for p in DELTA_P_PERCENTILES},
        ppl_reference=math.exp(log_ppl_r),
        ppl_candidate=math.exp(log_ppl_c),
        ln_ppl_ratio=log_ppl_c - log_ppl_r,
        ln_ppl_ratio_se=math.sqrt(max(ratio_variance, 0.0)),
        ln_ppl_correlation=cov / both_se if both_se > 0 else float("nan"),
    )


@dataclass(frozen=True)
class Chunk:
    """One context window as llama.cpp's perplexity tool evaluates it: ``tokens`` are fed to
    the model, and the logits at positions ``first … len(tokens) − 2`` are scored against
    the tokens that follow them."""

    tokens: np.ndarray
    first: int

    @property
    def targets(self) -> np.ndarray:
        return self.tokens[self.first + 1 :]


def llama_cpp_chunks(
    tokens: np.ndarray, n_ctx: int, *, bos_token_id: int | None = None, n_chunks: int | None = None
) -> list[Chunk]:
    """The windows ``llama-perplexity`` scores for a text tokenized once into ``tokens``:
    ``len(tokens) // n_ctx`` chunks of ``n_ctx`` tokens (at most ``n_chunks``), each one's
    first token replaced by BOS when the vocabulary adds one, and the second half of each
    chunk scored (``n_ctx − 1 − n_ctx // 2`` tokens a chunk). Like the tool, it needs at
    least ``2 · n_ctx`` tokens."""
    ids = np.asarray(tokens, dtype=np.int64)
    if n_ctx < 4:
        raise ValueError(f"n_ctx must be at least 4, got {n_ctx}")
    if ids.size < 2 * n_ctx:
        raise ValueError(
            f"the text tokenizes to {ids.size} tokens; scoring as llama.cpp does with a "
            f"context of {n_ctx} needs at least {2 * n_ctx}: pass more text or a smaller n_ctx"
        )
    count = ids.size // n_ctx if n_chunks is None else min(n_chunks, ids.size // n_ctx)
    chunks = []
    for index in range(count):
        window = ids[index * n_ctx : (index + 1) * n_ctx].copy()
        if bos_token_id is not None:
            window[0] = bos_token_id
        chunks.append(Chunk(window, n_ctx // 2))
    return chunks


def per_token_torch(
    reference_logits: Any, candidate_logits: Any, targets: Any, *, rows_per_chunk: int = 128
) -> dict[str, np.ndarray]:
    """:func:`per_token` for torch logits (and each model's top token), in float32 passes over
    the vocabulary, ``rows_per_chunk`` positions at a time, so no float64 copy of the logits
    is made. What the token distribution runs.

    With p = softmax(z_ref), q = softmax(z_cand) and r = ln p − ln q = (z_ref − z_cand) − c,
    c = lse(z_ref) − lse(z_cand): KL(p ‖ q) = Σ p r = Σ p r + ln Σ p e^(−r), the second term
    zero in exact arithmetic (Σ p e^(−r) = Σ q = 1), written KL = Σ p r + log1p(Σ p expm1(−r))
    so that the rounding of c and of the float32 differences cancels between the two sums. An
    error δ in r moves KL only by O(δ·|r|), so float32 differences keep KL to about 1e-7 of
    itself plus 1e-7·|r| (tested against :func:`per_token`, the float64 twin).

    The reference's exponentials are kept unnormalised, their total summed in float64 so that
    it normalises exactly the values the two sums use; the other sums are float32 (torch's
    cascade summation, an error of the same order as the products' rounding). Top tokens come
    from numpy's argmax, several times faster than torch's on the CPU.
    """
    import torch

    out: dict[str, list[np.ndarray]] = {name: [] for name in FIELDS + TOP_FIELDS}
    f64 = torch.float64
    for start in range(0, int(reference_logits.shape[0]), rows_per_chunk):
        z = reference_logits[start : start + rows_per_chunk].float().contiguous()
        w = candidate_logits[start : start + rows_per_chunk].float().contiguous()
        t = targets[start : start + rows_per_chunk].long()[:, None]
        top_z, top_w = z.numpy().argmax(1), w.numpy().argmax(1)
        max_z, max_w = z.amax(-1, keepdim=True), w.amax(-1, keepdim=True)
        e = torch.sub(z, max_z).exp_()  # p · total
        total = e.sum(-1, keepdim=True, dtype=f64)
        lse_z = max_z.double() + total.log()
        r = torch.sub(w, max_w).exp_()  # the candidate's exponentials, then the buffer of r
        lse_w = max_w.double() + r.sum(-1, keepdim=True).double().log()
        torch.sub(z, w, out=r).sub_((lse_z - lse_w).float())
        scale = 1.0 / total[:, 0]
        first = (e * r).sum(-1).double() * scale
        second = torch.log1p((e * r.neg_().expm1_()).sum(-1).double() * scale)
        nll_reference = (lse_z - z.gather(1, t).double())[:, 0]
        nll_candidate = (lse_w - w.gather(1, t).double())[:, 0]
        out["kld"].append((first + second).numpy())
        out["same_top"].append(top_z == top_w)
        out["top_reference"].append(top_z)
        out["top_candidate"].append(top_w)
        out["nll_reference"].append(nll_reference.numpy())
        out["nll_candidate"].append(nll_candidate.numpy())
        out["delta_p"].append((torch.exp(-nll_candidate) - torch.exp(-nll_reference)).numpy())
    return {name: np.concatenate(parts) for name, parts in out.items()}
