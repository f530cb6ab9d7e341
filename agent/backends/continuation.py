"""Continuing a partial assistant turn on an OpenAI-compatible server: the model's own chat template,
and the capability probe that decides how a trajectory goes on after a code output.

Tool-integrated models (ToRA, Qwen2.5-Math TIR, ...) are trained to see the output block appended to
*their own* assistant message and to continue it. A message list ending in
``{"role": "assistant", "content": ..., "partial": True}`` is sent in one of three ways:

* ``chat`` (*chat-continue*): ``/v1/chat/completions`` with the partial message last and vLLM's extra
  fields ``continue_final_message: true, add_generation_prompt: false`` (the server renders the
  chat with the model's template and leaves the last message open).
* ``completions`` (*completions-template*): ``/v1/completions`` with the prompt rendered here by the
  model's own chat template (:class:`ChatTemplate`: from the GGUF metadata, the tokenizer files of a
  local folder or a cached hub id, or llama.cpp's ``/props``), the way transformers renders it
  (``continue_final_message=True``). Byte-exact: what the authors' harnesses send to vLLM's
  ``generate``.
* ``user`` (fallback): no continuation; the trace format puts each output block in a new user
  message. Always logged as a WARNING, and recorded in the trace (``meta.continuation``) and the run
  header, so that a score says how it was produced.

:func:`probe` decides (``auto``), once per process per (base URL, model): it reads ``/v1/models``
(vLLM: ``max_model_len``, ``root``), ``/props`` (llama.cpp's own server: ``n_ctx``,
``chat_template``), looks for the chat template, checks that ``/v1/completions`` answers, and else
tries a one-token chat request with ``continue_final_message`` and checks that the server honoured it
(its prompt is shorter than the same chat with the last message closed). The cache lives in memory:
a server restarted with other flags or another model at the same URL must not be judged by a stale
answer from disk, and the probe costs at most four one-token requests.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from mathagent.agent.backends.base import BackendError, Message

log = logging.getLogger(__name__)

CONTINUE_MODES = ("auto", "chat", "completions", "user")
"""``--continue-mode`` choices; ``auto`` probes the server."""
MODE_LABELS = {
    "chat": "chat-continue",
    "completions": "completions-template",
    "user": "user-message fallback",
}

DEFAULT_CONTEXT = 4096
"""The context budget when neither the user nor the server gives one."""


def check_mode(mode: str | None) -> str:
    """``mode`` (``None``: ``auto``) if it is one of :data:`CONTINUE_MODES`; ``BackendError`` otherwise."""
    mode = (mode or "auto").lower()
    if mode not in CONTINUE_MODES:
        raise BackendError(f"unknown continue mode {mode!r}; use one of {', '.join(CONTINUE_MODES)}")
    return mode


def is_partial(messages: Sequence[Message]) -> bool:
    """Whether the last message is an unfinished assistant turn (``"partial": True``)."""
    return bool(messages) and messages[-1].get("role") == "assistant" and bool(messages[-1].get("partial"))


def template_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The messages as a chat template sees them: our ``partial`` marker and ``None`` values dropped."""
    keep = ("role", "content", "name", "tool_calls", "tool_call_id")
    return [{k: v for k, v in m.items() if k in keep and v is not None} for m in messages]


# -- the model's chat template -----------------------------------------------------------------------


