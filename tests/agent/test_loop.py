"""The reasoning loop on bad input and backend failures (deterministic; no code runs)."""

from __future__ import annotations

import asyncio

import pytest
from mathagent.agent.backends.base import BackendError, Completion, GenerationParams, ToolCall
from mathagent.agent.backends.scripted import ScriptedBackend
from mathagent.agent.config import AgentConfig
from mathagent.agent.events import AnswerEvent
from mathagent.agent.loop import solve, solve_k
from mathagent.agent.prompts import load_prompt
from mathagent.agent.trace import StepKind, StopReason, Trace

CFG = AgentConfig(verify=False)


class NoSandbox:
    """A provider for trajectories that must not run code: acquiring fails the test."""

    level = None

    def acquire(self):
        raise AssertionError("this trajectory should not need a sandbox")

    def close(self):
        pass


def run(problem, backend, config=CFG, **kw) -> Trace:
    return asyncio.run(solve(problem, backend, NoSandbox(), config, **kw))


def test_answer_without_code_records_everything():
    b = ScriptedBackend(["Easy: $2+2=\\boxed{4}$."], model="m1")
    events = []
    t = run("What is 2+2?", b, AgentConfig(verify=False, seed=7), on_event=events.append, problem_id="q1")
    assert (t.stop_reason, t.final_answer, t.error) == (StopReason.ANSWERED, "4", None)
    assert (t.backend, t.model, t.format, t.problem_id, t.seed) == ("scripted", "m1", "markdown", "q1", 7)
    assert t.prompt_hash == load_prompt("markdown").sha256
    assert t.tokens_in > 0 and t.tokens_out > 0 and t.timings["total"] >= t.timings["model"]
    assert isinstance(events[-1], AnswerEvent) and events[-1].answer == "4"
    params: GenerationParams = b.calls[0].params
    assert params.stop == ("```output",) and params.seed == 7
    assert Trace.from_json(t.to_json()) == t


def test_no_answer():
    t = run("What?", ScriptedBackend(["I am not sure."]))
    assert t.stop_reason is StopReason.NO_ANSWER and t.final_answer is None


def test_empty_problem_is_an_error():
    for problem in ("", "   \n"):
        t = run(problem, ScriptedBackend(["\\boxed{1}"]))
        assert t.stop_reason is StopReason.ERROR and "empty problem" in t.error


def test_huge_problem_is_context_full_without_a_call():
    b = ScriptedBackend(["\\boxed{1}"])
    t = run("1 + " * 250_000 + "1 = ?", b)
    assert t.stop_reason is StopReason.CONTEXT_FULL and "context full" in t.error
    assert b.calls == [] and t.problem.endswith("1 = ?")


def test_backend_returns_nothing():
    t = run("p", ScriptedBackend([""]))
    assert t.stop_reason is StopReason.ERROR and "empty completion" in t.error
    t = run("p", ScriptedBackend([], on_exhausted="empty"))
    assert t.stop_reason is StopReason.ERROR


class Broken:
    name, model, default_format, context_window = "broken", "x", "markdown", None

    def __init__(self, exc=None, out=()):
        self.exc, self.out = exc, list(out)

    async def generate(self, prompt, params, *, on_text=None):
        if self.exc:
            raise self.exc
        return self.out

    def count_tokens(self, text):
        return len(text) // 4

    async def aclose(self):
        pass


def test_backend_errors_end_the_trajectory():
    t = run("p", ScriptedBackend([]))
    assert t.stop_reason is StopReason.ERROR and "ran out of turns" in t.error
    t = run("p", Broken(BackendError("server down")))
    assert t.stop_reason is StopReason.ERROR and "server down" in t.error
    t = run("p", Broken(RuntimeError("bug")))
    assert t.stop_reason is StopReason.ERROR and "RuntimeError: bug" in t.error
    t = run("p", Broken(out=[]))
    assert t.stop_reason is StopReason.ERROR and "no completion" in t.error


