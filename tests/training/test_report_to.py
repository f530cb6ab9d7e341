"""``--report-to tensorboard`` works offline: the event file lands in OUT/logs and holds the training loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mathagent.training.cli_train import main as train_main


def test_report_to_values(tmp_path):
    from mathagent.training.sft import report_to

    assert report_to("none", tmp_path) == []
    assert report_to("tensorboard,wandb", tmp_path) == ["tensorboard", "wandb"]
    with pytest.raises(ValueError, match="unknown comet"):
        report_to("comet", tmp_path)


@pytest.mark.model
def test_sft_logs_to_tensorboard_offline(tmp_path, smol_dir, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = [{"text": f"<|user|><|text|>What is {a} + 1?<|endofblock|><|endofmessage|><|assistant|>"
                     f"<|text|>\\boxed{{{a + 1}}}<|endofblock|><|endofmessage|>"} for a in range(4)]  # fmt: skip
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    assert train_main(["sft", "--data", str(data), "--model", "smollm2-135m", "--out", str(out),
                       "--max-steps", "2", "--batch-size", "2", "--max-length", "48", "--logging-steps", "1",
                       "--save-steps", "100", "--report-to", "tensorboard"]) == 0  # fmt: skip
    events = list(Path(out / "logs").rglob("events.out.tfevents.*"))
    assert events, list(out.rglob("*"))
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]
