"""Representation similarity: how alike are two models' sentence vectors of the same items?

Pure numeric layer (arrays in, numbers out) of a fifth characteristic, beyond the paper's four.
X is (n, d1) and Y is (n, d2): row i of each is the same item; widths may differ.

* Linear CKA (Kornblith et al. 2019): ||Yc' Xc||_F^2 / (||Xc' Xc||_F ||Yc' Yc||_F) with
  column-centred Xc, Yc. Invariant to rotations and isotropic scaling of either model,
  in [0, 1]. Biased upwards at finite n: two *independent* representations score about
  d/n-ish, not 0.
* Debiased CKA (Nguyen, Raghu & Kornblith 2021): the same ratio built from the unbiased
  HSIC estimator of Song et al. 2012, so independent representations score about 0 (it
  can come out slightly negative). Needs n >= 4.
* Mutual k-nearest-neighbour alignment (Huh et al. 2024): per item, the share of its k
  cosine nearest neighbours (itself excluded) that both models agree on, |N_X ∩ N_Y| / k.
  Related to the kNN Jaccard of ``representation.py``: J = I / (2k - I) for the same sets.

Both CKAs come from the same few sums (see :func:`_sums`): cross products of the
item-weighted, centred features, the row norms and K w = X (X' w). These are computed in
float64, either in feature space (d x d products, blocks of rows: O(n d^2), never an
n x n matrix) or, when that is cheaper (d > n, or many bootstrap replicates at once), from
row blocks of the n x n Gram matrices (O(n^2 d), still never the whole n x n matrix).
Item weights w (counts, summing to n) make a bootstrap resample the same computation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from miniature.core.characteristics.base import Pair
    from miniature.core.characteristics.view import GateView

import math

import numpy as np

from miniature.core.characteristics.base import Measurement, judged
from miniature.core.checks import check_2d, check_count, check_k, check_level, check_real_finite, check_texts
from miniature.core.neighbours import knn_search, sample_rows, search_details
from miniature.core.stats import paired_bootstrap_ci
from miniature.errors import NotApplicable

__all__ = [
    "linear_cka",
    "debiased_cka",
    "cka_pair",
    "cka_bootstrap_ci",
    "cka_influence",
    "cka_delta_ci",
    "cka_interval",
    "cka_disagreement_per_item",
    "mutual_knn_per_item",
    "mutual_knn",
    "similarity_evidence",
]

# float64 entries of a row block (rows x width) held in memory at once.
_BLOCK_ELEMENTS = 1 << 22


# -------------------------------------------------------------------------------- CKA


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA of two representations of the same n items (Kornblith et al. 2019).

    1 means the same geometry up to rotation and isotropic scale; it is biased upwards
    for finite n (two independent Gaussian representations of n items in d dimensions
    score well above 0), so compare against :func:`debiased_cka` or a baseline.
    Needs n >= 2 and neither representation constant over the items.
    """
    return cka_pair(X, Y)[0]


