"""The REPL's / commands and settings as pure functions, and its display helpers."""

from __future__ import annotations

import pytest
from mathagent.agent.repl.commands import COMMANDS, CommandError, is_command, run_command
from mathagent.agent.repl.display import badge, clean_prose, split_code
from mathagent.agent.repl.recorder import EventRecorder
from mathagent.agent.repl.settings import ReplSettings, history_path
from mathagent.agent.trace import StepKind, StopReason

S = ReplSettings()


@pytest.mark.parametrize(
    "line, field, value",
    [
        ("/k 4", "k", 4),
        ("/temperature 0.7", "temperature", 0.7),
        ("/temp 0", "temperature", 0.0),
        ("/format mathcoder", "format", "mathcoder"),
        ("/format default", "format", None),
        ("/verify off", "verify", False),
        ("/verify on", "verify", True),
        ("/rounds 3", "rounds", 3),
        ("/backend openai", "backend", "openai"),
        ("/base-url http://127.0.0.1:8080/v1/", "base_url", "http://127.0.0.1:8080/v1"),
        ("/base-url default", "base_url", None),
        ("/model qwen2.5-coder-0.5b", "model", "qwen2.5-coder-0.5b"),
        ("/vote majority", "vote", "majority"),
        ("/seed 3", "seed", 3),
        ("/continue-mode user", "continue_mode", "user"),
        ("/continue_mode completions", "continue_mode", "completions"),
    ],
)
def test_setting_commands(line, field, value):
    res = run_command(line, S)
    assert getattr(res.settings, field) == value
    assert res.action is None and field in res.message


@pytest.mark.parametrize(
    "line, message",
    [
        ("/k 0", "between 1 and 64"),
        ("/k many", "whole number"),
        ("/temperature 5", "between 0 and 2"),
        ("/format latex", "one of: markdown, mathcoder, tools"),
        ("/backend vllm", "one of"),
        ("/base-url localhost:8080", "http"),
        ("/model /no/such/file.gguf", "no such model file"),
        ("/rounds", "usage: /rounds N"),
        ("/continue-mode sideways", "one of: auto, chat, completions, user"),
        ("/save", "needs an argument"),
        ("/kk 2", "unknown command /kk (did you mean /k"),
    ],
)
def test_bad_commands_say_what_is_expected(line, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace("/", "/")):
        run_command(line, S)


def test_action_commands_leave_settings_alone():
    for line, action in [
        ("/trace", "trace"),
        ("/settings", "settings"),
        ("/help", "help"),
        ("/quit", "quit"),
        ("/exit", "quit"),
        ("/save out.jsonl", "save"),
        ("/clear", "clear"),
    ]:
        res = run_command(line, S)
        assert res.action == action and res.settings == S
    assert run_command("/save a b.jsonl", S).arg == "a b.jsonl"
    assert is_command("  /k 2") and not is_command("what is 1/2?")
    assert all(c.help for c in COMMANDS.values())


def test_settings_map_onto_agent_config():
    from mathagent.agent.config import AgentConfig

    s = S.with_(k=4, rounds=3, verify=False, format="tools", seed=9)
    cfg = s.agent_config(AgentConfig(cell_timeout=30.0))
    assert (cfg.max_rounds, cfg.verify, cfg.format, cfg.seed, cfg.cell_timeout) == (
        3,
        False,
        "tools",
        9,
        30.0,
    )
    assert cfg.temperature == 0.7  # k > 1 at temperature 0 samples at 0.7
    assert s.with_(temperature=0.2).agent_config().temperature == 0.2
    assert "k = 4 (temperature 0" in run_command("/k 4", S).message
    assert ReplSettings.from_dict({**s.to_dict(), "future_field": 1}) == s
    # a script pins the backend: model / URL changes do not rebuild (and replay) it
    scripted = S.with_(script="x.json")
    assert scripted.backend_key() == scripted.with_(model="m", base_url="http://x").backend_key()
    assert S.backend_key() != S.with_(model="m").backend_key()
    assert S.backend_key() != S.with_(continue_mode="user").backend_key()  # a new mode builds a new backend


def test_the_continue_mode_reaches_the_backend_the_repl_builds():
    """``--continue-mode`` (and ``/continue-mode``) reach the OpenAI backend the REPL builds; nothing is
    sent to the server until a problem is solved."""
    from mathagent.agent.cli_solve import build_parser
    from mathagent.agent.repl.app import settings_from_args
    from mathagent.agent.repl.runtime import build_backend

    args = build_parser().parse_args(["--base-url", "http://127.0.0.1:9/v1", "--continue-mode", "user"])
    settings = settings_from_args(args)
    assert settings.continue_mode == "user" and build_backend(settings).continue_mode == "user"
    chat = run_command("/continue-mode chat", settings).settings
    assert build_backend(chat).continue_mode == "chat"
    assert settings_from_args(build_parser().parse_args([])).continue_mode == "auto"


def test_history_path_env(monkeypatch, tmp_path):
    monkeypatch.delenv("MATHAGENT_REPL_HISTORY", raising=False)
    monkeypatch.setenv("MATHAGENT_CACHE_DIR", str(tmp_path))
    assert history_path() == tmp_path / "repl_history"
    monkeypatch.setenv("MATHAGENT_REPL_HISTORY", str(tmp_path / "h"))
    assert history_path() == tmp_path / "h"


def test_display_helpers():
    prose, code = split_code("Let me compute.\n```python\nprint(1)\n")
    assert prose == "Let me compute.\n" and code == "print(1)\n"
    assert split_code("no code yet") == ("no code yet", None)
    assert split_code("<|text|>hi<|endofblock|><|code|>x=1")[1] == "x=1"
    assert clean_prose("<|text|>So the answer is 3.<|endofblock|>") == "So the answer is 3."
    assert "[T] verified" in badge("T").plain and "[F] refuted" in badge("F").plain
    assert "not verified" in badge(None).plain


def test_recorder_rebuilds_a_cancelled_trace():
    from mathagent.agent.events import CodeEvent, ExecutionEvent, TextDelta
    from mathagent.sandbox.base import ExecResult

    rec = EventRecorder(1)
    for piece in ["First ", "compute.\n```python\n", "print(2)\n```\n"]:
        rec.handle(TextDelta(piece))
    rec.handle(CodeEvent("print(2)", 0))
    rec.handle(ExecutionEvent("2", ExecResult(stdout="2\n"), 0))
    rec.handle(TextDelta("Now wait"))
    rec.handle(CodeEvent("import time; time.sleep(60)", 1))
    (t,) = rec.cancelled_traces("p", None, S.with_(seed=5))
    assert t.stop_reason is StopReason.CANCELLED and t.seed == 5
    assert [s.kind for s in t.steps] == [
        StepKind.TEXT,
        StepKind.CODE,
        StepKind.EXECUTION,
        StepKind.TEXT,
        StepKind.CODE,
    ]
    assert t.steps[0].content == "First compute." and t.steps[2].execution.stdout == "2\n"
