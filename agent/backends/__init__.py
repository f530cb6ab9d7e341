"""Model backends and :func:`make_backend`, the one place that decides which backend serves a model.

Resolution order of ``make_backend(model, base_url, backend=...)``:

1. ``backend="scripted"`` → the scripted backend (keyword arguments passed through).
2. ``backend="transformers"``, or ``model`` is a directory with ``config.json`` → transformers
   backend (a ``.gguf`` path loads with ``gguf_file=``; ``mathagent.json`` sets ``default_format``).
3. an explicit ``base_url`` → OpenAI-compatible backend on that server.
3b. ``model`` is a hub id (``owner/name``, not a local path) and neither ``base_url`` nor
   ``OPENAI_BASE_URL`` names a server (or ``backend="transformers"``) → transformers backend on its
   snapshot in the local Hugging Face cache (:mod:`mathagent.agent.hubcache`); one that is not cached is
   a ``BackendError`` (nothing is downloaded).
4. ``model`` is ``None`` or a bundled name (``qwen2.5-coder-1.5b``, ``qwen2.5-coder-0.5b``,
   ``smollm2-135m``), or a ``.gguf`` file → the llama.cpp server (shared per process) on it, with an
   OpenAI-compatible backend in front — unless ``OPENAI_BASE_URL`` is set and ``model`` is ``None``.
5. otherwise (``OPENAI_BASE_URL`` or OpenAI itself) → OpenAI-compatible backend.

``request_timeout`` / ``stall_timeout`` (``None``: the default) and ``continue_mode`` (how a partial
assistant turn goes on, :mod:`.continuation`) reach OpenAI-compatible backends only.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from mathagent.agent.backends import scripted
from mathagent.agent.backends.base import Backend, BackendError, Completion, GenerationParams, ToolCall
from mathagent.agent.backends.openai_backend import OpenAIBackend
from mathagent.agent.backends.transformers_backend import TransformersBackend
from mathagent.agent.hubcache import cached_model_dir, looks_like_hub_id, not_cached_message
from mathagent.agent.llama_server import DEFAULT_N_CTX, LlamaServer, shared_server
from mathagent.agent.models import DEFAULT_MODEL, is_bundled, model_path

__all__ = [
    "Backend",
    "BackendError",
    "Completion",
    "GenerationParams",
    "ToolCall",
    "make_backend",
    "bundled_backend",
    "close_backend",
]

SERVER_KEYS = ("n_ctx", "n_threads", "startup_timeout", "port", "chat_format")
TIMEOUT_KEYS = ("timeout", "continue_mode")
"""``timeout`` (older keyword for ``request_timeout``) and ``continue_mode``: like the timeouts,
only OpenAI-compatible backends take them."""


def bundled_backend(model: str | os.PathLike[str] | None = None, **kw: Any) -> Backend:
    """An OpenAI-compatible backend on a (process-shared) llama.cpp server running a bundled model or GGUF."""
    name = str(model or DEFAULT_MODEL)
    server_kw = {k: kw.pop(k) for k in SERVER_KEYS if k in kw}
    server_kw.setdefault("n_ctx", DEFAULT_N_CTX)
    return server_backend(shared_server(name, **server_kw), **kw)


def server_backend(server: LlamaServer, **kw: Any) -> OpenAIBackend:
    """The OpenAI-compatible backend for a llama.cpp server mathagent started (``kw`` overrides)."""
    kw.setdefault("context_window", server.n_ctx)
    # Queue in the client, where no timeout ticks, not in the server: a request waiting behind three
    # others on a busy machine would otherwise use up its request timeout before its first token.
    kw.setdefault("max_concurrency", server.slots)
    kw.setdefault("progress", server.activity)  # a silence is no stall while our own server works
    return OpenAIBackend(
        model=server.alias,
        base_url=server.base_url,
        gguf_path=server.path,
        server=server,
        server_kind=server.kind,  # recorded with each trace's continuation: which server wrote it
        **kw,
    )


def make_backend(
    model: str | None = None,
    base_url: str | None = None,
    *,
    backend: str | None = None,
    request_timeout: float | None = None,
    stall_timeout: float | None = None,
    **kw: Any,
) -> Backend:
    """Build the backend a user means by ``--model`` / ``--base-url`` / ``--backend`` (see module doc)."""
    kind = (backend or os.environ.get("MATHAGENT_BACKEND") or "").lower() or None
    # server timeouts concern only OpenAI-compatible backends; None means "the default"
    timeouts = {k: kw.pop(k) for k in TIMEOUT_KEYS if k in kw}
    timeouts.update(request_timeout=request_timeout, stall_timeout=stall_timeout)
    timeouts = {k: v for k, v in timeouts.items() if v is not None}
    if kind not in (None, "openai", "transformers", "scripted", "llama", "llamacpp"):
        raise BackendError(f"unknown backend {backend!r}; use openai, transformers, llama or scripted")
    if kind == "scripted":
        return scripted.ScriptedBackend(**kw)  # type: ignore[no-any-return]
    path = Path(model).expanduser() if model else None
    env_url = os.environ.get("OPENAI_BASE_URL")
    if (
        model is not None
        and base_url is None
        and (kind == "transformers" or (kind is None and not env_url))
        and looks_like_hub_id(model)
    ):
        snapshot = cached_model_dir(model)
        if snapshot is None:
            raise BackendError(not_cached_message(model))
        backend_ = TransformersBackend(snapshot, **kw)
        backend_.model = model  # records name the hub id; the weights load from the snapshot
        return backend_
    if kind == "transformers" or (
        kind is None and base_url is None and path is not None and (path / "config.json").is_file()
    ):
        if model is None:
            raise BackendError("the transformers backend needs --model (a directory or a .gguf file)")
        target = model_path(model) if is_bundled(model) else path
        assert target is not None
        return TransformersBackend(target, **kw)
    if base_url:
        return OpenAIBackend(model=model, base_url=base_url, **kw, **timeouts)
    is_gguf = path is not None and path.suffix == ".gguf" and path.is_file()
    if kind in ("llama", "llamacpp") or is_bundled(model) or is_gguf or (model is None and not env_url):
        if model is not None and not (is_bundled(model) or is_gguf):
            raise BackendError(f"{model!r} is neither a bundled model name nor a .gguf file")
        return bundled_backend(str(path) if is_gguf else model, **kw, **timeouts)
    return OpenAIBackend(model=model, base_url=env_url, **kw, **timeouts)


async def close_backend(backend: Backend) -> None:
    """Close ``backend`` and stop the model server it started (if any), even when closing fails."""
    try:
        await backend.aclose()
    finally:
        server = getattr(backend, "server", None)
        if server is not None and hasattr(server, "stop"):
            await asyncio.to_thread(server.stop)
