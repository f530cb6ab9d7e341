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
from mathagent.evals.study import (
    cost_row,
    find_runs,
    k1_cells,
    pre_verification_answer,
    unverified_label,
    verification_rows,
    vote_cells,
)

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
            ok = [r["trace"]["timings"] for r in recs if r["status"] != "failed"]
            share = sum(t["verify"] for t in ok) / sum(t["total"] for t in ok)
            assert 0 < cost_row(run)["verify_share"] == pytest.approx(share)
        else:
            assert cost_row(run)["verify_share"] is None  # cot never verifies
        if run.k > 1:
            by_label = {c.label: c for c in vote_cells(run)}
            full = {}
            for r in recs:
                full.setdefault(str(r["problem_id"]), []).append(r)
            done = {p: rs for p, rs in full.items() if len(rs) >= run.k}
            assert by_label[f"pass@{run.k}"].scores == {
                p: float(any(r["correct"] for r in rs)) for p, rs in done.items()
            }
            before = by_label.pop(unverified_label(run.k), None)
            # a vote can only be right when some sample is
            for label, cell in by_label.items():
                assert all(cell.scores[p] <= by_label[f"pass@{run.k}"].scores[p] for p in cell.scores), label
            if run.mode != "loop+verify":
                assert before is None
                continue
            # the unverified vote: where no answer was revised it is maj@k; where the k answers from before
            # verification are one string, it is that answer's grade
            assert before is not None and before.scores.keys() == done.keys()
            agreed = 0
            for p, rs in done.items():
                pre = [pre_verification_answer(r) for r in rs[: run.k]]
                if all(a == r["answer"] for a, r in zip(pre, rs[: run.k], strict=True)):
                    assert before.scores[p] == by_label[f"maj@{run.k}"].scores[p], p
                if len(set(pre)) == 1 and pre[0] == rs[0]["answer"]:
                    agreed += 1
                    assert before.scores[p] == float(rs[0]["correct"]), p
            assert agreed


def _write_run(root: Path, name: str, mode: str, k: int, rows: list[tuple], **header_extra) -> None:
    """rows: (problem_id, sample_index, answer, correct, state, pre_verification_answer[, time_s]);
    ``header_extra``: ``limit`` (into the identity's config), ``concurrency`` (into ``limits``),
    ``git_revision``, ``model`` and ``server`` (each sample's, as its trace records it)."""
    d = root / name
    d.mkdir(parents=True)
    agent = {"verify": mode == "loop+verify", **({"mode": mode} if mode in ("cot", "pot") else {})}
    header = {
        "identity": {
            "config": {
                "model": header_extra.get("model", "m"),
                "k": k,
                "temperature": 0.0,
                "verify": agent["verify"],
                "extra": {"agent": agent},
            },
            "dataset": {"name": "gsm8k"},
            "grading_dataset": "gsm8k",
        }
    }
    if "limit" in header_extra:
        header["identity"]["config"]["limit"] = header_extra["limit"]
    if "concurrency" in header_extra:
        header["limits"] = {"concurrency": header_extra["concurrency"]}
    if "git_revision" in header_extra:
        header["git_revision"] = header_extra["git_revision"]
    (d / "header.json").write_text(json.dumps(header))
    lines = []
    for pid, i, ans, ok, state, pre, *rest in rows:
        ver = [{"round": 0, "state": state, "answer": pre}] if state else []
        rec = {"problem_id": pid, "sample_index": i, "gold": "5", "dataset": "gsm8k", "status": "ok", "answer": ans,
               "correct": ok, "verification_state": state, "ran_code": mode != "cot", "tokens_in": 10, "tokens_out": 5,
               "time_s": rest[0] if rest else 1.0, "trace": {"verification": ver, "meta": {"calls": 1 if mode in ("cot", "pot") else 3}}}  # fmt: skip
        if "server" in header_extra:
            rec["trace"]["meta"]["continuation"] = {"server": header_extra["server"]}
        lines.append(json.dumps(rec))
    (d / "samples.jsonl").write_text("\n".join(lines) + "\n")


