"""The one place that says where mathagent caches things: ``$MATHAGENT_CACHE_DIR``, else
``~/.cache/mathagent``. Subfolders: ``models`` (assembled bundled models), ``hf`` (GGUF models
converted to plain model folders), ``datasets`` (hub copies), ``repl_history``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The cache folder, or ``parts`` joined under it (nothing is created)."""
    root = os.environ.get("MATHAGENT_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "mathagent"
    return base.joinpath(*parts)
