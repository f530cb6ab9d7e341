"""The REPL's ``/`` commands: parsing and settings changes, as pure functions over :class:`ReplSettings`.

:func:`run_command` never touches the screen, the backend or the traces: it returns a
:class:`CommandResult` with the new settings, a message, and an ``action`` for the REPL to carry out
when the command needs session state (``trace``, ``save``, ``quit``...).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mathagent.agent.backends.continuation import CONTINUE_MODES
from mathagent.agent.repl.settings import BACKENDS, FORMATS, VOTES, ReplSettings


class CommandError(ValueError):
    """A command was misspelled or given a bad value; the message says what is expected."""


@dataclass(frozen=True)
class CommandResult:
    """What a command did."""

    settings: ReplSettings
    """The settings after the command (unchanged for commands that do not set anything)."""
    message: str = ""
    """One line to show the user."""
    action: str | None = None
    """``quit``, ``help``, ``settings``, ``trace``, ``save``, ``clear``, or None."""
    arg: str | None = None
    """The action's argument (``save``: the file)."""


@dataclass(frozen=True)
class Command:
    """One ``/`` command."""

    name: str
    usage: str
    help: str
    apply: Callable[[ReplSettings, str], CommandResult]


def _int(value: str, name: str, lo: int, hi: int) -> int:
    try:
        n = int(value)
    except ValueError:
        raise CommandError(f"/{name} needs a whole number, got {value!r}") from None
    if not lo <= n <= hi:
        raise CommandError(f"/{name} must be between {lo} and {hi}")
    return n


def _choice(value: str, name: str, choices: tuple[str, ...]) -> str:
    v = value.strip().lower()
    if v not in choices:
        raise CommandError(f"/{name} takes one of: {', '.join(choices)}")
    return v


def _optional(value: str) -> str | None:
    v = value.strip()
    return None if v.lower() in ("", "default", "none", "-") else v


def _set(field: str, shown: Callable[[ReplSettings], object] | None = None):
    def done(s: ReplSettings, **changes: object) -> CommandResult:
        new = s.with_(**changes)
        value = shown(new) if shown else getattr(new, field)
        return CommandResult(new, f"{field} = {value if value is not None else 'default'}")

    return done


def _k(s: ReplSettings, v: str) -> CommandResult:
    new = s.with_(k=_int(v, "k", 1, 64))
    msg = f"k = {new.k}"
    if new.k > 1 and new.temperature == 0.0:
        msg += " (temperature 0 would repeat one sample: sampling at 0.7 until /temperature is set)"
    return CommandResult(new, msg)


def _temperature(s: ReplSettings, v: str) -> CommandResult:
    try:
        t = float(v)
    except ValueError:
        raise CommandError(f"/temperature needs a number, got {v!r}") from None
    if not 0.0 <= t <= 2.0:
        raise CommandError("/temperature must be between 0 and 2")
    return _set("temperature")(s, temperature=t)


def _model(s: ReplSettings, v: str) -> CommandResult:
    model = _optional(v)
    if model and ("/" in model or model.endswith(".gguf")) and not s.base_url:
        path = Path(model).expanduser()
        if not path.is_file():
            raise CommandError(f"no such model file: {path}")
        model = str(path.resolve())
    return _set("model")(s, model=model)


def _backend(s: ReplSettings, v: str) -> CommandResult:
    b = _optional(v)
    return _set("backend")(s, backend=_choice(b, "backend", BACKENDS) if b else None)


def _base_url(s: ReplSettings, v: str) -> CommandResult:
    url = _optional(v)
    if url and not url.startswith(("http://", "https://")):
        raise CommandError("/base-url needs an http:// or https:// URL")
    return _set("base_url")(s, base_url=url.rstrip("/") if url else None)


def _format(s: ReplSettings, v: str) -> CommandResult:
    f = _optional(v)
    return _set("format")(s, format=_choice(f, "format", FORMATS) if f else None)


def _verify(s: ReplSettings, v: str) -> CommandResult:
    on = _choice(v or "on", "verify", ("on", "off", "auto", "true", "false", "1", "0"))
    new = s.with_(verify=None if on == "auto" else on in ("on", "true", "1"))
    why = new.verify_default()[1]
    return CommandResult(new, f"verify = {new.verify_shown()}" + (f" ({why})" if why else ""))


