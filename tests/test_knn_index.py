"""Approximate neighbour search (``--knn-index``) against exact search, its recall, ``auto``'s
choice, and precomputed vectors (``--vectors``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from miniature.core import neighbours as nb
from miniature.core import settings as opt
from miniature.core.characteristics.distribution import measure_distribution
from miniature.core.characteristics.representation import measure_representation
from miniature.core.characteristics.similarity import measure_similarity
from miniature.errors import DataWarning, MiniatureError


def clustered(n: int, d: int, *, seed: int, clusters: int = 30, spread: float = 0.6) -> np.ndarray:
    """Points around a few centres: neighbours an approximate index can find."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d)) * 3
    return (centres[rng.integers(0, clusters, n)] + spread * rng.normal(size=(n, d))).astype(np.float32)


def brute_force(base: np.ndarray, queries: np.ndarray, k: int, *, exclude_self: bool) -> np.ndarray:
    """Cosine neighbours from the full float64 similarity matrix of the unit float32 vectors
    miniature searches, in (-similarity, index) order."""
    unit = lambda x: nb.normalized_float32(x, "x").astype(np.float64)  # noqa: E731
    similarity = unit(queries) @ unit(base).T
    if exclude_self:
        np.fill_diagonal(similarity, -np.inf)
    order = np.lexsort((np.broadcast_to(np.arange(base.shape[0]), similarity.shape), -similarity), axis=1)
    return order[:, :k]


# -- recall ------------------------------------------------------------------------------------
def test_recall_hand_worked() -> None:
    found = np.array([[0, 1, 2], [3, 4, 5], [7, 8, 9]])
    exact = np.array([[2, 1, 9], [6, 7, 8], [9, 8, 7]])
    # row 0 shares {1, 2}; row 1 nothing; row 2 the same set in another order
    assert nb.recall_at_k(found, exact).tolist() == [2 / 3, 0.0, 1.0]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_recall_equals_its_set_twin(data) -> None:
    m = data.draw(st.integers(1, 6))
    k = data.draw(st.integers(1, 8))
    pool = st.lists(st.integers(0, 15), min_size=k, max_size=k, unique=True)
    found = np.array([data.draw(pool) for _ in range(m)])
    exact = np.array([data.draw(pool) for _ in range(m)])
    twin = [len(set(f) & set(e)) / k for f, e in zip(found.tolist(), exact.tolist())]
    assert np.allclose(nb.recall_at_k(found, exact), twin)


def test_recall_refuses_arrays_of_different_shapes() -> None:
    with pytest.raises(ValueError, match="one shape"):
        nb.recall_at_k(np.zeros((2, 3), int), np.zeros((2, 4), int))


# -- auto --------------------------------------------------------------------------------------
def test_auto_is_exact_up_to_the_documented_size_and_ivf_above() -> None:
    assert nb.resolve_index("auto", nb.AUTO_EXACT_MAX) == "exact"
    assert nb.resolve_index("auto", nb.AUTO_EXACT_MAX + 1) == "ivf"
    assert nb.resolve_index("hnsw", 10) == "hnsw"
    with pytest.raises(ValueError, match="exact, ivf, hnsw"):
        nb.resolve_index("annoy", 10)
    # the option's copies (settings does not import FAISS)
    assert (opt.KNN_INDEXES, opt.AUTO_EXACT_MAX) == (nb.KNN_INDEXES, nb.AUTO_EXACT_MAX)


def test_auto_below_the_size_is_the_exact_search_bit_for_bit() -> None:
    x = clustered(400, 12, seed=1)
    search = nb.knn_search(x, 7, index="auto")
    assert search.method == "exact" and search.sample is None and search.recall() == 1.0
    assert np.array_equal(search.indices, nb.knn_indices(x, 7))
    assert np.array_equal(search.indices, brute_force(x, x, 7, exclude_self=True))


