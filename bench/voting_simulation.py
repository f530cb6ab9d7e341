"""Simulate verification-weighted voting against plain majority voting, with known ground truth.

Each simulated problem has a per-sample accuracy drawn from a Beta distribution (problems differ in
difficulty). A sample is right with that probability; a wrong sample picks one of four wrong answers
with skewed odds (wrong answers cluster, so a majority can be wrong). Its verification state depends
on whether it is right, at a set *strength* s in [0, 1]:

    P(state | right) = s * RIGHT + (1 - s) * MIX      RIGHT = (T .70, U .25, F .05)
    P(state | wrong) = s * WRONG + (1 - s) * MIX      WRONG = (T .15, U .40, F .45)

MIX is the even mixture of RIGHT and WRONG, so at s = 0 the state carries no information (noise)
and at s = 1 it is as informative as the tables. The votes run through
``mathagent.agent.grading.voting.vote_accuracy_at_k`` (the library code, not a copy).

    python bench/voting_simulation.py                  # table + bench/out/voting_simulation.{svg,json}
    python bench/voting_simulation.py --grid           # also search weights (w_T = 1) per strength
    python bench/voting_simulation.py --calibrate      # weights fitted by `mathagent calibrate`'s code
                                                       # on a separate simulated train set, scored on
                                                       # held-out problems against majority
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from mathagent.agent.grading.voting import Sample, Weights, exact_cluster_fn, vote_accuracy_at_k
from mathagent.agent.trace import VerificationState

RIGHT = (0.70, 0.25, 0.05)
WRONG = (0.15, 0.40, 0.45)
STATES = (VerificationState.TRUE, VerificationState.UNCERTAIN, VerificationState.FALSE)
WRONG_ODDS = (0.5, 0.25, 0.15, 0.10)


def simulate(
    n_problems: int, n_samples: int, strength: float, seed: int, beta: tuple[float, float] = (1.2, 1.0)
) -> tuple[list[list[Sample]], list[list[bool]]]:
    rng = random.Random(f"sim:{seed}")  # answers: the same data set at every strength
    srng = random.Random(f"states:{seed}:{strength}")
    mix = [(a + b) / 2 for a, b in zip(RIGHT, WRONG, strict=True)]
    p_right = [strength * a + (1 - strength) * m for a, m in zip(RIGHT, mix, strict=True)]
    p_wrong = [strength * a + (1 - strength) * m for a, m in zip(WRONG, mix, strict=True)]
    problems, correct = [], []
    for _ in range(n_problems):
        acc = rng.betavariate(*beta)
        samples, corr = [], []
        for _ in range(n_samples):
            ok = rng.random() < acc
            answer = "42" if ok else f"w{rng.choices(range(len(WRONG_ODDS)), WRONG_ODDS)[0]}"
            state = srng.choices(STATES, p_right if ok else p_wrong)[0]
            samples.append(Sample(answer, state))
            corr.append(ok)
        problems.append(samples)
        correct.append(corr)
    return problems, correct


def run(args: argparse.Namespace) -> dict:
    ks = [k for k in (1, 2, 4, 8, 16) if k <= args.samples]
    weights = Weights.parse(args.weights)
    results: dict = {"weights": str(weights), "ks": ks, "strengths": {}, "args": vars(args)}
    for s in args.strengths:
        acc_m = {k: [] for k in ks}
        acc_w = {k: [] for k in ks}
        for rep in range(args.reps):
            probs, corr = simulate(args.problems, args.samples, s, args.seed + rep)
            rows = vote_accuracy_at_k(
                probs, corr, ks, weights, draws=args.draws, seed=args.seed + rep, cluster_fn=exact_cluster_fn
            )
            for r in rows:
                acc_m[r.k].append(r.majority)
                acc_w[r.k].append(r.weighted)
        results["strengths"][str(s)] = {
            "majority": {k: _mean(acc_m[k]) for k in ks},
            "weighted": {k: _mean(acc_w[k]) for k in ks},
            "weighted_minus_majority_se": {
                k: _se([w - m for w, m in zip(acc_w[k], acc_m[k], strict=True)]) for k in ks
            },
        }
    return results


def calibrated(args: argparse.Namespace) -> dict:
    """Per strength: weights fitted (``mathagent.agent.calibrate``, held-out rule included) on a separate
    simulated train set of ``--calib-problems`` x 4 samples, then scored on the held-out test sets."""
    from mathagent.agent.calibrate import calibrate_records

    ks = [k for k in (1, 2, 4, 8, 16) if k <= args.samples]
    out: dict = {}
    for s in args.strengths:
        fitted, diffs = [], {k: [] for k in ks}
        maj_acc, cal_acc = {k: [] for k in ks}, {k: [] for k in ks}
        for rep in range(args.reps):
            tp, tc = simulate(args.calib_problems, 4, s, 10_000 + args.seed + rep)
            recs = [
                {"problem_id": str(i), "sample_index": j, "answer": smp.answer, "correct": ok,
                 "verification_state": smp.state.value}
                for i, (ss, cs) in enumerate(zip(tp, tc, strict=True))
                for j, (smp, ok) in enumerate(zip(ss, cs, strict=True))
            ]  # fmt: skip
            cal = calibrate_records(recs, model="sim", prompt_hash="-", dataset="gsm8k")
            w = cal.vote_weights()
            fitted.append((str(w), cal.fallback))
            probs, corr = simulate(args.problems, args.samples, s, args.seed + rep)
            rows = vote_accuracy_at_k(
                probs, corr, ks, w, draws=args.draws, seed=args.seed + rep, cluster_fn=exact_cluster_fn
            )
            for r in rows:
                diffs[r.k].append(r.weighted - r.majority)
                maj_acc[r.k].append(r.majority)
                cal_acc[r.k].append(r.weighted)
        out[str(s)] = {
            "weights": fitted,
            "majority": {k: _mean(maj_acc[k]) for k in ks},
            "calibrated": {k: _mean(cal_acc[k]) for k in ks},
            "diff": {k: _mean(diffs[k]) for k in ks},
            "se": {k: _se(diffs[k]) for k in ks},
        }
    return out


def grid(args: argparse.Namespace) -> list[tuple[str, dict[str, float]]]:
    """Weighted accuracy at k = max for each candidate weight triple (w_T = 1) and strength."""
    k = max(k for k in (1, 2, 4, 8, 16) if k <= args.samples)
    cands = [Weights(1.0, u / 10, f / 10) for u in range(1, 10) for f in range(0, u + 1)]
    data = {
        s: [simulate(args.problems, args.samples, s, args.seed + r) for r in range(args.reps)]
        for s in args.strengths
    }
    out = []
    for w in cands:
        per = {}
        for s, reps in data.items():
            accs = []
            for r, (probs, corr) in enumerate(reps):
                row = vote_accuracy_at_k(
                    probs, corr, [k], w, draws=1, seed=args.seed + r, cluster_fn=exact_cluster_fn
                )[0]
                accs.append(row.weighted - row.majority)
            per[str(s)] = _mean(accs)
        out.append((str(w), per))
    out.sort(key=lambda x: -sum(x[1].values()))
    return out


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _se(xs: list[float]) -> float:
    if len(xs) < 2:
        return float("nan")
    m = _mean(xs)
    return (sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs)) ** 0.5


def svg_plot(results: dict, path: Path) -> None:
    """Accuracy vs k, one panel per strength: majority (grey) and weighted (blue). Hand-written SVG."""
    strengths = list(results["strengths"])
    ks = results["ks"]
    pw, ph, m = 260, 220, 40
    width, height = pw * len(strengths), ph + 40
    vals = [
        v
        for s in strengths
        for kind in ("majority", "weighted")
        for v in results["strengths"][s][kind].values()
    ]
    lo, hi = min(vals) - 0.02, max(vals) + 0.02
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for i, s in enumerate(strengths):
        x0 = i * pw + m
        w, h = pw - m - 10, ph - m

        def xy(j: int, v: float, x0: int = x0, w: int = w, h: int = h) -> tuple[float, float]:
            x = x0 + (w * j / max(1, len(ks) - 1))
            y = 20 + h - (v - lo) / (hi - lo) * h
            return x, y

        parts.append(f'<rect x="{x0}" y="20" width="{w}" height="{h}" fill="none" stroke="#999"/>')
        parts.append(f'<text x="{x0 + w / 2}" y="14" text-anchor="middle">verification strength {s}</text>')
        for j, k in enumerate(ks):
            x, _ = xy(j, lo)
            parts.append(f'<text x="{x}" y="{20 + h + 14}" text-anchor="middle">{k}</text>')
        for t in range(5):
            v = lo + (hi - lo) * t / 4
            _, y = xy(0, v)
            parts.append(f'<text x="{x0 - 4}" y="{y + 4}" text-anchor="end">{v:.2f}</text>')
        for kind, color in (("majority", "#888"), ("weighted", "#1f77b4")):
            pts = " ".join(
                "{:.1f},{:.1f}".format(*xy(j, results["strengths"][s][kind][k])) for j, k in enumerate(ks)
            )
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
    parts.append(
        f'<text x="10" y="{height - 6}">k (samples voted) → accuracy. grey: majority; blue: weighted '
        f"{results['weights']}</text>"
    )
    parts.append("</svg>")
    path.write_text("\n".join(parts))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", type=int, default=300)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--reps", type=int, default=5, help="independent simulated data sets per strength")
    p.add_argument("--draws", type=int, default=16, help="k-subsets per problem for k < samples")
    p.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0])
    p.add_argument("--weights", default=str(Weights()))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", action="store_true", help="search weights (w_T = 1) at the largest k")
    p.add_argument(
        "--calibrate", action="store_true", help="also score weights fitted on simulated train data"
    )
    p.add_argument(
        "--calib-problems", type=int, default=100, help="train problems (x4 samples) to calibrate on"
    )
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    res = run(args)
    print(f"weights {res['weights']}; {args.problems} problems x {args.samples} samples x {args.reps} reps")
    print(f"{'strength':>8} {'k':>3} {'majority':>9} {'weighted':>9} {'diff':>7} {'±se':>6}")
    for s, d in res["strengths"].items():
        for k in res["ks"]:
            m, w = d["majority"][k], d["weighted"][k]
            se = d["weighted_minus_majority_se"][k]
            print(f"{s:>8} {k:>3} {m:9.4f} {w:9.4f} {w - m:+7.4f} {se:6.4f}")
    if args.grid:
        g = grid(args)
        res["grid"] = g
        print("\nweights (w_T=1) ranked by summed gain over majority at k=max, per strength:")
        for name, per in g[:10]:
            print(f"  {name:>12}  " + "  ".join(f"s={s}:{v:+.4f}" for s, v in per.items()))
        for name, per in g:
            if name == str(Weights.parse(args.weights)):
                print(f"  default {name}: " + "  ".join(f"s={s}:{v:+.4f}" for s, v in per.items()))
    if args.calibrate:
        c = calibrated(args)
        res["calibrated"] = c
        print(
            f"\ncalibrated weights (fitted on {args.calib_problems} simulated train problems x 4 samples per rep):"
        )
        print(
            f"{'strength':>8} {'k':>3} {'majority':>9} {'calibr.':>9} {'diff':>7} {'±se':>6}  weights T,U,F per rep"
        )
        for s, d in c.items():
            ws = " ".join(w + ("(maj)" if fb else "") for w, fb in d["weights"])
            for k in res["ks"]:
                print(
                    f"{s:>8} {k:>3} {d['majority'][k]:9.4f} {d['calibrated'][k]:9.4f} {d['diff'][k]:+7.4f} "
                    f"{d['se'][k]:6.4f}  " + (ws if k == res["ks"][-1] else "")
                )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "voting_simulation.json").write_text(json.dumps(res, indent=1, default=str))
    svg_plot(res, args.out / "voting_simulation.svg")
    print(f"\nwrote {args.out / 'voting_simulation.svg'} and .json in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