@dataclass(frozen=True)
class ChatTemplate:
    """A model's Jinja chat template and the special tokens it may use, rendered like transformers."""

    template: str
    special_tokens: tuple[tuple[str, str], ...] = ()
    """``bos_token``, ``eos_token``, ... as the template sees them (transformers passes these)."""
    source: str = ""
    """Where the template came from (for logs and the run header)."""

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The prompt for ``messages``: a final ``partial`` assistant message is left open (exactly its
        content, whitespace included: ``continue_final_message``); otherwise, with
        ``add_generation_prompt``, the template's opening of a new assistant turn is appended."""
        from transformers.utils.chat_template_utils import render_jinja_template

        partial = is_partial(messages)
        kwargs: dict[str, Any] = dict(self.special_tokens)  # as transformers passes special_tokens_map
        try:
            out: Any = render_jinja_template(
                conversations=[template_messages(messages)],
                chat_template=self.template,
                continue_final_message=partial,
                add_generation_prompt=add_generation_prompt and not partial,
                **kwargs,
            )
            rendered = out[0]
        except Exception as e:  # noqa: BLE001 - jinja errors, raise_exception() in templates
            raise BackendError(f"the chat template from {self.source or 'the model'} failed: {e}") from e
        return str(rendered[0])

    def __call__(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        return self.render(messages, add_generation_prompt)


def _special(pairs: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, str(v)) for k, v in pairs.items() if isinstance(v, str) and v))


def template_from_vocab(vocab: Any, source: str) -> ChatTemplate | None:
    """The template stored in a GGUF file (``tokenizer.chat_template``), from its vocabulary-only
    ``llama_cpp.Llama``; ``None`` when the file has none (base models)."""
    meta = getattr(vocab, "metadata", None) or {}
    text = meta.get("tokenizer.chat_template")
    if not text:
        return None
    tokens: dict[str, str] = {}
    for name, get in (("bos_token", "token_bos"), ("eos_token", "token_eos")):
        try:
            tid = getattr(vocab, get)()
            if tid is not None and tid >= 0:
                tokens[name] = vocab._model.token_get_text(tid)
        except Exception:  # noqa: BLE001 - a template without these tokens still renders
            pass
    return ChatTemplate(str(text), _special(tokens), source)


@functools.lru_cache(maxsize=16)
def template_from_gguf(path: str) -> ChatTemplate | None:
    """The chat template in a GGUF file's metadata (cached per path)."""
    from mathagent.agent.llama_server import load_vocab  # lazy: llama_cpp is optional

    return template_from_vocab(load_vocab(path), f"GGUF metadata of {Path(path).name}")


def _tokenizer_files(name: str) -> bool:
    """Whether ``name`` is a local folder with tokenizer files or a hub id whose tokenizer is cached."""
    p = Path(name).expanduser()
    if p.is_dir():
        return (p / "tokenizer_config.json").is_file() or (p / "chat_template.jinja").is_file()
    if name.count("/") != 1 or name.startswith((".", "/")):
        return False
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(name, "tokenizer_config.json")
    return isinstance(found, str)


@functools.lru_cache(maxsize=16)
def template_from_tokenizer(name: str) -> ChatTemplate | None:
    """The chat template of the tokenizer in folder ``name`` or cached hub id ``name`` (offline;
    cached per name); ``None`` when there are no such files or they hold no template."""
    if not _tokenizer_files(name):
        return None
    from transformers import AutoTokenizer

    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        tok = AutoTokenizer.from_pretrained(
            str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name, local_files_only=True
        )
    except Exception as e:  # noqa: BLE001 - unreadable files: no template from here
        log.info("no tokenizer loaded from %s: %s", name, e)
        return None
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old
    text = getattr(tok, "chat_template", None)
    if not isinstance(text, str) or not text:
        return None
    return ChatTemplate(text, _special(dict(tok.special_tokens_map)), f"tokenizer files of {name}")


def template_from(source: str | os.PathLike[str]) -> ChatTemplate:
    """A template from what a user names: a ``.gguf`` file, a ``.jinja`` file, a tokenizer folder or
    a cached hub id; ``BackendError`` when none is found there."""
    s = str(source)
    p = Path(s).expanduser()
    found: ChatTemplate | None = None
    if p.suffix == ".gguf" and p.is_file():
        found = template_from_gguf(str(p))
    elif p.suffix == ".jinja" and p.is_file():
        found = ChatTemplate(p.read_text(encoding="utf-8"), (), f"template file {p}")
    else:
        found = template_from_tokenizer(s)
    if found is None:
        raise BackendError(
            f"no chat template found in {s!r} (a .gguf file, a .jinja file, a tokenizer folder or a "
            "hub id whose tokenizer is in the local cache)"
        )
    return found


