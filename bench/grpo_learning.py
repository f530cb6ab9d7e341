"""The GRPO learning signal on a toy task, several seeds, against a learning-rate-0 control.

    OMP_NUM_THREADS=1 nice -n 10 python bench/grpo_learning.py --seeds 0 1 --steps 12 --control

The task (``--task print``, default): "Write a Python code block that prints the value of A + B * C."
(small integers, 64 per seed, shuffled), with a one-line system prompt (``bench/grpo_toy_system.md``).
It is built so that a 135M model on CPU has something to learn from: untrained, SmolLM2-135M ran a code
block in 162 of 288 rollouts and printed the right value in 26% (the lr-0 control runs), so most groups
of 8 differ in reward and carry a gradient (the earlier "What is A + B * C? Print the result with Python."
with the agent's long prompt, groups of 4 and 40 tokens left almost every group at reward 0).

Each run is ``mathagent train grpo`` on SmolLM2-135M with real rollouts in real sandboxed kernels, one
problem x ``--group`` rollouts per step, ``--max-len`` tokens, one execution, a constant learning rate
(TRL's default schedule decays to 0 over a short run); the reward is the grader's 0/1 on the answer plus
``--format-weight`` x (a code block ran and an answer was given). ``--control`` adds, for every seed, the
same run with learning rate 0 (same problems, same sampling seeds): the curve of a model that does not
learn, to tell learning from noise. Runs go seed by seed, trained then control.

Resumable: the summary (``--summary``, default ``bench/grpo_learning.json``, plus a ``.csv`` of the
curves next to it) is rewritten after every finished run and finished runs are skipped when it is run
again with the same settings; an unfinished run continues from its newest checkpoint (``--resume``).
The work folder (``--work``) keeps the runs.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


TASKS = {
    "print": "Write a Python code block that prints the value of {a} + {b} * {c}.",
    "what": "What is {a} + {b} * {c}? Print the result with Python.",
}
"""Toy task phrasings. ``print`` (default) asks for the program outright (SmolLM2-135M untrained: 26% right,
code ran in 56% of rollouts). ``what`` is the earlier phrasing (rarely any code: most groups all 0)."""

SYSTEM_PROMPT = ROOT / "bench" / "grpo_toy_system.md"
"""A one-line system prompt (short prompts make each CPU step cheaper); ``--system-prompt`` overrides it."""


def toy_problems(n: int, seed: int, task: str = "print") -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b, c = rng.randint(2, 30), rng.randint(2, 12), rng.randint(2, 12)
        q = TASKS[task].format(a=a, b=b, c=c)
        rows.append({"id": f"toy-{seed}-{i}", "question": q, "answer": str(a + b * c)})
    return rows


def settings(args: argparse.Namespace) -> dict[str, Any]:
    keys = (
        "model",
        "task",
        "system_prompt",
        "steps",
        "group",
        "prompts",
        "problems",
        "max_len",
        "lr",
        "scheduler",
        "temperature",
        "format_weight",
    )
    return {k: getattr(args, k) for k in keys}


def train_argv(args: argparse.Namespace, data: Path, out: Path, seed: int, lr: float) -> list[str]:
    return [
        sys.executable, "-m", "mathagent.training.cli_train", "grpo", "--data", str(data),
        "--model", args.model, "--out", str(out), "--max-steps", str(args.steps),
        "--num-generations", str(args.group), "--batch-size", str(args.group * args.prompts),
        "--max-completion-length", str(args.max_len), "--max-rounds", "1", "--lr", str(lr),
        "--seed", str(seed), "--shuffle", "--save-steps", str(args.save_steps), "--logging-steps", "1",
        "--pool-size", str(min(8, args.group * args.prompts)), "--temperature", str(args.temperature),
        "--torch-threads", str(args.threads), "--grading", "gsm8k",
        "--reward-format", str(args.format_weight), "--system-prompt", args.system_prompt,
        "--grpo-arg", f"lr_scheduler_type={args.scheduler}", "--json",
    ]  # fmt: skip


def read_steps(out: Path) -> list[dict[str, Any]]:
    path = out / "steps.jsonl"
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def read_rollouts(out: Path) -> list[dict[str, Any]]:
    path = out / "rollouts.jsonl"
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def mean(xs: list[float]) -> float | None:
    return round(statistics.fmean(xs), 4) if xs else None


def run_one(args: argparse.Namespace, seed: int, lr: float, work: Path) -> dict[str, Any]:
    name = f"seed{seed}" + ("-lr0" if lr == 0 else "")
    data = work / f"toy-{seed}.jsonl"
    data.write_text(
        "".join(json.dumps(r) + "\n" for r in toy_problems(args.problems, seed, args.task)), encoding="utf-8"
    )
    out = work / name
    argv = train_argv(args, data, out, seed, lr)
    if (out / "checkpoints").is_dir():
        argv.append("--resume")
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=os.environ.copy())
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name}: train grpo exited {proc.returncode}\n{proc.stderr[-3000:]}")
    steps = read_steps(out)
    rewards = [float(s.get("reward", float("nan"))) for s in steps]
    correct = [float(s.get("rewards/correct/mean", float("nan"))) for s in steps]
    n = min(args.last, max(1, len(rewards) // 2))
    rollouts = read_rollouts(out)
    split = {k: sum(float(s.get(k, 0.0)) for s in steps) for k in ("generation_s", "execution_s", "train_s")}
    total = sum(split.values()) or 1.0
    return {
        "run": name,
        "seed": seed,
        "lr": lr,
        "steps": len(steps),
        "wall_s": round(wall, 1),
        "step_s_mean": mean([float(s["step_s"]) for s in steps]),
        "reward_first": mean(rewards[:n]),
        "reward_last": mean(rewards[-n:]),
        "correct_first": mean(correct[:n]),
        "correct_last": mean(correct[-n:]),
        "n": n,
        "rollouts": len(rollouts),
        "ran_code": sum(1 for r in rollouts if r.get("executions")),
        "hit_token_limit": sum(1 for r in rollouts if r.get("truncated")),
        "groups_with_reward_variance": sum(1 for s in steps if float(s.get("reward_std", 0.0)) > 0),
        "time_split": {k.removesuffix("_s"): round(v / total, 3) for k, v in split.items()},
        "reward": [round(r, 4) for r in rewards],
        "correct": [round(float(s.get("rewards/correct/mean", float("nan"))), 4) for s in steps],
        "format": [round(float(s.get("rewards/format/mean", float("nan"))), 4) for s in steps],
        "command": " ".join(argv[1:]),
    }


def write_summary(path: Path, args: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    def agg(lr_zero: bool, key: str) -> float | None:
        vals = [r[key] for r in runs if (r["lr"] == 0) == lr_zero and r[key] is not None]
        return mean(vals)

    doc = {
        "command": "python bench/grpo_learning.py " + " ".join(args.argv),
        "settings": settings(args),
        "last_n": args.last,
        "mean_over_seeds": {
            "trained": {
                k: agg(False, f"{k}")
                for k in ("reward_first", "reward_last", "correct_first", "correct_last")
            },
            "control_lr0": {
                k: agg(True, f"{k}") for k in ("reward_first", "reward_last", "correct_first", "correct_last")
            },
        },
        "runs": runs,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    with path.with_suffix(".csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["run", "seed", "lr", "step", "reward", "correct", "format"])
        for r in runs:
            for i, (rew, cor, fmt) in enumerate(zip(r["reward"], r["correct"], r["format"], strict=True)):
                w.writerow([r["run"], r["seed"], r["lr"], i + 1, rew, cor, fmt])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", choices=sorted(TASKS), default="print", help="toy task phrasing (see TASKS)")
    p.add_argument("--system-prompt", default=str(SYSTEM_PROMPT), help="system prompt name or file")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=16, help="optimizer steps per run")
    p.add_argument("--group", type=int, default=8, help="rollouts per problem (GRPO group)")
    p.add_argument("--prompts", type=int, default=1, help="problems per step")
    p.add_argument("--problems", type=int, default=64, help="toy problems per seed")
    p.add_argument("--max-len", type=int, default=64, help="completion tokens per rollout")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument(
        "--scheduler", default="constant", help="learning-rate schedule (TRL's default decays to 0)"
    )
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--format-weight", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--last", type=int, default=4, help="N of 'mean reward over the first / last N steps'")
    p.add_argument("--save-steps", type=int, default=8, help="checkpoint every N steps (resume)")
    p.add_argument("--control", action="store_true", help="also run every seed with learning rate 0")
    p.add_argument("--summary", default=str(ROOT / "bench" / "grpo_learning.json"))
    p.add_argument("--work", default=str(Path.home() / ".cache" / "mathagent" / "grpo-learning"))
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    summary = Path(args.summary)
    key = hashlib.sha1(json.dumps(settings(args), sort_keys=True).encode()).hexdigest()[:10]
    work = Path(args.work) / key  # runs of other settings never resume into these
    work.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    if summary.is_file():
        old = json.loads(summary.read_text(encoding="utf-8"))
        if old.get("settings") == settings(args):
            runs = [r for r in old.get("runs", []) if r["steps"] >= args.steps]
    # seed by seed, the trained run and its control next to each other: a run cut short still leaves pairs
    todo = [(s, lr) for s in args.seeds for lr in ([args.lr, 0.0] if args.control else [args.lr])]
    for seed, lr in todo:
        if any(r["seed"] == seed and r["lr"] == lr for r in runs):
            continue
        row = run_one(args, seed, lr, work)
        runs.append(row)
        runs.sort(key=lambda r: (r["lr"] == 0, r["seed"]))
        write_summary(summary, args, runs)
        print(json.dumps({k: v for k, v in row.items() if k != "command"}), flush=True)
    write_summary(summary, args, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
