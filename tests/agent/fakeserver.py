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

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions`` (both with
``stream: true`` as server-sent events), and ``POST /extras/tokenize/count``.

What a completion request gets: the next queued :class:`Reply` if any, else a normal answer. The
normal answer's text is ``completions[i % len(completions)]`` (i counts answered requests), or
``responder(request_json)`` when a callable is given. Stop strings in the request are honoured (text
cut before the first one, ``finish_reason: stop``), ``n`` is honoured when ``honour_n`` is true
(llama.cpp's server ignores it: default false), and every answer waits ``latency`` seconds first.
A :class:`Reply` can set an HTTP status, return garbage, hang (``delay``), fix the text, or return
tool calls. The server runs in a daemon thread; ``stop()`` (or leaving the ``with`` block) closes it.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One scripted answer to the next completion request."""

    status: int = 200
    """HTTP status; anything but 200 sends an OpenAI-style error body."""
    garbage: bool = False
    """Send a 200 with a body that is not valid JSON."""
    empty: bool = False
    """Send a 200 with valid JSON that holds no choices."""
    delay: float = 0.0
    """Seconds to sleep before answering (simulates a hung server)."""
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
    requests: list[dict[str, Any]] = field(default_factory=list)
    hits: int = 0
    _queue: deque[Reply] = field(default_factory=deque)
    _answered: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
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

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms ACK stalls

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/") == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path == "/extras/tokenize/count":
                    self._json(200, {"count": max(1, len(body.get("input", "")) // 4)})
                    return
                if self.path not in ("/v1/chat/completions", "/v1/completions"):
                    self._json(404, {"error": {"message": "not found"}})
                    return
                server._handle(self, body, chat=self.path == "/v1/chat/completions")

            def _json(self, status: int, obj: Any) -> None:
                self._raw(status, json.dumps(obj).encode())

            def _raw(self, status: int, data: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._httpd = Server(("127.0.0.1", self.port), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- answering ----------------------------------------------------------------------------------

    def _handle(self, h: Any, body: dict[str, Any], *, chat: bool) -> None:
        with self._lock:
            self.hits += 1
            self.requests.append(body)
            reply = self._queue.popleft() if self._queue else Reply()
        if reply.delay:
            time.sleep(reply.delay)
        if reply.status != 200:
            h._json(reply.status, {"error": {"message": f"fake error {reply.status}", "type": "fake"}})
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
            self._stream(h, body, texts[0], chat)
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
        h._json(
            200,
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
            },
        )

    def _stream(self, h: Any, body: dict[str, Any], text_finish: tuple[str, str], chat: bool) -> None:
        text, finish = text_finish
        pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
        events = []
        for k, piece in enumerate(pieces + [""]):
            last = k == len(pieces)
            if chat:
                choice: dict[str, Any] = {"index": 0, "delta": {"content": piece} if piece else {}}
            else:
                choice = {"index": 0, "text": piece}
            choice["finish_reason"] = finish if last else None
            obj = "chat.completion.chunk" if chat else "text_completion"
            events.append(
                {"id": "fake-stream", "object": obj, "created": 0, "model": self.model, "choices": [choice]}
            )
        data = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"
        h._raw(200, data, "text/event-stream")


def closed_port() -> int:
    """A loopback port with nothing listening (for dead-server tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
