"""Input checks shared by the numeric functions of the characteristics and of ``stats``.

Each check refuses a bad argument with one ``ValueError`` line that names it and says
what is accepted; the numeric functions call these so the same mistake reads the same
everywhere. Numpy only: arrays in, plain values out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from miniature.core.characteristics.base import THRESHOLD_ON_CHOICES, check_threshold_on  # noqa: F401 - re-exported


__all__ = [
    "MIN_ITEMS",
    "check_whole",
    "check_k",
    "check_count",
    "check_level",
    "check_threshold_on",
    "check_texts",
    "check_2d",
    "check_real_finite",
    "booleans",
]

#: Fewest items a Jaccard of two models' sets (error sets, broken sets) is computed on;
#: below it the check is skipped.
MIN_ITEMS = 10


def check_whole(value: int, name: str) -> int:
    """``value`` as an int, refusing anything that is not a whole number >= 1 (bools too)."""
    if isinstance(value, (bool, np.bool_)) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def check_k(k: int, n: int, too_many: str) -> int:
    """``k`` as an int: a whole number >= 1 and below ``n``.

    ``too_many`` is the caller's message for ``k >= n`` (what the n things are and the fix),
    formatted with ``k``, ``n`` and ``others`` (n - 1).
    """
    check_whole(k, "k")
    if k >= n:
        raise ValueError(too_many.format(k=k, n=n, others=n - 1))
    return int(k)


def check_count(value: int, name: str) -> None:
    """Refuse a number of replicates (``n_bootstrap``, ``n_resamples``) below 1."""
    if int(value) < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")


def check_level(level: float) -> None:
    """Refuse a confidence level outside (0, 1)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1 (e.g. 0.95), got {level}")


def check_texts(item_texts: Sequence[str] | None, n: int) -> None:
    """Refuse ``item_texts`` that is not one text per item (None passes)."""
    if item_texts is not None and len(item_texts) != n:
        raise ValueError(f"item_texts has {len(item_texts)} entries but there are {n} items; pass one text per item")


def check_2d(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` as an array, refusing one that is not 2-D (items, dimensions)."""
    array = np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (items, dimensions) array, got shape {array.shape}")
    return array


def check_real_finite(array: np.ndarray, name: str) -> None:
    """Refuse a 2-D array of non-real numbers, or with NaN or inf (counting the affected rows)."""
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    finite_rows = np.isfinite(array).all(axis=1)
    if not finite_rows.all():
        bad = int(array.shape[0] - finite_rows.sum())
        raise ValueError(
            f"{name}: {bad} of {array.shape[0]} rows contain NaN or inf values. Likely cause: "
            f"fp16/bf16 overflow or a diverged model; compute embeddings in float32"
        )


def booleans(values: np.ndarray, message: str) -> np.ndarray:
    """``values`` as a boolean array: booleans as they are, 0/1 converted; anything else
    raises ``ValueError(message)`` (the caller says what True means)."""
    array = np.asarray(values)
    if array.dtype != np.bool_:
        if array.size and not np.isin(array, (0, 1)).all():
            raise ValueError(message)
        array = array.astype(bool)
    return array
