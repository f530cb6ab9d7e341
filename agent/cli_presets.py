"""``mathagent presets``: the protocols ``--preset`` takes (name, format, what it follows, limits).

``mathagent presets NAME|FILE`` shows one preset in full (its TOML fields); ``--json`` prints the
list (or the one preset) for programs.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from mathagent.agent.flags import plain
from mathagent.agent.presets import PresetError, available, load_preset
from rich.console import Console
from rich.table import Table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mathagent presets", description=plain(__doc__.split("\n\n")[0]))
    p.add_argument("preset", nargs="?", help="show this preset (a shipped name or a .toml file) in full")
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def _limit(value: int | None) -> str:
    return "default" if value is None else str(value)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    out = Console(highlight=False)
    if args.preset:
        try:
            preset = load_preset(args.preset)
        except PresetError as e:
            print(f"mathagent presets: {e}", file=sys.stderr)
            return 2
        fields = asdict(preset)
        if args.json:
            print(json.dumps(fields, indent=2, ensure_ascii=False))
            return 0
        for key, value in fields.items():
            if value not in (None, "", ()):
                out.print(f"[bold]{key}[/bold] = {value!r}")
        return 0
    presets = [load_preset(name) for name in available()]
    if args.json:
        print(json.dumps([p.summary() for p in presets], indent=2, ensure_ascii=False))
        return 0
    table = Table(title="presets (mathagent solve|eval|generate --preset NAME)")
    for col in ("name", "format", "tokens/call", "code calls", "follows"):
        table.add_column(col, overflow="fold")
    for p in presets:
        table.add_row(
            p.name,
            p.format or "backend's",
            _limit(p.max_tokens),
            _limit(p.max_code_calls),
            p.source,
        )
    out.print(table)
    out.print(
        "[dim]`mathagent presets NAME` shows one in full; a preset is a TOML file (docs/presets.md).[/dim]"
    )
    return 0
