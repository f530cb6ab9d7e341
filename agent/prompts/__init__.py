"""System prompts shipped with mathagent, loaded with importlib.resources and identified by sha256.

Each prompt is a Markdown file in this package (``<name>.md``); by default the prompt named after the
trace format is used. Every trace records the sha256 of the prompt text it ran with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources


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
    """Load a shipped prompt by name; raises ``ValueError`` naming the available ones."""
    path = resources.files(__name__) / f"{name}.md"
    if not path.is_file():
        raise ValueError(f"no system prompt named {name!r}; available: {', '.join(available())}")
    text = path.read_text(encoding="utf-8").rstrip()
    return SystemPrompt(name, text, hashlib.sha256(text.encode("utf-8")).hexdigest())


def prompt_hashes() -> dict[str, str]:
    """``{name: sha256}`` of every shipped prompt, hashed as :func:`load_prompt` hashes it (for run headers)."""
    return {name: load_prompt(name).sha256 for name in available()}