def _rounds(s: ReplSettings, v: str) -> CommandResult:
    return _set("rounds")(s, rounds=_int(v, "rounds", 1, 50))


def _continue_mode(s: ReplSettings, v: str) -> CommandResult:
    return _set("continue_mode")(s, continue_mode=_choice(v or "auto", "continue-mode", CONTINUE_MODES))


def _vote(s: ReplSettings, v: str) -> CommandResult:
    return _set("vote")(s, vote=_choice(v, "vote", VOTES))


def _seed(s: ReplSettings, v: str) -> CommandResult:
    seed = _optional(v)
    return _set("seed")(s, seed=_int(seed, "seed", 0, 2**31 - 1) if seed else None)


def _action(action: str, needs_arg: bool = False):
    def apply(s: ReplSettings, v: str) -> CommandResult:
        if needs_arg and not v.strip():
            raise CommandError(f"/{action} needs an argument")
        return CommandResult(s, action=action, arg=v.strip() or None)

    return apply


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("k", "/k N", "samples per problem (k > 1: live table and vote)", _k),
        Command("model", "/model NAME|PATH", "bundled model name, GGUF file, or a server's model id", _model),
        Command(
            "backend",
            "/backend openai|transformers|llama|scripted",
            "model backend (default: automatic)",
            _backend,
        ),
        Command(
            "base-url", "/base-url URL", "use an OpenAI-compatible server (`default`: bundled)", _base_url
        ),
        Command(
            "continue-mode",
            "/continue-mode auto|chat|completions|user",
            "how a server continues after a code output (`auto`: probe it)",
            _continue_mode,
        ),
        Command("temperature", "/temperature T", "sampling temperature", _temperature),
        Command(
            "format", "/format markdown|mathcoder|tools", "trace format (`default`: the backend's)", _format
        ),
        Command(
            "verify",
            "/verify on|off|auto",
            "code-based self-verification after an answer (auto: off on a bundled model measured not to "
            "gain from it, unless a calibration is saved for it at k > 1)",
            _verify,
        ),
        Command("rounds", "/rounds N", "most code executions per sample", _rounds),
        Command("vote", "/vote weighted|majority", "how k samples are combined", _vote),
        Command("seed", "/seed N", "sampling seed (`default`: none)", _seed),
        Command("trace", "/trace", "print the last trace as JSON", _action("trace")),
        Command("save", "/save FILE", "append this session's traces to FILE (JSONL)", _action("save", True)),
        Command("settings", "/settings", "show the current settings", _action("settings")),
        Command("clear", "/clear", "clear the screen", _action("clear")),
        Command("help", "/help", "this list", _action("help")),
        Command("quit", "/quit", "leave (also Ctrl-D)", _action("quit")),
    )
}
ALIASES = {
    "exit": "quit",
    "q": "quit",
    "h": "help",
    "?": "help",
    "temp": "temperature",
    "base_url": "base-url",
    "continue_mode": "continue-mode",
}


def is_command(line: str) -> bool:
    return line.lstrip().startswith("/")


def run_command(line: str, settings: ReplSettings) -> CommandResult:
    """Apply one ``/name args`` line. Raises :class:`CommandError` on an unknown command or bad value."""
    name, _, arg = line.strip().lstrip("/").partition(" ")
    name = ALIASES.get(name.lower(), name.lower())
    cmd = COMMANDS.get(name)
    if cmd is None:
        close = difflib.get_close_matches(name, list(COMMANDS), n=3, cutoff=0.5) if name else []
        hint = f" (did you mean {', '.join('/' + c for c in close)}?)" if close else ""
        raise CommandError(f"unknown command /{name}{hint}; /help lists them")
    if not arg.strip() and cmd.apply not in _NO_ARG and name not in ("verify",):
        raise CommandError(f"usage: {cmd.usage}")
    return cmd.apply(settings, arg.strip())


_NO_ARG = {COMMANDS[n].apply for n in ("trace", "save", "settings", "clear", "help", "quit")}


def help_rows() -> list[tuple[str, str]]:
    """(usage, help) for every command, in menu order."""
    return [(c.usage, c.help) for c in COMMANDS.values()]


def completions() -> list[str]:
    """Every command spelled with its slash, for tab completion."""
    return ["/" + n for n in COMMANDS]
