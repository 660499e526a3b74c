"""Small I/O helpers: atomic writes, robust table reading, data fingerprints."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import DataError
from .text import parse_table, read_table  # noqa: F401  (the table reader lives in verticore.text)

PathLike = str | os.PathLike

# ".<name>.<pid>.<random>.tmp" (pid since this version) or ".<name>.<random>.tmp" (older writers)
_TEMP_RE = re.compile(r"^\.(.+?)\.(?:(\d+)\.)?[A-Za-z0-9_]+\.tmp$")


def _temp_prefix(name: str) -> str:
    """Temp-file prefix of an atomic write of ``name``: it carries the writer's pid so that a
    later process can tell a dead save's leftover from a live one (see :func:`remove_stale_temps`)."""
    return f".{name}.{os.getpid()}."


def fsync_dir(path: PathLike) -> None:
    """fsync a directory so renames/creations in it survive a power cut (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists on this machine (permission errors count as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: temp file in the same dir, fsync, rename, fsync the dir.

    After a crash ``path`` holds either the old or the new bytes, never a mix; the rename is
    made durable by fsyncing the directory (POSIX; skipped where the OS cannot).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def remove_stale_temps(directory: PathLike, *, all_dead: bool = False) -> int:
    """Remove temp files left in ``directory`` by killed :func:`atomic_write_bytes` calls.

    A temp file (``.<name>.<pid>.<random>.tmp``) is stale when its writer ``pid`` no longer runs
    on this machine. ``all_dead=True`` declares every temp file stale (the caller holds the
    directory's writer lock, so no live save can own one), which also covers temps written by
    older versions without a pid. Returns how many files were removed.
    """
    d = Path(directory)
    removed = 0
    try:
        entries = list(d.iterdir())
    except OSError:
        return 0
    for f in entries:
        m = _TEMP_RE.match(f.name)
        if not m or not f.is_file():
            continue
        pid = int(m.group(2)) if m.group(2) else None
        if not all_dead and (pid is None or pid == os.getpid() or pid_alive(pid)):
            continue
        try:
            f.unlink()
            removed += 1
        except OSError:
            pass
    return removed


class DirLock:
    """An exclusive advisory lock on a directory (``flock`` on the directory itself, no extra file).

    Serialises writers of one directory across threads and processes; the OS drops it when the
    holder dies, so whoever holds it knows every temp/staging leftover in the directory is stale.
    Where ``flock`` is unavailable (Windows, some network filesystems) a blocking :meth:`acquire`
    still returns True so the caller goes on, but :attr:`held` stays False: only clean up what
    is provably dead (by pid) then.
    """

    def __init__(self, directory: PathLike) -> None:
        self.directory = Path(directory)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object really holds the OS lock."""
        return self._fd is not None

    def acquire(self, blocking: bool = True, shared: bool = False) -> bool:
        """Take the lock (``shared=True``: a reader's lock that only excludes writers).

        ``blocking=False`` returns False instead of waiting when another holder has it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks to take
            return blocking
        try:
            fd = os.open(self.directory, os.O_RDONLY)
        except OSError:  # cannot open the directory: nothing to lock
            return blocking
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB))
        except OSError as exc:
            os.close(fd)
            if not blocking and exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            return blocking  # the filesystem has no flock: go on unlocked (held stays False)
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "DirLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock_for_reading(directory: PathLike, clean_dead_saves: Callable[[Path], None]) -> DirLock:
    """Lock a generation-saved folder for reading and return the held lock (release it after).

    When no save is running, ``clean_dead_saves(directory)`` removes what killed saves left (a
    read-only folder is skipped: loading still works); when one is running, wait for it and
    then hold a shared lock, so no save can delete the generation being read.
    """
    d = Path(directory)
    lock = DirLock(d)
    if lock.acquire(blocking=False) and lock.held:
        try:
            clean_dead_saves(d)
        except OSError:
            pass
    else:
        lock.acquire(shared=True)
    return lock


def next_generation(directory: PathLike, pattern: "re.Pattern[str]", pointer: PathLike | None = None) -> int:
    """The number for a new save generation: one more than any on disk (committed, or left
    half-written by a killed save: its number is never reused) and than the ``"generation"``
    recorded in the ``pointer`` JSON file, when there is one. ``pattern``'s group 1 is the number."""
    gen = 0
    for f in Path(directory).iterdir():
        m = pattern.match(f.name)
        if m:
            gen = max(gen, int(m.group(1)))
    if pointer is not None:
        try:
            gen = max(gen, int(json.loads(Path(pointer).read_text(encoding="utf-8")).get("generation", 0)))
        except Exception:  # missing or unreadable pointer: the files on disk decide
            pass
    return gen + 1


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Atomically write UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as pretty JSON (never pickle)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: PathLike, what: str = "file") -> Any:
    """Read JSON, turning corruption into a clear :class:`DataError`."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{what} {path} is corrupt (not valid UTF-8 JSON: {exc})") from None


def clean_texts(texts: Iterable[Any], *, what: str = "text") -> list[str]:
    """Validate a batch of texts: must be strings and not empty/whitespace."""
    out: list[str] = []
    for i, t in enumerate(texts):
        if t is None or (isinstance(t, float) and t != t):
            raise DataError(f"{what} #{i} is missing")
        if not isinstance(t, str):
            t = str(t)
        if not t.strip():
            raise DataError(f"{what} #{i} is empty or whitespace only")
        out.append(t)
    return out


def clean_labels(labels: Iterable[Any], multi_label: bool = False, what: str = "training") -> list[Any]:
    """Validate and normalise labels: stripped strings, or sorted sets of them when ``multi_label``
    (``"a|b"`` or a list). A missing or blank label raises :class:`DataError` naming its row."""
    out: list[Any] = []
    for i, y in enumerate(labels):
        if y is None or (isinstance(y, float) and y != y) or (isinstance(y, str) and not y.strip()):
            raise DataError(f"{what} label #{i} is missing")
        if multi_label:
            items = [s.strip() for s in y.split("|")] if isinstance(y, str) else [str(s).strip() for s in y]
            out.append(sorted({s for s in items if s}))
        else:
            out.append(str(y).strip())
    return out


def clean_labelled_texts(texts: Iterable[Any], labels: Iterable[Any], what: str) -> tuple[list[str], list[str]]:
    """Single-label training data for a model named ``what``: valid texts, normalised labels, as
    many of each, and at least two different labels."""
    texts, y = clean_texts(list(texts)), clean_labels(list(labels))
    if len(texts) != len(y):
        raise DataError(f"{len(texts)} texts but {len(y)} labels")
    if len(set(y)) < 2:
        raise DataError(f"{what} needs at least two different labels")
    return texts, y


def fingerprint_texts(texts: Iterable[str], labels: Iterable[Any] | None = None) -> str:
    """Order-sensitive SHA-256 of texts (and labels), to tie an artifact to its training data."""
    h = hashlib.sha256()
    labels_iter = iter(labels) if labels is not None else None
    n = 0
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x1f")
        if labels_iter is not None:
            h.update(str(next(labels_iter)).encode("utf-8"))
        h.update(b"\x1e")
        n += 1
    return f"sha256:{h.hexdigest()[:32]}:n={n}"


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
