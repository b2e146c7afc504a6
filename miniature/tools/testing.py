"""Tiny offline models for tests and examples: a locally trained WordPiece tokenizer and
randomly initialised BERT/DistilBERT models of different sizes, saved with
``save_pretrained`` so every loading path is exercised for real, with no hub. And the
figures of a gate as two runs of it must agree on (:func:`gate_figures`, :func:`figures_close`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miniature.core.builtin_data import news_sentences, sentiment_reviews

#: name -> (architecture, layers, hidden size, heads, init seed)
TINY_MODELS: dict[str, tuple[str, int, int, int, int]] = {
    "reference": ("bert", 4, 64, 4, 0),  # the "large" model
    "small": ("bert", 2, 32, 2, 1),  # a 2-layer smaller sibling
    "distil": ("distilbert", 2, 32, 2, 2),  # DistilBERT-shaped
    "reinit": ("bert", 4, 64, 4, 3),  # same shape as reference, other initialisation
}


@dataclass(frozen=True)
class TinyModels:
    root: Path
    tokenizer_dir: Path
    paths: dict[str, Path]

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]


def train_tokenizer(directory: Path, *, vocab_size: int = 600) -> Path:
    """A lower-cased WordPiece tokenizer on the project's own text, saved; the same files in
    every process (the special tokens, every character alone and as ``##`` continuation,
    then the most frequent words, ties broken alphabetically) so tiny-model figures are
    reproducible across runs and machines (a trained WordPiece vocabulary is not: its
    trainer breaks frequency ties in hash order)."""
    import collections
    import re

    from transformers import BertTokenizerFast

    corpus = [r.text for r in sentiment_reviews(600, seed=11)] + news_sentences(200, seed=11)
    counts = collections.Counter(word for text in corpus for word in re.findall(r"\w+|[^\w\s]", text.lower()))
    characters = sorted({c for word in counts for c in word})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *characters, *(f"##{c}" for c in characters)]
    known = set(vocab)
    for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if len(vocab) >= vocab_size:
            break
        if word not in known:
            vocab.append(word)
            known.add(word)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), model_max_length=128)
    tokenizer.save_pretrained(str(directory))
    return directory


def make_tiny_model(
    directory: Path,
    tokenizer_dir: Path,
    *,
    architecture: str = "bert",
    layers: int = 2,
    hidden: int = 32,
    heads: int = 2,
    seed: int = 0,
    num_labels: int = 2,
    head: str = "classification",
) -> Path:
    """Save a randomly initialised model (safetensors) with the tokenizer beside it."""
    import torch
    import transformers
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast.from_pretrained(str(tokenizer_dir))
    common = dict(
        vocab_size=tokenizer.vocab_size,
        max_position_embeddings=128,
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
    )
    config: transformers.PretrainedConfig
    classes: dict[str, type[transformers.PreTrainedModel]]
    if architecture == "bert":
        config = transformers.BertConfig(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=hidden * 2,
            **common,
        )
        classes = {
            "classification": transformers.BertForSequenceClassification,
            "qa": transformers.BertForQuestionAnswering,
            "masked-lm": transformers.BertForMaskedLM,
            "encoder": transformers.BertModel,
        }
    elif architecture == "distilbert":
        config = transformers.DistilBertConfig(
            dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=hidden * 2, **common
        )
        classes = {
            "classification": transformers.DistilBertForSequenceClassification,
            "qa": transformers.DistilBertForQuestionAnswering,
            "masked-lm": transformers.DistilBertForMaskedLM,
            "encoder": transformers.DistilBertModel,
        }
    else:
        raise ValueError(f"architecture must be 'bert' or 'distilbert', got {architecture!r}")
    config.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
    config.label2id = {v: k for k, v in config.id2label.items()}
    torch.manual_seed(seed)
    model = classes[head](config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    return directory


def make_tiny_models(root: Path) -> TinyModels:
    """Build the tokenizer and every model in :data:`TINY_MODELS` under ``root``."""
    tokenizer_dir = train_tokenizer(root / "tokenizer")
    paths = {}
    for name, (architecture, layers, hidden, heads, seed) in TINY_MODELS.items():
        paths[name] = make_tiny_model(
            root / name, tokenizer_dir, architecture=architecture, layers=layers, hidden=hidden, heads=heads, seed=seed
        )
    # the attack model of BERT-Attack: a masked LM sharing the tokenizer
    paths["attacker"] = make_tiny_model(
        root / "attacker", tokenizer_dir, layers=2, hidden=32, heads=2, seed=4, head="masked-lm"
    )
    return TinyModels(root=root, tokenizer_dir=tokenizer_dir, paths=paths)


#: the numbers of a result that two runs of the same gate must agree on
RESULT_NUMBERS = ("figure", "chance", "corrected", "ci_low", "ci_high", "n", "k", "threshold")


def gate_figures(gate: Any, characteristics: Iterable[str] | None = None) -> dict[str, Any]:
    """Every pair's figures, sweep and numeric details per characteristic (default: the gate's
    registry), keyed ``characteristic:reference-vs-candidate``, as JSON holds them; a skipped
    one as the first clause of its reason."""
    from miniature.errors import NotApplicable

    names = list(characteristics) if characteristics is not None else gate.registry.names
    found: dict[str, Any] = {}
    for pair in gate.pairs():
        for characteristic in names:
            key = f"{characteristic}:{pair.reference}-vs-{pair.candidate}"
            try:
                result = gate.compare(characteristic, pair)
            except NotApplicable as error:
                found[key] = {"skipped": str(error).split(";")[0]}
                continue
            entry = {name: getattr(result, name) for name in RESULT_NUMBERS}
            entry["sweep"] = dict(result.sweep)
            entry["details"] = {k: v for k, v in result.details.items() if isinstance(v, (int, float))}
            found[key] = entry
    return json.loads(json.dumps(found))


def figures_close(a: Any, b: Any, *, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """Equal up to the floating-point tolerance the project documents (nan equals nan)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(figures_close(a[k], b[k], rel_tol=rel_tol, abs_tol=abs_tol) for k in a)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)
    return a == b
