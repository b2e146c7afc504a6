"""Offline TextAttack: NLTK's English stopwords as shipped with miniature, and
:func:`prepare_textattack`, which makes ``import textattack`` work with no network.

Light on purpose (nothing heavy at module level):
:mod:`miniature.core.attack.runner` imports it at import time, and
:mod:`miniature.core.attack.recipe` calls :func:`prepare_textattack` before it imports TextAttack.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from miniature.errors import MiniatureError

NLTK_DATA_DIR = Path(__file__).resolve().parents[2] / "resources" / "nltk_data"
_STOPWORDS_FILE = NLTK_DATA_DIR / "corpora" / "stopwords" / "english"


def english_stopwords() -> list[str]:
    """NLTK's English stopword list (179 words) as shipped with miniature."""
    return [w for w in _STOPWORDS_FILE.read_text("utf-8").split() if w]


def prepare_textattack() -> None:
    """Make ``import textattack`` work offline, then import it (idempotent).

    Adds miniature's NLTK data (the English stopword corpus, which TextAttack reads at
    import) to the end of ``nltk.data.path``, so a user's own NLTK data still comes
    first, and replaces ``nltk.download`` with a no-op during the import: on its first
    import TextAttack downloads six NLTK packages none of which BERT-Attack uses.
    """
    if "textattack" in sys.modules:
        return
    import nltk

    if str(NLTK_DATA_DIR) not in nltk.data.path:
        nltk.data.path.append(str(NLTK_DATA_DIR))
    download = nltk.download
    nltk.download = _no_download
    try:
        import textattack  # noqa: F401
    except LookupError as error:
        raise MiniatureError(
            f"TextAttack could not find NLTK data offline ({str(error).strip().splitlines()[0]}); "
            f"fix: reinstall miniature so {NLTK_DATA_DIR} ships with it, or run "
            "python -m nltk.downloader stopwords"
        ) from None
    finally:
        nltk.download = download


def _no_download(*args: Any, **kwargs: Any) -> bool:
    return False


#: Bumped when the attack changes in a way that invalidates cached outcomes.
ATTACK_VERSION = "bert-attack-li-2020/miniature-2"


def textattack_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("textattack")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"
