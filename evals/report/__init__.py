"""Static, self-contained HTML reports of run folders: ``write_report(run_dir)`` for one run,
``write_compare(run_dirs, out)`` for several side by side."""

from mathagent.evals.report.html import write_compare, write_report

__all__ = ["write_compare", "write_report"]
