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


@pytest.fixture(scope="session", autouse=True)
def heavy_modules_imported_once():
    """pytester's in-process runs restore ``sys.modules`` afterwards; a module first imported
    inside such a run is imported again later, which faiss's SWIG types and pyarrow's
    extension types (via datasets) do not survive. Import them before any run."""
    import datasets  # noqa: F401
    import faiss  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    try:  # its scheduling-strategy classes are checked by identity when a task is submitted
        import ray.util.scheduling_strategies  # noqa: F401
    except ImportError:
        pass


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory):
    """A locally trained tokenizer and tiny random BERT/DistilBERT models on disk."""
    from miniature.tools.testing import make_tiny_models

    return make_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture
def gate_checks(request: pytest.FixtureRequest) -> pytest.Pytester:
    """A pytester project of a user's own: no checks of its own, so a gate run (``--reference``)
    runs the checks shipped with the package."""
    pytester: pytest.Pytester = request.getfixturevalue("pytester")
    return pytester
