"""Closing the loop on CPU: train SmolLM2-135M on a few exported traces, reload it, run the agent on it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from mathagent.training import export
from mathagent.training.cli_train import main as train_main

# training on 2 busy cores: a step took ~7 s alone and ~100 s beside other heavy jobs (the default 900 s
# timeout then ended the fixture after 9 steps); the margin is for such a machine, not a target
pytestmark = [pytest.mark.model, pytest.mark.timeout(3600)]


def _sft(
    data: Path, out: Path, fmt: str, steps: int, *extra: str, lr: str = "1e-3", max_len: int = 256
) -> int:
    return train_main(
        ["sft", "--data", str(data), "--model", "smollm2-135m", "--format", fmt, "--out", str(out),
         "--max-steps", str(steps), "--batch-size", "4", "--lr", lr, "--max-length", str(max_len),
         "--logging-steps", "1", "--seed", "0", *extra]
    )  # fmt: skip


MAX_STEPS = 60
"""The bound on training the MathCoder model; the format probe stops it as soon as the format is learned."""


@pytest.fixture(scope="module")
def mathcoder_run(tmp_path_factory, traces, smol_dir):
    """A MathCoder-format model trained on repeated tiny traces (raw traces as input) until it writes the format.

    The MathCoder markers are new tokens, learned from scratch: 6 steps at lr 1e-3 left the model writing
    plain text; a fixed 30 steps at 2e-3 was enough on one run and not on another. So the run is made
    repeatable (seed, two torch threads) and sufficient: a :class:`FormatProbe` checks every 5 steps
    whether the model, prompted exactly as the agent prompts it, opens and closes a code block that
    compiles on held-out problems (not the ones trained, not the one the agent test asks), and stops
    training when it does, within ``MAX_STEPS``.
    """
    from mathagent.training.probe import FormatProbe
    from mathagent.training.sft import SFTRunConfig, train

    root = tmp_path_factory.mktemp("sft")
    data = root / "traces.jsonl"
    data.write_text("\n".join(t.to_json() for t in traces * 3), encoding="utf-8")
    out = root / "model"
    probe = FormatProbe(["What is 6 + 7?", "What is 14 + 3?"], every=5, start=10)
    cfg = SFTRunConfig(
        data=str(data), model="smollm2-135m", out=str(out), format="mathcoder", max_steps=MAX_STEPS,
        batch_size=4, lr=2e-3, max_length=256, logging_steps=1, save_steps=100, seed=0, threads=2,
    )  # fmt: skip
    result = train(cfg, callbacks=[probe])
    assert probe.learned_at is not None, f"format not learned within {MAX_STEPS} steps: {probe.history}"
    return out, probe, result


@pytest.fixture(scope="module")
def mathcoder_model(mathcoder_run) -> Path:
    return mathcoder_run[0]


def test_saved_model_carries_tokenizer_tokens_and_manifest(mathcoder_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    manifest = json.loads((mathcoder_model / "mathagent.json").read_text())
    assert manifest["format"] == "mathcoder" and manifest["schema_version"] == 1
    assert manifest["stop"] == ["<|endofblock|>", "<|endofmessage|>"]
    tok = AutoTokenizer.from_pretrained(mathcoder_model)
    assert len(tok("<|code|>", add_special_tokens=False)["input_ids"]) == 1
    lm = AutoModelForCausalLM.from_pretrained(mathcoder_model)
    assert lm.get_input_embeddings().weight.shape[0] == len(tok)


def test_training_stopped_when_the_format_was_learned(mathcoder_run):
    out, probe, result = mathcoder_run
    saved = json.loads((out / "train_result.json").read_text())
    assert saved["result"]["steps"] == result.steps == probe.learned_at <= MAX_STEPS
    assert saved["config"]["threads"] == 2 and saved["config"]["seed"] == 0
    # every check before the last one found at least one probe problem without a closed code block
    assert [passed for _, passed in probe.history][-1] == 2
    assert all(passed < 2 for _, passed in probe.history[:-1])


@pytest.mark.kernel
def test_agent_runs_trained_mathcoder_model(mathcoder_model):
    """The trained model writes well-formed code blocks and the loop executes them in a real sandbox."""
    from mathagent.agent.backends.transformers_backend import TransformersBackend
    from mathagent.agent.config import AgentConfig
    from mathagent.agent.loop import solve
    from mathagent.agent.trace import StepKind
    from mathagent.sandbox import KernelPool

    backend = TransformersBackend(str(mathcoder_model))
    assert backend.default_format == "mathcoder"
    pool = KernelPool(size=1)
    try:
        trace = asyncio.run(
            solve("What is 9 + 4?", backend, pool, AgentConfig(max_rounds=2, max_tokens=64, verify=False))
        )
    finally:
        pool.close()
    kinds = [s.kind for s in trace.steps]
    assert trace.format == "mathcoder"
    assert StepKind.CODE in kinds, trace.to_dict()
    i = kinds.index(StepKind.CODE)
    assert kinds[i + 1] is StepKind.EXECUTION
    execution = trace.steps[i + 1].execution
    assert execution is not None and execution.ok, trace.steps[i + 1]
    assert "<|" not in trace.steps[i].content  # the block was closed, not run on


def test_resume_continues_from_checkpoint(tmp_path, traces, smol_dir, capsys):
    data = tmp_path / "chat.jsonl"
    export.export_traces(traces[:4], data, "chat")
    out = tmp_path / "run"
    common = ("--save-steps", "1", "--batch-size", "2")
    # the chat rows carry the agent's system prompt and the tool schema: 256 tokens hold only the prompt
    assert _sft(data, tmp_path / "too-short", "chat", 1, *common) == 2  # a clear error, not a TRL crash
    assert "nothing left to train on" in capsys.readouterr().err
    assert _sft(data, out, "chat", 2, *common, max_len=768) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("checkpoint-")) == [
        "checkpoint-1",
        "checkpoint-2",
    ]
    assert _sft(data, out, "chat", 3, *common, "--resume", max_len=768) == 0
    state = json.loads((out / "checkpoints" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    # the resumed run logged only step 3: steps 1-2 came from the checkpoint
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3]
    result = json.loads((out / "train_result.json").read_text())["result"]
    assert result["steps"] == 3
    assert json.loads((out / "mathagent.json").read_text())["format"] == "tools"


def test_converted_models_live_under_the_shared_cache_dir(monkeypatch, tmp_path):
    from mathagent.training.convert import default_cache

    monkeypatch.setenv("MATHAGENT_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache() == tmp_path / "c" / "hf"
    monkeypatch.delenv("MATHAGENT_CACHE_DIR")
    monkeypatch.setenv("MATHAGENT_CACHE", str(tmp_path / "old"))  # the earlier name still works
    assert default_cache() == tmp_path / "old" / "hf"
