"""The method study (issue 13): run the ablations through ordinary run folders, then write docs/results.md.

    python3 bench/method_study.py report RUNS_ROOT... [--calibration FILE...] [--out docs/results.md]
    python3 bench/method_study.py run --root /work/study-runs/method [--models ...] [--datasets ...] [--dry-run]
    python3 bench/method_study.py compare RUN_A RUN_B [--out FILE]

``report`` reads every run folder under the roots (partial runs too: each cell says how many problems
it covers) and writes the tables (evals/study.py). ``run`` runs the k = 1 modes (cot, pot, loop+verify,
greedy), the k = 4 loop+verify runs on the same seeded subsets (verifying the problems whose samples
disagree, as `solve --k --verify` does), and the verify-prompt runs on GSM8K train, one `mathagent eval` after
another;
each is an ordinary resumable run folder, so re-running the command resumes where it stopped (a run
whose folder already holds all its samples is skipped: `finished: NAME`). A run whose eval stopped
with exit 1 (its model server exited, a full disk) is resumed once more after the rest of the plan
(``--again N``).

``compare`` puts two runs of the same settings side by side that differ in one thing outside the run's
identity (the model server: llama-cpp-python's or llama.cpp's llama-server), row by row over the
problems both have all k samples of (:func:`mathagent.evals.study.paired_runs`).

Several ``run`` invocations side by side share the work: each takes the next run that is neither
finished nor held by another process (``run.lock``, held by the eval writing the folder), and skips a
held one (`busy: NAME (pid ...)`). Two streams on 2 cores stay busy until the last run starts, with no
split to plan by hand; ``--only`` still restricts a stream to some runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mathagent.evals.runs import run_holder

MODELS = ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b")
DATASETS = ("gsm8k", "math500")
SUBSET = ["--limit", "100", "--shuffle", "--seed", "1"]


def plan(root: Path, models: list[str], datasets: list[str]) -> list[list[str]]:
    """The study's runs, cheapest first: the k = 1 ablations of the first model on the first data set,
    the verify-prompt runs on GSM8K train (section 4, small), the other k = 1 ablations (each model x
    data set), then the k = 4 runs (hours each on 2 cores)."""
    # --retry-failed: a resume runs again the samples the harness could not run (a server error after
    # its retries); a sample the model ended itself without an answer is not one (agent/loop.py)
    eval_ = [sys.executable, "-m", "mathagent.agent.cli", "eval", "--retry-failed"]
    k1, k4 = [], []
    for ds in datasets:  # GSM8K for both models first: the cheapest complete comparison
        for model in models:
            for mode in ("cot", "pot", "loop+verify"):
                name = f"{ds}-{model}-{mode.replace('+', '')}-k1"
                k1.append(
                    [*eval_, "--dataset", ds, *SUBSET, "--k", "1", "--temperature", "0", "--model", model,
                     "--mode", mode, "--run-dir", str(root / name), "--json"]
                )  # fmt: skip
            # maj/weighted/pruned/pass@4 and verification statistics, verifying as `solve --k --verify` does: only
            # the problems whose 4 answers disagree (an agreed answer wins every vote whatever the states)
            name = f"{ds}-{model}-contested-k4"
            k4.append(
                [*eval_, "--dataset", ds, *SUBSET, "--k", "4", "--model", model, "--mode", "loop+verify",
                 "--verify-contested", "--run-dir", str(root / name), "--json"]
            )  # fmt: skip
    train = ["--dataset", "gsm8k-train", "--limit", "20", "--shuffle", "--seed", "1",
             "--k", "2"]  # fmt: skip
    vp = [  # section 4: verify-prompt precision, on the default model (its verdicts decide the defaults;
        # the 0.5B was no cheaper per sample: ~1.5 min against ~1 min for the 1.5B, at one trajectory)
        [*eval_, *train, "--model", models[0], "--mode", "loop+verify", "--verify-prompt", prompt,
         "--run-dir", str(root / f"vp-{prompt}-{models[0].removeprefix('qwen2.5-coder-')}"), "--json"]
        for prompt in ("verify", "verify_substitute", "verify_resolve")
    ]  # fmt: skip
    return k1[:3] + vp + k1[3:] + k4


def arg_of(cmd: list[str], flag: str) -> str:
    """The value an eval command of the plan gives ``flag``."""
    return cmd[cmd.index(flag) + 1]


def run_dir_of(cmd: list[str]) -> Path:
    """The run folder an eval command of the plan writes (its ``--run-dir``)."""
    return Path(arg_of(cmd, "--run-dir"))


def samples_of(cmd: list[str]) -> int:
    """The samples an eval command of the plan asks for: ``--limit`` x ``--k``."""
    return int(arg_of(cmd, "--limit")) * int(arg_of(cmd, "--k"))


def planned_missing(found: set[str]) -> list[Any]:
    """The plan's runs (all models and data sets) without a folder among ``found``, for the report's
    coverage; none when no found folder is one of the plan's (roots that are not this study's)."""
    from mathagent.evals.study import PlannedRun

    cmds = {run_dir_of(c).name: c for c in plan(Path("."), list(MODELS), list(DATASETS))}
    if not found & cmds.keys():
        return []
    return [
        PlannedRun(
            name=name,
            model=arg_of(cmd, "--model"),
            dataset=arg_of(cmd, "--dataset"),
            mode=arg_of(cmd, "--mode"),
            k=int(arg_of(cmd, "--k")),
            samples=samples_of(cmd),
        )  # fmt: skip
        for name, cmd in cmds.items()
        if name not in found
    ]


def finished(cmd: list[str]) -> bool:
    """Whether the run folder of ``cmd`` already holds every sample it asks for (its summary says
    nothing is pending and none failed, of ``--limit`` x ``--k`` samples). Such a run is not started
    again: resuming it would load its model only to find nothing to do. One with failed samples is: its
    eval runs them again (``--retry-failed``)."""
    run_dir = run_dir_of(cmd)
    try:
        counts = json.loads((run_dir / "summary.json").read_text())["counts"]
        want = samples_of(cmd)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return counts.get("total") == want and counts.get("pending") == 0 and not counts.get("failed")


def run_one(cmd: list[str], nice: int, run_dir: Path) -> int | str:
    """Run one eval; if another stream took the folder first (both saw it free an instant apart, and
    this eval stopped on the lock: exit 2), say so instead of a bare failure."""
    started = time.monotonic()
    rc = subprocess.run(["nice", "-n", str(nice), *cmd], stdout=subprocess.DEVNULL).returncode
    if rc == 2 and (holder := run_holder(run_dir)):
        return f"2, busy: taken by another stream ({holder}) after {time.monotonic() - started:.0f} s"
    return rc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    rp = sub.add_parser("report", help="write the results document from run folders")
    rp.add_argument("roots", nargs="+", type=Path)
    rp.add_argument("--calibration", nargs="*", default=[], type=Path, help="calibration JSON files")
    rp.add_argument("--out", type=Path, default=Path("docs/results.md"))
    rp.add_argument("--title", default="# Results: what the method adds (issue 13)")
    cp = sub.add_parser(
        "compare",
        help="two runs of the same settings that differ in one thing (the server): every vote row side by side",
    )
    cp.add_argument("a", type=Path)
    cp.add_argument("b", type=Path)
    cp.add_argument("--out", type=Path, help="also write the table here")
    rn = sub.add_parser("run", help="run the k = 1 mode ablations (resumable)")
    rn.add_argument("--root", type=Path, required=True)
    rn.add_argument("--models", nargs="+", default=list(MODELS))
    rn.add_argument("--datasets", nargs="+", default=list(DATASETS))
    rn.add_argument(
        "--nice", type=int, default=19, help="niceness of each eval (default 19: yield to other work)"
    )
    rn.add_argument(
        "--only", nargs="+", default=[], metavar="PART",
        help="run only the runs whose folder name contains one of these (e.g. 1.5b, or vp- 0.5b): two "
        "invocations with disjoint parts run side by side, each with its own server",
    )  # fmt: skip
    rn.add_argument(
        "--again", type=int, default=1, metavar="N",
        help="resume a run that stopped with exit 1 (its model server exited, a full disk) up to N more "
        "times, after the rest of the plan (default 1)",
    )  # fmt: skip
    rn.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    if args.cmd == "run":
        todo = plan(args.root, args.models, args.datasets)
        for again in range(max(0, args.again) + 1):
            stopped = []
            for cmd in todo:
                run_dir = run_dir_of(cmd)
                if args.only and not any(part in run_dir.name for part in args.only):
                    continue
                if finished(cmd):
                    print(f"finished: {run_dir.name}", flush=True)
                    continue
                if holder := run_holder(run_dir):
                    print(f"busy: {run_dir.name} ({holder})", flush=True)
                    continue
                print(shlex.join(cmd), flush=True)
                if not args.dry_run:
                    rc = run_one(cmd, args.nice, run_dir)
                    print(f"rc={rc}", flush=True)
                    if rc == 1:  # stopped, resumable: the eval said why on its stderr
                        stopped.append(cmd)
            if not stopped or again == args.again:
                break
            names = ", ".join(run_dir_of(c).name for c in stopped)
            print(f"again: resuming {names} (stopped with exit 1)", flush=True)
            todo = stopped
        return 0
    if args.cmd == "compare":
        from mathagent.evals.study import load_run, paired_runs

        try:
            table = paired_runs(load_run(args.a), load_run(args.b))
        except (OSError, ValueError) as e:
            print(f"method_study compare: {e}", file=sys.stderr)
            return 2
        print(table, end="")
        if args.out:
            args.out.write_text(table, encoding="utf-8")
        return 0
    from mathagent.evals.study import find_runs, load_calibrations, render

    runs = find_runs(args.roots)
    if not runs:
        print(f"no run folders under {', '.join(map(str, args.roots))}", file=sys.stderr)
        return 2
    not_started = planned_missing({r.path.name for r in runs})
    command = "python3 bench/method_study.py report " + " ".join(map(str, args.roots))
    if args.calibration:
        command += " --calibration " + " ".join(map(str, args.calibration))
    body = render(
        runs, calibrated=load_calibrations(args.calibration), command=command, not_started=not_started
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"{args.title}\n\n{body}", encoding="utf-8")
    print(f"wrote {args.out} from {len(runs)} run folders")
    return 0


if __name__ == "__main__":
    sys.exit(main())
