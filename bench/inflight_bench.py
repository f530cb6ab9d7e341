"""Requests in flight: does ``mathagent eval`` keep ``--max-inflight`` requests going, with real kernels?

A loopback fake OpenAI-compatible server (tests/agent/fakeserver.py) answers every request after a
fixed latency (0.5 s by default) and counts the requests it holds at each moment. Each trajectory is
two model calls: a code turn (```python print(6 * 7)```) that a real sandboxed kernel runs, then the
final answer once the prompt holds the output. ``mathagent eval`` runs in this process over N such
problems, with verification off, at ``--max-inflight`` M (its other limits derived as usual), as a
child process stopped with Ctrl-C after ``--time-limit`` seconds (the figures then cover what finished).

Printed per level: requests in flight (max, and the time-weighted mean over the run), trajectories/s,
wall time against the ideal (N x 2 calls x latency / M: the server's time if M requests were always in
flight) as the agent's overhead ratio, the eval's CPU seconds and the load average.

    python bench/inflight_bench.py --max-inflight 64 --n 400
    python bench/inflight_bench.py --max-inflight 256 --n 800 [--latency 0.5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "agent"))

from fakeserver import FakeOpenAIServer  # noqa: E402

CODE_TURN = "Let me compute it.\n```python\nprint(6 * 7)\n```\n"
ANSWER_TURN = "The result is $\\boxed{42}$."
BACKLOG = 1024


def responder(body: dict[str, Any]) -> str:
    """A code turn first; the final answer once the model has spoken (its code ran)."""
    msgs = body.get("messages")
    if msgs:
        answered = any(m.get("role") == "assistant" for m in msgs)
    else:
        answered = str(body.get("prompt", "")).count("assistant") > 1
    return ANSWER_TURN if answered else CODE_TURN


@dataclass
class CountingServer(FakeOpenAIServer):
    """:class:`FakeOpenAIServer` that counts the completion requests it holds at each moment.

    ``gate``: hold every request until that many are held at once (at most ``gate_timeout_s``), so a
    test can check that a client reaches a concurrency level without depending on timing.
    """

    gate: int | None = None
    gate_timeout_s: float = 60.0
    in_flight: int = 0
    max_in_flight: int = 0
    served: int = 0
    _area: float = 0.0
    _first: float | None = None
    _last: float = 0.0
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> CountingServer:
        super().start()
        assert self._httpd is not None
        # socketserver listens with a backlog of 5: hundreds of clients connecting at once would be
        # refused (the client retries, which hides the concurrency being measured)
        self._httpd.socket.listen(BACKLOG)
        return self

    def _change(self, delta: int) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = now
        else:
            self._area += self.in_flight * (now - self._last)
        self._last = now
        self.in_flight += delta
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.served += delta < 0
        self._cond.notify_all()

    def _handle(self, h: Any, body: dict[str, Any], *, chat: bool) -> None:
        with self._cond:
            self._change(+1)
            if self.gate:
                self._cond.wait_for(lambda: self.max_in_flight >= (self.gate or 0), self.gate_timeout_s)
        try:
            super()._handle(h, body, chat=chat)
        finally:
            with self._cond:
                self._change(-1)

    def mean_in_flight(self) -> float:
        """Time-weighted mean of the requests held, from the first request to the last answer."""
        span = self._last - (self._first or self._last)
        return self._area / span if span > 0 else 0.0


def write_problems(path: Path, n: int) -> Path:
    rows = [{"question": f"What is 6 times 7? (copy {i})", "answer": "42"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_level(
    max_inflight: int,
    n: int,
    latency: float,
    workdir: Path,
    extra: list[str] | None = None,
    time_limit_s: float | None = None,
    code: bool = True,
) -> dict:
    """One ``mathagent eval`` (a child process) at ``max_inflight`` against a counting fake server in
    this process; stopped (SIGINT, as Ctrl-C) after ``time_limit_s``. The figures as a dict."""
    problems = write_problems(workdir / f"problems-{max_inflight}.jsonl", n)
    run_dir = workdir / f"run-{max_inflight}"
    reply = {"responder": responder} if code else {"completions": [ANSWER_TURN]}
    with CountingServer(latency=latency, model="fake", **reply) as srv:  # type: ignore[arg-type]
        argv = [sys.executable, "-m", "mathagent.agent.cli", "eval", "--dataset", str(problems),
                "--backend", "openai", "--base-url", srv.base_url, "--model", "fake",
                "--max-inflight", str(max_inflight), "--no-verify", "--max-rounds", "2", "--continue-mode", "user",
                "--run-dir", str(run_dir), "--json", *(extra or [])]  # fmt: skip
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stopped = False
        try:
            out, err = proc.communicate(timeout=time_limit_s)
        except subprocess.TimeoutExpired:
            stopped = True
            proc.send_signal(signal.SIGINT)
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
        wall = time.perf_counter() - t0
        child = resource.getrusage(resource.RUSAGE_CHILDREN)
    records = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines() if x.strip()]
    header = json.loads((run_dir / "header.json").read_text())
    done = len(records)
    failed = sum(r.get("status") == "failed" for r in records)
    calls = srv.served
    ideal = calls * latency / max_inflight
    limits_line = next((x for x in err.splitlines() if x.startswith("limits on")), "")
    return {
        "max_inflight": max_inflight,
        "code": code,
        "limits": header.get("limits"),
        "limits_line": limits_line,
        "trajectories": n,
        "finished": done,
        "failed": failed,
        "failed_reasons": sorted(
            {(r.get("error") or "")[:80] for r in records if r.get("status") == "failed"}
        ),
        "correct": sum(bool(r.get("correct")) for r in records),
        "stopped_at_time_limit": stopped,
        "exit": proc.returncode,
        "model_calls": calls,
        "latency_s": latency,
        "wall_s": round(wall, 2),
        "trajectories_per_s": round(done / wall, 2),
        "in_flight_max": srv.max_in_flight,
        "in_flight_mean": round(srv.mean_in_flight(), 1),
        "ideal_wall_s": round(ideal, 2),
        "overhead_ratio": round(wall / ideal, 2) if ideal else None,
        "eval_cpu_s": round(child.ru_utime + child.ru_stime - before.ru_utime - before.ru_stime, 1),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "cores": len(os.sched_getaffinity(0)),
        "stdout_tail": out[-300:] if proc.returncode else "",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-inflight", type=int, nargs="+", default=[64])
    p.add_argument("--n", type=int, default=400, help="trajectories (problems) per level")
    p.add_argument("--latency", type=float, default=0.5, help="server seconds per call (default 0.5)")
    p.add_argument("--pool-size", type=int, default=None, help="passed to eval (default: derived)")
    p.add_argument(
        "--time-limit", type=float, default=180, help="stop a level's eval after this many seconds (Ctrl-C)"
    )
    p.add_argument(
        "--no-code",
        action="store_true",
        help="the model answers at once (one call, no kernel): the agent and HTTP alone",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    extra = ["--pool-size", str(args.pool_size)] if args.pool_size else []
    results = []
    with tempfile.TemporaryDirectory(prefix="inflight-bench-") as tmp:
        for m in args.max_inflight:
            r = run_level(m, args.n, args.latency, Path(tmp), extra, args.time_limit, code=not args.no_code)
            results.append(r)
            if not args.json:
                lim = r["limits"] or {}
                print(
                    f"max-inflight {m}{'' if r['code'] else ' (no code)'}: concurrency {lim.get('concurrency')}, pool {lim.get('pool_size')} | "
                    f"{r['finished']}/{r['trajectories']} trajectories finished"
                    f"{' (stopped at the time limit)' if r['stopped_at_time_limit'] else ''}, "
                    f"{r['correct']} right, {r['failed']} failed {r['failed_reasons']}, {r['model_calls']} calls | "
                    f"in flight max {r['in_flight_max']} mean {r['in_flight_mean']} | "
                    f"{r['trajectories_per_s']} traj/s | wall {r['wall_s']} s vs ideal {r['ideal_wall_s']} s "
                    f"(overhead ratio {r['overhead_ratio']}) | eval CPU {r['eval_cpu_s']} s, "
                    f"load {r['loadavg_1m_after']} on {r['cores']} cores",
                    flush=True,
                )
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
