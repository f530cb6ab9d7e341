"""A run is a folder: ``header.json`` + ``samples.jsonl`` + ``summary.json``.

Generic over what a record holds (evaluation samples, generated SFT traces): every record is a JSON
object with ``problem_id`` and ``sample_index``; the pair is its key. Records are appended one line
at a time, flushed and fsynced, so a killed process loses at most the samples in flight.

Reopening a run resumes it:

* a torn last line (no trailing newline) is cut back to the last newline, with a warning;
* records are keyed, the latest line for a key wins, so nothing is counted twice;
* :meth:`RunDir.pending` skips finished keys; with ``retry_failed`` it also re-runs keys whose latest
  record has ``status == "failed"``;
* a corrupt line anywhere else (not JSON, not UTF-8, not a record) is moved aside, byte for byte, to
  ``samples.bad.jsonl``, with a warning naming the lines; its sample is pending again, so the resumed
  run re-runs it (:attr:`RunDir.moved_aside`). :meth:`RunDir.read` (reports) leaves the file alone
  and lists such lines in :attr:`RunDir.bad_lines`;
* the header's ``identity`` (config + data) must match the stored one, otherwise
  :class:`RunMismatch` is raised, unless ``force`` is given: then the old files are moved aside
  (``*.old-<time>``) and the run starts afresh. Paths in the identity (:data:`PATH_FIELDS`) match when
  they name the same file: the same resolved path (the header records the working directory), or, for
  the data set, the same sha256 content hash. So a run resumes from another working directory, or with
  its file given by another path.

Writes that fail (a full disk, a read-only file system) raise :class:`RunWriteError` (``DiskFull`` for
ENOSPC / EDQUOT) saying what is saved and that re-running resumes; a sample line half written is cut
off again, and no ``*.tmp`` file is left behind.

One process writes a run at a time: :meth:`RunDir.open` takes an exclusive ``flock`` on the folder's
``run.lock`` (holding the writer's pid, start time and command) before it touches anything, and keeps it
until :meth:`RunDir.close` or the process ends (the kernel drops the lock of a killed process, so no
stale lock survives a crash). A second writer gets :class:`RunBusy`, naming the holder: otherwise both
would run the same samples, and a repair (torn line cut, corrupt lines moved aside, ``--force``) would
rewrite ``samples.jsonl`` under the other's open file, whose later records would land in the replaced
file and be lost. :func:`run_holder` tells whether a folder is held without taking it; readers
(:meth:`RunDir.read`, reports) need no lock.

Each record stores the problem statement once: ``question`` at the top level. :meth:`RunDir.append`
leaves it out of the embedded ``trace`` when it equals ``question``, and loading puts it back (the
same string object), so readers see full records. Records written before (question twice) still load.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shlex
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
HEADER = "header.json"
SAMPLES = "samples.jsonl"
SUMMARY = "summary.json"
BAD = "samples.bad.jsonl"
LOCK = "run.lock"
"""Corrupt lines moved out of ``samples.jsonl`` on resume (raw bytes, appended)."""

PATH_FIELDS = ("config.dataset", "config.extra.script", "dataset.path")
"""Identity fields that hold file paths: compared as files, not as strings (see the module docstring)."""
DATASET_HASH = "dataset.sha256"

Key = tuple[str, int]


class RunError(RuntimeError):
    """A run folder cannot be used as asked; the message says why and what to do."""


class RunMismatch(RunError):
    """The folder holds a run with a different configuration."""


class RunBusy(RunError):
    """Another process holds the run folder open for writing (:data:`LOCK`)."""


class RunWriteError(RunError):
    """Writing to the run folder failed (a read-only or full disk); what was saved is kept."""

    def __init__(self, message: str, *, path: Path, saved: int, os_error: OSError) -> None:
        super().__init__(message)
        self.path = path
        self.saved = saved
        """Records durably saved in ``samples.jsonl`` when the write failed."""
        self.os_error = os_error


class DiskFull(RunWriteError):
    """No space (or quota) left on the run folder's disk."""


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def default_runs_dir() -> Path:
    return Path(os.environ.get("MATHAGENT_RUNS_DIR", Path.home() / ".cache" / "mathagent" / "runs"))


