"""Run llama-cpp-python's OpenAI-compatible server on a bundled GGUF model, on loopback only.

``LlamaServer`` starts ``python -m llama_cpp.server`` in its own process group on a free port of
127.0.0.1, waits until ``GET /v1/models`` answers, and stops it on ``stop()``, on leaving its
``with`` block, or at interpreter exit. ``shared_server()`` hands out one server per (model, n_ctx)
for the whole process, so every backend of a run talks to the same server.

Logs: llama.cpp's own log lines never reach the user's terminal. The server's output goes to
``$MATHAGENT_CACHE_DIR/logs/llama-server-<model>.log`` (default ``~/.cache/mathagent/logs/``), appended
at each start (moved to ``.1`` past 10 MB). The library loaded in this process (for exact token
counts, :func:`load_vocab`) logs through :func:`route_native_logs` into ``logs/llama.log`` beside it:
llama-cpp-python's own handler prints warnings such as ``llama_context: n_ctx_seq (512) >
n_ctx_train (0)`` to stderr even with ``verbose=False``, in the middle of the model's text.

Facts this module builds on (llama-cpp-python 0.3.x): the server defaults to one thread, so we pass
``--n_threads``; it ignores ``n > 1`` (one choice); it uses the chat template stored in the GGUF when
no ``--chat_format`` is given; its chat endpoint cannot continue a partial assistant message, so a
trajectory goes on through ``/v1/completions`` with the GGUF's own chat template rendered by
:mod:`mathagent.agent.backends.continuation`; it does not report its context length (no ``/props``):
the backend takes it from the ``n_ctx`` the server was started with.

Progress evidence: :meth:`LlamaServer.activity` (seconds the server's process tree ran or waited for
a CPU, :mod:`mathagent.agent.procstat`) is the backend's progress probe: a silent request is not
given up while the server works. Giving a request up closes its connection, which is what ends
the generation on both servers: llama-server at once; llama-cpp-python when its generator next
yields a piece (a prompt being read, or text held back as the possible start of a stop string, runs
to its end first).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from mathagent.agent import native_server
from mathagent.agent.cache import cache_dir
from mathagent.agent.models import is_bundled, model_path
from mathagent.agent.procstat import ProcessActivity
from mathagent.sandbox.concurrency import env_count, usable_cpus

log = logging.getLogger(__name__)

DEFAULT_N_CTX = 4096


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "model"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


THREADS_ENV = "MATHAGENT_LLAMA_THREADS"
"""Threads the bundled server decodes with (default: one less than the CPUs this process may use).

llama.cpp's threads meet at a barrier for every layer, so one thread that is not on a CPU stalls the
others. A run always has other work (the kernels executing code, parsing, grading), so the default
leaves one CPU to it. ``bench/threads_bench.py`` on 2 cores, 0.5B model: with one other busy process,
1 thread decoded 40-45 tokens/s and 2 threads 0.5; at load average ~20, 16-18 against 1.3-3.9."""


def default_threads() -> int:
    """``$MATHAGENT_LLAMA_THREADS`` when set, else one less than the CPUs this process may run on
    (at least 1)."""
    given = env_count(THREADS_ENV)
    return given if given is not None else max(1, usable_cpus() - 1)


LOG_ROTATE_BYTES = 10 << 20


def log_dir() -> Path:
    """Folder of llama.cpp's logs: ``$MATHAGENT_CACHE_DIR/logs`` (default ``~/.cache/mathagent/logs``)."""
    return cache_dir("logs")


def open_log(name: str) -> tuple[Any, Path]:
    """Open ``log_dir()/name`` for appending (binary), first moving a file past 10 MB to ``name.1``."""
    path = log_dir() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    except OSError:
        pass
    return open(path, "ab"), path


_NATIVE: dict[str, Any] = {}
_NATIVE_LOCK = threading.Lock()


