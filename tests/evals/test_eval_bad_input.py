"""Bad input and bad disks through the CLIs (issue 17 §3): each case ends in one clear line, exit 2 (bad
input) or 1 (a full disk), never a traceback, and loses nothing. Data is written by the test itself;
runs use the scripted backend and the real kernel pool."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from mathagent.evals.cli_eval import main as eval_main
from mathagent.evals.cli_report import main as report_main
from mathagent.training.cli_generate import main as generate_main

QUESTIONS = [
    ("What is 2 + 3?", "5"),
    ("What is 7 * 6?", "42"),
    ("What is 10 - 4?", "6"),
    ("What is 9 / 3?", "3"),
]


def turn(answer: str) -> str:
    """A final answer with no code: these tests are about the run folder, so no sample waits for a
    kernel (the pool still starts; test_eval_cli.py and the soak run code in real kernels)."""
    return f"Adding it up gives $\\boxed{{{answer}}}$."


def write_problems(path: Path, rows=QUESTIONS) -> Path:
    path.write_text(
        "".join(
            json.dumps({"id": str(i), "question": q, "answer": a}) + "\n" for i, (q, a) in enumerate(rows)
        )
    )
    return path


def write_script(path: Path, rows=QUESTIONS, fail: set[int] = frozenset()) -> Path:
    with open(path, "w") as f:
        for i, (_, a) in enumerate(rows):
            row = (
                {"problem_id": str(i), "error": "server down (503)"}
                if i in fail
                else {"problem_id": str(i), "turns": [turn(a)]}
            )
            f.write(json.dumps(row) + "\n")
    return path


def eval_args(problems, script, run_dir, *extra: str) -> list[str]:
    return [
        "--dataset", str(problems), "--backend", "scripted", "--script", str(script), "--run-dir", str(run_dir),
        "--no-verify", "--concurrency", "1", "--json", *extra,
    ]  # fmt: skip


def lines(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines() if x.strip()]


# -- input rejected before anything runs ------------------------------------------------------------
def test_non_utf8_byte_in_a_problems_file_names_file_and_line(tmp_path, capsys):
    p = tmp_path / "p.jsonl"
    p.write_bytes(b'{"question": "1+1", "answer": "2"}\n{"question": "caf\xe9?", "answer": "3"}\n')
    script = write_script(tmp_path / "s.jsonl")
    assert eval_main(eval_args(p, script, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert f"{p}:2: not valid UTF-8 (byte 0xe9 at column 18)" in err and "Traceback" not in err
    assert (
        generate_main(
            [
                "--problems",
                str(p),
                "--backend",
                "scripted",
                "--script",
                str(script),
                "--out",
                str(tmp_path / "g"),
            ]
        )
        == 2
    )
    assert f"{p}:2: not valid UTF-8" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--k", "0"], "--k must be a whole number >= 1, got 0"),
        (["--k", "-1"], "--k must be a whole number >= 1, got -1"),
        (["--limit", "-1"], "--limit must be a whole number >= 1, got -1"),
        (["--limit", "0"], "--limit must be a whole number >= 1, got 0"),
        (["--concurrency", "0"], "--concurrency must be a whole number >= 1, got 0"),
        (["--max-rounds", "0"], "--max-rounds must be a whole number >= 1, got 0"),
        (["--temperature", "-0.5"], "--temperature must be a number >= 0, got -0.5"),
        (["--weights", "1,2"], "--weights: weights must be three"),
    ],
)
def test_eval_validates_counts(tmp_path, capsys, flags, message):
    problems, script = write_problems(tmp_path / "p.jsonl"), write_script(tmp_path / "s.jsonl")
    assert eval_main([*eval_args(problems, script, tmp_path / "run"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--k", "0"], "--k must be"),
        (["--limit", "-1"], "--limit must be"),
        (["--concurrency", "0"], "--concurrency must be"),
        (["--agree", "0"], "--agree must be"),
        (["--problem-jaccard", "1.5"], "--problem-jaccard must lie between 0 and 1"),
    ],
)
def test_generate_validates_counts(tmp_path, capsys, flags, message):
    problems, script = write_problems(tmp_path / "p.jsonl"), write_script(tmp_path / "s.jsonl")
    argv = [
        "--problems",
        str(problems),
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--out",
        str(tmp_path / "g"),
    ]
    assert generate_main([*argv, *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


def test_interpolate_validates_n(tmp_path, capsys):
    p = write_problems(tmp_path / "p.jsonl")
    argv = ["interpolate", "--easy", str(p), "--hard", str(p), "--n", "0", "--out", str(tmp_path / "i")]
    assert generate_main(argv) == 2
    assert "--n must be a whole number >= 1, got 0" in capsys.readouterr().err


def test_missing_or_broken_script_file(tmp_path, capsys):
    problems = write_problems(tmp_path / "p.jsonl")
    missing = tmp_path / "nope.jsonl"
    assert eval_main(eval_args(problems, missing, tmp_path / "run")) == 2
    assert f"--script {missing}: no such file" in capsys.readouterr().err
    argv = ["--problems", str(problems), "--backend", "scripted", "--out", str(tmp_path / "g")]
    assert generate_main([*argv, "--script", str(missing)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert generate_main(argv) == 2
    assert "--backend scripted needs --script FILE.jsonl" in capsys.readouterr().err
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"problem_id": "0", "turns": []}\n{"problem_id": "1", "turns": [\n')
    assert eval_main(eval_args(problems, broken, tmp_path / "run")) == 2
    assert f"{broken}:2: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "g").exists()


# -- runs ------------------------------------------------------------------------------------------
@pytest.mark.kernel
def test_eval_gives_each_sample_its_own_scripted_turns(tmp_path, capsys):
    """`samples: [[...], [...]]` in a script: sample i replays list i (eval passed only sample 0's)."""
    problems = write_problems(tmp_path / "p.jsonl", QUESTIONS[:2])
    script = tmp_path / "s.jsonl"
    script.write_text(
        "".join(
            json.dumps({"problem_id": str(i), "samples": [[turn(a)], [turn(str(int(a) + 1))]]}) + "\n"
            for i, (_, a) in enumerate(QUESTIONS[:2])
        )
    )
    assert eval_main(eval_args(problems, script, tmp_path / "run", "--k", "2")) == 0
    summary = json.loads(capsys.readouterr().out)
    by_key = {(r["problem_id"], r["sample_index"]): r for r in lines(tmp_path / "run")}
    assert by_key[("0", 0)]["answer"] == "5" and by_key[("0", 1)]["answer"] == "6"
    assert by_key[("1", 0)]["correct"] and not by_key[("1", 1)]["correct"]
    assert summary["overall"]["pass_at_k"] == 1.0 and summary["overall"]["accuracy"] == 1.0


@pytest.mark.kernel
def test_summary_counts_cover_the_whole_run(tmp_path, capsys):
    problems = write_problems(tmp_path / "p.jsonl")
    script = write_script(tmp_path / "s.jsonl", fail={3})
    args = eval_args(problems, script, tmp_path / "run", "--limit", "2")
    assert eval_main(args) == 0
    capsys.readouterr()
    args = eval_args(problems, script, tmp_path / "run")  # the full set: same run? no, --limit is config
    assert eval_main([*args, "--run-dir", str(tmp_path / "run2")]) == 0
    first = json.loads(capsys.readouterr().out)["counts"]
    assert first["failed"] == 1 and first["ran"] == 4 and first["invocations"] == 1
    assert eval_main([*args, "--run-dir", str(tmp_path / "run2")]) == 0
    counts = json.loads(capsys.readouterr().out)["counts"]
    assert counts["ran"] == 0 and counts["skipped"] == 4  # this invocation
    assert counts["failed"] == 1 and counts["done"] == 4 and counts["ok"] == 3 and counts["pending"] == 0
    assert counts["invocations"] == 2 and counts["total"] == 4


@pytest.mark.kernel
def test_a_code_block_the_model_never_closes_is_a_wrong_answer_not_a_failed_sample(tmp_path, capsys):
    """The model's own failure (its program cut by --max-tokens) is graded wrong like any sample without
    an answer; failed is kept for samples the harness could not run, which --retry-failed runs again."""
    problems = write_problems(tmp_path / "p.jsonl", QUESTIONS[:2])
    script = tmp_path / "s.jsonl"
    script.write_text(
        json.dumps({"problem_id": "0", "turns": [turn("5")]}) + "\n"
        + json.dumps({"problem_id": "1", "turns": ["Counting:\n```python\nn = 0\n" + "n += 7\n" * 500]}) + "\n"
    )  # fmt: skip
    args = eval_args(problems, script, tmp_path / "run", "--max-tokens", "200")
    assert eval_main(args) == 0
    counts = json.loads(capsys.readouterr().out)["counts"]
    assert counts["failed"] == 0 and counts["ok"] == 2
    cut = {r["problem_id"]: r for r in lines(tmp_path / "run")}["1"]
    assert (cut["status"], cut["stop_reason"], cut["answer"]) == ("ok", "no_answer", None)
    assert cut["correct"] is False
    assert cut["trace"]["error"] == "the model did not close its code block within 200 tokens"
    assert eval_main([*args, "--retry-failed"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["ran"] == 0


@pytest.mark.kernel
def test_resume_from_another_directory_with_other_relative_paths(tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    write_problems(work / "data" / "p.jsonl")
    write_script(work / "data" / "s.jsonl")
    run_dir = tmp_path / "run"
    monkeypatch.chdir(work)
    assert eval_main(eval_args("data/p.jsonl", "data/s.jsonl", run_dir, "--limit", "2")) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["ran"] == 2
    monkeypatch.chdir(work / "data")
    assert eval_main(eval_args("p.jsonl", "./s.jsonl", run_dir, "--limit", "3")) == 2  # --limit differs
    assert "limit: 2 -> 3" in capsys.readouterr().err
    assert eval_main(eval_args("p.jsonl", "./s.jsonl", run_dir, "--limit", "2")) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["counts"]["ran"] == 0 and out["counts"]["done"] == 2
    (tmp_path / "other").mkdir()
    link = tmp_path / "other" / "p.jsonl"
    link.symlink_to(work / "data" / "p.jsonl")  # the same file by another path
    assert eval_main(eval_args(link, work / "data" / "s.jsonl", run_dir, "--limit", "2")) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["ran"] == 0
    assert len(lines(run_dir)) == 2


@pytest.mark.kernel
def test_corrupt_samples_line_is_moved_aside_and_rerun(tmp_path, capsys, caplog):
    problems, script = write_problems(tmp_path / "p.jsonl"), write_script(tmp_path / "s.jsonl")
    run_dir = tmp_path / "run"
    assert eval_main(eval_args(problems, script, run_dir)) == 0
    clean = json.loads(capsys.readouterr().out)
    sp = run_dir / "samples.jsonl"
    raw = sp.read_bytes().splitlines(keepends=True)
    bad = raw[1][:40] + b"\xff\xfe" + raw[1][60:]  # a torn-and-glued line with a non-UTF-8 byte
    sp.write_bytes(raw[0] + bad + raw[2] + raw[3])
    bad_id = json.loads(raw[1])["problem_id"]

    caplog.set_level(logging.WARNING)
    assert report_main([str(run_dir)]) == 0  # the report still renders, and says what it left out
    assert "1 corrupt line(s) left out" in caplog.text and "samples.bad.jsonl" in caplog.text
    assert (run_dir / "report.html").exists() and sp.read_bytes().count(b"\xff\xfe") == 1
    assert capsys.readouterr().out.strip() == str(run_dir / "report.html")
    caplog.clear()

    assert eval_main(eval_args(problems, script, run_dir)) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert "moved aside" in caplog.text and "line 2" in caplog.text
    assert resumed["counts"]["ran"] == 1 and resumed["n_samples"] == 4
    assert resumed["overall"] == clean["overall"]
    assert (run_dir / "samples.bad.jsonl").read_bytes() == bad
    ids = [r["problem_id"] for r in lines(run_dir)]
    assert sorted(ids) == ["0", "1", "2", "3"] and ids[-1] == bad_id


@pytest.mark.kernel
def test_generate_resumes_past_a_corrupt_line(tmp_path, capsys):
    problems, script = write_problems(tmp_path / "p.jsonl"), write_script(tmp_path / "s.jsonl")
    argv = ["--problems", str(problems), "--backend", "scripted", "--script", str(script), "--out", str(tmp_path / "g"), "--json", "--agree", "1"]  # fmt: skip
    assert generate_main(argv) == 0
    capsys.readouterr()
    sp = tmp_path / "g" / "samples.jsonl"
    raw = sp.read_bytes().splitlines(keepends=True)
    sp.write_bytes(raw[0] + b"not json\n" + b"".join(raw[1:]))
    assert generate_main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["counts"]["ran"] == 0 and out["counts"]["done"] == 4
    assert (tmp_path / "g" / "samples.bad.jsonl").read_bytes() == b"not json\n"


@pytest.mark.kernel
def test_full_disk_stops_cleanly_and_resumes_with_space(small_disk, tmp_path, capsys):
    rows = [(f"What is {i} + {i}?", str(2 * i)) for i in range(40)]
    problems, script = write_problems(tmp_path / "p.jsonl", rows), write_script(tmp_path / "s.jsonl", rows)
    run_dir = small_disk.path / "run"
    argv = eval_args(problems, script, run_dir)
    small_disk.resize("24k")
    assert eval_main(argv) == 1
    err = capsys.readouterr().err
    assert "no space left on the device" in err and "Traceback" not in err
    saved = len(lines(run_dir))
    assert f"{saved} sample(s) are saved in {run_dir / 'samples.jsonl'}" in err
    assert f"to resume: mathagent eval --dataset {problems}" in err
    assert 0 < saved < 40 and not list(small_disk.path.rglob("*.tmp"))
    assert (run_dir / "samples.jsonl").read_bytes().endswith(b"\n")
    small_disk.resize("4m")
    assert eval_main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["counts"]["skipped"] == saved and out["counts"]["done"] == 40
    assert out["overall"]["accuracy"] == 1.0
    keys = [(r["problem_id"], r["sample_index"]) for r in lines(run_dir)]
    assert len(keys) == len(set(keys)) == 40