# -- approximate against exact -----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("method", ["ivf", "hnsw"])
def test_approximate_search_against_exact(method: str) -> None:
    x = clustered(3000, 16, seed=2)
    k = 10
    search = nb.knn_search(x, k, index=method, seed=4)
    exact = brute_force(x, x, k, exclude_self=True)
    assert search.method == method and search.approximate
    # the exact twin of the sample is the brute-force one, and the recall is counted against it
    assert np.array_equal(search.sample, nb.sample_rows(3000, 4))
    assert np.array_equal(search.exact_indices, exact[search.sample])
    assert search.recall() == pytest.approx(nb.recall_at_k(search.indices[search.sample], exact[search.sample]).mean())
    assert search.recall() >= 0.9
    assert nb.recall_at_k(search.indices, exact).mean() >= 0.9  # on every item, not only the sample
    # each row: k distinct other items, nearest first
    assert not (search.indices == np.arange(3000)[:, None]).any()
    assert all(len(set(row)) == k for row in search.indices.tolist())
    assert (np.diff(search.scores, axis=1) <= 0).all()


def test_ivf_is_deterministic_and_finds_what_exact_finds_on_easy_data() -> None:
    x = clustered(2000, 8, seed=3, clusters=10, spread=0.3)
    first = nb.knn_search(x, 5, index="ivf")
    again = nb.knn_search(x, 5, index="ivf")
    assert np.array_equal(first.indices, again.indices) and first.parameters == again.parameters
    assert set(first.parameters) == {"nlist", "nprobe"} and first.describe().startswith("ivf (nlist ")


def test_l2_queries_against_a_separate_base() -> None:
    base = nb.normalized_float32(clustered(2500, 16, seed=5), "base")
    queries = nb.normalized_float32(clustered(300, 16, seed=6), "queries")
    search = nb.NeighbourIndex(base, metric="l2", index="ivf").search(queries, 10, exclude_self=False)
    exact, squared = nb.exact_search(base, queries, 10, metric="l2", exclude_self=False)
    assert nb.recall_at_k(search.indices, exact).mean() >= 0.9
    assert np.array_equal(search.exact_indices, exact[search.sample])
    # an approximate k-th neighbour is never nearer than the exact one
    assert (search.scores[:, -1] >= squared[:, -1] - 1e-12).all()


def test_exact_search_of_some_rows_equals_those_rows_of_the_whole() -> None:
    x = nb.normalized_float32(clustered(500, 8, seed=7), "x")
    whole, scores = nb.exact_search(x, x, 6, metric="ip", exclude_self=True)
    rows = np.array([3, 17, 250, 499])
    some, some_scores = nb.exact_search(x, x, 6, metric="ip", exclude_self=True, rows=rows)
    assert np.array_equal(some, whole[rows]) and np.array_equal(some_scores, scores[rows])


