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


def _hub_cache(root, repo_id: str, manifest: dict | None = None):
    """A Hugging Face cache entry laid out as ``hf download`` leaves it (refs/main -> snapshots/<sha>)."""
    import json

    repo = root / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / ("ab" * 20)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({"model_type": "llama"}))
    if manifest is not None:
        (snap / "mathagent.json").write_text(json.dumps(manifest))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("ab" * 20)
    return snap


def test_a_cached_hub_id_runs_with_transformers_from_its_snapshot(tmp_path, monkeypatch):
    import huggingface_hub.constants

    snap = _hub_cache(tmp_path / "hub", "acme/tiny", {"format": "mathcoder", "stop": ["<|endofblock|>"]})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("MATHAGENT_BACKEND", raising=False)
    for kw in ({}, {"backend": "transformers"}):
        b = make_backend("acme/tiny", **kw)
        assert isinstance(b, TransformersBackend) and b.source == snap and b.model == "acme/tiny"
        assert b.default_format == "mathcoder"  # mathagent.json of the snapshot
    # a server serves hub ids itself (vLLM): --base-url, OPENAI_BASE_URL or --backend openai keep it
    assert isinstance(make_backend("acme/tiny", base_url="http://127.0.0.1:9/v1"), OpenAIBackend)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert isinstance(make_backend("acme/tiny"), OpenAIBackend)
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(BackendError, match="not in the local Hugging Face cache") as e:
        make_backend("acme/never-downloaded")
    assert "nothing is downloaded" in str(e.value) and "hf download acme/never-downloaded" in str(e.value)
    # a folder that exists is a folder, even when its path looks like owner/name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "g1").mkdir(parents=True)
    (tmp_path / "runs" / "g1" / "config.json").write_text("{}")
    b = make_backend("runs/g1")
    assert isinstance(b, TransformersBackend) and b.model == "runs/g1"


def test_the_repl_banner_names_the_backend_a_hub_id_or_folder_gets(tmp_path, monkeypatch):
    from mathagent.agent.repl.settings import ReplSettings as Settings

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert Settings(model="acme/tiny").describe_backend() == (
        "transformers (acme/tiny, from the local Hugging Face cache)"
    )
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert Settings(model=str(tmp_path / "m")).describe_backend() == f"transformers ({tmp_path / 'm'})"
    assert Settings(model="smollm2-135m").describe_backend() == "bundled llama.cpp (smollm2-135m)"
