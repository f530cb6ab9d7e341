"""``mathagent solve "PROBLEM"``: solve one problem and show the trace (``--json`` for the record).

With no problem on a terminal, opens the interactive REPL (``mathagent.agent.repl``). Without model
flags the bundled default model is served by llama.cpp on loopback and stopped on exit. The hidden
``--script FILE`` option (or env ``MATHAGENT_SCRIPT``) replays scripted model turns instead: a JSON
list whose items are strings or Completion-like objects (``{"text", "tool_calls", "finish_reason"}``).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from mathagent.agent.backends.base import BackendError, Completion, ToolCall
from mathagent.agent.config import AgentConfig
from mathagent.agent.modes import add_mode_arg, split_mode

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mathagent solve", description="Solve a math problem with code.")
    p.add_argument("problem", nargs="?", help="the problem text ('-' reads it from stdin)")
    p.add_argument("--model", help="model name (bundled: qwen2.5-coder-1.5b, qwen2.5-coder-0.5b, ...)")
    p.add_argument("--base-url", help="OpenAI-compatible server URL (env OPENAI_BASE_URL)")
    p.add_argument("--backend", help="backend kind: openai, transformers (default: by the other flags)")
    p.add_argument("--format", choices=["markdown", "mathcoder", "tools"], help="trace format")
    p.add_argument("--max-rounds", type=int, default=AgentConfig.max_rounds, help="most code executions")
    p.add_argument(
        "--max-tokens", type=int, default=AgentConfig.max_tokens, help="most tokens per model call"
    )
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (k>1: 0.7)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (sample i uses seed+i)")
    p.add_argument("--k", type=int, default=1, help="samples to draw (concurrently) and vote over")
    p.add_argument(
        "--verify", action=argparse.BooleanOptionalAction, default=True, help="self-verify with code"
    )
    add_mode_arg(p)
    p.add_argument("--verify-prompt", help="shipped verification prompt name (default: verify)")
    from mathagent.evals.choose import add_vote_args

    add_vote_args(p)
    p.add_argument("--timeout", type=float, default=AgentConfig.cell_timeout, help="seconds per code cell")
    p.add_argument("--system-prompt", help="shipped system prompt name (default: the format's)")
    p.add_argument("--json", action="store_true", help="print the trace record(s) as JSON lines")
    p.add_argument("--script", help=argparse.SUPPRESS)
    return p


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    temperature = args.temperature if args.temperature is not None else (0.7 if args.k > 1 else 0.0)
    mode, verify = split_mode(getattr(args, "mode", None), args.verify)
    return AgentConfig(
        mode=mode,
        format=args.format,
        max_rounds=args.max_rounds,
        max_tokens=args.max_tokens,
        temperature=temperature,
        seed=args.seed,
        cell_timeout=args.timeout,
        system_prompt=args.system_prompt,
        verify=verify,
        verify_prompt=getattr(args, "verify_prompt", None),
    )


def _turn(item: Any) -> str | Completion:
    if isinstance(item, str):
        return item
    calls = tuple(
        ToolCall(c.get("id", f"call_{i}"), c.get("name", "python"), c.get("arguments", ""))
        for i, c in enumerate(item.get("tool_calls", ()))
    )
    return Completion(item.get("text", ""), item.get("finish_reason", "stop"), tool_calls=calls)


def scripted_backend(path: str, fmt: str | None) -> Any:
    from mathagent.agent.backends.scripted import ScriptedBackend

    turns = json.loads(Path(path).read_text(encoding="utf-8"))
    return ScriptedBackend([_turn(t) for t in turns], default_format=fmt or "markdown", on_exhausted="empty")


def build_backend(args: argparse.Namespace) -> Any:
    """The backend the flags ask for (the bundled model by default)."""
    script = args.script or os.environ.get("MATHAGENT_SCRIPT")
    if script:
        return scripted_backend(script, args.format)
    try:
        from mathagent.agent.backends import make_backend  # type: ignore[attr-defined]
    except ImportError:
        make_backend = None
    if make_backend is not None:
        wanted = {
            "kind": args.backend,
            "backend": args.backend,
            "model": args.model,
            "base_url": args.base_url,
        }
        params = inspect.signature(make_backend).parameters
        kw = {k: v for k, v in wanted.items() if k in params and v is not None}
        return make_backend(**kw)
    from mathagent.agent.backends.openai_backend import OpenAIBackend

    base_url = args.base_url or os.environ.get("OPENAI_BASE_URL")
    if base_url or args.backend == "openai":
        return OpenAIBackend(model=args.model, base_url=base_url)
    from mathagent.agent.llama_server import LlamaServer

    server = LlamaServer(args.model or "qwen2.5-coder-1.5b").start()
    return OpenAIBackend(
        model=server.alias,
        base_url=server.base_url,
        chat_template="chatml",
        context_window=server.n_ctx,
        gguf_path=server.path,
        server=server,
    )


async def _close(backend: Any) -> None:
    try:
        await backend.aclose()
    finally:
        server = getattr(backend, "server", None)
        if server is not None and hasattr(server, "stop"):
            await asyncio.to_thread(server.stop)


async def run(args: argparse.Namespace, problem: str) -> int:
    from mathagent.agent.loop import solve_k
    from mathagent.agent.render import print_trace, print_vote
    from mathagent.sandbox import KernelPool
    from rich.console import Console

    config = config_from_args(args)
    err = Console(stderr=True)
    try:
        backend = build_backend(args)
    except (BackendError, OSError, ValueError) as e:
        print(f"mathagent solve: cannot start the model backend: {e}", file=sys.stderr)
        return 2
    try:
        with KernelPool(size=max(1, min(args.k, 4))) as pool:
            if args.json or not sys.stderr.isatty():
                traces = await solve_k(problem, backend, pool, config, k=args.k)
            else:
                with err.status(f"solving with {backend.name}:{backend.model or 'default'} ..."):
                    traces = await solve_k(problem, backend, pool, config, k=args.k)
    finally:
        model = getattr(backend, "model", None) or args.model
        await _close(backend)
    if args.json:
        for t in traces:
            print(t.to_json())
    else:
        out = Console()
        for t in traces:
            print_trace(t, out, show_problem=t.sample_index == 0)
        if len(traces) > 1:
            from mathagent.evals.choose import resolve_weights, vote_traces

            vw = resolve_weights(
                getattr(args, "weights", None), model=model, config=config, format_name=traces[0].format
            )
            print_vote(
                traces,
                out,
                vote=vote_traces(traces, vw, prune=bool(getattr(args, "prune", False))),
                weights=vw,
            )
    return 0 if any(t.final_answer is not None for t in traces) else 1


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    problem = args.problem
    if problem == "-":
        problem = sys.stdin.read()
    if problem is None:
        if not sys.stdin.isatty():
            problem = sys.stdin.read()
        else:
            try:
                from mathagent.agent.repl import main as repl_main  # type: ignore[attr-defined]
            except ImportError:
                print(
                    "mathagent solve: give a problem (the interactive REPL is not installed)", file=sys.stderr
                )
                return 2
            return int(repl_main(argv) or 0)
    if not problem.strip():
        print("mathagent solve: the problem is empty", file=sys.stderr)
        return 2
    if args.k < 1:
        print("mathagent solve: --k must be at least 1", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run(args, problem))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
