"""``mathagent calibrate``: measure verification vote weights for a model on a labelled train split.

Examples::

    mathagent calibrate --model qwen2.5-coder-0.5b --dataset gsm8k-train --limit 50 --k 4
    mathagent calibrate --from-run runs/calib-gsm8k      # fit from a finished run folder, no sampling

It solves ``--limit`` problems of the split ``--k`` times with verification (an ordinary, resumable
``eval`` run folder), fits weights (see :mod:`mathagent.agent.calibrate`) and saves them beside the
model's identity (model name + prompt hash). ``solve --k``, the REPL and ``eval`` then use them.
Test sets are refused: calibrating on the data you report on would leak the answers into the vote.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from mathagent.agent import calibrate
from mathagent.agent.config import AgentConfig
from mathagent.evals import cli_eval
from mathagent.evals.datafiles import DatasetError
from mathagent.evals.datasets import GRADING_KIND, load_problems, resolve, sha256_file
from mathagent.evals.runs import RunDir, default_runs_dir
from mathagent.evals.testsets import SPLIT, match_test


class CalibrateError(ValueError):
    """Bad input for ``calibrate`` (a test set, a missing split, a run without verification)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mathagent calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", help="gsm8k-train, math-train or a JSONL file of a train split")
    p.add_argument("--model", default=os.environ.get("MATHAGENT_MODEL", ""), help="model (default: bundled)")
    p.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"))
    p.add_argument("--backend", default=os.environ.get("MATHAGENT_BACKEND"))
    p.add_argument("--script", help=argparse.SUPPRESS)
    p.add_argument("--format", default=None)
    p.add_argument("--verify-prompt", default=None, help="shipped verification prompt (default: verify)")
    p.add_argument("--k", type=int, default=4, help="samples per problem (default 4)")
    p.add_argument("--limit", type=int, default=50, help="problems (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--run-dir", default=None, help="run folder (default: $MATHAGENT_RUNS_DIR/calibrate-...)")
    p.add_argument("--from-run", nargs="+", metavar="RUN_DIR", help="fit from finished run folder(s) instead")
    p.add_argument("--strength", type=float, default=None, help="shrinkage pseudo-samples (default 10)")
    p.add_argument("--json", action="store_true", help="print the calibration as JSON")
    return p


def _is_test(name: str) -> bool:
    return SPLIT.get(name) == "test"


def resolve_train(dataset: str) -> tuple[str, str]:
    """(what ``eval --dataset`` gets, grading policy) of a train split: a registered train set by name
    (from the data folders, the cache or its pinned hub source), or a file that is not test data
    (:mod:`mathagent.evals.testsets`); :class:`CalibrateError` otherwise."""
    if _is_test(dataset):
        raise CalibrateError(
            f"{dataset!r} is a test set; calibrate only on a train split (gsm8k-train, math-train, FILE)"
        )
    if SPLIT.get(dataset) == "train":
        try:
            resolve(dataset)
        except DatasetError as e:
            raise CalibrateError(str(e)) from None
        return dataset, GRADING_KIND[dataset]
    p = Path(dataset)
    if not p.is_file():
        raise CalibrateError(f"{dataset!r} is neither gsm8k-train, math-train nor a file")
    if "test" in p.name.lower():
        raise CalibrateError(f"{p.name} looks like a test split; calibrate only on train data")
    try:
        questions = [q.question for q in load_problems(str(p))]
    except DatasetError as e:
        raise CalibrateError(str(e)) from None
    found = match_test(questions, sha256_file(p))
    if found:
        raise CalibrateError(f"{p}: {found.describe()}; calibrate only on train data")
    return str(p), "math"


