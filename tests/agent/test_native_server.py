"""llama.cpp's own server (``llama-server``): choosing the server kind, and the real server serving
parallel requests together (batched) on the bundled Qwen2.5-Coder-0.5B model."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

import pytest
from mathagent.agent import native_server
from mathagent.agent.backends.base import GenerationParams
from mathagent.agent.backends.openai_backend import OpenAIBackend
from mathagent.agent.llama_server import LlamaServer
from mathagent.agent.native_server import LLAMA_CPP_PYTHON, LLAMA_SERVER

MODEL = "qwen2.5-coder-0.5b"
COUNT = [{"role": "user", "content": "Count from 1 to 20, separated by commas. Output only the numbers."}]


def test_auto_falls_back_to_llama_cpp_python_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(native_server.BIN_ENV, str(tmp_path / "missing" / "llama-server"))
    monkeypatch.delenv(native_server.KIND_ENV, raising=False)
    assert native_server.resolve_kind(None) == (LLAMA_CPP_PYTHON, None)  # the default, no warning
    assert "llama-server" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="mathagent.agent.native_server"):
        assert native_server.resolve_kind("auto") == (LLAMA_CPP_PYTHON, None)
    assert "llama-server not found" in caplog.text and "build_llama_server.sh" in caplog.text
    # asked for by name, a missing llama-server is an error that says how to install it
    with pytest.raises(RuntimeError, match="build_llama_server.sh"):
        native_server.resolve_kind("llama-server")
    monkeypatch.setenv(native_server.KIND_ENV, "llama-server")
    with pytest.raises(RuntimeError, match="not installed"):
        LlamaServer("smollm2-135m")


def test_kind_from_the_environment_and_bad_kinds(tmp_path, monkeypatch):
    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv(native_server.BIN_ENV, str(fake))
    monkeypatch.delenv(native_server.KIND_ENV, raising=False)
    assert native_server.resolve_kind("auto") == (LLAMA_SERVER, fake)
    monkeypatch.setenv(native_server.KIND_ENV, "llama-cpp-python")
    assert native_server.resolve_kind(None) == (LLAMA_CPP_PYTHON, None)
    with pytest.raises(ValueError, match="unknown server kind 'vllm'"):
        native_server.resolve_kind("vllm")
    # not executable: not found
    fake.chmod(0o644)
    assert native_server.find_binary() is None


def test_a_backend_on_a_server_mathagent_started_knows_its_kind(tmp_path, monkeypatch):
    """The kind reaches the backend and the continuation every trace records (``meta.continuation.server``):
    a llama-server run was recorded as llama-cpp-python's before, so a study could not tell them apart."""
    from mathagent.agent.backends import server_backend
    from mathagent.agent.backends.continuation import ChatTemplate, clear_cache, probe

    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv(native_server.BIN_ENV, str(fake))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    for kind in (LLAMA_SERVER, LLAMA_CPP_PYTHON):
        backend = server_backend(LlamaServer(gguf, kind=kind))  # not started: nothing is probed over HTTP
        assert backend.server_kind == kind
        clear_cache()
        template = ChatTemplate("{{ messages }}", (), "a test")
        cont = probe(backend.base_url, backend.model, template=template, known_server=backend.server_kind)
        assert cont.to_dict()["server"] == kind and cont.mode == "completions"


def test_llama_server_command_line(tmp_path):
    cmd = native_server.command(
        "/x/llama-server", tmp_path / "m.gguf", alias="m", host="127.0.0.1", port=8123, n_ctx=2048,
        n_threads=2, parallel=3,
    )  # fmt: skip
    line = " ".join(cmd)
    # every slot gets the whole per-sample context: the KV cache holds parallel * n_ctx tokens
    assert "--ctx-size 6144 --parallel 3 --no-kv-unified" in line
    assert "--host 127.0.0.1 --port 8123" in line and "--threads 2 --threads-batch 2" in line
    assert "--no-webui" in line and cmd[0] == "/x/llama-server"


def test_cli_rejects_an_unknown_server_kind(capsys):
    from mathagent.agent.cli_model import main

    assert main(["serve", "smollm2-135m", "--server", "vllm"]) == 2
    assert "unknown server kind 'vllm'" in capsys.readouterr().err


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.server
@pytest.mark.model
def test_real_llama_server_serves_parallel_requests_together():
    """Two requests at once on 2 slots: each one's first token comes before the other's last one
    (a one-at-a-time server answers the second only after the first has finished), and both
    count correctly. Then the server stops and frees its port."""
    if native_server.find_binary() is None:
        if os.environ.get("CI"):
            pytest.fail(f"llama-server is not installed; {native_server.INSTALL_HINT}")
        pytest.skip(f"llama-server is not installed; {native_server.INSTALL_HINT}")
    server = LlamaServer(MODEL, kind="llama-server", parallel=2, n_ctx=1024)
    assert server.kind == LLAMA_SERVER and server.slots == 2
    with server:
        assert server.base_url.startswith("http://127.0.0.1:") and server.is_running()
        backend = OpenAIBackend(model=server.alias, base_url=server.base_url, gguf_path=server.path)

        async def one(stamps: list[float]):
            params = GenerationParams(max_tokens=60, temperature=0.0, stop=("12",))
            return await backend.generate(COUNT, params, on_text=lambda _: stamps.append(time.monotonic()))

        async def both():
            a: list[float] = []
            b: list[float] = []
            try:
                outs = await asyncio.gather(one(a), one(b))
            finally:
                await backend.aclose()
            return outs, a, b

        (out_a, out_b), a, b = asyncio.run(both())
        assert a and b
        assert a[0] < b[-1] and b[0] < a[-1], "the two requests did not run at the same time"
        for out in (out_a, out_b):
            text = out[0].text.replace(" ", "")
            assert text.startswith("1,2,3,") and "11" in text and "12" not in text, out[0].text
            assert out[0].finish_reason == "stop" and out[0].completion_tokens > 10
        assert not backend.retry_log
        port, pid = server.port, server.proc.pid if server.proc else None
    assert not server.is_running() and not _port_open(port)
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole group (wrapper and binary) is gone
