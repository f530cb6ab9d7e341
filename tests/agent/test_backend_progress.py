"""Slow is not stuck, told by the server's own activity (agent/backends/progress.py, agent/procstat.py).

Deterministic half: the loopback fake server goes silent (before its headers, or in the middle of a
stream) and a fake progress probe says whether "the server" works meanwhile. Real half: the probe of
a real process tree (a busy child, a sleeping one, a SIGSTOPped one). The test on the real bundled
model server is in test_backend_progress_llama.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
from backend_helpers import ANSWER, CHAT, errors, run
from fakeserver import Reply
from mathagent.agent.backends import make_backend
from mathagent.agent.backends.base import GenerationParams
from mathagent.agent.backends.openai_backend import OpenAIBackend
from mathagent.agent.procstat import ProcessActivity, descendants

pytestmark = pytest.mark.server


class FakeProbe:
    """A server's activity counter: grows with the clock (busy on ``share`` of a CPU) while
    ``working``, stands still otherwise; ``gone`` answers ``None`` (the process ended)."""

    def __init__(self, working: bool = True, share: float = 1.0) -> None:
        self.working, self.share, self.gone = working, share, False
        self.value, self.last = 0.0, time.monotonic()
        self.calls = 0

    def __call__(self) -> float | None:
        self.calls += 1
        now = time.monotonic()
        if self.working:
            self.value += (now - self.last) * self.share
        self.last = now
        return None if self.gone else self.value


# -- the rule, on the fake server -----------------------------------------------------------------


def test_a_silent_stream_is_not_cut_while_the_server_works(srv, caplog):
    """A stream silent for 3x its stall timeout, on a server that is busy meanwhile: one try,
    nothing thrown away, one log line for the silence."""
    probe = FakeProbe(working=True)
    b = OpenAIBackend(base_url=srv.base_url, model="m", request_timeout=30, stall_timeout=1.0, progress=probe)
    srv.queue(Reply(stall=3.0))
    with caplog.at_level(logging.INFO, logger="mathagent.agent.backends.progress"):
        out = run(b.generate(CHAT, GenerationParams()))
    assert out[0].text == ANSWER and srv.hits == 1 and not b.retry_log, errors(b)
    assert len(b.forgiven) >= 2 and {f.phase for f in b.forgiven} == {"stream"}
    assert all(f.busy_s >= 0.05 * f.window_s for f in b.forgiven)
    lines = [r.getMessage() for r in caplog.records if "the server is working" in r.getMessage()]
    assert len(lines) == 1, lines  # logged once per silence, however often it is forgiven


def test_a_silent_stream_on_an_idle_server_is_a_stall(srv):
    """The same silence while the server does nothing (stopped, deadlocked): a stall, retried."""
    probe = FakeProbe(working=False)
    b = OpenAIBackend(base_url=srv.base_url, model="m", request_timeout=30, stall_timeout=1.0, progress=probe)
    srv.queue(Reply(stall=30.0))
    t0 = time.monotonic()
    out = run(b.generate(CHAT, GenerationParams()))
    assert out[0].text == ANSWER and srv.hits == 2 and not b.forgiven
    assert len(b.retry_log) == 1
    err = errors(b)[0]
    assert "StallTimeout: stream stalled" in err and "the server was not working" in err, err
    assert time.monotonic() - t0 < 20  # judged at the stall timeout, not at the request timeout


def test_a_server_that_stops_working_mid_silence_is_a_stall(srv):
    """Forgiven while busy, then the server goes idle (e.g. SIGSTOP): the next judgement stalls."""
    probe = FakeProbe(working=True)
    b = OpenAIBackend(base_url=srv.base_url, model="m", request_timeout=60, stall_timeout=1.0, progress=probe)
    srv.queue(Reply(stall=60.0))

    async def go():
        loop = asyncio.get_running_loop()
        loop.call_later(2.5, lambda: setattr(probe, "working", False))
        return await b.generate(CHAT, GenerationParams())

    out = run(go())
    assert out[0].text == ANSWER and srv.hits == 2 and b.forgiven
    assert "the server was not working" in errors(b)[0]


def test_headers_wait_is_forgiven_while_the_server_works(srv):
    """No response headers for 3x the stall timeout (e.g. a one-slot server finishing a generation
    we gave up on), the server busy: waited for, bounded by the request timeout."""
    probe = FakeProbe(working=True)
    b = OpenAIBackend(base_url=srv.base_url, model="m", request_timeout=30, stall_timeout=1.0, progress=probe)
    srv.queue(Reply(delay=3.0))
    out = run(b.generate(CHAT, GenerationParams()))
    assert out[0].text == ANSWER and srv.hits == 1 and not b.retry_log, errors(b)
    assert b.forgiven and b.forgiven[0].phase == "headers"


def test_headers_wait_on_an_idle_server_is_a_stall(srv):
    probe = FakeProbe(working=False)
    b = OpenAIBackend(base_url=srv.base_url, model="m", request_timeout=30, stall_timeout=1.0, progress=probe)
    srv.queue(Reply(delay=30.0))
    out = run(b.generate(CHAT, GenerationParams()))
    assert out[0].text == ANSWER and srv.hits == 2
    err = errors(b)[0]
    assert "StallTimeout: no response within" in err and "not working" in err, err


def test_a_forgiven_silence_is_bounded_by_the_request_timeout(srv):
    """A server busy forever but never answering this request: given up at the request timeout."""
    probe = FakeProbe(working=True)
    b = OpenAIBackend(base_url=srv.base_url, model="m", request_timeout=3, stall_timeout=1.0, progress=probe)
    srv.queue(Reply(stall=60.0), Reply(delay=60.0))
    t0 = time.monotonic()
    out = run(b.generate(CHAT, GenerationParams()))
    took = time.monotonic() - t0
    assert out[0].text == ANSWER and srv.hits == 3
    first, second = errors(b)
    assert "StallTimeout" in first and "while the server was working" in first, first
    assert "RequestTimeout: no token within 3 s" in second, second
    assert took < 30


def test_a_vanished_server_is_a_stall(srv):
    """A probe that cannot be read (the process is gone) is no evidence of work."""
    probe = FakeProbe(working=True)
    probe.gone = True
    b = OpenAIBackend(base_url=srv.base_url, model="m", request_timeout=30, stall_timeout=1.0, progress=probe)
    srv.queue(Reply(stall=30.0))
    out = run(b.generate(CHAT, GenerationParams()))
    assert out[0].text == ANSWER and srv.hits == 2 and not b.forgiven
    assert "not working" in errors(b)[0]


def test_a_barely_busy_server_is_idle(srv):
    """Busy 1% of the time (an idle server's housekeeping is ~0.1%) is not working."""
    probe = FakeProbe(working=True, share=0.01)
    b = OpenAIBackend(base_url=srv.base_url, model="m", request_timeout=30, stall_timeout=1.0, progress=probe)
    srv.queue(Reply(stall=30.0))
    run(b.generate(CHAT, GenerationParams()))
    assert srv.hits == 2 and not b.forgiven and "not working" in errors(b)[0]


def test_a_streaming_request_reads_the_probe_rarely(srv):
    """The probe is sampled every tenth of the stall timeout while a request waits, not per event."""
    probe = FakeProbe(working=True)
    text = " ".join(["word"] * 200)
    b = OpenAIBackend(
        base_url=srv.base_url, model="m", request_timeout=30, stall_timeout=10.0, progress=probe
    )
    srv.queue(Reply(text=text, piece_delay=0.005))
    t0 = time.monotonic()
    out = run(b.generate(CHAT, GenerationParams()))
    took = time.monotonic() - t0
    assert out[0].text == text and not b.retry_log
    assert probe.calls <= 2 + took / 1.0, (probe.calls, took)


def test_remote_servers_keep_the_plain_rules(srv):
    """Without a probe (any server mathagent did not start) a silence past the stall timeout is a
    stall, with today's message."""
    b = make_backend("m", base_url=srv.base_url, stall_timeout=1.0, request_timeout=30)
    assert isinstance(b, OpenAIBackend) and b.progress is None
    srv.queue(Reply(stall=30.0))
    out = run(b.generate(CHAT, GenerationParams()))
    assert out[0].text == ANSWER and srv.hits == 2
    assert errors(b)[0] == "StallTimeout: stream stalled: no data for 1 s after 7 events (stall timeout)"


# -- the probe of a real process tree -------------------------------------------------------------

BUSY = "import time\nwhile True: pass\n"
SLEEPY = "import time\ntime.sleep(600)\n"
PARENT = (  # a parent that only waits for a busy child: the tree is busy, the parent is not
    f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {BUSY!r}]).wait()\n"
)


