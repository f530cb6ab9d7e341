"""The shared flags and :class:`AgentConfig` cannot drift apart (agent/flags.py, agent/config.py).

Each flag of :data:`FLAGS` that sets an AgentConfig field names it (``Flag.config``), and then has that
field's default, a type the field takes, and a name that is the field's or the one
``configfile.AGENT_FIELD_FLAGS`` gives; a flag named like a field must say that it sets it. The check
is one function, run on the real table and on a drifted copy (which it must catch). A command's help
text that names a default names the one in force.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from typing import Any

import pytest
from mathagent.agent.config import AgentConfig
from mathagent.agent.configfile import AGENT_FIELD_FLAGS
from mathagent.agent.flags import FLAGS, Flag, FlagDefault, add_agent_flags, default_temperature

FIELDS = {f.name for f in dataclasses.fields(AgentConfig)}
HINTS = typing.get_type_hints(AgentConfig)


def field_types(name: str) -> tuple[type, ...]:
    """The types a field takes, None left out (``int | None`` -> ``(int,)``)."""
    kind = HINTS[name]
    return tuple(t for t in (typing.get_args(kind) or (kind,)) if t is not type(None))


def flag_type(flag: Flag) -> Any:
    """What the flag's parsed value is: bool for a switch, its ``type`` (a converter: its return
    annotation), else str."""
    kw = flag.kwargs
    if kw.get("action") in (argparse.BooleanOptionalAction, "store_true", "store_false"):
        return bool
    convert = kw.get("type", str)
    return convert if isinstance(convert, type) else typing.get_type_hints(convert)["return"]


def mismatches(flags: dict[str, Flag]) -> list[str]:
    """Each way ``flags`` disagrees with AgentConfig (empty: none)."""
    defaults = AgentConfig()
    out = []
    for name, flag in flags.items():
        dest = flag.kwargs.get("dest", name)
        if dest != name:
            out.append(f"{name}: dest {dest!r} is not its key")
        if flag.config is None:
            if name in FIELDS:
                out.append(f"{name}: named like an AgentConfig field but sets none (Flag.config)")
            continue
        if flag.config not in FIELDS:
            out.append(f"{name}: config {flag.config!r} is not an AgentConfig field")
            continue
        if name != flag.config and AGENT_FIELD_FLAGS.get(flag.config) != name:
            out.append(f"{name}: sets {flag.config}, but AGENT_FIELD_FLAGS does not name it its flag")
        types = field_types(flag.config)
        if flag_type(flag) not in types:
            out.append(f"{name}: parses {flag_type(flag)}, {flag.config} is {HINTS[flag.config]}")
        bad_choices = [c for c in flag.kwargs.get("choices", ()) if not isinstance(c, types)]
        if bad_choices:
            out.append(f"{name}: choices {bad_choices} are not {HINTS[flag.config]}")
        got, want = flag.kwargs.get("default"), getattr(defaults, flag.config)
        if flag.differs:
            if got is not None:
                out.append(f"{name}: default {got!r}, but `differs` says it is resolved later (None)")
        elif got != want or (got is not None and not isinstance(got, types)):
            out.append(f"{name}: default {got!r} is not AgentConfig().{flag.config} = {want!r}")
    for fld, flag_name in AGENT_FIELD_FLAGS.items():
        if flag_name in flags and flags[flag_name].config != fld:
            out.append(
                f"{flag_name}: AGENT_FIELD_FLAGS maps {fld} to it, but it sets {flags[flag_name].config}"
            )
    return out


def test_the_shared_flags_agree_with_agent_config():
    assert mismatches(FLAGS) == []
    mapped = {f.config for f in FLAGS.values() if f.config}
    # the flags that set the agent's settings (the others choose backends, limits, data)
    assert mapped == {"format", "temperature", "seed", "max_rounds", "max_tokens", "verify", "cell_timeout",
                      "system_prompt", "preset"}  # fmt: skip


def test_parsed_defaults_make_the_default_config():
    """All shared flags on one parser, nothing typed: the AgentConfig they describe is AgentConfig()."""
    p = argparse.ArgumentParser()
    add_agent_flags(p, FLAGS)
    args = p.parse_args([])
    values = {f.config: getattr(args, name) for name, f in FLAGS.items() if f.config and not f.differs}
    values["temperature"] = default_temperature(args)  # the one resolved later (k = 1: greedy)
    assert AgentConfig(**values) == AgentConfig()
    assert isinstance(args.max_rounds, FlagDefault) and isinstance(args.max_tokens, FlagDefault)


def drifted(name: str, **changes: Any) -> dict[str, Flag]:
    flag = FLAGS[name]
    kwargs = {**flag.kwargs, **changes.pop("kwargs", {})}
    return {**FLAGS, name: dataclasses.replace(flag, kwargs=kwargs, **changes)}


@pytest.mark.parametrize(
    "flags, says",
    [
        (drifted("max_rounds", kwargs={"default": FlagDefault(7)}), "max_rounds: default 7 is not"),
        (
            drifted("timeout", kwargs={"default": 30.0}),
            "timeout: default 30.0 is not AgentConfig().cell_timeout",
        ),
        (
            drifted("verify", kwargs={"action": None, "type": int, "default": 1}),
            "verify: parses <class 'int'>",
        ),
        (drifted("seed", kwargs={"type": float}), "seed: parses <class 'float'>"),
        (drifted("format", kwargs={"choices": ("markdown", 2)}), "format: choices [2]"),
        (drifted("seed", config=None), "seed: named like an AgentConfig field but sets none"),
        (drifted("timeout", config="cell_timeouts"), "config 'cell_timeouts' is not an AgentConfig field"),
        (drifted("k", config="max_rounds"), "k: sets max_rounds, but AGENT_FIELD_FLAGS"),
        (drifted("temperature", kwargs={"default": 0.7}), "temperature: default 0.7, but `differs`"),
        (drifted("max_tokens", kwargs={"dest": "tokens"}), "max_tokens: dest 'tokens' is not its key"),
        ({**FLAGS, "top_p": Flag(("--top-p",), {"type": float, "default": 0.9})}, "top_p: named like"),
    ],
)
def test_a_drifted_flag_is_caught(flags, says):
    found = mismatches(flags)
    assert any(says in line for line in found), found


HELP_DEFAULT = re.compile(r"\(default[^()]*?(-?\d+(?:\.\d+)?)\)")
"""The number a help text gives as the default: ``(default 10)``, ``(default: the preset's, else 6)``."""


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    from mathagent.agent import cli_solve
    from mathagent.evals import cli_eval
    from mathagent.training import cli_generate

    return {
        "solve": cli_solve.build_parser(),
        "eval": cli_eval.build_parser(),
        "generate": cli_generate.build_parser(),
    }


@pytest.mark.parametrize("command", ["solve", "eval", "generate"])
def test_help_texts_state_the_default_in_force(command):
    """Where a command's help for a config flag names a default, it is the command's own default, or
    (none set: the value comes from AgentConfig) the field's."""
    defaults = AgentConfig()
    checked = 0
    for action in command_parsers()[command]._actions:
        flag = FLAGS.get(action.dest)
        if flag is None or flag.config is None or flag.differs:
            continue
        m = HELP_DEFAULT.search(action.help or "")
        if m is None:
            continue
        in_force = action.default if action.default is not None else getattr(defaults, flag.config)
        assert float(m.group(1)) == float(in_force), (command, action.dest, action.help, in_force)
        checked += 1
    assert checked >= 2  # max_rounds and timeout at least
