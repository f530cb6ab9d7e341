"""A run is a folder: ``header.json`` + ``samples.jsonl`` + ``summary.json``.

Generic over what a record holds (evaluation samples, generated SFT traces): every record is a JSON
object with ``problem_id`` and ``sample_index``; the pair is its key. Records are appended one line
at a time, flushed and fsynced, so a killed process loses at most the samples in flight.

Reopening a run resumes it:

* a torn last line (no trailing newline) is cut back to the last newline, with a warning;
* records are keyed, the latest line for a key wins, so nothing is counted twice;
* :meth:`RunDir.pending` skips finished keys; with ``retry_failed`` it also re-runs keys whose latest
  record has ``status == "failed"``;
* the header's ``identity`` (config + data) must match the stored one, otherwise
  :class:`RunMismatch` is raised, unless ``force`` is given: then the old files are moved aside
  (``*.old-<time>``) and the run starts afresh.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
HEADER = "header.json"
SAMPLES = "samples.jsonl"
SUMMARY = "summary.json"

Key = tuple[str, int]


class RunMismatch(RuntimeError):
    """The folder holds a run with a different configuration."""


def default_runs_dir() -> Path:
    return Path(os.environ.get("MATHAGENT_RUNS_DIR", Path.home() / ".cache" / "mathagent" / "runs"))


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


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunDir:
    """An open run folder. Use :meth:`open`; :meth:`append` is safe from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.header: dict[str, Any] = {}
        self.repaired_bytes = 0
        """Bytes cut off a torn last line when the run was opened."""
        self._lock = threading.Lock()
        self._records: dict[Key, dict[str, Any]] = {}

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
        run.path.mkdir(parents=True, exist_ok=True)
        hp = run.path / HEADER
        identity = json.loads(json.dumps(identity, default=str))
        if hp.exists():
            old = json.loads(hp.read_text(encoding="utf-8"))
            if old.get("identity") != identity:
                if not force:
                    raise RunMismatch(
                        f"{run.path} holds a run with a different configuration "
                        f"({identity_diff(old.get('identity', {}), identity)}); use another --run-dir, or --force to "
                        "move the old files aside and start again"
                    )
                stamp = time.strftime("%Y%m%d-%H%M%S")
                for name in (HEADER, SAMPLES, SUMMARY):
                    if (run.path / name).exists():
                        os.replace(run.path / name, run.path / f"{name}.old-{stamp}")
                log.warning("%s: configuration changed; old files moved aside (*.old-%s)", run.path, stamp)
            else:
                run.header = old
        if not run.header:
            run.header = {
                "schema_version": SCHEMA_VERSION,
                "identity": identity,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **(extra or {}),
            }
        else:
            run.header.setdefault("resumed", []).append(time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        _write_json_atomic(hp, run.header)
        run._load()
        return run

    @classmethod
    def read(cls, path: Path | str) -> RunDir:
        """Open an existing run read-only (for reports); a torn last line is ignored, not cut."""
        run = cls(Path(path))
        if not (run.path / HEADER).exists():
            raise FileNotFoundError(f"{run.path}: no {HEADER}; not a run folder")
        run.header = json.loads((run.path / HEADER).read_text(encoding="utf-8"))
        run._load(repair=False)
        return run

    def _load(self, repair: bool = True) -> None:
        sp = self.path / SAMPLES
        if not sp.exists():
            sp.touch()
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
        for lineno, line in enumerate(data.decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{sp}:{lineno}: corrupt record ({e.msg})") from None
            self._records[key_of(rec)] = rec

    # -- records -------------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        """The latest record per key, in first-seen order."""
        with self._lock:
            return list(self._records.values())

    def done(self, *, retry_failed: bool = False) -> set[Key]:
        with self._lock:
            return {k for k, r in self._records.items() if not (retry_failed and r.get("status") == "failed")}

    def pending(self, keys: Iterable[Key], *, retry_failed: bool = False) -> list[Key]:
        done = self.done(retry_failed=retry_failed)
        return [k for k in keys if k not in done]

    def append(self, record: dict[str, Any]) -> None:
        """Write one finished record durably (flush + fsync) before returning."""
        key = key_of(record)
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            with open(self.path / SAMPLES, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self._records[key] = record

    # -- summary -------------------------------------------------------------------------------
    def write_summary(self, summary: dict[str, Any]) -> Path:
        p = self.path / SUMMARY
        _write_json_atomic(p, summary)
        return p

    def summary(self) -> dict[str, Any] | None:
        p = self.path / SUMMARY
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else None


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
