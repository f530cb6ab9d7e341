"""The transformers backend: local weights (a model directory, or GGUF through ``gguf_file=``), offline.

* Loads with ``local_files_only=True`` and ``HF_HUB_OFFLINE=1`` set while loading: nothing downloads.
* GGUF weights are dequantized by transformers (slow: 15-60 s). A GGUF-loaded model carries
  quantization markers that make ``save_pretrained`` and the trainers refuse it, so the backend
  clears them and (``cache_plain=True``) saves a plain model directory once under
  ``~/.cache/mathagent/hf/<sha256-of-gguf>/``, then loads from that copy; later loads read it
  straight away (2-3 s). The first load and every later one thus serve the same files
  (:attr:`loaded_from` is the copy); only when the copy cannot be written is the GGUF-loaded model
  used as it is.
* A directory written by our training pipeline holds ``mathagent.json``
  (:class:`~mathagent.agent.manifest.ModelManifest`); its format becomes :attr:`default_format`.
* Chat prompts go through the tokenizer's chat template; a final ``{"role": "assistant",
  "partial": True}`` message is continued (``continue_final_message``).
* Sampling: greedy at temperature 0, else temperature/top_p; sample ``i`` is seeded with
  ``seed + i`` (``torch.manual_seed``, under a lock) so runs replay. Samples run one after another.
* Stop strings: a ``StopStringCriteria`` per stop tuple, built once and reused; the returned text is cut before the stop string.
* Generation runs in a worker thread (``asyncio.to_thread``); with ``on_text`` the first sample is
  streamed through ``TextIteratorStreamer`` (text that might begin a stop string is held back).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mathagent.agent.backends.base import BackendError, Completion, GenerationParams, Prompt, TokenCallback
from mathagent.agent.cache import cache_dir
from mathagent.agent.manifest import ModelManifest

log = logging.getLogger(__name__)


def hf_cache_dir() -> Path:
    """Where GGUF models are kept once converted to plain model folders (``<cache>/hf``)."""
    return cache_dir("hf")


def gguf_digest(path: Path) -> str:
    """sha256 of a GGUF file, read from its ``.sha256`` sidecar when :mod:`mathagent.agent.models` wrote one."""
    side = path.with_name(path.name + ".sha256")
    if side.is_file():
        return side.read_text().split()[0]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def offline() -> Iterator[None]:
    old = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def clear_quantization_markers(model: Any) -> None:
    """Make a dequantized GGUF-loaded model look like a plain one (so it can be saved and trained)."""
    for attr, value in (("is_quantized", False), ("hf_quantizer", None), ("quantization_method", None)):
        if hasattr(model, attr):
            setattr(model, attr, value)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def load_gguf(folder: Path | str, gguf_file: str) -> tuple[Any, Any]:
    """(tokenizer, model) of a GGUF file, dequantized to float32 and made to look plain, offline."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file, local_files_only=True)
    lm = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=gguf_file, local_files_only=True, dtype=torch.float32
    )
    clear_quantization_markers(lm)
    return tok, lm


def save_plain(lm: Any, tok: Any, target: Path) -> bool:
    """Save a plain copy at ``target`` (atomically); True when ``target`` now holds one."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
        log.info("cached plain model directory at %s", target)
        return True
    except OSError as e:  # another process won the race, or the disk is full: loading still worked
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if (target / "config.json").is_file():  # the race was lost to a finished copy
            return True
        log.warning("could not cache plain model at %s: %s", target, e)
        return False


def plain_dir(gguf: Path, cache: Path | None = None) -> Path:
    """Where the plain copy of ``gguf`` lives: ``<cache>/<sha256 of the file>`` (default cache
    :func:`hf_cache_dir`). One place for the agent's transformers backend and for training."""
    return (cache or hf_cache_dir()) / gguf_digest(gguf)


def plain_copy(gguf: Path, cache: Path | None = None) -> Path:
    """The plain model directory of ``gguf``, converted on first use (:func:`load_gguf`,
    :func:`save_plain`) and reused after; ``OSError`` when it cannot be saved."""
    target = plain_dir(gguf, cache)
    if (target / "config.json").is_file():
        return target
    with offline():
        tok, lm = load_gguf(gguf.parent, gguf.name)
    if not save_plain(lm, tok, target):
        raise OSError(f"could not save a plain copy of {gguf} at {target}")
    return target


