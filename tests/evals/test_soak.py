"""The soak of bench/soak.py, short: a real `mathagent eval` subprocess SIGKILLed and resumed, then
starved of disk on a real tmpfs and resumed with space; every problem must be accounted for once,
and the summary must equal a clean run's."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def load_soak():
    spec = importlib.util.spec_from_file_location("mathagent_bench_soak", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def check(r: dict, n: int) -> None:
    assert r["accounted"] == n and r["duplicates"] == 0 and r["lost"] == 0, r
    assert r["corrupt_lines"] == 0 and r["temporary_files"] == [] and not r["moved_aside"]
    d = r["disk_full"]
    if os.geteuid() == 0 and not any("cannot mount" in x for x in r["notes"]):
        assert d is not None
        assert d["rc"] == 1 and d["message"] and d["resume_hint"] and not d["traceback"], r["invocations"]
        assert d["temporary_files"] == [] and d["saved_before"] <= d["saved_after"] < n


@pytest.mark.kernel
def test_short_soak_kill_and_full_disk_lose_and_duplicate_nothing(tmp_path):
    """100 problems, scripted backend, one SIGKILL, one disk-full episode. The scripted model answers
    without a code cell, so no sample depends on how fast kernels start on a busy machine (the pool
    still starts); the slow variant and bench/soak.py run code in real kernels."""
    soak = load_soak()
    cfg = soak.SoakConfig(
        problems=100, kills=1, backend="scripted", concurrency=4, latency=0.2, work=tmp_path, code=False
    )
    r = soak.soak(cfg)
    check(r, 100)
    assert r["kills"] == 1, r["invocations"]  # the kill landed before the run finished
    assert r["failed_samples"] == 0 and r["summary_equal"], r["summary_differs"]
    assert r["accuracy"] == pytest.approx(0.91)  # the fake model is wrong on 9 of these 100 on purpose
    # where the time went: every saved sample is in one invocation's timeline, and the parts add up
    sp = r["split"]
    assert sp["clean"]["saved"] == sp["faulted"]["saved"] == 100, sp
    for inv in r["invocations"]:
        t = inv["timeline"]
        assert t["setup_s"] is not None and 0 < t["setup_s"] <= t["start_s"], t
        assert t["start_s"] + t["work_s"] + t["stop_s"] == pytest.approx(inv["wall_s"], abs=0.05), (t, inv)
    assert "where the time went" in soak.report(r)
    assert r["faults_only"] is None  # no fault server, no run of the faults alone


@pytest.mark.slow
@pytest.mark.kernel
@pytest.mark.server
def test_soak_through_a_faulty_server_with_real_kernels(tmp_path):
    """200 problems through the fault-injecting loopback server (10% of requests: 500, 429 with
    Retry-After, hang (5 s here), truncated JSON, reset), code in real kernels, one kill, one full disk.
    Accounting must hold; the summary is compared only when no sample failed after the retries."""
    soak = load_soak()
    cfg = soak.SoakConfig(
        problems=200, kills=1, backend="server", fault_rate=0.1, concurrency=8, latency=0.05, hang_s=5.0,
        retry_after=1.0, work=tmp_path,
    )  # fmt: skip
    r = soak.soak(cfg)
    check(r, 200)
    assert sum(r["faults"].values()) > 0
    if r["failed_samples"] == 0:
        assert r["summary_equal"], r["summary_differs"]
    # the faults alone: one more invocation through the same server, no kill, its own folder
    fo = r["faults_only"]
    assert fo["rc"] == 0 and fo["accounted"] == 200 and fo["duplicates"] == 0, fo
    assert sum(fo["faults"].values()) > 0 and fo["requests"] > 200, fo
    assert fo["ratio"] == pytest.approx(fo["wall_s"] / r["clean_wall_s"], abs=0.01)
    if fo["failed_samples"] == 0:
        assert fo["summary_equal"], fo
    assert "faults only (one invocation" in soak.report(r)
