"""``mathagent solve "PROBLEM"``: solve one problem and show the trace (``--json`` for the record).

With no problem on a terminal, opens the interactive REPL (``mathagent.agent.repl``). Without model
flags the bundled default model is served by llama.cpp on loopback and stopped on exit. The hidden
``--script FILE`` option (or env ``MATHAGENT_SCRIPT``) replays scripted model turns instead (the file
format of :func:`mathagent.agent.backends.scripted.load_script`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from mathagent.agent.backends import close_backend, make_backend
from mathagent.agent.backends.base import Backend, BackendError, ServerGone
from mathagent.agent.backends.scripted import script_backend
from mathagent.agent.choose import add_vote_args, resolve_weights, vote_traces
from mathagent.agent.config import AgentConfig
from mathagent.agent.configfile import add_config_flag, parse_args
from mathagent.agent.flags import add_agent_flags, default_temperature, given
from mathagent.agent.loop import solve_k
from mathagent.agent.modes import add_mode_arg, args_mode
from mathagent.agent.presets import apply_preset
from mathagent.agent.prompts import load_prompt
from mathagent.agent.render import print_trace, print_vote
from mathagent.sandbox.pool import KernelPool
from rich.console import Console

log = logging.getLogger(__name__)


SOLVE_FLAGS = (
    "model",
    "base_url",
    "backend",
    "request_timeout",
    "continue_mode",
    "format",
    "max_rounds",
    "max_tokens",
    "temperature",
    "seed",
    "k",
    "verify",
    "timeout",
    "system_prompt",
    "preset",
    "vote",
    "script",
)
"""The shared agent flags ``solve`` takes (:mod:`mathagent.agent.flags`); the REPL takes the same."""


def build_parser() -> argparse.ArgumentParser:
    """``mathagent solve``'s options; with no problem they go to the REPL unchanged."""
    p = argparse.ArgumentParser(prog="mathagent solve", description="Solve a math problem with code.")
    p.add_argument("problem", nargs="?", help="the problem text ('-' reads it from stdin; none: the REPL)")
    add_agent_flags(
        p,
        SOLVE_FLAGS,
        helps={"vote": "REPL: how k samples are combined, weighted or majority (default weighted)"},
    )
    add_mode_arg(p)
    p.add_argument("--verify-prompt", help="shipped verification prompt name (default: verify)")
    p.add_argument(
        "--verify-all",
        action="store_true",
        help="with --k > 1, verify every sample (turns verification on; default: only when the samples' "
        "answers disagree, since an agreed answer wins the vote whatever the states)",
    )
    add_vote_args(p)
    p.add_argument("--json", action="store_true", help="print the trace record(s) as JSON lines")
    p.add_argument("--pool-size", type=int, default=2, help="REPL: warm kernels kept ready (default 2)")
    add_config_flag(p)
    return p


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    """The AgentConfig the flags describe; ``--preset`` supplies the format and limits not given.

    Raises :class:`~mathagent.agent.presets.PresetError` for an unknown preset or a conflicting format.
    """
    temperature = default_temperature(args)
    mode, verify, _ = args_mode(args)
    config = AgentConfig(
        mode=mode,
        temperature=temperature,
        seed=args.seed,
        cell_timeout=args.timeout,
        system_prompt=args.system_prompt,
        verify=verify,
        verify_prompt=getattr(args, "verify_prompt", None),
    )
    return apply_preset(
        config,
        getattr(args, "preset", None),
        format=args.format,
        max_tokens=given(args.max_tokens),
        max_rounds=given(args.max_rounds),
    )


def build_backend(args: argparse.Namespace, fmt: str | None = None) -> Backend:
    """The backend the flags ask for (the bundled model by default; ``--script`` replays turns in
    ``fmt``, default ``--format``)."""
    script = args.script or os.environ.get("MATHAGENT_SCRIPT")
    if script:
        return script_backend(script, default_format=fmt or args.format, on_exhausted="empty")
    return make_backend(
        model=args.model,
        base_url=args.base_url,
        backend=args.backend,
        request_timeout=args.request_timeout,
        continue_mode=getattr(args, "continue_mode", None) or "auto",
    )


async def run(args: argparse.Namespace, problem: str) -> int:
    try:
        config = config_from_args(args)
        if config.system_prompt:
            load_prompt(config.system_prompt)  # a wrong name or file fails here, before the model starts
    except ValueError as e:
        print(f"mathagent solve: {e}", file=sys.stderr)
        return 2
    err = Console(stderr=True)
    try:
        backend = build_backend(args, config.format)
    except (BackendError, OSError, ValueError) as e:
        print(f"mathagent solve: cannot start the model backend: {e}", file=sys.stderr)
        return 2
    prepare = getattr(backend, "prepare", None)
    if callable(prepare):  # how the assistant turn goes on after a code output, and the context length
        try:
            cont = await asyncio.to_thread(prepare)
        except BackendError as e:
            await close_backend(backend)
            print(f"mathagent solve: cannot probe the model server: {e}", file=sys.stderr)
            return 2
        print(f"mathagent solve: {cont.describe()}", file=sys.stderr)
    why = args_mode(args)[2]
    if why:
        print(f"mathagent solve: {why}", file=sys.stderr)
    try:
        with KernelPool(size=max(1, min(args.k, 4))) as pool:
            contested = not args.verify_all
            if args.json or not sys.stderr.isatty():
                traces = await solve_k(problem, backend, pool, config, k=args.k, verify_contested=contested)
            else:
                with err.status(f"solving with {backend.name}:{backend.model or 'default'} ..."):
                    traces = await solve_k(
                        problem, backend, pool, config, k=args.k, verify_contested=contested
                    )
    except ServerGone as e:  # no sample can finish: say why, not a trace per sample
        print(f"mathagent solve: the model server stopped: {e}", file=sys.stderr)
        return 1
    finally:
        model = getattr(backend, "model", None) or args.model
        await close_backend(backend)
    if args.json:
        for t in traces:
            print(t.to_json())
    else:
        out = Console()
        for t in traces:
            print_trace(t, out, show_problem=t.sample_index == 0)
        if len(traces) > 1:
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
    args = parse_args(build_parser(), argv)
    problem = args.problem
    if problem == "-":
        problem = sys.stdin.read()
    if problem is None:
        if not sys.stdin.isatty():
            problem = sys.stdin.read()
        else:
            from mathagent.agent.repl import main as repl_main  # lazy: prompt_toolkit only for the REPL

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
