"""GGUF → plain Hugging Face model directory, so trainers and ``save_pretrained`` accept it.

transformers loads a GGUF file offline with ``gguf_file=`` (weights dequantized), but the loaded model
still carries quantization markers (``is_quantized``, ``hf_quantizer``, ``config.quantization_config``)
that make ``save_pretrained`` and the trainers refuse it. The plain copy is made once, by the same code
and in the same place as the agent's transformers backend
(:func:`mathagent.agent.backends.transformers_backend.plain_copy`: ``<cache>/hf/<sha256 of the GGUF>``),
so a model converted for ``solve`` is the one training starts from, and the other way round.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mathagent.agent.backends.transformers_backend import plain_copy
from mathagent.agent.cache import cache_dir
from mathagent.agent.hubcache import looks_like_hub_id, resolve_cached
from mathagent.agent.models import is_bundled, model_path

log = logging.getLogger(__name__)


def default_cache() -> Path:
    """``$MATHAGENT_CACHE_DIR/hf`` like the rest of mathagent (the older ``MATHAGENT_CACHE`` still works
    when ``MATHAGENT_CACHE_DIR`` is unset)."""
    old = os.environ.get("MATHAGENT_CACHE")
    if old and not os.environ.get("MATHAGENT_CACHE_DIR"):
        return Path(old).expanduser() / "hf"
    return cache_dir("hf")


def resolve_model_dir(model: str, cache: str | os.PathLike[str] | None = None) -> Path:
    """A plain model directory for ``model``: a directory as is; a ``.gguf`` file or a bundled model name
    (``smollm2-135m``, ``qwen2.5-coder-0.5b``, ...) converted once into the cache; a hub id
    (``org/name``) from the local Hugging Face cache when it is there (never downloaded)."""
    p = Path(model).expanduser()
    if p.is_dir():
        return p
    if p.suffix == ".gguf" and p.is_file():
        gguf = p
    else:
        try:
            gguf = _bundled_gguf(model)
        except FileNotFoundError:
            if looks_like_hub_id(model):
                return resolve_cached(model)  # NotCachedError (a FileNotFoundError) says it is not cached
            raise
    log.info("plain model directory for %s (converted once)", gguf)
    return plain_copy(gguf.resolve(), Path(cache) if cache else default_cache())


def _bundled_gguf(name: str) -> Path:
    if is_bundled(name):
        return Path(model_path(name))
    raise FileNotFoundError(
        f"{name!r} is not a model directory, a .gguf file, a bundled model name, or a hub id in the local "
        "Hugging Face cache (nothing is downloaded)"
    )
