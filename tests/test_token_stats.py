"""Token-distribution statistics: hand-worked cases, a brute-force twin and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from miniature.core.token_stats import DELTA_P_PERCENTILES, KLD_PERCENTILES, per_token, percentile, summarise


def brute_force(reference: np.ndarray, candidate: np.ndarray, targets: np.ndarray) -> dict[str, list[float]]:
    """Per-token values with plain Python floats, one position and one token at a time."""
    out: dict[str, list[float]] = {"kld": [], "same_top": [], "nll_reference": [], "nll_candidate": [], "delta_p": []}
    for ref_row, cand_row, target in zip(reference.tolist(), candidate.tolist(), targets.tolist()):
        z_ref = sum(math.exp(v) for v in ref_row)
        z_cand = sum(math.exp(v) for v in cand_row)
        p = [math.exp(v) / z_ref for v in ref_row]
        q = [math.exp(v) / z_cand for v in cand_row]
        out["kld"].append(sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q) if pi > 0))
        out["same_top"].append(ref_row.index(max(ref_row)) == cand_row.index(max(cand_row)))
        out["nll_reference"].append(-math.log(p[target]))
        out["nll_candidate"].append(-math.log(q[target]))
        out["delta_p"].append(q[target] - p[target])
    return out


def brute_force_summary(values: dict[str, list[float]]) -> dict[str, float]:
    """The printout's formulas written out from their definitions."""
    n = len(values["kld"])

    def mean(xs):
        return sum(xs) / len(xs)

    def se(xs):  # standard error with llama.cpp's population variance over n - 1
        m = mean(xs)
        var = mean([x * x for x in xs]) - m * m
        return math.sqrt(var / (n - 1)) if var > 0 and n > 10 else 0.0

    nll_c, nll_r = values["nll_candidate"], values["nll_reference"]
    cov = (mean([a * b for a, b in zip(nll_c, nll_r)]) - mean(nll_c) * mean(nll_r)) / (n - 1) if n >= 10 else 0.0
    top = mean([float(s) for s in values["same_top"]])
    squares = [d * d for d in values["delta_p"]]
    return {
        "mean_kld": mean(values["kld"]),
        "mean_kld_se": se(values["kld"]),
        "same_top": top,
        "same_top_se": math.sqrt(top * (1 - top) / (n - 1)),
        "ln_ppl_ratio": mean(nll_c) - mean(nll_r),
        "ln_ppl_ratio_se": math.sqrt(max(se(nll_c) ** 2 + se(nll_r) ** 2 - 2 * cov, 0.0)),
        "rms_delta_p": math.sqrt(mean(squares)),
        "mean_delta_p": mean(values["delta_p"]),
        "ppl_reference": math.exp(mean(nll_r)),
        "ppl_candidate": math.exp(mean(nll_c)),
    }


def random_case(seed: int, n: int = 40, vocab: int = 12, shift: float = 0.5):
    rng = np.random.default_rng(seed)
    reference = rng.normal(size=(n, vocab)) * 2
    candidate = reference + rng.normal(size=(n, vocab)) * shift
    return reference, candidate, rng.integers(0, vocab, size=n)


def test_identical_models_have_no_divergence() -> None:
    reference, _, targets = random_case(0)
    stats = summarise(per_token(reference, reference, targets))
    assert stats.mean_kld == pytest.approx(0.0, abs=1e-12) and stats.kld_max == pytest.approx(0.0, abs=1e-12)
    assert stats.same_top == 1.0 and stats.same_top_se == 0.0
    assert stats.mean_delta_p == pytest.approx(0.0, abs=1e-12) and stats.rms_delta_p == pytest.approx(0.0, abs=1e-12)
    assert stats.ln_ppl_ratio == pytest.approx(0.0, abs=1e-12)
    assert stats.ln_ppl_correlation == pytest.approx(1.0)


def test_a_known_shift_gives_the_analytic_divergence() -> None:
    # two tokens: logits (0, a) and (0, b) are Bernoulli(σ(a)) and Bernoulli(σ(b))
    a, b = 1.5, -0.5
    p, q = 1 / (1 + math.exp(-a)), 1 / (1 + math.exp(-b))
    analytic = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    values = per_token(np.array([[0.0, a]] * 3), np.array([[0.0, b]] * 3), np.array([1, 1, 0]))
    np.testing.assert_allclose(values["kld"], analytic, rtol=1e-12)
    assert values["same_top"].tolist() == [False] * 3  # token 1 against token 0
    np.testing.assert_allclose(values["delta_p"], [q - p, q - p, p - q], rtol=1e-12)
    np.testing.assert_allclose(values["nll_candidate"], [-math.log(q)] * 2 + [-math.log(1 - q)], rtol=1e-12)


def test_a_constant_shift_of_all_logits_changes_nothing() -> None:
    reference, _, targets = random_case(1)
    values = per_token(reference, reference + 7.25, targets)
    np.testing.assert_allclose(values["kld"], 0.0, atol=1e-12)
    assert values["same_top"].all()


