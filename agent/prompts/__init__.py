"""System prompts shipped with mathagent, loaded with importlib.resources and identified by sha256.

Each prompt is a Markdown file in this package (``<name>.md``); by default the prompt named after the
trace format is used. ``--system-prompt`` also takes a path to a text file. Every trace records the sha256 of the prompt text it ran with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class SystemPrompt:
    """A loaded prompt."""

    name: str
    """File stem, e.g. ``markdown``."""
    text: str
    """Prompt text, trailing whitespace stripped."""
    sha256: str
    """Hex digest of ``text`` (UTF-8)."""


def available() -> list[str]:
    """Names of the shipped prompts."""
    return sorted(
        p.name[:-3] for p in resources.files(__name__).iterdir() if p.name.endswith(".md") and p.is_file()
    )


def load_prompt(name: str) -> SystemPrompt:
    """Load a shipped prompt by name, or a prompt file by path (a name with ``/`` or a file that exists);
    raises ``ValueError`` naming the available ones."""
    path = resources.files(__name__) / f"{name}.md"
    if "/" not in name and path.is_file():
        text = path.read_text(encoding="utf-8").rstrip()
        return SystemPrompt(name, text, hashlib.sha256(text.encode("utf-8")).hexdigest())
    file = Path(name).expanduser()
    if name and file.is_file():
        try:
            text = file.read_text(encoding="utf-8").rstrip()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"system prompt file {name}: cannot be read: {e}") from None
        if not text:
            raise ValueError(f"system prompt file {name} is empty")
        return SystemPrompt(str(file), text, hashlib.sha256(text.encode("utf-8")).hexdigest())
    raise ValueError(
        f"no system prompt named {name!r} and no such file; shipped prompts: {', '.join(available())}"
    )


def prompt_hashes() -> dict[str, str]:
    """``{name: sha256}`` of every shipped prompt, hashed as :func:`load_prompt` hashes it (for run headers)."""
    return {name: load_prompt(name).sha256 for name in available()}
