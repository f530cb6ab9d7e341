"""``accelerate launch`` with 2 CPU processes (DDP over gloo) for SFT and GRPO: both ranks step, only the
main process writes the model and its card, and the result loads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.model]

LAUNCH = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
          "--dynamo_backend", "no"]  # fmt: skip


def _launch(args: list[str], tmp: Path) -> list[dict]:
    exe = shutil.which("accelerate")
    if exe is None:
        pytest.skip("accelerate's launcher is not installed")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [exe, "launch", *LAUNCH, "-m", "mathagent.training.cli_train", *args, "--json"],
        capture_output=True, text=True, timeout=3000, env=env, cwd=tmp,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"')]


def test_sft_two_cpu_processes(tmp_path, smol_dir):
    from transformers import AutoModelForCausalLM

    rows = []
    for a, b in [(2, 3), (4, 5), (7, 8), (10, 12)]:
        rows.append({"text": f"<|user|><|text|>What is {a} + {b}?<|endofblock|><|endofmessage|><|assistant|>"
                             f"<|code|>print({a} + {b})<|endofblock|><|execution|>{a + b}<|endofblock|>"
                             f"<|text|>\\boxed{{{a + b}}}<|endofblock|><|endofmessage|>"})  # fmt: skip
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "sft"
    results = _launch(["sft", "--data", str(data), "--model", "smollm2-135m", "--format", "mathcoder",
                       "--out", str(out), "--max-steps", "2", "--batch-size", "1", "--max-length", "64",
                       "--save-steps", "100"], tmp_path)  # fmt: skip
    assert len(results) == 2 and all(r["steps"] == 2 for r in results)  # both ranks ran both steps
    state = json.loads((out / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["epoch"] == 1.0  # 2 steps x batch 1 x 2 ranks = the 4 rows: the data was sharded
    assert json.loads((out / "mathagent.json").read_text())["format"] == "mathcoder"
    AutoModelForCausalLM.from_pretrained(out)


@pytest.mark.kernel
def test_grpo_two_cpu_processes(tmp_path, smol_dir):
    from transformers import AutoModelForCausalLM

    src = Path("/work/shared/data/datasets/gsm8k_train.jsonl")
    here = Path(__file__).resolve().parents[3] / "shared" / "data" / "datasets" / "gsm8k_train.jsonl"
    src = here if here.is_file() else src
    if not src.is_file():
        pytest.skip("GSM8K train file not found")
    data = tmp_path / "gsm8k_train.jsonl"
    data.write_text("".join(src.read_text().splitlines(keepends=True)[:2]))
    out = tmp_path / "grpo"
    results = _launch(["grpo", "--data", str(data), "--model", "smollm2-135m", "--out", str(out),
                       "--max-steps", "1", "--num-generations", "2", "--batch-size", "2",
                       "--max-completion-length", "16", "--pool-size", "1", "--save-steps", "100",
                       "--torch-threads", "1"], tmp_path)  # fmt: skip
    assert sorted(r["process_index"] for r in results) == [0, 1]
    assert all(r["steps"] == 1 for r in results)
    assert [r["saved"] for r in sorted(results, key=lambda r: r["process_index"])] == [True, False]
    assert (out / "rollouts.rank0.jsonl").is_file() and (out / "rollouts.rank1.jsonl").is_file()
    assert json.loads((out / "mathagent.json").read_text())["training_format"] == "grpo"
    AutoModelForCausalLM.from_pretrained(out)