def debiased_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Debiased linear CKA from the unbiased HSIC estimator (Song et al. 2012).

    HSIC_1(K, L) = [tr(K~L~) + (1'K~1)(1'L~1)/((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3)),
    K = X X', K~ = K with its diagonal zeroed; CKA_1 = HSIC_1(K, L) / sqrt(HSIC_1(K, K)
    HSIC_1(L, L)). About 0 for independent representations (may be slightly negative),
    1 for identical ones. Needs n >= 4; nan when an HSIC_1(K, K) estimate is not positive
    (tiny or nearly degenerate samples).
    """
    _check_pair(X, Y, min_items=4)
    return cka_pair(X, Y)[1]


def cka_pair(X: np.ndarray, Y: np.ndarray, *, names: tuple[str, str] = ("X", "Y")) -> tuple[float, float]:
    """(linear CKA, debiased CKA) from one pass over the data: cheaper than both calls.

    With n < 4 the debiased value is nan (it needs four items) rather than an error.
    ``names`` say whose vectors X and Y are in an error (the models' names in a gate).
    """
    Xc, Yc, n = _prepare(X, Y, min_items=2, names=names)
    sums = _sums(Xc, Yc, np.ones((1, n)))
    linear = float(_linear_from_sums(sums, n)[0])
    debiased = float(_debiased_from_sums(sums, n)[0]) if n >= 4 else math.nan
    return linear, debiased


def cka_bootstrap_ci(
    X: np.ndarray,
    Y: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: int | None = 0,
    debiased: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap interval of (linear or debiased) CKA, resampling items in pairs.

    Each replicate redraws n items with replacement (row i of X and of Y together), as
    :func:`miniature.core.stats.paired_bootstrap_ci` does, with the same random stream for the
    same seed. A resample is a vector of item counts w, so each replicate is the weighted
    computation (X' diag(w) Y, means weighted by w) on the original rows, never a copy
    of the resampled data. Degenerate replicates (nan) are ignored. Cost: per replicate
    O(min(n d^2, n^2)) float64 work, so n = 20,000 with 1,000 replicates takes minutes;
    :func:`cka_interval` then turns to :func:`cka_delta_ci`.

    Caution, linear CKA: a resample repeats about a third of the items, and repeated
    items look alike in both models, so replicates run *above* the estimate (independent
    Gaussian representations, n = 500, d = 64: estimate 0.114, replicates 0.19-0.22):
    the interval need not contain the estimate. The debiased replicates leave pairs of
    copies out (see :func:`_debiased_from_sums`) and centre on their estimate; prefer
    ``debiased=True`` for an interval.
    """
    Xc, Yc, n = _prepare(X, Y, min_items=4 if debiased else 2)
    check_count(n_bootstrap, "n_bootstrap")

    def statistic(indices: np.ndarray) -> np.ndarray:
        replicates = indices.shape[0]
        offsets = np.arange(replicates)[:, None] * n
        weights = np.bincount((indices + offsets).ravel(), minlength=replicates * n)
        weights = weights.reshape(replicates, n).astype(np.float64)
        sums = _sums(Xc, Yc, weights)
        return _debiased_from_sums(sums, n) if debiased else _linear_from_sums(sums, n)

    # Resampling the item numbers 0..n-1 reuses the project's interval conventions.
    return paired_bootstrap_ci(
        statistic, np.arange(n), n_resamples=int(n_bootstrap), level=level, seed=seed, vectorized=True
    )


def cka_influence(X: np.ndarray, Y: np.ndarray, *, debiased: bool = False) -> np.ndarray:
    """Per-item derivative of CKA with respect to the item's weight, at the data itself.

    g_i = dT(w)/dw_i at w = 1, where T(w) is the item-weighted CKA the bootstrap evaluates
    (see :func:`cka_bootstrap_ci`). With Xc, Yc centred, K 1 = 0, so the centring terms
    drop out of the linear case: d||Xc' D Yc||^2/dw_i = 2 x_i' (Xc' Yc) y_i. The debiased
    HSIC adds the left-out diagonal (-2 a_i b_i), the ones terms (-2 a_i, -2 b_i) and
    d(1'K~L~1)/dw_i = 3 a_i b_i - (K b)_i - (L a)_i. Cost O(n d1 d2): one CKA pass.
    """
    return _estimate_and_influence(X, Y, debiased=debiased)[1]


def _estimate_and_influence(X: np.ndarray, Y: np.ndarray, *, debiased: bool) -> tuple[float, np.ndarray]:
    """CKA and its per-item influence from one pass (see :func:`cka_influence`)."""
    Xc, Yc, n = _prepare(X, Y, min_items=4 if debiased else 2)
    gxx, gyy, gxy = _feature_products(Xc, Yc, None)
    a, b = np.empty(n), np.empty(n)
    qxx, qyy, qxy = np.empty(n), np.empty(n), np.empty(n)  # x_i' Sxx x_i, ..., x_i' Sxy y_i
    for low, high in _row_blocks(n, 2 * (Xc.shape[1] + Yc.shape[1])):
        xb, yb = Xc.rows(low, high), Yc.rows(low, high)
        a[low:high], b[low:high] = np.einsum("ij,ij->i", xb, xb), np.einsum("ij,ij->i", yb, yb)
        qxx[low:high] = np.einsum("ij,ij->i", xb @ gxx, xb)
        qyy[low:high] = np.einsum("ij,ij->i", yb @ gyy, yb)
        qxy[low:high] = np.einsum("ij,ij->i", xb @ gxy, yb)
    pxx, pyy, pxy = (float(np.vdot(g, g)) for g in (gxx, gyy, gxy))
    if not debiased:
        values = {"xy": (pxy, 2 * qxy), "xx": (pxx, 2 * qxx), "yy": (pyy, 2 * qyy)}
    else:
        sx, sy = np.zeros(Xc.shape[1]), np.zeros(Yc.shape[1])  # Xc' b and Xc' a, Yc' a, Yc' b
        sxa, sya = np.zeros(Xc.shape[1]), np.zeros(Yc.shape[1])
        for low, high in _row_blocks(n, Xc.shape[1] + Yc.shape[1]):
            xb, yb = Xc.rows(low, high), Yc.rows(low, high)
            sx += b[low:high] @ xb
            sxa += a[low:high] @ xb
            sy += a[low:high] @ yb
            sya += b[low:high] @ yb
        k_b, k_a, l_a, l_b = (np.empty(n) for _ in range(4))
        for low, high in _row_blocks(n, Xc.shape[1] + Yc.shape[1]):
            xb, yb = Xc.rows(low, high), Yc.rows(low, high)
            k_b[low:high], k_a[low:high] = xb @ sx, xb @ sxa
            l_a[low:high], l_b[low:high] = yb @ sy, yb @ sya

        def hsic(p, g_p, left, right, cross_gradient):
            total_left, total_right = left.sum(), right.sum()
            value = (
                p - left @ right + total_left * total_right / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (left @ right)
            ) / (n * (n - 3))
            gradient = (
                g_p
                - 2 * left * right
                + (2 * left * total_right + 2 * right * total_left) / ((n - 1) * (n - 2))
                - 2.0 / (n - 2) * cross_gradient
            ) / (n * (n - 3))
            return value, gradient

        values = {
            "xy": hsic(pxy, 2 * qxy, a, b, 3 * a * b - k_b - l_a),
            "xx": hsic(pxx, 2 * qxx, a, a, 3 * a * a - 2 * k_a),
            "yy": hsic(pyy, 2 * qyy, b, b, 3 * b * b - 2 * l_b),
        }
    (hxy, g_xy), (hxx, g_xx), (hyy, g_yy) = values["xy"], values["xx"], values["yy"]
    if hxx <= 0 or hyy <= 0:
        return math.nan, np.full(n, np.nan)
    scale = math.sqrt(hxx * hyy)
    return hxy / scale, g_xy / scale - (hxy / scale) * (0.5 * g_xx / hxx + 0.5 * g_yy / hyy)


def cka_delta_ci(X: np.ndarray, Y: np.ndarray, *, level: float = 0.95, debiased: bool = False) -> tuple[float, float]:
    """Normal interval from the infinitesimal jackknife (the delta method of the bootstrap).

    The bootstrap's item counts w have covariance I - 11'/n, so to first order the
    replicates of T(w) have variance sum_i (g_i - mean g)^2 with g from
    :func:`cka_influence`; the interval is T +- z se. What the percentile bootstrap
    approaches as n grows, at the cost of one CKA pass instead of one per replicate.
    """
    check_level(level)
    from scipy.stats import norm

    estimate, gradient = _estimate_and_influence(X, Y, debiased=debiased)
    if not debiased:
        estimate = min(1.0, max(0.0, estimate))  # as linear_cka reports it
    if not math.isfinite(estimate) or not np.all(np.isfinite(gradient)):
        return math.nan, math.nan
    se = float(np.sqrt(np.sum((gradient - gradient.mean()) ** 2)))
    half = float(norm.ppf(0.5 + level / 2)) * se
    low, high = estimate - half, min(1.0, estimate + half)
    return (max(0.0, low) if not debiased else low), high


#: the most float64 work (multiply-adds) the exact bootstrap may take before ``auto`` turns to
#: the delta method: about a second here (n = 20,000, d = 768 with 1,000 replicates needs 2.6e12)
BOOTSTRAP_BUDGET = 2e10
#: what each interval method is called in results
INTERVAL_METHODS = {"bootstrap": "paired bootstrap", "delta": "delta method (infinitesimal jackknife)"}


def bootstrap_cost(n: int, d1: int, d2: int, replicates: int) -> float:
    """Multiply-adds of the exact bootstrap: the cheaper of the feature and Gram routes."""
    feature = replicates * n * (0.5 * d1 * d1 + 0.5 * d2 * d2 + d1 * d2 + 2 * (d1 + d2))
    gram = n * n * (d1 + d2) + 5.0 * replicates * n * n
    return min(feature, gram)


def cka_interval(
    X: np.ndarray,
    Y: np.ndarray,
    *,
    method: str = "auto",
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: int | None = 0,
    debiased: bool = False,
) -> tuple[float, float, str]:
    """(low, high, method used): the paired bootstrap where it is affordable, else the delta
    method. ``auto`` takes the bootstrap while its cost is within :data:`BOOTSTRAP_BUDGET`."""
    if method not in ("auto", *INTERVAL_METHODS):
        raise ValueError(f"method must be auto, bootstrap or delta; got {method!r}")
    if method == "auto":
        n, d1, d2 = np.shape(X)[0], np.shape(X)[1], np.shape(Y)[1]
        method = "bootstrap" if bootstrap_cost(n, d1, d2, int(n_bootstrap)) <= BOOTSTRAP_BUDGET else "delta"
    if method == "bootstrap":
        low, high = cka_bootstrap_ci(X, Y, n_bootstrap=n_bootstrap, level=level, seed=seed, debiased=debiased)
    else:
        low, high = cka_delta_ci(X, Y, level=level, debiased=debiased)
    return low, high, method


def cka_disagreement_per_item(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Each item's share of 1 - linear CKA: where the two geometries differ.

    With A = Kc/||Kc||_F and B = Lc/||Lc||_F the normalised centred Gram matrices,
    1 - CKA = ||A - B||_F^2 / 2 = sum_i ||A_i - B_i||^2 / 2, one non-negative term per
    item (row i): its similarities to every other item, relative to each model's scale,
    differ that much. The terms sum to 1 - CKA. Computed in feature space as
    xc_i' Gxx xc_i / ||Gxx||^2 + yc_i' Gyy yc_i / ||Gyy||^2 - 2 xc_i' Gxy yc_i / (||Gxx|| ||Gyy||),
    halved, with Gxy = Xc' Yc; never an n x n matrix.
    """
    Xc, Yc, n = _prepare(X, Y, min_items=2)
    d1, d2 = Xc.shape[1], Yc.shape[1]
    out = np.empty(n, dtype=np.float64)
    if _use_feature_space(n, d1, d2, 1):
        gxx, gyy, gxy = _feature_products(Xc, Yc, None)
        norm_x, norm_y = np.linalg.norm(gxx), np.linalg.norm(gyy)
        for low, high in _row_blocks(n, d1 + d2):
            xb, yb = Xc.rows(low, high), Yc.rows(low, high)
            own_x = np.einsum("ij,ij->i", xb @ gxx, xb) / norm_x**2
            own_y = np.einsum("ij,ij->i", yb @ gyy, yb) / norm_y**2
            cross = np.einsum("ij,ij->i", xb @ gxy, yb) / (norm_x * norm_y)
            out[low:high] = 0.5 * (own_x + own_y - 2.0 * cross)
    else:
        X64, Y64 = Xc.full(), Yc.full()
        norm_x = np.float64(math.sqrt(_gram_frobenius_sq(X64)))
        norm_y = np.float64(math.sqrt(_gram_frobenius_sq(Y64)))
        for low, high in _row_blocks(n, n):
            difference = (X64[low:high] @ X64.T) / norm_x - (Y64[low:high] @ Y64.T) / norm_y
            out[low:high] = 0.5 * np.einsum("ij,ij->i", difference, difference)
    return np.maximum(out, 0.0)  # rounding can leave -1e-17 on an item both models agree on


# --------------------------------------------------------------------- mutual kNN


def mutual_knn_per_item(
    X: np.ndarray, Y: np.ndarray, k: int, *, knn_index: str = "exact", seed: int | None = 0
) -> np.ndarray:
    """Per item, |N_k^X(i) ∩ N_k^Y(i)| / k: the share of its k neighbours both models agree on.

    Neighbours by cosine similarity, the item itself excluded, exact and tie-broken by
    lower index (``representation.knn_indices``), or searched as ``knn_index`` says. The
    mutual kNN alignment of Huh et al. (2024) is the mean of this array; 1 means the same
    neighbourhoods.
    """
    n = _check_pair(X, Y, min_items=2)
    k = check_k(k, n, TOO_FEW_ITEMS)
    first = knn_search(X, k, index=knn_index, seed=seed).indices
    second = knn_search(Y, k, index=knn_index, seed=seed).indices
    return _shared_share(first, second)


def _shared_share(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Per row, the share of its k entries that both (n, k) neighbour lists hold."""
    # Each row lists k distinct items, so shared items are the adjacent equal pairs of
    # the sorted concatenation.
    both = np.sort(np.concatenate([first, second], axis=1), axis=1)
    shared = np.count_nonzero(both[:, 1:] == both[:, :-1], axis=1)
    return shared / first.shape[1]


def mutual_knn(X: np.ndarray, Y: np.ndarray, k: int = 10, *, knn_index: str = "exact", seed: int | None = 0) -> float:
    """Mutual k-nearest-neighbour alignment (Huh et al. 2024): mean of :func:`mutual_knn_per_item`."""
    return float(mutual_knn_per_item(X, Y, k, knn_index=knn_index, seed=seed).mean())


# ------------------------------------------------------------------------ evidence


def similarity_evidence(
    X: np.ndarray, Y: np.ndarray, *, k: int = 10, max_items: int = 20, overlap: np.ndarray | None = None
) -> list[dict]:
    """The items that disagree most, worst first: each item's share of 1 - CKA and its mutual kNN.

    Sorted by decreasing ``cka_share`` (:func:`cka_disagreement_per_item`), then by
    lower ``mutual_knn`` (:func:`mutual_knn_per_item`, or the ``overlap`` given), then by
    index. ``k`` must be < n.
    """
    shares = cka_disagreement_per_item(X, Y)
    overlap = mutual_knn_per_item(X, Y, k) if overlap is None else overlap
    order = np.lexsort((np.arange(shares.size), overlap, -shares))[: max(0, int(max_items))]
    return [{"index": int(i), "cka_share": float(shares[i]), "mutual_knn": float(overlap[i])} for i in order]


# ----------------------------------------------------------------------- internals


def _sums(Xc: "_Centred", Yc: "_Centred", W: np.ndarray) -> dict[str, np.ndarray]:
    """Everything both CKAs need, for r item-weight vectors W (r, n) at once.

    pxy = ||Xc' diag(w) Yc||_F^2 (pxx, pyy likewise); u = K w and v = L w (K = Xc Xc',
    L = Yc Yc', as (r, n)); a, b = row norms squared. Xc and Yc are centred by their
    plain means; weighted centring is applied later from these sums. The Gram route
    holds float64 copies of both (n x d each) and row blocks of K and L.
    """
    r, n = W.shape
    d1, d2 = Xc.shape[1], Yc.shape[1]
    a = np.empty(n)
    b = np.empty(n)
    for low, high in _row_blocks(n, d1 + d2):
        a[low:high] = np.einsum("ij,ij->i", *(2 * (Xc.rows(low, high),)))
        b[low:high] = np.einsum("ij,ij->i", *(2 * (Yc.rows(low, high),)))
    pxx, pyy, pxy = np.empty(r), np.empty(r), np.empty(r)
    u, v = np.empty((r, n)), np.empty((r, n))
    if _use_feature_space(n, d1, d2, r):
        for row, w in enumerate(W):
            gxx, gyy, gxy = _feature_products(Xc, Yc, None if r == 1 and np.all(w == 1) else w)
            pxx[row], pyy[row], pxy[row] = (np.vdot(g, g) for g in (gxx, gyy, gxy))
            sx, sy = np.zeros(d1), np.zeros(d2)
            for low, high in _row_blocks(n, d1 + d2):
                sx += w[low:high] @ Xc.rows(low, high)
                sy += w[low:high] @ Yc.rows(low, high)
            for low, high in _row_blocks(n, d1 + d2):
                u[row, low:high] = Xc.rows(low, high) @ sx
                v[row, low:high] = Yc.rows(low, high) @ sy
    else:
        X64, Y64 = Xc.full(), Yc.full()
        pxx[:] = pyy[:] = pxy[:] = 0.0
        for low, high in _row_blocks(n, max(n, r)):
            k_block = X64[low:high] @ X64.T  # rows low:high of K
            l_block = Y64[low:high] @ Y64.T
            u[:, low:high] = W @ k_block.T
            v[:, low:high] = W @ l_block.T
            w_block = W[:, low:high]
            pxy += np.einsum("ri,ri->r", W @ (k_block * l_block).T, w_block)
            pxx += np.einsum("ri,ri->r", W @ (k_block * k_block).T, w_block)
            pyy += np.einsum("ri,ri->r", W @ (l_block * l_block).T, w_block)
    return {"W": W, "a": a, "b": b, "u": u, "v": v, "pxx": pxx, "pyy": pyy, "pxy": pxy}


def _linear_from_sums(s: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Linear CKA per weight vector, centring with the weighted means.

    With S = Xc' diag(w) Yc and means m = Xc' w / n: ||S - n mx my'||^2
    = pxy - (2/n) sum_i w_i u_i v_i + (w'u)(w'v) / n^2.
    """
    W, u, v = s["W"], s["u"], s["v"]
    wu, wv = np.einsum("ri,ri->r", W, u), np.einsum("ri,ri->r", W, v)

    def centred(p, left, right, left_total, right_total):
        return p - (2.0 / n) * np.einsum("ri,ri,ri->r", W, left, right) + left_total * right_total / n**2

    sxy = centred(s["pxy"], u, v, wu, wv)
    sxx = centred(s["pxx"], u, u, wu, wu)
    syy = centred(s["pyy"], v, v, wv, wv)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = sxy / np.sqrt(sxx * syy)
    value = np.where((sxx > 0) & (syy > 0), value, np.nan)
    return np.clip(value, 0.0, 1.0)  # Cauchy-Schwarz: only rounding can step outside


def _debiased_from_sums(s: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Debiased CKA per weight vector (counts w summing to n; all ones for the data itself).

    Pairs of copies of the same item are left out like the diagonal: with W2 = w^2,
    tr(K~L~) = pxy - sum w^2 a b, 1'K~1 = w'u - w^2'a, and (K~1)_i = u_i - w_i a_i, so
    1'K~L~1 = sum_i w_i (u_i - w_i a_i)(v_i - w_i b_i). (Keeping them, as a plain resample
    would, counts an item's similarity to itself as agreement: independent Gaussian
    representations, n = 500, d = 64, then give bootstrap replicates near 0.11 around an
    estimate of 0.00; with them left out the replicates centre on the estimate.) HSIC_1
    is unchanged by centring the features, so the plainly centred Xc, Yc serve.
    """
    W, a, b, u, v = s["W"], s["a"], s["b"], s["u"], s["v"]
    W2 = W * W

    def hsic(p, left, right, left_diag, right_diag):
        trace = p - W2 @ (left_diag * right_diag)
        ones_left = np.einsum("ri,ri->r", W, left) - W2 @ left_diag
        ones_right = np.einsum("ri,ri->r", W, right) - W2 @ right_diag
        cross = np.einsum("ri,ri,ri->r", W, left - W * left_diag, right - W * right_diag)
        return (trace + ones_left * ones_right / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))

    hxy = hsic(s["pxy"], u, v, a, b)
    hxx = hsic(s["pxx"], u, u, a, a)
    hyy = hsic(s["pyy"], v, v, b, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = hxy / np.sqrt(hxx * hyy)
    return np.where((hxx > 0) & (hyy > 0), value, np.nan)


def _feature_products(Xc: "_Centred", Yc: "_Centred", w: np.ndarray | None):
    """Xc' D Xc, Yc' D Yc, Xc' D Yc in float64 (D = diag(w), identity for None), by row blocks.

    sqrt(w) scales each row so the two squares are A'A products (BLAS's symmetric rank-k
    update, half the work of a general product).
    """
    n, d1 = Xc.shape
    d2 = Yc.shape[1]
    gxx, gyy, gxy = np.zeros((d1, d1)), np.zeros((d2, d2)), np.zeros((d1, d2))
    for low, high in _row_blocks(n, d1 + d2):
        xb, yb = Xc.rows(low, high), Yc.rows(low, high)
        if w is not None:
            root = np.sqrt(w[low:high])[:, None]
            xb, yb = xb * root, yb * root
        gxx += xb.T @ xb
        gyy += yb.T @ yb
        gxy += xb.T @ yb
    return gxx, gyy, gxy


def _gram_frobenius_sq(X64: np.ndarray) -> float:
    """||X X'||_F^2 from row blocks of the Gram matrix (for d > n)."""
    total = 0.0
    for low, high in _row_blocks(X64.shape[0], X64.shape[0]):
        block = X64[low:high] @ X64.T
        total += float(np.vdot(block, block))
    return total


def _use_feature_space(n: int, d1: int, d2: int, replicates: int) -> bool:
    """Feature space (O(r n d^2)) unless blocks of the n x n Gram matrices are cheaper.

    Gram route: the blocks of K and L once per call (n^2 (d1 + d2)) plus five (r, n) x (n, n)
    products (5 r n^2). Feature route: per weight vector, the three d x d products (the
    squares at half price).
    """
    return bootstrap_cost(n, d1, d2, replicates) == replicates * n * (
        0.5 * d1 * d1 + 0.5 * d2 * d2 + d1 * d2 + 2 * (d1 + d2)
    )


def _row_blocks(n: int, width: int):
    step = max(1, _BLOCK_ELEMENTS // max(1, width))
    for low in range(0, n, step):
        yield low, min(n, low + step)


class _Centred:
    """A representation and its float64 column means: rows come out centred, block by block.

    The input is not copied; only blocks of rows are widened to float64.
    """

    def __init__(self, values: np.ndarray, mean: np.ndarray):
        self.values, self.mean = values, mean
        self.shape = values.shape

    def rows(self, low: int, high: int) -> np.ndarray:
        return np.asarray(self.values[low:high], dtype=np.float64) - self.mean

    def full(self) -> np.ndarray:
        return self.rows(0, self.shape[0])


def _prepare(
    X: np.ndarray, Y: np.ndarray, *, min_items: int, names: tuple[str, str] = ("X", "Y")
) -> tuple[_Centred, _Centred, int]:
    """Validated inputs with their float64 column means, and n."""
    n = _check_pair(X, Y, min_items=min_items)
    centred = []
    for name, values in zip(names, (X, Y)):
        array = np.asarray(values)
        if np.all(array == array[:1]):
            raise ValueError(
                f"{name} gives every one of the {n} items the same vector, so it has no geometry "
                f"to compare and CKA is undefined (0/0); check that the model's embeddings vary"
            )
        total = np.zeros(array.shape[1])
        for low, high in _row_blocks(n, array.shape[1]):
            total += np.asarray(array[low:high], dtype=np.float64).sum(axis=0)
        centred.append(_Centred(array, total / n))
    return centred[0], centred[1], n


def _check_pair(X: np.ndarray, Y: np.ndarray, *, min_items: int) -> int:
    """n after checking both are finite real 2-D arrays over the same, enough, items."""
    for name, values in (("X", X), ("Y", Y)):
        array = check_2d(values, name)
        if array.shape[1] == 0:
            raise ValueError(f"{name} has no dimensions (shape {array.shape})")
        check_real_finite(array, name)
    n_x, n_y = np.shape(X)[0], np.shape(Y)[0]
    if n_x != n_y:
        raise ValueError(
            f"X and Y describe different numbers of items ({n_x} vs {n_y}); embed the same "
            f"items, in the same order, with both models"
        )
    if n_x < min_items:
        raise ValueError(f"need at least {min_items} items to compare representations, got n={n_x}")
    return int(n_x)


#: what a K beyond the items says (see :func:`miniature.core.checks.check_k`)
TOO_FEW_ITEMS = "k={k} neighbours requested but each of the n={n} items has only {others} others: choose k < n"


# -- the characteristic ---------------------------------------------------------------------
#: estimators of CKA: the debiased HSIC one (Nguyen et al. 2021; about 0 for unrelated
#: representations, and its bootstrap centres on it) or the plain one (Kornblith et al. 2019)
ESTIMATORS = ("debiased", "linear")


def measure_similarity(
    emb_ref: np.ndarray,
    emb_cand: np.ndarray,
    *,
    reference: str,
    candidate: str,
    estimator: str = "debiased",
    k: int = 10,
    ks: Sequence[int] = (),
    stage: str | None = None,
    n_bootstrap: int = 1000,
    seed: int | None = 0,
    item_texts: Sequence[str] | None = None,
    max_evidence: int = 20,
    knn_index: str = "exact",
) -> Measurement:
    """Representation similarity of two models' sentence vectors on the same items: CKA
    (the figure, with a paired bootstrap interval), both estimators and mutual-kNN alignment
    (Huh et al. 2024) at K and over ``ks`` in the details, and the items that account for
    most of the dissimilarity as evidence. CKA has no chance baseline of the Jaccard kind:
    ``chance`` is None, and ``corrected`` is the debiased estimate (about 0 when unrelated).
    ``knn_index`` chooses the neighbour search of mutual kNN; an approximate one adds
    ``neighbour_search`` to the details (recall and mutual kNN on a sample, as
    :func:`~miniature.core.neighbours.search_details` says).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}; got {estimator!r}")
    n = _check_pair(emb_ref, emb_cand, min_items=4)
    check_texts(item_texts, n)
    linear, debiased = cka_pair(emb_ref, emb_cand, names=(f"model {reference!r}", f"model {candidate!r}"))
    figure = debiased if estimator == "debiased" else linear
    ci_low = ci_high = None
    interval = None
    if n_bootstrap and n_bootstrap > 0:
        ci_low, ci_high, method = cka_interval(
            emb_ref, emb_cand, n_bootstrap=n_bootstrap, seed=seed, debiased=estimator == "debiased"
        )
        interval = (
            f"paired bootstrap, {int(n_bootstrap)} replicates"
            if method == "bootstrap"
            else f"{INTERVAL_METHODS['delta']}: the bootstrap would cost "
            f"{bootstrap_cost(n, np.shape(emb_ref)[1], np.shape(emb_cand)[1], int(n_bootstrap)):.1e} "
            f"multiply-adds at this size"
        )
    usable = sorted({int(K) for K in ks if 0 < int(K) < n})
    k = check_k(min(int(k), n - 1), n, TOO_FEW_ITEMS)  # the mutual-kNN detail only: CKA itself needs no K
    # One search per model at the deepest K, sliced: each list is sorted nearest first.
    deepest = max([k, *usable])
    search_ref = knn_search(emb_ref, deepest, index=knn_index, seed=seed)
    search_cand = knn_search(emb_cand, deepest, index=knn_index, seed=seed)
    sweep = {str(K): float(_shared_share(search_ref.indices[:, :K], search_cand.indices[:, :K]).mean()) for K in usable}
    overlap = _shared_share(search_ref.indices[:, :k], search_cand.indices[:, :k])
    evidence = similarity_evidence(emb_ref, emb_cand, k=k, max_items=max_evidence, overlap=overlap)
    if item_texts is not None:
        for entry in evidence:
            entry["text"] = item_texts[entry["index"]]
    searched = None
    if search_ref.approximate or search_cand.approximate:
        sample = sample_rows(n, seed)
        exact_ref, exact_cand = search_ref.exact_on(sample)[0], search_cand.exact_on(sample)[0]
        searched = search_details(
            {"reference": (reference, search_ref), "candidate": (candidate, search_cand)},
            k,
            figure=float(overlap[sample].mean()),
            exact_figure=float(_shared_share(exact_ref[:, :k], exact_cand[:, :k]).mean()),
            what=f"representation similarity (mutual kNN), {reference} vs {candidate}",
            figure_name="mutual_knn",
        )
    return Measurement(
        figure_name=f"{estimator} CKA" if estimator == "debiased" else "linear CKA",
        figure=float(figure),
        n=n,
        chance=None,
        corrected=float(debiased),
        ci_low=ci_low,
        ci_high=ci_high,
        k=k,
        details={
            "linear_cka": float(linear),
            "debiased_cka": float(debiased),
            "mutual_knn": float(overlap.mean()),
            "estimator": estimator,
            "interval": interval,
            **({"neighbour_search": searched} if searched else {}),
        },
        sweep=sweep,
        evidence=evidence,
    )


compare_similarity = judged(measure_similarity, "representation_similarity")


# -- in a gate run ----------------------------------------------------------------------
def compare_in_gate(gate: "GateView", pair: "Pair", stage: str | None) -> Measurement:
    """The gate's comparison of one pair: the test items' sentence vectors (per stage)."""
    settings = gate.settings
    test = gate.data.test
    if len(set(test.texts)) == 1:
        raise NotApplicable(
            f"representation similarity, {pair.reference} vs {pair.candidate}: all {len(test)} test "
            f"items ({test.source}) are the same text, so every model gives them one vector and "
            "CKA is undefined (0/0); fix: pass distinct texts in --test-data"
        )
    return measure_similarity(
        gate.outputs(pair.reference, "test", stage=stage)["embeddings"],
        gate.outputs(pair.candidate, "test", stage=stage)["embeddings"],
        reference=pair.reference,
        candidate=pair.candidate,
        estimator=settings["--cka-estimator"],
        k=settings.k,
        ks=settings.k_sweep,
        stage=stage,
        n_bootstrap=settings.bootstrap,
        seed=settings.seed,
        item_texts=gate.data.test.texts,
        knn_index=settings.knn_index,
    )
