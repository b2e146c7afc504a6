"""Tiny offline models and gate-figure comparison for a project's own tests: the public import
path (``from miniature.testing import make_tiny_models``); the code is in :mod:`miniature.tools.testing`."""

from miniature.tools.testing import (
    TINY_MODELS,
    TinyModels,
    figures_close,
    gate_figures,
    make_tiny_model,
    make_tiny_models,
    train_tokenizer,
)

__all__ = [
    "TINY_MODELS",
    "TinyModels",
    "figures_close",
    "gate_figures",
    "make_tiny_model",
    "make_tiny_models",
    "train_tokenizer",
]