def route_native_logs() -> Path | None:
    """Send the in-process llama.cpp library's log lines to ``log_dir()/llama.log`` (idempotent).

    Returns the log path, or None when ``llama_cpp`` is not installed or the log cannot be opened.
    """
    with _NATIVE_LOCK:
        if "path" in _NATIVE:
            return _NATIVE["path"]  # type: ignore[no-any-return]
        try:
            import ctypes

            import llama_cpp

            f, path = open_log("llama.log")
        except (ImportError, OSError) as e:
            log.debug("llama.cpp native logs not redirected: %s", e)
            return None

        @llama_cpp.llama_log_callback  # type: ignore[misc]
        def _to_file(level: int, text: bytes, user_data: Any) -> None:
            try:
                f.write(text)
                f.flush()
            except (OSError, ValueError):
                pass

        llama_cpp.llama_log_set(_to_file, ctypes.c_void_p(0))
        # the callback and the file must outlive this call: the C library keeps only a raw pointer
        _NATIVE.update(path=path, callback=_to_file, file=f)
        return path


def load_vocab(path: str | os.PathLike[str]) -> Any:
    """A vocabulary-only ``llama_cpp.Llama`` for exact token counts, its native logs in the log file."""
    import llama_cpp

    route_native_logs()
    return llama_cpp.Llama(str(path), vocab_only=True, verbose=False)


_LIVE: set[LlamaServer] = set()
_LIVE_LOCK = threading.Lock()


def describe_exit(code: int) -> str:
    """An exit status in words: ``-11`` (killed by a signal, as Popen reports it) and ``139`` (128 +
    signal, as a shell or :mod:`~mathagent.agent.native_server` reports it) both read ``signal 11
    (SIGSEGV)``."""
    signum = -code if code < 0 else code - 128 if 128 < code < 160 else None
    if signum is None:
        return f"exit status {code}"
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = "?"
    return f"signal {signum} ({name})"


def _stop_all() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for s in servers:
        s.stop()


atexit.register(_stop_all)


