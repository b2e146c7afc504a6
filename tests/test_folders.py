"""Tests for miniature.core.folders.building: a folder appears only complete."""

from __future__ import annotations

import pytest

from miniature.core.folders import building


def _siblings(target):
    return sorted(p.name for p in target.parent.iterdir() if p != target)


def test_the_folder_appears_only_when_complete(tmp_path):
    target = tmp_path / "out" / "model-a"
    with building(target) as built:
        built.mkdir()
        (built / "weights.bin").write_text("w")
        assert not target.exists()  # nothing under the name while building
        assert built.parent.parent == target.parent and built.parent.name.startswith(".model-a.")
    assert (target / "weights.bin").read_text() == "w"
    assert _siblings(target) == []  # the temporary sibling is gone


def test_a_failure_leaves_no_target_and_no_temporary_sibling(tmp_path):
    target = tmp_path / "model-a"
    with pytest.raises(RuntimeError, match="training diverged"):
        with building(target) as built:
            built.mkdir()
            (built / "half.bin").write_text("h")
            raise RuntimeError("training diverged")
    assert not target.exists()
    assert _siblings(target) == []


def test_replace_swaps_an_existing_target(tmp_path):
    target = tmp_path / "model-a"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with building(target, replace=True) as built:
        built.mkdir()
        (built / "new.bin").write_text("new")
        assert (target / "old.bin").exists()  # the old one stays until the new one is complete
    assert sorted(p.name for p in target.iterdir()) == ["new.bin"]
    assert _siblings(target) == []


def test_an_existing_target_is_kept_when_a_concurrent_build_completed_it(tmp_path):
    target = tmp_path / "model-a"
    target.mkdir()
    (target / "record.json").write_text("theirs")
    with building(target, complete=lambda t: (t / "record.json").is_file()) as built:
        built.mkdir()
        (built / "record.json").write_text("ours")
    assert (target / "record.json").read_text() == "theirs"
    assert _siblings(target) == []


def test_an_existing_incomplete_target_is_an_error(tmp_path):
    target = tmp_path / "model-a"
    target.mkdir()
    (target / "stray.txt").write_text("x")
    with pytest.raises(OSError):
        with building(target, complete=lambda t: (t / "record.json").is_file()) as built:
            built.mkdir()
            (built / "record.json").write_text("ours")
    assert sorted(p.name for p in target.iterdir()) == ["stray.txt"]
    assert _siblings(target) == []


def test_the_built_folder_gets_the_umask_modes(tmp_path):
    import os

    target = tmp_path / "model-a"
    with building(target) as built:
        built.mkdir()
        (built / "w.bin").write_text("w")
        os.chmod(built / "w.bin", 0o600)  # as libraries that save through temporary files leave it
    mask = os.umask(0)
    os.umask(mask)
    assert (target / "w.bin").stat().st_mode & 0o777 == 0o666 & ~mask
