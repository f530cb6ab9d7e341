"""Agent overhead: the loop's wall time against the pure server time for the same requests.

A fake OpenAI-compatible server (tests/agent/fakeserver.py) answers every completion after a fixed
latency: first a code turn, then (once the prompt holds an ```output block) a final answer. N
trajectories run through :func:`mathagent.agent.loop.solve` at concurrency C with the real
OpenAIBackend; code runs in an instant in-process sandbox so that only the agent's own work (prompt
building, parsing, answer extraction, trace recording, HTTP client) is measured, not kernels. With
``--real-sandbox`` every trajectory gets a real sandboxed kernel from a ``KernelPool`` (as ``mathagent
eval`` does), so the ratio includes forking the kernel and running its cell.
The baseline sends the same number of requests with the same prompts through the same backend at the
same concurrency, with no agent around them.

    python bench/agent_overhead_bench.py [--n 200] [--concurrency 16] [--latency 0.25] [--real-sandbox]

Prints the figures and the ratio agent wall / pure server wall (target <= 1.03).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "agent"))

from fakeserver import FakeOpenAIServer  # noqa: E402
from mathagent.agent.backends.base import GenerationParams  # noqa: E402
from mathagent.agent.backends.openai_backend import OpenAIBackend  # noqa: E402
from mathagent.agent.config import AgentConfig  # noqa: E402
from mathagent.agent.loop import solve  # noqa: E402
from mathagent.sandbox.base import ExecResult, IsolationLevel  # noqa: E402

CODE_TURN = "Compute it.\n```python\nprint(6 * 7)\n```\n"
ANSWER_TURN = "The result is $\\boxed{42}$."


def responder(body: dict) -> str:
    msgs = body.get("messages")
    tail = msgs[-1]["content"] if msgs else body.get("prompt", "")[-200:]
    return ANSWER_TURN if "```output" in tail else CODE_TURN


class InstantSandbox:
    """Answers every cell at once with ``42`` (the bench measures the loop, not the kernel)."""

    level = IsolationLevel.NONE

    def run(self, code: str, timeout: float | None = None) -> ExecResult:
        return ExecResult(stdout="42\n", wall_s=0.0)

    def reset(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None: ...


class InstantProvider:
    level = IsolationLevel.NONE

    def acquire(self) -> InstantSandbox:
        return InstantSandbox()

    def close(self) -> None: ...


async def agent_run(
    backend, n: int, concurrency: int, config: AgentConfig, provider=None
) -> tuple[float, list]:
    sem = asyncio.Semaphore(concurrency)
    provider = provider or InstantProvider()

    async def one(i: int):
        async with sem:
            return await solve("What is 6 times 7?", backend, provider, config, sample_index=i)

    t0 = time.perf_counter()
    traces = await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - t0, traces


async def pure_run(backend, prompts: list, concurrency: int, params: GenerationParams) -> float:
    """The same requests, each trajectory's calls in sequence, C trajectories at a time."""
    sem = asyncio.Semaphore(concurrency)

    async def one(seq: list) -> None:
        async with sem:
            for p in seq:
                await backend.generate(p, params)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(seq) for seq in prompts))
    return time.perf_counter() - t0


async def main_async(args: argparse.Namespace) -> None:
    config = AgentConfig(verify=False, max_tokens=256)
    provider = None
    if args.real_sandbox:
        from mathagent.sandbox import KernelPool

        provider = KernelPool(size=args.pool_size or args.concurrency)
    with FakeOpenAIServer(responder=responder, latency=args.latency) as srv:
        backend = OpenAIBackend(base_url=srv.base_url, model="fake", max_concurrency=args.concurrency)
        try:
            await agent_run(backend, args.concurrency, args.concurrency, config, provider)  # warm-up
            start = len(srv.requests)
            agent_s, traces = await agent_run(backend, args.n, args.concurrency, config, provider)
            bodies = srv.requests[start:]
            assert all(t.final_answer == "42" for t in traces), {t.stop_reason for t in traces}
            calls = sum(t.meta["calls"] for t in traces)
            per_traj = calls // args.n
            # the recorded prompts, grouped per trajectory (calls per trajectory are identical)
            msgs = [b["messages"] for b in bodies if "messages" in b]
            seqs = [msgs[i : i + per_traj] for i in range(0, len(msgs), per_traj)]
            seqs = [[m for m in seq] for seq in seqs][: args.n]
            params = GenerationParams(max_tokens=256, stop=("```output",))
            pure_s = await pure_run(backend, seqs, args.concurrency, params)
        finally:
            await backend.aclose()
            if provider is not None:
                provider.close()
    ideal = args.n * per_traj * args.latency / args.concurrency
    model_s = sum(t.timings["model"] for t in traces)
    sandbox = (
        f"real kernels ({provider.level.value}, {provider.slots_started} sandboxes started)"
        if provider is not None
        else "instant (in-process)"
    )
    print(
        f"trajectories={args.n} concurrency={args.concurrency} latency={args.latency}s calls/trajectory={per_traj}"
        f" sandbox={sandbox}"
    )
    print(f"agent wall      {agent_s:8.3f} s")
    print(f"pure server     {pure_s:8.3f} s   (same requests, same backend, no agent)")
    print(f"ideal           {ideal:8.3f} s   (calls x latency / concurrency)")
    print(f"ratio agent/pure  = {agent_s / pure_s:.4f}   (target <= 1.03)")
    print(f"ratio agent/ideal = {agent_s / ideal:.4f}")
    print(f"model time summed over trajectories {model_s:.3f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--latency", type=float, default=0.25)
    p.add_argument("--real-sandbox", action="store_true", help="run each cell in a real sandboxed kernel")
    p.add_argument("--pool-size", type=int, default=None, help="ready kernels (default: concurrency)")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
