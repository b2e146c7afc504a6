"""Statistics shared by the characteristics: Jaccard agreement, its chance baseline,
paired bootstrap intervals and McNemar's test.

Everything here is pure numpy/scipy: arrays in, numbers out. The paper reports raw
Jaccard coefficients; the chance baseline and chance-corrected score are what make a
raw figure interpretable (two models that each flag 50% of items at random already
agree at about 0.33).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, TypedDict

import numpy as np
from scipy import stats as _scipy_stats

from miniature.core.checks import booleans, check_count, check_level

__all__ = [
    "jaccard",
    "jaccard_rows",
    "jaccard_batch",
    "chance_jaccard",
    "chance_corrected",
    "informative",
    "paired_bootstrap_ci",
    "mcnemar_exact",
    "flips",
]

# Upper bound on the number of resampled index entries held in memory at once.
_BOOTSTRAP_CHUNK_ELEMENTS = 1 << 22


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard coefficient |A ∩ B| / |A ∪ B| of two sets given as boolean membership masks.

    Two empty sets agree perfectly, so the result is 1.0 when both masks are all False.
    """
    a = _as_mask(a, "a")
    b = _as_mask(b, "b")
    if a.shape != b.shape:
        raise ValueError(
            f"jaccard needs two masks over the same items, got lengths {a.size} (a) and "
            f"{b.size} (b); compute both models' sets on the same evaluation items"
        )
    union = int(np.count_nonzero(a | b))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(a & b)) / union


def jaccard_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row Jaccard coefficient of two tables of index sets.

    ``a`` is (n, k) and ``b`` is (n, k') of integer labels (e.g. neighbour indices); row i
    of the result is the Jaccard coefficient of the *sets* ``set(a[i])`` and
    ``set(b[i])`` (repeated labels within a row count once; two empty rows give 1.0).
    Vectorised: rows are sorted once and membership is found with one global
    ``searchsorted`` after shifting each row into its own value range.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"jaccard_rows needs two 2-D (n, k) index tables, got shapes {a.shape} and {b.shape}")
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"jaccard_rows needs the same number of rows, got {a.shape[0]} (a) and "
            f"{b.shape[0]} (b); both tables must describe the same items"
        )
    for name, table in (("a", a), ("b", b)):
        if table.size and not np.issubdtype(table.dtype, np.integer):
            raise ValueError(f"jaccard_rows needs integer labels in {name}, got dtype {table.dtype}")
    n = a.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.float64)
    a_sorted = np.sort(a.astype(np.int64, copy=False), axis=1)
    b_sorted = np.sort(b.astype(np.int64, copy=False), axis=1)
    a_first = _first_occurrences(a_sorted)
    size_a = a_first.sum(axis=1)
    size_b = _first_occurrences(b_sorted).sum(axis=1)

    if a_sorted.size == 0 or b_sorted.size == 0:
        inter = np.zeros(n, dtype=np.int64)
    else:
        low = min(int(a_sorted.min()), int(b_sorted.min()))
        span = max(int(a_sorted.max()), int(b_sorted.max())) - low + 1
        if span * n >= 2**62:  # labels too spread out to shift rows apart: compact them
            _, inverse = np.unique(np.concatenate([a_sorted.ravel(), b_sorted.ravel()]), return_inverse=True)
            a_sorted = np.sort(inverse[: a_sorted.size].reshape(a_sorted.shape), axis=1)
            b_sorted = np.sort(inverse[a_sorted.size :].reshape(b_sorted.shape), axis=1)
            low, span = 0, int(inverse.max()) + 1
        offsets = np.arange(n, dtype=np.int64)[:, None] * span
        keys_b = (b_sorted - low + offsets).ravel()  # globally sorted
        keys_a = a_sorted - low + offsets
        position = np.searchsorted(keys_b, keys_a.ravel()).reshape(keys_a.shape)
        found = keys_b[np.minimum(position, keys_b.size - 1)] == keys_a
        inter = np.count_nonzero(found & a_first, axis=1)

    union = size_a + size_b - inter
    result = np.ones(n, dtype=np.float64)
    nonempty = union > 0
    result[nonempty] = inter[nonempty] / union[nonempty]
    return result


