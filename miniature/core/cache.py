"""Output cache: expensive per-item outputs stored by fingerprint, written atomically.

Everything is stored as ``.npz`` (loaded with ``allow_pickle=False``) or JSON, never
pickle, under ``<root>/<kind>/<key>``. Writes go to a temporary file in the same folder
and are renamed into place, so a crash never leaves a half-written entry. Long
computations are saved chunk by chunk and resume where they stopped. A corrupted entry
is reported as a :class:`~miniature.errors.CacheWarning` and recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from miniature.errors import CacheWarning, MiniatureError

Arrays = dict[str, np.ndarray]


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able parts (strings, numbers, lists, dicts)."""
    text = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def fingerprint_texts(texts: Iterable[str]) -> str:
    """A content hash of a sequence of texts (order matters)."""
    digest = hashlib.blake2b(digest_size=16)
    for text in texts:
        data = str(text).encode("utf-8")
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no way to read it without setting it
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a file created with ``open()`` gets: 0o666 less the umask."""
    return 0o666 & ~current_umask()


def atomic_write_bytes(path: Path, write: Callable[[Any], None], *, exclusive: bool = False) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it into place.

    The file gets the mode ``open()`` would give it (0o666 less the umask), not the 0600
    of a temporary file, so others read it as the umask says (a shared cache, CI reports).
    ``exclusive``: never replace an existing ``path`` (FileExistsError instead), so two
    writers choosing one name cannot overwrite each other.
    """
    with atomic_file(path, exclusive=exclusive) as handle:
        write(handle)


