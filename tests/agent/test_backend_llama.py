"""The OpenAI backend against a real llama.cpp server on the bundled Qwen2.5-Coder-0.5B model."""

from __future__ import annotations

import asyncio

import pytest
from mathagent.agent.backends import make_backend
from mathagent.agent.backends.base import Backend, GenerationParams
from mathagent.agent.backends.openai_backend import OpenAIBackend
from mathagent.agent.llama_server import LlamaServer, shared_server

pytest.importorskip("llama_cpp.server")

pytestmark = [pytest.mark.server, pytest.mark.model]

MODEL = "qwen2.5-coder-0.5b"
N_CTX = 2048
COUNT = [{"role": "user", "content": "Count from 1 to 10, separated by commas. Output only the numbers."}]


@pytest.fixture(scope="module")
def server():
    s = shared_server(MODEL, n_ctx=N_CTX)
    yield s
    s.stop()
    assert not s.is_running()


@pytest.fixture
def backend(server) -> OpenAIBackend:
    b = make_backend(MODEL, n_ctx=N_CTX)
    assert isinstance(b, OpenAIBackend) and b.server is server  # the factory reuses the shared server
    assert b.progress == server.activity  # silences are judged by our own server's activity
    return b


def run(coro):
    return asyncio.run(coro)


def test_server_is_on_loopback_and_lists_the_model(server):
    assert server.base_url.startswith("http://127.0.0.1:")
    threads = "--threads" if server.kind == "llama-server" else "--n_threads"
    assert f"{threads} {server.n_threads}" in " ".join(server.command())


def test_threads_follow_the_environment(monkeypatch):
    """``MATHAGENT_LLAMA_THREADS`` sets the decode threads of a server mathagent starts (not started
    here: the command line is enough); a bad value is refused with the variable's name."""
    monkeypatch.setenv("MATHAGENT_LLAMA_THREADS", "1")
    s = LlamaServer(MODEL, n_ctx=N_CTX)
    threads = "--threads" if s.kind == "llama-server" else "--n_threads"
    assert s.n_threads == 1 and f"{threads} 1" in " ".join(s.command())
    assert LlamaServer(MODEL, n_ctx=N_CTX, n_threads=3).n_threads == 3  # an explicit value wins
    monkeypatch.delenv("MATHAGENT_LLAMA_THREADS")
    for cpus, threads in ((1, 1), (2, 1), (16, 15)):  # one CPU is left to the run's own work
        monkeypatch.setattr("os.sched_getaffinity", lambda _pid, n=cpus: set(range(n)))
        assert LlamaServer(MODEL, n_ctx=N_CTX).n_threads == threads
    for bad in ("0", "two"):
        monkeypatch.setenv("MATHAGENT_LLAMA_THREADS", bad)
        with pytest.raises(ValueError, match="MATHAGENT_LLAMA_THREADS must be a whole number"):
            LlamaServer(MODEL, n_ctx=N_CTX)


def test_chat_with_stop_string(backend):
    assert isinstance(backend, Backend) and backend.context_window == N_CTX
    out = run(backend.generate(COUNT, GenerationParams(max_tokens=40, stop=("5",))))
    assert len(out) == 1
    text = out[0].text
    assert "4" in text and "5" not in text and out[0].finish_reason == "stop"
    assert out[0].prompt_tokens > 10 and out[0].completion_tokens > 0


def test_raw_completion_continues_a_rendered_assistant_turn(backend):
    msgs = [*COUNT, {"role": "assistant", "content": "1, 2, 3,", "partial": True}]
    prompt = backend.render_chat(msgs)
    assert prompt.endswith("<|im_start|>assistant\n1, 2, 3,")
    out = run(backend.generate(prompt, GenerationParams(max_tokens=30, stop=("7",))))
    assert out[0].text.strip().startswith("4") and "7" not in out[0].text
    # the same through a message list ending in a partial assistant message
    out2 = run(backend.generate(msgs, GenerationParams(max_tokens=30, stop=("7",))))
    assert out2[0].text == out[0].text


def test_k_samples_by_parallel_requests_with_seeds(backend):
    msgs = [{"role": "user", "content": "Invent a name for a cat. Answer with one word."}]
    params = GenerationParams(n=3, temperature=1.0, max_tokens=8, seed=11)
    out = run(backend.generate(msgs, params))
    assert len(out) == 3 and all(c.text for c in out)
    # three requests with seeds 11, 12, 13: the samples differ (the server ignores n and would
    # otherwise answer once). Replays are close but not bit-exact: llama.cpp's prompt-cache reuse
    # changes the numerics of the first request, so we do not assert equality across runs.
    assert len({c.text for c in out}) >= 2


