"""The ablation modes and calibrate on the bundled 0.5B model, through the CLI (real server, kernel)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.model,
    pytest.mark.server,
    pytest.mark.kernel,
    pytest.mark.timeout(3600),
]


def _cli(*args: str, env: dict | None = None, timeout: float = 3000) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mathagent.agent.cli", *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
    )


@pytest.mark.parametrize("mode", ["cot", "pot"])
def test_solve_mode_on_the_bundled_model(mode):
    problem = "A shop sells pencils at 3 dollars each. How much do 17 pencils cost?"
    out = _cli("solve", problem, "--model", "qwen2.5-coder-0.5b", "--mode", mode, "--json", "--seed", "0")
    assert out.returncode in (0, 1), out.stderr  # 1: the model gave no answer (allowed, recorded)
    trace = json.loads(out.stdout.strip().splitlines()[-1])
    kinds = [s["kind"] for s in trace["steps"]]
    assert trace["meta"]["config"]["mode"] == mode and not trace["verification"]
    assert trace["meta"]["calls"] == 1  # one model call, no feedback round
    if mode == "cot":
        assert "execution" not in kinds and "code" not in kinds
    else:
        assert kinds.count("execution") <= 1
        if trace["stop_reason"] == "answered":
            assert kinds.count("execution") == 1


def test_calibrate_on_two_train_problems(tmp_path):
    import os

    env = {**os.environ, "MATHAGENT_CACHE_DIR": str(tmp_path / "cache"), "MATHAGENT_RUNS_DIR": str(tmp_path)}
    out = _cli(
        "calibrate", "--model", "qwen2.5-coder-0.5b", "--dataset", "gsm8k-train", "--limit", "2", "--k", "2",
        "--concurrency", "1", "--json", env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    cal = json.loads(out.stdout)
    assert cal["model"] == "qwen2.5-coder-0.5b" and cal["source"]["problems"] <= 2
    assert sum(n for n, _ in cal["counts"].values()) == cal["source"]["samples"] > 0
    # two problems are far too few to move the weights far from equal (shrinkage)
    assert min(cal["weights"].values()) > 0.3 and max(cal["weights"].values()) == 1.0
    listed = _cli("model", "list", "--json", env=env)
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["qwen2.5-coder-0.5b"]["calibrations"][0]["weights"] == cal["weights"]