@contextlib.contextmanager
def atomic_file(path: Path, *, exclusive: bool = False) -> Iterator[Any]:
    """A binary file handle on a temporary file beside ``path``, renamed into place when the
    block ends without an error (removed otherwise); as :func:`atomic_write_bytes`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            yield handle
            handle.flush()
            if hasattr(os, "fchmod"):  # POSIX
                os.fchmod(handle.fileno(), file_mode())
            os.fsync(handle.fileno())
        if exclusive:
            _link_exclusively(Path(handle.name), path)
            Path(handle.name).unlink()
        else:
            os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def _link_exclusively(source: Path, path: Path) -> None:
    """Give the whole file ``source`` the name ``path`` unless that exists (FileExistsError):
    a hard link, or on a file system without them the name reserved by an exclusive create
    and then replaced."""
    try:
        os.link(source, path)
    except FileExistsError:
        raise
    except OSError:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        os.replace(source, path)


def apply_umask(folder: Path) -> None:
    """Give every file under ``folder`` the mode ``open()`` would (0o666 less the umask) and
    every folder 0o777 less the umask: libraries that save through temporary files leave
    0600 behind. Call it on a built folder before renaming it into place."""
    mask = current_umask()
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def atomic_write_text(path: Path, text: str, *, exclusive: bool = False) -> None:
    atomic_write_bytes(path, lambda handle: handle.write(text.encode("utf-8")), exclusive=exclusive)


#: The folders under the cache root the gate writes to (outputs, QA answers, attack
#: journals, fine-tuned models); :meth:`OutputCache.check_writable` probes each.
CACHE_FOLDERS = ("outputs", "answers", "adversarial", "finetuned")


def _probe(folder: Path) -> None:
    """Create and remove a file in ``folder`` (OSError when that is not allowed)."""
    tempfile.NamedTemporaryFile(dir=folder, prefix=".probe.", delete=True).close()


class OutputCache:
    """Per-item outputs keyed by ``(kind, key)``; ``root=None`` disables storing.

    ``refresh=True`` ignores what is stored (and overwrites it). ``hits`` and ``misses``
    count lookups, so a run can report what it reused.
    """

    def __init__(self, root: Path | str | None, *, refresh: bool = False) -> None:
        self.root = Path(root).expanduser() if root is not None else None
        self.refresh = refresh
        self.hits = 0
        self.misses = 0
        if self.root is not None:
            self.check_writable()

    def check_writable(self, folders: Sequence[str] = CACHE_FOLDERS) -> None:
        """Probe the root and every folder the gate writes under it (``folders``), before any
        work: a :class:`MiniatureError` naming the folder and the fix, not a PermissionError
        after the work is done. Folders that do not exist yet are not created (the root is
        writable, so they can be); one that is in the way as a file is refused."""
        if self.root is None:
            return
        fix = "fix: pass --cache-dir with a folder you can write, or --no-cache to compute without storing"
        if self.root.exists() and not self.root.is_dir():
            raise MiniatureError(f"cache dir {str(self.root)!r} is a file, not a folder; {fix}")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            _probe(self.root)
        except OSError as error:
            raise MiniatureError(
                f"cache dir {str(self.root)!r} is not writable ({error.strerror or error}); {fix}"
            ) from None
        for name in folders:
            folder = self.root / name
            if not folder.exists() and not folder.is_symlink():
                continue
            try:
                if not folder.is_dir():
                    raise NotADirectoryError(0, "it is a file, not a folder")
                _probe(folder)
            except OSError as error:
                raise MiniatureError(
                    f"cache dir {str(self.root)!r}: its folder {name!r} is not writable "
                    f"({error.strerror or error}; a cache shared with another user?); {fix}"
                ) from None

    def path(self, kind: str, key: str, suffix: str = ".npz") -> Path:
        if self.root is None:
            raise RuntimeError("cache is disabled")
        return self.root / kind / f"{key}{suffix}"

    # -- arrays ----------------------------------------------------------------------------
    def load_arrays(self, kind: str, key: str) -> Arrays | None:
        """The stored arrays, or None when absent, refreshed or unreadable (warned)."""
        if self.root is None or self.refresh:
            return None
        return _read_npz(self.path(kind, key))

    def save_arrays(self, kind: str, key: str, arrays: Arrays) -> None:
        if self.root is None:
            return
        # numpy's stub lets **kwds fill savez's allow_pickle flag; no array here is named so
        atomic_write_bytes(self.path(kind, key), lambda handle: np.savez(handle, **arrays))  # type: ignore[arg-type]

    def chunked(
        self,
        kind: str,
        key: str,
        n_items: int,
        compute: Callable[[slice], Arrays],
        *,
        chunk_size: int = 1024,
    ) -> Arrays:
        """Compute per-item arrays over ``range(n_items)`` in chunks, each saved as it ends.

        An interrupted run leaves its finished chunks; the next run loads them and computes
        only the rest. When all chunks are there they are joined into one entry.
        """
        stored = self.load_arrays(kind, key)
        if stored is not None:
            self.hits += 1
            return stored
        self.misses += 1
        chunks: list[Arrays] = []
        for start in range(0, n_items, chunk_size):
            part = slice(start, min(start + chunk_size, n_items))
            chunk_key = f"{key}.part{start:09d}-{part.stop:09d}"
            loaded = self.load_arrays(kind, chunk_key)
            if loaded is None:
                loaded = compute(part)
                if n_items > chunk_size:
                    self.save_arrays(kind, chunk_key, loaded)
            chunks.append(loaded)
        joined = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}
        self.save_arrays(kind, key, joined)
        if self.root is not None:
            for start in range(0, n_items, chunk_size):
                stop = min(start + chunk_size, n_items)
                self.path(kind, f"{key}.part{start:09d}-{stop:09d}").unlink(missing_ok=True)
        return joined

    # -- JSON records ----------------------------------------------------------------------
    def load_json(self, kind: str, key: str) -> Any | None:
        if self.root is None or self.refresh:
            return None
        path = self.path(kind, key, ".json")
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as error:
            _warn_corrupt(path, error)
            return None

    def save_json(self, kind: str, key: str, value: Any) -> None:
        if self.root is None:
            return
        atomic_write_text(self.path(kind, key, ".json"), json.dumps(value, sort_keys=True))

    def read_journal(self, kind: str, key: str) -> tuple[Path | None, dict[int, dict[str, Any]]]:
        """The journal file of ``kind``/``key`` (None without a cache) and its records by item
        index; unreadable lines are dropped with a warning and the journal is rewritten
        without them (said once, not every run); with ``refresh`` the journal is removed."""
        done: dict[int, dict[str, Any]] = {}
        journal = self.path(kind, key, ".jsonl") if self.root is not None else None
        if journal is not None and journal.exists() and not self.refresh:
            dropped = 0
            for line in journal.read_text("utf-8").splitlines():
                try:
                    record = json.loads(line)
                    done[int(record["index"])] = record
                except (ValueError, KeyError, TypeError):
                    dropped += 1
            if dropped:  # rewritten without them, so the next run has nothing to drop
                atomic_write_text(journal, "".join(json.dumps(r, sort_keys=True) + "\n" for r in done.values()))
                warnings.warn(
                    CacheWarning(
                        f"dropped {dropped} unreadable line(s) from {journal} (a write cut short?) and rewrote "
                        "it without them; items left without a record are computed again"
                    ),
                    stacklevel=3,
                )
        elif journal is not None and journal.exists():
            journal.unlink()
        return journal, done

    def records(
        self,
        kind: str,
        key: str,
        items: Sequence[Any],
        compute: Callable[[Any], dict[str, Any]],
        *,
        progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """One JSON record per item, appended to a journal as each item finishes.

        For slow per-item work (an adversarial attack): an interrupted run resumes at the
        first item with no record. A truncated last line (a crash mid-write) is dropped.
        """
        journal, done = self.read_journal(kind, key)
        if done and len(done) == len(items):
            self.hits += 1
        else:
            self.misses += 1
        todo = [i for i in range(len(items)) if i not in done]
        iterator: Iterable[int] = progress(todo) if progress is not None else todo
        for index in iterator:
            record = dict(compute(items[index]))
            record["index"] = index
            done[index] = record
            if journal is not None:
                append_record(journal, record)
        return [done[i] for i in range(len(items))]


def append_record(journal: Path, record: dict[str, Any]) -> None:
    """Append one record to a journal as a JSON line, synced to disk (a kill loses no finished item)."""
    journal.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True) + "\n"
    if journal.exists() and journal.stat().st_size:
        with open(journal, "rb") as handle:  # a line cut short by a kill: end it, so this one stays whole
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                line = "\n" + line
    with open(journal, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def _read_npz(path: Path) -> Arrays | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except Exception as error:  # noqa: BLE001 - any unreadable file is recomputed
        _warn_corrupt(path, error)
        return None


def _warn_corrupt(path: Path, error: BaseException) -> None:
    warnings.warn(
        CacheWarning(f"cache file {path} is unreadable ({type(error).__name__}: {error}); recomputing it"), stacklevel=3
    )