def test_streaming_calls_on_text(backend):
    pieces: list[str] = []
    out = run(backend.generate(COUNT, GenerationParams(max_tokens=40, stop=("6",)), on_text=pieces.append))
    assert len(pieces) > 3 and "".join(pieces) == out[0].text
    assert "5" in out[0].text and "6" not in out[0].text


@pytest.mark.slow
def test_slow_but_working_generation_is_not_killed(server):
    """A generation that runs about 2.5 times longer than its request timeout, but keeps producing
    tokens, is streamed to its end: no retry, nothing thrown away (a whole-request timeout of the
    same length would have killed it and every retry of it).

    The machine is shared, so the timeout is fitted to what a probe measures now: the request
    timeout is 5x the probe's time to first token + 5 s, and the generation is made long enough to
    need about 2.5x that at the probe's token rate. The stall timeout keeps its default (60 s)."""
    import math
    import time

    msgs = [{"role": "user", "content": "Count from 1 to 500, separated by commas. Output only the numbers."}]
    stamps: list[float] = []
    probe = OpenAIBackend(model=server.alias, base_url=server.base_url, gguf_path=server.path)
    t0 = time.monotonic()
    out = run(
        probe.generate(
            msgs, GenerationParams(max_tokens=32), on_text=lambda _: stamps.append(time.monotonic())
        )
    )
    first, total = stamps[0] - t0, time.monotonic() - t0
    rate = out[0].completion_tokens / max(total - first, 1e-3)
    timeout = 5 * first + 5
    max_tokens = min(N_CTX - 200, math.ceil(2.5 * timeout * rate) + 32)

    b = OpenAIBackend(model=server.alias, base_url=server.base_url, request_timeout=timeout)
    t0 = time.monotonic()
    out = run(b.generate(msgs, GenerationParams(max_tokens=max_tokens)))
    took = time.monotonic() - t0
    assert out[0].finish_reason == "length" and not b.retry_log, list(b.retry_log)
    assert out[0].text.replace(" ", "").startswith("1,2,3,")
    assert took > timeout, (took, timeout, max_tokens)  # it did outlive its request timeout


def test_requests_queue_in_the_client_not_in_the_single_slot_server(server, backend):
    """The bundled server works on one request at a time; the backend keeps at most that many in
    flight, so a request's timeout never ticks while it waits in the server's queue."""
    assert server.slots == 1 and backend.max_concurrency == server.slots
    out = run(backend.generate(COUNT, GenerationParams(n=3, max_tokens=12, seed=5)))
    assert len(out) == 3 and all(c.text for c in out) and not backend.retry_log


def test_parallel_streams_are_not_cut_short(server):
    """Two samples stream at once (a client that ignores the slot count): llama.cpp must not end the
    first early for the waiting second."""
    b = OpenAIBackend(model=server.alias, base_url=server.base_url, gguf_path=server.path, max_concurrency=2)
    params = GenerationParams(n=2, max_tokens=40, seed=3, stop=("11",))
    out = run(b.generate(COUNT, params))
    assert len(out) == 2 and not b.retry_log
    assert all(c.finish_reason == "stop" and "10" in c.text for c in out), [c.text for c in out]


def test_count_tokens_uses_the_model_vocabulary(backend):
    # Qwen2.5 tokenizes digits one by one and special tokens as one token each
    assert backend.count_tokens("12345") == 5
    assert backend.count_tokens("<|im_start|>user") == 2


def test_bad_model_path_reports_the_log_tail(tmp_path, monkeypatch):
    monkeypatch.setenv("MATHAGENT_CACHE_DIR", str(tmp_path / "cache"))
    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"not a gguf file at all")
    server = LlamaServer(bogus, startup_timeout=60)
    with pytest.raises(RuntimeError, match="exited with code") as err:
        server.start()
    # the server's own output went to its log file under the cache dir, and the error quotes it
    assert server.log_path == tmp_path / "cache" / "logs" / "llama-server-broken.log"
    assert server.log_tail() and server.log_tail().splitlines()[-1] in str(err.value)


