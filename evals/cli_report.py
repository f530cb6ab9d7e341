"""``mathagent report RUN_DIR``: write a static, self-contained ``report.html`` for a run folder."""

from __future__ import annotations

import argparse
import sys

from mathagent.agent.flags import plain
from mathagent.evals.report import write_report


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mathagent report", description=plain(__doc__))
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="output file (default: RUN_DIR/report.html)")
    args = p.parse_args(argv)
    try:
        path = write_report(args.run_dir, args.out)
    except FileNotFoundError as e:
        print(f"mathagent report: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0
