"""The reasoning loop with scripted model turns on the REAL sandboxed kernel."""

from __future__ import annotations

import asyncio
import json

import pytest
from mathagent.agent.backends.base import Completion, ToolCall
from mathagent.agent.backends.scripted import ScriptedBackend
from mathagent.agent.config import AgentConfig
from mathagent.agent.events import CodeEvent, ExecutionEvent
from mathagent.agent.loop import solve
from mathagent.agent.trace import StepKind, StopReason, Trace, VerificationState

pytestmark = pytest.mark.kernel
CFG = AgentConfig(verify=False, cell_timeout=5)


@pytest.fixture(scope="module")
def pool():
    from mathagent.sandbox import KernelPool

    with KernelPool(size=1) as p:
        yield p


def run(pool, turns, config=CFG, **kw) -> tuple[Trace, ScriptedBackend]:
    b = turns if isinstance(turns, ScriptedBackend) else ScriptedBackend(turns, **kw)
    return asyncio.run(solve("Compute the thing.", b, pool, config)), b


def code(src: str, before: str = "Compute.") -> str:
    return f"{before}\n```python\n{src}\n```\n"


def test_multi_round_state_persists_and_events(pool):
    events = []
    b = ScriptedBackend([code("x = 6\nprint(x)"), code("print(x * 7)"), "So \\boxed{42}."])
    t = asyncio.run(solve("p", b, pool, CFG, on_event=events.append))
    assert t.stop_reason is StopReason.ANSWERED and t.final_answer == "42"
    execs = [s for s in t.steps if s.kind is StepKind.EXECUTION]
    assert [s.content for s in execs] == ["6", "42"] and all(s.execution.ok for s in execs)
    assert t.meta["rounds"] == 2 and t.timings["exec"] > 0 and t.sandbox_level
    assert "```output\n6\n```" in b.calls[1].prompt[-1]["content"]
    assert [type(e) for e in events if isinstance(e, (CodeEvent, ExecutionEvent))] == [
        CodeEvent,
        ExecutionEvent,
        CodeEvent,
        ExecutionEvent,
    ]


def test_error_is_shown_then_repaired(pool):
    t, b = run(pool, [code("print(1/0)"), code("print(1/2)", "Fix it."), "\\boxed{1/2}"], chat_template=True)
    views = [s.content for s in t.steps if s.kind is StepKind.EXECUTION]
    assert "ZeroDivisionError" in views[0] and views[1] == "0.5"
    assert "ZeroDivisionError" in b.calls[1].prompt  # raw ChatML prompt continued after the output
    assert b.calls[1].prompt.endswith("```\n") and t.final_answer == "1/2"


def test_timeout_then_restart_announces_state_lost(pool):
    stubborn = (
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.01)"
    )
    turns = [code("y = 5"), code(stubborn), code("print(y)"), "I give up: \\boxed{5}"]
    t, _ = run(pool, turns, AgentConfig(verify=False, cell_timeout=3))
    ex = [s for s in t.steps if s.kind is StepKind.EXECUTION]
    assert ex[1].execution.timed_out and ex[1].execution.kernel_restarted
    assert "all variables" in ex[1].content and "TimeoutError" in ex[1].content
    assert ex[2].execution.error.ename == "NameError"  # state really was lost
    assert t.stop_reason is StopReason.ANSWERED


def test_max_rounds(pool):
    t, _ = run(pool, [code(f"print({i})") for i in range(5)], AgentConfig(verify=False, max_rounds=2))
    assert t.stop_reason is StopReason.MAX_ROUNDS
    assert sum(s.kind is StepKind.EXECUTION for s in t.steps) == 2


def test_context_budget_fills_without_cutting_the_problem(pool):
    cfg = AgentConfig(verify=False, context_budget=900, max_tokens=200, view_chars=2000)
    t, b = run(pool, [code("print('z' * 5000)")] * 3, cfg)
    assert t.stop_reason is StopReason.CONTEXT_FULL and "context full" in t.error
    assert all(c.prompt[1]["content"] == "Compute the thing." for c in b.calls)


def test_mathcoder_trajectory(pool):
    turn = (
        "<|text|>Let me compute.<|endofblock|><|code|>a = 3\nb = 4\n(a**2 + b**2) ** 0.5<|endofblock|>"
        "<|execution|>999<|endofblock|><|text|>The hypotenuse is \\boxed{5}.<|endofblock|><|endofmessage|>"
    )
    t, b = run(pool, [turn], default_format="mathcoder")
    assert t.final_answer == "5" and t.format == "mathcoder"
    ex = [s for s in t.steps if s.kind is StepKind.EXECUTION]
    assert ex[0].content == "5.0"  # the real kernel's output, not the recorded 999
    assert "<|execution|>5.0<|endofblock|>" in b.calls[-1].prompt


def test_tools_trajectory(pool):
    call = ToolCall("c", "python", json.dumps({"code": "import sympy\nsympy.factorint(360)"}))
    turns = [Completion("", "tool_calls", tool_calls=(call,)), "360 = 2^3 3^2 5, so \\boxed{3}"]
    t, b = run(pool, turns, default_format="tools")
    assert t.final_answer == "3" and "{2: 3, 3: 2, 5: 1}" in t.steps[1].content
    assert b.calls[0].params.tools and b.calls[1].prompt[-1]["role"] == "tool"


def test_verification_hook_runs_and_records_rounds(pool):
    pytest.importorskip("mathagent.agent.verification")
    turns = [
        code("print(2**10)"),
        "So \\boxed{1024}.",
        code("print(2**10 == 1024)", "Check."),
        "VERDICT: TRUE",
    ]
    t, b = run(pool, turns, AgentConfig(verify=True))
    assert t.final_answer == "1024" and t.verification_state is VerificationState.TRUE
    assert any(s.kind is StepKind.USER and s.phase == "verify" for s in t.steps)
    assert Trace.from_json(t.to_json()) == t


def test_unboxed_answer_comes_from_the_last_output_not_the_last_number(pool):
    # the shape of ToRA-70B's GSM8K trace 98: the sentence's last number (15) is not the answer
    t, _ = run(
        pool,
        [code("print(30 - 5 - 20)"), "5 cars drove through the traffic jam in the first 15 minutes."],
    )
    assert t.final_answer == "5"
    t, _ = run(pool, [code("print(30 - 5 - 20)"), "So the answer is \\boxed{6}."])
    assert t.final_answer == "6"  # an explicit answer always wins over the output
    t, _ = run(pool, [code("print(1/0)"), "It ends at $15$ minutes."])
    assert t.final_answer == "15"  # a failed cell has no value to fall back on
