"""Drive the real REPL in a pseudo-terminal and read what the screen shows (ANSI stripped)."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pexpect

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-Za-z]|\x1b[=>78]|\r")
PARTIAL = re.compile(r"\x1b[^a-zA-Z~]*$")


def strip_ansi(raw: str) -> str:
    return PARTIAL.sub("", ANSI.sub("", raw))


class Term:
    """A REPL process in a pty; :meth:`wait_for` consumes the screen text in order."""

    def __init__(self, child: pexpect.spawn) -> None:
        self.child = child
        self.raw = ""
        self.pos = 0

    @property
    def screen(self) -> str:
        return strip_ansi(self.raw)

    def _read(self, timeout: float) -> bool:
        try:
            self.raw += self.child.read_nonblocking(65536, timeout=timeout)
        except pexpect.TIMEOUT:
            pass
        except pexpect.EOF:
            return False
        return True

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        """Wait until ``text`` is on screen after the last match; returns the screen text up to it."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen
            i = screen.find(text, self.pos)
            if i >= 0:
                start, self.pos = self.pos, i + len(text)
                return screen[start : self.pos]
            alive = self._read(0.2)
            if not alive and text not in self.screen[self.pos :]:
                raise AssertionError(f"REPL exited before showing {text!r}; screen tail:\n{screen[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not shown within {timeout} s; screen tail:\n{screen[-3000:]}")

    def prompt(self, timeout: float = 60.0) -> None:
        """Wait for the input prompt, then a moment for prompt_toolkit to take the terminal."""
        self.wait_for("math>", timeout)
        time.sleep(0.3)
        self._read(0.05)

    def line(self, text: str, expect: str, timeout: float = 60.0) -> str:
        """Type a line, press Enter, wait for ``expect`` and the next prompt; returns all shown meanwhile."""
        start = self.pos
        self.child.send(text + "\r")
        self.wait_for(expect, timeout)
        self.prompt(timeout)
        return self.screen[start : self.pos]

    def wait_exit(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while self._read(0.2):
            if time.monotonic() > deadline:
                raise AssertionError(f"REPL did not exit; screen tail:\n{self.screen[-2000:]}")
        self.child.close()
        return self.child.exitstatus if self.child.exitstatus is not None else -(self.child.signalstatus or 0)


def spawn_repl(
    tmp_path: Path, turns: list, *args: str, script_env: bool = False, model: bool = False
) -> Term:
    """Start ``python -m mathagent.agent.repl`` in a 40x120 pty with its cache under ``tmp_path``."""
    env = dict(os.environ)
    env.update(
        MATHAGENT_CACHE_DIR=str(tmp_path / "cache"),
        MATHAGENT_REPL_HISTORY=str(tmp_path / "history"),
        TERM="xterm-256color",
        PROMPT_TOOLKIT_NO_CPR="1",
        COLUMNS="120",
        LINES="40",
    )
    if model:  # the bundled models are assembled in the real cache
        env.pop("MATHAGENT_CACHE_DIR")
    argv = ["-m", "mathagent.agent.repl", *args]
    if turns:
        script = tmp_path / "script.json"
        script.write_text(json.dumps(turns), encoding="utf-8")
        if script_env:
            env["MATHAGENT_SCRIPT"] = str(script)
        else:
            argv += ["--script", str(script)]
    child = pexpect.spawn(
        sys.executable, argv, env=env, encoding="utf-8", dimensions=(40, 120), cwd=str(tmp_path), timeout=60
    )
    term = Term(child)
    term.prompt()
    return term
