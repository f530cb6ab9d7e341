"""``mathagent train`` flag handling (no model): help texts, warmup ratio, GRPO config mapping."""

from __future__ import annotations

import argparse
import json

import pytest
from mathagent.training.cli_train import main


@pytest.mark.parametrize("cmd", ["sft", "grpo", "export"])
def test_help_does_not_crash(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: mathagent train" in out
    if cmd == "sft":
        assert "{% generation %}" in out  # the % was the crash (TypeError: must be real number, not dict)


def test_warmup_ratio_is_a_ratio():
    from mathagent.training.sft import warmup_steps

    assert warmup_steps(0.0) == 0.0 and warmup_steps(0.1) == 0.1  # below 1: transformers reads a share
    for bad in (1.0, 2.0, -0.1):  # 1 or more would be read as a step count
        with pytest.raises(ValueError, match="warmup-ratio"):
            warmup_steps(bad)


def _grpo_args(argv):
    from mathagent.training import cli_grpo

    p = argparse.ArgumentParser()
    cli_grpo.add_parser(p.add_subparsers(dest="cmd"))
    return cli_grpo.config_from_args(p.parse_args(["grpo", *argv]))


def test_grpo_flags_and_config_file(tmp_path):
    cfg_file = tmp_path / "g.json"
    cfg_file.write_text(json.dumps({"data": "d.jsonl", "model": "m", "out": "o", "beta": 0.04, "lr": 3e-6,
                                    "reward_weights": {"format": 0.2}}))  # fmt: skip
    cfg = _grpo_args(["--config", str(cfg_file), "--lr", "1e-5", "--reward-fabricated", "0.5",
                      "--grpo-arg", "scale_rewards=\"none\"", "--grpo-arg", "num_iterations=2"])  # fmt: skip
    assert cfg.lr == 1e-5 and cfg.beta == 0.04  # the flag wins, the file fills the rest
    assert cfg.reward_weights.as_list() == [1.0, 0.2, 0.5, 0.0]
    assert cfg.extra == {"scale_rewards": "none", "num_iterations": 2}
    assert cfg.rollout_config("gsm8k").grading == "gsm8k" and cfg.format == "markdown"
    with pytest.raises(ValueError, match="KEY=VALUE"):
        _grpo_args(["--data", "d", "--model", "m", "--out", "o", "--grpo-arg", "oops"])


def test_grading_policy_guessed_from_the_data_name():
    from mathagent.training.grpo import guess_grading

    assert guess_grading("/x/gsm8k_train.jsonl") == "gsm8k"
    assert guess_grading("math500") == "math" and guess_grading("svamp") == "gsm8k"
    assert guess_grading("toy.jsonl") == "math"


def test_hub_model_id_resolves_offline_from_the_local_cache(tmp_path, monkeypatch, smol_dir):
    import huggingface_hub.constants
    from mathagent.training.convert import resolve_model_dir

    snap = tmp_path / "hub" / "models--acme--tiny-math" / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    for f in smol_dir.iterdir():
        (snap / f.name).symlink_to(f)
    (tmp_path / "hub" / "models--acme--tiny-math" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny-math" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model_dir("acme/tiny-math") == snap
    with pytest.raises(FileNotFoundError, match="local Hugging Face cache"):
        resolve_model_dir("acme/not-there")  # not cached: a clear error, no download