class LlamaServer:
    """A llama.cpp server process on loopback; a context manager; stopped at exit at the latest.

    ``kind``: ``"llama-server"`` (llama.cpp's own server, ``parallel`` slots decoded in one batch),
    ``"llama-cpp-python"`` (one request at a time; the default) or ``"auto"`` (llama-server when
    installed, else llama-cpp-python with a warning); ``None``: ``$MATHAGENT_SERVER``, else the default; see
    :mod:`mathagent.agent.native_server`.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = "qwen2.5-coder-1.5b",
        *,
        port: int | None = None,
        n_ctx: int = DEFAULT_N_CTX,
        n_threads: int | None = None,
        chat_format: str | None = None,
        startup_timeout: float = 180.0,
        extra_args: Sequence[str] = (),
        kind: str | None = None,
        parallel: int = native_server.DEFAULT_PARALLEL,
    ) -> None:
        self.kind, self.binary = native_server.resolve_kind(kind)
        self.parallel = max(1, int(parallel))
        self.name = str(model)
        self.path = model_path(str(model)) if is_bundled(str(model)) else Path(model)
        if not self.path.is_file():
            raise FileNotFoundError(f"GGUF model not found: {self.path}")
        self.alias = str(model) if is_bundled(str(model)) else self.path.stem
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_threads()
        self.chat_format = chat_format
        self.startup_timeout = startup_timeout
        self.extra_args = tuple(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self._activity: ProcessActivity | None = None
        self._log_file: Any = None
        self._log_start = 0
        self.log_path: Path | None = None
        """The server's log file (``log_dir()/llama-server-<model>.log``), set at start."""
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        """OpenAI base URL, e.g. ``http://127.0.0.1:8765/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        if self.kind == native_server.LLAMA_SERVER:
            assert self.binary is not None
            native = native_server.command(
                self.binary, self.path, alias=self.alias, host=self.host, port=self.port,
                n_ctx=self.n_ctx, n_threads=self.n_threads, parallel=self.parallel,
                extra_args=self.extra_args,
            )  # fmt: skip
            guard = [sys.executable, "-m", "mathagent.agent.orphan_guard", str(os.getpid())]
            return [*guard, "mathagent.agent.native_server", *native]
        cmd = [
            # orphan_guard ends the server if this process dies without stopping it (kill -9).
            sys.executable, "-m", "mathagent.agent.orphan_guard", str(os.getpid()), "llama_cpp.server",
            "--model", str(self.path), "--model_alias", self.alias,
            "--host", self.host, "--port", str(self.port),
            "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads),
            "--n_threads_batch", str(self.n_threads), "--verbose", "False",
            # By default a waiting request makes the server end the running stream early ([DONE]
            # without a finish_reason): parallel samples would cut each other short.
            "--interrupt_requests", "False",
        ]  # fmt: skip
        if self.chat_format:
            cmd += ["--chat_format", self.chat_format]
        return cmd + list(self.extra_args)

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_reason(self, wait: float = 0.0) -> str | None:
        """Why the server is gone, when it exited on its own (a crash): how it ended and the tail of its
        log. ``None`` while it runs (after waiting up to ``wait`` seconds for it to exit: a dropped
        connection can come an instant before the exit) and after :meth:`stop`."""
        proc = self.proc
        if proc is None:
            return None
        try:
            code = proc.wait(wait) if wait > 0 else proc.poll()
        except subprocess.TimeoutExpired:
            return None
        if code is None or self.proc is not proc:  # running, or stopped by us meanwhile
            return None
        return (
            f"the {self.kind} server of {self.alias} (pid {proc.pid}, {self.base_url}) exited with "
            f"{describe_exit(code)}; the last lines of its log {self.log_path}:\n{self.log_tail(12)}"
        )

    def activity(self) -> float | None:
        """Seconds the server's threads (its whole process tree) have run or waited for a CPU; only
        grows. ``None`` when it is not running. The backend's progress probe (a silence is forgiven
        while this advances; :mod:`mathagent.agent.backends.progress`)."""
        act = self._activity
        if act is None or not self.is_running():
            return None
        return act()

    def log_tail(self, n: int = 30) -> str:
        """The last ``n`` lines this server start wrote to its log file."""
        if not self.log_path or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(self._log_start)
            text = f.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-n:])

    def start(self) -> LlamaServer:
        """Start the server and block until it answers; ``RuntimeError`` with its log tail on failure."""
        with self._lock:
            if self.is_running():
                return self
            if self.kind == native_server.LLAMA_CPP_PYTHON:
                try:
                    import llama_cpp.server  # noqa: F401
                except ImportError as e:
                    raise RuntimeError(
                        'llama.cpp server is not installed: pip install "llama-cpp-python[server]"'
                    ) from e
            self._log_file, self.log_path = open_log(f"llama-server-{_safe(self.alias)}.log")
            self._log_start = self._log_file.tell()
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            self._log_file.write(f"\n== {stamp} pid {os.getpid()} port {self.port}: {self.path}\n".encode())
            self._log_file.flush()
            log.info("starting %s (log: %s): %s", self.kind, self.log_path, " ".join(self.command()))
            self.proc = subprocess.Popen(
                self.command(),
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            self._activity = ProcessActivity(self.proc.pid)
            with _LIVE_LOCK:
                _LIVE.add(self)
            try:
                self._wait_ready()
            except BaseException:
                self._stop_locked()
                raise
            return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"llama.cpp server exited with code {self.proc.returncode} while starting "
                        f"({self.path.name}); log tail:\n{self.log_tail()}"
                    )
                try:
                    if client.get(f"{self.base_url}/models").status_code == 200:
                        log.info("llama.cpp server ready at %s", self.base_url)
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"llama.cpp server did not become ready within {self.startup_timeout:.0f} s "
                        f"at {self.base_url}; log tail:\n{self.log_tail()}"
                    )
                time.sleep(0.25)

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stop_locked(timeout)

    def _stop_locked(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proc is not None:
            proc.poll()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def slots(self) -> int:
        """Requests the server works on at once: ``parallel`` for llama-server; 1 for llama-cpp-python,
        which takes one and queues the rest. A queued request's timeout would tick while it waits, so
        clients keep no more than this in flight."""
        return self.parallel if self.kind == native_server.LLAMA_SERVER else 1

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"LlamaServer({self.alias!r}, {self.base_url}, {self.kind}, {state})"


_SHARED: dict[tuple[str, int], LlamaServer] = {}
_SHARED_LOCK = threading.Lock()


def shared_server(model: str = "qwen2.5-coder-1.5b", *, n_ctx: int = DEFAULT_N_CTX, **kw: Any) -> LlamaServer:
    """One running server per (model, n_ctx) for this process; started on first use, stopped at exit."""
    key = (str(model), n_ctx)
    with _SHARED_LOCK:
        server = _SHARED.get(key)
        if server is None or not server.is_running():
            server = LlamaServer(model, n_ctx=n_ctx, **kw).start()
            _SHARED[key] = server
        return server
