"""The OpenAI-compatible backend: OpenAI, vLLM, llama.cpp's server, Ollama — anything speaking ``/v1``.

* A ``str`` prompt goes to ``/v1/completions`` (raw-prompt models, continuing a rendered chat);
  a message list goes to ``/v1/chat/completions``. A message list whose last message is
  ``{"role": "assistant", "partial": True, ...}`` is continued as :meth:`prepare` decided
  (:mod:`.continuation`: ``continue_mode`` ``auto`` probes the server once): ``completions``
  renders it with the model's own chat template (:attr:`render_chat`) and sends it to
  ``/v1/completions``; ``chat`` sends it to ``/v1/chat/completions`` with
  ``continue_final_message=true, add_generation_prompt=false``; ``user`` (logged as a WARNING) leaves
  the trace format to send code outputs as user messages. :meth:`prepare` also reads the server's
  context length when ``context_window`` is not given.
* Native tool calls: ``params.tools`` are passed through; ``Completion.tool_calls`` comes back.
* k samples: servers that honour ``n`` (OpenAI) get one request; others (llama.cpp ignores ``n``) get
  ``n`` parallel requests, with ``seed + i`` for sample ``i`` when a seed is given. Missing choices
  are always topped up with extra requests.
* Every request is streamed (``stream=True``; ``stream=False`` in the constructor turns that off),
  so that a slow server is told from a stuck one by progress: the wait for the first generated
  token is bounded by the *request timeout* (default :func:`default_request_timeout` of the call's
  ``max_tokens``; ``request_timeout=``, env ``MATHAGENT_REQUEST_TIMEOUT``, CLI ``--request-timeout``),
  and after it the silence between two events by the *stall timeout* (default 60 s;
  ``stall_timeout=``, env ``MATHAGENT_STALL_TIMEOUT``), which also bounds the wait for the response
  headers (streaming servers send them when they take the request, before any queueing or prompt
  processing: llama.cpp's server, vLLM, OpenAI). The total length of a generation is not
  limited: one that is still producing tokens is never thrown away. Keep-alive comments (llama.cpp's
  ``: ping``) are not progress. A stream that ends before every choice finished is a failure.
  With a ``progress`` probe (servers mathagent started: :mod:`.progress`), a silence that reaches
  the stall timeout is forgiven while the server's process is working, up to the request timeout.
  With ``on_text`` the text pieces of the first sample are passed to it as they arrive.
* Retries: :mod:`.retry` (the client's own ``max_retries`` is 0; ``Retry-After`` is honoured, capped);
  at most ``max_concurrency`` requests in flight. ``retry_log`` keeps the last waits. A server that
  refuses every connection past the last try gets ``RetryPolicy.unreachable_s`` (env
  ``MATHAGENT_SERVER_PATIENCE``) to come back, then ``ServerGone`` stops the run (as for a crash of the server mathagent started).
* ``count_tokens``: the GGUF vocabulary (loaded vocab-only through llama_cpp) when a ``gguf_path``
  is known, else an estimate of ``ceil(len(text) / 3.5)``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mathagent.agent.backends.base import (
    BackendError,
    Completion,
    GenerationParams,
    Message,
    Prompt,
    ServerGone,
    TokenCallback,
    ToolCall,
)
from mathagent.agent.backends.continuation import (
    ChatTemplate,
    Continuation,
    check_mode,
    is_partial,
    probe,
    template_from_vocab,
)
from mathagent.agent.backends.patience import Patience, Watch
from mathagent.agent.backends.progress import Forgiven, ProgressProbe, SilenceWatch
from mathagent.agent.backends.retry import (
    GarbageResponse,
    RetryEvent,
    RetryPolicy,
    WaitFn,
    call_with_retries,
    connect_failed,
    is_retryable,
    status_of,
)
from mathagent.agent.backends.streaming import Deadline, StreamState
from mathagent.agent.llama_server import load_vocab

log = logging.getLogger(__name__)

LOCAL_KEY = "sk-no-key-required"
"""Placeholder API key sent to local servers, which ignore it (the client refuses an empty key)."""

CHARS_PER_TOKEN = 3.5

REQUEST_TIMEOUT_ENV = "MATHAGENT_REQUEST_TIMEOUT"
STALL_TIMEOUT_ENV = "MATHAGENT_STALL_TIMEOUT"
SERVER_PATIENCE_ENV = "MATHAGENT_SERVER_PATIENCE"
"""Seconds a server that refuses every connection gets to come back (``RetryPolicy.unreachable_s``)."""
DEFAULT_STALL_TIMEOUT = 60.0
"""Seconds without a streamed event, once the answer started, after which a request counts as stuck."""
REQUEST_TIMEOUT_HELP = (
    "seconds a model call may wait for its first token (default: 60 + 1 per max token; "
    "env MATHAGENT_REQUEST_TIMEOUT)"
)
FIRST_TOKEN_BASE_S = 60.0
DRAIN_S = 2.0
"""Seconds to wait for the end of a stream's body after its ``[DONE]`` event."""
SLOWEST_TOKENS_PER_S = 1.0


