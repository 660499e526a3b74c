"""A versioned model registry on the local filesystem.

Layout (one folder per app and model)::

    <root>/<app>/<model>/
        versions/0001/artifact/...     the model files (copied, read-only), never changed again
        versions/0001/version.json     written last inside a staging folder that is then renamed
                                       into place: a version folder is complete or absent
        versions/0001/gate.json        the latest gate comparison of this version with production
        aliases.json                   {"production": {"version": 3, "previous": [1, 2]}, ...}, atomic
        history.jsonl                  append-only promotion log (who, when, from, to, reason)
        counter.json                   the highest version number ever handed out (never reused)

Writers hold a :class:`~verticore.io.DirLock` on the model folder; readers take no lock (every
file they read is replaced atomically). Nothing is deleted except by :meth:`ModelRegistry.prune`.
"""
from __future__ import annotations

import contextlib
import errno
import getpass
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from ..errors import ArtifactError, DataError
from ..io import DirLock, atomic_write_json, file_sha256, fsync_dir, pid_alive, read_json, remove_stale_temps
from ..text import utc_iso
from .gate import GateResult, compare

if TYPE_CHECKING:
    from .watch import ModelHandle

log = logging.getLogger(__name__)

VERSION_FILE = "version.json"
GATE_FILE = "gate.json"
ALIASES_FILE = "aliases.json"
HISTORY_FILE = "history.jsonl"
COUNTER_FILE = "counter.json"
ARTIFACT_DIR = "artifact"
VERSION_FORMAT = "verticore-registry-version/1"
ALIASES_FORMAT = "verticore-registry-aliases/1"
DEFAULT_ALIASES = ("production", "candidate")
#: how many earlier versions an alias remembers for rollback
ROLLBACK_DEPTH = 50

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_VERSION_DIR_RE = re.compile(r"^\d{4,}$")
_SCRATCH_RE = re.compile(r"^\.(\d+)\.(\d+)\.[A-Za-z0-9_]+\.(staging|deleting)$")
_REF_RE = re.compile(r"^[vV]?(\d+)$")


def default_root() -> Path:
    """``$VERTICORE_HOME/registry`` (see :func:`verticore.dashboard.home`)."""
    from ..dashboard import home

    return home() / "registry"


def _now() -> str:
    return utc_iso()


def current_user() -> str:
    """Who is acting (login name; ``unknown`` where the OS cannot tell)."""
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value) or value in {".", ".."}:
        raise DataError(f"invalid {what} name {value!r}: use letters, digits, '_', '-', '.' (at most 64)")
    return value


def _dirname(n: int) -> str:
    return f"{n:04d}"


@dataclass
class ModelVersion:
    """One immutable registered model version (what ``version.json`` holds)."""

    app: str
    model: str
    version: int
    data_fingerprint: str
    eval_split: str
    recipe: dict[str, Any]
    metrics: dict[str, Any]
    created_at: str
    created_by: str
    parent: int | None = None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # relpath -> {"size", "sha256"}
    artifact: str = ARTIFACT_DIR
    format: str = VERSION_FORMAT
    path: Path | None = field(default=None, compare=False, repr=False)  # the version folder; not stored

    @property
    def name(self) -> str:
        return f"{self.app}/{self.model} v{self.version}"

    @property
    def artifact_path(self) -> Path:
        if self.path is None:
            raise ArtifactError(f"{self.name} is not attached to a registry folder")
        return self.path / self.artifact

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "app": self.app, "model": self.model, "version": self.version,
                "parent": self.parent, "data_fingerprint": self.data_fingerprint, "eval_split": self.eval_split,
                "recipe": self.recipe, "metrics": self.metrics, "created_at": self.created_at,
                "created_by": self.created_by, "artifact": self.artifact, "files": self.files}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: Path | None = None) -> "ModelVersion":
        """Parse ``version.json``; anything malformed raises :class:`ArtifactError`."""
        if not isinstance(data, Mapping) or data.get("format") != VERSION_FORMAT:
            raise ArtifactError(f"not a {VERSION_FORMAT} record")
        try:
            v = cls(app=str(data["app"]), model=str(data["model"]), version=int(data["version"]),
                    data_fingerprint=str(data["data_fingerprint"]), eval_split=str(data["eval_split"]),
                    recipe=dict(data["recipe"]), metrics=dict(data["metrics"]), created_at=str(data["created_at"]),
                    created_by=str(data["created_by"]),
                    parent=None if data.get("parent") is None else int(data["parent"]),
                    files=dict(data["files"]), artifact=str(data.get("artifact", ARTIFACT_DIR)), path=path)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"version record is incomplete ({type(exc).__name__}: {exc})") from None
        if not v.files or any(not isinstance(m, Mapping) or "size" not in m or "sha256" not in m
                              for m in v.files.values()):
            raise ArtifactError("version record has no valid file manifest")
        return v