def test_tables_on_hand_made_runs(tmp_path):
    from mathagent.evals.study import compare, render

    _write_run(tmp_path, "cot", "cot", 1, [("a", 0, "5", True, None, None), ("b", 0, "4", False, None, None), ("c", 0, "4", False, None, None)])  # fmt: skip
    lv = [
        ("a", 0, "5", True, "T", "5"), ("a", 1, "6", False, "F", "6"),
        ("b", 0, "5", True, "T", "7"), ("b", 1, "6", False, "U", "6"),  # b#0: revision fixed 7 -> 5
        ("c", 0, "6", False, "F", "6"), ("c", 1, "6", False, "U", "6"),
    ]  # fmt: skip
    _write_run(tmp_path, "lv", "loop+verify", 2, lv)
    runs = find_runs([tmp_path])
    cells = {c.label: c for r in runs for c in k1_cells([r])}
    assert cells["cot"].scores == {"a": 1.0, "b": 0.0, "c": 0.0}
    assert cells["loop+verify"].scores == {"a": 1.0, "b": 1.0, "c": 0.0}
    assert cells["loop (before verification)"].scores == {"a": 1.0, "b": 0.0, "c": 0.0}
    c = compare(cells["loop+verify"], cells["loop (before verification)"])
    assert (c["n"], c["mcnemar"].only_a, c["mcnemar"].only_b) == (3, 1, 0)
    assert c["diff"].value == pytest.approx(1 / 3)
    lv_run = next(r for r in runs if r.mode == "loop+verify")
    votes = {x.label: x.scores for x in vote_cells(lv_run)}
    weighted = [x.label for x in vote_cells(lv_run) if x.weighted]
    assert weighted and all(w.startswith("weighted@2 (") for w in weighted)  # majority rows are not weighted
    # a: 5(T) vs 6(F) tie on count -> majority takes the earliest (5); weights pick T as well
    assert votes["maj@2"] == {"a": 1.0, "b": 1.0, "c": 0.0}
    assert votes["pass@2"] == {"a": 1.0, "b": 1.0, "c": 0.0}
    # before verification b's answers were 7 and 6 (the tie takes 7, wrong): the revision won b
    assert votes["maj@2 before verification (the loop's answers)"] == {"a": 1.0, "b": 0.0, "c": 0.0}
    # k = 3: before verification 5, 7, 7 (7 wins, wrong); sample 1's revision to 5 makes 5 the majority after
    _write_run(tmp_path / "k3", "lv3", "loop+verify", 3, [("a", 0, "5", True, "T", "5"), ("a", 1, "5", True, "F", "7"), ("a", 2, "7", False, "U", "7")])  # fmt: skip
    votes3 = {x.label: x.scores for x in vote_cells(find_runs([tmp_path / "k3"])[0])}
    assert votes3["maj@3"] == {"a": 1.0} and votes3["maj@3 before verification (the loop's answers)"] == {
        "a": 0.0
    }
    v = verification_rows(lv_run)
    assert (v["revised"], v["fixed"], v["broke"]) == (1, 1, 0)
    assert {s: row["n"] for s, row in v["states"].items()} == {"T": 2, "U": 2, "F": 2}
    assert v["states"]["T"]["precision"].value == 1.0 and v["states"]["F"]["precision"].value == 0.0
    doc = render(runs)
    assert "| loop+verify − loop (before verification) | 3 | 33.3 [" in doc
    assert "| maj@2 before verification (the loop's answers) − maj@2 | 3 | -33.3 [" in doc
    assert (
        "| weighted@2 (default 1,0.3,0.1) − maj@2 before verification (the loop's answers) | 3 | 33.3 ["
        in doc
    )
    assert "| cot | 33.3 [" in doc and "| 3 | k=1 T=0 cot |" in doc


