"""Waiting on a flaky server: ``mathagent eval`` over N problems against a fault-injecting fake server.

The fake OpenAI-compatible server (tests/agent/fakeserver.py) runs on loopback in this process and
serves scripted answers: for a problem "Compute A + B." it answers ``... \\boxed{A+B}`` (no code, so
one model call per problem and no kernel time). ``mathagent eval`` runs as a subprocess, once against
the fault-free server and once with ``--rate`` (default 5%) of the completion requests failing in one
of the ways of issue 17, drawn uniformly: HTTP 500, HTTP 429 with ``Retry-After: 3``, a hang (no
byte for ``--hang`` s), truncated JSON, a connection reset.

    python bench/fault_bench.py [--problems 500] [--concurrency 4] [--latency 0.3] [--rate 0.05]
                                [--eval-args "--request-timeout 10"] [--pythonpath DIR] [--only faults]

``--pythonpath`` is prepended to the eval's PYTHONPATH (e.g. an import shim of another checkout, to
measure its code). Prints, per run: wall time, the eval process's CPU time (user + system, its
kernels included: a load-independent view of the client's cost on a shared machine), problems accounted for (a record in samples.jsonl),
duplicates, correct answers, failed samples (status failed: a backend error after the retries), requests and faults by kind;
then the wall-time ratio faults / fault-free. Figures only; nothing is asserted (target: ratio <= 1.5,
every problem accounted for).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "agent"))

from fakeserver import FAULT_KINDS, FakeOpenAIServer  # noqa: E402

QUESTION = re.compile(r"Compute (\d+) \+ (\d+)\.")


def write_problems(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            a, b = rng.randint(10, 999), rng.randint(10, 999)
            f.write(
                json.dumps({"id": f"p{i:04d}", "question": f"Compute {a} + {b}.", "answer": str(a + b)})
                + "\n"
            )


def responder(body: dict[str, Any]) -> str:
    """The scripted answer to the problem in the request (the last question in the prompt)."""
    msgs = body.get("messages")
    text = "\n".join(str(m.get("content") or "") for m in msgs) if msgs else str(body.get("prompt", ""))
    found = QUESTION.findall(text)
    if not found:
        return "I cannot find the problem."
    a, b = map(int, found[-1])
    return f"Adding the two numbers: {a} + {b} = {a + b}.\n\nThe answer is $\\boxed{{{a + b}}}$."


def run_eval(
    args: argparse.Namespace, problems: Path, rate: float, workdir: Path, label: str
) -> dict[str, Any]:
    run_dir = workdir / f"run-{label}"
    with FakeOpenAIServer(
        responder=responder,
        latency=args.latency,
        fault_rate=rate,
        seed=args.seed,
        hang_s=args.hang,
        retry_after_s=args.retry_after,
        piece_delay=args.piece_delay,
        ping_s=args.ping,
    ) as srv:
        cmd = [
            sys.executable,
            "-c",
            "import sys; from mathagent.agent.cli import main; sys.exit(main())",
            "eval",
            "--dataset",
            str(problems),
            "--base-url",
            srv.base_url,
            "--model",
            "fake",
            "--continue-mode",
            "user",  # measure request faults, not the capability probe
            "--no-verify",
            "--concurrency",
            str(args.concurrency),
            "--run-dir",
            str(run_dir),
            "--json",
            *shlex.split(args.eval_args),
        ]
        env = dict(os.environ)
        env.pop("MATHAGENT_RETRY_WAIT_SCALE", None)  # real waits
        env["MATHAGENT_RUNS_DIR"] = str(workdir)
        if args.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (args.pythonpath, env.get("PYTHONPATH")) if p)
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        hits, faults = srv.hits, Counter(srv.faults)
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n", file=sys.stderr)
    records = []
    samples = run_dir / "samples.jsonl"
    if samples.exists():
        for line in samples.read_text(encoding="utf-8").splitlines():
            if line.strip():
                records.append(json.loads(line))
    ids = Counter(str(r.get("problem_id")) for r in records)
    correct = sum(1 for r in records if r.get("correct"))
    errors = sum(1 for r in records if r.get("status") == "failed")
    return {
        "label": label,
        "rc": proc.returncode,
        "wall_s": wall,
        "eval_cpu_s": cpu,
        "accounted": len(ids),
        "duplicates": sum(c - 1 for c in ids.values()),
        "correct": correct,
        "failed": errors,
        "requests": hits,
        "faults": dict(faults),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--latency", type=float, default=0.3, help="server seconds before each answer")
    p.add_argument("--piece-delay", type=float, default=0.0, help="seconds between streamed events")
    p.add_argument("--ping", type=float, default=None, help="': ping' every N s while a stream is silent")
    p.add_argument("--rate", type=float, default=0.05, help="share of completion requests that fail")
    p.add_argument("--hang", type=float, default=600.0, help="seconds a hung request stays silent")
    p.add_argument("--retry-after", type=float, default=3.0, help="Retry-After of the 429s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-args", default="", help="extra flags for mathagent eval (one string)")
    p.add_argument("--pythonpath", default=None, help="prepended to the eval's PYTHONPATH")
    p.add_argument("--only", choices=("clean", "faults"), default=None, help="run only one of the two")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="fault-bench-") as tmp:
        workdir = Path(tmp)
        problems = workdir / "problems.jsonl"
        write_problems(problems, args.problems, args.seed)
        print(
            f"problems={args.problems} concurrency={args.concurrency} latency={args.latency}s "
            f"fault rate={args.rate} kinds={','.join(FAULT_KINDS)} hang={args.hang}s "
            f"retry-after={args.retry_after}s eval args={args.eval_args!r} pythonpath={args.pythonpath}",
            flush=True,
        )
        results = []
        for label, rate in (("clean", 0.0), ("faults", args.rate)):
            if args.only and args.only != label:
                continue
            r = run_eval(args, problems, rate, workdir, label)
            results.append(r)
            print(
                f"{label:7s} wall {r['wall_s']:8.1f} s  eval CPU {r['eval_cpu_s']:6.1f} s  accounted {r['accounted']}/{args.problems}  "
                f"duplicates {r['duplicates']}  correct {r['correct']}  failed {r['failed']}  "
                f"requests {r['requests']}  faults {r['faults']}  rc {r['rc']}",
                flush=True,
            )
        if len(results) == 2:
            print(f"wall-time ratio faults/clean = {results[1]['wall_s'] / results[0]['wall_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
