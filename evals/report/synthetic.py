"""Write a synthetic run folder in the real format (header, samples, summary) for report benchmarks
and browser tests: real problems and LaTeX from a bundled data set, traces shaped like the loop's
(text, code, output, verification), graded by the real grader. No model runs."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from mathagent.agent.trace import Step, StepKind, StopReason, Trace, VerificationRound, VerificationState
from mathagent.evals.datasets import dataset_info, load_problems
from mathagent.evals.runner import sample_record
from mathagent.evals.runs import RunDir
from mathagent.evals.summary import summarize
from mathagent.sandbox.base import ExecResult

# P(correct) per mode and P(state | correct), P(state | wrong): shaped like a small model's numbers
_ACCURACY = {"cot": 0.30, "pot": 0.45, "loop": 0.50, "loop+verify": 0.55}
_STATE = {True: (0.70, 0.20, 0.10), False: (0.35, 0.30, 0.35)}


def _wrong(gold: str, rng: random.Random) -> str:
    try:
        return str(int(gold) + rng.choice((-2, -1, 1, 3, 10)))
    except ValueError:
        return rng.choice((f"{gold}+1", f"2{gold}", "0", "\\frac{1}{3}"))


def _trace(p: Any, answer: str, mode: str, state: VerificationState | None, rng: random.Random) -> Trace:
    think = (
        f"We need to solve: {p.question[:400]}\n\nLet $x$ be the unknown. Then $x^2 - 5x + 6 = 0$, so "
        "$$x = \\frac{5 \\pm \\sqrt{25 - 24}}{2}.$$ Checking the conditions carefully, each step follows."
    )
    steps = [Step(StepKind.TEXT, think)]
    if mode != "cot":
        code = (
            "from sympy import symbols, solve, Rational\n"
            "x = symbols('x')\n"
            "# solve the equation from the problem statement\n"
            f"roots = solve(x**2 - 5*x + 6, x)\nprint(roots)\nprint({answer!r})"
        )
        out = f"[2, 3]\n{answer}\n"
        steps += [Step(StepKind.CODE, code), Step(StepKind.EXECUTION, out, ExecResult(stdout=out))]
    steps.append(Step(StepKind.TEXT, f"So the answer is $\\boxed{{{answer}}}$."))
    rounds: tuple[VerificationRound, ...] = ()
    if state is not None:
        check = f"# substitute back\nassert {answer!r} is not None\nprint('check passed')"
        steps += [
            Step(StepKind.CODE, check, phase="verify"),
            Step(StepKind.EXECUTION, "check passed\n", ExecResult(stdout="check passed\n"), phase="verify"),
            Step(
                StepKind.TEXT,
                f"The check confirms $\\boxed{{{answer}}}$. Verification: {state.value}",
                phase="verify",
            ),
        ]
        rounds = (VerificationRound(1, state, answer, "code output"),)
    return Trace(
        problem=p.question,
        steps=tuple(steps),
        final_answer=answer,
        stop_reason=StopReason.ANSWERED,
        verification=rounds,
        tokens_in=rng.randint(300, 900),
        tokens_out=rng.randint(150, 600),
        timings={"total": round(rng.uniform(5, 60), 2)},
    )


def write_synthetic_run(
    path: str | Path,
    *,
    n_samples: int = 10_000,
    k: int = 4,
    mode: str = "loop+verify",
    dataset: str = "math500",
    seed: int = 0,
    n_failed: int = 0,
    write_summary: bool = True,
) -> Path:
    """A run of ``n_samples`` samples (``n_samples // k`` problems, cycled through ``dataset`` with
    ids ``<id>`` then ``<id>~2``...). Deterministic for a given seed."""
    base = load_problems(dataset)
    n_problems = max(1, n_samples // k)
    rng = random.Random(f"{seed}:{mode}")
    verify = mode == "loop+verify"
    cfg = {
        "dataset": dataset,
        "mode": mode,
        "k": k,
        "temperature": 0.7 if k > 1 else 0.0,
        "limit": n_problems,
        "seed": seed,
        "verify": verify,
        "weights": "1,0.5,0.2",
        "backend": "synthetic",
        "model": "synthetic",
        "base_url": None,
        "format": "markdown",
        "max_rounds": 6,
        "extra": {"shuffle": False, "script": None, "agent": {"max_rounds": 6, "verify": verify}},
    }
    identity = {
        "config": cfg,
        "dataset": dataset_info(dataset),
        "grading_dataset": base[0].dataset if base else dataset,
    }
    run = RunDir.open(path, identity, {"git_revision": None, "argv": ["--synthetic", "--mode", mode]})
    failed = set(rng.sample(range(n_problems * k), min(n_failed, n_problems * k)))
    records: list[dict[str, Any]] = []
    for pi in range(n_problems):
        src = base[pi % len(base)]
        rep = pi // len(base)
        p = src if rep == 0 else type(src)(**{**src.__dict__, "id": f"{src.id}~{rep + 1}"})
        for i in range(k):
            if len(records) in failed:
                rec = sample_record(p, i, None, "BackendError: 503 Service Unavailable")
            else:
                right = rng.random() < _ACCURACY.get(mode, 0.5)
                state = None
                if verify:
                    state = rng.choices(list(VerificationState), weights=_STATE[right])[0]
                answer = p.gold if right else _wrong(p.gold, rng)
                rec = sample_record(p, i, _trace(p, answer, mode, state, rng))
            records.append(rec)
    with open(run.path / "samples.jsonl", "a", encoding="utf-8") as f:  # one write: fast for 10k lines
        import json

        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
    if write_summary:
        run.write_summary(
            summarize(records, k=k, weights=cfg["weights"], dataset=str(identity["grading_dataset"]))
        )
    return run.path
