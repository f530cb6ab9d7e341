"""make_backend: which backend a user gets for --model / --base-url / --backend (no server started)."""

from __future__ import annotations

import pytest
from mathagent.agent.backends import make_backend
from mathagent.agent.backends.base import BackendError
from mathagent.agent.backends.openai_backend import OpenAIBackend
from mathagent.agent.backends.transformers_backend import TransformersBackend


def test_base_url_gives_openai_backend():
    b = make_backend("qwen-7b", base_url="http://127.0.0.1:9/v1", timeout=5.0)
    assert isinstance(b, OpenAIBackend) and b.model == "qwen-7b" and b.timeout == 5.0
    # how a partial assistant turn goes on is probed later (prepare()), not at construction
    assert b.default_format == "markdown" and b.continuation is None and b.continue_mode == "auto"


def test_env_base_url_without_model(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    b = make_backend()
    assert isinstance(b, OpenAIBackend) and b.base_url == "http://127.0.0.1:9/v1"


def test_remote_model_needs_a_key(monkeypatch):
    with pytest.raises(BackendError, match="OPENAI_API_KEY"):
        make_backend("gpt-4o-mini")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    b = make_backend("gpt-4o-mini")
    assert isinstance(b, OpenAIBackend) and b.native_n and b.base_url is None


def test_transformers_for_gguf_path(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    b = make_backend(str(f), backend="transformers")
    assert isinstance(b, TransformersBackend) and b.gguf_file == "m.gguf"


def test_scripted_and_unknown_backends():
    b = make_backend(backend="scripted", turns=["hello"])
    assert b.name == "scripted"
    with pytest.raises(BackendError, match="unknown backend"):
        make_backend(backend="tensorrt")
    with pytest.raises(BackendError, match="neither a bundled model name nor a .gguf"):
        make_backend("no-such-model", backend="llama")
