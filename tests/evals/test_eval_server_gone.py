"""An eval whose model server exits stops with the reason and resumes, instead of recording every
sample after the crash as failed (a crashed server once turned 24 samples of a study run into
"Connection error" failures, one every ~10 s, until the run was stopped by hand)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mathagent.agent.backends.base import ServerGone
from mathagent.agent.llama_server import LlamaServer
from mathagent.agent.procstat import descendants
from mathagent.agent.trace import StopReason, Trace
from mathagent.evals.datasets import Problem
from mathagent.evals.runner import run_eval_async, run_eval_by_problem
from mathagent.evals.runs import RunDir

PROBLEMS = [Problem(id=f"p{i}", question=f"{i} + 1", gold=str(i + 1), dataset="generic") for i in range(4)]


def _trace(problem: Problem) -> Trace:
    return Trace(problem=problem.question, final_answer=problem.gold, stop_reason=StopReason.ANSWERED)


@pytest.mark.parametrize("by_problem", [False, True])
def test_the_run_stops_on_a_gone_server_and_the_resume_runs_the_rest(tmp_path, by_problem):
    crashed = {"p2"}

    async def solve_fn(problem: Problem, i: int, seed: int | None) -> Trace:
        if problem.id in crashed:
            raise ServerGone("the llama-cpp-python server of m (pid 1) exited with signal 11 (SIGSEGV)")
        return _trace(problem)

    async def solve_problem(problem: Problem) -> list[Trace]:
        return [await solve_fn(problem, i, None) for i in range(2)]

    def go(run: RunDir) -> dict[str, int]:
        if by_problem:
            return asyncio.run(run_eval_by_problem(PROBLEMS, solve_problem, run, k=2))
        return asyncio.run(run_eval_async(PROBLEMS, solve_fn, run, k=2, concurrency=1))

    with RunDir.open(tmp_path / "run", {"test": "gone"}) as run:
        with pytest.raises(ServerGone, match="SIGSEGV"):
            go(run)
        recs = run.records()
    assert recs and all(r["status"] == "ok" for r in recs)  # nothing recorded as failed
    assert {r["problem_id"] for r in recs} <= {"p0", "p1", "p3"}
    crashed.clear()  # the server runs again
    with RunDir.open(tmp_path / "run", {"test": "gone"}) as run:
        counts = go(run)
        assert counts["failed"] == 0 and counts["ran"] == 8 - len(recs)
        latest = run.records_of([(p.id, i) for p in PROBLEMS for i in range(2)])
    assert len(latest) == 8 and all(r["status"] == "ok" and r["correct"] for r in latest)


def _server_of(pid: int) -> int | None:
    """The pid of the llama.cpp server a ``mathagent eval`` process started (its orphan guard child)."""
    for child in descendants(pid)[1:]:
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"mathagent.agent.orphan_guard" in cmd:
            return child
    return None


EVAL_POT = [
    sys.executable, "-m", "mathagent.agent.cli", "eval", "--dataset", "gsm8k", "--limit", "6", "--k", "1",
    "--temperature", "0", "--mode", "pot", "--model", "qwen2.5-coder-0.5b", "--concurrency", "1", "--json",
]  # fmt: skip


def _stopped_after_first_sample(
    argv: list[str], env: dict[str, str], run_dir: Path, stop: Callable[[subprocess.Popen], None]
) -> str:
    """Start the eval, call ``stop(proc)`` once its first sample is saved, and check that it exits 1
    with only finished samples recorded (between 1 and 5, none failed); returns its stderr."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    samples = run_dir / "samples.jsonl"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if samples.exists() and samples.read_text().strip():
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        stop(proc)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err
    recs = [json.loads(x) for x in samples.read_text().splitlines()]
    assert 1 <= len(recs) < 6 and all(r["status"] == "ok" for r in recs), recs
    return err


def _resume_finishes(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["counts"]["pending"] == 0 and summary["n_failed"] == 0, summary["counts"]


@pytest.mark.server
@pytest.mark.model
@pytest.mark.kernel
@pytest.mark.timeout(1200)
def test_eval_stops_when_the_bundled_server_crashes_and_resumes(tmp_path):
    """A real ``mathagent eval`` on the 0.5B: its server is crashed (SIGSEGV, as a bad llama.cpp build
    dies) after the first sample; the eval exits 1 with the signal and the command that resumes, no
    sample is recorded as failed, and the same command then finishes the run."""
    run_dir = tmp_path / "run"
    argv = [*EVAL_POT, "--run-dir", str(run_dir)]
    env = {**os.environ, "MATHAGENT_LLAMA_THREADS": "1"}

    def crash(proc: subprocess.Popen) -> None:
        server = _server_of(proc.pid)
        assert server is not None
        os.kill(server, signal.SIGSEGV)

    err = _stopped_after_first_sample(argv, env, run_dir, crash)
    assert "signal 11 (SIGSEGV)" in err and "to resume: mathagent eval" in err, err
    _resume_finishes(argv, env)


@pytest.mark.server
@pytest.mark.model
@pytest.mark.kernel
@pytest.mark.timeout(1200)
def test_eval_stops_when_a_server_it_did_not_start_stops_and_resumes(tmp_path):
    """A real llama-cpp-python server started apart from the eval (as ``mathagent model serve`` runs
    one; the eval reaches it by ``--base-url``) is stopped after the first sample: the eval exits 1
    once the server has refused connections for its patience, no sample is recorded as failed, and
    the same command finishes the run against the server started again on the same port."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "MATHAGENT_RETRY_WAIT_SCALE": "0.05"}  # 3 s of the 60 s patience
    server = LlamaServer("qwen2.5-coder-0.5b", n_ctx=2048, n_threads=1).start()
    again: LlamaServer | None = None
    argv = [*EVAL_POT, "--base-url", server.base_url, "--run-dir", str(run_dir)]
    try:
        err = _stopped_after_first_sample(argv, env, run_dir, lambda _proc: server.stop())
        assert f"the model server at {server.base_url} refused every connection" in err, err
        assert "to resume: mathagent eval" in err, err
        again = LlamaServer("qwen2.5-coder-0.5b", port=server.port, n_ctx=2048, n_threads=1).start()
        _resume_finishes(argv, env)
    finally:
        server.stop()
        if again is not None:
            again.stop()