def test_coverage_counts_what_is_left_at_the_measured_pace(tmp_path):
    """A k = 2 run of 3 problems with 3 samples done (one problem complete), sample times 10, 30 and 110 s
    at 2 trajectories at once: 3 samples left x 50 s mean / 2 = 75 s (the median, 30 s, would promise
    less than half of it: a few long samples take most of the time). A finished run says done; a run
    whose header does not say how many ran at once (older folders) has no estimate, and neither has a run
    without a --limit (its size is the whole data set, which the report does not know)."""
    from mathagent.evals.study import coverage_row, render

    rows = [
        ("a", 0, "5", True, "T", "5", 10.0),
        ("a", 1, "5", True, "T", "5", 110.0),
        ("b", 0, "6", False, "U", "6", 30.0),
    ]
    _write_run(
        tmp_path / "1",
        "partial",
        "loop+verify",
        2,
        rows,
        limit=3,
        concurrency=2,
        git_revision="0123456789abcdef",
    )
    _write_run(tmp_path / "2", "full", "cot", 1, [("a", 0, "5", True, None, None)], limit=1, concurrency=1)
    _write_run(tmp_path / "3", "old", "loop+verify", 2, rows, limit=3)
    _write_run(tmp_path / "4", "nolimit", "loop+verify", 2, rows, concurrency=1)
    runs = {
        r.path.name: r for r in find_runs([tmp_path / "1", tmp_path / "2", tmp_path / "3", tmp_path / "4"])
    }
    c = coverage_row(runs["partial"])
    assert (c["done"], c["planned"], c["complete"], c["median_s"], c["mean_s"]) == (3, 6, 1, 30.0, 50.0)
    assert c["hours_left"] == pytest.approx(3 * 50.0 / 2 / 3600)
    assert coverage_row(runs["full"])["hours_left"] == 0.0
    assert coverage_row(runs["old"])["hours_left"] is None
    assert (
        coverage_row(runs["nolimit"])["planned"] is None
        and coverage_row(runs["nolimit"])["hours_left"] is None
    )
    doc = render(list(runs.values()))
    assert "| partial | loop+verify | 2 | 3 / 6 | 1 | 30 / 50 | 2 | 0.0 | 0123456 | not recorded |" in doc
    assert "| full | cot | 1 | 1 / 1 | 1 | 1 / 1 | 1 | done | ? | not recorded |" in doc
    assert "| old | loop+verify | 2 | 3 / 6 | 1 | 30 / 50 | ? | - | ? | not recorded |" in doc
    # the server each sample ran on, as its trace records it; a run that changed server says how many
    _write_run(tmp_path / "5", "cpp", "cot", 1, [("a", 0, "5", True, None, None)], server="llama-cpp-python")
    two = [("b", 0, "5", True, None, None), ("c", 0, "5", True, None, None)]
    _write_run(tmp_path / "5", "mixed", "cot", 1, two, server="llama-server")
    mixed = tmp_path / "5" / "mixed" / "samples.jsonl"
    mixed.write_text(mixed.read_text() + (tmp_path / "5" / "cpp" / "samples.jsonl").read_text())
    doc = render(find_runs([tmp_path / "5"]))
    assert "| cpp | cot | 1 | 1 / ? | 1 | 1 / 1 | ? | - | ? | llama-cpp-python |" in doc
    assert "| mixed | cot | 1 | 3 / ? | 3 | 1 / 1 | ? | - | ? | llama-server 2, llama-cpp-python 1 |" in doc