# -- what a server says about itself -----------------------------------------------------------------


@dataclass(frozen=True)
class ServerInfo:
    """What ``/v1/models`` and ``/props`` told about a server."""

    base_url: str
    kind: str = "unknown"
    """``vllm``, ``llama.cpp`` (its own server), ``llama-cpp-python``, ``openai`` or ``unknown``."""
    models: tuple[str, ...] = ()
    root: str | None = None
    """vLLM: the model's path or hub id (``--model``), where its tokenizer files are."""
    context_length: int | None = None
    context_source: str = ""
    template: ChatTemplate | None = None
    """llama.cpp's ``/props`` ``chat_template``."""


def _root_url(base_url: str) -> str:
    u = base_url.rstrip("/")
    return u[: -len("/v1")] if u.endswith("/v1") else u


def _int(value: Any) -> int | None:
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def inspect_server(client: httpx.Client, base_url: str, model: str | None) -> ServerInfo:
    """Read ``/v1/models`` (``BackendError`` when the server does not answer it) and ``/props``."""
    base = base_url.rstrip("/")
    try:
        r = client.get(f"{base}/models")
    except httpx.HTTPError as e:
        raise BackendError(f"cannot reach {base}/models to probe the server: {e}") from e
    if r.status_code != 200:
        raise BackendError(f"{base}/models answered HTTP {r.status_code}: {r.text[:200]!r}")
    try:
        data = r.json().get("data") or []
    except (ValueError, AttributeError):
        raise BackendError(f"{base}/models did not answer JSON: {r.text[:200]!r}") from None
    cards = [d for d in data if isinstance(d, dict)]
    card = next((d for d in cards if d.get("id") == model), cards[0] if cards else {})
    owner = str(card.get("owned_by") or "")
    host = urlparse(base).hostname or ""
    kind = (
        "vllm"
        if owner == "vllm"
        else "openai"
        if host == "api.openai.com"
        else "llama.cpp"
        if owner == "llamacpp"
        else "llama-cpp-python"
        if owner == "me"
        else "unknown"
    )
    ctx = _int(card.get("max_model_len"))
    info: dict[str, Any] = {
        "base_url": base,
        "kind": kind,
        "models": tuple(str(d.get("id")) for d in cards),
        "root": str(card["root"]) if card.get("root") else None,
        "context_length": ctx,
        "context_source": f"{'vLLM ' if kind == 'vllm' else ''}/v1/models max_model_len" if ctx else "",
    }
    if kind not in ("vllm", "openai"):
        props = _props(client, _root_url(base))
        if props is not None:
            info["kind"] = "llama.cpp"
            settings = props.get("default_generation_settings") or {}
            n_ctx = _int(settings.get("n_ctx") if isinstance(settings, dict) else None) or _int(
                props.get("n_ctx")
            )
            if n_ctx:
                info.update(context_length=n_ctx, context_source="llama.cpp /props n_ctx")
            text = props.get("chat_template")
            if isinstance(text, str) and text:
                tokens = {k: props.get(k) for k in ("bos_token", "eos_token")}
                info["template"] = ChatTemplate(text, _special(tokens), "llama.cpp /props chat_template")
    return ServerInfo(**info)


def _props(client: httpx.Client, root: str) -> dict[str, Any] | None:
    try:
        r = client.get(f"{root}/props")
        body = r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return (
        body
        if isinstance(body, dict) and ("default_generation_settings" in body or "n_ctx" in body)
        else None
    )