@dataclass(frozen=True)
class _Sample:
    text: str
    stop_string: str | None
    finish_reason: str
    n_new: int


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, str | None]:
    """``text`` cut before the earliest stop string, and which one it was."""
    best: tuple[int, str] | None = None
    for s in stops:
        i = text.find(s) if s else -1
        if i >= 0 and (best is None or i < best[0]):
            best = (i, s)
    return (text[: best[0]], best[1]) if best else (text, None)


class TransformersBackend:
    """Generates with a local causal LM through ``transformers``, fully offline."""

    name = "transformers"

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        gguf_file: str | None = None,
        default_format: str | None = None,
        context_window: int | None = None,
        cache_plain: bool = True,
        torch_threads: int | None = None,
    ) -> None:
        """
        Args:
            model: a model directory (``config.json``), a ``.gguf`` file, or a model id already in
                the local Hugging Face cache.
            gguf_file: GGUF file name inside ``model`` (a directory); implied when ``model`` is a file.
            default_format: overrides the trace format read from ``mathagent.json`` (else ``markdown``).
            cache_plain: save a GGUF-loaded model once as a plain directory and reload from there.
        """
        path = Path(model)
        if path.is_file() and path.suffix == ".gguf":
            path, gguf_file = path.parent, path.name
        self.source = path if path.exists() else None
        self.model = str(model)
        self.gguf_file = gguf_file
        manifest = ModelManifest.read(path) if path.is_dir() else None
        fmt = manifest.format if manifest is not None else None
        self.default_format = default_format or fmt or "markdown"
        self.context_window = context_window
        self.cache_plain = cache_plain
        self.torch_threads = torch_threads
        self._tok: Any = None
        self._lm: Any = None
        self._load_lock = threading.Lock()
        self._gen_lock = threading.Lock()
        self._stops: dict[tuple[str, ...], Any] = {}
        self.load_seconds = 0.0
        self.loaded_from: Path | str | None = None

    # -- loading -----------------------------------------------------------------------------------

    def load(self) -> None:
        """Load tokenizer and model (idempotent, thread-safe)."""
        with self._load_lock:
            if self._lm is not None:
                return
            t0 = time.perf_counter()
            try:
                self._load()
            except BackendError:
                raise
            except Exception as e:
                raise BackendError(f"cannot load model {self.model!r} offline: {e}") from e
            self.load_seconds = time.perf_counter() - t0
            log.info("loaded %s from %s in %.1f s", self.model, self.loaded_from, self.load_seconds)

    def _load(self) -> None:
        import torch

        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        with offline():
            if self.gguf_file:
                assert self.source is not None
                gguf = self.source / self.gguf_file
                if not gguf.is_file():
                    raise BackendError(f"GGUF file not found: {gguf}")
                plain = plain_dir(gguf)
                if self.cache_plain and (plain / "config.json").is_file():
                    self._from_dir(plain)
                    return
                tok, lm = load_gguf(self.source, self.gguf_file)
                if self.cache_plain and save_plain(lm, tok, plain):
                    # Serve the saved copy, as every later load does: first and later runs then load
                    # the same files the same way (and a copy that does not load fails here, not later).
                    del lm, tok
                    self._from_dir(plain)
                    return
                self._set(tok, lm, gguf)
            else:
                self._from_dir(self.source or self.model)

    def _from_dir(self, where: Path | str) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(where, local_files_only=True)
        lm = AutoModelForCausalLM.from_pretrained(where, local_files_only=True)
        self._set(tok, lm, where)

    def _set(self, tok: Any, lm: Any, where: Path | str) -> None:
        lm.eval()
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self._tok, self._lm, self.loaded_from = tok, lm, where
        if self.context_window is None:
            self.context_window = getattr(lm.config, "max_position_embeddings", None)

    @property
    def tokenizer(self) -> Any:
        self.load()
        return self._tok

    # -- prompts -----------------------------------------------------------------------------------

    def render_chat(self, messages: Any, add_generation_prompt: bool = True) -> str:
        """The chat prompt as the model sees it (a final ``partial`` assistant message is left open)."""
        tok = self.tokenizer
        msgs = [{"role": m["role"], "content": m.get("content") or ""} for m in messages]
        if msgs and msgs[-1]["role"] == "assistant" and messages[-1].get("partial"):
            return str(tok.apply_chat_template(msgs, tokenize=False, continue_final_message=True))
        return str(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    # -- generation --------------------------------------------------------------------------------

    async def generate(
        self, prompt: Prompt, params: GenerationParams, *, on_text: TokenCallback | None = None
    ) -> list[Completion]:
        await asyncio.to_thread(self.load)
        text = prompt if isinstance(prompt, str) else self.render_chat(prompt)
        loop = asyncio.get_running_loop()
        emit = None
        if on_text is not None:
            cb = on_text

            def emit(piece: str) -> None:
                loop.call_soon_threadsafe(cb, piece)

        out: list[Completion] = []
        for i in range(max(1, params.n)):
            seed = None if params.seed is None else params.seed + i
            t0 = time.perf_counter()
            s, n_prompt = await asyncio.to_thread(
                self._generate_one, text, params, seed, emit if i == 0 else None
            )
            out.append(
                Completion(
                    text=s.text,
                    finish_reason=s.finish_reason,
                    stop_string=s.stop_string,
                    prompt_tokens=n_prompt,
                    completion_tokens=s.n_new,
                    latency_s=time.perf_counter() - t0,
                )
            )
        await asyncio.sleep(0)  # let queued on_text callbacks run before returning
        return out

    def _eos_ids(self) -> list[int]:
        tok = self._tok
        ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        for special in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
            tid = tok.convert_tokens_to_ids(special)
            if isinstance(tid, int) and tid != tok.unk_token_id and tid >= 0:
                ids.add(tid)
        gen_eos = self._lm.generation_config.eos_token_id
        ids.update(gen_eos if isinstance(gen_eos, list) else ([gen_eos] if gen_eos is not None else []))
        return sorted(ids)

    def _stop_criteria(self, stops: tuple[str, ...]) -> Any:
        """``StopStringCriteria`` for these stop strings, built once (it scans the vocabulary: ~0.5 s)."""
        from transformers import StoppingCriteriaList, StopStringCriteria

        crit = self._stops.get(stops)
        if crit is None:
            crit = self._stops[stops] = StopStringCriteria(self._tok, list(stops))
        return StoppingCriteriaList([crit])

    def _generate_one(
        self, text: str, params: GenerationParams, seed: int | None, emit: Any
    ) -> tuple[_Sample, int]:
        import torch

        tok, lm = self._tok, self._lm
        enc = tok(text, return_tensors="pt", add_special_tokens=False)
        n_prompt = int(enc["input_ids"].shape[1])
        kw: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "eos_token_id": self._eos_ids(),
            "pad_token_id": tok.pad_token_id,
        }
        if params.temperature > 0:
            kw.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        stops = tuple(s for s in params.stop if s)
        if stops:
            kw["stopping_criteria"] = self._stop_criteria(stops)
        with self._gen_lock, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            if emit is None:
                ids = lm.generate(**enc, **kw)[0, n_prompt:]
            else:
                ids = self._streamed(enc, kw, stops, emit)
        new = [int(t) for t in ids]
        eos = set(self._eos_ids())
        ended_eos = bool(new) and new[-1] in eos
        # Keep added special tokens (a MathCoder-trained model's <|code|>, <|endofblock|> ... are the
        # format itself); drop only end-of-sequence, padding and BOS markers.
        drop = eos | {t for t in (tok.pad_token_id, tok.bos_token_id) if t is not None}
        raw = tok.decode([t for t in new if t not in drop], skip_special_tokens=False)
        cut, which = cut_at_stop(raw, stops)
        if which is not None or ended_eos:
            finish = "stop"
        else:
            finish = "length" if len(new) >= params.max_tokens else "stop"
        return _Sample(cut, which, finish, len(new)), n_prompt

    def _streamed(self, enc: Any, kw: dict[str, Any], stops: tuple[str, ...], emit: Any) -> Any:
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self._tok, skip_prompt=True, skip_special_tokens=False)
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["ids"] = self._lm.generate(**enc, **kw, streamer=streamer)[
                    0, enc["input_ids"].shape[1] :
                ]
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller
                result["error"] = e
                streamer.end()

        worker = threading.Thread(target=work, name="hf-generate", daemon=True)
        worker.start()
        hold = max((len(s) for s in stops), default=1) - 1
        seen, sent, done = "", 0, False
        for piece in streamer:
            seen += piece
            if done:
                continue
            cut, which = cut_at_stop(seen, stops)
            upto = len(cut) if which is not None else max(sent, len(seen) - hold)
            if upto > sent:
                emit(seen[sent:upto])
                sent = upto
            done = which is not None
        worker.join()
        if "error" in result:
            raise result["error"]
        final, _ = cut_at_stop(seen, stops)
        if not done and len(final) > sent:
            emit(final[sent:])
        return result["ids"]

    async def aclose(self) -> None:
        self._lm = None
        self._tok = None

    def __repr__(self) -> str:
        return f"TransformersBackend({self.model!r}, gguf_file={self.gguf_file!r})"