def test_unclosed_code_block_is_the_models_own_ending_not_a_failure():
    """A code block cut by max_tokens ends the sample without an answer, as prose that runs out of
    tokens does: the model's doing, so not ERROR (a failed sample, which --retry-failed runs again)."""
    b = ScriptedBackend(["Let me loop.\n```python\nx = 1\n" + "x += 1\n" * 2000])
    t = run("p", b, AgentConfig(verify=False, max_tokens=200))
    assert (t.stop_reason, t.final_answer) == (StopReason.NO_ANSWER, None)
    assert t.error == "the model did not close its code block within 200 tokens"
    assert [s.kind for s in t.steps] == [StepKind.TEXT]


def test_an_answer_given_before_an_unclosed_code_block_stands():
    b = ScriptedBackend(["So $\\boxed{12}$. Checking:\n```python\nx = 1\n" + "x += 1\n" * 2000])
    t = run("p", b, AgentConfig(verify=False, max_tokens=200))
    assert (t.stop_reason, t.final_answer, t.error) == (StopReason.ANSWERED, "12", None)


def test_malformed_tool_call_ends_without_an_answer():
    bad = Completion("calling", tool_calls=(ToolCall("c1", "python", "{oops"),), finish_reason="tool_calls")
    t = run("p", ScriptedBackend([bad], default_format="tools"))
    assert t.stop_reason is StopReason.NO_ANSWER and t.final_answer is None and t.format == "tools"
    assert t.error.startswith("malformed tool call: ")


def test_unknown_format_or_prompt():
    t = run("p", ScriptedBackend(["x"]), AgentConfig(format="latex"))
    assert t.stop_reason is StopReason.ERROR and "unknown trace format" in t.error
    t = run("p", ScriptedBackend(["x"]), AgentConfig(system_prompt="nope"))
    assert t.stop_reason is StopReason.ERROR and "no system prompt" in t.error


def test_mathcoder_text_blocks_continue_until_end_of_message():
    turn = "<|text|>Think.<|endofblock|><|text|>So \\boxed{5}.<|endofblock|><|endofmessage|>"
    b = ScriptedBackend([turn], default_format="mathcoder")
    t = run("p", b)
    assert t.stop_reason is StopReason.ANSWERED and t.final_answer == "5" and len(b.calls) == 3
    assert b.calls[1].prompt.endswith("<|assistant|><|text|>Think.<|endofblock|>")


def test_solve_k_seeds_and_indices():
    b = ScriptedBackend([lambda p, params: f"\\boxed{{{params.seed}}}"] * 3)
    traces = asyncio.run(solve_k("p", b, NoSandbox(), AgentConfig(seed=10, verify=False), k=3))
    assert [t.sample_index for t in traces] == [0, 1, 2]
    assert sorted(t.final_answer for t in traces) == ["10", "11", "12"]


class _Slots:
    def __init__(self, slots: int) -> None:
        self.slots = slots


@pytest.mark.parametrize(("server", "at_once", "peak"), [(None, None, 3), (_Slots(4), None, 3), (_Slots(1), None, 1),
                                                          (_Slots(1), 2, 2), (None, 1, 1)])  # fmt: skip
def test_solve_k_runs_samples_one_after_another_on_a_one_slot_server(server, at_once, peak):
    """A server this process started with one slot (one KV state) gets the k samples one after another;
    other backends get them all at once; ``at_once`` overrides."""
    state = {"now": 0, "peak": 0}

    class Counting(ScriptedBackend):
        async def generate(self, *args, **kw):
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            try:
                await asyncio.sleep(0.05)
                return await super().generate(*args, **kw)
            finally:
                state["now"] -= 1

    b = Counting([lambda p, params: f"\\boxed{{{params.seed}}}"] * 3)
    b.server = server
    traces = asyncio.run(
        solve_k("p", b, NoSandbox(), AgentConfig(seed=10, verify=False), k=3, at_once=at_once)
    )
    assert sorted(t.final_answer for t in traces) == ["10", "11", "12"]
    assert [t.sample_index for t in traces] == [0, 1, 2]
    assert state["peak"] == peak


def test_config_round_trip_ignores_unknown_keys():
    c = AgentConfig(format="tools", max_rounds=3, seed=1)
    assert AgentConfig.from_dict({**c.to_dict(), "from_the_future": 1}) == c