@dataclass(frozen=True)
class Incomplete:
    """A version folder that is not a usable version (killed registration, damage, a stray copy)."""

    name: str
    reason: str


@contextlib.contextmanager
def _writable(root: Path, what: str) -> Iterator[None]:
    """Turn a refused write (read-only disk, permissions, full disk) into one clear line."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT):
            where = exc.filename or root
            raise ArtifactError(f"cannot {what}: the model registry {root} is not writable "
                                f"({exc.strerror or exc}: {where}); nothing was changed") from None
        raise


def _copy_artifact(src: Path, dest: Path, link: bool) -> None:
    """Copy (or hard-link) ``src`` (a folder or one file) to ``dest`` (a new folder)."""
    def copy(s: str, d: str) -> None:
        if link:
            try:
                os.link(s, d)
                return
            except OSError:  # other filesystem, or links refused: copy instead
                pass
        shutil.copy2(s, d)

    if src.is_dir():
        shutil.copytree(src, dest, copy_function=copy, symlinks=False)
    else:
        dest.mkdir()
        copy(str(src), str(dest / src.name))


def _manifest(artifact: Path) -> dict[str, dict[str, Any]]:
    files: dict[str, dict[str, Any]] = {}
    for dirpath, _dirs, names in os.walk(artifact):
        for n in sorted(names):
            p = Path(dirpath) / n
            files[p.relative_to(artifact).as_posix()] = {"size": p.stat().st_size, "sha256": file_sha256(p)}
    return dict(sorted(files.items()))


def _append_line(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line and fsync it (a kill mid-append leaves at most a torn last line,
    which readers skip)."""
    line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
    torn = False
    try:
        with open(path, "rb") as fh:  # a torn last line from a killed append gets ended first
            if fh.seek(0, os.SEEK_END) > 0:
                fh.seek(-1, os.SEEK_END)
                torn = fh.read(1) != b"\n"
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (("\n" if torn else "") + line).encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class ModelRegistry:
    """Versioned, immutable model versions per app and model, with aliases and a promotion log."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    # -- paths and small readers -------------------------------------------------------------
    def model_dir(self, app: str, model: str) -> Path:
        return self.root / _check_name(app, "app") / _check_name(model, "model")

    def _versions_dir(self, app: str, model: str) -> Path:
        return self.model_dir(app, model) / "versions"

    @contextlib.contextmanager
    def _locked(self, app: str, model: str, what: str) -> Iterator[DirLock]:
        d = self.model_dir(app, model)
        with _writable(self.root, what):
            (d / "versions").mkdir(parents=True, exist_ok=True)
        lock = DirLock(d)
        lock.acquire()
        try:
            with _writable(self.root, what):
                # temp files of aliases.json / counter.json writers killed mid-write (all dead while we hold the lock)
                remove_stale_temps(d, all_dead=lock.held)
                yield lock
        finally:
            lock.release()

    def models(self) -> list[tuple[str, str]]:
        """Every (app, model) pair with a versions folder."""
        out = []
        if self.root.is_dir():
            for a in sorted(self.root.iterdir()):
                if a.is_dir() and _NAME_RE.match(a.name):
                    out += [(a.name, m.name) for m in sorted(a.iterdir())
                            if m.is_dir() and _NAME_RE.match(m.name) and (m / "versions").is_dir()]
        return out

    def _scan(self, app: str, model: str) -> tuple[list[ModelVersion], list[Incomplete]]:
        vdir = self._versions_dir(app, model)
        good: list[ModelVersion] = []
        bad: list[Incomplete] = []
        if not vdir.is_dir():
            return good, bad
        for d in sorted(vdir.iterdir()):
            if not d.is_dir() or not _VERSION_DIR_RE.match(d.name):
                continue
            try:
                v = self._read_version(app, model, d)
            except ArtifactError as exc:
                bad.append(Incomplete(d.name, str(exc)))
                continue
            good.append(v)
        good.sort(key=lambda v: v.version)
        return good, bad

    @staticmethod
    def _read_version(app: str, model: str, d: Path) -> ModelVersion:
        f = d / VERSION_FILE
        if not f.exists():
            raise ArtifactError(f"{VERSION_FILE} missing (an interrupted registration or a partial copy)")
        try:
            data = read_json(f, "version record")
        except DataError as exc:
            raise ArtifactError(str(exc)) from None
        v = ModelVersion.from_dict(data, path=d)
        if (v.app, v.model, v.version) != (app, model, int(d.name)):
            raise ArtifactError(f"the folder holds {v.app}/{v.model} v{v.version}, not {app}/{model} v{int(d.name)}")
        return v

    def versions(self, app: str, model: str) -> list[ModelVersion]:
        """Complete versions, oldest first (incomplete folders are skipped; see :meth:`incomplete`)."""
        good, bad = self._scan(app, model)
        for b in bad:
            log.warning("ignoring incomplete version %s/%s/%s: %s", app, model, b.name, b.reason)
        return good

    def incomplete(self, app: str, model: str) -> list[Incomplete]:
        """Version folders without a valid ``version.json`` (ignored everywhere; ``prune`` removes them)."""
        return self._scan(app, model)[1]

    def _read_aliases(self, app: str, model: str) -> dict[str, dict[str, Any]]:
        f = self.model_dir(app, model) / ALIASES_FILE
        if not f.exists():
            return {}
        try:
            data = read_json(f, "alias file")
            aliases = data["aliases"]
            return {str(k): {"version": int(v["version"]), "previous": [int(x) for x in v.get("previous", [])],
                             **{kk: vv for kk, vv in v.items() if kk not in ("version", "previous")}}
                    for k, v in aliases.items()}
        except (DataError, KeyError, TypeError, ValueError, AttributeError) as exc:
            # aliases.json is replaced atomically, so this is outside damage: rebuild from the log
            log.warning("%s is unreadable (%s); rebuilding the aliases from %s", f, exc, HISTORY_FILE)
            return self._aliases_from_history(app, model)

    def _aliases_from_history(self, app: str, model: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for h in self.history(app, model):
            a, to = h.get("alias"), h.get("to")
            if not isinstance(a, str) or not isinstance(to, int):
                continue
            cur = out.get(a)
            prev = list(cur["previous"]) if cur else []
            if h.get("action") == "rollback":
                while prev and prev[-1] != to:
                    prev.pop()
                if prev:
                    prev.pop()
            elif cur:
                prev.append(cur["version"])
            out[a] = {"version": to, "previous": prev[-ROLLBACK_DEPTH:], "updated_at": h.get("ts"), "by": h.get("by")}
        return out

    def aliases(self, app: str, model: str) -> dict[str, int]:
        """Alias name -> version number."""
        return {k: v["version"] for k, v in self._read_aliases(app, model).items()}

    def history(self, app: str, model: str) -> list[dict[str, Any]]:
        """The promotion log, oldest first (a torn last line from a killed append is skipped)."""
        f = self.model_dir(app, model) / HISTORY_FILE
        out = []
        if f.exists():
            for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict):
                    out.append(rec)
        return out

    def get(self, app: str, model: str, ref: int | str | ModelVersion) -> ModelVersion:
        """A complete version by number (``3``, ``"v3"``, ``"0003"``), alias (``"production"``) or
        :class:`ModelVersion` (which must belong to this app and model)."""
        key = f"{_check_name(app, 'app')}/{_check_name(model, 'model')}"
        if isinstance(ref, ModelVersion):
            if (ref.app, ref.model) != (app, model):
                raise DataError(f"{ref.name} is a version of {ref.app}/{ref.model}, not of {key}")
            ref = ref.version
        n: int | None
        if isinstance(ref, bool):
            raise DataError(f"invalid version {ref!r}")
        if isinstance(ref, int):
            n = ref
        else:
            m = _REF_RE.match(str(ref).strip())
            if m:
                n = int(m.group(1))
            else:
                alias = _check_name(str(ref), "alias")
                aliases = self.aliases(app, model)
                if alias not in aliases:
                    known = ", ".join(f"{a} -> v{v}" for a, v in sorted(aliases.items())) or "none yet"
                    raise DataError(f"{key} has no alias {alias!r} (aliases: {known})")
                n = aliases[alias]
        d = self._versions_dir(app, model) / _dirname(n)
        if not d.is_dir():
            have = ", ".join(str(v.version) for v in self.versions(app, model)) or "none"
            raise DataError(f"{key} has no version {n} (versions: {have})")
        try:
            return self._read_version(app, model, d)
        except ArtifactError as exc:
            raise ArtifactError(f"{key} v{n} is incomplete or corrupt: {exc}") from None

    def verify(self, version: ModelVersion, *, full: bool = True) -> None:
        """Check every artifact file is present with its recorded size (and SHA-256 when ``full``)."""
        base = version.artifact_path
        for rel, meta in version.files.items():
            p = base / rel
            try:
                size = p.stat().st_size
            except OSError:
                raise ArtifactError(f"{version.name} is corrupt: {version.artifact}/{rel} is missing") from None
            if size != meta["size"]:
                raise ArtifactError(f"{version.name} is corrupt: {version.artifact}/{rel} has {size} bytes, "
                                    f"{meta['size']} recorded")
            if full and file_sha256(p) != meta["sha256"]:
                raise ArtifactError(f"{version.name} is corrupt: {version.artifact}/{rel} does not match its SHA-256")

    # -- writing -------------------------------------------------------------------------------
    def _clean_scratch(self, vdir: Path, lock: DirLock) -> int:
        """Remove staging/deleting folders of dead writers (all of them when we hold the lock)."""
        removed = 0
        for d in vdir.iterdir():
            m = _SCRATCH_RE.match(d.name)
            if not m or not d.is_dir():
                continue
            pid = int(m.group(2))
            if lock.held or (pid != os.getpid() and not pid_alive(pid)):
                _rmtree(d)
                removed += 1
        return removed

    def _last_number(self, app: str, model: str) -> int:
        vdir = self._versions_dir(app, model)
        nums = [int(d.name) for d in vdir.iterdir() if _VERSION_DIR_RE.match(d.name)] if vdir.is_dir() else []
        counter = 0
        f = self.model_dir(app, model) / COUNTER_FILE
        if f.exists():
            try:
                counter = int(read_json(f, "version counter").get("last_version", 0))
            except (DataError, AttributeError, TypeError, ValueError):
                counter = 0  # the folders below still tell the highest number in use
        return max([counter, *nums])

    def register(self, app: str, model: str, artifact_dir: str | os.PathLike, *, data_fingerprint: str,
                 recipe: Mapping[str, Any], metrics: Mapping[str, Any], eval_split: str,
                 parent: int | str | ModelVersion | None = None, created_by: str | None = None,
                 version: int | None = None, link: bool = False) -> ModelVersion:
        """Copy ``artifact_dir`` into the registry as a new immutable version and return it.

        ``metrics`` are the model's scores on its fixed evaluation split named by ``eval_split``
        (a name or fingerprint; the gate only compares versions scored on the same one).
        ``version`` asks for a specific number (refused if it was ever used); ``link`` hard-links
        the files instead of copying (only safe when the source is never rewritten in place).
        """
        src = Path(artifact_dir)
        if not src.exists():
            raise ArtifactError(f"artifact not found: {src}")
        if src.is_dir() and not any(p.is_file() for p in src.rglob("*")):
            raise ArtifactError(f"artifact folder {src} has no files")
        for val, what in ((data_fingerprint, "data_fingerprint"), (eval_split, "eval_split")):
            if not isinstance(val, str) or not val.strip():
                raise DataError(f"{what} must be a non-empty string")
        try:
            recipe_j, metrics_j = json.loads(json.dumps(dict(recipe))), json.loads(json.dumps(dict(metrics)))
        except (TypeError, ValueError) as exc:
            raise DataError(f"recipe and metrics must be JSON-serialisable: {exc}") from None
        if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
            raise DataError(f"version must be a positive integer, got {version!r}")
        parent_n = self.get(app, model, parent).version if parent is not None else None
        by = created_by or current_user()
        with self._locked(app, model, "register a version") as lock:
            vdir = self._versions_dir(app, model)
            self._clean_scratch(vdir, lock)
            last = self._last_number(app, model)
            if version is None:
                n = last + 1
            elif (vdir / _dirname(version)).exists() or version <= last:
                raise DataError(f"{app}/{model} v{version} already exists or was used before; versions are "
                                f"immutable (next free number: {last + 1})")
            else:
                n = version
            staging = Path(tempfile.mkdtemp(prefix=f".{_dirname(n)}.{os.getpid()}.", suffix=".staging", dir=vdir))
            try:
                _copy_artifact(src, staging / ARTIFACT_DIR, link)
                files = _manifest(staging / ARTIFACT_DIR)
                for rel in files:  # immutable: read-only files (the folder stays removable by prune)
                    p = staging / ARTIFACT_DIR / rel
                    st = p.stat()
                    if st.st_nlink == 1:  # a hard link shares its mode with the caller's file: leave it
                        p.chmod(st.st_mode & 0o555)
                mv = ModelVersion(app=app, model=model, version=n, data_fingerprint=data_fingerprint,
                                  eval_split=eval_split, recipe=recipe_j, metrics=metrics_j, created_at=_now(),
                                  created_by=by, parent=parent_n, files=files)
                # version.json last: the folder only becomes a version once everything else is there
                atomic_write_json(staging / VERSION_FILE, mv.to_dict())
                from ..artifact import fsync_tree

                fsync_tree(staging)
                os.rename(staging, vdir / _dirname(n))
            except BaseException:
                _rmtree(staging)
                raise
            fsync_dir(vdir)
            atomic_write_json(self.model_dir(app, model) / COUNTER_FILE, {"last_version": max(n, last)})
        mv.path = vdir / _dirname(n)
        from .tracking import log_version

        log_version(self, mv)
        return mv

    def _reconcile(self, app: str, model: str, aliases: dict[str, dict[str, Any]]) -> None:
        """Log alias switches whose history line was lost to a kill between the two writes."""
        last: dict[str, Any] = {}
        for h in self.history(app, model):
            if isinstance(h.get("alias"), str):
                last[h["alias"]] = h.get("to")
        for alias, entry in aliases.items():
            if last.get(alias) != entry["version"]:
                _append_line(self.model_dir(app, model) / HISTORY_FILE,
                             {"ts": _now(), "action": "recovered", "alias": alias, "from": last.get(alias),
                              "to": entry["version"], "by": entry.get("by"),
                              "reason": "alias switched but its log line was lost (interrupted promotion)"})

    def _switch(self, app: str, model: str, alias: str, aliases: dict[str, dict[str, Any]],
                entry: dict[str, Any], record: dict[str, Any]) -> None:
        new = {**aliases, alias: entry}
        atomic_write_json(self.model_dir(app, model) / ALIASES_FILE, {"format": ALIASES_FORMAT, "aliases": new})
        _append_line(self.model_dir(app, model) / HISTORY_FILE, record)

    def promote(self, app: str, model: str, version: int | str | ModelVersion, alias: str = "production", *,
                by: str | None = None, reason: str = "", force: bool = False, require_gate: bool = False,
                check: Callable[[Path], Any] | None = None) -> ModelVersion:
        """Point ``alias`` at ``version`` atomically (readers see the old or the new version, never
        neither). The version is verified (every file's SHA-256) and, with ``check``, loaded once
        first. A failed gate against the current production version refuses the promotion unless
        ``force``; ``require_gate`` also refuses a version with no passing gate."""
        alias = _check_name(alias, "alias")
        by = by or current_user()
        self.get(app, model, version)  # unknown, foreign or incomplete -> one-line error before locking
        with self._locked(app, model, f"promote {app}/{model}"):
            target = self.get(app, model, version)  # again under the lock: prune may have run meanwhile
            self.verify(target, full=True)
            if check is not None:
                try:
                    check(target.artifact_path)
                except Exception as exc:
                    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise ArtifactError(f"{target.name} does not load: {msg}") from None
            aliases = self._read_aliases(app, model)
            self._reconcile(app, model, aliases)
            cur = aliases.get(alias)
            if cur and cur["version"] == target.version:
                return target
            if alias == "production" and not force:
                self._check_gate(target, aliases.get("production"), require_gate)
            prev = ([*cur["previous"], cur["version"]] if cur else [])[-ROLLBACK_DEPTH:]
            entry = {"version": target.version, "previous": prev, "updated_at": _now(), "by": by}
            rec = {"ts": entry["updated_at"], "action": "promote", "alias": alias,
                   "from": cur["version"] if cur else None, "to": target.version, "by": by, "reason": reason}
            self._switch(app, model, alias, aliases, entry, rec)
        return target

    def _check_gate(self, target: ModelVersion, production: dict[str, Any] | None, require: bool) -> None:
        gate = self.read_gate(target)
        if production is None:
            return  # the first production version has nothing to be compared with
        against = gate.get("against", {}).get("version") if gate else None
        if gate and against == production["version"] and not gate["result"]["passed"]:
            raise DataError(f"{target.name} not promoted: {gate['result']['reason']}")
        if require and (not gate or against != production["version"]):
            raise DataError(f"{target.name} not promoted: no gate result against production "
                            f"v{production['version']}; run the gate first")

    def rollback(self, app: str, model: str, alias: str = "production", *, by: str | None = None,
                 reason: str = "") -> ModelVersion:
        """Point ``alias`` back at the version it pointed at before; earlier versions that were
        pruned or fail verification are skipped (and said so in the log reason)."""
        alias = _check_name(alias, "alias")
        by = by or current_user()
        if alias not in self.aliases(app, model):  # before locking: a refused rollback creates no folders
            raise DataError(f"{app}/{model} has no alias {alias!r} to roll back")
        with self._locked(app, model, f"roll back {app}/{model} {alias}"):
            aliases = self._read_aliases(app, model)
            self._reconcile(app, model, aliases)
            cur = aliases.get(alias)
            if not cur:
                raise DataError(f"{app}/{model} has no alias {alias!r} to roll back")
            prev = list(cur["previous"])
            skipped: list[str] = []
            while prev:
                n = prev.pop()
                try:
                    target = self.get(app, model, n)
                    self.verify(target, full=True)
                except (DataError, ArtifactError) as exc:
                    skipped.append(f"v{n} ({exc})")
                    continue
                entry = {"version": target.version, "previous": prev, "updated_at": _now(), "by": by}
                note = f"; skipped {', '.join(skipped)}" if skipped else ""
                rec = {"ts": entry["updated_at"], "action": "rollback", "alias": alias, "from": cur["version"],
                       "to": target.version, "by": by, "reason": (reason + note).lstrip("; ")}
                self._switch(app, model, alias, aliases, entry, rec)
                return target
            extra = f" (unusable: {', '.join(skipped)})" if skipped else ""
            raise DataError(f"{app}/{model} {alias} (v{cur['version']}) has no earlier version to roll back to{extra}")

    def prune(self, app: str, model: str, keep: int) -> list[str]:
        """Delete all but the ``keep`` newest versions, never one an alias points at nor an alias's
        rollback target; also removes incomplete folders. Returns the removed folder names."""
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise DataError(f"--keep must be a whole number >= 0, got {keep!r}")
        removed: list[str] = []
        if not self._versions_dir(app, model).is_dir():
            return removed  # nothing registered: nothing to remove (and no folders created)
        with self._locked(app, model, f"prune {app}/{model}") as lock:
            vdir = self._versions_dir(app, model)
            self._clean_scratch(vdir, lock)
            good, bad = self._scan(app, model)
            protected = set()
            for entry in self._read_aliases(app, model).values():
                protected.add(entry["version"])
                if entry["previous"]:
                    protected.add(entry["previous"][-1])
            newest = {v.version for v in good[len(good) - keep:]} if keep else set()
            doomed = [_dirname(v.version) for v in good if v.version not in protected | newest]
            doomed += [b.name for b in bad]
            for name in doomed:
                # rename first: a kill mid-delete leaves a scratch folder, never a half version
                scratch = vdir / f".{name}.{os.getpid()}.x.deleting"
                os.rename(vdir / name, scratch)
                fsync_dir(vdir)
                _rmtree(scratch)
                removed.append(name)
        return removed

    # -- comparison, gate ------------------------------------------------------------------------
    def diff(self, app: str, model: str, a: int | str, b: int | str) -> dict[str, Any]:
        """Two versions side by side: numeric metrics (with b - a), recipe keys that differ, and
        data/evaluation-split identity."""
        va, vb = self.get(app, model, a), self.get(app, model, b)
        ma, mb = _flatten(va.metrics), _flatten(vb.metrics)
        metrics = {}
        for k in sorted(set(ma) | set(mb)):
            x, y = ma.get(k), mb.get(k)
            if (x is not None and not _is_number(x)) or (y is not None and not _is_number(y)):
                continue
            metrics[k] = {"a": x, "b": y, "delta": (y - x) if x is not None and y is not None else None}
        ra, rb = _flatten(va.recipe), _flatten(vb.recipe)
        recipe = {k: {"a": ra.get(k), "b": rb.get(k)} for k in sorted(set(ra) | set(rb)) if ra.get(k) != rb.get(k)}
        return {"app": app, "model": model, "a": va.version, "b": vb.version, "metrics": metrics, "recipe": recipe,
                "same_eval_split": va.eval_split == vb.eval_split, "eval_split": {"a": va.eval_split, "b": vb.eval_split},
                "same_data": va.data_fingerprint == vb.data_fingerprint,
                "data_fingerprint": {"a": va.data_fingerprint, "b": vb.data_fingerprint},
                "parent": {"a": va.parent, "b": vb.parent}}

    @staticmethod
    def read_gate(version: ModelVersion) -> dict[str, Any] | None:
        """The stored gate comparison of ``version`` (``None`` when it was never gated)."""
        f = version.artifact_path.parent / GATE_FILE
        if not f.exists():
            return None
        try:
            data = read_json(f, "gate result")
            GateResult.from_dict(data["result"])
            return data
        except (DataError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{version.name}: {GATE_FILE} is corrupt ({exc}); run the gate again") from None

    def gate(self, app: str, model: str, candidate: int | str | ModelVersion, *, y_true: Any, candidate_pred: Any,
             production_pred: Any, against: str = "production", **options: Any) -> GateResult:
        """Compare ``candidate`` with the version ``against`` points at (both scored on the same fixed
        split, see :func:`verticore.registry.gate.compare` for ``options``) and store the result on
        the candidate as ``gate.json``. Changes no alias."""
        self._gate_pair(app, model, candidate, against)  # refuse before the (costly) comparison
        return self.record_gate(app, model, candidate, compare(y_true, candidate_pred, production_pred, **options),
                                against=against)

    def _gate_pair(self, app: str, model: str, candidate: int | str | ModelVersion,
                   against: str) -> tuple[ModelVersion, ModelVersion]:
        cand = self.get(app, model, candidate)
        aliases = self.aliases(app, model)
        if against not in aliases:
            raise DataError(f"{app}/{model} has no {against} version to compare with; promote the first one directly")
        prod = self.get(app, model, aliases[against])
        if cand.eval_split != prod.eval_split:
            raise DataError(f"{cand.name} was scored on evaluation split {cand.eval_split!r} but {prod.name} on "
                            f"{prod.eval_split!r}; the gate compares both on one fixed split")
        return cand, prod

    def record_gate(self, app: str, model: str, candidate: int | str | ModelVersion, result: GateResult, *,
                    against: str = "production") -> GateResult:
        """Store a comparison computed elsewhere (e.g. :func:`verticore.registry.gate.compare_scores` for
        a ranker) on ``candidate`` as ``gate.json``, after the same checks as :meth:`gate`."""
        cand, prod = self._gate_pair(app, model, candidate, against)
        with _writable(self.root, f"store the gate result of {cand.name}"):
            atomic_write_json(cand.artifact_path.parent / GATE_FILE,
                              {"against": {"alias": against, "version": prod.version}, "eval_split": cand.eval_split,
                               "created_at": _now(), "result": result.to_dict()})
        from .tracking import log_gate

        log_gate(self, cand, result)
        return result

    def watch(self, app: str, model: str, loader: Callable[[Path], Any], alias: str = "production",
              interval: float = 2.0) -> "ModelHandle":
        """A handle whose ``.get()`` returns ``loader(<artifact folder>)`` of the version ``alias``
        points at, reloading (at most one stat per ``interval`` seconds) when the alias moves."""
        from .watch import ModelHandle

        return ModelHandle(self, app, model, loader, alias=alias, interval=interval)


def _rmtree(path: Path) -> None:
    """Remove a folder whose files are read-only (we own them; only the folder needs write access)."""
    def retry(func: Callable[..., Any], p: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(p), 0o755)
            func(p)
        except OSError:
            pass

    import sys

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:  # pragma: no cover - older Pythons
        shutil.rmtree(path, onerror=retry)