def default_run_dir(prefix: str, config: dict[str, Any]) -> Path:
    """``$MATHAGENT_RUNS_DIR/<prefix>-<digest>``, the digest from :func:`config_digest`; a folder named
    by the digest older versions used (paths as typed) is kept when it exists, so it still resumes."""
    new = default_runs_dir() / f"{prefix}-{config_digest(config)}"
    legacy = default_runs_dir() / f"{prefix}-{legacy_config_digest(config)}"
    return legacy if legacy != new and (legacy / HEADER).exists() else new


def git_revision(cwd: Path | None = None) -> str | None:
    """The checkout's commit (``+dirty`` when it has changes), or None outside a git tree."""
    cwd = cwd or Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("+dirty" if dirty else "")) or None


def package_versions(
    names: Iterable[str] = ("mathagent", "openai", "jupyter_client", "ipykernel", "sympy"),
) -> dict:
    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def key_of(record: dict[str, Any]) -> Key:
    return (str(record["problem_id"]), int(record.get("sample_index", 0)))


def _tmp_of(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".tmp")


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` through ``path.tmp`` + fsync + rename; on failure the tmp file is removed."""
    tmp = _tmp_of(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def _write_json_atomic(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: JSON escapes read back the same
        raw = (json.dumps(data, indent=2, ensure_ascii=True, default=str) + "\n").encode("ascii")
    _write_bytes_atomic(path, raw)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)  # type: ignore[assignment]
    return d


def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        d = d[part]
    d[last] = value


def _names_same_file(old: str, new: str, old_cwd: str | None) -> bool:
    """Does ``old`` (a path as recorded, relative to ``old_cwd``) name the file ``new`` names now?"""
    new_p = Path(new)
    if not new_p.exists():
        return False
    old_p = Path(old)
    if not old_p.is_absolute():
        if old_cwd is None:
            return False
        old_p = Path(old_cwd) / old_p
    try:
        return old_p.exists() and os.path.samefile(old_p, new_p)
    except OSError:
        return False


def identities_match(old: dict[str, Any], new: dict[str, Any], old_cwd: str | None = None) -> bool:
    """``old == new``, except that :data:`PATH_FIELDS` match when both name the same file.

    Same file: the same resolved path (``old`` relative to ``old_cwd``, the working directory its
    header recorded); for the data set fields also the same content (equal ``dataset.sha256``). A
    header written before the working directory was recorded has relative paths with no base: a script
    path then matches by file name (its content never was part of the identity).
    """
    return _normalized(old, new, old_cwd) == new


def _normalized(old: dict[str, Any], new: dict[str, Any], old_cwd: str | None) -> dict[str, Any]:
    """``old`` with each path field that names the same file as ``new``'s replaced by ``new``'s value."""
    if old == new:
        return old
    out = json.loads(json.dumps(old))
    same_content = _get(old, DATASET_HASH) is not None and _get(old, DATASET_HASH) == _get(new, DATASET_HASH)
    for field in PATH_FIELDS:
        a, b = _get(out, field), _get(new, field)
        if a == b or not isinstance(a, str) or not isinstance(b, str):
            continue
        if field == "config.extra.script":
            same = _names_same_file(a, b, old_cwd) or (
                old_cwd is None and not Path(a).is_absolute() and Path(a).name == Path(b).name
            )
        else:  # the data file: the same file, or the same bytes (other fields still name the set)
            same = _names_same_file(a, b, old_cwd) or (same_content and Path(b).is_file())
        if same:
            _set(out, field, b)
    return out


def config_digest(config: dict[str, Any]) -> str:
    """8 hex digits naming a run's default folder: the config with file paths resolved (so the same run
    started from another working directory lands in the same folder)."""
    c = json.loads(json.dumps(config, default=str))
    for field in ("dataset", "extra.script"):
        v = _get(c, field)
        if isinstance(v, str) and v and Path(v).is_file():
            _set(c, field, str(Path(v).resolve()))
    return legacy_config_digest(c)


def legacy_config_digest(config: dict[str, Any]) -> str:
    """The digest older versions used (paths as typed)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]


class RunDir:
    """An open run folder. Use :meth:`open`; :meth:`append` is safe from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.header: dict[str, Any] = {}
        self.repaired_bytes = 0
        """Bytes cut off a torn last line when the run was opened."""
        self.moved_aside: list[tuple[int, str]] = []
        """(line number, reason) of corrupt lines moved to ``samples.bad.jsonl`` when the run was opened."""
        self.bad_lines: list[tuple[int, str]] = []
        """(line number, reason) of corrupt lines left in place by :meth:`read` (not loaded)."""
        self._lock = threading.Lock()
        self._records: dict[Key, dict[str, Any]] = {}
        self._release: Callable[[], None] | None = None  # drops this RunDir's hold on run.lock

    def close(self) -> None:
        """Release the folder for other writers (the last RunDir of this process on it drops the
        flock). Also happens when the RunDir is garbage-collected, and when the process ends."""
        if self._release is not None:
            self._release()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: Path | str,
        identity: dict[str, Any],
        extra: dict[str, Any] | None = None,
        *,
        force: bool = False,
    ) -> RunDir:
        """Create or resume the run at ``path``.

        ``identity`` is what must match for a resume (config, data set + sha); ``extra`` is recorded in
        the header but not compared (git revision, versions, times).
        """
        run = cls(Path(path))
        try:
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise run._write_error(e, f"cannot create the run folder {run.path}", before_run=True) from None
        key = str(run.path.resolve())
        with _gate(key):
            # the lock before anything is repaired or moved aside: another writer may run
            first = _take_lock(run.path, key)
            run._release = weakref.finalize(run, _drop_lock, key)
            try:
                run._open(identity, extra, force=force, first=first)
            except BaseException:
                run.close()
                raise
        return run

    def _open(
        self, identity: dict[str, Any], extra: dict[str, Any] | None, *, force: bool, first: bool = True
    ) -> None:
        """``first``: no other RunDir of this process holds the folder. Only then are temporary files
        and a torn last line the leftovers of a killed writer; while another RunDir of this process
        is open they may be its write in progress, and are left alone."""
        for name in (HEADER, SUMMARY, SAMPLES) if first else ():  # left between write and rename
            tmp = _tmp_of(self.path / name)
            if tmp.exists():
                tmp.unlink()
                log.warning("%s: removed a temporary file left by an interrupted write", tmp)
        hp = self.path / HEADER
        identity = json.loads(json.dumps(identity, default=str))
        if hp.exists():
            old = _read_header(hp)
            if not identities_match(old.get("identity", {}), identity, old.get("cwd")):
                if not force:
                    raise RunMismatch(
                        f"{self.path} holds a run with a different configuration "
                        f"({identity_diff(_normalized(old.get('identity', {}), identity, old.get('cwd')), identity)});"
                        " use another --run-dir, or --force to move the old files aside and start again"
                    )
                stamp = time.strftime("%Y%m%d-%H%M%S")
                for name in (HEADER, SAMPLES, SUMMARY, BAD):
                    if (self.path / name).exists():
                        os.replace(self.path / name, self.path / f"{name}.old-{stamp}")
                log.warning("%s: configuration changed; old files moved aside (*.old-%s)", self.path, stamp)
            else:
                self.header = old
        self._load(repair=first)
        if not self.header:
            self.header = {
                "schema_version": SCHEMA_VERSION,
                "identity": identity,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "cwd": _cwd(),
                **(extra or {}),
            }
        else:
            self.header.setdefault("resumed", []).append(time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        try:
            _write_json_atomic(hp, self.header)
        except OSError as e:
            raise self._write_error(e, f"cannot write {hp}", before_run=True) from None

    @classmethod
    def read(cls, path: Path | str) -> RunDir:
        """Open an existing run read-only (for reports): a torn last line is ignored, not cut, and
        corrupt lines are listed in :attr:`bad_lines`, not moved."""
        run = cls(Path(path))
        if not (run.path / HEADER).exists():
            raise FileNotFoundError(f"{run.path}: no {HEADER}; not a run folder")
        run.header = _read_header(run.path / HEADER)
        run._load(repair=False)
        return run

    def _load(self, repair: bool = True) -> None:
        sp = self.path / SAMPLES
        if not sp.exists():
            if repair:
                try:
                    sp.touch()
                except OSError as e:
                    raise self._write_error(e, f"cannot create {sp}", before_run=True) from None
            return
        data = sp.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            self.repaired_bytes = len(data) - cut
            log.warning("%s: torn last line (%d bytes) dropped", sp, self.repaired_bytes)
            if repair:
                with open(sp, "r+b") as f:
                    f.truncate(cut)
                    f.flush()
                    os.fsync(f.fileno())
            data = data[:cut]
        bad: list[tuple[int, bytes, str]] = []
        good: list[bytes] = []
        for lineno, raw in enumerate(data.split(b"\n")[:-1] if data else [], 1):
            if not raw.strip():
                good.append(raw)
                continue
            rec, reason = _parse_record(raw)
            if rec is None:
                bad.append((lineno, raw, reason))
                continue
            good.append(raw)
            self._records[key_of(rec)] = rec
        if not bad:
            return
        where = ", ".join(f"line {n}: {why}" for n, _, why in bad[:5]) + (" ..." if len(bad) > 5 else "")
        if not repair:
            self.bad_lines = [(n, why) for n, _, why in bad]
            argv = self.header.get("argv")
            kind = self.header.get("identity", {}).get("kind")
            prog = "mathagent generate" if kind == "mathagent-generate" else "mathagent eval"
            again = f" (`{prog} {' '.join(map(str, argv))}`)" if isinstance(argv, list) else ""
            log.warning(
                "%s: %d corrupt line(s) left out (%s); run the run's command again%s to move them aside "
                "to %s and re-run their samples",
                sp,
                len(bad),
                where,
                again,
                BAD,
            )
            return
        self._move_aside(sp, bad, good)
        self.moved_aside = [(n, why) for n, _, why in bad]
        log.warning(
            "%s: %d corrupt line(s) moved aside to %s (%s); their samples run again",
            sp,
            len(bad),
            self.path / BAD,
            where,
        )

    def _move_aside(self, sp: Path, bad: list[tuple[int, bytes, str]], good: list[bytes]) -> None:
        """Append the bad lines to ``samples.bad.jsonl`` (fsynced), then rewrite ``samples.jsonl``
        without them (tmp + rename): a crash in between leaves every byte in one file or both."""
        try:
            fd = os.open(self.path / BAD, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                _write_all(fd, b"".join(raw + b"\n" for _, raw, _ in bad))
                os.fsync(fd)
            finally:
                os.close(fd)
            _write_bytes_atomic(sp, b"".join(raw + b"\n" for raw in good))
        except OSError as e:
            raise self._write_error(
                e, f"cannot move {len(bad)} corrupt line(s) out of {sp} to {self.path / BAD}", before_run=True
            ) from None

    # -- records -------------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        """The latest record per key, in first-seen order."""
        with self._lock:
            return list(self._records.values())

    def records_of(self, keys: Iterable[Key]) -> list[dict[str, Any]]:
        """The latest record of each of ``keys`` that has one, in first-seen order (the folder may also
        hold samples this invocation did not select, e.g. of a larger ``--k`` or ``--limit``)."""
        want = set(keys)
        with self._lock:
            return [r for k, r in self._records.items() if k in want]

    @property
    def invocations(self) -> int:
        """How many times the run was started: the first time and each resume."""
        return 1 + len(self.header.get("resumed", []))

    def done(self, *, retry_failed: bool = False) -> set[Key]:
        with self._lock:
            return {k for k, r in self._records.items() if not (retry_failed and r.get("status") == "failed")}

    def pending(self, keys: Iterable[Key], *, retry_failed: bool = False) -> list[Key]:
        done = self.done(retry_failed=retry_failed)
        return [k for k in keys if k not in done]

    def append(self, record: dict[str, Any]) -> None:
        """Write one finished record durably (flush + fsync) before returning.

        On a failed write the file is cut back to where it was (no partial line) and
        :class:`RunWriteError` (:class:`DiskFull`) is raised; the record is not counted as done.
        """
        key = key_of(record)
        line = _encode_record(record)
        sp = self.path / SAMPLES
        with self._lock:
            try:
                fd = os.open(sp, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as e:
                raise self._write_error(e, f"cannot open {sp}") from None
            try:
                size = os.fstat(fd).st_size
                try:
                    _write_all(fd, line)
                    os.fsync(fd)
                except OSError as e:
                    try:  # no partial line: a later append would glue onto it
                        os.ftruncate(fd, size)
                        os.fsync(fd)
                    except OSError:
                        log.error("%s: could not cut a partial line back (offset %d)", sp, size)
                    raise self._write_error(e, f"cannot save sample {key[0]}#{key[1]} in {sp}") from None
            finally:
                os.close(fd)
            self._records[key] = record

    # -- summary -------------------------------------------------------------------------------
    def write_summary(self, summary: dict[str, Any]) -> Path:
        p = self.path / SUMMARY
        try:
            _write_json_atomic(p, summary)
        except OSError as e:
            raise self._write_error(e, f"cannot write {p}") from None
        return p

    def summary(self) -> dict[str, Any] | None:
        p = self.path / SUMMARY
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else None

    # -- errors --------------------------------------------------------------------------------
    def _write_error(self, e: OSError, what: str, *, before_run: bool = False) -> RunWriteError:
        saved = len(self._records)
        reason = "no space left on the device" if e.errno in NO_SPACE else (e.strerror or str(e))
        if before_run:
            state = (
                f"nothing was run; the {saved} sample(s) saved earlier in {self.path / SAMPLES} are intact"
            )
        else:
            state = (
                f"{saved} sample(s) are saved in {self.path / SAMPLES} (the one being written was cut back, "
                "no partial line is left)"
            )
        fix = "free some space" if e.errno in NO_SPACE else "fix the folder"
        msg = f"{what}: {reason}. {state}; {fix} and run the same command again to resume"
        cls = DiskFull if e.errno in NO_SPACE else RunWriteError
        return cls(msg, path=self.path, saved=saved, os_error=e)


_held_guard = threading.Lock()
_held: dict[str, list[Any]] = {}
"""run.lock files this process holds: resolved folder -> [open file, RunDirs holding it]. Several
RunDirs of one process on one folder share the flock (a resumed run reopened in-process, a report of
a run being written); only another process is refused."""
_gates: dict[str, threading.Lock] = {}
"""One gate per folder this process opens: its RunDirs open one at a time (the lock's retries, the
repairs, the header's rewrite), and a folder that is slow to open holds up no other folder."""


def _gate(key: str) -> threading.Lock:
    with _held_guard:
        return _gates.setdefault(key, threading.Lock())


def _take_lock(path: Path, key: str) -> bool:
    """Hold ``path/run.lock`` (resolved: ``key``) exclusively for this process, or raise
    :class:`RunBusy` naming the process that holds it; called with the folder's :func:`_gate` held.
    True when this process did not hold it already. A few tries over ~0.5 s ride over
    :func:`run_holder`'s momentary probe; they hold up only this folder's openers."""
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            return False
    lp = path / LOCK
    try:
        f = open(lp, "a+", encoding="utf-8")  # noqa: SIM115 (held while the run is open)
    except OSError as e:
        raise RunWriteError(
            f"cannot create {lp}: {e.strerror or e}", path=path, saved=0, os_error=e
        ) from None
    for attempt in range(6):
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt == 5:
                holder = _holder_text(f)
                f.close()
                raise busy_error(path, holder) from None
            time.sleep(0.1)
        except OSError as e:  # a file system without flock (some network mounts): no guard there
            log.warning("%s: cannot lock (%s); make sure no other process writes this run", lp, e)
            break
    try:
        f.seek(0)
        f.truncate()
        argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else []
        since = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        f.write(json.dumps({"pid": os.getpid(), "since": since, "argv": argv}) + "\n")
        f.flush()
    except OSError as e:  # who holds it is only for the message; the flock is what guards
        log.warning("%s: cannot record the holder (%s)", lp, e)
    with _held_guard:
        _held[key] = [f, 1]
    return True


def busy_error(path: Path, holder: str) -> RunBusy:
    """The error for a folder another process holds (``holder`` from :func:`run_holder`)."""
    return RunBusy(
        f"{path} is in use by another process ({holder}); two writers would run the same samples twice "
        "and one could lose records. Wait for it to finish (or stop it) and run the same command again "
        "to resume, or use another folder"
    )


def _drop_lock(key: str) -> None:
    with _held_guard:
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _held[key]
            entry[0].close()  # closing the file drops the flock


def _holder_text(f: Any) -> str:
    """``pid N since T: command`` from an open ``run.lock``, as far as it can be read."""
    try:
        f.seek(0)
        info = json.loads(f.read() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "its pid is not recorded"
    cmd = shlex.join(map(str, info.get("argv") or []))
    cmd = cmd if len(cmd) <= 160 else cmd[:157] + "..."
    return f"pid {info['pid']} since {info.get('since', '?')}" + (f": {cmd}" if cmd else "")


def run_holder(path: Path | str) -> str | None:
    """Who holds the run folder ``path`` for writing (``pid N since T: command``), or None when nobody
    does. Probes the lock without keeping it (a writer starting at that instant retries past it)."""
    lp = Path(path) / LOCK
    try:
        f = open(lp, encoding="utf-8")  # noqa: SIM115
    except OSError:
        return None
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder_text(f)
        except OSError:
            return None
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return None


def stop_message(prog: str, err: Exception, argv: Sequence[str]) -> str:
    """What a CLI prints when a run stops on ``err``: the error and the command that resumes it."""
    import shlex

    return f"{prog}: {err}\nto resume: {prog} {shlex.join(list(argv))}"


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:
        return None


def _read_header(hp: Path) -> dict[str, Any]:
    try:
        header = json.loads(hp.read_bytes().decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("not a JSON object")
    except (UnicodeDecodeError, ValueError) as e:
        raise RunError(
            f"{hp} is corrupt ({e}); the samples next to it are untouched. Rename it (e.g. to "
            f"{HEADER}.bad) and run the same command again: the run resumes from its samples"
        ) from None
    return header


def _parse_record(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """A ``samples.jsonl`` line as a record (its trace's question restored), or None and why not."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg} at column {e.colno})"
    if not isinstance(rec, dict):
        return None, f"a JSON {type(rec).__name__}, not a record"
    try:
        key_of(rec)
    except (KeyError, TypeError, ValueError):
        return None, "no problem_id / sample_index"
    trace = rec.get("trace")
    if isinstance(trace, dict) and "problem" not in trace and isinstance(rec.get("question"), str):
        trace["problem"] = rec["question"]  # stored once (see the module docstring); the same object
    return rec, ""


def _encode_record(record: dict[str, Any]) -> bytes:
    """One ``samples.jsonl`` line: the trace's copy of the question left out when it equals ``question``.

    Text that cannot be UTF-8 (a lone surrogate) is written as a JSON escape, which reads back the same.
    """
    trace = record.get("trace")
    if isinstance(trace, dict) and "problem" in trace and trace["problem"] == record.get("question"):
        record = {**record, "trace": {k: v for k, v in trace.items() if k != "problem"}}
    text = json.dumps(record, ensure_ascii=False, default=str) + "\n"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(record, ensure_ascii=True, default=str) + "\n").encode("ascii")


def identity_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> str:
    """Where two run identities differ, as ``key: old -> new`` items (for error messages)."""
    diffs = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            sub = identity_diff(a, b, f"{prefix}{k}.")
            if sub:
                diffs.append(sub)
        elif a != b:
            diffs.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return "; ".join(diffs[:5])
