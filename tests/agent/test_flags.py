"""The shared agent flags: one definition, per-command defaults kept, help texts plain and present."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
from mathagent.agent import cli_solve
from mathagent.agent.flags import FLAGS, add_agent_flags, plain
from mathagent.agent.repl import app
from mathagent.evals import cli_eval
from mathagent.training import cli_generate


def test_solve_and_the_repl_parse_the_same_flags():
    argv = ["--vote", "majority", "--pool-size", "3", "-k", "4", "--rounds", "2", "-t", "0.5"]
    args = cli_solve.build_parser().parse_args(argv)
    assert (args.vote, args.pool_size, args.k, args.max_rounds, args.temperature) == (
        "majority",
        3,
        4,
        2,
        0.5,
    )
    s = app.settings_from_args(args)
    assert (s.vote, s.k, s.rounds, s.temperature) == ("majority", 4, 2, 0.5)
    assert app.build_parser is cli_solve.build_parser


def test_each_command_keeps_its_defaults(monkeypatch):
    for var in ("MATHAGENT_MODEL", "MATHAGENT_BACKEND", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    solve = cli_solve.build_parser().parse_args([])
    # verify: None until the model and k are known (modes.default_verify)
    assert (solve.seed, solve.max_rounds, solve.max_tokens, solve.timeout, solve.verify) == (
        None,
        6,
        1024,
        10.0,
        None,
    )
    assert solve.model is None and solve.temperature is None and solve.k == 1
    ev = cli_eval.build_parser().parse_args([])
    # concurrency, requests in flight and ready kernels: derived at run time (mathagent.evals.limits)
    assert (ev.seed, ev.max_rounds, ev.model, ev.verify, ev.concurrency, ev.limit) == (
        0,
        None,
        "",
        None,
        None,
        None,
    )
    assert (ev.max_tokens, ev.max_inflight, ev.pool_size) == (1024, None, None)
    gen = cli_generate.build_parser().parse_args(["--problems", "gsm8k", "--out", "x"])
    assert (gen.seed, gen.verify, gen.max_tokens, gen.max_trace_tokens, gen.k) == (0, False, 1024, 4096, 1)
    assert (gen.max_inflight, gen.pool_size, gen.allow_test) == (None, None, False)
    monkeypatch.setenv("MATHAGENT_MODEL", "m1")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    ev = cli_eval.build_parser().parse_args(["--no-verify"])
    assert (ev.model, ev.base_url, ev.verify) == ("m1", "http://127.0.0.1:9/v1", False)


def test_bad_values_are_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        cli_eval.build_parser().parse_args(["--format", "latex"])
    assert "invalid choice" in capsys.readouterr().err


def test_overrides_must_name_added_flags():
    p = argparse.ArgumentParser()
    with pytest.raises(ValueError, match="seed"):
        add_agent_flags(p, ["k"], defaults={"seed": 1})
    add_agent_flags(p, ["k", "seed"], defaults={"seed": 7}, helps={"k": "how many"})
    assert p.parse_args([]).seed == 7


def test_plain_turns_rst_literals_into_backticks():
    assert plain("``mathagent replay FILE``: x ``y``") == "`mathagent replay FILE`: x `y`"


@pytest.mark.parametrize(
    "parser",
    [cli_solve.build_parser(), cli_eval.build_parser(), cli_generate.build_parser()],
    ids=["solve", "eval", "generate"],
)
def test_every_visible_flag_has_help(parser):
    missing = [a.option_strings for a in parser._actions if a.option_strings and a.help is None]
    assert not missing


@pytest.mark.parametrize("command", ["solve", "eval", "generate", "replay", "report", "sandbox"])
def test_help_output_shows_no_rst_double_backticks(command):
    out = subprocess.run(
        [sys.executable, "-m", "mathagent.agent.cli", *command.split(), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "``" not in out.stdout


def test_the_table_names_every_flag_once():
    spellings = [n for f in FLAGS.values() for n in f.names]
    assert len(spellings) == len(set(spellings))
