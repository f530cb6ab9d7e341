"""Samples/s of the bundled model's server: llama-cpp-python's vs llama.cpp's llama-server, side by side.

    python bench/throughput_bench.py [--model qwen2.5-coder-1.5b] [--problems 4] [--k 4] [--parallel 4]
        [--max-tokens 384] [--max-rounds 3] [--temperature 0] [--servers llama-cpp-python,llama-server]
        [--verify] [--no-pause-study] [--json FILE]

What it runs: both servers are started (an idle one takes no CPU); the first ``--problems`` GSM8K
test problems of a seeded shuffle go through the real agent loop (``solve_k``: real sandboxed Jupyter
kernels, mode ``loop``, verification off unless ``--verify``), ``--k`` samples each, one problem at a
time, each server used as the product uses it: on llama-server the ``k`` samples run together (one slot
each), on llama-cpp-python one after another (``solve_k`` does so on a server with one KV state, where
interleaved samples re-read each other's prompts); each problem runs on both servers,
alternating which goes first (A B, B A, ...), so that the machine's changing load hits both alike.
Same settings for both. llama-server runs ``--parallel`` slots with continuous batching;
llama-cpp-python's server serves one request at a time.

It prints, per server: wall seconds, samples/s, completion tokens/s (tokens from the traces),
model calls, accuracy and the final answers; then the ratio llama-server / llama-cpp-python; then
whether the outputs are the same (per sample: final answer and the whole generated text); and the
prompt-cache reuse across rounds: prompt tokens sent (from the traces) vs prompt tokens the server
actually evaluated (summed from its log's ``prompt eval time = ... ms / N tokens`` lines, which both
servers print per request), with the seconds spent evaluating prompts (llama-server only:
llama-cpp-python's per-request prompt timer reads ~0 ms, so it is shown as n/a).

The background method study competes for the 2 cores: while a server is measured, the process group
of each ``mathagent.agent.cli eval`` process writing into ``bench/study/runs``, and of the model
server it started, is paused (SIGSTOP) and always resumed (SIGCONT) after,
also on error, Ctrl-C or SIGTERM. ``--no-pause-study`` leaves it running.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import os
import re
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from mathagent.agent.backends.base import GenerationParams, server_slots
from mathagent.agent.backends.openai_backend import OpenAIBackend
from mathagent.agent.config import AgentConfig
from mathagent.agent.formats import get_format
from mathagent.agent.grading import extract_answer, is_equivalent
from mathagent.agent.llama_server import LlamaServer
from mathagent.agent.loop import solve_k
from mathagent.agent.modes import default_prompt
from mathagent.agent.native_server import KINDS, LLAMA_CPP_PYTHON, LLAMA_SERVER
from mathagent.agent.prompts import load_prompt
from mathagent.evals.datasets import load_problems
from mathagent.sandbox import KernelPool

STAND_IN = "(stand-in output: this benchmark runs no code)"
PROMPT_EVAL = re.compile(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens")
STUDY = "mathagent.agent.cli eval"
STUDY_RUNS = "bench/study/runs"
"""Only the method study's evals are paused (their run folders lie there), never other people's."""

# -- pausing the background study -----------------------------------------------------------------

_PAUSED: set[int] = set()


def study_groups() -> set[int]:
    """Process groups of the method study's ``mathagent.agent.cli eval`` processes and of the model
    servers they started (not this process's group)."""
    groups: set[int] = set()
    cmds: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                cmds[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
    evals = {pid for pid, cmd in cmds.items() if STUDY in cmd and STUDY_RUNS in cmd}
    # ... and the model server each of them started (its own group, under an orphan guard naming it)
    servers = {pid for pid, cmd in cmds.items() if any(f"orphan_guard {e} " in cmd for e in evals)}
    for pid in evals | servers:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            continue
    groups.discard(os.getpgrp())
    return groups


def pause_study() -> None:
    for g in study_groups():
        try:
            os.killpg(g, signal.SIGSTOP)
            _PAUSED.add(g)
            print(f"  (paused the study's process group {g})", flush=True)
        except ProcessLookupError:
            pass


def resume_study() -> None:
    for g in list(_PAUSED):
        try:
            os.killpg(g, signal.SIGCONT)
            print(f"  (resumed the study's process group {g})", flush=True)
        except ProcessLookupError:
            pass
        _PAUSED.discard(g)


def _on_signal(sig: int, _frame: object) -> None:
    resume_study()
    raise SystemExit(128 + sig)


atexit.register(resume_study)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


# -- one server ------------------------------------------------------------------------------------


def log_prompt_evals(server: LlamaServer, start: int) -> list[tuple[float, int]]:
    """(ms, tokens) of each ``prompt eval time`` line the server logged since byte ``start``."""
    if server.log_path is None or not server.log_path.exists():
        return []
    with open(server.log_path, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    # both kinds of one model append to the same log file: keep this kind's lines
    mark = "print_timing" if server.kind == LLAMA_SERVER else "llama_perf_context_print"
    lines = [line for line in text.splitlines() if mark in line]
    return [(float(ms), int(n)) for line in lines for ms, n in PROMPT_EVAL.findall(line)]


class Arm:
    """One server kind under test: its server, a backend on it, and what it produced."""

    def __init__(self, kind: str, args: argparse.Namespace) -> None:
        # llama-cpp-python logs its per-request timings only when verbose
        extra = ["--verbose", "True"] if kind == LLAMA_CPP_PYTHON else []
        self.kind = kind
        self.server = LlamaServer(
            args.model,
            kind=kind,
            parallel=args.parallel,
            n_ctx=args.n_ctx,
            n_threads=args.n_threads,
            extra_args=extra,
        )
        t0 = time.perf_counter()
        self.server.start()
        self.startup = time.perf_counter() - t0
        self.backend = OpenAIBackend(
            model=self.server.alias,
            base_url=self.server.base_url,
            gguf_path=self.server.path,
            context_window=self.server.n_ctx,
            server=self.server,  # as the product's backend on a server it started: solve_k reads its slots
            max_concurrency=args.k,
            # a queued request on the one-at-a-time server may wait for k - 1 whole generations on a
            # busy machine: no retries (they would re-queue it and skew the figures)
            request_timeout=3600,
            stall_timeout=600,
        )
        self.problems: list[dict[str, Any]] = []
        self.log_start = 0

    async def warm_up(self) -> None:
        """Page the weights in and start the slots, outside the timed part."""
        await self.backend.generate("Say OK.", GenerationParams(max_tokens=4, temperature=0.0))
        await asyncio.sleep(0.5)  # the server logs the warm-up's timings after its last chunk
        assert self.server.log_path is not None
        self.log_start = self.server.log_path.stat().st_size

    async def solve(self, p: Any, pool: KernelPool, config: AgentConfig, k: int) -> None:
        tp = time.perf_counter()
        traces = await solve_k(p.question, self.backend, pool, config, k=k, problem_id=p.id)
        self.problems.append(
            {
                "id": p.id,
                "gold": p.gold,
                "wall_s": round(time.perf_counter() - tp, 2),
                "samples": [
                    {
                        "answer": t.final_answer,
                        "correct": is_equivalent(t.final_answer, p.gold, p.grading_kind),
                        "stop": str(t.stop_reason.value),
                        "tokens_in": t.tokens_in,
                        "tokens_out": t.tokens_out,
                        "calls": t.meta.get("calls", 0),
                        "text": "\n".join(s.content for s in t.steps if s.kind.value != "execution"),
                        "error": t.error,
                    }
                    for t in traces
                ],
            }
        )
        print(f"  {self.kind}: problem {p.id} in {self.problems[-1]['wall_s']} s", flush=True)

    async def solve_raw(self, p: Any, args: argparse.Namespace) -> None:
        """``k`` concurrent conversations of the agent's own prompts, without kernels: round 1 is the
        agent's first call (system prompt + problem, markdown format, its stop string); when the model
        wrote code, the next round appends its text and a fixed stand-in ``output`` block, as the loop
        appends a real one, and continues the same raw prompt (which grows every round)."""
        fmt = get_format("markdown")
        system = load_prompt(default_prompt("loop") or fmt.name).text

        async def conversation(i: int) -> dict[str, Any]:
            prompt = fmt.build_prompt(p.question, [], system, render_chat=self.backend.render_chat)
            assert isinstance(prompt, str)
            texts: list[str] = []
            tok_in = tok_out = calls = 0
            for _ in range(args.max_rounds):
                params = GenerationParams(
                    temperature=args.temperature,
                    max_tokens=args.max_tokens,
                    stop=fmt.stop_strings,
                    seed=args.seed + i,
                )
                c = (await self.backend.generate(prompt, params))[0]
                calls += 1
                tok_in += c.prompt_tokens
                tok_out += c.completion_tokens
                texts.append(c.text)
                if fmt.parse_generation(c).code is None:
                    break
                prompt += c.text.rstrip("\n") + "\n```output\n" + STAND_IN + "\n```\n"
            answer = extract_answer("\n".join(texts), p.grading_kind)
            return {
                "answer": answer,
                "correct": is_equivalent(answer, p.gold, p.grading_kind),
                "tokens_in": tok_in,
                "tokens_out": tok_out,
                "calls": calls,
                "text": "\n".join(texts),
                "first_call": texts[0],
            }

        turns = asyncio.Semaphore(1 if server_slots(self.backend) == 1 else args.k)  # as solve_k does

        async def in_turn(i: int) -> dict[str, Any]:
            async with turns:
                return await conversation(i)

        tp = time.perf_counter()
        samples = await asyncio.gather(*(in_turn(i) for i in range(args.k)))
        self.problems.append(
            {"id": p.id, "gold": p.gold, "wall_s": round(time.perf_counter() - tp, 2), "samples": samples}
        )
        print(f"  {self.kind}: problem {p.id} in {self.problems[-1]['wall_s']} s", flush=True)

    async def close(self) -> dict[str, Any]:
        await asyncio.sleep(0.5)
        evals = log_prompt_evals(self.server, self.log_start)
        await self.backend.aclose()
        self.server.stop()
        samples = [s for p in self.problems for s in p["samples"]]
        wall = sum(p["wall_s"] for p in self.problems) or 1e-9
        tok_out = sum(s["tokens_out"] for s in samples)
        return {
            "server": self.kind,
            "startup_s": round(self.startup, 2),
            "problems": self.problems,
            "wall_s": round(wall, 2),
            "samples": len(samples),
            "samples_per_s": round(len(samples) / wall, 4),
            "tokens_out": tok_out,
            "tokens_out_per_s": round(tok_out / wall, 2),
            "calls": sum(s["calls"] for s in samples),
            "correct": sum(s["correct"] for s in samples),
            "prompt_tokens_sent": sum(s["tokens_in"] for s in samples),
            "prompt_tokens_evaluated": sum(n for _, n in evals),
            "prompt_eval_s": round(sum(ms for ms, _ in evals) / 1000, 2),
            "prompt_eval_lines": len(evals),
            "retries": len(self.backend.retry_log),
        }


async def measure(kinds: list[str], args: argparse.Namespace, problems: list[Any]) -> list[dict[str, Any]]:
    """Both servers up at once (an idle one takes no CPU); the problems alternate between them
    (A B, B A, A B, ...) so that a change in the machine's load hits both alike."""
    arms: list[Arm] = []
    config = AgentConfig(
        temperature=args.temperature,
        seed=args.seed,
        max_tokens=args.max_tokens,
        max_rounds=args.max_rounds,
        verify=args.verify,
    )
    try:
        for kind in kinds:
            print(f"starting {kind} ...", flush=True)
            arms.append(Arm(kind, args))
        for arm in arms:
            await arm.warm_up()
        with contextlib.ExitStack() as stack:
            pool = stack.enter_context(KernelPool(size=args.k)) if args.loop else None
            for i, p in enumerate(problems):
                order = arms if i % 2 == 0 else arms[::-1]
                for arm in order:
                    if args.pause_study:
                        pause_study()
                    try:
                        if pool is not None:
                            await arm.solve(p, pool, config, args.k)
                        else:
                            await arm.solve_raw(p, args)
                    finally:
                        resume_study()
        return [await arm.close() for arm in arms]
    finally:
        for arm in arms:
            arm.server.stop()


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, int]:
    same_answer = same_text = same_first = n = 0
    for pa, pb in zip(a["problems"], b["problems"], strict=True):
        for sa, sb in zip(pa["samples"], pb["samples"], strict=True):
            n += 1
            same_answer += sa["answer"] == sb["answer"]
            same_text += sa["text"] == sb["text"]
            same_first += sa.get("first_call") == sb.get("first_call")
    return {"samples": n, "same_answer": same_answer, "same_text": same_text, "same_first_call": same_first}


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print()
    print(
        f"model {args.model}, {args.problems} GSM8K problems x k={args.k} (llama-server: k at once; "
        "llama-cpp-python: one after another), "
        f"temperature {args.temperature}, max_tokens {args.max_tokens}, max_rounds {args.max_rounds}, "
        f"verify {args.verify}, llama-server --parallel {args.parallel}"
    )
    head = "| server | wall s | samples/s | tokens out | tokens/s | calls | correct | prompt tok sent | prompt tok evaluated | reused | prompt eval s |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in results:
        sent, ev = r["prompt_tokens_sent"], r["prompt_tokens_evaluated"]
        reused = f"{100 * (1 - ev / sent):.0f}%" if sent and r["prompt_eval_lines"] else "n/a"
        print(
            f"| {r['server']} | {r['wall_s']} | {r['samples_per_s']:.3f} | {r['tokens_out']} | "
            f"{r['tokens_out_per_s']:.1f} | {r['calls']} | {r['correct']}/{r['samples']} | {sent} | {ev} | "
            f"{reused} | {r['prompt_eval_s'] if r['server'] == LLAMA_SERVER else 'n/a'} |"
        )
    by = {r["server"]: r for r in results}
    if LLAMA_SERVER in by and LLAMA_CPP_PYTHON in by:
        a, b = by[LLAMA_CPP_PYTHON], by[LLAMA_SERVER]
        print(
            f"ratio llama-server / llama-cpp-python: samples/s x{b['samples_per_s'] / a['samples_per_s']:.2f}, "
            f"tokens/s x{b['tokens_out_per_s'] / a['tokens_out_per_s']:.2f}, "
            f"wall x{a['wall_s'] / b['wall_s']:.2f} faster"
        )
        pairs = [pa["wall_s"] / pb["wall_s"] for pa, pb in zip(a["problems"], b["problems"], strict=True)]
        print(
            "per problem (llama-cpp-python wall / llama-server wall): "
            + ", ".join(f"{x:.2f}" for x in pairs)
            + f"; median x{statistics.median(pairs):.2f}"
        )
        c = compare(a, b)
        print(
            f"same outputs: final answer {c['same_answer']}/{c['samples']}, "
            f"whole generated text {c['same_text']}/{c['samples']}"
            + (f", first call's text {c['same_first_call']}/{c['samples']}" if not args.loop else "")
        )
    for r in results:
        answers = "; ".join(
            f"{p['id']} gold {p['gold']}: " + ",".join(str(s["answer"]) for s in p["samples"])
            for p in r["problems"]
        )
        print(f"answers {r['server']}: {answers}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--problems", type=int, default=4)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--parallel", type=int, default=4, help="llama-server slots")
    ap.add_argument("--max-tokens", type=int, default=384)
    ap.add_argument("--max-rounds", type=int, default=3)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--n-threads", type=int, default=None, help="server threads (default: usable cores)")
    ap.add_argument(
        "--loop",
        action="store_true",
        help="the real agent loop with sandboxed kernels (default: the agent's calls without kernels, "
        "a fixed stand-in output block after each code block)",
    )
    ap.add_argument("--verify", action="store_true", help="with --loop: loop+verify instead of loop")
    ap.add_argument("--servers", default=",".join(KINDS[::-1]), help="comma-separated, in run order")
    ap.add_argument("--no-pause-study", dest="pause_study", action="store_false")
    ap.add_argument("--json", type=Path, help="write all results (with texts) here")
    args = ap.parse_args(argv)
    kinds = [s.strip() for s in args.servers.split(",") if s.strip()]
    bad = [s for s in kinds if s not in KINDS]
    if bad:
        ap.error(f"unknown server kind(s) {bad}; use {', '.join(KINDS)}")
    problems = load_problems("gsm8k", limit=args.problems, seed=args.seed, shuffle=True)
    try:
        results = asyncio.run(measure(kinds, args, problems))
    finally:
        resume_study()
    report(results, args)
    save_json(args, results=results)
    return 0


def save_json(args: argparse.Namespace, **data: Any) -> None:
    """Write the flags and ``data`` to ``--json FILE`` when one was given (the benches that pause the study)."""
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, **data}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
