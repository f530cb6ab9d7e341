"""A fake OpenAI-compatible HTTP server on loopback, for tests and benchmarks (stdlib only).

API::

    from fakeserver import FakeOpenAIServer, Reply     # tests/agent is on sys.path in its tests;
                                                         # elsewhere: sys.path.insert(0, "<repo>/tests/agent")
    with FakeOpenAIServer(completions=["The answer is 42."], latency=0.05) as srv:
        backend = OpenAIBackend(base_url=srv.base_url, model="fake")   # srv.base_url ends in /v1
        srv.queue(Reply(status=429), Reply(garbage=True), Reply(delay=5.0))  # next requests misbehave
        ...
        srv.requests      # JSON bodies received on the completion endpoints, in order
        srv.hits          # number of completion requests, failed ones included
        srv.connections   # TCP connections accepted
        srv.faults        # Counter of the faults injected at random (fault_rate), by kind

Endpoints: ``GET /v1/models`` (extra fields of its entry from ``model_card``), ``GET /props`` (when
``props`` is set, like llama.cpp's own server), ``POST /v1/chat/completions``, ``POST /v1/completions`` (both with
``stream: true`` as server-sent events, sent piece by piece with chunked transfer encoding), and
``POST /extras/tokenize/count``.

What a completion request gets: the next queued :class:`Reply` if any; else, with probability
``fault_rate``, a random fault of ``fault_kinds`` (``500``, ``429`` with ``Retry-After:
retry_after_s``, ``hang`` for ``hang_s`` before any byte, ``truncated`` JSON, a connection ``reset``;
drawn from ``random.Random(seed)``); else a normal answer. The normal answer's text is
``completions[i % len(completions)]`` (i counts answered requests), or ``responder(request_json)``
when a callable is given. Stop strings in the request are honoured (text cut before the first one,
``finish_reason: stop``), ``n`` is honoured when ``honour_n`` is true (llama.cpp's server ignores it:
default false), and every answer waits ``latency`` seconds first. A streamed answer sends 4
characters per event, ``piece_delay`` seconds apart, and (like llama.cpp's server) a ``: ping``
comment every ``ping_s`` seconds while it is silent, when ``ping_s`` is set.

A :class:`Reply` can set an HTTP status (with ``Retry-After``), return garbage or truncated JSON,
reset the connection, hang (``delay``), delay a stream's first event (``prefill``) or stall in its
middle (``stall``; pings go on meanwhile when ``ping_s`` is set), pace a stream (``piece_delay``), fix the text, or return tool calls. The server runs in a daemon thread; ``stop()``
(or leaving the ``with`` block) closes it and wakes every hanging handler.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULT_KINDS = ("500", "429", "hang", "truncated", "reset")
"""The fault mix of issue 17 (chosen uniformly when a request is picked for a fault)."""


@dataclass(frozen=True)
class Reply:
    """One scripted answer to the next completion request."""

    status: int = 200
    """HTTP status; anything but 200 sends an OpenAI-style error body."""
    retry_after: str | None = None
    """``Retry-After`` header sent with an error status (seconds, or an HTTP date)."""
    garbage: bool = False
    """Send a 200 with a body that is not valid JSON."""
    truncated: bool = False
    """Send the normal answer cut in the middle of its JSON (a streamed one: in the middle of an event)."""
    reset: bool = False
    """Reset the connection (TCP RST) instead of answering."""
    empty: bool = False
    """Send a 200 with valid JSON that holds no choices."""
    delay: float = 0.0
    """Seconds to sleep before answering (simulates a hung server; no byte is sent meanwhile)."""
    prefill: float = 0.0
    """Streamed answers: seconds between the headers and the first event (a model reading its prompt)."""
    stall: float = 0.0
    """Streamed answers: after half of the events, send nothing for this many seconds."""
    piece_delay: float | None = None
    """Streamed answers: seconds between events (``None``: the server's ``piece_delay``)."""
    text: str | None = None
    """Answer with this text instead of the server's default."""
    tool_calls: tuple[dict[str, Any], ...] = ()
    """``({"name": ..., "arguments": "{...}"},)``: answer a chat request with tool calls."""
    finish_reason: str | None = None


def _apply_stop(text: str, stop: Sequence[str] | str | None) -> tuple[str, str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut], "stop") if cut >= 0 else (text, "stop")


