"""Requests in flight, trajectories and ready kernels: the derivation (a pure function, tables), the
flags of eval / generate / replay, and a real eval that holds the requested number of requests at a
fake server (asserted on the server's own counter, never on wall time)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest
from mathagent.evals import cli_eval, cli_replay
from mathagent.evals.limits import (
    INFLIGHT_PER_CORE,
    KERNEL_MB,
    LOCAL_INFLIGHT,
    MAX_INFLIGHT,
    MIN_POOL,
    POOL_PER_CORE,
    Machine,
    derive_limits,
    machine,
)

BENCH = Path(__file__).resolve().parents[2] / "bench" / "inflight_bench.py"


def _bench():
    spec = importlib.util.spec_from_file_location("mathagent_bench_inflight", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


BIG = Machine(cores=16, mem_available_mb=128_000)
SMALL = Machine(cores=2, mem_available_mb=8_000)  # this project's CI box, with others running
TINY = Machine(cores=2, mem_available_mb=1_000)


@pytest.mark.parametrize(
    ("m", "remote", "given", "expected"),
    [
        # a served model on a big host: capped at vLLM's default 256 in flight
        (BIG, True, {}, (MAX_INFLIGHT, 320, POOL_PER_CORE * 16)),
        # 2 cores, 8 GB: 64 by cores, but the kernel memory (4000 MB / 113 MB = 35) is less
        (SMALL, True, {}, (35, 35, 4)),
        (Machine(2, 64_000), True, {}, (INFLIGHT_PER_CORE * 2, 80, POOL_PER_CORE * 2)),
        # a model this process runs decodes one request at a time: the old 4, a fifth trajectory
        (BIG, False, {}, (LOCAL_INFLIGHT, 5, 5)),
        (TINY, True, {}, (4, 4, 4)),
        # given values are kept; the rest follow from them
        (BIG, True, {"max_inflight": 64}, (64, 80, 80)),
        (BIG, True, {"concurrency": 8}, (8, 8, 8)),
        (SMALL, True, {"max_inflight": 256, "pool_size": 3}, (256, 256, 3)),
        (BIG, False, {"max_inflight": 1, "concurrency": 1, "pool_size": 1}, (1, 1, 1)),
    ],
)
def test_derive_limits_table(m, remote, given, expected):
    lim = derive_limits(m, remote=remote, **given)
    assert (lim.max_inflight, lim.concurrency, lim.pool_size) == expected
    assert set(lim.derived) == {"max_inflight", "concurrency", "pool_size"} - set(given)
    assert lim.to_dict()["machine"] == {"cores": m.cores, "mem_available_mb": m.mem_available_mb}
    line = lim.describe()
    assert f"max-inflight {expected[0]}" in line and f"pool-size {expected[2]}" in line
    assert all(f"{k.replace('_', '-')} {v} (given)" in line for k, v in given.items())


def test_a_local_server_with_one_slot_gets_one_request_at_a_time():
    """llama-cpp-python's server works on one request and queues the rest; a queued request's timeout
    would tick in that queue, so the run keeps no more in flight than the server's slots."""
    lim = derive_limits(BIG, remote=False, server_slots=1)
    assert lim.max_inflight == 1 and "1 request(s) at a time" in lim.describe()
    assert derive_limits(BIG, remote=False, server_slots=1, concurrency=4).max_inflight == 1
    assert derive_limits(BIG, remote=False, server_slots=1, max_inflight=3).max_inflight == 3  # typed wins
    assert derive_limits(BIG, remote=True, server_slots=1).max_inflight > 1  # a served model: not this rule


def test_a_local_server_with_one_kv_state_gets_one_trajectory_at_a_time():
    """llama-cpp-python's server keeps one KV state: two trajectories taking turns on it make every call
    re-read its conversation (2.2x the wall time in bench/interleave_bench.py), so one at a time."""
    lim = derive_limits(BIG, remote=False, server_slots=1)
    assert (lim.max_inflight, lim.concurrency, lim.pool_size) == (1, 1, 1)
    assert "one KV state" in lim.describe()
    # given values win; a server with several slots (llama-server: a KV cache per slot) keeps the rule
    assert derive_limits(BIG, remote=False, server_slots=1, concurrency=3).concurrency == 3
    assert derive_limits(BIG, remote=False, server_slots=1, max_inflight=2).concurrency == 3
    assert derive_limits(BIG, remote=False, server_slots=4).concurrency == 5
    assert derive_limits(BIG, remote=True, server_slots=1).concurrency > 1