def test_server_dies_with_a_killed_parent(tmp_path):
    """kill -9 of the process that started the server must not leave the server running."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import sys, time\n"
        "from mathagent.agent.llama_server import LlamaServer\n"
        "s = LlamaServer('smollm2-135m', n_ctx=512).start()\n"
        "print(s.proc.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(parent.stdout.readline())
        os.kill(server_pid, 0)  # running
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(server_pid, 0)
            except ProcessLookupError:
                break
            # reap it if it became our zombie (it does not: it is re-parented to init)
            time.sleep(0.2)
        else:
            os.killpg(server_pid, signal.SIGKILL)
            raise AssertionError("llama.cpp server outlived its killed parent")
    finally:
        if parent.poll() is None:
            parent.kill()


# -- continuing the assistant turn (issue 14 §2) -----------------------------------------------------


def test_bundled_backend_continues_through_its_gguf_template(backend):
    """A server mathagent started: the probe needs no request; the GGUF's own template renders the
    prompt for /v1/completions, and the context is the n_ctx the server was started with."""
    cont = backend.prepare()
    assert (cont.mode, cont.server) == ("completions", "llama-cpp-python")
    assert cont.template_source == f"GGUF metadata of {backend.gguf_path.name}"
    assert backend.context_window == N_CTX and "n_ctx mathagent started" in backend.context_source
    assert backend.continues_partial and callable(backend.render_chat)


@pytest.mark.slow  # up to 400 generated tokens on the shared 2-core machine (~1-2 min)
def test_a_trajectory_continues_its_own_assistant_message(backend):
    """On the real server: after a code cell runs, the next request is the same assistant message,
    rendered by the model's template and left open, with the output block appended."""
    from mathagent.agent.config import AgentConfig
    from mathagent.agent.loop import solve
    from mathagent.agent.trace import StepKind
    from mathagent.sandbox import KernelPool

    sent: list = []
    request = backend._request

    async def recording(model, prompt, params, **kw):
        sent.append(prompt)
        return await request(model, prompt, params, **kw)

    backend._request = recording
    problem = "Compute 1234 * 5678. Answer with one short Python code block only, no explanation."
    cfg = AgentConfig(verify=False, cell_timeout=10, max_rounds=1, max_tokens=400)
    with KernelPool(size=1) as pool:
        trace = run(solve(problem, backend, pool, cfg))
    assert trace.meta["continuation"]["mode"] == "completions"
    executions = [s for s in trace.steps if s.kind is StepKind.EXECUTION]
    assert executions, f"the model wrote no code: {trace.steps}"
    assert len(sent) >= 2 and all(isinstance(p, str) for p in sent), sent
    first, second = sent[0], sent[1]
    system = "<|im_start|>system\nYou are a careful mathematician"
    assert first.startswith(system) and first.endswith(f"{problem}<|im_end|>\n<|im_start|>assistant\n")
    # the second request continues the first: same head, the model's own text, then the output block
    assert second.startswith(first) and "<|im_end|>" not in second[len(first) :]
    assert second.endswith(f"```output\n{executions[0].content.strip()}\n```\n")


def test_probe_of_a_llama_cpp_python_server_mathagent_did_not_start(server, caplog):
    """Seen from outside (only its URL): llama-cpp-python's chat endpoint cannot continue an assistant
    message and it reports no context length; without a template the fallback is logged, with the
    GGUF named as the template it is completions-template (after a real one-token /v1/completions)."""
    import logging

    from mathagent.agent.backends.continuation import clear_cache

    clear_cache()
    with caplog.at_level(logging.WARNING):
        b = OpenAIBackend(model=server.alias, base_url=server.base_url)
        cont = b.prepare()
    assert cont.mode == "user" and cont.server == "llama-cpp-python"
    assert "llama-cpp-python's chat endpoint cannot continue" in cont.reason
    assert b.context_window is None
    assert any(r.levelno == logging.WARNING and "user-message fallback" in r.message for r in caplog.records)
    b2 = OpenAIBackend(model=server.alias, base_url=server.base_url, chat_template=str(server.path))
    cont2 = b2.prepare()
    assert cont2.mode == "completions" and cont2.reason.startswith("/v1/completions with the chat template")


def test_a_run_on_the_bundled_server_takes_one_trajectory_at_a_time(server, backend):
    """The started llama-cpp-python server has one slot and one KV state: `eval` derives one request
    in flight and one trajectory (docs/eval.md); solve_k reads the same `server_slots` (test_loop.py)."""
    import argparse

    from mathagent.agent.backends.base import server_slots
    from mathagent.evals.cli_agent import run_limits

    assert server_slots(backend) == 1
    args = argparse.Namespace(max_inflight=None, concurrency=None, pool_size=None)
    limits = run_limits(args, backend)
    assert (limits.max_inflight, limits.concurrency) == (1, 1)
    assert "one KV state" in limits.describe()
