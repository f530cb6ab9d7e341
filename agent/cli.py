"""The ``mathagent`` command: a thin dispatcher to one module per subcommand.

Each subcommand module exposes ``main(argv: list[str]) -> int`` and owns its own argparse parser.
Modules are imported only when their subcommand runs, so ``mathagent --help`` stays fast and a
missing optional extra (e.g. ``train``) only affects its own subcommand.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from mathagent.agent import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    "solve": ("mathagent.agent.cli_solve", "solve a problem (no problem: open the interactive REPL)"),
    "sandbox": ("mathagent.sandbox.cli", "inspect the sandbox: `mathagent sandbox check`"),
    "presets": ("mathagent.agent.cli_presets", "list the model families' protocols that --preset takes"),
    "model": ("mathagent.agent.cli_model", "manage the bundled offline model (path, assemble, serve)"),
    "eval": ("mathagent.evals.cli_eval", "evaluate on a data set (resumable run folder)"),
    "replay": ("mathagent.evals.cli_replay", "replay published traces through the real loop and sandbox"),
    "report": ("mathagent.evals.cli_report", "write a static HTML report of a run folder"),
    "generate": (
        "mathagent.training.cli_generate",
        "generate SFT traces (rejection sampling, interpolation)",
    ),
    "train": ("mathagent.training.cli_train", "fine-tune a model on generated traces with TRL"),
    "calibrate": ("mathagent.evals.cli_calibrate", "measure verification vote weights on a train split"),
}


def _usage() -> str:
    lines = [f"mathagent {__version__}", "", "usage: mathagent COMMAND [ARGS...]", "", "commands:"]
    width = max(len(c) for c in COMMANDS)
    for name, (_, help_text) in COMMANDS.items():
        lines.append(f"  {name:<{width}}  {help_text}")
    lines += ["", "Run `mathagent COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=os.environ.get("MATHAGENT_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"mathagent: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
