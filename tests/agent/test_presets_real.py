"""Presets on real parts: ``solve`` and ``eval`` with a preset run real kernels (and the bundled model)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mathagent.agent.presets import load_preset
from mathagent.evals.cli_eval import main as eval_main

pytestmark = pytest.mark.kernel


def solve_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mathagent.agent.cli", "solve", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_solve_with_a_preset_file_and_a_system_prompt_file(tmp_path):
    """A preset given by path, a system prompt given by path, a real kernel, scripted model turns."""
    preset = tmp_path / "house.toml"
    preset.write_text(
        'format = "markdown"\noutput_template = "\\n```output\\n{output}\\n```\\n"\noutput_role = "assistant"\n'
        "verbatim = true\nmax_tokens = 300\nmax_code_calls = 2\n"
    )
    system = tmp_path / "system.txt"
    system.write_text("Answer with Python.\n")
    script = tmp_path / "turns.json"
    script.write_text(json.dumps(["Multiply.\n```python\nprint(6 * 7)\n```\n", "It is $\\boxed{42}$."]))
    out = solve_cli(
        "What is 6 times 7?",
        *("--preset", str(preset), "--system-prompt", str(system), "--script", str(script)),
        *("--no-verify", "--json"),
    )
    assert out.returncode == 0, out.stderr
    trace = json.loads(out.stdout.strip().splitlines()[-1])
    assert trace["final_answer"] == "42" and trace["steps"][2]["content"] == "42"
    assert trace["meta"]["preset"] == "house" and trace["meta"]["prompt_name"] == str(system)
    assert (trace["meta"]["config"]["max_tokens"], trace["meta"]["config"]["max_rounds"]) == (300, 2)


def test_eval_with_a_preset_records_it_in_the_run_header(tmp_path, capsys):
    script = tmp_path / "script.jsonl"
    turns = ["Compute.\n```python\nprint(16 - 3 - 4)\n```\n", "She sells $\\boxed{9}$ eggs."]
    script.write_text(json.dumps({"problem_id": "0", "turns": turns}) + "\n")
    run_dir = tmp_path / "run"
    args = ["--dataset", "gsm8k", "--limit", "1", "--backend", "scripted", "--script", str(script)]
    args += ["--run-dir", str(run_dir), "--no-verify", "--json", "--preset", "tora"]
    assert eval_main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_samples"] == 1
    header = json.loads((run_dir / "header.json").read_text())
    assert header["preset"]["name"] == "tora" and header["preset"]["sha256"] == load_preset("tora").sha256
    agent = header["identity"]["config"]["extra"]["agent"]
    assert (agent["preset"], agent["max_tokens"], agent["max_rounds"]) == ("tora", 1024, 3)
    rec = json.loads((run_dir / "samples.jsonl").read_text().splitlines()[0])
    steps = rec["trace"]["steps"]
    assert [s["kind"] for s in steps] == ["text", "code", "execution", "text"]
    assert steps[2]["execution"]["stdout"].strip() == "9" and rec["trace"]["final_answer"] == "9"


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.server
def test_solve_with_the_qwen_tir_preset_on_the_bundled_model():
    """``solve --preset qwen2.5-math-tir`` end to end: the bundled 0.5B model, llama.cpp, a real kernel."""
    pytest.importorskip("llama_cpp.server")
    problem = "A shop sells pencils at 3 dollars each. How much do 17 pencils cost? Use Python to compute it."
    out = solve_cli(
        problem,
        *("--preset", "qwen2.5-math-tir", "--model", "qwen2.5-coder-0.5b", "--no-verify", "--json"),
        *("--seed", "0"),
        timeout=900,
    )
    assert out.returncode in (0, 1), out.stderr[-2000:]
    trace = json.loads(out.stdout.strip().splitlines()[-1])
    assert trace["meta"]["preset"] == "qwen2.5-math-tir"
    assert (trace["meta"]["config"]["max_tokens"], trace["meta"]["config"]["max_rounds"]) == (2048, 3)
    assert trace["prompt_hash"] and trace["format"] == "markdown"
    execs = [s for s in trace["steps"] if s["kind"] == "execution"]
    assert execs and any(s["execution"]["error"] is None for s in execs), trace
    assert trace["final_answer"] is not None, trace