def test_cross_fitted_weights_vote_each_fold_with_the_other_folds_labels(tmp_path):
    """A k = 2 run where True marks the right answer and False the wrong one: majority ties and takes
    the first (wrong) sample; the cross-fitted weights, fitted on the other fold only, pick the True one.
    Flipping the states in one fold makes that fold's *other* fold learn the opposite, so the vote
    there goes wrong: the weights of a problem never come from its own fold."""
    from mathagent.agent.calibrate import crossfit_weights, fold_of

    ids = [f"p{i}" for i in range(40)]
    assert {fold_of(p) for p in ids} == {0, 1}
    rows = []
    for p in ids:
        rows += [(p, 0, "6", False, "F", "6"), (p, 1, "5", True, "T", "5")]
    _write_run(tmp_path, "lv", "loop+verify", 2, rows)
    [run] = find_runs([tmp_path])
    cells = {c.label.split(" (")[0] + (" cf" if "cross-fit" in c.label else ""): c for c in vote_cells(run)}
    assert sum(cells["maj@2"].scores.values()) == 0
    assert set(cells["weighted@2 cf"].scores.values()) == {1.0}
    # fold 1 says the opposite (True marks the wrong answer): fold 0 now votes with inverted weights
    flipped = []
    for p in ids:
        a, b = ("F", "T") if fold_of(p) == 0 else ("T", "F")
        flipped += [(p, 0, "6", False, a, "6"), (p, 1, "5", True, b, "5")]
    _write_run(tmp_path / "f", "lv", "loop+verify", 2, flipped)
    [run] = find_runs([tmp_path / "f"])
    w = crossfit_weights(run.problems)
    assert w[0].true < w[0].false and w[1].true > w[1].false  # fold 0's weights come from fold 1
    cf = next(c for c in vote_cells(run) if "cross-fit" in c.label)
    assert all(cf.scores[p] == 0.0 for p in ids if fold_of(p) == 0)


def test_cross_fitted_weights_ignore_samples_left_unverified():
    """Samples of agreed problems (``--verify-contested`` skipped their verification) carry no state
    and are mostly right: fitted as Uncertain they would rank Uncertain above True. The fit leaves
    them out, as ``calibrate`` does, so the weights are those of the verified samples alone."""
    from mathagent.agent.calibrate import crossfit_weights, verification_skipped

    def rec(state, ok, skipped=False):
        meta = {"verification_skipped": True} if skipped else {}
        return {"verification_state": state, "correct": ok, "trace": {"meta": meta}}

    verified = {
        f"p{i}": [rec("T", True), rec("T", i % 3 != 0), rec("U", i % 2 == 0), rec("F", False)]
        for i in range(40)
    }
    agreed = {f"q{i}": [rec(None, True, skipped=True) for _ in range(4)] for i in range(40)}
    assert verification_skipped(agreed["q0"][0]) and not verification_skipped(verified["p0"][0])
    alone = crossfit_weights(verified)
    both = crossfit_weights({**verified, **agreed})
    assert [str(w) for w in both] == [str(w) for w in alone]
    for w in both:
        assert w.true == 1 and w.uncertain < 1 and w.false < w.uncertain
    # counted as Uncertain (the old fit), the agreed samples would have put Uncertain on top
    unmarked = {p: [rec(None, True) for _ in range(4)] for p in agreed}
    assert all(w.uncertain == 1 and w.true < 1 for w in crossfit_weights({**verified, **unmarked}))


def dry_run_lines(root: Path, *flags: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "method_study.py"), "run", "--root", str(root), "--dry-run", *flags],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return proc.stdout.splitlines()


def test_run_only_selects_disjoint_streams(tmp_path):
    """`run --only` keeps the plan's order and selects by folder name, so two invocations can split it."""

    def planned(*only: str) -> list[str]:
        lines = dry_run_lines(tmp_path, *(["--only", *only] if only else []))
        lines = [line for line in lines if not line.startswith("finished: ")]
        return [line.split("--run-dir ")[1].split()[0].rsplit("/", 1)[1] for line in lines]

    everything = planned()
    a, b = planned("1.5b"), planned("0.5b")
    assert a and b and not set(a) & set(b)
    assert sorted(a + b) == sorted(everything)
    assert a == [name for name in everything if name in a]  # the plan's order is kept
    # the default model's GSM8K ablations, then its verify-prompt runs on GSM8K train
    assert a[3:6] == ["vp-verify-1.5b", "vp-verify_substitute-1.5b", "vp-verify_resolve-1.5b"]
    assert planned("vp-") == a[3:6]
    assert planned("no-such-run") == []
    # a run whose summary has every sample it asks for is not started again; a partial one is
    counts = {"total": 40, "done": 40, "pending": 0, "failed": 0}
    (tmp_path / "vp-verify-1.5b").mkdir()
    (tmp_path / "vp-verify-1.5b" / "summary.json").write_text(json.dumps({"counts": counts}))
    (tmp_path / "vp-verify_resolve-1.5b").mkdir()
    (tmp_path / "vp-verify_resolve-1.5b" / "summary.json").write_text(
        json.dumps({"counts": {**counts, "done": 39, "pending": 1}})
    )
    assert planned("vp-") == ["vp-verify_substitute-1.5b", "vp-verify_resolve-1.5b"]
    # one whose every sample is done but one failed (a server error after its retries) is resumed, and
    # its eval runs the failed sample again
    (tmp_path / "vp-verify-1.5b" / "summary.json").write_text(json.dumps({"counts": {**counts, "failed": 1}}))
    assert planned("vp-") == ["vp-verify-1.5b", "vp-verify_substitute-1.5b", "vp-verify_resolve-1.5b"]
    assert all("--retry-failed" in line for line in dry_run_lines(tmp_path) if "--run-dir" in line)


