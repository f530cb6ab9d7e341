"""How fast a big run's report opens and reacts in headless Chromium (offline, fresh profile each time).

Usage: python bench/report_bench.py [--samples 10000] [--k 4] [--repeat 5] [--compare [--no-single]] [--json]

Writes a synthetic run folder (real MATH-500 problems and LaTeX, loop-shaped traces with verification,
graded by the real grader; see mathagent.evals.report.synthetic), writes its report, then opens the page
``--repeat`` times, each in a new headless Chromium with a fresh profile and the network cut off.
Prints, per open: wall seconds from navigate to the load event, and page-side milliseconds since
navigation start to the first page of samples rendered (``data-ready-ms``), DOMContentLoaded and the
load event; then the page-side milliseconds of interactions (next page, last page, open a trace and
typeset it, a search over every sample, a filter). ``--compare`` also times a 4-mode comparison page
(cot, pot, loop, loop+verify) of ``--samples`` samples in all.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mathagent.evals.report import write_compare, write_report
from mathagent.evals.report.cdp import Chromium, find_chromium
from mathagent.evals.report.synthetic import write_synthetic_run

INTERACTIONS = {
    "next page": "document.querySelector('.pager button[data-page=\"2\"]').click()",
    "last page": "[...document.querySelectorAll('.pager button')].filter(b => b.textContent.startsWith('last'))[0].click()",
    "open a trace": "const d = document.querySelector('#list details'); d.open = true;"
    " d.dispatchEvent(new Event('toggle'))",
    "search 'triangle'": "const s = document.getElementById('search'); s.value = 'triangle';"
    " s.dispatchEvent(new Event('input'))",
    "clear search": "const s = document.getElementById('search'); s.value = '';"
    " s.dispatchEvent(new Event('input'))",
    "third filter button": "document.querySelector('.controls button[data-filter]:nth-of-type(3)').click()",
}


def measure(page: Path, repeat: int, tmp: Path) -> dict:
    opens, inter = [], {k: [] for k in INTERACTIONS}
    for i in range(repeat):
        with Chromium(tmp / f"profile-{page.stem}-{i}") as b:
            wall = b.open(page.as_uri(), timeout=300)
            nav = b.js(
                "(() => { const n = performance.getEntriesByType('navigation')[0];"
                " return {ready: +document.body.dataset.readyMs, dcl: n.domContentLoadedEventEnd,"
                " load: n.loadEventEnd}; })()"
            )
            nav["wall_s"] = wall
            nav["requests_off_page"] = sum(
                1 for u in b.requests if not (u.startswith("file://") or u.startswith("data:"))
            )
            opens.append(nav)
            for name, js in INTERACTIONS.items():
                ms = b.js(
                    "(() => { const t = performance.now(); " + js + "; return performance.now() - t; })()"
                )
                inter[name].append(ms)
    return {"opens": opens, "interactions_ms": inter}


def show(title: str, size: int, gen_s: float, m: dict) -> None:
    print(f"\n{title}: {size / 1e6:.1f} MB, written in {gen_s:.1f} s")
    print(
        f"{'open':>6} {'wall s (navigate->load)':>24} {'first page ms':>14} {'DOMContentLoaded ms':>20} {'load ms':>9}"
    )
    for i, o in enumerate(m["opens"], 1):
        print(f"{i:>6} {o['wall_s']:>24.2f} {o['ready']:>14.0f} {o['dcl']:>20.0f} {o['load']:>9.0f}")
    w = [o["wall_s"] for o in m["opens"]]
    print(
        f"median wall {statistics.median(w):.2f} s, max {max(w):.2f} s; "
        f"requests off the page: {sum(o['requests_off_page'] for o in m['opens'])}"
    )
    for name, vals in m["interactions_ms"].items():
        print(f"  {name:<20} median {statistics.median(vals):7.1f} ms  max {max(vals):7.1f} ms")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--compare", action="store_true", help="also time a 4-mode comparison page")
    ap.add_argument("--no-single", action="store_true", help="skip the one-run page (with --compare)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not find_chromium():
        print("report_bench: no chromium on PATH", file=sys.stderr)
        return 2
    out: dict = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not args.no_single:
            t0 = time.perf_counter()
            run = write_synthetic_run(tmp / "run", n_samples=args.samples, k=args.k)
            synth_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            page = write_report(run)
            gen_s = time.perf_counter() - t0
            out["single"] = {
                "bytes": page.stat().st_size,
                "synth_s": synth_s,
                "write_s": gen_s,
                **measure(page, args.repeat, tmp),
            }
            if not args.json:
                show(
                    f"one run, {args.samples} samples (k={args.k})", page.stat().st_size, gen_s, out["single"]
                )
        if args.compare:
            modes = ("cot", "pot", "loop", "loop+verify")
            runs = [
                write_synthetic_run(
                    tmp / m.replace("+", "_"), n_samples=args.samples // len(modes), k=args.k, mode=m
                )
                for m in modes
            ]
            t0 = time.perf_counter()
            cpage = write_compare(runs, tmp / "compare.html")
            cgen_s = time.perf_counter() - t0
            out["compare"] = {
                "bytes": cpage.stat().st_size,
                "write_s": cgen_s,
                **measure(cpage, args.repeat, tmp),
            }
            if not args.json:
                show(
                    f"compare, 4 modes x {args.samples // 4} samples",
                    cpage.stat().st_size,
                    cgen_s,
                    out["compare"],
                )
    if args.json:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