def spawn(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


def kill(p: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait(10)


def busy_over(act: ProcessActivity, seconds: float) -> tuple[float, float]:
    a, t = act(), time.monotonic()
    time.sleep(seconds)
    b = act()
    assert a is not None and b is not None
    return b - a, time.monotonic() - t


def test_activity_of_a_busy_and_a_sleeping_process():
    busy, sleepy = spawn(BUSY), spawn(SLEEPY)
    try:
        time.sleep(0.3)
        work, window = busy_over(ProcessActivity(busy.pid), 1.0)
        # running or waiting for a CPU the whole window, however loaded the machine is
        assert work >= 0.5 * window, (work, window)
        work, window = busy_over(ProcessActivity(sleepy.pid), 1.0)
        assert work < 0.05 * window, (work, window)
    finally:
        kill(busy)
        kill(sleepy)


def test_activity_counts_the_whole_tree_and_stops_when_stopped():
    parent = spawn(PARENT)
    try:
        deadline = time.monotonic() + 30
        while len(descendants(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(descendants(parent.pid)) == 2
        act = ProcessActivity(parent.pid)
        work, window = busy_over(act, 1.0)
        assert work >= 0.5 * window, (work, window)
        os.killpg(parent.pid, signal.SIGSTOP)
        try:
            time.sleep(0.2)
            work, window = busy_over(act, 1.0)
            assert work < 0.05 * window, (work, window)
        finally:
            os.killpg(parent.pid, signal.SIGCONT)
    finally:
        kill(parent)
    assert ProcessActivity(parent.pid)() is None and descendants(parent.pid) == []