def test_streams_skip_a_run_another_process_holds(tmp_path, hold_run):
    """Two `run` invocations without --only share the plan: a folder held by an eval of the other stream
    (its run.lock) is skipped with the holder named, and an eval that lost the race to it says so."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("method_study", REPO / "bench" / "method_study.py")
    assert spec and spec.loader
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)

    def planned() -> tuple[list[str], list[str]]:
        lines = dry_run_lines(tmp_path)
        busy = [line for line in lines if line.startswith("busy: ")]
        started = [
            line.split("--run-dir ")[1].split()[0].rsplit("/", 1)[1] for line in lines if "--run-dir " in line
        ]
        return busy, started

    _, everything = planned()
    held = tmp_path / everything[1]
    with hold_run(held, {"config": {}}) as holder:
        busy, started = planned()
        assert busy == [f"busy: {held.name} (pid {holder.proc.pid} since {busy[0].split(' since ')[1]}"]
        assert started == [name for name in everything if name != held.name]
        lost = study.run_one([sys.executable, "-c", "raise SystemExit(2)"], 0, held)
        assert isinstance(lost, str) and lost.startswith(
            f"2, busy: taken by another stream (pid {holder.proc.pid}"
        )
    assert planned() == ([], everything)
    assert study.run_one([sys.executable, "-c", "raise SystemExit(2)"], 0, held) == 2  # a plain failure


def test_pot_samples_without_a_program_get_a_row_graded_by_their_prose(tmp_path):
    """A pot sample whose model wrote prose and no program is wrong under pot (no program output) and
    counted by its stated answer in the extra row; a sample whose program failed stays wrong in both."""
    from mathagent.evals.study import POT_TEXT, compare

    _write_run(tmp_path, "pot", "pot", 1, [("a", 0, "5", True, None, None), ("b", 0, None, False, None, None), ("c", 0, None, False, None, None)])  # fmt: skip
    sp = tmp_path / "pot" / "samples.jsonl"
    recs = _records(tmp_path / "pot")
    recs[0]["trace"]["steps"] = [
        {"kind": "code", "content": "print(5)"},
        {"kind": "execution", "content": "5"},
    ]
    recs[1].update(ran_code=False)  # prose only, a right boxed answer
    recs[1]["trace"]["steps"] = [{"kind": "text", "content": "Two and three make $\\boxed{5}$."}]
    recs[2]["trace"]["steps"] = [  # a program that failed, then prose: pot's rule stands
        {"kind": "code", "content": "print(x)"},
        {"kind": "execution", "content": "NameError: name 'x' is not defined"},
        {"kind": "text", "content": "So the answer is $\\boxed{5}$."},
    ]
    sp.write_text("".join(json.dumps(r) + "\n" for r in recs))
    cells = {c.label: c for c in k1_cells(find_runs([tmp_path]))}
    assert cells["pot"].scores == {"a": 1.0, "b": 0.0, "c": 0.0}
    assert cells[POT_TEXT].scores == {"a": 1.0, "b": 1.0, "c": 0.0}
    c = compare(cells[POT_TEXT], cells["pot"])
    assert (c["mcnemar"].only_a, c["mcnemar"].only_b) == (1, 0)
    # a pot run in which every sample ran a program has no such row (it would repeat pot)
    recs[1].update(ran_code=True)
    recs[1]["trace"]["steps"] = [
        {"kind": "code", "content": "print(4)"},
        {"kind": "execution", "content": "4"},
    ]
    sp.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert POT_TEXT not in {c.label for c in k1_cells(find_runs([tmp_path]))}


def test_answers_are_graded_again_with_todays_grader(tmp_path):
    """A verdict recorded by an older grader is replaced by today's, in every table, and listed."""
    from mathagent.evals.study import render

    _write_run(tmp_path, "pot", "pot", 1, [("a", 0, "5", True, None, None), ("b", 0, "3*sqrt(3)/4", False, None, None), ("c", 0, "7", True, None, None)])  # fmt: skip
    sp = tmp_path / "pot" / "samples.jsonl"
    recs = _records(tmp_path / "pot")
    recs[1].update(gold="\\frac{3\\sqrt{3}}{4}", dataset="math")  # printed by sympy; once read as s*q*r*t(3)
    sp.write_text("".join(json.dumps(r) + "\n" for r in recs))
    (run,) = find_runs([tmp_path])
    assert [(g["problem"], g["now"]) for g in run.regraded] == [("b", True), ("c", False)]
    assert {c.label: c for c in k1_cells([run])}["pot"].scores == {"a": 1.0, "b": 1.0, "c": 0.0}
    doc = render([run])
    assert "2 of 3 verdicts differ from the ones recorded" in doc
    assert "- pot b#0: `3*sqrt(3)/4` (gold `\\frac{3\\sqrt{3}}{4}`), wrong → right" in doc
    assert "- pot c#0: `7` (gold `5`), right → wrong" in doc


