"""The flags every agent command shares, defined once: ``solve`` (and the REPL it opens), ``eval``
and ``generate`` add them from :data:`FLAGS` with :func:`add_agent_flags`.

A command picks the flags it takes and may change a default (``eval`` seeds with 0, ``solve`` with
none) or the help text (the ``--script`` file formats differ); names, types, choices and the meaning
stay the same everywhere. Help texts are plain text: argparse prints them as written.

A flag that sets an :class:`~mathagent.agent.config.AgentConfig` field names it (:attr:`Flag.config`)
and takes its default from ``AgentConfig()``, never a copy of it (``tests/agent/test_flags_config.py``
checks both, and the types).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mathagent.agent.backends.continuation import CONTINUE_MODES
from mathagent.agent.backends.openai_backend import REQUEST_TIMEOUT_HELP, positive_seconds
from mathagent.agent.config import AgentConfig

FORMATS = ("markdown", "mathcoder", "tools")
"""Trace formats (``mathagent.agent.formats``)."""
BACKENDS = ("openai", "transformers", "llama", "scripted")
"""Backend kinds ``make_backend`` knows (it also takes ``llamacpp`` for ``llama``)."""
VOTES = ("weighted", "majority")
"""How k samples are combined."""


class FlagDefault(int):
    """An integer default that remembers it was not typed (a preset's limit may replace it)."""


def given(value: Any) -> Any:
    """``value`` when the user typed it, None when it is a :class:`FlagDefault` (or None)."""
    return None if isinstance(value, FlagDefault) else value


_DEFAULTS = AgentConfig()


@dataclass(frozen=True)
class Flag:
    """One command-line flag: its spellings and ``add_argument`` keywords."""

    names: tuple[str, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    config: str | None = None
    """The :class:`AgentConfig` field the flag sets, if any; its default is that field's default."""
    differs: str = ""
    """Why the flag's default is ``None`` rather than its field's (resolved later), when it is."""


FLAGS: dict[str, Flag] = {
    "model": Flag(
        ("--model", "-m"),
        {
            "default": None,
            "help": "bundled model name (qwen2.5-coder-1.5b, qwen2.5-coder-0.5b, smollm2-135m), a GGUF file, "
            "a model folder, a hub id (owner/name) in the local Hugging Face cache (run with transformers, never "
            "downloaded), or the model id a server knows (default: the bundled qwen2.5-coder-1.5b)",
        },
    ),
    "base_url": Flag(
        ("--base-url",), {"default": None, "help": "OpenAI-compatible server URL (env OPENAI_BASE_URL)"}
    ),
    "backend": Flag(
        ("--backend",),
        {
            "default": None,
            "help": f"backend kind: {', '.join(BACKENDS)} (default: inferred from --model / --base-url; "
            "env MATHAGENT_BACKEND)",
        },
    ),
    "request_timeout": Flag(
        ("--request-timeout",),
        {"type": positive_seconds, "default": None, "help": REQUEST_TIMEOUT_HELP},
    ),
    "continue_mode": Flag(
        ("--continue-mode",),
        {
            "choices": CONTINUE_MODES,
            "default": "auto",
            "help": "how the model's turn goes on after a code output, on an OpenAI-compatible server: "
            "chat (continue_final_message, vLLM), completions (/v1/completions with the model's own chat "
            "template), user (the output as a new user message; a fallback, logged), auto (probe the "
            "server; default)",
        },
    ),
    "format": Flag(
        ("--format",),
        {
            "choices": FORMATS,
            "default": _DEFAULTS.format,
            "help": "trace format (default: the backend's own)",
        },
        config="format",
    ),
    "k": Flag(("--k", "-k"), {"type": int, "default": 1, "help": "samples per problem, voted over"}),
    "temperature": Flag(
        ("--temperature", "-t"),
        {"type": float, "default": None, "help": "sampling temperature (default 0 for k=1, else 0.7)"},
        config="temperature",
        differs="none given: 0 for k=1, else 0.7 (default_temperature)",
    ),
    "seed": Flag(
        ("--seed",),
        {"type": int, "default": _DEFAULTS.seed, "help": "sampling seed (sample i uses seed+i)"},
        config="seed",
    ),
    "max_rounds": Flag(
        ("--max-rounds", "--rounds", "--max-code-calls"),
        {
            "dest": "max_rounds",
            "type": int,
            "default": FlagDefault(_DEFAULTS.max_rounds),
            "help": f"most code executions (code calls) per sample (default: the preset's, else {_DEFAULTS.max_rounds})",
        },
        config="max_rounds",
    ),
    "max_tokens": Flag(
        ("--max-tokens",),
        {
            "type": int,
            "default": FlagDefault(_DEFAULTS.max_tokens),
            "help": f"most tokens per model call (default: the preset's, else {_DEFAULTS.max_tokens})",
        },
        config="max_tokens",
    ),
    "verify": Flag(
        ("--verify",),
        {
            "action": argparse.BooleanOptionalAction,
            "default": None,
            "help": "code-based self-verification after an answer; revise when it comes out False (default: "
            "on, except on a bundled model measured not to gain from it: at k = 1, and at k > 1 unless a "
            "calibration is saved for it)",
        },
        config="verify",
        differs="none given: on, except on a measured bundled model (modes.default_verify)",
    ),
    "timeout": Flag(
        ("--timeout",),
        {
            "type": float,
            "default": _DEFAULTS.cell_timeout,
            "help": f"seconds one code cell may run (default {_DEFAULTS.cell_timeout:g})",
        },
        config="cell_timeout",
    ),
    "system_prompt": Flag(
        ("--system-prompt",),
        {
            "default": _DEFAULTS.system_prompt,
            "metavar": "NAME|FILE",
            "help": "system prompt: a shipped name (e.g. markdown, tools) or a text file (default: the "
            "preset's, else the format's own)",
        },
        config="system_prompt",
    ),
    "preset": Flag(
        ("--preset",),
        {
            "default": _DEFAULTS.preset,
            "metavar": "NAME|FILE",
            "help": "a model family's own protocol: prompts, stop strings, how outputs are written back, "
            "tokens per call and code calls (list them: mathagent presets; or a .toml file)",
        },
        config="preset",
    ),
    "concurrency": Flag(
        ("--concurrency",), {"type": int, "default": 4, "help": "samples solved at the same time (default 4)"}
    ),
    "max_inflight": Flag(
        ("--max-inflight",),
        {
            "type": int,
            "default": None,
            "help": "most model requests in flight (default: derived from the machine, printed in the run "
            "header; see mathagent.evals.limits)",
        },
    ),
    "pool_size": Flag(
        ("--pool-size",),
        {
            "type": int,
            "default": None,
            "help": "kernels kept ready (default: derived from the machine, printed in the run header)",
        },
    ),
    "limit": Flag(("--limit",), {"type": int, "default": None, "help": "only the first N problems"}),
    "shuffle": Flag(
        ("--shuffle",), {"action": "store_true", "help": "shuffle the problems (seeded) before --limit"}
    ),
    "script": Flag(("--script",), {"default": None, "help": argparse.SUPPRESS}),
    "vote": Flag(
        ("--vote",),
        {"choices": VOTES, "default": "weighted", "help": "how k samples are combined (default weighted)"},
    ),
}


def add_agent_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    names: Iterable[str],
    *,
    defaults: Mapping[str, Any] | None = None,
    helps: Mapping[str, str] | None = None,
) -> None:
    """Add the flags ``names`` (keys of :data:`FLAGS`), with per-command ``defaults`` and ``helps``."""
    defaults, helps = defaults or {}, helps or {}
    unknown = (set(defaults) | set(helps)) - set(names)
    if unknown:
        raise ValueError(f"defaults/helps for flags not added: {sorted(unknown)}")
    for name in names:
        flag = FLAGS[name]
        kwargs = dict(flag.kwargs)
        if name in defaults:
            kwargs["default"] = defaults[name]
        if name in helps:
            kwargs["help"] = helps[name]
        parser.add_argument(*flag.names, **kwargs)


def default_temperature(args: argparse.Namespace) -> float:
    """``--temperature``, else 0 for k = 1 and 0.7 for k > 1 (identical greedy samples make no vote)."""
    return float(args.temperature) if args.temperature is not None else (0.0 if args.k == 1 else 0.7)


def plain(doc: str | None) -> str:
    """A docstring made fit for ``--help``: reStructuredText double backticks become single ones."""
    return re.sub(r"``(.+?)``", r"`\1`", doc or "")
