"""Run ``mathagent eval`` as ``n`` shards on a scheduler with submitit, then merge them.

    pip install 'mathagent[cluster]'          # submitit
    python -m mathagent.evals.submit --shards 8 --out runs/m500 --cluster slurm \\
        --slurm-partition cpu --cpus-per-task 16 --mem-gb 64 --timeout-min 240 -- \\
        --dataset math500 --k 4 --base-url http://vllm-host:8000/v1 --model Qwen/Qwen2.5-Math-7B-Instruct

Everything after ``--`` is ``mathagent eval``'s own flags (``--config FILE`` too). Shard ``i`` runs
``mathagent eval FLAGS --shard i/n --run-dir OUT/shard-i`` as one job of a submitit job array (a Slurm
array on a cluster; ``--cluster local`` runs the jobs as local processes, ``debug`` in this process):
each job has its own kernel pool, and all of them call the one server named by ``--base-url``. When
every job has finished, ``mathagent eval merge`` joins the shards into ``OUT/merged``. A job that
fails leaves its folder resumable: submit again (finished samples are kept) or run its command by
hand, then ``mathagent eval merge OUT/shard-* --out OUT/merged``.

submitit does the scheduling (job array, logs in ``OUT/submitit``, requeue on timeout); nothing here
talks to a cluster itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

PROG = "python -m mathagent.evals.submit"


def run_shard(index: int, count: int, eval_argv: list[str], run_dir: str) -> dict[str, Any]:
    """One job: ``mathagent eval`` on shard ``index/count`` into ``run_dir``; returns its counts."""
    from mathagent.evals.cli_eval import main as eval_main  # lazy: imported inside the job's process

    argv = [*eval_argv, "--shard", f"{index}/{count}", "--run-dir", run_dir, "--json"]
    rc = eval_main(argv)
    if rc != 0:
        raise RuntimeError(f"mathagent eval {' '.join(argv)} exited with {rc}")
    summary = json.loads((Path(run_dir) / "summary.json").read_text(encoding="utf-8"))
    return {"shard": f"{index}/{count}", "run_dir": run_dir, "counts": summary.get("counts")}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--shards", type=int, required=True, help="number of shards (jobs)")
    p.add_argument("--out", required=True, help="folder: OUT/shard-i, OUT/merged, OUT/submitit (logs)")
    p.add_argument(
        "--cluster",
        choices=("slurm", "local", "debug"),
        default=None,
        help="submitit executor (default: slurm when sbatch is found, else local processes)",
    )
    p.add_argument("--timeout-min", type=int, default=240, help="per job (default 240)")
    p.add_argument("--cpus-per-task", type=int, default=None, help="cores per job (its kernels and agent)")
    p.add_argument("--mem-gb", type=float, default=None, help="memory per job")
    p.add_argument("--slurm-partition", default=None)
    p.add_argument("--slurm-array-parallelism", type=int, default=None, help="most jobs running at once")
    p.add_argument(
        "--slurm-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other submitit slurm parameter (e.g. account=abc, qos=normal); repeatable",
    )
    p.add_argument("--no-wait", action="store_true", help="submit and print the job ids; merge later by hand")
    p.add_argument("eval_args", nargs=argparse.REMAINDER, help="-- then `mathagent eval` flags")
    return p


def executor_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The submitit ``update_parameters`` keywords the flags give."""
    params: dict[str, Any] = {"timeout_min": args.timeout_min, "name": "mathagent-eval"}
    if args.cpus_per_task:
        params["cpus_per_task"] = args.cpus_per_task
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    if args.slurm_partition:
        params["slurm_partition"] = args.slurm_partition
    if args.slurm_array_parallelism:
        params["slurm_array_parallelism"] = args.slurm_array_parallelism
    for item in args.slurm_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--slurm-arg {item!r}: expected KEY=VALUE")
        params[f"slurm_{key}" if not key.startswith("slurm_") else key] = value
    return params


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    eval_args = [a for a in args.eval_args if a != "--"] if args.eval_args[:1] == ["--"] else args.eval_args
    bad = {"--shard", "--run-dir"} & {a.split("=")[0] for a in eval_args}
    if args.shards < 1 or bad:
        why = f"{', '.join(sorted(bad))} are set per job" if bad else "--shards must be at least 1"
        print(f"{PROG}: {why}", file=sys.stderr)
        return 2
    try:
        import submitit  # lazy: the optional `cluster` extra
    except ModuleNotFoundError:
        print(f"{PROG}: needs submitit: pip install 'mathagent[cluster]'", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    try:
        params = executor_parameters(args)
    except ValueError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    executor = submitit.AutoExecutor(folder=out / "submitit", cluster=args.cluster)
    executor.update_parameters(**params)
    n = args.shards
    dirs = [str(out / f"shard-{i}") for i in range(n)]
    jobs = executor.map_array(run_shard, list(range(n)), [n] * n, [eval_args] * n, dirs)
    print(f"submitted {n} jobs ({executor.cluster}): {', '.join(j.job_id for j in jobs)}", file=sys.stderr)
    merge = ["merge", *dirs, "--out", str(out / "merged")]
    if args.no_wait:
        print(f"when they are done: mathagent eval {' '.join(merge)}")
        return 0
    failed = []
    for i, job in enumerate(jobs):
        try:
            print(json.dumps(job.result()), file=sys.stderr)
        except Exception as e:  # noqa: BLE001 - submitit re-raises the job's own error, whatever it is
            failed.append(f"shard {i}/{n} ({dirs[i]}): {str(e).strip().splitlines()[-1] if str(e) else e!r}")
    if failed:
        print(
            f"{PROG}: {len(failed)} job(s) failed; their folders resume: submit again, then merge:\n  "
            + "\n  ".join(failed),
            file=sys.stderr,
        )
        return 1
    from mathagent.evals.cli_eval import main as eval_main  # lazy: after the jobs

    return eval_main([*merge, "--json"])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