# -- in the characteristics --------------------------------------------------------------------
def pair(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A reference and a candidate = reference + small noise (as a quantized model gives)."""
    reference = clustered(n, d, seed=seed)
    noise = np.random.default_rng(seed + 100).normal(scale=0.15, size=reference.shape)
    return reference, (reference + noise).astype(np.float32)


@pytest.mark.slow
def test_representation_reports_recall_and_the_deviation_on_the_sample() -> None:
    reference, candidate = pair(3000, 16, seed=8)
    names = dict(reference="ref", candidate="int8", n_bootstrap=0, ks=(5, 10))
    exact = measure_representation(reference, candidate, **names)
    approximate = measure_representation(reference, candidate, knn_index="ivf", **names)
    assert "neighbour_search" not in exact.details
    searched = approximate.details["neighbour_search"]
    assert searched["sample"] == nb.RECALL_SAMPLE
    assert searched["reference_index"].startswith("ivf") and searched["reference_recall_at_10"] >= 0.9
    # the deviation is the figure on the sample from approximate minus from exact neighbours
    sample = nb.sample_rows(3000, 0)
    exact_jaccard = _jaccard(
        brute_force(reference, reference, 10, exclude_self=True)[sample],
        brute_force(candidate, candidate, 10, exclude_self=True)[sample],
    )
    assert searched["exact_figure_on_sample"] == pytest.approx(exact_jaccard)
    assert searched["figure_deviation"] == pytest.approx(searched["figure_on_sample"] - exact_jaccard)
    assert abs(approximate.figure - exact.figure) < 0.05


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(set(x) | set(y)) for x, y in zip(a.tolist(), b.tolist())]))


def test_distribution_reports_recall_and_the_deviation_on_the_sample() -> None:
    reference, candidate = pair(3600, 16, seed=9)
    shifted = reference.copy()
    shifted[3300:] += 2.5  # the last challenge items come from elsewhere
    candidate[3300:] += 2.5
    splits = lambda x: (x[:2400], x[2400:3000], x[3000:])  # noqa: E731
    names = dict(reference="ref", candidate="int8", n_bootstrap=0, ks=(10,))
    exact = measure_distribution(splits(shifted), splits(candidate), **names)
    approximate = measure_distribution(splits(shifted), splits(candidate), knn_index="ivf", **names)
    assert "neighbour_search" not in exact.details
    searched = approximate.details["neighbour_search"]
    assert searched["sample"] == 1200  # every held-out and challenge item (600 each)
    assert min(searched["reference_recall_at_10"], searched["candidate_recall_at_10"]) >= 0.9
    # with every item sampled, the exact figure on the sample is the exact figure
    assert searched["exact_figure_on_sample"] == pytest.approx(exact.figure)
    assert searched["figure_on_sample"] == pytest.approx(approximate.figure)


def test_similarity_mutual_knn_reports_its_search_and_exact_stays_exact() -> None:
    reference, candidate = pair(2500, 16, seed=10)
    names = dict(reference="ref", candidate="int8", n_bootstrap=0, ks=(5, 10))
    exact = measure_similarity(reference, candidate, **names)
    approximate = measure_similarity(reference, candidate, knn_index="hnsw", **names)
    assert "neighbour_search" not in exact.details
    searched = approximate.details["neighbour_search"]
    assert searched["reference_index"].startswith("hnsw")
    assert "mutual_knn_deviation" in searched and abs(searched["mutual_knn_deviation"]) < 0.05
    assert approximate.figure == exact.figure  # CKA needs no neighbours


def test_low_recall_warns_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nb, "IVF_TARGET_RECALL", 0.0)  # keep the first nprobe, however poor
    rng = np.random.default_rng(11)
    hard = rng.normal(size=(6000, 64)).astype(np.float32)  # no structure: inverted lists miss neighbours
    with pytest.warns(DataWarning) as caught:
        measured = measure_representation(
            hard, hard + 0.01, reference="ref", candidate="int8", knn_index="ivf", n_bootstrap=0, ks=()
        )
    assert measured.details["neighbour_search"]["reference_recall_at_10"] < nb.RECALL_WARNING
    lines = [str(w.message) for w in caught if "approximate neighbours" in str(w.message)]
    assert lines and "\n" not in lines[0] and "fix: pass --knn-index exact" in lines[0]


# -- precomputed vectors -----------------------------------------------------------------------
def test_the_vectors_option_parses_name_role_and_file() -> None:
    assert opt.named_vectors("int8=v.npy") == ("int8", "test", "v.npy")
    assert opt.named_vectors("org/model:train=/d/t.npy") == ("org/model", "train", "/d/t.npy")
    assert opt.named_vectors("c:/x:y=v.npy") == ("c:/x:y", "test", "v.npy")  # not a role: part of the name
    for bad in ("int8", "=v.npy", "int8=v.txt"):
        with pytest.raises(Exception, match="NAME\\[:ROLE\\]=FILE.npy"):
            opt.named_vectors(bad)


@pytest.mark.slow
def test_precomputed_vectors_replace_encoding_and_are_checked(tiny_models, tmp_path: Path) -> None:
    from miniature.core.cache import OutputCache
    from miniature.core.loading import ModelStore
    from miniature.core.outputs import OutputStore
    from miniature.core.run_data import RunData
    from miniature.core.settings import make_settings

    vectors = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    files = {}
    for name, array in (("good", vectors), ("short", vectors[:39]), ("nan", np.where(vectors > 2, np.nan, vectors))):
        files[name] = tmp_path / f"{name}.npy"
        np.save(files[name], array)

    def store(file: Path) -> tuple[ModelStore, OutputStore]:
        settings = make_settings(
            reference=str(tiny_models["reference"]),
            candidate=[str(tiny_models["small"])],
            cache_dir=tmp_path / "cache",
            data_limit=40,
            vectors=[("small", "test", str(file))],
        )
        models = ModelStore(settings, OutputCache(tmp_path / "cache"), RunData(settings))
        return models, OutputStore(settings, models, models.cache)

    models, outputs = store(files["good"])
    assert np.array_equal(outputs.outputs("small", "test")["embeddings"], vectors)
    assert list(models.loaded()) == []  # nothing was encoded
    with pytest.raises(MiniatureError, match=r"39 rows but the test data .* has 40 items; fix:") as error:
        store(files["short"])[1].outputs("small", "test")
    assert "\n" not in str(error.value)
    with pytest.raises(MiniatureError, match="contain NaN or inf"):
        store(files["nan"])[1].outputs("small", "test")


def test_vectors_of_a_model_not_in_the_run_are_a_usage_error(tmp_path: Path) -> None:
    from miniature.core.settings import make_settings
    from miniature.plugin.startup import check_vector_files

    np.save(tmp_path / "v.npy", np.zeros((2, 2)))
    settings = make_settings(reference="bert-base", vectors=[("other", "test", str(tmp_path / "v.npy"))])
    with pytest.raises(pytest.UsageError, match="'other' is not a model of this run"):
        check_vector_files(settings)
    missing = make_settings(reference="bert-base", vectors=[("bert-base", "test", str(tmp_path / "none.npy"))])
    with pytest.raises(pytest.UsageError, match="no such file"):
        check_vector_files(missing)


def test_the_search_is_in_the_json_and_on_the_page_escaped() -> None:
    from miniature.core.characteristics.base import ComparisonResult
    from miniature.core.characteristics.representation import compare_representation
    from miniature.reports.page import evidence_html

    reference, candidate = pair(2000, 16, seed=12)
    result = compare_representation(
        reference, candidate, reference="ref", candidate="<b>int8</b>", knn_index="ivf", n_bootstrap=0, ks=()
    )
    again = ComparisonResult.from_json(result.to_json())
    assert again.details["neighbour_search"] == result.details["neighbour_search"]
    page = evidence_html(result)
    assert "neighbour search: reference recall at 10" in page and "neighbour search: figure deviation" in page
    assert "ivf (nlist " in page and "<b>int8</b>" not in page and "&lt;b&gt;int8&lt;/b&gt;" in page


def test_ivf_scans_8_bit_codes_and_rescoring_restores_exact_neighbours(monkeypatch: pytest.MonkeyPatch) -> None:
    import faiss

    monkeypatch.setattr(nb, "IVF_TARGET_RECALL", 1.01)  # never reached: every list is scanned
    x = nb.normalized_float32(clustered(2000, 16, seed=11), "x")
    index = nb.NeighbourIndex(x, metric="ip", index="ivf")
    search = index.search(x, 10, exclude_self=True)
    assert isinstance(index._faiss, faiss.IndexIVFScalarQuantizer)
    assert search.parameters["nprobe"] == search.parameters["nlist"]
    exact, _ = nb.exact_search(x, x, 10, metric="ip", exclude_self=True)
    # the codes' error misorders near ties; re-scoring 4K candidates in float64 undoes it
    assert np.array_equal(search.indices, exact)