@dataclass
class FakeOpenAIServer:
    """A scripted OpenAI-compatible server on 127.0.0.1 (see the module docstring)."""

    completions: Sequence[str] = ("42",)
    responder: Callable[[dict[str, Any]], str] | None = None
    latency: float = 0.0
    honour_n: bool = False
    model: str = "fake-model"
    port: int = 0
    piece_delay: float = 0.0
    ping_s: float | None = None
    fault_rate: float = 0.0
    fault_kinds: Sequence[str] = FAULT_KINDS
    seed: int = 0
    hang_s: float = 600.0
    retry_after_s: float = 3.0
    model_card: dict[str, Any] = field(default_factory=dict)
    """Extra fields of the model's ``/v1/models`` entry (vLLM: ``owned_by``, ``max_model_len``, ``root``)."""
    props: dict[str, Any] | None = None
    """Served at ``GET /props`` (llama.cpp's own server) when set; else 404."""
    prompt_tokens: Callable[[dict[str, Any]], int] | None = None
    """``usage.prompt_tokens`` of an unstreamed answer from the request (default: JSON length / 4)."""
    requests: list[dict[str, Any]] = field(default_factory=list)
    hits: int = 0
    connections: int = 0
    """TCP connections accepted (keep-alive reuses one for many requests)."""
    faults: Counter[str] = field(default_factory=Counter)
    _queue: deque[Reply] = field(default_factory=deque)
    _answered: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _gone: threading.Event = field(default_factory=threading.Event)
    _rng: random.Random | None = None
    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def queue(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def start(self) -> FakeOpenAIServer:
        server = self
        unknown = set(self.fault_kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        self._rng = random.Random(self.seed)
        self._stopping.clear()
        self._gone.clear()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms ACK stalls

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server.connections += 1

            def do_GET(self) -> None:  # noqa: N802
                if server._gone.is_set():
                    self._reset()
                    return
                if self.path.rstrip("/") == "/v1/models":
                    card = {"id": server.model, "object": "model", **server.model_card}
                    self._json(200, {"object": "list", "data": [card]})
                elif self.path.rstrip("/") == "/props" and server.props is not None:
                    self._json(200, server.props)
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:  # noqa: N802
                if server._gone.is_set():
                    self._reset()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path == "/extras/tokenize/count":
                    self._json(200, {"count": max(1, len(body.get("input", "")) // 4)})
                    return
                if self.path not in ("/v1/chat/completions", "/v1/completions"):
                    self._json(404, {"error": {"message": "not found"}})
                    return
                server._handle(self, body, chat=self.path == "/v1/chat/completions")

            def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
                self._raw(status, json.dumps(obj).encode(), headers=headers)

            def _raw(
                self,
                status: int,
                data: bytes,
                ctype: str = "application/json",
                headers: dict[str, str] | None = None,
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _reset(self) -> None:
                """Close the connection with a TCP RST (SO_LINGER 0) instead of answering."""
                self.close_connection = True
                try:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                except OSError:
                    pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up (timeout) mid-answer is expected here; keep output quiet

        self._httpd = Server(("127.0.0.1", self.port), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes hanging and stalling handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def go_away(self) -> None:
        """Stop as a server process does: the port refuses new connections and every open keep-alive
        connection is reset on its next request (``stop`` alone keeps serving those). ``start``
        listens again on the same port."""
        self._gone.set()
        self.stop()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- answering ----------------------------------------------------------------------------------

    def _next_reply(self) -> Reply:
        """The queued reply, else a random fault (``fault_rate``), else a normal answer (lock held)."""
        if self._queue:
            return self._queue.popleft()
        rng = self._rng or random.Random(self.seed)
        if self.fault_rate > 0 and rng.random() < self.fault_rate:
            kind = rng.choice(list(self.fault_kinds))
            self.faults[kind] += 1
            return {
                "500": Reply(status=500),
                "429": Reply(status=429, retry_after=f"{self.retry_after_s:g}"),
                "hang": Reply(delay=self.hang_s),
                "truncated": Reply(truncated=True),
                "reset": Reply(reset=True),
            }[kind]
        return Reply()

    def _handle(self, h: Any, body: dict[str, Any], *, chat: bool) -> None:
        with self._lock:
            self.hits += 1
            self.requests.append(body)
            reply = self._next_reply()
        if reply.delay and self._stopping.wait(reply.delay):
            return
        if reply.reset:
            h._reset()
            return
        if reply.status != 200:
            headers = {"Retry-After": reply.retry_after} if reply.retry_after is not None else None
            h._json(
                reply.status, {"error": {"message": f"fake error {reply.status}", "type": "fake"}}, headers
            )
            return
        if reply.garbage:
            h._raw(200, b'{"choices": [ this is not json')
            return
        if reply.empty:
            h._json(200, {"id": "x", "object": "chat.completion", "choices": []})
            return
        if self.latency:
            time.sleep(self.latency)
        n = max(1, int(body.get("n") or 1)) if self.honour_n else 1
        texts = []
        for _ in range(n):
            with self._lock:
                i = self._answered
                self._answered += 1
            if reply.text is not None:
                raw = reply.text
            elif self.responder is not None:
                raw = self.responder(body)
            else:
                raw = self.completions[i % len(self.completions)]
            texts.append(_apply_stop(raw, body.get("stop")))
        if body.get("stream"):
            self._stream(h, texts, chat, reply)
            return
        choices = []
        for idx, (text, finish) in enumerate(texts):
            if chat:
                msg: dict[str, Any] = {"role": "assistant", "content": text}
                if reply.tool_calls:
                    msg["content"] = None
                    msg["tool_calls"] = [
                        {"id": f"call_{k}", "type": "function", "function": dict(tc)}
                        for k, tc in enumerate(reply.tool_calls)
                    ]
                    finish = "tool_calls"
                choices.append({"index": idx, "message": msg, "finish_reason": reply.finish_reason or finish})
            else:
                choices.append({"index": idx, "text": text, "finish_reason": reply.finish_reason or finish})
        prompt_len = len(json.dumps(body.get("messages") or body.get("prompt") or ""))
        if self.prompt_tokens is not None:
            prompt_len = 4 * self.prompt_tokens(body)
        data = json.dumps(
            {
                "id": f"fake-{uuid.uuid4().hex[:8]}",
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()),
                "model": self.model,
                "choices": choices,
                "usage": {
                    "prompt_tokens": prompt_len // 4,
                    "completion_tokens": sum(len(t) for t, _ in texts) // 4 + 1,
                    "total_tokens": prompt_len // 4 + sum(len(t) for t, _ in texts) // 4 + 1,
                },
            }
        ).encode()
        h._raw(200, data[: len(data) // 2] if reply.truncated else data)

    def _events(self, texts: list[tuple[str, str]], chat: bool, reply: Reply) -> list[bytes]:
        """The server-sent events of a streamed answer (every choice, 4 characters per event)."""
        events: list[bytes] = []
        for idx, (text, finish) in enumerate(texts):
            pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
            if chat and reply.tool_calls:
                pieces, finish = [], "tool_calls"
            for k, piece in enumerate([*pieces, ""]):
                last = k == len(pieces)
                if chat:
                    delta: dict[str, Any] = {"content": piece} if piece else {}
                    if last and reply.tool_calls:
                        delta = {
                            "tool_calls": [
                                {"index": j, "id": f"call_{j}", "type": "function", "function": dict(tc)}
                                for j, tc in enumerate(reply.tool_calls)
                            ]
                        }
                    choice: dict[str, Any] = {"index": idx, "delta": delta}
                else:
                    choice = {"index": idx, "text": piece}
                choice["finish_reason"] = (reply.finish_reason or finish) if last else None
                obj = "chat.completion.chunk" if chat else "text_completion"
                event = {
                    "id": "fake-stream",
                    "object": obj,
                    "created": 0,
                    "model": self.model,
                    "choices": [choice],
                }
                events.append(f"data: {json.dumps(event)}\n\n".encode())
        return [*events, b"data: [DONE]\n\n"]

    def _stream(self, h: Any, texts: list[tuple[str, str]], chat: bool, reply: Reply) -> None:
        events = self._events(texts, chat, reply)
        if reply.truncated:  # half of the events, then one cut in the middle of its JSON
            half = events[: len(events) // 2]
            events = [*half, events[len(half)][: len(events[len(half)]) // 2] + b"\n\n"]
        gap = self.piece_delay if reply.piece_delay is None else reply.piece_delay
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()

        def chunk(data: bytes) -> None:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            h.wfile.flush()

        def pause(seconds: float) -> bool:
            """Wait, pinging every ``ping_s`` when set; False when the server stops meanwhile."""
            end = time.monotonic() + seconds
            while (left := end - time.monotonic()) > 0:
                step = min(left, self.ping_s) if self.ping_s else left
                if self._stopping.wait(step):
                    return False
                if self.ping_s and end - time.monotonic() > 0:
                    chunk(b": ping\n\n")
            return True

        try:
            if reply.prefill and not pause(reply.prefill):
                return
            for k, event in enumerate(events):
                if k and gap and not pause(gap):
                    return
                if reply.stall and k == len(events) // 2 and not pause(reply.stall):
                    return
                chunk(event)
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True


def closed_port() -> int:
    """A loopback port with nothing listening (for dead-server tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
