#!/usr/bin/env bash
# Generate a few tokens with the bundled 0.5B model through llama-cpp-python and through llama-server,
# each in a process of its own: a llama.cpp build that dies on this CPU (e.g. a native build with AMX
# on a guest that lists AMX without running it) is reported here with its signal.
set -euo pipefail
gguf=$(python3 -c "from mathagent.agent.models import model_path; print(model_path('qwen2.5-coder-0.5b'))")
rc=0
python3 - "$gguf" <<'PY' || rc=$?
import sys
from llama_cpp import Llama

llm = Llama(sys.argv[1], n_ctx=256, n_threads=1, verbose=False)
out = llm("1 + 1 =", max_tokens=4, temperature=0.0)
print("llama-cpp-python generates:", repr(out["choices"][0]["text"]))
PY
if [ "$rc" != 0 ]; then
    echo "llama-cpp-python died (exit $rc; 139 = SIGSEGV, 132 = SIGILL) generating with $gguf:" >&2
    echo "rebuild it for this CPU: LLAMA_CPP_FORCE=1 bash .ci/build_llama_cpp.sh" >&2
    exit 1
fi
if command -v llama-server >/dev/null 2>&1; then
    python3 - "$gguf" <<'PY'
import json, socket, subprocess, sys, time, urllib.request

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
cmd = ["llama-server", "-m", sys.argv[1], "--host", "127.0.0.1", "--port", str(port), "-c", "256", "-t", "1"]
proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
try:
    deadline, text = time.monotonic() + 120, None
    while text is None and time.monotonic() < deadline and proc.poll() is None:
        try:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/completion",
                data=json.dumps({"prompt": "1 + 1 =", "n_predict": 4, "temperature": 0}).encode(),
                headers={"Content-Type": "application/json"},
            )
            text = json.load(urllib.request.urlopen(req, timeout=60))["content"]
        except OSError:
            time.sleep(0.5)
    if text is None:
        proc.terminate()
        err = proc.communicate(timeout=10)[1]
        sys.exit(f"llama-server died or never answered (exit {proc.returncode}; -11 = SIGSEGV, -4 = SIGILL); "
                 f"rebuild: LLAMA_SERVER_FORCE=1 bash .ci/build_llama_server.sh\n{err[-2000:]}")
    print("llama-server generates:", repr(text))
finally:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=10)
PY
fi
