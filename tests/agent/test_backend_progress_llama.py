"""Slow is not stuck, on real parts: our own bundled llama-cpp-python server (Qwen2.5-Coder-0.5B).

- A stream that goes silent for several stall timeouts while the server is genuinely generating
  completes in one try. The silence is made with a stop string: llama-cpp-python holds back
  streamed text while it could still be the start of a stop string, so a stop string that the
  model's counting follows for ~200 tokens (and then misses) keeps the stream silent while the
  server generates them.
- The same server SIGSTOPped mid-stream for longer than the stall timeout still times out; given
  up, the request's connection is closed, and after SIGCONT the server ends the abandoned
  generation at once (it does not hold the only slot for the 1500 tokens it was asked for).

Every server here is started by the test and stopped at its end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from mathagent.agent.backends import server_backend
from mathagent.agent.backends.base import BackendError, GenerationParams
from mathagent.agent.backends.openai_backend import OpenAIBackend
from mathagent.agent.backends.retry import RetryPolicy
from mathagent.agent.llama_server import LlamaServer

pytest.importorskip("llama_cpp.server")

pytestmark = [pytest.mark.server, pytest.mark.model, pytest.mark.slow]

MODEL = "qwen2.5-coder-0.5b"
COUNT = [{"role": "user", "content": "Count from 1 to 1000, separated by commas. Output only the numbers."}]
STALL_S = 2.0


@pytest.fixture(scope="module")
def server():
    s = LlamaServer(MODEL, n_ctx=2048).start()  # our own instance, never a shared one
    yield s
    s.stop()
    assert not s.is_running()


def cpu_seconds(pid: int) -> float:
    """CPU time (not run-queue time) of a process: comparable across machine loads."""
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    fields = raw[raw.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(server: LlamaServer, limit_s: float = 180.0) -> float:
    """Wait until the server is busy less than 5% of a second; returns the seconds waited."""
    t0 = time.monotonic()
    prev = server.activity()
    while time.monotonic() - t0 < limit_s:
        time.sleep(1.0)
        now = server.activity()
        assert prev is not None and now is not None
        if now - prev < 0.05:
            return time.monotonic() - t0
        prev = now
    raise AssertionError(f"the server was still busy after {limit_s} s")


def backend(server: LlamaServer, **kw) -> OpenAIBackend:
    """What ``bundled_backend`` builds for a server we started (that one shares a process-wide
    server; these tests need their own), with a stall timeout of a few seconds."""
    assert "progress" not in kw  # the probe must be the one the product wires in
    return server_backend(server, stall_timeout=STALL_S, request_timeout=600, **kw)


def test_a_stream_silent_while_the_server_generates_completes(server):
    b = backend(server)
    assert b.progress is not None
    msgs = [*COUNT, {"role": "assistant", "content": "1, 2, 3,", "partial": True}]
    prompt = b.render_chat(msgs)
    # the model goes on " 4, 5, 6, ..."; from " 5" on, the text is the start of this stop string
    # until "40, 41," misses it: ~140 tokens streamed as nothing, then as one burst
    hold = " " + ", ".join(str(i) for i in range(5, 42)) + "!"
    stamps: list[float] = []
    t0 = time.monotonic()
    out = asyncio.run(
        b.generate(
            prompt,
            GenerationParams(max_tokens=200, stop=(hold,)),
            on_text=lambda _: stamps.append(time.monotonic()),
        )
    )
    gaps = [y - x for x, y in zip([t0, *stamps[:-1]], stamps, strict=True)]
    assert not b.retry_log, list(b.retry_log)
    assert " 40, 41," in out[0].text, out[0].text[:400]
    # the longest silence was several stall timeouts, and it was forgiven, not retried
    assert max(gaps) > 2 * STALL_S, gaps
    assert b.forgiven and {f.phase for f in b.forgiven} == {"stream"}, list(b.forgiven)
    print(
        f"longest silence {max(gaps):.1f} s, forgiven {len(b.forgiven)}x, took {time.monotonic() - t0:.1f} s"
    )


def test_a_stopped_server_still_times_out_and_the_abandoned_generation_ends(server):
    pid = server.proc.pid
    wait_idle(server)
    # what 100 generated tokens cost this server in CPU time (calibration)
    calib = OpenAIBackend(model=server.alias, base_url=server.base_url)
    c0 = cpu_seconds(pid)
    out = asyncio.run(calib.generate(COUNT, GenerationParams(max_tokens=100)))
    assert out[0].finish_reason == "length"
    per_100 = cpu_seconds(pid) - c0

    b = backend(server, retry=RetryPolicy(attempts=1))
    stopped: list[float] = []

    def stop_server(_piece: str) -> None:
        if not stopped:
            os.killpg(pid, signal.SIGSTOP)
            stopped.append(time.monotonic())

    try:
        with pytest.raises(BackendError) as info:
            asyncio.run(b.generate(COUNT, GenerationParams(max_tokens=1500), on_text=stop_server))
        gave_up = time.monotonic()
    finally:
        os.killpg(pid, signal.SIGCONT)
    msg = str(info.value)
    assert stopped and "StallTimeout" in msg and "the server was not working" in msg, msg
    assert not b.forgiven, list(b.forgiven)
    assert gave_up - stopped[0] > STALL_S  # it was stopped for longer than the stall timeout

    # The given-up request closed its connection: the server notices once it runs again and ends
    # the generation at its next token, instead of generating ~1500 tokens for nobody.
    c1 = cpu_seconds(pid)
    idle_s = wait_idle(server)
    after = cpu_seconds(pid) - c1
    assert after < 3 * per_100, (after, per_100)
    print(f"CPU after SIGCONT {after:.2f} s (100 tokens: {per_100:.2f} s); idle after {idle_s:.1f} s")
    assert "Disconnected from client" in server.log_tail(200)
    # and the slot is free: the next request is answered
    out = asyncio.run(b.generate(COUNT, GenerationParams(max_tokens=8)))
    assert out[0].text
