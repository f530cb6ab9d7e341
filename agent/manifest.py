"""``mathagent.json``: the record a trained model folder carries, so the agent runs it the way it was
trained. ``mathagent train`` writes it; the transformers backend reads its trace format.

Written as ``{"format", "stop", "schema_version", "base_model", "training_format"}``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

MANIFEST = "mathagent.json"
"""File name inside the model folder."""
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ModelManifest:
    """What a trained model folder tells the agent."""

    format: str
    """Trace format the model was trained to write (``mathcoder``, ``tools``, ``markdown``)."""
    stop: tuple[str, ...] = ()
    """Stop strings generation should use."""
    base_model: str = ""
    """The model training started from (name or path)."""
    training_format: str = ""
    """How it was trained: the exported SFT data format (``mathcoder`` or ``chat``), or ``grpo``."""
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelManifest:
        """Build from a dict; unknown keys (from newer versions) are ignored; ``format`` is required."""
        if not isinstance(d.get("format"), str) or not d["format"]:
            raise ValueError(f"{MANIFEST} has no 'format'")
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["stop"] = tuple(kw.get("stop") or ())
        return cls(**kw)

    def write(self, directory: str | os.PathLike[str]) -> Path:
        path = Path(directory) / MANIFEST
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, directory: str | os.PathLike[str]) -> ModelManifest | None:
        """The manifest of a model folder; None when it has none or it cannot be read."""
        path = Path(directory) / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls.from_dict(data) if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None