def completions_answer(client: httpx.Client, base_url: str, model: str) -> tuple[bool, str]:
    """Whether ``/v1/completions`` answers a one-token request (and why not)."""
    body = {"model": model, "prompt": "1", "max_tokens": 1, "temperature": 0}
    try:
        r = client.post(f"{base_url.rstrip('/')}/completions", json=body)
        ok = r.status_code == 200 and bool(r.json().get("choices"))
    except (httpx.HTTPError, ValueError, AttributeError) as e:
        return False, f"/v1/completions failed: {e}"
    return ok, "" if ok else f"/v1/completions answered HTTP {r.status_code}"


PROBE_CHAT = [{"role": "user", "content": "Say OK."}, {"role": "assistant", "content": "O"}]


def chat_continue_honoured(client: httpx.Client, base_url: str, model: str) -> tuple[bool, str]:
    """Whether the chat endpoint continues a final assistant message when asked to
    (``continue_final_message``): the same two messages, once left open and once closed, one token
    each; a server that honours the fields reads a shorter prompt for the open one."""
    url = f"{base_url.rstrip('/')}/chat/completions"
    base = {"model": model, "messages": PROBE_CHAT, "max_tokens": 1, "temperature": 0}
    counts = []
    for extra in (
        {"continue_final_message": True, "add_generation_prompt": False},
        {"continue_final_message": False, "add_generation_prompt": False},
    ):
        try:
            r = client.post(url, json={**base, **extra})
        except httpx.HTTPError as e:
            return False, f"the chat probe failed: {e}"
        if r.status_code != 200:
            return False, f"the chat endpoint refused continue_final_message (HTTP {r.status_code})"
        try:
            counts.append(int(r.json()["usage"]["prompt_tokens"]))
        except (ValueError, KeyError, TypeError):
            return False, "the chat endpoint reports no prompt_tokens to check continue_final_message"
    if counts[0] < counts[1]:
        return True, ""
    return (
        False,
        f"the chat endpoint ignored continue_final_message (prompt {counts[0]} vs {counts[1]} tokens)",
    )


# -- the decision ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Continuation:
    """How a partial assistant turn goes on, and why: recorded in traces and run headers."""

    mode: str
    """``chat``, ``completions`` or ``user``."""
    reason: str
    requested: str = "auto"
    template_source: str | None = None
    server: str = "unknown"
    context_length: int | None = None
    context_source: str = ""
    template: ChatTemplate | None = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        return MODE_LABELS.get(self.mode, self.mode)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("template", None)
        d["label"] = self.label
        return d

    def describe(self) -> str:
        """One line for the terminal and the log."""
        ctx = (
            f"context {self.context_length} tokens ({self.context_source})"
            if self.context_length
            else f"context unknown (budget {DEFAULT_CONTEXT})"
        )
        return f"continue mode {self.label} ({self.reason}); {ctx}"


_CACHE: dict[tuple[Any, ...], Continuation] = {}
_CACHE_LOCK = threading.Lock()


def probe(
    base_url: str,
    model: str,
    *,
    requested: str = "auto",
    api_key: str | None = None,
    template: ChatTemplate | None = None,
    template_hint: str | None = None,
    known_server: str | None = None,
    context_length: int | None = None,
    context_source: str = "",
    timeout: float = 30.0,
) -> Continuation:
    """Decide how ``model`` on ``base_url`` continues a partial assistant turn (cached per process).

    ``template``: the model's template when the caller knows it (a GGUF it serves); ``template_hint``:
    a tokenizer folder / hub id / file to take it from. ``known_server``: the kind of a server
    mathagent started itself (nothing about it needs probing over HTTP). ``context_length``: the
    context the caller knows (the ``n_ctx`` it started the server with)."""
    requested = check_mode(requested)
    key = (
        base_url.rstrip("/"),
        model,
        requested,
        template.source if template else None,
        template_hint,
        known_server,
    )
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        found = _decide(
            base_url, model, requested, api_key, template, template_hint, known_server, timeout,
            context_length, context_source,
        )  # fmt: skip
        _CACHE[key] = found
    level = logging.WARNING if found.mode == "user" else logging.INFO
    log.log(level, "%s %s: %s", base_url, model, found.describe())
    return found


