"""Fixtures for the eval tests: a small real disk (tmpfs) that can fill up; another process holding a
run folder (run.lock)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest


class SmallDisk:
    """A tmpfs mounted at :attr:`path`; :meth:`resize` changes its size in place (files stay)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def free(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (root only: skipped where mounting is not permitted), unmounted afterwards."""
    path = tmp_path / "disk"
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield SmallDisk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


HOLD = """
import json, sys, time
from pathlib import Path
from mathagent.evals.runs import RunDir
path = Path(sys.argv[1])
header = path / "header.json"
identity = json.loads(header.read_text())["identity"] if header.exists() else json.loads(sys.argv[2])
run = RunDir.open(path, identity)
print("held", flush=True)
time.sleep(600)
"""


class Holder:
    """Another process with the run folder open for writing (as a second `mathagent eval` would)."""

    def __init__(self, path: Path, identity: dict | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(path), json.dumps(identity or {})],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "held", f"holder did not start (rc {self.proc.poll()})"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel must drop the lock itself
        self.proc.wait(timeout=30)

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()


@pytest.fixture
def hold_run():
    """``hold_run(path, identity=None)``: a :class:`Holder` process; any still running are killed at the end."""
    made: list[Holder] = []

    def start(path: Path, identity: dict | None = None) -> Holder:
        made.append(Holder(path, identity))
        return made[-1]

    yield start
    for h in made:
        if h.proc.poll() is None:
            h.kill()
