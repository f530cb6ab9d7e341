"""The transformers backend on the real SmolLM2-135M GGUF, loaded offline with ``gguf_file=``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from mathagent.agent.backends import make_backend
from mathagent.agent.backends.base import Backend, GenerationParams
from mathagent.agent.backends.transformers_backend import (
    TransformersBackend,
    cut_at_stop,
    gguf_digest,
    hf_cache_dir,
)

COUNT = [{"role": "user", "content": "Count from 1 to 10, one number per line."}]


def run(coro):
    return asyncio.run(coro)


def test_cut_at_stop_takes_the_earliest():
    assert cut_at_stop("a```output\nb</code>", ("</code>", "```output")) == ("a", "```output")
    assert cut_at_stop("plain", ("x",)) == ("plain", None)


def test_factory_reads_the_trained_format(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "mathagent.json").write_text(json.dumps({"format": "mathcoder"}))  # as `train` writes it
    b = make_backend(str(tmp_path))  # a directory with config.json: transformers, loaded lazily
    assert isinstance(b, TransformersBackend) and b.default_format == "mathcoder"
    (tmp_path / "mathagent.json").unlink()
    assert make_backend(str(tmp_path)).default_format == "markdown"


@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory):
    """An empty mathagent cache for this module: the first-run path (assemble, convert) runs every time."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MATHAGENT_CACHE_DIR", str(tmp_path_factory.mktemp("mathagent-cache")))
        yield


@pytest.fixture(scope="module")
def smol(fresh_cache):
    pytest.importorskip("transformers")
    from mathagent.agent.models import model_path

    assert not hf_cache_dir().exists()  # nothing converted yet: this load is a first run
    b = make_backend("smollm2-135m", backend="transformers", torch_threads=2)
    assert (
        isinstance(b, TransformersBackend) and b.gguf_file and model_path("smollm2-135m").name == b.gguf_file
    )
    b.load()
    yield b
    asyncio.run(b.aclose())


@pytest.mark.model
def test_loads_offline_as_a_plain_model(smol):
    assert isinstance(smol, Backend) and smol.context_window == 8192
    # the first load converts the GGUF, saves a plain copy and serves that copy, as later loads do
    copy = hf_cache_dir() / gguf_digest(smol.source / smol.gguf_file)
    assert smol.loaded_from == copy and (copy / "config.json").is_file()
    lm = smol._lm
    assert not getattr(lm, "is_quantized", False) and not hasattr(lm.config, "quantization_config")
    assert smol.count_tokens("hello world") == 2


@pytest.mark.model
def test_a_later_load_reuses_the_plain_copy(smol):
    """A second backend (a later run) reads the saved copy as it is and generates the same text."""
    copy = Path(smol.loaded_from)
    before = {p.name: p.stat().st_mtime_ns for p in copy.iterdir()}
    again = make_backend("smollm2-135m", backend="transformers", torch_threads=2)
    params = GenerationParams(max_tokens=12)
    try:
        again.load()
        assert again.loaded_from == copy
        assert {p.name: p.stat().st_mtime_ns for p in copy.iterdir()} == before  # not converted again
        assert [c.text for c in run(again.generate(COUNT, params))] == [
            c.text for c in run(smol.generate(COUNT, params))
        ]
    finally:
        run(again.aclose())


@pytest.mark.model
def test_training_starts_from_the_same_plain_copy(smol):
    """One GGUF -> plain-model cache: training resolves the bundled model to the directory the
    backend converted (nothing converted twice), and the agent's loader finds what training made."""
    from mathagent.agent.backends.transformers_backend import plain_dir
    from mathagent.training.convert import resolve_model_dir

    copy = Path(smol.loaded_from)
    before = {p.name: p.stat().st_mtime_ns for p in copy.iterdir()}
    assert resolve_model_dir("smollm2-135m") == copy == plain_dir(smol.source / smol.gguf_file)
    assert {p.name: p.stat().st_mtime_ns for p in copy.iterdir()} == before
    assert [p.name for p in copy.parent.iterdir()] == [copy.name]  # one copy in the cache, no other


@pytest.mark.model
def test_generates_and_honours_stop_strings(smol):
    out = run(smol.generate(COUNT, GenerationParams(max_tokens=24, stop=("4",))))
    c = out[0]
    assert c.stop_string == "4" and c.finish_reason == "stop"
    assert "3" in c.text and "4" not in c.text
    assert c.prompt_tokens > 10 and 0 < c.completion_tokens <= 24


@pytest.mark.model
def test_length_finish(smol):
    out = run(smol.generate("Once upon a time", GenerationParams(max_tokens=3)))
    assert out[0].finish_reason == "length" and out[0].completion_tokens == 3


@pytest.mark.model
def test_seeds_replay_k_samples(smol):
    params = GenerationParams(n=2, temperature=1.0, max_tokens=5, seed=5)
    first = run(smol.generate(COUNT, params))
    again = run(smol.generate(COUNT, params))
    assert len(first) == 2 and [c.text for c in first] == [c.text for c in again]


@pytest.mark.model
def test_streaming_calls_on_text(smol):
    pieces: list[str] = []
    out = run(smol.generate(COUNT, GenerationParams(max_tokens=16, stop=("3",)), on_text=pieces.append))
    assert len(pieces) > 1 and "".join(pieces) == out[0].text and "3" not in out[0].text


@pytest.mark.model
def test_partial_assistant_turn_is_continued(smol):
    msgs = [*COUNT, {"role": "assistant", "content": "1\n2\n", "partial": True}]
    prompt = smol.render_chat(msgs)
    assert prompt.endswith("<|im_start|>assistant\n1\n2\n")
