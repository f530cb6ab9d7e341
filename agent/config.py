"""The agent's settings: one frozen dataclass, written into every run header."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

DEFAULT_CONTEXT_BUDGET = 4096


@dataclass(frozen=True)
class AgentConfig:
    """How one trajectory is run. Flags of ``mathagent solve`` map onto these fields."""

    format: str | None = None
    """Trace format (``markdown``, ``mathcoder``, ``tools``); None: the backend's ``default_format``."""
    max_rounds: int = 6
    """Most code executions in the solve phase before the trajectory stops with ``max_rounds``."""
    max_tokens: int = 1024
    """Most tokens generated per model call (lowered to fit the context budget)."""
    context_budget: int | None = None
    """Prompt + completion tokens allowed; None: the backend's ``context_window`` or 4096."""
    min_call_tokens: int = 64
    """A call that could generate fewer tokens than this within the budget is not made (``context_full``)."""
    temperature: float = 0.0
    """Sampling temperature."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    seed: int | None = None
    """Sampling seed; sample ``i`` of ``solve_k`` uses ``seed + i``."""
    cell_timeout: float = 10.0
    """Seconds one code block may run before it is interrupted."""
    view_chars: int = 2000
    """Most characters of an execution result the model is shown (the trace keeps the full result)."""
    system_prompt: str | None = None
    """Shipped prompt name (``agent/prompts/<name>.md``) or a prompt file's path; None: the preset's
    system prompt, else the prompt named after the format."""
    max_text_blocks: int = 4
    """Most consecutive prose-only calls (mathcoder text blocks) before the message counts as ended."""
    verify: bool = True
    """Run code-based self-verification after an answer (when ``mathagent.agent.verification`` exists)."""
    max_revisions: int = 1
    """Most times a refuted answer may be revised during verification."""
    verify_prompt: str | None = None
    """Shipped verification prompt name (``agent/prompts/<name>.md``); None: ``verify``."""
    mode: str = "loop"
    """``loop`` (multi-round; with ``verify``: ``loop+verify``), ``cot`` or ``pot`` (see ``agent/modes.py``)."""
    preset: str | None = None
    """A shipped preset name or a preset file (``agent/presets``): the authors' prompts, stop strings and
    output blocks; None: mathagent's own. Its token and code-call limits are applied by :func:`with_preset`."""

    def __post_init__(self) -> None:
        if self.mode == "loop+verify":  # the user-facing name: the loop with verification on
            object.__setattr__(self, "mode", "loop")
            object.__setattr__(self, "verify", True)

    def with_(self, **changes: Any) -> AgentConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["mode"] == "loop":  # runs recorded before modes existed keep their identity
            del d["mode"]
        if d["verify_prompt"] is None:  # likewise
            del d["verify_prompt"]
        if d["preset"] is None:  # likewise
            del d["preset"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AgentConfig:
        """Build from a dict; unknown keys (from newer versions) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