def test_the_kernel_budget_bounds_what_is_derived():
    for mem in (500, 2_000, 8_000, 30_000):
        lim = derive_limits(Machine(4, mem), remote=True)
        budget = max(1, mem // 2 // KERNEL_MB)
        assert lim.max_inflight <= budget and lim.concurrency <= max(budget, lim.max_inflight)
        assert lim.pool_size <= max(MIN_POOL, budget - lim.concurrency)


@pytest.mark.parametrize("name", ["max_inflight", "concurrency", "pool_size"])
def test_values_below_one_are_refused(name):
    with pytest.raises(ValueError, match=f"--{name.replace('_', '-')} must be at least 1"):
        derive_limits(BIG, remote=True, **{name: 0})


def test_this_machine_is_read():
    m = machine()
    assert m.cores >= 1 and m.mem_available_mb > 0


@pytest.mark.parametrize("flag", ["--max-inflight", "--pool-size", "--max-tokens", "--concurrency"])
def test_eval_refuses_bad_limits_before_running(flag, capsys):
    assert cli_eval.main(["--backend", "scripted", "--script", "x.jsonl", flag, "0"]) == 2
    assert f"{flag} must be a whole number >= 1, got 0" in capsys.readouterr().err


def test_replay_refuses_a_zero_pool(capsys):
    assert cli_replay.main(["x.jsonl", "--pool-size", "0"]) == 2
    assert "--pool-size must be at least 1" in capsys.readouterr().err
    args = cli_replay.build_parser().parse_args(["x.jsonl", "--max-inflight", "7"])
    assert args.concurrency == 7  # replay sends no model request: the same knob


@pytest.mark.kernel
@pytest.mark.server
def test_eval_holds_the_requested_number_of_requests_in_flight(tmp_path, capsys):
    """20 trajectories at --max-inflight 16: the fake server holds every request until 16 are held at
    once (a gate, so no timing is involved); it must see 16, never more. The model answers at once
    (no code), so the kernel pool only starts; bench/inflight_bench.py runs code on real kernels."""
    bench = _bench()
    problems = bench.write_problems(tmp_path / "p.jsonl", 20)
    with bench.CountingServer(completions=[bench.ANSWER_TURN], gate=16, model="fake") as srv:
        argv = ["--dataset", str(problems), "--backend", "openai", "--base-url", srv.base_url,
                "--model", "fake", "--max-inflight", "16", "--pool-size", "1", "--no-verify",
                "--max-rounds", "2", "--max-tokens", "200", "--continue-mode", "user",  # no capability probe
                "--run-dir", str(tmp_path / "run"), "--json"]  # fmt: skip
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert cli_eval.main(argv) == 0
    assert srv.max_in_flight == 16
    assert all(r["max_tokens"] == 200 for r in srv.requests)  # the per-call limit reaches the server
    summary = json.loads(out.getvalue())
    assert summary["n_samples"] == 20 and summary["overall"]["accuracy"] == 1.0
    header = json.loads((tmp_path / "run" / "header.json").read_text())
    assert header["limits"]["max_inflight"] == 16 and header["limits"]["concurrency"] == 20
    assert header["limits"]["pool_size"] == 1 and header["limits"]["derived"] == ["concurrency"]
    assert "limits on" in capsys.readouterr().err  # the run header line is printed


def test_max_code_calls_is_the_round_cap_everywhere():
    from mathagent.agent import cli_solve
    from mathagent.training import cli_generate

    assert cli_eval.build_parser().parse_args(["--max-code-calls", "3"]).max_rounds == 3
    gen = cli_generate.build_parser().parse_args(["--problems", "p", "--out", "o", "--max-code-calls", "2"])
    assert gen.max_rounds == 2
    assert cli_solve.build_parser().parse_args(["--max-code-calls", "5", "x"]).max_rounds == 5


@pytest.mark.parametrize(
    ("m", "remote", "given", "slots", "expected"),
    [
        # 256 in flight on 2 cores (load average 188 when it was run): above 32/core, and 256 kernels
        (Machine(2, 16_000), True, {"max_inflight": 256}, None, ["above the 32/core", "expect swapping"]),
        # a concurrency beyond the kernel memory, whatever the requests
        (SMALL, True, {"concurrency": 100}, None, ["100 trajectories hold 100 kernels"]),
        # a one-slot local server given 4 in flight: they queue with their timeouts ticking
        (BIG, False, {"max_inflight": 4}, 1, ["works on 1 request(s) at a time"]),
        # derived values and sensible given ones say nothing
        (SMALL, True, {}, None, []),
        (BIG, True, {"max_inflight": 64}, None, []),
        (BIG, False, {}, 1, []),
    ],
)
def test_given_values_beyond_the_machine_are_kept_but_warned(m, remote, given, slots, expected):
    lim = derive_limits(m, remote=remote, server_slots=slots, **given)
    assert all(getattr(lim, k) == v for k, v in given.items())  # the user decides
    assert len(lim.warnings) == len(expected)
    for want, got in zip(expected, lim.warnings, strict=True):
        assert want in got
    assert lim.to_dict()["warnings"] == list(lim.warnings)


@pytest.mark.kernel
def test_eval_prints_and_records_the_warning_for_a_concurrency_beyond_memory(tmp_path, capsys):
    """A real eval (scripted model, real kernel) given --concurrency far beyond the kernel memory runs as
    told, and says so on stderr and in the run header."""
    from mathagent.evals.datasets import load_problems

    p = load_problems("gsm8k", limit=1)[0]
    script = tmp_path / "script.jsonl"
    turn = f"```python\nprint({p.gold})\n```\n```output\n{p.gold}\n```\nThe answer is $\\boxed{{{p.gold}}}$."
    script.write_text(json.dumps({"problem_id": p.id, "turns": [turn]}) + "\n")
    run_dir = tmp_path / "run"
    argv = ["--dataset", "gsm8k", "--limit", "1", "--backend", "scripted", "--script", str(script),
            "--concurrency", "1000000", "--pool-size", "1", "--no-verify", "--run-dir", str(run_dir), "--json"]  # fmt: skip
    assert cli_eval.main(argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["overall"]["accuracy"] == 1.0
    assert "warning: 1000000 trajectories hold" in captured.err
    header = json.loads((run_dir / "header.json").read_text())
    assert header["limits"]["concurrency"] == 1_000_000
    [warning] = header["limits"]["warnings"]
    assert "1000000 trajectories hold 1000000 kernels" in warning
