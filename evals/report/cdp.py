"""Drive headless Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``).

Standard library only: no websocket client, no port. Used by the report's browser tests and
``bench/report_bench.py`` to open a page with the network cut off, record every request the page
makes, evaluate JavaScript in it and read page-side timings.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class CDPError(RuntimeError):
    pass


class Chromium:
    """One headless Chromium with one page. Use as a context manager."""

    def __init__(self, user_data_dir: str | Path, *, exe: str | None = None, offline: bool = True) -> None:
        exe = exe or find_chromium()
        if not exe:
            raise FileNotFoundError("no chromium found on PATH")
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        # copies above fd 10, so that placing them on 3 and 4 in the child cannot clobber each other
        hi_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        hi_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)

        def place() -> None:
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        self.proc = subprocess.Popen(
            [
                exe,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--remote-debugging-pipe",
                f"--user-data-dir={user_data_dir}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=place,
            pass_fds=(3, 4),
        )
        for fd in (to_chrome_r, from_chrome_w, hi_r, hi_w):
            os.close(fd)
        self._w, self._r = to_chrome_w, from_chrome_r
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self.requests: list[str] = []
        """Every URL the page asked for (``Network.requestWillBeSent``), in order."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Network.enable")
        if offline:
            self.send(
                "Network.emulateNetworkConditions",
                {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
            )

    # -- protocol ------------------------------------------------------------------------------------
    def _read(self, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                return None
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise CDPError("chromium closed the pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        data = json.loads(msg)
        if "method" in data:
            self.events.append(data)
            if data["method"] == "Network.requestWillBeSent":
                self.requests.append(data["params"]["request"]["url"])
        return data

    def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 60) -> dict:
        """Send a browser-level command and wait for its result."""
        return self._call(method, params, None, timeout)

    def send(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 60) -> dict:
        """Send a command to the page and wait for its result."""
        return self._call(method, params, self.session, timeout)

    def _call(self, method: str, params: dict | None, session: str | None, timeout: float) -> dict:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            data = self._read(max(0.0, deadline - time.monotonic()))
            if data is None:
                raise CDPError(f"{method}: no answer in {timeout}s")
            if data.get("id") == self._id:
                if "error" in data:
                    raise CDPError(f"{method}: {data['error']}")
                return data.get("result", {})

    def wait_event(
        self, method: str | tuple[str, ...], timeout: float = 60, *, since: int = 0
    ) -> dict[str, Any]:
        """The first event named ``method`` (or any of several) at or after position ``since`` of
        :attr:`events`."""
        names = (method,) if isinstance(method, str) else method
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events[since:]:
                if ev["method"] in names:
                    return ev
            if self._read(max(0.0, deadline - time.monotonic())) is None:
                raise CDPError(f"no {method} within {timeout}s")

    # -- page helpers --------------------------------------------------------------------------------
    def open(self, url: str, timeout: float = 120) -> float:
        """Navigate and wait for the load event (or, when only the ``#fragment`` changed, for the
        in-document navigation); returns the wall seconds it took."""
        mark = len(self.events)
        t0 = time.perf_counter()
        self.send("Page.navigate", {"url": url})
        self.wait_event(("Page.loadEventFired", "Page.navigatedWithinDocument"), timeout, since=mark)
        return time.perf_counter() - t0

    def js(self, expression: str, timeout: float = 60) -> Any:
        """Evaluate ``expression`` in the page (promises awaited) and return its JSON value."""
        res = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout=timeout,
        )
        if "exceptionDetails" in res:
            raise CDPError(f"page raised: {res['exceptionDetails'].get('exception', {}).get('description')}")
        return res.get("result", {}).get("value")

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self.call("Browser.close", timeout=5)
                except (CDPError, OSError):
                    pass
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            for fd in (self._w, self._r):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
