"""Folders that appear only complete: built in a temporary sibling, then renamed into place.

A fine-tuned model, a compressed model and the demo's attack model are each a folder that
later runs trust by its name; an interrupted build must leave nothing under that name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from miniature.core.cache import apply_umask

__all__ = ["building"]


@contextmanager
def building(target: Path, *, replace: bool = False, complete: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Build the folder ``target`` so that it only ever appears complete.

    Yields a path, not yet created, inside a fresh hidden sibling of ``target``
    (``.<name>.XXXX.tmp``, in the same file system, so the rename is atomic); the body
    writes the folder there, and the sibling's other contents are scratch space. When the
    body returns, the built folder gets the umask's modes (:func:`apply_umask`) and is
    renamed to ``target``. The sibling is removed however the body ends: a failure leaves
    neither ``target`` nor a temporary folder.

    An existing ``target``: with ``replace`` it is deleted just before the rename (the
    caller has checked that it may be); otherwise the rename fails, and that error stands
    unless ``complete(target)`` says a concurrent build finished it first, which is kept.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        built = work / "model"
        yield built
        apply_umask(built)
        if replace and target.exists():
            shutil.rmtree(target)
        try:
            os.rename(built, target)
        except OSError:
            if complete is None or not complete(target):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
