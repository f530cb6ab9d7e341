"""``mathagent train grpo`` end to end on CPU: SmolLM2-135M, GSM8K train problems, real rollouts, real kernels.

The run is tiny (2 steps, groups of 2, short completions) so that it fits the default suite; what is
checked is the plumbing: rollouts ran in the sandbox, TRL stepped, the reward and its parts were
logged per step, every logged rollout's mask covers its tokens, the checkpoint resumes, and the saved
model carries ``mathagent.json`` and solves through the agent like an SFT model.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from mathagent.training.cli_train import main as train_main

pytestmark = [pytest.mark.model, pytest.mark.kernel, pytest.mark.slow]

GSM8K_TRAIN = Path(__file__).resolve().parents[3] / "shared" / "data" / "datasets" / "gsm8k_train.jsonl"


def _data(tmp: Path, n: int = 2) -> Path:
    src = GSM8K_TRAIN if GSM8K_TRAIN.is_file() else Path("/work/shared/data/datasets/gsm8k_train.jsonl")
    if not src.is_file():
        pytest.skip("GSM8K train file not found (../shared/data/datasets)")
    out = tmp / "gsm8k_train.jsonl"
    out.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:n]), encoding="utf-8")
    return out


def _grpo(data: Path, out: Path, steps: int, *extra: str) -> int:
    return train_main(
        ["grpo", "--data", str(data), "--model", "smollm2-135m", "--out", str(out),
         "--max-steps", str(steps), "--num-generations", "2", "--batch-size", "2",
         "--max-completion-length", "24", "--lr", "1e-5", "--save-steps", "1", "--pool-size", "2", "--torch-threads", "1",
         "--seed", "0", *extra]
    )  # fmt: skip


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory, smol_dir):
    root = tmp_path_factory.mktemp("grpo")
    out = root / "run"
    assert _grpo(_data(root), out, 2) == 0
    return root, out


def test_grpo_run_logs_rewards_and_rollouts(grpo_run, smol_tokenizer):
    _root, out = grpo_run
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2]
    for s in steps:
        for key in ("reward", "rewards/correct/mean", "rewards/format/mean", "rewards/fabricated/mean",
                    "rewards/exec_error/mean", "generation_s", "execution_s", "train_s"):  # fmt: skip
            assert key in s, (key, s)
        assert 0.0 <= s["rewards/correct/mean"] <= 1.0 and s["rollouts"] == 2
    rollouts = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert len(rollouts) == 4
    for r in rollouts:
        assert r["policy_tokens"] >= 1 and r["policy_tokens"] + r["execution_tokens"] <= 24
    result = json.loads((out / "train_result.json").read_text())
    assert result["result"]["steps"] == 2 and result["config"]["num_generations"] == 2


def test_grpo_checkpoint_resumes(grpo_run):
    root, out = grpo_run
    assert _grpo(root / "gsm8k_train.jsonl", out, 3, "--resume") == 0
    state = json.loads((out / "checkpoints" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3]  # the resumed run added step 3 only


def test_grpo_model_solves_through_the_agent(grpo_run):
    from mathagent.agent.backends import make_backend
    from mathagent.agent.config import AgentConfig
    from mathagent.agent.loop import solve
    from mathagent.sandbox import KernelPool

    _root, out = grpo_run
    manifest = json.loads((out / "mathagent.json").read_text())
    assert manifest["format"] == "markdown" and manifest["stop"] == ["```output"]
    assert manifest["training_format"] == "grpo"
    backend = make_backend(str(out))  # what `mathagent solve --model OUT` builds
    assert type(backend).__name__ == "TransformersBackend" and backend.default_format == "markdown"
    pool = KernelPool(size=1, acquire_timeout_s=600)
    try:
        trace = asyncio.run(
            solve("What is 9 + 4?", backend, pool, AgentConfig(max_rounds=1, max_tokens=16, verify=False))
        )
    finally:
        pool.close()
    assert trace.format == "markdown" and trace.error is None or "max_tokens" in (trace.error or ""), trace
    assert trace.steps, trace.to_dict()  # the trained model answered through the loop


def test_bad_flags_are_clear_errors(tmp_path, capsys):
    assert train_main(["grpo", "--model", "smollm2-135m", "--out", str(tmp_path / "x")]) == 2
    assert "missing --data" in capsys.readouterr().err
    data = _data(tmp_path)
    assert train_main(["grpo", "--data", str(data), "--model", "smollm2-135m", "--out", str(tmp_path / "y"),
                       "--num-generations", "1"]) == 2  # fmt: skip
    assert "at least 2 generations" in capsys.readouterr().err
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"data": str(data), "model": "m", "out": "o", "nonsense": 1}))
    assert train_main(["grpo", "--config", str(cfg)]) == 2
    assert "unknown key 'nonsense'" in capsys.readouterr().err