def _verified(answer: str, rounds: list[tuple[str, str]], revisions: list[str]) -> dict:
    """A loop+verify record: solve prose, then verify / revise turns as the loop records them."""
    steps = [{"kind": "text", "content": "Solving. \\boxed{5}", "phase": "solve"}]
    for i, (_state, _ans) in enumerate(rounds):
        steps.append({"kind": "user", "content": "check it", "phase": "verify"})
        steps.append({"kind": "code", "content": "print(False)", "phase": "verify"})
        if i < len(revisions):
            steps.append({"kind": "user", "content": "fix it", "phase": "revise"})
            steps.append({"kind": "text", "content": revisions[i], "phase": "revise"})
    ver = [{"round": i, "state": st, "answer": a} for i, (st, a) in enumerate(rounds)]
    return {"answer": answer, "trace": {"steps": steps, "verification": ver}}


def test_todays_revision_rules_end_recorded_traces_as_the_code_does_now():
    from mathagent.evals.study import todays_ending

    # a revision that boxed a verdict word: the refuted answer stays, state False
    rec = _verified("UNCERTAIN", [("F", "12.0"), ("F", "UNCERTAIN")], ["So \\boxed{\\text{UNCERTAIN}}"])
    assert todays_ending(rec) == ("12.0", "F")
    # a revision that stated no answer anywhere (a fragment was extracted from its arithmetic)
    rec = _verified("2 \\times 20 = 40", [("F", "470")], ["We get 2 \\times 20 = 40 and then"])
    assert todays_ending(rec) == ("470", "F")
    # a real corrected answer is kept as recorded
    rec = _verified("6", [("F", "5"), ("T", "6")], ["The corrected answer is \\boxed{6}."])
    assert todays_ending(rec) is None
    # no verification, or verified True at once: nothing to re-derive
    assert todays_ending({"answer": "5", "trace": {"steps": [], "verification": []}}) is None
    assert todays_ending(_verified("5", [("T", "5")], [])) is None


