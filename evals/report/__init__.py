"""Static, self-contained HTML report of a run folder: ``write_report(run_dir) -> Path``."""

from mathagent.evals.report.html import write_report

__all__ = ["write_report"]
