"""A sentiment lexicon for BERT-Attack's antonym filter: VADER's (MIT, shipped in
``miniature/resources/sentiment``) plus a few review adjectives it lacks. Light to import."""

from __future__ import annotations

from pathlib import Path

_SENTIMENT_DIR = Path(__file__).resolve().parents[2] / "resources" / "sentiment"
_LEXICON: dict[str, int] = {}


def word_polarity(word: str) -> int:
    """+1, -1 or 0: the sentiment of ``word`` by the shipped lexicon (|valence| >= 0.5)."""
    if not _LEXICON:
        for name in ("vader_lexicon.tsv", "additions.tsv"):
            for line in (_SENTIMENT_DIR / name).read_text("utf-8").splitlines():
                if line and not line.startswith("#"):
                    entry, valence = line.split("\t")
                    _LEXICON[entry] = 1 if float(valence) > 0 else -1
    return _LEXICON.get(word.lower(), 0)