def clear_cache() -> None:
    """Forget every probe (tests; a server restarted with other flags)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _decide(
    base_url: str,
    model: str,
    requested: str,
    api_key: str | None,
    template: ChatTemplate | None,
    template_hint: str | None,
    known_server: str | None,
    timeout: float,
    context_length: int | None,
    context_source: str,
) -> Continuation:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(timeout=timeout, headers=headers) as client:
        if known_server:
            info = ServerInfo(base_url, kind=known_server, models=(model,))
        else:
            info = inspect_server(client, base_url, model or None)
        model = model or (info.models[0] if info.models else "")
        ctx, ctx_src = (
            (context_length, context_source) if context_length else (info.context_length, info.context_source)
        )
        tmpl = template
        if tmpl is None and template_hint:
            tmpl = template_from(template_hint)
        for name in (model, info.root):
            if tmpl is None and name:
                tmpl = template_from_tokenizer(name)
        tmpl = tmpl or info.template
        src = tmpl.source if tmpl else None

        def made(mode: str, reason: str, with_template: bool = False) -> Continuation:
            return Continuation(
                mode,
                reason,
                requested=requested,
                template_source=src,
                server=info.kind,
                context_length=ctx,
                context_source=ctx_src,
                template=tmpl if with_template else None,
            )

        if requested == "user":
            return made("user", "asked for with --continue-mode user")
        if requested == "completions":
            if tmpl is None:
                raise BackendError(
                    f"--continue-mode completions needs {model!r}'s chat template, and none was found: not a "
                    "GGUF mathagent serves, not a local tokenizer folder or cached hub id"
                    + (f" (nor vLLM's root {info.root!r})" if info.root else "")
                    + ", and the server's /props has none"
                )
            return made("completions", f"asked for; template from {src}", True)
        if requested == "chat":
            return made("chat", "asked for with --continue-mode chat")

        # auto
        why: list[str] = []
        if tmpl is not None:
            if known_server:
                ok, err = True, ""
            else:
                ok, err = completions_answer(client, base_url, model)
            if ok:
                return made("completions", f"/v1/completions with the chat template from {src}", True)
            why.append(err)
        else:
            why.append(
                "no chat template found for the model (no GGUF served by mathagent, no local tokenizer files)"
            )
        if info.kind == "llama-cpp-python":
            why.append("llama-cpp-python's chat endpoint cannot continue an assistant message")
        elif info.kind == "openai":
            why.append("OpenAI's API cannot continue an assistant message")
        else:
            ok, err = chat_continue_honoured(client, base_url, model)
            if ok:
                return made("chat", "the chat endpoint honours continue_final_message")
            why.append(err)
        reasons = "; ".join(w for w in why if w)
        return made(
            "user",
            f"cannot continue the assistant turn: {reasons}; code outputs go back as new user messages",
        )


# -- the loop's side: a trajectory as a partial assistant message ------------------------------------


class _Capture:
    """A ``render_chat`` that renders nothing and keeps the messages it was given."""

    def __init__(self) -> None:
        self.messages: list[Message] | None = None

    def __call__(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        self.messages = [dict(m) for m in messages]  # type: ignore[misc]
        return ""


def partial_messages(fmt: Any, problem: str, steps: Sequence[Any], system_prompt: str) -> Any:
    """The prompt of a trace format as a message list ending in a ``partial`` assistant message.

    A format that continues a raw prompt builds ``render_chat(head) + assistant_text``; with a
    capturing ``render_chat`` the head comes back as messages and the text as the open assistant
    message. A format that never renders a raw prompt (native tool calls) returns its own messages.
    """
    capture = _Capture()
    out = fmt.build_prompt(problem, steps, system_prompt, render_chat=capture)
    if capture.messages is None or not isinstance(out, str):
        return out
    return [*capture.messages, {"role": "assistant", "content": out, "partial": True}]
