"""Tiny attack set-ups for the attack tests and benchmarks (beside :mod:`miniature.testing`).

A locally trained WordPiece tokenizer, a masked-LM attack model, a classifier trained
for a few seconds on synthetic sentiment reviews (the reference) and candidates made
from it the way compression does (magnitude pruning of the encoder's linear weights),
so they mostly agree with the reference and are broken on overlapping items.
"""

from __future__ import annotations

from pathlib import Path


def build(
    root: Path,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    candidates: tuple[float, ...] = (0.2, 0.4, 0.6),
    epochs: int = 8,
    attacker_hidden: int | None = None,
    attacker_layers: int | None = None,
) -> dict[str, Path]:
    """``attacker``, ``reference`` and ``pruned-<sparsity>`` model folders under ``root``."""
    import torch
    import transformers

    from miniature.core.builtin_data import sentiment_reviews
    from miniature.tools.testing import make_tiny_model, train_tokenizer

    root = Path(root)
    tokenizer_dir = train_tokenizer(root / "tokenizer")
    paths = {
        "attacker": make_tiny_model(
            root / "attacker",
            tokenizer_dir,
            layers=attacker_layers or layers,
            hidden=attacker_hidden or hidden,
            heads=heads,
            seed=5,
            head="masked-lm",
        )
    }
    reference = make_tiny_model(root / "reference", tokenizer_dir, layers=layers, hidden=hidden, heads=heads, seed=7)
    model = transformers.BertForSequenceClassification.from_pretrained(str(reference))
    tokenizer = transformers.BertTokenizerFast.from_pretrained(str(reference))
    reviews = sentiment_reviews(800, seed=1, mixed=0.0)
    batch = tokenizer([r.text for r in reviews], padding=True, truncation=True, max_length=64, return_tensors="pt")
    labels = torch.tensor([r.label for r in reviews])
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(reviews))
        for start in range(0, len(reviews), 32):
            rows = order[start : start + 32]
            loss = model(
                input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows], labels=labels[rows]
            ).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    model.save_pretrained(str(reference), safe_serialization=True)
    paths["reference"] = reference
    for sparsity in candidates:
        pruned = transformers.BertForSequenceClassification.from_pretrained(str(reference))
        with torch.no_grad():
            for name, module in pruned.bert.encoder.named_modules():
                if isinstance(module, torch.nn.Linear):
                    weight = module.weight
                    k = int(weight.numel() * sparsity)
                    if k:
                        cut = weight.abs().flatten().kthvalue(k).values
                        weight[weight.abs() <= cut] = 0.0
        folder = root / f"pruned-{int(sparsity * 100)}"
        pruned.save_pretrained(str(folder), safe_serialization=True)
        tokenizer.save_pretrained(str(folder))
        paths[folder.name] = folder
    return paths
