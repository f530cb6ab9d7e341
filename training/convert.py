"""GGUF → plain Hugging Face model directory, so trainers and ``save_pretrained`` accept it.

transformers loads a GGUF file offline with ``gguf_file=`` (weights dequantized), but the loaded model
still carries quantization markers (``is_quantized``, ``hf_quantizer``, ``config.quantization_config``)
that make ``save_pretrained`` and the trainers refuse it. :func:`gguf_to_hf` clears them and saves the
model and tokenizer once as an ordinary directory; later loads from it take seconds, not minutes.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from mathagent.agent.cache import cache_dir
from mathagent.agent.hubcache import looks_like_hub_id, resolve_cached
from mathagent.agent.models import is_bundled, model_path

log = logging.getLogger(__name__)

_DONE = "mathagent_converted.txt"


def gguf_to_hf(
    gguf_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, force: bool = False
) -> Path:
    """Dequantize ``gguf_path`` into ``out_dir`` (model + tokenizer); reuses a finished conversion."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = Path(gguf_path).resolve()
    out = Path(out_dir)
    if (out / _DONE).is_file() and not force:
        return out
    out.mkdir(parents=True, exist_ok=True)
    log.info("converting %s to a plain model directory at %s", src, out)
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    for attr, value in (("is_quantized", False), ("quantization_method", None), ("hf_quantizer", None)):
        if hasattr(model, attr):
            setattr(model, attr, value)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / _DONE).write_text(f"{src}\n", encoding="utf-8")
    return out


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
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return gguf_to_hf(gguf, Path(cache or default_cache()) / f"{gguf.stem}-{key}")


def _bundled_gguf(name: str) -> Path:
    if is_bundled(name):
        return Path(model_path(name))
    raise FileNotFoundError(
        f"{name!r} is not a model directory, a .gguf file, a bundled model name, or a hub id in the local "
        "Hugging Face cache (nothing is downloaded)"
    )
