"""What the REPL keeps alive between problems: a backend and a kernel pool, warmed in the background.

:class:`Runtime` starts building both in worker threads as soon as the REPL opens (the llama.cpp
server takes seconds to load a model, kernels about half a second each), so the user types while
they warm up; the first problem awaits readiness. A settings change that affects the backend
(``/model``, ``/backend``, ``/base-url``) starts a new one in the background and closes the old one.

:class:`TrackingProvider` wraps the pool so the REPL can interrupt and close every sandbox a
cancelled problem had acquired (Ctrl-C), leaving no kernel behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import threading
from typing import Any

from mathagent.agent.backends import close_backend, make_backend
from mathagent.agent.backends.base import Backend, Completion, GenerationParams, Prompt, TokenCallback
from mathagent.agent.backends.scripted import script_backend
from mathagent.agent.repl.settings import ReplSettings
from mathagent.sandbox.base import IsolationLevel, Sandbox, SandboxProvider
from mathagent.sandbox.pool import KernelPool

log = logging.getLogger(__name__)


def build_backend(settings: ReplSettings) -> Backend:
    """A backend for ``settings`` (blocking: may assemble a model and start a llama.cpp server)."""
    if settings.script or settings.backend == "scripted":
        if not settings.script:
            raise ValueError("the scripted backend needs a script file (--script FILE or MATHAGENT_SCRIPT)")
        return script_backend(settings.script)
    return make_backend(
        model=settings.model,
        base_url=settings.base_url,
        backend=settings.backend,
        continue_mode=settings.continue_mode,
    )


def build_pool(size: int) -> KernelPool:
    return KernelPool(size=size)


class CallSeparated:
    """Wraps a backend so that streamed text from consecutive model calls starts on a new line.

    The loop streams each call's text through ``on_text`` with no event between calls (e.g. the solve
    phase's last words and the verification phase's first), so the display would run them together.
    Everything else is delegated unchanged.
    """

    def __init__(self, inner: Backend) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def generate(
        self, prompt: Prompt, params: GenerationParams, *, on_text: TokenCallback | None = None
    ) -> list[Completion]:
        if on_text is not None:
            on_text("\n")
        return await self._inner.generate(prompt, params, on_text=on_text)


class TrackingProvider:
    """A SandboxProvider that remembers the sandboxes it handed out, to interrupt or close them."""

    def __init__(self, inner: SandboxProvider) -> None:
        self.inner = inner
        self._live: list[Sandbox] = []
        self._lock = threading.Condition()
        self._acquiring = 0

    @property
    def level(self) -> IsolationLevel:
        return self.inner.level

    def acquire(self) -> Sandbox:
        with self._lock:
            self._acquiring += 1
        try:
            sb = self.inner.acquire()
            with self._lock:
                self._live.append(sb)
            return sb
        finally:
            with self._lock:
                self._acquiring -= 1
                self._lock.notify_all()

    def interrupt_all(self) -> int:
        """Send an interrupt to the kernel of every sandbox handed out; returns how many were signalled."""
        with self._lock:
            live = list(self._live)
        n = 0
        for sb in live:
            fn = getattr(sb, "interrupt", None)
            if fn is None:
                continue
            try:
                fn()
                n += 1
            except Exception:  # noqa: BLE001 - a dead kernel is fine here
                log.debug("interrupt failed", exc_info=True)
        return n

    def close_handed_out(self) -> None:
        """Close every sandbox handed out so far (idempotent; the loop normally closes its own)."""
        with self._lock:
            live, self._live = self._live, []
        for sb in live:
            try:
                sb.close()
            except Exception:  # noqa: BLE001
                log.debug("closing a sandbox failed", exc_info=True)

    def close(self, wait_s: float = 30.0) -> None:
        """Close everything. An acquire still in flight (its problem was cancelled while waiting for a
        kernel) is let finish first: a closed pool would leave it blocked until its own timeout."""
        with self._lock:
            self._lock.wait_for(lambda: self._acquiring == 0, timeout=wait_s)
        self.close_handed_out()
        self.inner.close()


class Runtime:
    """The backend and kernel pool of one REPL session (see the module docstring)."""

    def __init__(self, pool_size: int = 2) -> None:
        self.pool_size = pool_size
        self._executor = cf.ThreadPoolExecutor(max_workers=3, thread_name_prefix="repl-warm")
        self._backend: cf.Future[Any] | None = None
        self._backend_key: tuple[Any, ...] | None = None
        self._pool: cf.Future[Any] | None = None
        self._retired: list[cf.Future[Any]] = []
        self._closing: list[asyncio.Future[Any]] = []

    def warm(self, settings: ReplSettings) -> list[str]:
        """Start building whatever is missing or stale; returns what is warming up, for the banner."""
        started = []
        if self._pool is not None and self._pool.done() and self._pool.exception() is not None:
            self._pool = None
        if self._pool is None:
            self._pool = self._executor.submit(lambda: TrackingProvider(build_pool(self.pool_size)))
            started.append(f"kernel pool ({self.pool_size} kernels)")
        key = settings.backend_key()
        failed = self._backend is not None and self._backend.done() and self._backend.exception() is not None
        if self._backend is None or key != self._backend_key or failed:
            if self._backend is not None:
                self._retired.append(self._backend)
            self._backend_key = key
            self._backend = self._executor.submit(build_backend, settings)
            started.append(settings.describe_backend())
        return started

    def drop_backend(self) -> None:
        """Forget the backend (its server exited): the next :meth:`warm` builds a new one."""
        if self._backend is not None:
            self._retired.append(self._backend)
        self._backend = None

    def status(self) -> dict[str, str]:
        """``backend`` / ``sandbox`` -> ``warming up``, ``ready`` or ``failed: ...``."""

        def one(f: cf.Future[Any] | None) -> str:
            if f is None:
                return "not started"
            if not f.done():
                return "warming up"
            err = f.exception()
            return f"failed: {err}" if err else "ready"

        return {"backend": one(self._backend), "sandbox": one(self._pool)}

    async def backend(self) -> Any:
        assert self._backend is not None, "warm() first"
        return await asyncio.wrap_future(self._backend)

    async def provider(self) -> TrackingProvider:
        assert self._pool is not None, "warm() first"
        return await asyncio.wrap_future(self._pool)

    def close_retired(self) -> None:
        """Close replaced backends in the background (one may still be starting its server)."""
        retired, self._retired = self._retired, []
        self._closing.extend(asyncio.ensure_future(_close_backend_future(f)) for f in retired)

    async def aclose(self) -> None:
        """Stop the model server the session started (if any) and every kernel."""
        self.close_retired()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self._backend is not None:
            await _close_backend_future(self._backend)
        if self._pool is not None:
            try:
                pool = await asyncio.wrap_future(self._pool)
            except Exception:  # noqa: BLE001 - it never started
                pool = None
            if pool is not None:
                await asyncio.to_thread(pool.close)
        self._executor.shutdown(wait=False, cancel_futures=True)


async def _close_backend_future(f: cf.Future[Any]) -> None:
    try:
        backend = await asyncio.wrap_future(f)
    except Exception:  # noqa: BLE001 - it never started: nothing to close
        return
    try:
        await close_backend(backend)
    except Exception:  # noqa: BLE001
        log.warning("closing the backend failed", exc_info=True)
