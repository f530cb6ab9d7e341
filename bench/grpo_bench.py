"""GRPO on CPU: rollouts/s, the split of step time, and the learning signal on a toy task.

    python bench/grpo_bench.py --steps 4                      # GSM8K train problems: speed and time split
    python bench/grpo_bench.py --toy --steps 30 --seeds 0 1 2 # toy task: mean reward first vs last N steps

Each run is ``mathagent train grpo`` (SmolLM2-135M, real rollouts in real kernels); the figures come
from the run's ``steps.jsonl``. ``generation`` is the policy generating, ``execution`` code running in the
sandboxes, ``train`` the rest of the step (rewards, log-probabilities, forward/backward, optimizer).

The toy task: "What is A + B * C? Print the result with Python." with small integers; the reward is the
grader's 0/1 on the answer plus, with weight ``--format-weight``, 1 when a code block ran and an answer
was given — so printing the expression's value is what is rewarded.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GSM8K_TRAIN = ROOT.parent / "shared" / "data" / "datasets" / "gsm8k_train.jsonl"


def toy_problems(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b, c = rng.randint(2, 30), rng.randint(2, 12), rng.randint(2, 12)
        q = f"What is {a} + {b} * {c}? Print the result with Python."
        rows.append({"id": f"toy-{i}", "question": q, "answer": str(a + b * c)})
    return rows


def run(args: argparse.Namespace, seed: int, data: Path, out: Path) -> list[dict]:
    from mathagent.training.cli_train import main as train_main

    argv = [
        "grpo", "--data", str(data), "--model", args.model, "--out", str(out), "--max-steps", str(args.steps),
        "--num-generations", str(args.group), "--batch-size", str(args.group * args.prompts),
        "--max-completion-length", str(args.max_len), "--lr", str(args.lr), "--seed", str(seed),
        "--save-steps", "100000", "--pool-size", str(min(8, args.group * args.prompts)),
        "--temperature", str(args.temperature), "--torch-threads", str(args.threads),
        "--grading", "gsm8k", "--reward-format", str(args.format_weight if args.toy else 0.0),
    ]  # fmt: skip
    rc = train_main(argv)
    if rc != 0:
        raise SystemExit(f"train grpo failed with {rc}")
    return [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--toy", action="store_true", help="the toy arithmetic task (learning signal)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--group", type=int, default=4, help="rollouts per problem")
    p.add_argument("--prompts", type=int, default=1, help="problems per step")
    p.add_argument("--problems", type=int, default=16)
    p.add_argument("--max-len", type=int, default=96)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--format-weight", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--last", type=int, default=5, help="N of 'first N / last N steps'")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="grpo-bench-"))
    summary = []
    for seed in args.seeds:
        data = tmp / f"data-{seed}.jsonl"
        if args.toy:
            rows = toy_problems(args.problems, seed)
            data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        else:
            if not GSM8K_TRAIN.is_file():
                raise SystemExit(f"{GSM8K_TRAIN} not found")
            lines = GSM8K_TRAIN.read_text(encoding="utf-8").splitlines(keepends=True)[: args.problems]
            data = tmp / "gsm8k_train.jsonl"
            data.write_text("".join(lines), encoding="utf-8")
        t0 = time.perf_counter()
        steps = run(args, seed, data, tmp / f"run-{seed}")
        wall = time.perf_counter() - t0
        rewards = [s.get("reward", float("nan")) for s in steps]
        n = min(args.last, max(1, len(rewards) // 2))
        gen = sum(s["generation_s"] for s in steps)
        exe = sum(s["execution_s"] for s in steps)
        trn = sum(s["train_s"] for s in steps)
        total = sum(s["step_s"] for s in steps)
        rollouts = sum(s["rollouts"] for s in steps)
        row = {
            "seed": seed,
            "steps": len(steps),
            "wall_s": round(wall, 1),
            "rollouts_per_s": round(rollouts / max(1e-9, gen + exe), 3),
            "step_s_mean": round(total / max(1, len(steps)), 1),
            "split_generation": round(gen / max(1e-9, total), 3),
            "split_execution": round(exe / max(1e-9, total), 3),
            "split_train": round(trn / max(1e-9, total), 3),
            f"reward_first{n}": round(statistics.fmean(rewards[:n]), 3),
            f"reward_last{n}": round(statistics.fmean(rewards[-n:]), 3),
            "rewards": [round(r, 3) for r in rewards],
        }
        summary.append(row)
        print(json.dumps(row), flush=True)
    print(f"runs in {tmp}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
