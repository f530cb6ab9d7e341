"""A loopback OpenAI-compatible server that fails a share of its requests, for soaks and benchmarks.

Built on the fake server of the tests (``tests/agent/fakeserver.py``). Each completion request fails
with probability ``rate`` (seeded), in one of the kinds of issue 17 §2, drawn evenly:

* ``500``: an OpenAI-style error body with status 500;
* ``429``: status 429 with a ``Retry-After`` header (``retry_after`` seconds);
* ``hang``: no answer; the connection is dropped after ``hang_s`` (or when the server stops); how long
  each hung request was waited on before the client gave up is kept in ``hang_waits``;
* ``truncated``: a 200 whose JSON body stops halfway (Content-Length promises the whole body);
* ``reset``: the connection is reset (RST) without an answer.

``faults`` counts what was injected, by kind. ``rate`` can be changed while the server runs.

    python bench/fault_server.py --rate 0.05 --latency 0.25     # serve until Ctrl-C
"""

from __future__ import annotations

import argparse
import json
import random
import select
import socket
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "agent"))

from fakeserver import FakeOpenAIServer  # noqa: E402

KINDS = ("500", "429", "hang", "truncated", "reset")


@dataclass
class FaultServer(FakeOpenAIServer):
    """:class:`FakeOpenAIServer` plus injected faults (see the module docstring)."""

    rate: float = 0.05
    kinds: tuple[str, ...] = KINDS
    retry_after: float = 2.0
    hang_s: float = 600.0
    seed: int = 0
    faults: Counter = field(default_factory=Counter)
    hang_waits: list[float] = field(default_factory=list)
    """Per hung request: seconds until the client closed the connection (or ``hang_s``)."""
    _rng: random.Random | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        self._stopping.set()  # release hung handlers
        super().stop()

    def _draw(self) -> str | None:
        with self._lock:
            if self._rng is None:
                self._rng = random.Random(self.seed)
            if self._rng.random() >= self.rate:
                return None
            kind = self._rng.choice(self.kinds)
            self.faults[kind] += 1
            return kind

    def _handle(self, h: Any, body: dict[str, Any], *, chat: bool) -> None:
        kind = self._draw()
        if kind is None:
            super()._handle(h, body, chat=chat)
            return
        with self._lock:
            self.hits += 1
            self.requests.append(body)
        h.close_connection = True
        if kind == "500":
            h._json(500, {"error": {"message": "injected server error", "type": "server_error"}})
        elif kind == "429":
            data = json.dumps({"error": {"message": "injected rate limit", "type": "rate_limit"}}).encode()
            h.send_response(429)
            h.send_header("Content-Type", "application/json")
            h.send_header("Retry-After", f"{self.retry_after:g}")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            _quiet_write(h, data)
        elif kind == "hang":
            t0 = time.monotonic()
            _wait_for_close(h, self._stopping, self.hang_s)
            with self._lock:
                self.hang_waits.append(time.monotonic() - t0)
            _reset(h)
        elif kind == "truncated":
            full = json.dumps(
                {
                    "id": "fault",
                    "object": "chat.completion" if chat else "text_completion",
                    "created": int(time.time()),
                    "model": self.model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * 200}}],
                }
            ).encode()
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(full)))
            h.end_headers()
            _quiet_write(h, full[: len(full) // 2])  # then the connection closes (FIN): body cut short
        else:  # reset
            _reset(h)


def _quiet_write(h: Any, data: bytes) -> None:
    try:
        h.wfile.write(data)
        h.wfile.flush()
    except OSError:
        pass


def _wait_for_close(h: Any, stopping: threading.Event, limit: float) -> None:
    """Answer nothing until the client closes the connection, the server stops, or ``limit`` s pass."""
    sock: socket.socket = h.request
    end = time.monotonic() + limit
    while not stopping.is_set() and time.monotonic() < end:
        readable, _, _ = select.select([sock], [], [], 0.1)
        if not readable:
            continue
        try:
            if not sock.recv(1, socket.MSG_PEEK):
                return  # the client closed its end (it gave up on this request)
        except OSError:
            return
        stopping.wait(0.1)  # bytes we do not read: only watch for the close


def _reset(h: Any) -> None:
    """Drop the connection with a TCP reset (SO_LINGER 0), answering nothing more."""
    try:
        h.wfile.flush()
    except OSError:
        pass
    sock: socket.socket = h.request
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()  # the real close (and the RST) happens when the handler's files close


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=0.05)
    p.add_argument("--latency", type=float, default=0.25)
    p.add_argument("--retry-after", type=float, default=2.0)
    p.add_argument("--hang-s", type=float, default=600.0)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--text", default="The answer is $\\boxed{42}$.")
    args = p.parse_args()
    srv = FaultServer(
        completions=[args.text],
        latency=args.latency,
        port=args.port,
        rate=args.rate,
        retry_after=args.retry_after,
        hang_s=args.hang_s,
    )
    with srv:
        print(f"fault server at {srv.base_url}, fault rate {args.rate} (Ctrl-C stops)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print(f"faults injected: {dict(srv.faults)}")
            return 0


if __name__ == "__main__":
    sys.exit(main())
