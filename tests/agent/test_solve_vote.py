"""`solve --k` votes through the shared path: grader clustering, weights and their source, --prune."""

from __future__ import annotations

import json
import subprocess
import sys


def solve_cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mathagent.agent.cli", "solve", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def test_solve_k_clusters_equivalent_answers_and_prunes_with_reasons(tmp_path):
    script = tmp_path / "turns.json"
    # three samples, no code: 1/2 and 0.5 are one answer for the grader (an exact-string count ties 1:1:1)
    script.write_text(json.dumps(["So \\boxed{1/2}.", "So \\boxed{0.5}.", "So \\boxed{3}."]))
    out = solve_cli("Half of 1?", "--script", str(script), "--no-verify", "--k", "3", "--weights", "1,1,1")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "from 2 sample(s)" in text and "(3/3 voted)" in text and "weights T,U,F = 1,1,1 (flag)" in text
    assert "weighted vote: 3" not in text
    pruned = solve_cli("Half of 1?", "--script", str(script), "--no-verify", "--k", "3", "--prune")
    assert pruned.returncode == 0, pruned.stderr
    text = " ".join(pruned.stdout.split())
    assert "pruned: no_code 3 (all pruned: the unpruned set voted)" in text
    assert "weights T,U,F = 1,0.3,0.1 (default)" in text
