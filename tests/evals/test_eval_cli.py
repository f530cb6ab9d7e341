"""`mathagent eval` end to end: scripted backend, real kernel, resumable run folder, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mathagent.evals.cli_eval import main as eval_main
from mathagent.evals.datasets import load_problems

pytestmark = pytest.mark.kernel


def _turn(answer: str) -> str:
    return f"Let me compute.\n```python\nprint({answer})\n```\n```output\n{answer}\n```\nThe answer is $\\boxed{{{answer}}}$."


def write_script(
    path: Path, n: int, *, wrong: set[int] = frozenset(), fail: set[int] = frozenset(), latency: float = 0.0
):
    problems = load_problems("gsm8k", limit=n)
    with open(path, "w") as f:
        for i, p in enumerate(problems):
            row: dict = {"problem_id": p.id, "latency_s": latency}
            if i in fail:
                row["error"] = "server down (503)"
            else:
                row["turns"] = [_turn(str(int(p.gold) + 1) if i in wrong else p.gold)]
            f.write(json.dumps(row) + "\n")
    return problems


def lines(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]


def test_eval_end_to_end_resume_and_retry_failed(tmp_path, capsys):
    script = tmp_path / "script.jsonl"
    write_script(script, 4, wrong={1}, fail={2})
    run_dir = tmp_path / "run"
    base = [
        "--dataset",
        "gsm8k",
        "--limit",
        "4",
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--run-dir",
        str(run_dir),
        "--no-verify",
        "--concurrency",
        "2",
        "--json",
    ]
    assert eval_main(base) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_samples"] == 4 and summary["n_failed"] == 1
    assert summary["overall"]["accuracy"] == pytest.approx(0.5)
    assert summary["exec"]["cells"] == 3 and summary["exec"]["errors"] == 0
    recs = {r["problem_id"]: r for r in lines(run_dir)}
    assert recs["0"]["correct"] and not recs["1"]["correct"]
    assert recs["2"]["status"] == "failed" and "server down" in recs["2"]["error"]
    assert recs["0"]["trace"]["steps"][2]["execution"]["stdout"].strip() == recs["0"]["gold"]
    header = json.loads((run_dir / "header.json").read_text())
    assert header["identity"]["dataset"]["sha256"].startswith("3730d312")
    assert "git_revision" in header and "package_versions" in header

    # same command again: nothing re-run, nothing counted twice
    assert eval_main(base) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["counts"]["ran"] == 0 and again["n_samples"] == 4 and len(lines(run_dir)) == 4

    # the server is back: --retry-failed re-runs only the failed sample
    write_script(script, 4, wrong={1})
    assert eval_main([*base, "--retry-failed"]) == 0
    fixed = json.loads(capsys.readouterr().out)
    assert fixed["counts"]["ran"] == 1 and fixed["n_failed"] == 0 and fixed["n_samples"] == 4
    assert fixed["overall"]["accuracy"] == pytest.approx(0.75)

    # another config refuses, unless --force
    assert eval_main([*base[:-1], "--k", "2", "--json"]) == 2
    assert "different configuration" in capsys.readouterr().err


def test_kill_mid_run_loses_only_samples_in_flight(tmp_path):
    script = tmp_path / "script.jsonl"
    write_script(script, 12, latency=0.4)
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "mathagent.agent.cli",
        "eval",
        "--dataset",
        "gsm8k",
        "--limit",
        "12",
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--run-dir",
        str(run_dir),
        "--no-verify",
        "--concurrency",
        "2",
        "--json",
    ]
    env = {**os.environ, "MATHAGENT_LOG_LEVEL": "ERROR"}
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    samples = run_dir / "samples.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if samples.exists() and len(samples.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len([x for x in samples.read_text().splitlines() if x.strip()])
    assert 3 <= done_before < 12
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads(res.stdout)
    assert summary["counts"]["skipped"] == done_before
    assert summary["n_samples"] == 12 and summary["overall"]["accuracy"] == 1.0
    ids = [(r["problem_id"], r["sample_index"]) for r in lines(run_dir)]
    assert len(ids) == len(set(ids)) == 12
