"""``mathagent sandbox check``: the isolation level reached here, each protection, and a self-test."""

from __future__ import annotations

import argparse
import json
import time

from mathagent.sandbox.config import SandboxConfig
from mathagent.sandbox.isolation import PROTECTIONS, SandboxUnavailable, isolation_report, make_plan


def _selftest(config: SandboxConfig) -> dict[str, object]:
    from mathagent.sandbox.kernel import JupyterSandbox  # lazy: jupyter_client loads only for a self-test

    out: dict[str, object] = {}
    t0 = time.monotonic()
    with JupyterSandbox(config) as sb:
        out["kernel_start_s"] = round(time.monotonic() - t0, 3)
        r = sb.run("x = 6 * 7\nx", timeout=10)
        out["cell_ok"] = r.ok and r.result == "42"
        out["cell_wall_ms"] = round(r.wall_s * 1000, 2)
        t1 = time.monotonic()
        r = sb.run("while True: pass", timeout=0.5)
        out["timeout_stopped"] = r.timed_out
        out["timeout_wall_s"] = round(time.monotonic() - t1, 3)
        r = sb.run(
            "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), 1); print('open')\n"
            "except OSError as e:\n    print('blocked')",
            timeout=10,
        )
        out["network"] = r.stdout.strip() or (r.error.ename if r.error else "?")
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mathagent sandbox", description=(__doc__ or "").replace("``", "`"))
    p.add_argument("action", choices=["check"], help="check: report isolation and run a self-test")
    p.add_argument(
        "--level",
        choices=["auto", "full", "reduced", "none"],
        default=None,
        help="requested level (default: $MATHAGENT_SANDBOX_LEVEL or auto)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    p.add_argument("--no-selftest", action="store_true", help="skip starting a kernel")
    args = p.parse_args(argv)
    config = SandboxConfig.from_env(level=args.level)
    error = None
    try:
        report = make_plan(config).report
    except SandboxUnavailable as e:
        error = str(e)
        report = isolation_report(config)
    selftest: dict[str, object] | None = None
    if not args.no_selftest and error is None:
        try:
            selftest = _selftest(config)
        except Exception as e:  # the CLI reports; it does not crash
            selftest = {"error": f"{type(e).__name__}: {e}"}
    if args.json:
        doc = {"requested": config.level, **report.to_dict(), "error": error, "selftest": selftest}
        print(json.dumps(doc, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        con = Console()
        con.print(
            f"isolation level reached: [bold]{report.level.value.upper()}[/bold] (requested {config.level})"
        )
        if error:
            con.print(f"[red]{error}[/red]")
        con.print(f"cgroups: {report.cgroup or 'none'}", markup=False)
        t = Table("protection", "state", "why missing")
        for name in PROTECTIONS:
            ok = report.protections.get(name, False)
            t.add_row(
                name, "[green]on[/green]" if ok else "[red]off[/red]", report.missing_reasons.get(name, "")
            )
        con.print(t)
        if selftest is not None:
            st = Table("self-test", "value")
            for k, v in selftest.items():
                st.add_row(k, str(v))
            con.print(st)
    bad = error is not None or (selftest is not None and ("error" in selftest or not selftest.get("cell_ok")))
    return 1 if bad else 0
