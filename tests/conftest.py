"""Shared fixtures: paths to the reference data, temp run folders, zero retry waits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MATHAGENT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The reference data folder (../shared/data); tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Point run folders at a temp dir, make retry waits zero and keep data loading off the hub."""
    monkeypatch.setenv("MATHAGENT_RUNS_DIR", str(tmp_path_factory.mktemp("runs")))
    monkeypatch.setenv("MATHAGENT_RETRY_WAIT_SCALE", "0")
    monkeypatch.setenv("MATHAGENT_NO_HUB", "1")  # no test may reach a real hub (test_hub unsets it)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
