"""Presets as data: loading, validation errors that name file and key, flags on every command,
``mathagent presets``, answer modes, and the run header of an eval that uses one."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from mathagent.agent import cli_presets, cli_solve
from mathagent.agent.config import AgentConfig
from mathagent.agent.presets import (
    Preset,
    PresetError,
    apply_preset,
    available,
    extract_final,
    load_preset,
    parse_preset,
)
from mathagent.agent.prompts import load_prompt
from mathagent.agent.repl import app
from mathagent.evals import cli_eval
from mathagent.evals.cli_agent import agent_setup
from mathagent.training import cli_generate

SHIPPED = {"default", "qwen2.5-math-tir", "tora", "mathcoder", "numina-tir", "openai-tools"}


def test_shipped_presets_load_and_validate():
    assert set(available()) == SHIPPED
    for name in SHIPPED:
        p = load_preset(name)
        assert isinstance(p, Preset) and p.name == name and len(p.sha256) == 64
        assert p.path == f"presets/{name}.toml"
    default = load_preset("default")
    assert (default.format, default.system, default.stop, default.output_role) == (None, None, None, None)
    qwen = load_preset("qwen2.5-math-tir")
    assert (qwen.format, qwen.output_role, qwen.max_tokens, qwen.max_code_calls) == (
        "markdown",
        "assistant",
        2048,
        3,
    )
    assert qwen.system.endswith("put your final answer within \\boxed{}.")


def write(tmp_path: Path, text: str, name: str = "mine.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("body", "key", "why"),
    [
        ('formt = "markdown"', "formt", "unknown key"),
        ('format = "latex"', "format", "unknown trace format"),
        ("max_tokens = 0", "max_tokens", "at least 1"),
        ('max_tokens = "2048"', "max_tokens", "non-negative integer"),
        ("max_code_calls = -1", "max_code_calls", "non-negative integer"),
        ("verbatim = 1", "verbatim", "true or false"),
        ('stop = "```output"', "stop", "list of non-empty strings"),
        ('stop = [""]', "stop", "list of non-empty strings"),
        ('format = "markdown"\noutput_role = "system"', "output_role", "is not one of"),
        ('format = "tools"\noutput_role = "assistant"', "output_role", "format tools writes outputs as tool"),
        ('output_role = "user"', "output_role", "needs 'format'"),
        ('user_template = "Solve it."', "user_template", "must contain {problem}"),
        ('format = "markdown"\noutput_template = "```output```"', "output_template", "must contain {output}"),
        ('format = "mathcoder"\nraw_prompt = "{user}"', "raw_prompt", "only the markdown format"),
        ('format = "markdown"\nraw_prompt = "Q: {problem}"', "raw_prompt", "must contain {user}"),
        ('answer = "first_number"', "answer", "is not one of"),
        ("output_limit = 10\noutput_head = 8\noutput_tail = 8", "output_limit", "must not exceed"),
    ],
)
def test_bad_files_name_the_file_and_the_key(tmp_path, body, key, why):
    path = write(tmp_path, body + "\n")
    with pytest.raises(PresetError) as e:
        load_preset(str(path))
    msg = str(e.value)
    assert str(path) in msg and f"key {key!r}" in msg and why in msg


def test_not_toml_and_missing_presets(tmp_path):
    path = write(tmp_path, "format = \n")
    with pytest.raises(PresetError, match=f"{path}: not valid TOML"):
        load_preset(str(path))
    with pytest.raises(PresetError, match="no preset named 'qwen-tir'.*qwen2.5-math-tir"):
        load_preset("qwen-tir")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'name = "\xe9"\n')
    with pytest.raises(PresetError, match="not UTF-8"):
        load_preset(str(bad))


def test_a_preset_file_by_path(tmp_path):
    path = write(
        tmp_path,
        'format = "markdown"\nsystem = "Solve with \\\\boxed{}."\nuser_template = "Problem: {problem}"\n'
        'output_template = "\\n<out>{output}</out>\\n"\noutput_role = "assistant"\nmax_tokens = 77\n',
        name="house.toml",
    )
    p = load_preset(str(path))
    assert (p.name, p.system, p.user("1+1?"), p.max_tokens) == (
        "house",
        "Solve with \\boxed{}.",
        "Problem: 1+1?",
        77,
    )
    assert p.output_block("2") == "\n<out>2</out>\n"
    assert parse_preset(path.read_text(), where="x.toml").name == "x"


def test_output_truncation_and_empty_output():
    p = load_preset("tora")
    s = "a" * 60 + "b" * 60
    assert p.show_output(s) == "a" * 50 + "..." + "b" * 50
    assert p.show_output("short") == "short"
    assert load_preset("mathcoder").show_output("  \n") == "<empty_execution>"
    assert load_preset("numina-tir").show_output("z" * 201) == "z" * 200 + " ... (output truncated)"


def test_apply_preset_explicit_values_win():
    base = AgentConfig()
    cfg = apply_preset(base, "qwen2.5-math-tir")
    assert (cfg.preset, cfg.format, cfg.max_tokens, cfg.max_rounds) == (
        "qwen2.5-math-tir",
        "markdown",
        2048,
        3,
    )
    cfg = apply_preset(base, "qwen2.5-math-tir", max_tokens=512, max_rounds=0)
    assert (cfg.max_tokens, cfg.max_rounds) == (512, 0)
    cfg = apply_preset(base, "default")
    assert (cfg.preset, cfg.format, cfg.max_tokens, cfg.max_rounds) == ("default", None, 1024, 6)
    assert apply_preset(base, None) == base
    with pytest.raises(PresetError, match="--format tools conflicts with preset tora"):
        apply_preset(base, "tora", format="tools")
    assert "preset" not in base.to_dict() and cfg.to_dict()["preset"] == "default"


@pytest.mark.parametrize(
    ("mode", "text", "out", "expected"),
    [
        ("default", "Thus she makes \\boxed{18} dollars.", None, "18"),
        ("default", "I printed it.", "18", "18"),
        ("boxed", "so it is 18 dollars", None, None),
        ("boxed", "first \\boxed{3}, finally \\boxed{18}", None, "18"),
        ("answer_is", "The answer is 18.", None, "18"),
        ("answer_is", "We get \\boxed{18}", None, None),
        ("last_number", "16 - 7 = 9 eggs, 9 * 2 = 18", None, "18"),
        ("last_number", "no digits", None, None),
    ],
)
def test_answer_modes(mode, text, out, expected):
    assert extract_final(mode, text, out) == expected


def test_system_prompt_file(tmp_path):
    f = tmp_path / "sys.txt"
    f.write_text("Be brief and use code.\n")
    sp = load_prompt(str(f))
    assert (sp.name, sp.text) == (str(f), "Be brief and use code.")
    with pytest.raises(ValueError, match="no system prompt named 'nope' and no such file"):
        load_prompt("nope")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        load_prompt(str(tmp_path / "empty.txt"))


def test_every_command_takes_preset_and_system_prompt(monkeypatch):
    for var in ("MATHAGENT_MODEL", "MATHAGENT_BACKEND", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    flags = ["--preset", "tora", "--system-prompt", "tools"]
    solve = cli_solve.build_parser().parse_args(flags)
    ev = cli_eval.build_parser().parse_args(flags)
    gen = cli_generate.build_parser().parse_args(["--problems", "gsm8k", "--out", "x", *flags])
    for args in (solve, ev, gen):
        assert (args.preset, args.system_prompt) == ("tora", "tools")
    cfg = cli_solve.config_from_args(solve)
    assert (cfg.preset, cfg.format, cfg.max_tokens, cfg.max_rounds, cfg.system_prompt) == (
        "tora",
        "markdown",
        1024,
        3,
        "tools",
    )
    explicit = cli_solve.build_parser().parse_args([*flags, "--max-tokens", "1024", "--rounds", "6"])
    cfg = cli_solve.config_from_args(explicit)
    assert (cfg.max_tokens, cfg.max_rounds) == (1024, 6)  # typed values win even when equal to defaults
    # the REPL takes solve's flags
    s, base = app.settings_from_args(solve), app.base_config(solve)
    assert (s.format, s.rounds, base.preset, base.max_tokens, base.system_prompt) == (
        "markdown",
        3,
        "tora",
        1024,
        "tools",
    )
    assert s.agent_config(base).preset == "tora"


def test_eval_and_generate_setup_use_the_preset(monkeypatch):
    for var in ("MATHAGENT_MODEL", "MATHAGENT_BACKEND", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    args = cli_eval.build_parser().parse_args(["--backend", "scripted", "--preset", "qwen2.5-math-tir"])
    setup = agent_setup(args, 0.0)
    assert (setup.format, setup.config.preset, setup.config.max_tokens, setup.config.max_rounds) == (
        "markdown",
        "qwen2.5-math-tir",
        2048,
        3,
    )
    assert setup.header_fields()["preset"]["sha256"] == load_preset("qwen2.5-math-tir").sha256
    args = cli_eval.build_parser().parse_args(
        ["--backend", "scripted", "--preset", "tora", "--format", "tools"]
    )
    with pytest.raises(ValueError, match="conflicts with preset tora"):
        agent_setup(args, 0.0)
    args = argparse.Namespace(**{**vars(args), "format": None, "preset": "nope"})
    with pytest.raises(PresetError, match="no preset named 'nope'"):
        agent_setup(args, 0.0)


def test_bad_preset_is_a_clear_cli_error(tmp_path, capsys):
    script = tmp_path / "s.jsonl"
    script.write_text(json.dumps({"problem_id": "0", "turns": ["\\boxed{18}"]}) + "\n")
    scripted = ["--backend", "scripted", "--script", str(script), "--limit", "1"]
    assert cli_eval.main([*scripted, "--preset", "nope", "--run-dir", str(tmp_path / "r")]) == 2
    assert "no preset named 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    rc = cli_generate.main(
        ["--problems", "gsm8k-train", "--out", str(tmp_path / "g"), "--preset", "tora", "--format", "tools"]
    )
    assert rc == 2 and "conflicts with preset tora" in capsys.readouterr().err
    assert cli_eval.main([*scripted, "--system-prompt", "nope.md", "--run-dir", str(tmp_path / "r")]) == 2
    assert "no system prompt named 'nope.md'" in capsys.readouterr().err


def test_solve_cli_rejects_a_bad_preset_before_starting_a_model():
    out = subprocess.run(
        [sys.executable, "-m", "mathagent.agent.cli", "solve", "--preset", "nope", "1+1?"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "no preset named 'nope'" in out.stderr


def test_presets_command_lists_them(capsys):
    assert cli_presets.main(["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == SHIPPED
    qwen = next(r for r in rows if r["name"] == "qwen2.5-math-tir")
    assert (qwen["format"], qwen["max_tokens"], qwen["max_code_calls"]) == ("markdown", 2048, 3)
    assert "QwenLM/Qwen2.5-Math" in qwen["source"]
    assert cli_presets.main([]) == 0
    table = capsys.readouterr().out
    for name in SHIPPED:
        assert name in table
    assert cli_presets.main(["numina-tir", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stop"] == ["```output\n"]
    assert cli_presets.main(["nope"]) == 2
    assert "no preset named" in capsys.readouterr().err


def test_markdown_preset_output_placement():
    from mathagent.agent.formats import get_format
    from mathagent.agent.trace import Step, StepKind

    T, C, E, U = StepKind.TEXT, StepKind.CODE, StepKind.EXECUTION, StepKind.USER
    steps = [Step(T, "Count."), Step(C, "print(9)"), Step(E, "9")]
    as_user = parse_preset(
        'format = "markdown"\noutput_template = "Output: {output}"\noutput_role = "user"\nuser_template = "Q: {problem}"'
    )
    msgs = get_format("markdown", as_user).build_prompt("How many?", steps, "sys")
    assert msgs == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "Q: How many?"},
        {"role": "assistant", "content": "Count.\n```python\nprint(9)\n```"},
        {"role": "user", "content": "Output: 9"},
    ]
    qwen = get_format("markdown", load_preset("qwen2.5-math-tir"))
    verify = [
        *steps,
        Step(T, " So \\boxed{18}."),
        Step(U, "Check it."),
        Step(C, "print(18 == 18)"),
        Step(E, "True"),
    ]
    msgs = qwen.build_prompt("How many?", verify, "sys")
    assert msgs[2] == {
        "role": "assistant",
        "content": "Count.```python\nprint(9)\n```\n```output\n9\n```\n So \\boxed{18}.",
    }
    assert msgs[3] == {"role": "user", "content": "Check it."}
    assert msgs[4] == {
        "role": "assistant",
        "content": "```python\nprint(18 == 18)\n```\n```output\nTrue\n```\n",
        "partial": True,
    }
    # without an output yet, the first call is the plain chat prompt (the server opens the turn)
    assert qwen.build_prompt("How many?", [], "sys")[-1] == {"role": "user", "content": "How many?"}
