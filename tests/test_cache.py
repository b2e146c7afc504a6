"""The output cache: atomic, pickle-free, resumable, and actually used."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from miniature.core.cache import OutputCache
from miniature.core.gate import Gate
from miniature.errors import CacheWarning, MiniatureError
from miniature.core.settings import make_settings


def small_gate(tiny_models, cache_dir: Path, **overrides) -> Gate:
    settings = make_settings(
        reference=str(tiny_models["reference"]),
        candidate=[str(tiny_models["small"])],
        cache_dir=cache_dir,
        data_limit=60,
        bootstrap=0,
        **overrides,
    )
    return Gate(settings)


def run_all(gate: Gate) -> dict[str, float]:
    pair = gate.pairs()[0]
    return {c: gate.compare(c, pair).figure for c in ("prediction_errors", "data_representation", "data_distribution")}


def forward_calls(gate: Gate) -> int:
    return sum(w.forward_calls for w in gate.models.loaded().values())


@pytest.mark.slow
def test_second_identical_run_does_no_forward_pass(tiny_models, tmp_path: Path) -> None:
    first = small_gate(tiny_models, tmp_path)
    figures = run_all(first)
    assert forward_calls(first) > 0
    second = small_gate(tiny_models, tmp_path)
    assert run_all(second) == figures
    assert forward_calls(second) == 0 and second.cache.hits > 0 and second.cache.misses == 0
    assert not any(tmp_path.rglob("*.pkl")) and any(tmp_path.rglob("*.npz"))


@pytest.mark.slow
def test_refresh_recomputes_and_changed_settings_miss(tiny_models, tmp_path: Path) -> None:
    run_all(small_gate(tiny_models, tmp_path))
    refreshed = small_gate(tiny_models, tmp_path, refresh=True)
    run_all(refreshed)
    assert forward_calls(refreshed) > 0
    other_pooling = small_gate(tiny_models, tmp_path, pooling="mean")
    run_all(other_pooling)
    assert other_pooling.cache.misses > 0


@pytest.mark.slow
def test_corrupted_cache_file_is_reported_and_recomputed(tiny_models, tmp_path: Path) -> None:
    figures = run_all(small_gate(tiny_models, tmp_path))
    victim = sorted((tmp_path / "outputs").glob("*.npz"))[0]
    victim.write_bytes(b"not a zip file")
    gate = small_gate(tiny_models, tmp_path)
    with pytest.warns(CacheWarning, match="unreadable"):
        assert run_all(gate) == figures
    assert forward_calls(gate) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.load(victim, allow_pickle=False)  # rewritten whole


def test_chunked_computation_resumes_after_interruption(tmp_path: Path) -> None:
    cache = OutputCache(tmp_path)
    calls: list[slice] = []

    def compute(part: slice) -> dict[str, np.ndarray]:
        calls.append(part)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return {"x": np.arange(part.start, part.stop) * 2.0}

    with pytest.raises(KeyboardInterrupt):
        cache.chunked("emb", "key", 10, compute, chunk_size=3)
    assert len(list((tmp_path / "emb").glob("*.part*.npz"))) == 2
    calls.clear()
    result = OutputCache(tmp_path).chunked("emb", "key", 10, compute, chunk_size=3)
    np.testing.assert_array_equal(result["x"], np.arange(10) * 2.0)
    assert [c.start for c in calls] == [6, 9]
    assert not list((tmp_path / "emb").glob("*.part*"))


def test_records_journal_resumes_and_drops_a_torn_line(tmp_path: Path) -> None:
    cache = OutputCache(tmp_path)
    seen: list[str] = []
    items = ["a", "b", "c"]
    cache.records("attack", "k", items[:2], lambda x: (seen.append(x), {"v": x * 2})[1])
    journal = tmp_path / "attack" / "k.jsonl"
    journal.write_text(journal.read_text() + '{"index": 2, "v": "c')  # torn write
    seen.clear()
    with pytest.warns(CacheWarning):
        out = cache.records("attack", "k", items, lambda x: (seen.append(x), {"v": x * 2})[1])
    assert [r["v"] for r in out] == ["aa", "bb", "cc"] and seen == ["c"]


def test_read_only_cache_dir_is_a_clear_error(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        target = tmp_path / "file-not-dir"
        target.write_text("x")
        root = target / "cache"  # cannot create a folder under a file, even as root
    else:
        root = tmp_path / "ro"
        root.mkdir()
        root.chmod(0o500)
    with pytest.raises(MiniatureError, match="not writable.*--cache-dir"):
        OutputCache(root)
