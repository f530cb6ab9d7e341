"""``--config FILE``: values become defaults, flags win, bad keys and types are clear errors, run
headers map onto flags, and flags derived from a dataclass follow its fields."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import pytest
from mathagent.agent.cli_solve import build_parser as solve_parser
from mathagent.agent.configfile import (
    ConfigError,
    add_config_flag,
    add_dataclass_flags,
    check_dataclass_values,
    field_docs,
    header_settings,
    parse_args,
)
from mathagent.agent.flags import add_agent_flags
from mathagent.evals.cli_eval import build_parser as eval_parser
from mathagent.training.cli_generate import build_parser as generate_parser


def _write(path, text: str):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("c.toml", 'model = "smollm2-135m"\nk = 3\ntemperature = 0.5\nverify = false\nmax-rounds = 2\n'),
        ("c.yaml", "model: smollm2-135m\nk: 3\ntemperature: 0.5\nverify: false\nmax-rounds: 2\n"),
        ("c.json", '{"model": "smollm2-135m", "k": 3, "temperature": 0.5, "verify": false, "max_rounds": 2}'),
    ],
)
def test_each_format_fills_the_flags_and_the_command_line_wins(tmp_path, name, text):
    cfg = _write(tmp_path / name, text)
    args = parse_args(solve_parser(), ["--config", cfg, "what is 2+2?"])
    assert (args.model, args.k, args.temperature, args.verify, args.max_rounds) == (
        "smollm2-135m",
        3,
        0.5,
        False,
        2,
    )
    assert args.problem == "what is 2+2?"
    args = parse_args(solve_parser(), ["-k", "5", f"--config={cfg}", "--verify", "--temperature", "0"])
    assert (args.k, args.verify, args.temperature, args.model) == (5, True, 0.0, "smollm2-135m")


def test_unknown_keys_and_wrong_types_name_the_file_and_key(tmp_path, capsys):
    cases = {
        "max_round = 3\n": "unknown key 'max_round' for `mathagent eval` (did you mean 'max_rounds'",
        "k = 2.5\n": "key 'k': expected a whole number, got 2.5",
        "k = true\n": "key 'k': expected a whole number, got True",
        'temperature = "hot"\n': "key 'temperature': expected a number, got 'hot'",
        'format = "latex"\n': "key 'format': 'latex' is not one of markdown, mathcoder, tools",
        'verify = "yes"\n': "key 'verify': expected true or false, got 'yes'",
        'replay = "a.jsonl"\n': "key 'replay': expected a list, got 'a.jsonl'",
        'config = "other.toml"\n': "key 'config': a config file cannot name another config file",
        "request_timeout = -1\n": "key 'request_timeout':",
        "dataset = [1, 2]\n": "key 'dataset': expected a single value",
        "k = \n": "not valid TOML",
    }
    for text, message in cases.items():
        cfg = _write(tmp_path / "bad.toml", text)
        with pytest.raises(SystemExit) as e:
            parse_args(eval_parser(), ["--config", cfg])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert cfg in err and message in err, (text, err)
    with pytest.raises(SystemExit):
        parse_args(eval_parser(), ["--config", str(tmp_path / "missing.toml")])
    assert "cannot read it" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(eval_parser(), ["--config", _write(tmp_path / "c.ini", "k=1")])
    assert "unknown file type '.ini'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(eval_parser(), ["--config", _write(tmp_path / "l.yaml", "- 1\n- 2\n")])
    assert "must hold a mapping" in capsys.readouterr().err


def test_a_flag_added_to_the_table_works_in_a_file_with_no_further_edit(tmp_path):
    p = argparse.ArgumentParser(prog="demo")
    add_agent_flags(p, ("k", "seed"))
    p.add_argument("--brand-new-flag", type=int, default=1)  # e.g. added by another command later
    add_config_flag(p)
    args = parse_args(p, ["--config", _write(tmp_path / "c.yaml", "brand-new-flag: 7\nseed: 3\n")])
    assert (args.brand_new_flag, args.seed, args.k) == (7, 3, 1)


def test_required_flags_may_come_from_the_file(tmp_path):
    cfg = _write(tmp_path / "g.toml", 'problems = "gsm8k"\nout = "gen/x"\nk = 2\n')
    args = parse_args(generate_parser(), ["--config", cfg])
    assert (args.problems, args.out, args.k) == ("gsm8k", "gen/x", 2)
    with pytest.raises(SystemExit):  # without the file they are still required
        parse_args(generate_parser(), [])


def test_train_sft_reads_the_subcommand_config(tmp_path, capsys):
    from mathagent.training import cli_train

    cfg = _write(
        tmp_path / "sft.yaml", "data: d.jsonl\nmodel: smollm2-135m\nout: o\nlora: true\nlora_dropout: 0.1\n"
    )
    with pytest.raises(SystemExit) as e:  # parsing works; --help shows the file-given defaults
        cli_train.main(["sft", "--config", cfg, "--lr", "0.001", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--lora-dropout" in out and "--save-total-limit" in out  # fields without hand-written flags
    bad = _write(tmp_path / "bad.yaml", "data: d.jsonl\nlearning_rate: 0.1\n")
    with pytest.raises(SystemExit):
        cli_train.main(["sft", "--config", bad])
    assert "unknown key 'learning_rate' for `mathagent train sft`" in capsys.readouterr().err


def test_train_grpo_config_is_checked_against_its_dataclass(tmp_path, capsys):
    from mathagent.training import cli_train
    from mathagent.training.cli_grpo import config_from_args
    from mathagent.training.grpo import GRPORunConfig

    good = _write(tmp_path / "g.toml", 'data = "gsm8k"\nmodel = "smollm2-135m"\nout = "o"\nlr = 1e-5\n')
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd")
    from mathagent.training.cli_grpo import add_parser

    add_parser(sub)
    cfg = config_from_args(parser.parse_args(["grpo", "--config", good, "--max-steps", "3"]))
    assert isinstance(cfg, GRPORunConfig) and (cfg.lr, cfg.max_steps, cfg.model) == (1e-5, 3, "smollm2-135m")
    bad = _write(tmp_path / "b.yaml", "data: gsm8k\nmodel: m\nout: o\nnum_generation: 4\n")
    assert cli_train.main(["grpo", "--config", bad]) == 2
    assert "unknown key 'num_generation' (did you mean 'num_generations'?)" in capsys.readouterr().err


def test_header_settings_and_the_fields_that_are_not_settings(tmp_path):
    header = {
        "schema_version": 1,
        "cwd": str(tmp_path),
        "identity": {
            "config": {
                "dataset": "gsm8k",
                "k": 4,
                "temperature": 0.7,
                "limit": 10,
                "seed": 1,
                "verify": True,
                "weights": "1,0.3,0.1",
                "backend": "openai",
                "model": "m",
                "base_url": "http://h/v1",
                "format": "markdown",
                "max_rounds": None,
                "extra": {"shuffle": True, "script": None, "agent": {"max_rounds": 6, "cell_timeout": 5.0}},
            },
            "dataset": {"name": "gsm8k", "path": "/x/test.jsonl", "sha256": "abc"},
            "grading_dataset": "gsm8k",
        },
        "git_revision": "abc",
        "argv": ["--k", "4"],
    }
    s = header_settings(header)
    assert s["k"] == 4 and s["max_rounds"] is None and s["timeout"] == 5.0 and s["shuffle"] is True
    assert "git_revision" not in s and "argv" not in s and "sha256" not in s
    # a recorded settings block wins; relative paths are found through the run's working directory
    (tmp_path / "p.jsonl").write_text("")
    s = header_settings({**header, "settings": {"k": 2, "script": "p.jsonl", "dataset": "gsm8k"}})
    assert s == {"k": 2, "script": str(tmp_path / "p.jsonl"), "dataset": "gsm8k"}
    # a header for a command without some flags: only its own flags are taken (solve has no --dataset)
    cfg = _write(tmp_path / "header.json", json.dumps(header))
    args = parse_args(solve_parser(), ["--config", cfg, "2+2"])
    assert (args.k, args.model, args.timeout, args.base_url) == (4, "m", 5.0, "http://h/v1")


@dataclass(frozen=True)
class Demo:
    """A config."""

    data: str
    """Where the data is."""
    steps: int = 3
    """How many steps (``-1``: 100%)."""
    rate: float = 0.5
    fast: bool = False
    keep: bool = True
    cap: int | None = None


def test_flags_derived_from_a_dataclass():
    assert field_docs(Demo) == {"data": "Where the data is.", "steps": "How many steps (``-1``: 100%)."}
    p = argparse.ArgumentParser()
    assert add_dataclass_flags(p, Demo, exclude=("rate",)) == ["data", "steps", "fast", "keep", "cap"]
    args = p.parse_args(["--data", "d", "--steps", "4", "--fast", "--no-keep", "--cap", "9"])
    assert vars(args) == {"data": "d", "steps": 4, "fast": True, "keep": False, "cap": 9}
    assert "How many steps (`-1`: 100%)" in p.format_help()
    with pytest.raises(SystemExit):
        p.parse_args([])  # a field without a default is required
    check_dataclass_values(Demo, {"steps": 2, "rate": 1, "cap": None}, "f.toml")
    with pytest.raises(ConfigError, match="f.toml: key 'steps': expected int, got '2'"):
        check_dataclass_values(Demo, {"steps": "2"}, "f.toml")
    with pytest.raises(ConfigError, match="unknown key 'step' \\(did you mean 'steps'\\?\\)"):
        check_dataclass_values(Demo, {"step": 2}, "f.toml")
