"""Hugging Face hub model ids (``owner/name``) resolved offline, from the local Hugging Face cache only.

``mathagent solve|repl|eval --model owner/name`` and ``mathagent train sft|grpo --model owner/name`` take a
hub id when its snapshot is in the cache (``HF_HOME`` / ``HF_HUB_CACHE``, where ``hf download`` or
``snapshot_download`` put it). Nothing is ever downloaded here: a missing id is a :class:`NotCachedError`
that says so and how to fetch it where the network is.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


class NotCachedError(FileNotFoundError):
    """A hub model id whose snapshot (with ``config.json``) is not in the local Hugging Face cache."""


def looks_like_hub_id(name: str | None) -> bool:
    """``owner/name`` that is not an existing local path (``runs/g1`` that exists is a folder, not an id)."""
    if not name or not _ID_RE.fullmatch(name):
        return False
    return not Path(name).expanduser().exists()


def hub_cache_root() -> str:
    """Where the Hugging Face cache is (for messages): ``HF_HUB_CACHE``, else ``HF_HOME/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return os.path.join(home, "hub")


def cached_model_dir(model_id: str) -> Path | None:
    """The local snapshot folder of hub model ``model_id`` (one holding ``config.json``), or None.

    Looks only in the cache (``local_files_only``): no request is made, whatever ``HF_HUB_OFFLINE`` says.
    """
    if not looks_like_hub_id(model_id):
        return None
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return None
    try:
        found = Path(snapshot_download(model_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    return found if (found / "config.json").is_file() else None


def not_cached_message(model_id: str) -> str:
    return (
        f"{model_id!r} is no local folder, and as a Hugging Face hub model id it is not in the local Hugging Face "
        f"cache ({hub_cache_root()}); nothing is downloaded. Fetch it once where the network is "
        f"(`hf download {model_id}`, with HF_HOME pointing at this cache), or pass a model folder, a .gguf "
        "file or a bundled model name"
    )


def resolve_cached(model_id: str) -> Path:
    """The snapshot folder of ``model_id``; :class:`NotCachedError` when it is not cached."""
    found = cached_model_dir(model_id)
    if found is None:
        raise NotCachedError(not_cached_message(model_id))
    return found
