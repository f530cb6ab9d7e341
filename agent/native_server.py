"""llama.cpp's own HTTP server (``llama-server``): a model server that batches parallel requests.

llama-cpp-python's server (``python -m llama_cpp.server``) runs one request at a time: the k samples
of a problem, sent as k parallel requests, wait in a queue. llama.cpp's own ``llama-server`` keeps
``--parallel`` slots, each with its own KV cache, and decodes every active slot in one batch
(continuous batching); a slot keeps its conversation cached, so the next round of the same sample
only evaluates the new tokens. ``bench/throughput_bench.py`` measures both side by side
(docs/backends.md has the figures).

Install: ``bash .ci/build_llama_server.sh`` builds the ``llama-server`` target from the llama.cpp
sources vendored in the llama-cpp-python sdist (the version installed here, fetched by pip) and
installs the binary beside the Python scripts (``sysconfig`` ``scripts`` folder). No prebuilt
binary is downloaded.

This module finds the binary and builds its command line; :class:`mathagent.agent.llama_server.LlamaServer`
runs it (``kind="llama-server"``). Which server a bundled model gets:

- ``kind`` / ``--server`` / ``$MATHAGENT_SERVER``: ``llama-cpp-python`` (the default: llama-server's
  gain at k = 4 on the default 1.5B model depends on the machine, x1.08 to x1.89 here, and equal
  answer quality is not shown; see docs/backends.md),
  ``llama-server``, or ``auto``: ``llama-server`` when its binary is found, else llama-cpp-python with
  a logged warning.
- the binary: ``$MATHAGENT_LLAMA_SERVER_BIN``, else ``llama-server`` in the Python scripts folder,
  else ``llama-server`` on ``PATH``.

Run as ``python -m mathagent.agent.native_server BINARY ARGS...`` (under ``orphan_guard``) it runs the
binary as its child and exits with it, so that the orphan guard can end the pair when mathagent dies.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

LLAMA_SERVER = "llama-server"
LLAMA_CPP_PYTHON = "llama-cpp-python"
KINDS = (LLAMA_SERVER, LLAMA_CPP_PYTHON)
KIND_ENV = "MATHAGENT_SERVER"
BIN_ENV = "MATHAGENT_LLAMA_SERVER_BIN"
DEFAULT_KIND = LLAMA_CPP_PYTHON
"""Today's server stays the default: llama-server's speed-up varies by machine and its quality is not shown equal."""
DEFAULT_PARALLEL = 4
"""Slots of ``llama-server``: the default ``--k 4`` of a problem decode together."""
CACHE_RAM_MIB = 1024
"""Host-memory prompt cache of ``llama-server`` (its default, 8 GiB, is too much for a shared machine)."""
INSTALL_HINT = "build it with: bash .ci/build_llama_server.sh (needs cmake and a C++ compiler)"


def find_binary() -> Path | None:
    """The ``llama-server`` executable: ``$MATHAGENT_LLAMA_SERVER_BIN``, the scripts folder, or ``PATH``."""
    env = os.environ.get(BIN_ENV)
    if env:
        p = Path(env).expanduser()
        return p if p.is_file() and os.access(p, os.X_OK) else None
    scripts = Path(sysconfig.get_path("scripts")) / LLAMA_SERVER
    if scripts.is_file() and os.access(scripts, os.X_OK):
        return scripts
    found = shutil.which(LLAMA_SERVER)
    return Path(found) if found else None


def check_kind(kind: str | None) -> str:
    """Normalize a server kind (``None`` → ``$MATHAGENT_SERVER``, else ``DEFAULT_KIND``); ``ValueError`` if unknown."""
    value = (kind if kind is not None else os.environ.get(KIND_ENV, "")).strip().lower() or DEFAULT_KIND
    aliases = {"llama_cpp_python": LLAMA_CPP_PYTHON, "python": LLAMA_CPP_PYTHON, "llama_server": LLAMA_SERVER}
    value = aliases.get(value, value)
    if value not in (*KINDS, "auto"):
        raise ValueError(f"unknown server kind {value!r}; use {', '.join(KINDS)} or auto")
    return value


def resolve_kind(kind: str | None) -> tuple[str, Path | None]:
    """The server kind to run and, for ``llama-server``, its binary.

    ``auto`` picks ``llama-server`` when installed and otherwise falls back to llama-cpp-python with
    a warning; an explicit ``llama-server`` that is not installed is a ``RuntimeError``.
    """
    value = check_kind(kind)
    if value == LLAMA_CPP_PYTHON:
        return value, None
    binary = find_binary()
    if binary is not None:
        return LLAMA_SERVER, binary
    where = (
        f"${BIN_ENV}={os.environ[BIN_ENV]} is not an executable file"
        if os.environ.get(BIN_ENV)
        else ("no llama-server binary in the Python scripts folder or on PATH")
    )
    if value == LLAMA_SERVER:
        raise RuntimeError(f"llama.cpp's llama-server is not installed ({where}); {INSTALL_HINT}")
    log.warning(
        "llama-server not found (%s): using llama-cpp-python's server, which serves one request at a "
        "time; %s",
        where,
        INSTALL_HINT,
    )
    return LLAMA_CPP_PYTHON, None


def command(
    binary: str | os.PathLike[str],
    model: str | os.PathLike[str],
    *,
    alias: str,
    host: str,
    port: int,
    n_ctx: int,
    n_threads: int,
    parallel: int = DEFAULT_PARALLEL,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """``llama-server``'s command line: ``parallel`` slots of ``n_ctx`` tokens each, loopback only.

    The KV cache holds ``parallel * n_ctx`` tokens, split evenly (``--no-kv-unified``), so every
    sample gets the same context window as on llama-cpp-python's server. The web UI is off. The
    default repeat penalty is llama-cpp-python's (1.1), so that both servers sample alike.
    """
    parallel = max(1, int(parallel))
    return [
        str(binary), "--model", str(model), "--alias", alias,
        "--host", host, "--port", str(port),
        "--ctx-size", str(n_ctx * parallel), "--parallel", str(parallel), "--no-kv-unified",
        "--cont-batching", "--threads", str(n_threads), "--threads-batch", str(n_threads),
        "--cache-ram", str(CACHE_RAM_MIB), "--no-webui",
        # llama-cpp-python's server applies a repeat penalty of 1.1 unless a request says otherwise;
        # llama-server's default is none. Same default, same outputs (greedy ones included).
        "--repeat-penalty", "1.1",
        *extra_args,
    ]  # fmt: skip


def main(argv: Sequence[str]) -> int:
    """Run ``argv`` as a child; forward SIGTERM/SIGINT to it and exit with its status."""
    if not argv:
        raise SystemExit("usage: python -m mathagent.agent.native_server BINARY [ARGS...]")
    child = subprocess.Popen(list(argv))

    def forward(sig: int, _frame: object) -> None:
        try:
            child.send_signal(sig)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = child.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