def _sample(args: argparse.Namespace, dataset: str) -> Path:
    model = args.model or "default"
    stem = dataset if dataset in SPLIT else Path(dataset).stem
    run_dir = (
        Path(args.run_dir) if args.run_dir else default_runs_dir() / f"calibrate-{model}-{stem}-k{args.k}"
    )
    argv = [
        "--dataset", dataset, "--k", str(args.k), "--limit", str(args.limit), "--shuffle",
        "--seed", str(args.seed), "--concurrency", str(args.concurrency), "--mode", "loop+verify",
        "--run-dir", str(run_dir), "--json",
    ]  # fmt: skip
    for flag, value in (
        ("--model", args.model),
        ("--base-url", args.base_url),
        ("--backend", args.backend),
        ("--script", args.script),
        ("--format", args.format),
        ("--verify-prompt", args.verify_prompt),
    ):
        if value:
            argv += [flag, value]
    with contextlib.redirect_stdout(io.StringIO()):
        rc = cli_eval.main(argv)
    if rc != 0:
        raise CalibrateError(f"the calibration run failed (eval exit {rc}); its folder: {run_dir}")
    return run_dir


def fit_runs(run_dirs: list[Path], strength: float | None = None) -> Any:
    """Fit a :class:`~mathagent.agent.calibrate.Calibration` from run folders of one model and prompts."""
    records: list[dict[str, Any]] = []
    ids: set[tuple[str, str]] = set()
    sources = []
    for d in run_dirs:
        run = RunDir.read(d)
        cfg = run.header.get("identity", {}).get("config", {})
        ds = run.header.get("identity", {}).get("dataset", {}).get("name", "")
        if _is_test(str(cfg.get("dataset"))) or _is_test(ds):
            raise CalibrateError(
                f"{d} ran on the test set {ds or cfg.get('dataset')}; calibrate only on train data"
            )
        agent = AgentConfig.from_dict((cfg.get("extra") or {}).get("agent") or {})
        ids.add((cfg.get("model", ""), calibrate.config_prompt_hash(agent, cfg.get("format"))))
        grading = run.header.get("identity", {}).get("grading_dataset") or "math"
        recs = run.records()
        records += [{**r, "problem_id": f"{d.name}/{r['problem_id']}"} for r in recs]
        sources.append({"run_dir": str(d), "dataset": ds, "k": cfg.get("k"), "samples": len(recs)})
    if len(ids) != 1:
        raise CalibrateError(f"the run folders mix models or prompts: {sorted(ids)}")
    model, ph = ids.pop()
    kw = {} if strength is None else {"strength": strength}
    try:
        return calibrate.calibrate_records(
            records, model=model, prompt_hash=ph, dataset=grading, source={"runs": sources}, **kw
        )
    except ValueError as e:
        raise CalibrateError(str(e)) from None


def _show(cal: Any, path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"calibration of {cal.model} (prompts {cal.prompt_hash})")
    for col in ("state", "samples", "correct", "precision (shrunk)", "weight"):
        t.add_column(col, justify="right")
    names = {"T": "true", "U": "uncertain", "F": "false"}
    for s in ("T", "U", "F"):
        n, c = cal.counts[s]
        t.add_row(s, str(n), str(c), f"{100 * cal.precision[s]:.1f}%", f"{cal.weights[names[s]]:g}")
    con = Console()
    con.print(t)
    h = cal.heldout
    con.print(
        f"held-out check ({h['n_problems']} problems, 2 folds): majority {100 * (h['majority'] or 0):.1f}% vs "
        f"calibrated {100 * (h['calibrated'] or 0):.1f}% (diff {100 * h['diff']:+.1f} +- {100 * h['se']:.1f})"
        + (" -> calibrated lost: majority weights saved" if cal.fallback else "")
    )
    con.print(f"saved: {path}")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.from_run:
            run_dirs = [Path(d) for d in args.from_run]
        else:
            if not args.dataset:
                raise CalibrateError("give --dataset gsm8k-train|math-train|FILE (or --from-run RUN_DIR)")
            if args.k < 2:
                raise CalibrateError("--k must be at least 2: weights matter only when samples vote")
            dataset, _policy = resolve_train(args.dataset)
            run_dirs = [_sample(args, dataset)]
        cal = fit_runs(run_dirs, args.strength)
    except (CalibrateError, FileNotFoundError) as e:
        print(f"mathagent calibrate: {e}", file=sys.stderr)
        return 2
    path = cal.save()
    if args.json:
        print(json.dumps({**cal.to_dict(), "path": str(path)}, indent=2))
    else:
        _show(cal, path)
    return 0