def test_a_run_that_stopped_is_resumed_after_the_rest_of_the_plan(tmp_path, monkeypatch, capsys):
    """A run whose eval exits 1 (its model server exited, a full disk: resumable) is started again
    once after the other runs, and not more than ``--again`` times."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("method_study", REPO / "bench" / "method_study.py")
    assert spec and spec.loader
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    calls: list[str] = []
    crashing = {"gsm8k-qwen2.5-coder-0.5b-cot-k1": 1, "gsm8k-qwen2.5-coder-0.5b-pot-k1": 5}

    def fake_run_one(cmd, nice, run_dir):
        calls.append(run_dir.name)
        if crashing.get(run_dir.name, 0) > 0:
            crashing[run_dir.name] -= 1
            return 1
        return 0

    monkeypatch.setattr(study, "run_one", fake_run_one)
    argv = [
        "run",
        "--root",
        str(tmp_path),
        "--models",
        "qwen2.5-coder-0.5b",
        "--datasets",
        "gsm8k",
        "--only",
        "k1",
    ]
    assert study.main(argv) == 0
    first = [
        "gsm8k-qwen2.5-coder-0.5b-cot-k1",
        "gsm8k-qwen2.5-coder-0.5b-pot-k1",
        "gsm8k-qwen2.5-coder-0.5b-loopverify-k1",
    ]
    assert calls[:3] == first
    assert calls[3:] == first[:2]  # both stopped runs once more; the cot run then finished
    assert (
        "again: resuming gsm8k-qwen2.5-coder-0.5b-cot-k1, gsm8k-qwen2.5-coder-0.5b-pot-k1"
        in capsys.readouterr().out
    )
    calls.clear()
    assert study.main([*argv, "--again", "0"]) == 0
    assert calls == first  # no second pass: the pot run still stops


def test_planned_runs_not_started_are_listed_with_the_time_they_take(tmp_path):
    """A study root with one of the plan's runs: every other planned run is listed as not started, at
    the pace of the same model's k = 1 run of the same mode and data set where there is one ("?"
    where not), its group says which tables are still to come, and the total counts both. A root
    that holds none of the plan's runs lists nothing (the report serves other run folders too)."""
    import importlib.util

    from mathagent.evals.study import render

    spec = importlib.util.spec_from_file_location("method_study", REPO / "bench" / "method_study.py")
    assert spec and spec.loader
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    name = "gsm8k-qwen2.5-coder-0.5b-loopverify-k1"
    rows = [("a", 0, "5", True, "T", "5", 10.0), ("b", 0, "4", False, "F", "4", 30.0)]
    _write_run(tmp_path, name, "loop+verify", 1, rows, limit=100, concurrency=1, model="qwen2.5-coder-0.5b")
    runs = find_runs([tmp_path])
    missing = {p.name: p for p in study.planned_missing({r.path.name for r in runs})}
    assert (
        name not in missing
        and len(missing) == len(study.plan(tmp_path, list(study.MODELS), list(study.DATASETS))) - 1
    )
    k4 = missing["gsm8k-qwen2.5-coder-0.5b-contested-k4"]
    assert (k4.model, k4.dataset, k4.mode, k4.k, k4.samples) == (
        "qwen2.5-coder-0.5b",
        "gsm8k",
        "loop+verify",
        4,
        400,
    )
    doc = render(runs, not_started=list(missing.values()))
    assert (
        f"| gsm8k-qwen2.5-coder-0.5b-contested-k4 | loop+verify | 4 | 0 / 400 | 0 | - | - | 2.2 (at the pace of {name}: "
        "20 s) | not started |"
    ) in doc  # 400 samples x 20 s
    assert "| gsm8k-qwen2.5-coder-0.5b-cot-k1 | cot | 1 | 0 / 100 | 0 | - | - | ? | not started |" in doc
    assert "Left in all: about 2.8 hours of one stream (" in doc  # 2.2 + 98 samples x 20 s left of the k1 run
    assert "Not started yet: `gsm8k-qwen2.5-coder-0.5b-contested-k4` (loop+verify, k = 4, 400 samples)" in doc
    assert study.planned_missing({"some-other-run"}) == []


