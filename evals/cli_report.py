"""``mathagent report RUN_DIR [RUN_DIR ...]``: a static, self-contained HTML page.

One run folder: ``RUN_DIR/report.html`` with its settings, summary and every sample's trace (LaTeX
typeset with the bundled KaTeX). Several: one page comparing them side by side (settings, metrics,
accuracy-vs-k and state-precision charts, per-problem verdicts of each run and where they differ),
written to ``--out`` (default ``./compare.html``). The pages open offline: nothing is fetched.
"""

from __future__ import annotations

import argparse
import sys

from mathagent.agent.flags import plain
from mathagent.evals.report import write_compare, write_report
from mathagent.evals.runs import RunError


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="mathagent report",
        description=plain(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument(
        "--out", default=None, help="output file (default: RUN_DIR/report.html; ./compare.html for several)"
    )
    p.add_argument("--page-size", type=int, default=50, help="samples or problems per page (default 50)")
    args = p.parse_args(argv)
    if args.page_size < 1:
        p.error("--page-size must be at least 1")
    try:
        if len(args.run_dirs) == 1:
            path = write_report(args.run_dirs[0], args.out, page_size=args.page_size)
        else:
            path = write_compare(args.run_dirs, args.out or "compare.html", page_size=args.page_size)
    except (
        FileNotFoundError,
        ValueError,
        RuntimeError,
        RunError,
    ) as e:  # not a run folder, corrupt header...
        print(f"mathagent report: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full or read-only disk
        print(
            f"mathagent report: cannot write the report ({e}); the run folders are untouched", file=sys.stderr
        )
        return 1
    print(path)
    return 0
