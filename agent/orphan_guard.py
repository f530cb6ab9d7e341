"""Run a Python module as a child that exits when the process that started it dies.

``python -m mathagent.agent.orphan_guard PARENT_PID MODULE [ARGS...]`` starts a daemon thread that
polls the parent pid and ends the process when it is gone (re-parented), then runs ``MODULE`` as
``__main__``. Used for the llama.cpp server we start on demand: a ``kill -9`` of mathagent must not
leave a 1 GB model server running. (``PR_SET_PDEATHSIG`` is not used: it fires when the *thread* that
forked exits, and the server is often started from a short-lived warm-up thread.)
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import time


def _watch(parent: int, interval: float = 0.5) -> None:
    while True:
        if os.getppid() != parent:
            # Our group (start_new_session) holds only the server: take it down with us.
            try:
                os.killpg(os.getpgrp(), signal.SIGTERM)
            finally:
                os._exit(0)
        time.sleep(interval)


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit("usage: python -m mathagent.agent.orphan_guard PARENT_PID MODULE [ARGS...]")
    parent, module = int(sys.argv[1]), sys.argv[2]
    threading.Thread(target=_watch, args=(parent,), name="orphan-guard", daemon=True).start()
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
