"""``--push-to-hub`` and ``--model owner/name``, against a fake Hugging Face Hub on loopback.

A trained model folder (a tiny random Llama with SmolLM2's tokenizer, so uploads stay small) is pushed
with :func:`mathagent.training.publish.push_to_hub`, downloaded into a fresh ``HF_HOME`` with
``snapshot_download``, and then resolved *offline* as ``--model owner/name`` from that cache. The slow
tests run ``mathagent train sft`` and ``train grpo`` with ``--push-to-hub`` end to end.

Every call that talks to the fake hub runs in a child process: ``huggingface_hub`` reads
``HF_ENDPOINT`` once at import, and ``.ci/run`` sets ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``,
which are stripped from the child's environment (as in tests/evals/test_hub.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_model_hub import FakeModelHub
from mathagent.agent.manifest import ModelManifest
from mathagent.training import publish

pytestmark = [pytest.mark.server]

GSM8K_TRAIN = Path(__file__).resolve().parents[3] / "shared" / "data" / "datasets" / "gsm8k_train.jsonl"


@pytest.fixture()
def fake_hub():
    hub = FakeModelHub()
    yield hub
    hub.stop()


def child_env(tmp: Path, endpoint: str | None, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "MATHAGENT_CACHE"))
    }
    env.update(
        HF_HOME=str(tmp / "hf_home"),
        HF_TOKEN="hf_fake_token_for_loopback",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_XET="1",
        **extra,
    )
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    return env


def run_py(code: str, env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _model_folder(tmp: Path, tiny: Path) -> Path:
    """A finished training output: model, tokenizer, mathagent.json, card, train_result, and the things
    that must not be uploaded (checkpoints, logs)."""
    import shutil

    out = tmp / "run"
    shutil.copytree(tiny, out)
    manifest = ModelManifest("markdown", ("```output",), base_model="acme/base", training_format="grpo")
    manifest.write(out)
    publish.write_train_result(out, {"lr": 1e-6}, {"steps": 3})
    publish.write_card(out, manifest, {"lr": 1e-6, "data": "gsm8k_train.jsonl"}, {"steps": 3, "seconds": 1.5})
    (out / "checkpoints" / "checkpoint-3").mkdir(parents=True)
    (out / "checkpoints" / "checkpoint-3" / "optimizer.pt").write_bytes(b"x" * 100)
    (out / "steps.jsonl").write_text('{"step": 1}\n')
    return out


PUSH = """
import sys
from mathagent.training import publish
print(publish.push_to_hub(sys.argv[1], sys.argv[2], private=True))
"""

DOWNLOAD = """
import sys
from huggingface_hub import snapshot_download
print(snapshot_download(sys.argv[1]))
"""

RESOLVE = """
import json, sys
from mathagent.agent.manifest import ModelManifest
from mathagent.training.convert import resolve_model_dir
from transformers import AutoModelForCausalLM
d = resolve_model_dir(sys.argv[1])
m = AutoModelForCausalLM.from_pretrained(d)
print(json.dumps({"dir": str(d), "format": ModelManifest.read(d).format, "params": m.num_parameters()}))
"""


def test_push_uploads_the_model_folder_and_the_hub_id_resolves_offline(tmp_path, fake_hub, tiny_model):
    out = _model_folder(tmp_path, tiny_model)
    env = child_env(tmp_path, fake_hub.url)
    proc = run_py(PUSH, env, str(out), "acme/grpo-tiny")
    assert proc.returncode == 0, (proc.stderr[-3000:], fake_hub.requests)
    assert "/acme/grpo-tiny/commit/" in proc.stdout
    repo = fake_hub.repos["acme/grpo-tiny"]
    assert repo["private"] is True
    files = set(repo["files"])
    assert {"config.json", "model.safetensors", "tokenizer.json", "mathagent.json", "README.md",
            "train_result.json"} <= files  # fmt: skip
    assert not any(f.startswith("checkpoints/") or f == "steps.jsonl" for f in files), files
    assert repo["files"]["model.safetensors"] == (out / "model.safetensors").read_bytes()
    card = repo["files"]["README.md"].decode()
    assert card.startswith("---\n") and "base_model: acme/base" in card and "- grpo" in card
    assert "mathagent solve --model" in card

    # a second push to the same repo: exist_ok, a second commit
    assert run_py(PUSH, env, str(out), "acme/grpo-tiny").returncode == 0
    assert len(fake_hub.commits) == 2

    # download it into a fresh HF cache, then resolve `--model acme/grpo-tiny` with the hub off
    dl = run_py(DOWNLOAD, env, "acme/grpo-tiny")
    assert dl.returncode == 0, dl.stderr[-3000:]
    n_requests = len(fake_hub.requests)
    offline = child_env(tmp_path, None, HF_HUB_OFFLINE="1")
    res = run_py(RESOLVE, offline, "acme/grpo-tiny")
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["dir"] == dl.stdout.strip().splitlines()[-1]
    assert got["dir"].startswith(str(tmp_path / "hf_home"))
    assert got["format"] == "markdown" and got["params"] > 0
    assert len(fake_hub.requests) == n_requests  # resolved from the cache: nothing asked of the hub

    missing = run_py(RESOLVE, offline, "acme/not-pushed")
    assert missing.returncode != 0 and "local Hugging Face cache" in missing.stderr


def test_a_failed_push_is_a_clear_error_and_keeps_the_folder(tmp_path, fake_hub, tiny_model):
    out = _model_folder(tmp_path, tiny_model)
    before = sorted(p.name for p in out.iterdir())
    fake_hub.fail_commits = True
    proc = run_py(PUSH, child_env(tmp_path, fake_hub.url), str(out), "acme/broken")
    assert proc.returncode != 0
    assert "PushError: push to acme/broken failed" in proc.stderr and str(out) in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == before


def test_push_is_checked_before_training(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="owner/name"):
        publish.check_push("not-a-repo-id")
    with pytest.raises(ValueError, match="owner/name"):
        publish.check_push("a/b/c")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE"):
        publish.check_push("acme/model")
    publish.check_push(None)
    # the CLIs stop at once (exit 2) without loading a model or data
    from mathagent.training.cli_train import main

    rc = main(["sft", "--data", str(tmp_path / "none.jsonl"), "--model", "x", "--out", str(tmp_path / "o"),
               "--push-to-hub", "acme/model"])  # fmt: skip
    assert rc == 2 and not (tmp_path / "o").exists()
    rc = main(["grpo", "--data", str(tmp_path / "none.jsonl"), "--model", "x", "--out", str(tmp_path / "g"),
               "--push-to-hub", "acme/model"])  # fmt: skip
    assert rc == 2 and not (tmp_path / "g").exists()


def _rows(tmp: Path) -> Path:
    from conftest import make_trace
    from mathagent.training.export import trace_to_row

    path = tmp / "rows.jsonl"
    rows = [trace_to_row(make_trace(a, b), "mathcoder", None) for a, b in [(2, 3), (4, 5)]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _train(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mathagent.training.cli_train", *args],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def _eos_ids(folder: Path) -> list[int]:
    eos = json.loads((folder / "generation_config.json").read_text())["eos_token_id"]
    return eos if isinstance(eos, list) else [eos]


@pytest.mark.slow
@pytest.mark.model
def test_train_sft_pushes_to_the_hub(tmp_path, fake_hub, tiny_model):
    out = tmp_path / "sft"
    env = child_env(tmp_path, fake_hub.url)
    proc = _train(["sft", "--data", str(_rows(tmp_path)), "--model", str(tiny_model), "--format", "mathcoder",
                   "--out", str(out), "--max-steps", "1", "--batch-size", "2", "--threads", "1",
                   "--push-to-hub", "acme/sft-tiny"], env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = fake_hub.repos["acme/sft-tiny"]["files"]
    assert json.loads(files["mathagent.json"])["format"] == "mathcoder"
    assert files["model.safetensors"] == (out / "model.safetensors").read_bytes()
    assert "- sft" in files["README.md"].decode() and (out / "README.md").is_file()
    from transformers import AutoTokenizer

    end_message = AutoTokenizer.from_pretrained(out).convert_tokens_to_ids("<|endofmessage|>")
    assert end_message in _eos_ids(out)


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.kernel
def test_train_grpo_mathcoder_pushes_with_the_sft_eos_handling(tmp_path, fake_hub, tiny_model):
    if not GSM8K_TRAIN.is_file():
        pytest.skip("GSM8K train file not found (../shared/data/datasets)")
    data = tmp_path / "gsm8k_train.jsonl"
    data.write_text("".join(GSM8K_TRAIN.read_text(encoding="utf-8").splitlines(keepends=True)[:1]))
    out = tmp_path / "grpo"
    env = child_env(tmp_path, fake_hub.url)
    proc = _train(["grpo", "--data", str(data), "--model", str(tiny_model), "--format", "mathcoder",
                   "--out", str(out), "--max-steps", "1", "--num-generations", "2", "--batch-size", "2",
                   "--max-completion-length", "8", "--pool-size", "2", "--torch-threads", "1",
                   "--push-to-hub", "acme/grpo-tiny"], env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = fake_hub.repos["acme/grpo-tiny"]["files"]
    manifest = json.loads(files["mathagent.json"])
    assert manifest["format"] == "mathcoder" and manifest["training_format"] == "grpo"
    assert manifest["stop"] == ["<|endofblock|>", "<|endofmessage|>"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    assert tok.padding_side == "right"
    assert tok.convert_tokens_to_ids("<|endofmessage|>") in _eos_ids(out)
    assert json.loads(files["generation_config.json"]) == json.loads(
        (out / "generation_config.json").read_text()
    )
    assert not any(f.startswith("checkpoints/") or f.startswith("rollouts") for f in files)
