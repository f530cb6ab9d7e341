#!/usr/bin/env bash
# Generate a few tokens with the bundled 0.5B model on each llama.cpp server kind installed here
# (llama-cpp-python; llama-server when built), started as mathagent starts them (LlamaServer): a
# build that dies on this CPU (e.g. a native build with AMX on a guest that lists AMX without running
# it) fails the install here with its signal, not the tests with connection errors.
set -euo pipefail
python3 - <<'PY'
import sys

import httpx
from mathagent.agent import native_server
from mathagent.agent.llama_server import LlamaServer

REBUILD = {
    "llama-cpp-python": "LLAMA_CPP_FORCE=1 bash .ci/build_llama_cpp.sh",
    "llama-server": "LLAMA_SERVER_FORCE=1 bash .ci/build_llama_server.sh",
}
kinds = ["llama-cpp-python"] + (["llama-server"] if native_server.find_binary() else [])
failed = False
for kind in kinds:
    server = LlamaServer("qwen2.5-coder-0.5b", kind=kind, n_ctx=256, n_threads=1, startup_timeout=120)
    try:
        server.start()
        body = {"model": server.alias, "prompt": "1 + 1 =", "max_tokens": 4, "temperature": 0}
        reply = httpx.post(f"{server.base_url}/completions", json=body, timeout=120)
        reply.raise_for_status()
        print(f"{kind} generates: {reply.json()['choices'][0]['text']!r}")
    except (RuntimeError, httpx.HTTPError) as e:  # start() says why it never got ready
        failed = True
        why = server.exit_reason(5.0) or f"{type(e).__name__}: {e}"
        print(f"{kind} does not generate on this machine: {why}\nrebuild it: {REBUILD[kind]}", file=sys.stderr)
    finally:
        server.stop()
sys.exit(1 if failed else 0)
PY