def test_two_runs_that_differ_only_in_their_server_are_compared_row_by_row(tmp_path):
    """`method_study.py compare A B`: the same settings on two servers, over the problems both have all k
    samples of; b − a per vote row with McNemar's counts (not for the mean of k samples, a fraction)."""
    from mathagent.evals.study import load_run, paired_runs, vote_cells

    cpp = [
        ("a", 0, "5", True, "T", "5"), ("a", 1, "5", True, "T", "5"),
        ("b", 0, "6", False, "F", "6"), ("b", 1, "6", False, "U", "6"),
        ("c", 0, "5", True, "U", "5"), ("c", 1, "6", False, "T", "6"),
        ("d", 0, "5", True, "T", "5"), ("d", 1, "5", True, "T", "5"),
    ]  # fmt: skip
    srv = [
        ("a", 0, "5", True, "T", "5"), ("a", 1, "5", True, "T", "5"),
        ("b", 0, "5", True, "T", "5"), ("b", 1, "5", True, "T", "5"),
        ("c", 0, "6", False, "U", "6"), ("c", 1, "6", False, "U", "6"),
        ("d", 0, "5", True, "T", "5"),  # one sample of two: d is left out
        ("e", 0, "5", True, "T", "5"), ("e", 1, "5", True, "T", "5"),  # only in b
    ]  # fmt: skip
    _write_run(tmp_path, "cpp", "loop+verify", 2, cpp, server="llama-cpp-python")
    _write_run(tmp_path, "srv", "loop+verify", 2, srv, server="llama-server")
    table = paired_runs(load_run(tmp_path / "cpp"), load_run(tmp_path / "srv"))
    assert (
        "**a** = `cpp` (server llama-cpp-python), **b** = `srv` (server llama-server), over the 3 problems"
        in table
    )
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    # maj@2: a right on a, c (the tie takes the first sample); b right on a, b
    assert rows["maj@2"].startswith("| maj@2 | 66.7 [") and "| 0.0 [" in rows["maj@2"]
    assert rows["maj@2"].endswith("| 1 / 1 | 1.000 |")
    assert rows["pass@2"].endswith("| 1 / 1 | 1.000 |")
    mean = rows["mean accuracy of the 2 samples"]
    assert mean.startswith("| mean accuracy of the 2 samples | 50.0 [") and "| 66.7 [" in mean
    assert mean.endswith("| - | - |")
    assert "| cpp | 6 | 50 / 33 / 17 / 0 / 0 |" in table and "| srv | 6 | 67 / 33 / 0 / 0 / 0 |" in table

    # the cross-fitted row is fitted on each run itself, so its label names different weights in a and b;
    # it is still one row (problems a-c are fold 1 and d, e fold 0, so both folds are there)
    both = [("a", 0, "5", True, "T", "5"), ("a", 1, "6", False, "U", "6"),
            ("d", 0, "5", True, "T", "5"), ("d", 1, "6", False, "F", "6"),
            ("e", 0, "5", True, "U", "5"), ("e", 1, "6", False, "T", "6")]  # fmt: skip
    _write_run(tmp_path, "cpp2", "loop+verify", 2, both, server="llama-cpp-python")
    flipped = [(p, i, a, c, {"T": "F", "F": "T"}.get(st, st), o) for p, i, a, c, st, o in both]
    _write_run(tmp_path, "srv2", "loop+verify", 2, flipped, server="llama-server")
    runs2 = [load_run(tmp_path / n) for n in ("cpp2", "srv2")]
    labels = [{c.label for c in vote_cells(r) if "cross-fit" in c.label} for r in runs2]
    assert all(len(x) == 1 for x in labels) and labels[0] != labels[1]
    crossfit = [line for line in paired_runs(*runs2).splitlines() if "cross-fit" in line]
    assert len(crossfit) == 1 and crossfit[0].startswith("| weighted@2 (2-fold cross-fit) | ")

    _write_run(tmp_path, "k1", "loop+verify", 1, [("a", 0, "5", True, "T", "5")])
    with pytest.raises(ValueError, match="differ in more than one thing \\(k: 2 vs 1\\)"):
        paired_runs(load_run(tmp_path / "cpp"), load_run(tmp_path / "k1"))
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "method_study.py"), "compare", str(tmp_path / "cpp"), str(tmp_path / "k1")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "differ in more than one thing (k: 2 vs 1)" in proc.stderr
