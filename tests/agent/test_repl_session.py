"""The real REPL in a pseudo-terminal with a scripted model and real sandboxed kernels."""

from __future__ import annotations

import json
import re
import time

import psutil
import pytest
from mathagent.agent.trace import StopReason, Trace
from repl_term import spawn_repl

pytestmark = pytest.mark.kernel

SOLVE_391 = (
    "Let me compute it.\n```python\nprint(17*23)\n```\n```output\n391\n```\nThe answer is \\boxed{391}."
)
VERIFY_391 = "Check it:\n```python\nprint(17*23 == 391)\n```\n```output\nTrue\n```\nVERDICT: TRUE"
SOLVE_42 = "```python\nprint(6*7)\n```\n```output\n42\n```\nSo the answer is \\boxed{42}."
SLEEP = "This takes a while.\n```python\nimport time\ntime.sleep(60)\nprint('done')\n```\n"
SOLVE_4 = "```python\nprint(2+2)\n```\n```output\n4\n```\nThe answer is \\boxed{4}."


def test_every_command_and_a_verified_answer(tmp_path):
    term = spawn_repl(tmp_path, [SOLVE_391, VERIFY_391, SOLVE_42, SOLVE_42], "--no-verify")
    shown = term.line("/help", "/quit")
    for usage in (
        "/k N",
        "/model NAME|PATH",
        "/base-url URL",
        "/format markdown|mathcoder|tools",
        "/save FILE",
    ):
        assert usage in shown
    shown = term.line("/settings", "this session")
    assert re.search(r"verify +off", shown) and "scripted" in shown and "0 this session" in shown
    assert re.search(r"continue_mode +auto", shown)
    term.line("/temperature 0.5", "temperature = 0.5")
    term.line("/format markdown", "format = markdown")
    term.line("/rounds 3", "rounds = 3")
    term.line("/model qwen2.5-coder-0.5b", "model = qwen2.5-coder-0.5b")
    term.line("/backend scripted", "backend = scripted")
    term.line("/base-url http://127.0.0.1:9/v1", "base_url = http://127.0.0.1:9/v1")
    term.line("/base-url nowhere", "needs an http")
    term.line("/temperature hot", "needs a number")
    term.line("/frobnicate", "unknown command /frobnicate")
    term.line("/seed 7", "seed = 7")
    term.line("/verify on", "verify = on")

    shown = term.line("What is 17*23?", "answer: 391")
    assert "print(17*23)" in shown  # the code panel
    assert "output · round 1" in shown
    assert "verification round 1:  [T] verified" in shown
    assert "answer: 391   [T] verified" in shown
    shown = term.line("/trace", '"stop_reason": "answered"')
    assert '"final_answer": "391"' in shown and '"problem": "What is 17*23?"' in shown

    term.line("/verify off", "verify = off")
    term.line("/vote majority", "vote = majority")
    term.line("/k 2", "k = 2")
    shown = term.line("What is 6*7?", "majority vote of 2): 42")
    assert "2 samples" in shown  # the live table's title
    shown = term.line("/settings", "this session")
    assert re.search(r"\bk +2\b", shown) and "3 this session" in shown and re.search(r"seed +7\b", shown)

    out = tmp_path / "traces.jsonl"
    term.line(f"/save {out}", "saved 3 traces")
    traces = [Trace.from_json(line) for line in out.read_text().splitlines()]
    assert [t.final_answer for t in traces] == ["391", "42", "42"]
    assert traces[0].verification_state is not None and traces[0].verification_state.value == "T"
    assert traces[0].seed == 7 and traces[0].meta["config"]["temperature"] == 0.5

    term.child.send("/quit\r")
    term.wait_for("bye")
    assert term.wait_exit() == 0
    assert "What is 17*23?" in (tmp_path / "history").read_text()


def test_ctrl_c_stops_a_long_cell_and_ctrl_d_leaves_no_kernel(tmp_path):
    term = spawn_repl(tmp_path, [SLEEP, SOLVE_4], "--no-verify", "--timeout", "120", script_env=True)
    term.child.send("Sleep for a minute\r")
    term.wait_for("time.sleep(60)")
    time.sleep(1.0)  # the cell is running
    kernels = psutil.Process(term.child.pid).children(recursive=True)
    assert kernels, "a kernel should be running the cell"
    t0 = time.monotonic()
    term.child.sendintr()
    term.wait_for("stopped (Ctrl-C)", timeout=15)
    term.prompt()
    assert time.monotonic() - t0 < 15  # a generous bound: the cell sleeps for 60 s

    # Ctrl-C at the prompt clears the line; the REPL is still there.
    term.child.send("half a line")
    time.sleep(0.3)
    term.child.sendintr()
    time.sleep(0.3)
    # Multi-line input: a trailing backslash continues, Esc-Enter inserts a newline.
    term.child.send("What is 2+2\\\r")
    time.sleep(0.2)
    term.child.send("in total?\x1b\r")
    time.sleep(0.2)
    shown = term.line("really", "answer: 4")
    assert "print(2+2)" in shown
    shown = term.line("/trace", '"stop_reason": "answered"')
    assert '"problem": "What is 2+2\\nin total?\\nreally"' in shown
    assert "half a line" not in shown

    out = tmp_path / "t.jsonl"
    term.line(f"/save {out}", "saved 2 traces")
    first, second = (Trace.from_json(line) for line in out.read_text().splitlines())
    assert first.stop_reason is StopReason.CANCELLED
    assert [s.kind.value for s in first.steps] == ["text", "code"]
    assert second.final_answer == "4"

    kernels = psutil.Process(term.child.pid).children(recursive=True)
    term.child.sendeof()
    term.wait_for("bye")
    assert term.wait_exit() == 0
    gone, alive = psutil.wait_procs(kernels, timeout=10)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], "kernel processes left behind"
    assert json.loads(json.dumps(first.to_dict()))["stop_reason"] == "cancelled"


def test_k_samples_that_agree_are_not_verified(tmp_path):
    """With verification on and k = 2, two samples that agree skip verification (the vote needs no
    states) and the REPL says so; the script holds no verification turns, so none are asked for."""
    term = spawn_repl(tmp_path, [SOLVE_42, SOLVE_42], "--verify")
    term.line("/verify auto", "verify = auto: on")  # scripted turns are no measured model
    term.line("/verify on", "verify = on")
    term.line("/k 2", "k = 2")
    shown = term.line("What is 6*7?", "vote of 2): 42")
    assert "not verified: the samples agreed" in shown
    out = tmp_path / "traces.jsonl"
    term.line(f"/save {out}", "saved 2 traces")
    traces = [Trace.from_json(line) for line in out.read_text().splitlines()]
    assert [t.final_answer for t in traces] == ["42", "42"]
    assert all(t.verification == () and t.meta["verification_skipped"] for t in traces)
    term.child.send("/quit\r")
    term.wait_for("bye")
    assert term.wait_exit() == 0
