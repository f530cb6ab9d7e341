"""``--model owner/name`` resolved offline from the local Hugging Face cache: ``mathagent solve`` (and the
REPL and ``eval``, which build their backend through the same ``make_backend``; its choices are tested in
tests/agent/test_backend_factory.py), ``train sft`` and ``train grpo``.

A model folder is put on a fake hub on loopback (``fake_model_hub.py``), downloaded with
``snapshot_download`` into a fresh ``HF_HOME`` (so the cache is the one ``hf download`` writes), and
then run by hub id while ``HF_ENDPOINT`` still points at the fake hub: the test counts the requests
that reach it, so "nothing is downloaded" is observed, not assumed. Children run with the fresh
``HF_HOME`` because ``huggingface_hub`` reads it at import.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fake_model_hub import FakeModelHub
from mathagent.agent.manifest import ModelManifest
from test_push_to_hub import DOWNLOAD, child_env, run_py

pytestmark = [pytest.mark.server]


@pytest.fixture()
def fake_hub():
    hub = FakeModelHub()
    yield hub
    hub.stop()


def seed_repo(hub: FakeModelHub, repo_id: str, folder: Path) -> None:
    """Put ``folder`` on the fake hub as repo ``repo_id`` (as if someone had pushed it there)."""
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    sha = hashlib.sha1(json.dumps(sorted(files)).encode()).hexdigest()
    hub.repos[repo_id] = {"sha": sha, "files": files, "private": False}


def download(hub: FakeModelHub, tmp: Path, repo_id: str) -> Path:
    dl = run_py(DOWNLOAD, child_env(tmp, hub.url), repo_id)
    assert dl.returncode == 0, dl.stderr[-3000:]
    snapshot = Path(dl.stdout.strip().splitlines()[-1])
    assert snapshot.is_relative_to(tmp / "hf_home") and (snapshot / "config.json").is_file()
    return snapshot


def mathagent(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mathagent.agent.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_solve_runs_a_cached_hub_id_without_asking_the_hub(tmp_path, fake_hub, tiny_model):
    """A tiny random model: the point is the resolution and the agent run, not the answer."""
    folder = tmp_path / "md"
    shutil.copytree(tiny_model, folder)
    ModelManifest("markdown", ("```output",), training_format="grpo").write(folder)
    seed_repo(fake_hub, "acme/tiny-md", folder)
    download(fake_hub, tmp_path, "acme/tiny-md")
    n = len(fake_hub.requests)
    env = child_env(tmp_path, fake_hub.url)
    proc = mathagent(["solve", "--model", "acme/tiny-md", "What is 2 + 3?", "--max-tokens", "6",
                      "--max-rounds", "1", "--no-verify", "--json"], env)  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: no answer (random weights), not an error
    trace = json.loads(proc.stdout.strip().splitlines()[-1])
    assert trace["model"] == "acme/tiny-md" and trace["format"] == "markdown"
    assert len(fake_hub.requests) == n


def test_a_hub_id_not_in_the_cache_is_a_clear_error_and_nothing_is_downloaded(
    tmp_path, fake_hub, tiny_model, monkeypatch, capsys
):
    seed_repo(fake_hub, "acme/on-the-hub-only", tiny_model)  # downloadable, but must not be downloaded
    proc = mathagent(["solve", "--model", "acme/on-the-hub-only", "What is 2 + 3?", "--json"],
                     child_env(tmp_path, fake_hub.url))  # fmt: skip
    assert proc.returncode == 2
    assert "not in the local Hugging Face cache" in proc.stderr and "nothing is downloaded" in proc.stderr
    assert str(tmp_path / "hf_home") in proc.stderr  # names the cache it looked in
    assert fake_hub.requests == []
    # train sft / grpo: the same lookup (in this process, the cache pointed at an empty folder)
    import huggingface_hub.constants
    from mathagent.training.cli_train import main as train_main

    cache = tmp_path / "empty_cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    rows = {"grpo": tmp_path / "rows.jsonl", "sft": tmp_path / "sft.jsonl"}
    rows["grpo"].write_text(json.dumps({"question": "What is 2 + 3?", "answer": "5"}) + "\n")
    # sft checks its data (and refuses test questions) before it looks for the model: a valid row
    text = "<|user|><|text|>What is 2 + 3?<|endofblock|><|endofmessage|><|assistant|><|text|>5<|endofblock|><|endofmessage|>"
    rows["sft"].write_text(json.dumps({"text": text}) + "\n")
    for kind in ("sft", "grpo"):
        rc = train_main([kind, "--data", str(rows[kind]), "--model", "acme/on-the-hub-only", "--out", str(tmp_path / kind),
                         "--pool-size" if kind == "grpo" else "--seed", "1"])  # fmt: skip
        err = capsys.readouterr().err
        assert rc == 2 and "not in the local Hugging Face cache" in err and str(cache) in err, (kind, err)
    assert list(cache.iterdir()) == []


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.kernel
def test_solve_runs_smollm2_by_hub_id_through_the_agent_with_a_real_kernel(tmp_path, fake_hub, smol_dir):
    """The real SmolLM2-135M-Instruct, published as ``acme/smollm2-135m``, downloaded into a fresh cache and
    run by hub id: greedy decoding with the program-of-thought prompt writes a code block, which runs in
    a real sandboxed kernel and prints 65."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path / "smol"
    AutoModelForCausalLM.from_pretrained(smol_dir, dtype=torch.bfloat16).save_pretrained(folder)
    AutoTokenizer.from_pretrained(smol_dir).save_pretrained(folder)
    seed_repo(fake_hub, "acme/smollm2-135m", folder)
    download(fake_hub, tmp_path, "acme/smollm2-135m")
    n = len(fake_hub.requests)
    env = child_env(tmp_path, fake_hub.url)
    proc = mathagent(["solve", "--model", "acme/smollm2-135m", PROBLEM, "--system-prompt", "pot",
                      "--temperature", "0", "--max-tokens", "48", "--max-rounds", "1", "--no-verify",
                      "--json"], env, timeout=900)  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    trace = json.loads(proc.stdout.strip().splitlines()[-1])
    assert trace["model"] == "acme/smollm2-135m"
    kinds = [s["kind"] for s in trace["steps"]]
    assert "code" in kinds and "execution" in kinds, trace["steps"]
    execution = next(s for s in trace["steps"] if s["kind"] == "execution")
    assert "65" in execution["content"], execution  # the kernel really ran the model's code: 17 + 8 * 6
    assert len(fake_hub.requests) == n


PROBLEM = "Write a Python code block that prints the value of 17 + 8 * 6."
