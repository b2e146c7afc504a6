"""Shared fixtures of the project's own tests (the gate's checks ship in miniature/checks/)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One torch thread for the tests: on two shared cores, more threads oversubscribe and
    stall (training steps measured 10x slower with two)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory):
    """A locally trained tokenizer and tiny random BERT/DistilBERT models on disk."""
    from miniature.testing import make_tiny_models

    return make_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture
def gate_checks(request: pytest.FixtureRequest) -> pytest.Pytester:
    """A pytester project of a user's own: no checks of its own, so a gate run (``--reference``)
    runs the checks shipped with the package."""
    # pytester restores sys.modules after each in-process run; a second import of faiss's
    # SWIG module then crashes on dealloc, so import the heavy modules before it snapshots
    import faiss  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    pytester: pytest.Pytester = request.getfixturevalue("pytester")
    return pytester