def default_request_timeout(max_tokens: int) -> float:
    """The default wait for a request's first token, once the server took the request (sent its
    headers): 60 s plus one ``max_tokens``-long generation at 1 token/s (1024 tokens: 1084 s; 256
    tokens: 316 s). Generous on purpose: a serial server (llama.cpp) holds a request behind the
    ones before it, and on a loaded machine a small model was measured below 1 token/s; retrying a
    queued request only sends it to the back of the queue. A dead server is caught earlier, by the
    stall timeout on the headers."""
    return FIRST_TOKEN_BASE_S + max(1, max_tokens) / SLOWEST_TOKENS_PER_S


def check_seconds(value: Any, what: str) -> float:
    """``value`` as a positive, finite number of seconds; ``BackendError`` naming ``what`` otherwise."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise BackendError(f"{what} must be a number of seconds, not {value!r}") from None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise BackendError(f"{what} must be a positive number of seconds, not {value!r}")
    return seconds


def seconds_from_env(name: str) -> float | None:
    """A positive number of seconds from env ``name``; ``None`` when unset or empty."""
    raw = os.environ.get(name, "").strip()
    return check_seconds(raw, f"env {name}") if raw else None


def positive_seconds(text: str) -> float:
    """``argparse`` type for timeout flags (``--request-timeout``): a positive number of seconds."""
    try:
        return check_seconds(text, "the timeout")
    except BackendError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class RequestTimeout(TimeoutError):
    """No first token within the request timeout (retried like any timeout)."""


class StallTimeout(TimeoutError):
    """A started stream went silent for longer than the stall timeout (retried like any timeout)."""


class StuckRequest(TimeoutError):
    """No headers or first token long after this server's usual latency, while requests sent later
    were answered (see :mod:`.patience`; retried like any timeout)."""


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def is_local_url(url: str | None) -> bool:
    host = (urlparse(url).hostname or "") if url else ""
    return host in ("localhost", "127.0.0.1", "::1", "0.0.0.0") or host.endswith(".local")


class OpenAIBackend:
    """An OpenAI-compatible chat/completions client with retries, timeouts and a concurrency limit."""

    name = "openai"

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        default_format: str = "markdown",
        context_window: int | None = None,
        request_timeout: float | None = None,
        stall_timeout: float | None = None,
        timeout: float | None = None,
        stream: bool = True,
        max_concurrency: int = 8,
        retry: RetryPolicy | None = None,
        wait: WaitFn | None = None,
        native_n: bool | None = None,
        chat_template: str | os.PathLike[str] | ChatTemplate | None = None,
        continue_mode: str | None = "auto",
        gguf_path: str | os.PathLike[str] | None = None,
        server: Any = None,
        server_kind: str | None = None,
        progress: ProgressProbe | None = None,
    ) -> None:
        """
        Args:
            model: model id sent with each request; ``None``: env ``OPENAI_MODEL``, else the first
                model the server lists.
            base_url: ``None``: env ``OPENAI_BASE_URL``, else OpenAI's own.
            api_key: ``None``: env ``OPENAI_API_KEY``; a placeholder when the base URL is local.
            request_timeout: longest wait for a request's first token (a whole unstreamed request);
                ``None``: env ``MATHAGENT_REQUEST_TIMEOUT``, else :func:`default_request_timeout`.
            stall_timeout: longest silence of a started stream; ``None``: env
                ``MATHAGENT_STALL_TIMEOUT``, else 60 s.
            timeout: older name of ``request_timeout``.
            stream: stream every request (progress tells slow from stuck); ``False`` for servers
                that cannot stream (then ``request_timeout`` bounds the whole request).
            native_n: whether the server honours ``n``; ``None``: only api.openai.com is trusted.
            chat_template: the model's chat template: a :class:`ChatTemplate`, or where to find it (a
                ``.gguf`` or ``.jinja`` file, a tokenizer folder, a cached hub id); ``None``: the
                served GGUF's, else the probe looks for it (model id, vLLM's ``root``, ``/props``).
            continue_mode: how a partial assistant turn goes on: ``auto`` (probe the server),
                ``chat``, ``completions`` or ``user`` (see :mod:`.continuation`).
            gguf_path: the served GGUF file, for exact ``count_tokens`` and its chat template.
            server: a :class:`~mathagent.agent.llama_server.LlamaServer` this backend keeps alive.
            server_kind: the kind of a server mathagent started itself (``llama-cpp-python``, ``llama-server``): no
                probing over HTTP.
            progress: a probe of the server's activity (:mod:`.progress`; for a server mathagent
                started, the busy time of its process): a silence longer than the stall timeout
                is forgiven while the server is working, up to the request timeout. ``None``
                (remote servers): every such silence is a stall.
            timeout: seconds one request may take; ``None``: env ``MATHAGENT_REQUEST_TIMEOUT``, else 300
                (a busy 2-core machine can need more for one long call, e.g. ``--mode cot``).
        """
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if self.base_url:
                key = LOCAL_KEY
                if not is_local_url(self.base_url):
                    log.info("no OPENAI_API_KEY set for %s; sending a placeholder key", self.base_url)
            else:
                raise BackendError("no API key: set OPENAI_API_KEY, or give a base URL of a local server")
        self.api_key = key
        self.model = model or os.environ.get("OPENAI_MODEL") or ""
        self.default_format = default_format
        self.context_window = context_window
        self.context_source = "given" if context_window else ""
        """Where ``context_window`` came from (the constructor, the server, ...)."""
        explicit = request_timeout if request_timeout is not None else timeout
        self.request_timeout: float | None = (
            check_seconds(explicit, "request_timeout")
            if explicit is not None
            else seconds_from_env(REQUEST_TIMEOUT_ENV)
        )
        self.stall_timeout: float = (
            check_seconds(stall_timeout, "stall_timeout")
            if stall_timeout is not None
            else (seconds_from_env(STALL_TIMEOUT_ENV) or DEFAULT_STALL_TIMEOUT)
        )
        self.stream = stream
        self.progress = progress
        self.forgiven: deque[Forgiven] = deque(maxlen=1000)
        """The last silences forgiven because the server was working (needs ``progress``)."""
        self.patience = Patience()
        """Recent latencies of this server: a request far slower than them, overtaken by later ones,
        is given up before the fixed timeouts (see :mod:`.patience`)."""
        self.max_concurrency = max(1, max_concurrency)
        if retry is None:  # env MATHAGENT_SERVER_PATIENCE: e.g. longer for a server that restarts slowly
            patience = seconds_from_env(SERVER_PATIENCE_ENV)
            retry = RetryPolicy() if patience is None else RetryPolicy(unreachable_s=patience)
        self.retry = retry
        self.wait = wait
        self.retry_log: deque[RetryEvent] = deque(maxlen=1000)
        """The last retries: what failed, how, and how long the backend waited before the next try."""
        host = urlparse(self.base_url).hostname if self.base_url else "api.openai.com"
        self.native_n = native_n if native_n is not None else host == "api.openai.com"
        self.stream_usage = host == "api.openai.com"
        """Ask for token usage in streams (``stream_options``); not every server knows the option."""
        self.gguf_path = Path(gguf_path) if gguf_path else None
        self.server = server
        self.server_kind = server_kind
        self.continue_mode = check_mode(continue_mode)
        self.chat_template = chat_template
        self.continuation: Continuation | None = None
        """How a partial assistant turn goes on; set by :meth:`prepare` (``None`` before)."""
        self._prepare_lock = threading.Lock()
        self._warned_partial = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._stale: list[Any] = []
        self._sem: asyncio.Semaphore | None = None
        self._vocab: Any = None

    @property
    def timeout(self) -> float | None:
        """The explicit request timeout (``None``: derived from each call's ``max_tokens``)."""
        return self.request_timeout

    def first_token_timeout(self, max_tokens: int) -> float:
        """Seconds a call of ``max_tokens`` may wait for its first token."""
        return self.request_timeout or default_request_timeout(max_tokens)

    # -- continuing a partial assistant turn ------------------------------------------------------

    def prepare(self) -> Continuation:
        """Decide (once; the probe is cached per process and base URL) how a partial assistant turn
        goes on, and take the context length from the server when none was given. Blocking (a few
        small HTTP requests on the first call); ``BackendError`` when the server cannot be probed."""
        with self._prepare_lock:
            if self.continuation is not None:
                return self.continuation
            tmpl = self.chat_template if isinstance(self.chat_template, ChatTemplate) else None
            hint = None if tmpl is not None or self.chat_template is None else str(self.chat_template)
            if tmpl is None and hint is None and self.gguf_path is not None:
                vocab = self._load_vocab()
                if vocab is not None:
                    tmpl = template_from_vocab(vocab, f"GGUF metadata of {self.gguf_path.name}")
            ctx_src = self.context_source
            if self.server is not None and self.context_window:
                ctx_src = "the n_ctx mathagent started the llama.cpp server with"
            cont = probe(
                self.base_url or "https://api.openai.com/v1",
                self.model,
                requested=self.continue_mode,
                api_key=self.api_key,
                template=tmpl,
                template_hint=hint,
                known_server=self.server_kind,
                context_length=self.context_window,
                context_source=ctx_src,
                timeout=min(self.stall_timeout, 30.0),
            )
            if self.context_window is None and cont.context_length:
                self.context_window = cont.context_length
            self.context_source = cont.context_source
            self.continuation = cont
            return cont

    @property
    def render_chat(self) -> ChatTemplate:
        """The model's chat template as ``render_chat(messages) -> str`` (a final ``partial`` assistant
        message is left open), when partial turns continue through ``/v1/completions``; otherwise
        ``AttributeError`` (``getattr(backend, "render_chat", None)`` is ``None``)."""
        cont = self.continuation or self.prepare()
        if cont.mode != "completions" or cont.template is None:
            raise AttributeError(f"render_chat: the continue mode is {cont.label}")
        return cont.template

    @property
    def continues_partial(self) -> bool:
        """Whether this backend continues a message list ending in a ``partial`` assistant message
        itself (``chat`` or ``completions`` mode); the loop then sends it such lists."""
        return (self.continuation or self.prepare()).mode in ("chat", "completions")

    # -- plumbing ---------------------------------------------------------------------------------

    def _bind(self) -> tuple[Any, asyncio.Semaphore]:
        """The client and semaphore of the running event loop (recreated when the loop changes)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop or self._sem is None:
            from openai import AsyncOpenAI

            if self._client is not None:
                # A client of an earlier (now closed) event loop cannot be closed any more; keep a few
                # alive so their pooled connections are not garbage-collected noisily on a dead loop.
                self._stale = [*self._stale[-7:], self._client]

            # No client-side timeout: every await on the wire is bounded by our own deadlines.
            self._client = AsyncOpenAI(
                api_key=self.api_key, base_url=self.base_url, timeout=None, max_retries=0
            )
            self._sem = asyncio.Semaphore(self.max_concurrency)
            self._loop = loop
        return self._client, self._sem

    async def _resolve_model(self) -> str:
        if self.model:
            return self.model
        client, _ = self._bind()

        async def first() -> str:
            page = await asyncio.wait_for(client.models.list(), timeout=self.stall_timeout)
            ids = [m.id for m in page.data]
            if not ids:
                raise GarbageResponse("server lists no models")
            return str(ids[0])

        self.model = await call_with_retries(
            first, what="listing models", policy=self.retry, wait=self.wait, on_retry=self.retry_log.append
        )
        return self.model

    # -- the Backend protocol ---------------------------------------------------------------------

    async def generate(
        self, prompt: Prompt, params: GenerationParams, *, on_text: TokenCallback | None = None
    ) -> list[Completion]:
        model = await self._resolve_model()
        extra: dict[str, Any] = {}
        if not isinstance(prompt, str) and is_partial(prompt):
            cont = (
                self.continuation if self.continuation is not None else await asyncio.to_thread(self.prepare)
            )
            if cont.mode == "completions" and cont.template is not None:
                prompt = cont.template.render(prompt)
                if cont.server == "vllm":  # the template already holds the special tokens
                    extra["add_special_tokens"] = False
            elif cont.mode == "chat":
                if str(prompt[-1].get("content") or ""):
                    extra.update(continue_final_message=True, add_generation_prompt=False)
                else:  # nothing to continue yet: a plain new assistant turn
                    prompt = list(prompt[:-1])
            elif not self._warned_partial:
                self._warned_partial = True
                log.warning(
                    "%s: a partial assistant message goes to the chat endpoint as a finished one (continue "
                    "mode %s): the server will not continue it",
                    self.base_url or "OpenAI",
                    cont.label,
                )
        n = max(1, params.n)
        if self.native_n and n > 1 and on_text is None:
            out = await self._request(model, prompt, params, n=n, seed=params.seed, index=0, extra=extra)
        else:
            out = []
        missing = n - len(out)
        if missing > 0:
            start = len(out)
            tasks = [
                self._request(
                    model,
                    prompt,
                    params,
                    n=1,
                    seed=None if params.seed is None else params.seed + i,
                    index=i,
                    on_text=on_text if i == 0 else None,
                    extra=extra,
                )
                for i in range(start, start + missing)
            ]
            for result in await asyncio.gather(*tasks):
                out.extend(result)
        return out[:n]

    def count_tokens(self, text: str) -> int:
        vocab = self._load_vocab()
        if vocab is not None:
            return len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True))
        return estimate_tokens(text)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close()
            except RuntimeError:  # its loop is already closed
                pass

    # -- one request ------------------------------------------------------------------------------

    def _load_vocab(self) -> Any:
        if self._vocab is None and self.gguf_path is not None:
            try:
                self._vocab = load_vocab(self.gguf_path)
            except Exception as e:  # noqa: BLE001 - fall back to the estimate
                log.warning("cannot load the tokenizer of %s (%s); estimating tokens", self.gguf_path, e)
                self.gguf_path = None
        return self._vocab

    def _kwargs(self, model: str, params: GenerationParams, n: int, seed: int | None) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "model": model,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            kw["stop"] = list(params.stop)
        if seed is not None:
            kw["seed"] = seed
        if n > 1:
            kw["n"] = n
        return kw

    async def _request(
        self,
        model: str,
        prompt: Prompt,
        params: GenerationParams,
        *,
        n: int,
        seed: int | None,
        index: int,
        on_text: TokenCallback | None = None,
        extra: dict[str, Any] | None = None,
    ) -> list[Completion]:
        client, sem = self._bind()
        kw = self._kwargs(model, params, n, seed)
        if extra:
            kw["extra_body"] = dict(extra)
        chat = not isinstance(prompt, str)
        if chat:
            kw["messages"] = [_clean_message(m) for m in prompt]  # type: ignore[union-attr,arg-type]
            if params.tools:
                kw["tools"] = list(params.tools)
        else:
            kw["prompt"] = prompt
        endpoint = client.chat.completions if chat else client.completions
        what = f"{'chat' if chat else 'completion'} request to {self.base_url or 'OpenAI'} (sample {index})"
        first_s = self.first_token_timeout(params.max_tokens)

        async def once() -> list[Completion]:
            async with sem:
                t0 = time.perf_counter()
                if self.stream:
                    comps = await self._stream(endpoint, kw, chat, on_text, first_s)
                else:
                    try:
                        comps = await asyncio.wait_for(self._plain(endpoint, kw, chat), timeout=first_s)
                    except asyncio.TimeoutError:
                        raise RequestTimeout(f"no answer within {first_s:g} s (request timeout)") from None
                    if on_text is not None and comps and comps[0].text:
                        on_text(comps[0].text)
                latency = time.perf_counter() - t0
            return [self._finish(c, prompt, latency) for c in comps]

        async def attempt() -> list[Completion]:
            try:
                return await once()
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as exc:
                gone = await self._server_gone(exc)
                if gone is not None:
                    raise gone from exc  # not retried: nothing would answer
                raise

        return await self._while_reachable(attempt, what)

    async def _while_reachable(
        self, attempt: Callable[[], Awaitable[list[Completion]]], what: str
    ) -> list[Completion]:
        """``call_with_retries``, and past its last try a server that refused every connection gets
        ``retry.unreachable_s`` (from its first refusal) to come back, a restart, before ``ServerGone``
        stops the run: a dead server would otherwise fail every remaining sample of an eval, each after
        all its tries. A try that reaches a server (any answer, a dropped stream) ends the streak."""
        scale = self.retry.scale()
        patience = self.retry.unreachable_s * scale
        refused: list[float] = []  # when each try of the current streak failed to connect

        async def watched() -> list[Completion]:
            try:
                return await attempt()
            except Exception as exc:
                if connect_failed(exc):
                    refused.append(time.monotonic())
                else:
                    refused.clear()
                raise

        while True:
            try:
                return await call_with_retries(
                    watched, what=what, policy=self.retry, wait=self.wait, on_retry=self.retry_log.append
                )
            except ServerGone:
                raise
            except BackendError as err:
                if not refused:  # the last try reached a server (or was not retried): its failure
                    raise
                waited = time.monotonic() - refused[0]
                if waited >= patience:
                    raise ServerGone(
                        f"the model server at {self.base_url or 'OpenAI'} refused every connection for "
                        f"{waited:.0f} s ({len(refused)} tries): it is not running; last: {err}",
                        restarts=self.server is not None,
                    ) from err
                log.warning(
                    "%s: the server refuses connections; trying again for up to %.0f s more",
                    what,
                    patience - waited,
                )
                await asyncio.sleep(min(patience - waited, 5.0 * scale))

    async def _server_gone(self, exc: BaseException) -> ServerGone | None:
        """``ServerGone`` when ``exc`` (a transport failure) came from the server this backend keeps
        alive having exited on its own; ``None`` otherwise (a remote server, or ours still running)."""
        reason_of = getattr(self.server, "exit_reason", None)
        if not callable(reason_of) or not is_retryable(exc):
            return None
        # a dropped connection can come an instant before the server's exit is seen; a server that
        # answered with a status is alive
        reason = await asyncio.to_thread(reason_of, 0.0 if status_of(exc) is not None else 2.0)
        return ServerGone(reason) if reason else None

    def _finish(self, c: Completion, prompt: Prompt, latency: float) -> Completion:
        from dataclasses import replace

        pt, ct = c.prompt_tokens, c.completion_tokens
        if not pt:
            pt = self.count_tokens(prompt if isinstance(prompt, str) else messages_text(prompt))
        if not ct:
            ct = self.count_tokens(c.text)
        return replace(c, prompt_tokens=pt, completion_tokens=ct, latency_s=latency)

    async def _plain(self, endpoint: Any, kw: dict[str, Any], chat: bool) -> list[Completion]:
        resp = await endpoint.create(**kw)
        choices = getattr(resp, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise GarbageResponse(f"response has no choices: {str(resp)[:200]!r}")
        usage = getattr(resp, "usage", None)
        pt = int(getattr(usage, "prompt_tokens", 0) or 0)
        ct = int(getattr(usage, "completion_tokens", 0) or 0)
        out = []
        for ch in sorted(choices, key=lambda c: getattr(c, "index", 0) or 0):
            if chat:
                msg = getattr(ch, "message", None)
                if msg is None:
                    raise GarbageResponse("chat choice without a message")
                text = msg.content or ""
                calls = tuple(
                    ToolCall(
                        id=tc.id or f"call_{i}", name=tc.function.name, arguments=tc.function.arguments or ""
                    )
                    for i, tc in enumerate(getattr(msg, "tool_calls", None) or [])
                    if getattr(tc, "function", None) is not None
                )
            else:
                text, calls = getattr(ch, "text", None), ()
                if text is None:
                    raise GarbageResponse("completion choice without text")
            finish = ch.finish_reason or "stop"
            if calls:
                finish = "tool_calls"
            stop_reason = getattr(ch, "stop_reason", None)  # vLLM reports the matched stop string
            out.append(
                Completion(
                    text=text,
                    finish_reason=finish,
                    stop_string=stop_reason if isinstance(stop_reason, str) else None,
                    tool_calls=calls,
                    prompt_tokens=pt,
                    completion_tokens=ct // len(choices) if len(choices) > 1 else ct,
                )
            )
        return out

    async def _stream(
        self,
        endpoint: Any,
        kw: dict[str, Any],
        chat: bool,
        on_text: TokenCallback | None,
        first_s: float,
    ) -> list[Completion]:
        """One streamed request, read line by line under the request and stall deadlines.

        With a progress probe (:mod:`.progress`), a silence that reaches the stall timeout (before
        the headers, or between two events) is judged by the server's activity: forgiven while the
        server works, up to the request timeout (``first_s``; mid-stream at least the stall timeout).
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + first_s
        headers_by = min(deadline, start + self.stall_timeout)
        cap = max(self.stall_timeout, first_s)  # the longest forgiven silence between two events
        answered = False
        extra: dict[str, Any] = {"stream": True}
        if self.stream_usage:
            extra["stream_options"] = {"include_usage": True}
        state = StreamState(chat, on_text)
        watch: Watch | None = None
        silence: SilenceWatch | None = None
        if self.progress is not None:
            silence = SilenceWatch(
                self.progress,
                self.stall_timeout,
                on_stall=lambda: dl.reschedule(loop.time()),
                on_forgive=self.forgiven.append,
                what=f"{'chat' if chat else 'completion'} request to {self.base_url}",
            )

        def expired() -> TimeoutError:
            if watch is not None and watch.fired:
                return StuckRequest(watch.describe())
            idle = f"; {silence.describe()}" if silence is not None and silence.stalled else ""
            worked = silence is not None and not idle
            if idle and silence is not None:  # judged idle: how long the silence really lasted
                silent = loop.time() - silence.since
                if state.started:
                    return StallTimeout(
                        f"stream stalled: no data for {silent:.0f} s after {state.events} events "
                        f"(stall timeout {self.stall_timeout:g} s{idle})"
                    )
                return StallTimeout(
                    f"no response within {silent:.0f} s (stall timeout {self.stall_timeout:g} s{idle})"
                )
            if state.started:
                if worked:
                    return StallTimeout(
                        f"stream stalled: no data for {cap:g} s after {state.events} events, while the "
                        "server was working (a silence is forgiven up to the request timeout)"
                    )
                return StallTimeout(
                    f"stream stalled: no data for {self.stall_timeout:g} s after {state.events} events "
                    "(stall timeout)"
                )
            if not answered and headers_by < deadline and not worked:
                return StallTimeout(f"no response within {self.stall_timeout:g} s (stall timeout)")
            return RequestTimeout(f"no token within {first_s:g} s (request timeout)")

        # One deadline, moved as the request makes progress: to the headers (a streaming server
        # sends them when it takes the request), then to the first event, then to the last event
        # plus the stall timeout (pings are no progress). With a progress probe, the deadline is the
        # longest a silence may last and the silence watch brings it forward when the server idles.
        cm = endpoint.with_streaming_response.create(**kw, **extra)
        dl = Deadline(deadline if silence is not None else headers_by)
        patience = self.patience
        first_seen = False
        try:
            async with dl:
                if silence is not None and headers_by < deadline:
                    silence.begin("headers", start)
                watch = patience.watch("headers", start, lambda: dl.reschedule(loop.time()))
                resp = await cm.__aenter__()
                watch.cancel()
                patience.record("headers", start, loop.time())
                answered = True
                if silence is not None:
                    silence.pause()  # the first token is bounded by the request timeout
                dl.reschedule(deadline)
                watch = patience.watch("first", start, lambda: dl.reschedule(loop.time()))
                try:
                    async for line in resp.iter_lines():
                        if state.feed(line):
                            now = state.last_event = loop.time()
                            if state.events and not first_seen:  # no longer judged by patience
                                first_seen = True
                                watch.cancel()
                                patience.record("first", start, now)
                                if silence is not None:
                                    silence.begin("stream", now)
                            # after [DONE], only the end of the body is left: reading it lets the
                            # connection be reused (no new TCP/TLS handshake for the next request)
                            if state.done:
                                if silence is not None:
                                    silence.close()
                                dl.reschedule(now + DRAIN_S)
                            elif silence is not None:
                                silence.heard(now)
                                dl.reschedule(now + cap)
                            else:
                                dl.reschedule(now + self.stall_timeout)
                finally:
                    await cm.__aexit__(None, None, None)
        except TimeoutError:
            if dl.expired() and state.done:
                return state.completions()  # a server that keeps the stream open after [DONE]
            if dl.expired():
                raise expired() from None
            raise
        finally:
            if watch is not None:
                watch.cancel()
            if silence is not None:
                silence.close()
        return state.completions()

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r})"


def _clean_message(m: Message) -> dict[str, Any]:
    """Drop keys OpenAI-compatible servers do not know (e.g. our ``partial`` marker)."""
    return {k: v for k, v in m.items() if k in ("role", "content", "name", "tool_calls", "tool_call_id")}


def messages_text(messages: Sequence[Message]) -> str:
    return "\n".join(str(m.get("content") or "") for m in messages)
