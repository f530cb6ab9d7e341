"""Presets: the authors' evaluation protocols, as data.

A preset is a small TOML file (``agent/presets/<name>.toml``, or any path) that says how a model
family expects to be prompted and fed back: the system and user templates, the trace format
(markdown fences, MathCoder special tokens, native tool calls), the stop strings, how an execution
result is written back (its text, and whether it continues the assistant turn, opens a new user turn
or is a tool message), the most tokens per call, the most code calls, and how the final answer is
read. :func:`load_preset` reads and validates one (errors name the file and the key); the trace
formats take a :class:`Preset` and the loop is unchanged.

Templates use ``{problem}`` (user template), ``{output}`` (output template) and ``{system}`` /
``{user}`` (raw prompt template) as placeholders; they are replaced literally, so ``\\boxed{}`` and
other braces need no escaping.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from mathagent.agent.config import AgentConfig
from mathagent.agent.grading.extract import extract_answer, last_boxed, last_number
from mathagent.agent.grading.normalize import normalize_answer

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

FORMAT_NAMES = ("markdown", "mathcoder", "tools")
"""Trace formats a preset may name (``mathagent.agent.formats``)."""
OUTPUT_ROLES = ("assistant", "user", "tool")
"""Where an execution result goes: appended to the assistant's own (partial) message, a new user
message, or a ``tool`` message answering the tool call."""
ANSWER_MODES = ("default", "boxed", "answer_is", "last_number")
"""How the final answer is read: mathagent's own order (boxed, "the answer is", ``####``, the last
code output, the last number), only the last ``\\boxed{}``, only "The answer is ...", or the last number."""
_ANSWER_IS = re.compile(r"answer is", re.IGNORECASE)
_FORMAT_ROLES = {"markdown": ("assistant", "user"), "mathcoder": ("assistant",), "tools": ("tool",)}


class PresetError(ValueError):
    """A preset that cannot be found or read; the message names the file and the key."""


@dataclass(frozen=True)
class Preset:
    """One protocol. ``None`` fields mean "the trace format's own behaviour" (today's defaults)."""

    name: str
    """Short name (the file stem for shipped presets)."""
    description: str = ""
    """One line for ``mathagent presets``."""
    source: str = ""
    """What it follows: repository, path and commit of the authors' code, or a model card."""
    format: str | None = None
    """``markdown``, ``mathcoder`` or ``tools``; None: the backend's default format."""
    system: str | None = None
    """System prompt text; ``""``: no system message; None: the shipped prompt named after the format."""
    keep_empty_system: bool = False
    """Write a system block even when ``system`` is empty (MathCoder's harness always does)."""
    user_template: str = "{problem}"
    """The user message; ``{problem}`` is replaced by the problem text."""
    raw_prompt: str | None = None
    """The whole prompt as one string (``{system}``, ``{user}``) that the model continues; the backend's
    chat template is not used. None: chat messages (markdown, tools) or the format's own string."""
    stop: tuple[str, ...] | None = None
    """Stop strings; None: the format's own."""
    output_template: str | None = None
    """How an execution result is written back (``{output}``); None: the format's own."""
    output_role: str | None = None
    """``assistant`` (continue the assistant turn), ``user`` or ``tool``; None: the format's own."""
    empty_output: str = ""
    """Shown instead of an empty execution result (e.g. ``Done`` or ``<empty_execution>``)."""
    output_limit: int | None = None
    """Results longer than this many characters are cut to ``output_head`` + ``output_ellipsis`` +
    ``output_tail`` characters (the harness's own truncation; mathagent's ``view_chars`` still applies)."""
    output_head: int = 0
    output_tail: int = 0
    output_ellipsis: str = "..."
    verbatim: bool = False
    """Keep the model's text exactly as it wrote it (whitespace included), as harnesses that append the
    raw completion to the prompt do; False: prose is stripped and blocks are joined by one newline."""
    max_tokens: int | None = None
    """Most tokens per model call; None: mathagent's default."""
    max_code_calls: int | None = None
    """Most code executions per sample (``AgentConfig.max_rounds``); None: mathagent's default."""
    answer: str = "default"
    """How the final answer is read: one of :data:`ANSWER_MODES`."""
    notes: str = ""
    """Where the preset knowingly differs from the authors' harness."""
    path: str = field(default="", compare=False)
    """The file it was read from."""
    sha256: str = field(default="", compare=False)
    """Hex digest of the file's bytes (recorded with each trace)."""

    @property
    def system_prompt_name(self) -> str:
        return f"preset:{self.name}"

    def user(self, problem: str) -> str:
        return self.user_template.replace("{problem}", problem)

    def show_output(self, view: str) -> str:
        """An execution result as this preset writes it back (empty text and truncation applied)."""
        text = view if view.strip() else self.empty_output
        if self.output_limit is not None and len(text) > self.output_limit:
            tail = text[len(text) - self.output_tail :] if self.output_tail else ""
            text = text[: self.output_head] + self.output_ellipsis + tail
        return text

    def output_block(self, view: str) -> str:
        assert self.output_template is not None
        return self.output_template.replace("{output}", self.show_output(view))

    def raw_head(self, system: str, problem: str) -> str:
        assert self.raw_prompt is not None
        return self.raw_prompt.replace("{system}", system).replace("{user}", self.user(problem))

    def summary(self) -> dict[str, Any]:
        """What ``mathagent presets`` lists."""
        return {
            "name": self.name,
            "format": self.format or "(backend default)",
            "source": self.source,
            "max_tokens": self.max_tokens,
            "max_code_calls": self.max_code_calls,
            "output_role": self.output_role or "(format default)",
            "answer": self.answer,
            "description": self.description,
        }


_STR_KEYS = {
    "name",
    "description",
    "source",
    "format",
    "system",
    "user_template",
    "raw_prompt",
    "output_template",
    "output_role",
    "empty_output",
    "output_ellipsis",
    "answer",
    "notes",
}
_INT_KEYS = {"max_tokens", "max_code_calls", "output_limit", "output_head", "output_tail"}
_BOOL_KEYS = {"keep_empty_system", "verbatim"}
_KNOWN = _STR_KEYS | _INT_KEYS | _BOOL_KEYS | {"stop"}


def _check(where: str, data: dict[str, Any]) -> dict[str, Any]:
    """Validated keyword arguments for :class:`Preset` from one parsed TOML table."""

    def fail(key: str, why: str) -> PresetError:
        return PresetError(f"{where}: key {key!r}: {why}")

    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise fail(unknown[0], f"unknown key; known keys: {', '.join(sorted(_KNOWN))}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in _STR_KEYS and not isinstance(value, str):
            raise fail(key, f"must be a string, not {type(value).__name__}")
        if key in _BOOL_KEYS and not isinstance(value, bool):
            raise fail(key, f"must be true or false, not {value!r}")
        if key in _INT_KEYS and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise fail(key, f"must be a non-negative integer, not {value!r}")
        if key == "stop":
            if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
                raise fail(key, "must be a list of non-empty strings")
            value = tuple(value)
        out[key] = value
    if out.get("max_tokens") == 0:
        raise fail("max_tokens", "must be at least 1")
    fmt = out.get("format")
    if fmt is not None and fmt not in FORMAT_NAMES:
        raise fail("format", f"unknown trace format {fmt!r}; choose one of {', '.join(FORMAT_NAMES)}")
    role = out.get("output_role")
    if role is not None:
        if role not in OUTPUT_ROLES:
            raise fail("output_role", f"{role!r} is not one of {', '.join(OUTPUT_ROLES)}")
        if fmt is None:
            raise fail("output_role", "needs 'format' (where an output goes depends on the trace format)")
        if role not in _FORMAT_ROLES[fmt]:
            raise fail("output_role", f"format {fmt} writes outputs as {' or '.join(_FORMAT_ROLES[fmt])}")
    if out.get("answer", "default") not in ANSWER_MODES:
        raise fail("answer", f"{out['answer']!r} is not one of {', '.join(ANSWER_MODES)}")
    if "{problem}" not in out.get("user_template", "{problem}"):
        raise fail("user_template", "must contain {problem}")
    if "output_template" in out and "{output}" not in out["output_template"]:
        raise fail("output_template", "must contain {output}")
    if "raw_prompt" in out:
        if "{user}" not in out["raw_prompt"]:
            raise fail("raw_prompt", "must contain {user}")
        if fmt != "markdown":
            raise fail("raw_prompt", "only the markdown format takes a raw prompt template")
    if fmt == "tools" and ("output_template" in out or out.get("verbatim")):
        raise fail("output_template" if "output_template" in out else "verbatim", "not used by tool calls")
    if "output_limit" in out and out.get("output_head", 0) + out.get("output_tail", 0) > out["output_limit"]:
        raise fail("output_limit", "output_head + output_tail must not exceed output_limit")
    return out


def parse_preset(text: str | bytes, *, where: str = "<preset>", name: str | None = None) -> Preset:
    """A :class:`Preset` from TOML text; ``where`` names the file in error messages."""
    raw = text if isinstance(text, bytes) else text.encode("utf-8")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise PresetError(f"{where}: not UTF-8 text ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise PresetError(f"{where}: not valid TOML: {e}") from None
    kwargs = _check(where, data)
    kwargs.setdefault("name", name or Path(where).stem)
    if not kwargs["name"]:
        raise PresetError(f"{where}: key 'name': must not be empty")
    return Preset(**kwargs, path=where, sha256=hashlib.sha256(raw).hexdigest())


def available() -> list[str]:
    """Names of the shipped presets."""
    return sorted(
        p.name[: -len(".toml")]
        for p in resources.files(__name__).iterdir()
        if p.name.endswith(".toml") and p.is_file()
    )


def load_preset(name_or_path: str) -> Preset:
    """A shipped preset by name, or a preset file by path; raises :class:`PresetError`."""
    shipped = resources.files(__name__) / f"{name_or_path}.toml"
    if "/" not in name_or_path and shipped.is_file():
        return parse_preset(shipped.read_bytes(), where=f"presets/{name_or_path}.toml", name=name_or_path)
    path = Path(name_or_path).expanduser()
    if path.is_file():
        try:
            data = path.read_bytes()
        except OSError as e:
            raise PresetError(f"{path}: cannot be read: {e}") from None
        return parse_preset(data, where=str(path))
    raise PresetError(
        f"no preset named {name_or_path!r} and no such file; shipped presets: {', '.join(available())}"
    )


def extract_final(mode: str, text: str, last_output: str | None = None) -> str | None:
    """The final answer in ``text`` read the way answer mode ``mode`` says (normalized), or None."""
    if mode == "default":
        return extract_answer(text, last_output=last_output)
    if mode == "boxed":
        return extract_answer(text) if last_boxed(text) is not None else None
    if mode == "answer_is":
        hits = list(_ANSWER_IS.finditer(text or ""))
        return extract_answer(text[hits[-1].start() :]) if hits else None
    if mode == "last_number":
        num = last_number(text or "")
        if num is None:
            return None
        return normalize_answer(num) or None
    raise PresetError(f"unknown answer mode {mode!r}; choose one of {', '.join(ANSWER_MODES)}")


def apply_preset(
    config: AgentConfig,
    name_or_path: str | None,
    *,
    format: str | None = None,
    max_tokens: int | None = None,
    max_rounds: int | None = None,
) -> AgentConfig:
    """``config`` running preset ``name_or_path``: its format, tokens per call and code calls, unless the
    caller gives them (``format``, ``max_tokens``, ``max_rounds``: explicit flags, None when not given).

    Without a preset the explicit values (or ``config``'s own) are used. Raises :class:`PresetError`
    for an unknown preset or a ``format`` the preset does not write.
    """
    changes: dict[str, Any] = {}
    preset = load_preset(name_or_path) if name_or_path else None
    if preset is not None:
        if format and preset.format and format != preset.format:
            raise PresetError(
                f"--format {format} conflicts with preset {preset.name}, which writes the {preset.format} format"
            )
        changes.update(preset=name_or_path, format=format or preset.format or config.format)
        changes["max_tokens"] = max_tokens or preset.max_tokens or config.max_tokens
        rounds = preset.max_code_calls if max_rounds is None else max_rounds
        changes["max_rounds"] = config.max_rounds if rounds is None else rounds
    else:
        changes.update(format=format or config.format)
        changes["max_tokens"] = max_tokens or config.max_tokens
        changes["max_rounds"] = config.max_rounds if max_rounds is None else max_rounds
    return config.with_(**changes)


def preset_fields() -> list[str]:
    """The keys a preset file may set."""
    return [f.name for f in fields(Preset) if f.name not in ("path", "sha256")]


__all__ = [
    "ANSWER_MODES",
    "FORMAT_NAMES",
    "OUTPUT_ROLES",
    "Preset",
    "apply_preset",
    "PresetError",
    "available",
    "extract_final",
    "load_preset",
    "parse_preset",
    "preset_fields",
]
