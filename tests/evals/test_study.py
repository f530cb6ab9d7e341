"""The study's tables are regenerated from committed run folders (real runs of the bundled models).

``tests/data/method_study.tar.gz`` holds small real run folders (see ``tests/data/README.md``);
``tests/data/method_study.md`` is what ``bench/method_study.py report`` wrote from them. The test
unpacks, regenerates, compares, and checks a few cells against counts taken straight from the records.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from mathagent.evals.study import find_runs, k1_cells, pre_verification_answer, verification_rows, vote_cells

DATA = Path(__file__).resolve().parents[1] / "data"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    with tarfile.open(DATA / "method_study.tar.gz") as tar:
        tar.extractall(root, filter="data")
    return root


def test_report_regenerates_the_committed_tables(runs_root, tmp_path):
    out = tmp_path / "results.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "method_study.py"),
            "report",
            "method_study",
            "--out",
            str(out),
        ],
        cwd=runs_root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == (DATA / "method_study.md").read_text()


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines() if x.strip()]


def test_cells_match_counts_taken_from_the_records(runs_root):
    runs = find_runs([runs_root / "method_study"])
    assert runs
    for run in runs:
        recs = _records(run.path)
        first = [r for r in recs if r["sample_index"] == 0]
        cells = {c.label: c for c in k1_cells([run])}
        assert cells[run.mode].n == len(first)
        assert sum(cells[run.mode].scores.values()) == sum(r["correct"] for r in first)
        if run.mode == "loop+verify":
            unchanged = [r for r in first if pre_verification_answer(r) == r["answer"]]
            pre = cells["loop (before verification)"].scores
            assert all(pre[str(r["problem_id"])] == float(r["correct"]) for r in unchanged)
            v = verification_rows(run)
            assert v["total"] == len([r for r in recs if r["status"] != "failed"])
            assert sum(s["n"] for s in v["states"].values()) == v["total"]
        if run.k > 1:
            by_label = {c.label: c for c in vote_cells(run)}
            full = {}
            for r in recs:
                full.setdefault(str(r["problem_id"]), []).append(r)
            done = {p: rs for p, rs in full.items() if len(rs) >= run.k}
            assert by_label[f"pass@{run.k}"].scores == {
                p: float(any(r["correct"] for r in rs)) for p, rs in done.items()
            }
            # a vote can only be right when some sample is
            for label, cell in by_label.items():
                assert all(cell.scores[p] <= by_label[f"pass@{run.k}"].scores[p] for p in cell.scores), label
