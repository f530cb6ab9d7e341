"""The README's two commands stay true: CI runs the README's test command, and the main command solves."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_command(marker: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(rf"<!-- {marker} -->\s*```(?:sh|bash)?\n(.*?)\n```", text, re.S)
    assert block, f"README has no <!-- {marker} --> block"
    return block.group(1).strip()


def test_readme_opens_with_the_main_command_then_the_test_command():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert text.index("<!-- main-command -->") < text.index("<!-- test-command -->") < text.index("## ")
    assert "mathagent solve " in readme_command("main-command")
    assert "pytest" in readme_command("test-command")


def test_ci_runs_exactly_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    # .ci/run extracts the block with the same marker and runs it verbatim
    assert "<!-- test-command -->" in ci and 'bash -c "$cmd"' in ci
    out = subprocess.run(
        ["bash", "-c", ci.split("cmd=$(", 1)[1].split("\n)\n", 1)[0]],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == readme_command("test-command")


@pytest.mark.model
@pytest.mark.server
@pytest.mark.kernel
def test_readme_main_command_solves_on_the_default_model():
    """The README's `mathagent solve "..."` on the bundled default model (Qwen2.5-Coder-1.5B), offline."""
    cmd = readme_command("main-command").split("&&")[-1].strip()
    argv = shlex.split(cmd)
    assert argv[:2] == ["mathagent", "solve"] and not any(a.startswith("--model") for a in argv)
    res = subprocess.run(
        argv if shutil.which("mathagent") else [sys.executable, "-m", "mathagent.agent.cli", *argv[1:]],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "COLUMNS": "100", "HF_HUB_OFFLINE": "1"},
    )
    screen = res.stdout
    assert res.returncode == 0, res.stderr[-3000:]
    assert "python" in screen and "output" in screen, screen  # it wrote code and the code ran
    assert "qwen2.5-coder-1.5b" in screen, screen  # on the bundled default model
    m = re.search(r"answer: (\S+)", screen)
    assert m, screen
    assert m.group(1) == "72", screen  # 48 in April + 24 in May
