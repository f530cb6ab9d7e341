"""Telling stuck from slow by evidence (agent/backends/patience.py): the rule on its own, then on a
real loopback server (tests/agent/fakeserver.py) through OpenAIBackend."""

from __future__ import annotations

import asyncio

import pytest
from backend_helpers import ANSWER, CHAT, errors
from fakeserver import FakeOpenAIServer, Reply
from mathagent.agent.backends.base import GenerationParams
from mathagent.agent.backends.openai_backend import OpenAIBackend
from mathagent.agent.backends.patience import Patience

# -- the rule -------------------------------------------------------------------------------------


def test_nothing_is_judged_before_enough_latencies_are_known():
    p = Patience(factor=10, floor_s=2, min_samples=4)
    for i in range(3):
        p.record("headers", started=float(i), now=i + 0.1)
    assert p.limit("headers") is None
    assert not p.stuck("headers", started=0.0, now=1000.0)  # overtaken, waited long: still unknown
    p.record("headers", started=3.0, now=3.1)
    assert p.limit("headers") == 2.0


def test_the_limit_is_a_multiple_of_the_p95_with_a_floor():
    p = Patience(factor=10, floor_s=2, min_samples=4)
    for i, lat in enumerate([0.1] * 18 + [0.5, 3.0]):  # p95 of 20: the 19th smallest
        p.record("first", started=float(i), now=i + lat)
    assert p.limit("first") == pytest.approx(5.0)
    fast = Patience(factor=10, floor_s=2, min_samples=4)
    for i in range(8):
        fast.record("first", started=float(i), now=i + 0.01)
    assert fast.limit("first") == 2.0  # 10 x 0.01 s, raised to the floor
    assert fast.limit("headers") is None  # phases are kept apart


def test_only_a_request_overtaken_by_a_later_one_is_stuck():
    p = Patience(factor=2, floor_s=1, min_samples=2)
    p.record("headers", started=10.0, now=10.2)
    p.record("headers", started=11.0, now=11.2)
    assert p.limit("headers") == 1.0
    assert not p.stuck("headers", started=11.0, now=100.0)  # waited long, but nobody sent later passed
    assert not p.stuck("headers", started=10.5, now=11.3)  # overtaken, but not waited long enough
    assert p.stuck("headers", started=10.5, now=11.6)
    assert p.overtaken("headers", 10.5) and not p.overtaken("first", 10.5)


@pytest.mark.parametrize("kw", [{"factor": 0.5}, {"floor_s": 0}, {"min_samples": 0}, {"keep": 2}])
def test_bad_parameters_are_refused(kw):
    with pytest.raises(ValueError):
        Patience(**kw)


# -- on a real loopback server --------------------------------------------------------------------


@pytest.fixture
def srv():
    with FakeOpenAIServer(completions=[ANSWER], latency=0.05) as s:
        yield s


def backend(srv: FakeOpenAIServer, **kw) -> OpenAIBackend:
    b = OpenAIBackend(base_url=srv.base_url, model="m", **kw)
    b.patience = Patience(factor=5, floor_s=1.0, min_samples=4)
    return b


async def warm(b: OpenAIBackend, n: int = 4) -> None:
    for _ in range(n):
        await b.generate(CHAT, GenerationParams())


@pytest.mark.server
def test_a_hung_request_overtaken_by_later_ones_is_given_up_early(srv):
    b = backend(srv, stall_timeout=120)  # the fixed limit alone would hold it for 2 minutes

    async def main() -> list[str]:
        await warm(b)
        srv.queue(Reply(delay=120.0))
        hung = asyncio.create_task(b.generate(CHAT, GenerationParams()))
        await asyncio.sleep(0.3)  # it reached the server first, and got the hang
        later = [await b.generate(CHAT, GenerationParams()) for _ in range(3)]
        first = await asyncio.wait_for(hung, timeout=60)
        return [x[0].text for x in [first, *later]]

    assert asyncio.run(main()) == [ANSWER] * 4
    assert len(b.retry_log) == 1 and "StuckRequest: request stuck: no response headers" in errors(b)[0]
    assert srv.hits == 4 + 4 + 1


@pytest.mark.server
def test_a_slow_request_that_nobody_overtakes_keeps_the_fixed_limits(srv):
    """A serial server answers in order: a long silence with no later request answered is not stuck."""
    b = backend(srv, stall_timeout=30, request_timeout=30)

    async def main() -> None:
        await warm(b)
        srv.queue(Reply(delay=3.0))  # 3 s to the headers: 60 x what this server showed
        srv.queue(Reply(prefill=3.0))  # 3 s from the headers to the first token
        for _ in range(2):
            assert (await b.generate(CHAT, GenerationParams()))[0].text == ANSWER

    asyncio.run(main())
    assert not b.retry_log, errors(b)
    assert srv.hits == 4 + 2


@pytest.mark.server
def test_a_generation_that_produces_tokens_is_never_judged(srv):
    b = backend(srv, stall_timeout=30, request_timeout=30)
    slow_text = "y" * 32  # 8 events 0.6 s apart: ~5 s, while later requests finish at once

    async def main() -> list[str]:
        await warm(b)
        srv.queue(Reply(text=slow_text, piece_delay=0.6))
        slow = asyncio.create_task(b.generate(CHAT, GenerationParams()))
        await asyncio.sleep(0.3)
        for _ in range(3):
            await b.generate(CHAT, GenerationParams())
        return [(await slow)[0].text]

    assert asyncio.run(main()) == [slow_text]
    assert not b.retry_log, errors(b)