def jaccard_batch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Jaccard coefficient of boolean masks along the last axis (e.g. bootstrap replicates).

    ``a`` and ``b`` are (..., n) masks; returns an array of shape (...). Both-empty gives 1.0.
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"jaccard_batch needs masks of the same shape, got {a.shape} and {b.shape}")
    union = np.count_nonzero(a | b, axis=-1)
    inter = np.count_nonzero(a & b, axis=-1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def chance_jaccard(n: int, a: int, b: int) -> float:
    """Exact expected Jaccard of a random a-subset and an independent random b-subset of n items.

    The intersection size I is hypergeometric (population n, a marked, b drawn), so the
    expectation is ``sum_i P(I = i) * i / (a + b - i)``. This is the agreement two
    unrelated models reach by luck with the same set sizes; 0/0 (a = b = 0) counts as 1.
    """
    n, a, b = _as_count(n, "n"), _as_count(a, "a"), _as_count(b, "b")
    if a > n or b > n:
        raise ValueError(f"chance_jaccard needs subset sizes a={a}, b={b} of at most n={n} items")
    if a == 0 and b == 0:
        return 1.0
    if a == 0 or b == 0:
        return 0.0
    sizes = np.arange(max(0, a + b - n), min(a, b) + 1)
    probabilities = _scipy_stats.hypergeom.pmf(sizes, n, a, b)
    return float(np.sum(probabilities * sizes / (a + b - sizes)))


def chance_corrected(j: float, j0: float) -> float:
    """Chance-corrected agreement (j - j0) / (1 - j0): 0 at chance level, 1 at perfect agreement.

    When chance itself is perfect (j0 == 1: both sets are necessarily empty or everything,
    or every neighbour set is all the other items) any two models agree, so there is no
    agreement beyond chance to measure: the score is undefined and nan is returned (never
    1.0, which would read as a perfect match). A nan input gives nan.
    """
    j, j0 = float(j), float(j0)
    if math.isnan(j) or math.isnan(j0) or j0 >= 1.0:
        return math.nan
    return (j - j0) / (1.0 - j0)


#: Chance agreement from which a Jaccard figure is not read as agreement (:func:`informative`).
UNINFORMATIVE_CHANCE = 0.9


def informative(chance: float | None) -> bool:
    """Whether a Jaccard figure whose chance baseline is ``chance`` says anything about the models.

    At chance 1 any two models agree perfectly (both sets empty or everything, K = n - 1).
    From :data:`UNINFORMATIVE_CHANCE` (0.9) on, unrelated models already score 0.9 or more,
    so the raw figure passes any usual threshold whatever the models, and the whole range
    between chance and perfect agreement is a tenth of the scale or less: the corrected score
    magnifies each item that differs tenfold or more (two kNN sets of K = 56 of 59 items that
    differ by one neighbour: Jaccard 0.96, corrected about 0.6). The figure then measures
    the set sizes (K against n, how many items are flagged), not the models; nan is not
    informative either.
    """
    return chance is not None and not math.isnan(float(chance)) and float(chance) < UNINFORMATIVE_CHANCE


def paired_bootstrap_ci(
    statistic: Callable[..., float | np.ndarray],
    *arrays: np.ndarray,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int | None = 0,
    vectorized: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*arrays)`` resampling items in pairs.

    Each replicate draws one set of item indices (with replacement) and applies it to
    every array, so per-item pairings (reference vs candidate outcome of the same item)
    are kept. With ``vectorized=True`` the statistic receives arrays with an extra
    leading replicate axis, shape (r, n, ...), and must return r values; it is then
    evaluated on chunks of replicates at once. Replicates that come out nan are ignored.
    The same seed gives the same interval, vectorised or not.
    """
    if not arrays:
        raise ValueError("paired_bootstrap_ci needs at least one array to resample")
    arrays = tuple(np.asarray(array) for array in arrays)
    lengths = [array.shape[0] if array.ndim else 0 for array in arrays]
    if any(array.ndim == 0 for array in arrays) or len(set(lengths)) != 1:
        raise ValueError(
            f"paired_bootstrap_ci needs arrays of equal length along axis 0 (one row per item), got lengths {lengths}"
        )
    n = lengths[0]
    if n == 0:
        raise ValueError("paired_bootstrap_ci needs at least one item; the arrays are empty")
    check_level(level)
    check_count(n_resamples, "n_resamples")
    n_resamples = int(n_resamples)

    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_resamples, _BOOTSTRAP_CHUNK_ELEMENTS // n))
    replicates = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        indices = rng.integers(0, n, size=(stop - start, n))
        if vectorized:
            values = np.asarray(statistic(*(array[indices] for array in arrays)), dtype=np.float64)
            if values.shape != (stop - start,):
                raise ValueError(
                    f"a vectorized statistic must return one value per replicate, shape "
                    f"({stop - start},), got {values.shape}"
                )
            replicates[start:stop] = values
        else:
            for row, sample in enumerate(indices):
                replicates[start + row] = float(statistic(*(array[sample] for array in arrays)))

    if np.all(np.isnan(replicates)):
        return (math.nan, math.nan)
    tail = (1.0 - level) / 2.0
    low, high = np.nanquantile(replicates, [tail, 1.0 - tail])
    return (float(low), float(high))


class AgreementFields(TypedDict):
    """The fields of a measurement an :class:`Agreement` fills."""

    figure: float
    chance: float | None
    corrected: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class Agreement:
    """A Jaccard agreement with what makes it readable: the chance baseline, the
    chance-corrected score and the paired bootstrap interval (None without resamples)."""

    figure: float
    chance: float
    corrected: float
    ci_low: float | None = None
    ci_high: float | None = None

    def result_fields(self) -> "AgreementFields":
        """The ``ComparisonResult`` fields it fills: figure, chance, corrected, ci_low, ci_high."""
        return {
            "figure": self.figure,
            "chance": self.chance,
            "corrected": self.corrected,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
        }


def set_agreement(a: np.ndarray, b: np.ndarray, *, n_bootstrap: int | None, seed: int | None) -> Agreement:
    """Jaccard of two sets given as boolean masks over the same n items (both empty = 1),
    chance = that of random sets of the same sizes, bootstrap resampling items in pairs.

    The one skeleton every set-based characteristic shares (error sets, OOD sets, sets of
    broken items), as pytest-regressions' ``perform_regression_check`` is for its checks.
    """
    a = _as_mask(a, "a")
    b = _as_mask(b, "b")
    figure = jaccard(a, b)
    chance = chance_jaccard(a.size, int(a.sum()), int(b.sum()))
    ci_low = ci_high = None
    if n_bootstrap and n_bootstrap > 0:
        ci_low, ci_high = paired_bootstrap_ci(jaccard_batch, a, b, n_resamples=n_bootstrap, seed=seed, vectorized=True)
    return Agreement(figure, chance, chance_corrected(figure, chance), ci_low, ci_high)


def mean_agreement(per_item: np.ndarray, chance: float, *, n_bootstrap: int | None, seed: int | None) -> Agreement:
    """The mean of per-item Jaccard values (e.g. kNN sets), its chance baseline and corrected
    score, and the bootstrap interval resampling items."""
    per_item = np.asarray(per_item, dtype=np.float64)
    figure = float(per_item.mean())
    ci_low = ci_high = None
    if n_bootstrap and n_bootstrap > 0:
        ci_low, ci_high = paired_bootstrap_ci(
            _replicate_means, per_item, n_resamples=n_bootstrap, seed=seed, vectorized=True
        )
    return Agreement(figure, chance, chance_corrected(figure, chance), ci_low, ci_high)


def _replicate_means(values: np.ndarray) -> np.ndarray:
    return values.mean(axis=-1)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts b and c.

    Under the null hypothesis (both models equally accurate) each discordant item is a
    fair coin flip, so this is the two-sided binomial test of min(b, c) in b + c trials
    at p = 1/2. No discordant items gives 1.0.
    """
    b, c = _as_count(b, "b"), _as_count(c, "c")
    trials = b + c
    if trials == 0:
        return 1.0
    return float(min(1.0, 2.0 * _scipy_stats.binom.cdf(min(b, c), trials, 0.5)))


@dataclass(frozen=True)
class Flips:
    """How answers changed from the reference to the candidate (Dutta et al., 2024, "Accuracy
    is Not All You Need"): counts over ``n`` items and their rates."""

    n: int
    correct_to_incorrect: int
    incorrect_to_correct: int
    wrong_to_other_wrong: int

    @property
    def flipped(self) -> int:
        """Items whose correctness changed (what Dutta et al. call flips)."""
        return self.correct_to_incorrect + self.incorrect_to_correct

    def rates(self) -> dict[str, float]:
        n = max(self.n, 1)
        return {
            "flip_rate": self.flipped / n,
            "correct_to_incorrect": self.correct_to_incorrect / n,
            "incorrect_to_correct": self.incorrect_to_correct / n,
            "wrong_to_other_wrong": self.wrong_to_other_wrong / n,
        }


def flips(labels: np.ndarray, reference: np.ndarray, candidate: np.ndarray) -> Flips:
    """Flips between the reference's and the candidate's predicted labels for the same items:
    correct → incorrect, incorrect → correct, and wrong → a different wrong answer."""
    labels, reference, candidate = (np.asarray(v).ravel() for v in (labels, reference, candidate))
    if not labels.shape == reference.shape == candidate.shape:
        raise ValueError(
            f"flips need one label and two predictions per item, got {labels.size}, "
            f"{reference.size} and {candidate.size}"
        )
    right_before, right_after = reference == labels, candidate == labels
    return Flips(
        n=int(labels.size),
        correct_to_incorrect=int(np.count_nonzero(right_before & ~right_after)),
        incorrect_to_correct=int(np.count_nonzero(~right_before & right_after)),
        wrong_to_other_wrong=int(np.count_nonzero(~right_before & ~right_after & (reference != candidate))),
    )


def _as_mask(values: np.ndarray, name: str) -> np.ndarray:
    mask = booleans(values, f"{name} must be a boolean membership mask (True/False or 1/0)")
    return mask.ravel() if mask.ndim != 1 else mask


def _as_count(value: int, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or int(value) != value or value < 0:
        raise ValueError(f"{name} must be a non-negative whole number, got {value!r}")
    return int(value)


def _first_occurrences(sorted_rows: np.ndarray) -> np.ndarray:
    """True at the first copy of each value in each sorted row."""
    first = np.ones(sorted_rows.shape, dtype=bool)
    if sorted_rows.shape[1] > 1:
        first[:, 1:] = sorted_rows[:, 1:] != sorted_rows[:, :-1]
    return first
