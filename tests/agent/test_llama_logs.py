"""llama.cpp's native log lines go to the log file, never to the user's terminal."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("llama_cpp")

CHILD = """
from mathagent.agent.llama_server import load_vocab, log_dir
from mathagent.agent.models import model_path
vocab = load_vocab(model_path("smollm2-135m"))
print("tokens", len(vocab.tokenize(b"hello world", add_bos=False)))
print("log", log_dir() / "llama.log")
"""


@pytest.mark.model
def test_in_process_library_logs_go_to_the_log_file(tmp_path):
    # a child process: the library's log callback is process-wide, and the first load is what logs
    env = {**os.environ, "MATHAGENT_CACHE_DIR": str(tmp_path / "cache")}
    res = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=600, env=env, check=False
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "tokens 2" in res.stdout
    # llama-cpp-python's own handler printed this warning to stderr even with verbose=False
    assert "llama_" not in res.stderr and "n_ctx" not in res.stderr, res.stderr[-2000:]
    log = tmp_path / "cache" / "logs" / "llama.log"
    assert f"log {log}" in res.stdout
    assert "n_ctx_train" in log.read_text(errors="replace")


def test_log_files_live_under_the_cache_dir_and_rotate(monkeypatch, tmp_path):
    from mathagent.agent import llama_server as ls

    monkeypatch.setenv("MATHAGENT_CACHE_DIR", str(tmp_path))
    assert ls.log_dir() == tmp_path / "logs"
    f, path = ls.open_log("llama-server-x.log")
    f.write(b"a" * (ls.LOG_ROTATE_BYTES + 1))
    f.close()
    f, again = ls.open_log("llama-server-x.log")
    f.close()
    assert again == path and path.stat().st_size == 0
    assert (tmp_path / "logs" / "llama-server-x.log.1").stat().st_size == ls.LOG_ROTATE_BYTES + 1