@pytest.mark.parametrize("seed", range(5))
def test_summary_equals_the_brute_force_twin(seed: int) -> None:
    reference, candidate, targets = random_case(seed, n=60)
    values = per_token(reference, candidate, targets)
    twin = brute_force(reference, candidate, targets)
    for name, column in twin.items():
        np.testing.assert_allclose(values[name], column, rtol=1e-9, atol=1e-12, err_msg=name)
    stats = summarise(values)
    for name, expected in brute_force_summary(twin).items():
        assert getattr(stats, name) == pytest.approx(expected, rel=1e-9, abs=1e-12), name
    ordered = sorted(twin["kld"])
    assert stats.kld_max == pytest.approx(ordered[-1]) and stats.kld_min == pytest.approx(ordered[0])
    assert set(stats.kld_percentiles) == {f"{p:g}" for p in KLD_PERCENTILES}
    assert set(stats.delta_p_percentiles) == {f"{p:g}" for p in DELTA_P_PERCENTILES}


def test_percentile_interpolates_as_llama_cpp_does() -> None:
    values = np.array([4.0, 1.0, 3.0, 2.0])  # sorted 1 2 3 4; position 0.5 · 3 = 1.5
    assert percentile(values, 0.5) == 2.5
    assert percentile(values, 0.9) == pytest.approx(3.7)  # position 2.7
    assert percentile(values, 0.0) == 1.0 and percentile(values, 1.0) == 4.0
    rng = np.random.default_rng(3)
    sample = rng.normal(size=101)
    for fraction in (0.001, 0.1, 0.75, 0.999):
        assert percentile(sample, fraction) == pytest.approx(np.percentile(sample, fraction * 100))


def test_small_samples_have_no_standard_error_as_in_llama_cpp() -> None:
    reference, candidate, targets = random_case(4, n=8)
    stats = summarise(per_token(reference, candidate, targets))
    assert stats.mean_kld_se == 0.0 and stats.ln_ppl_ratio_se == 0.0  # n ≤ 10


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r, c, t: (r, c[:, :-1], t), "one shape"),
        (lambda r, c, t: (r, c, t[:-1]), "one integer target"),
        (lambda r, c, t: (r, c, t.astype(float)), "one integer target"),
        (lambda r, c, t: (r, c, t + 100), "outside the vocabulary"),
        (lambda r, c, t: (r, np.where(c > 1, np.nan, c), t), "candidate logits hold NaN"),
    ],
)
def test_bad_inputs_are_refused(change, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        per_token(*change(*random_case(5)))


finite = st.floats(-30, 30, allow_nan=False, width=64)


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, (6, 5), elements=finite),
    arrays(np.float64, (6, 5), elements=finite),
    arrays(np.int64, 6, elements=st.integers(0, 4)),
)
def test_properties(reference: np.ndarray, candidate: np.ndarray, targets: np.ndarray) -> None:
    values = per_token(reference, candidate, targets)
    assert (values["kld"] >= -1e-9).all()  # Gibbs' inequality
    assert (np.abs(values["delta_p"]) <= 1 + 1e-12).all()
    assert (values["nll_reference"] >= -1e-12).all() and (values["nll_candidate"] >= -1e-12).all()
    swapped = per_token(candidate, reference, targets)
    np.testing.assert_allclose(swapped["delta_p"], -values["delta_p"], atol=1e-12)
    stats = summarise(values)
    assert 0.0 <= stats.same_top <= 1.0
    assert stats.kld_min <= stats.kld_median <= stats.kld_max


def test_llama_cpp_chunks_score_the_second_half_of_each_window() -> None:
    from miniature.core.token_stats import llama_cpp_chunks

    tokens = np.arange(100, 125)  # 25 tokens, n_ctx 8: 3 chunks, the last token unused
    chunks = llama_cpp_chunks(tokens, 8, bos_token_id=1)
    assert len(chunks) == 3
    assert chunks[1].tokens.tolist() == [1, 109, 110, 111, 112, 113, 114, 115]  # BOS replaces the first
    assert chunks[1].first == 4 and chunks[1].targets.tolist() == [113, 114, 115]  # 8 - 1 - 4 scored
    assert llama_cpp_chunks(tokens, 8)[0].tokens[0] == 100  # no BOS: the text's own first token
    assert len(llama_cpp_chunks(tokens, 8, n_chunks=2)) == 2
    with pytest.raises(ValueError, match="needs at least 32"):
        llama_cpp_chunks(tokens, 16)


@pytest.mark.parametrize("scale", [1e-4, 1e-2, 1.0])
def test_the_fast_torch_path_equals_the_float64_twin(scale: float) -> None:
    import torch

    from miniature.core.token_stats import per_token_torch

    rng = np.random.default_rng(7)
    reference = (rng.normal(size=(300, 500)) * 3).astype(np.float32)
    candidate = (reference + rng.normal(size=reference.shape) * scale + 5.0).astype(np.float32)  # shifted too
    targets = rng.integers(0, 500, size=300)
    exact = per_token(reference, candidate, targets)
    fast = per_token_torch(
        torch.from_numpy(reference), torch.from_numpy(candidate), torch.from_numpy(targets), rows_per_chunk=64
    )
    np.testing.assert_allclose(fast["kld"], exact["kld"], rtol=1e-5, atol=1e-9)
    for name in ("nll_reference", "nll_candidate"):
        np.testing.assert_allclose(fast[name], exact[name], rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(fast["delta_p"], exact["delta_p"], atol=1e-6)
    assert (fast["same_top"] == exact["same_top"]).all()
    assert (fast["top_reference"] == reference.argmax(1)).all() and (fast["top_candidate"] == candidate.argmax(1)).all()
