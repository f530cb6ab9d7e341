"""The REPL's session settings: one frozen record, changed by ``/`` commands, mapped onto AgentConfig."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from mathagent.agent.cache import cache_dir
from mathagent.agent.config import AgentConfig
from mathagent.agent.hubcache import looks_like_hub_id
from mathagent.agent.models import DEFAULT_MODEL
from mathagent.agent.modes import default_verify, measured_model

BACKENDS = ("openai", "transformers", "llama", "scripted")
FORMATS = ("markdown", "mathcoder", "tools")
VOTES = ("weighted", "majority")


def history_path() -> Path:
    """Where the prompt history is kept between sessions (env ``MATHAGENT_REPL_HISTORY`` overrides)."""
    env = os.environ.get("MATHAGENT_REPL_HISTORY")
    return Path(env).expanduser() if env else cache_dir() / "repl_history"


@dataclass(frozen=True)
class ReplSettings:
    """What the next problem runs with. Every field has a ``/`` command of the same name."""

    k: int = 1
    """Samples per problem; above 1 the REPL shows a table of samples and the vote."""
    model: str | None = None
    """Bundled model name, GGUF path, or the model id a server knows; None: the bundled default."""
    backend: str | None = None
    """``openai``, ``transformers`` or ``scripted``; None: chosen from model / base URL."""
    base_url: str | None = None
    """An OpenAI-compatible server; None: env ``OPENAI_BASE_URL`` or the bundled llama.cpp server."""
    temperature: float = 0.0
    """Sampling temperature (with k > 1 and 0.0, the REPL samples at 0.7)."""
    format: str | None = None
    """Trace format; None: the backend's default."""
    verify: bool | None = None
    """Run code-based self-verification after an answer; None (``/verify auto``): on, except on a
    bundled model measured not to gain from it (:func:`~mathagent.agent.modes.default_verify`)."""
    rounds: int = 6
    """Most code executions per sample (AgentConfig.max_rounds)."""
    vote: str = "weighted"
    """How k samples are combined: ``weighted`` (by verification state) or ``majority``."""
    seed: int | None = None
    """Sampling seed (sample i uses seed + i)."""
    continue_mode: str = "auto"
    """How the assistant turn goes on after a code output on an OpenAI-compatible server
    (``--continue-mode``: ``auto`` probes the server; ``chat``, ``completions`` or ``user``)."""
    script: str | None = None
    """Hidden test hook: a JSON file of scripted model turns (the ``scripted`` backend)."""

    def with_(self, **changes: Any) -> ReplSettings:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReplSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def effective_temperature(self) -> float:
        """Temperature actually used: k identical greedy samples would make the vote pointless."""
        if self.k > 1 and self.temperature == 0.0:
            return 0.7
        return self.temperature

    def verify_default(self) -> tuple[bool, str | None]:
        """(whether the next problem verifies, why when a measured default turned it off)."""
        if self.verify is not None:
            return self.verify, None
        model = measured_model(self.model, base_url=self.base_url, backend=self.backend, script=self.script)
        return default_verify(model, self.k, system_prompt=self.format)

    def verify_shown(self) -> str:
        """``on`` / ``off``, or ``auto: on|off`` when the default decides."""
        on = "on" if self.verify_default()[0] else "off"
        return on if self.verify is not None else f"auto: {on}"

    def backend_key(self) -> tuple[Any, ...]:
        """The fields that, when changed, need a new backend (a script wins over everything else)."""
        if self.script:
            return ("script", self.script)
        return (self.backend, self.model, self.base_url, self.continue_mode)

    def agent_config(self, base: AgentConfig | None = None) -> AgentConfig:
        """The loop's AgentConfig for these settings (``base`` supplies the fields the REPL leaves alone)."""
        cfg = base if base is not None else AgentConfig()
        return cfg.with_(
            format=self.format,
            max_rounds=self.rounds,
            temperature=self.effective_temperature,
            seed=self.seed,
            verify=self.verify_default()[0],
        )

    def describe_backend(self) -> str:
        """One line naming the model source, for the banner and /settings."""
        if self.script or self.backend == "scripted":
            return f"scripted ({self.script or 'no script'})"
        if self.base_url:
            return (
                f"{self.backend or 'openai'} server at {self.base_url} (model {self.model or 'first listed'})"
            )
        if self.backend == "transformers":
            return f"transformers ({self.model or 'default'})"
        if self.model and (Path(self.model).expanduser() / "config.json").is_file():
            return f"transformers ({self.model})"
        if looks_like_hub_id(self.model) and not os.environ.get("OPENAI_BASE_URL") and not self.backend:
            return f"transformers ({self.model}, from the local Hugging Face cache)"
        if os.environ.get("OPENAI_BASE_URL") and not self.model:
            return f"openai server at {os.environ['OPENAI_BASE_URL']}"
        return f"bundled llama.cpp ({self.model or DEFAULT_MODEL})"
