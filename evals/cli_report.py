"""``mathagent report RUN_DIR``: write a static, self-contained ``report.html`` for a run folder."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mathagent report", description=__doc__)
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="output file (default: RUN_DIR/report.html)")
    args = p.parse_args(argv)
    from mathagent.evals.report import write_report
    from mathagent.evals.runs import RunError

    try:
        path = write_report(args.run_dir, args.out)
    except (FileNotFoundError, RunError) as e:
        print(f"mathagent report: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full or read-only disk
        print(
            f"mathagent report: cannot write the report ({e}); the run folder is untouched", file=sys.stderr
        )
        return 1
    print(path)
    return 0
