"""Soak: a long eval through a faulty server, killed and starved of disk, must still add up.

    python bench/soak.py                                  # 1000 problems, 5% faults, 3 kills, 1 disk full
    python bench/soak.py --problems 200 --kills 1 --no-disk-full
    python bench/soak.py --eval-arg=--request-timeout --eval-arg=20     # flags passed on to the eval

What it does (issue 17 §4), with the real ``mathagent eval`` in a subprocess and real sandboxed kernels:

1. writes ``N`` problems ("What is a plus b?"; the fake model gets one in ten wrong on purpose, so the
   accuracy is not trivially 100%) and starts a loopback fake model server (``bench/fault_server.py``):
   it answers each problem with a Python cell, then with the boxed result of the cell;
2. a clean run: no faults, one invocation;
3. the faulted run, in a folder on a small real tmpfs (root only; otherwise a plain folder and no
   disk-full episode): the server fails ``--fault-rate`` of the requests (500, 429 with Retry-After,
   hang, truncated JSON, reset); the eval is SIGKILLed ``--kills`` times at random moments (after a
   random number of saved samples, plus a random delay), resumed each time; then the tmpfs is shrunk to
   just above what it holds, the eval must stop with its disk-full message and leave no temporary
   file; then the tmpfs grows and the eval resumes to the end;
4. the faults alone (server backend; ``--no-faults-only`` skips it): one more run through the same
   faulty server, one invocation, no kill and no disk episode: what the fault mix itself costs
   against the clean run (issue 17 §2), apart from what restarting after kills costs;
5. prints: problems accounted for, duplicate records, records lost, samples failed after the
   backend's retries, whether the summary equals the clean run's (the metrics, not times or counts of
   invocations), the wall-time ratio faulted/clean (all invocations of the faulted run, restarts
   included), the faults-only ratio, and the harness's peak RSS (VmHWM of the eval process; kernels are separate processes);
6. and where the time went (:func:`time_split`): per invocation, start (launch to first saved sample;
   its setup part: launch to the run folder opened), work and stop; how long the hung requests were
   waited on (the server's view), the backoff before retries (the eval's WARNING log lines, by error),
   and the requests re-sent for samples lost to the kills.

``--backend scripted`` replaces the server by the scripted backend (no HTTP faults; kills and the disk
episode still happen): the short version the default test suite runs (tests/evals/test_soak.py).
Figures only; nothing is asserted here.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mathagent.evals.summary import result_differences

BENCH = Path(__file__).resolve().parent
SUBJECTS = ("arithmetic", "sums", "counting")
QUESTION = re.compile(r"What is (\d+) plus (\d+)\?")


@dataclass
class SoakConfig:
    problems: int = 1000
    kills: int = 3
    disk_full: bool = True
    backend: str = "server"
    """``server`` (the fault-injecting loopback server) or ``scripted``."""
    fault_rate: float = 0.05
    concurrency: int = 16
    latency: float = 0.25
    """Seconds the fake model takes per call."""
    retry_after: float = 2.0
    hang_s: float = 600.0
    seed: int = 0
    work: Path | None = None
    eval_args: list[str] = field(default_factory=list)
    timeout_s: float = 3600.0
    """Longest one eval invocation may take."""
    faults_only: bool = True
    """Also run the faults alone (one invocation through the faulty server, no kill, no disk episode)."""
    code: bool = True
    """The fake model writes a Python cell (run in a real kernel) before answering; False: it answers
    at once, so no sample waits for a kernel (the default-suite version: run-folder logic only)."""


def model_answer(a: int, b: int) -> int:
    """What the fake model computes: right, except for one problem in ten."""
    return a + b + (1 if (a * 31 + b) % 10 == 3 else 0)


def code_turn(a: int, b: int) -> str:
    extra = " + 1" if model_answer(a, b) != a + b else ""
    return f"I add the two numbers.\n```python\nprint({a} + {b}{extra})\n```\n"


def answer_turn(a: int, b: int) -> str:
    return f"The sum is $\\boxed{{{model_answer(a, b)}}}$."


def write_problems(path: Path, n: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    pairs = [(rng.randint(1, 10**6), rng.randint(1, 10**6)) for _ in range(n)]
    with open(path, "w") as f:
        for i, (a, b) in enumerate(pairs):
            row = {
                "id": str(i),
                "question": f"What is {a} plus {b}?",
                "answer": str(a + b),
                "level": str(1 + i % 5),
                "subject": SUBJECTS[i % len(SUBJECTS)],
            }
            f.write(json.dumps(row) + "\n")
    return pairs


def write_script(path: Path, pairs: list[tuple[int, int]], latency: float, code: bool = True) -> None:
    with open(path, "w") as f:
        for i, (a, b) in enumerate(pairs):
            cell = code_turn(a, b) + f"```output\n{model_answer(a, b)}\n```\n" if code else ""
            turns = [cell + answer_turn(a, b)]
            f.write(json.dumps({"problem_id": str(i), "turns": turns, "latency_s": latency}) + "\n")


def responder(body: dict[str, Any], code: bool = True) -> str:
    """The fake model: a code turn first, the boxed result once the prompt holds the cell's output."""
    msgs = body.get("messages")
    text = json.dumps(msgs) if msgs else str(body.get("prompt", ""))
    m = QUESTION.search(text)
    if m is None:
        return "I cannot read the problem."
    a, b = int(m.group(1)), int(m.group(2))
    tail = msgs[-1].get("content") or "" if msgs else text[-300:]
    return answer_turn(a, b) if "```output" in tail or not code else code_turn(a, b)


# -- one eval invocation -------------------------------------------------------------------------
def _hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except OSError:
        return 0


def invoke(
    cmd: list[str],
    env: dict[str, str],
    samples: Path,
    *,
    kill_at: int | None,
    rng: random.Random,
    timeout_s: float,
) -> dict[str, Any]:
    """Run one eval; SIGKILL its process group once ``samples`` holds ``kill_at`` lines (plus a random
    delay of up to 0.2 s). Returns rc, wall, peak RSS, whether it was killed, its output, and where its
    time went (:func:`timeline`; the retries its log reports: :func:`retries_of`)."""
    before = _count_lines(samples)
    marks: list[tuple[float, int]] = []
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, start_new_session=True)
        try:
            peak, killed, killed_at = _watch(proc, samples, kill_at, rng, timeout_s, t0, cmd, marks)
        finally:  # never leave an eval (and its kernels) behind, whatever stops the soak
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        wall = time.perf_counter() - t0
        if killed:  # the rest of the group (kernels started by the eval) goes too
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out.seek(0)
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
        return {
            "rc": proc.returncode,
            "wall_s": wall,
            "peak_rss_kb": peak,
            "killed": killed,
            "killed_at_records": killed_at if killed else None,
            "stdout": out.read().decode("utf-8", "replace"),
            "stderr": stderr[-4000:],
            "timeline": timeline(marks, before, _count_lines(samples), wall),
            "retries": retries_of(stderr),
        }


def timeline(marks: list[tuple[float, int]], before: int, after: int, wall: float) -> dict[str, Any]:
    """Where one invocation's wall time went: ``start_s`` (launch to its first saved sample), split into
    ``setup_s`` (launch to the run folder's header written: interpreter, imports, flags, data set,
    backend, run folder) and the rest (kernel pool, the first sample itself); ``work_s`` (first to
    last saved sample), ``stop_s`` (last saved sample to exit: the last samples' tail, closing kernels;
    for a killed one, the kill's delay), and ``saved`` samples."""
    new = [t for t, n in marks if n > before]
    opened = [t for t, n in marks if n < 0]
    setup = round(opened[0], 2) if opened else None
    if not new:
        return {"saved": after - before, "setup_s": setup, "start_s": wall, "work_s": 0.0, "stop_s": 0.0}
    return {
        "saved": after - before,
        "setup_s": setup,
        "start_s": round(new[0], 2),
        "work_s": round(new[-1] - new[0], 2),
        "stop_s": round(wall - new[-1], 2),
    }


RETRY_LINE = re.compile(r"failed \(try \d+/\d+\): (.*?); retrying in ([\d.]+) s")


def retries_of(stderr: str) -> dict[str, list[float]]:
    """The retries an eval logged (WARNING lines of :mod:`mathagent.agent.backends.retry`), by the
    head of their error (``HTTP 429``, ``StuckRequest``, ...): the backoff of each."""
    out: dict[str, list[float]] = {}
    for m in RETRY_LINE.finditer(stderr):
        out.setdefault(m.group(1).split(":")[0].strip(), []).append(float(m.group(2)))
    return out


def _watch(
    proc: subprocess.Popen,
    samples: Path,
    kill_at: int | None,
    rng: random.Random,
    timeout_s: float,
    t0: float,
    cmd: list[str],
    marks: list[tuple[float, int]],
) -> tuple[int, bool, int]:
    """Poll ``proc`` until it exits: peak RSS, and the SIGKILL once ``samples`` holds ``kill_at`` lines.
    Appends ``(seconds since t0, lines)`` to ``marks`` whenever ``samples`` grew, and ``(seconds, -1)``
    once when the run folder's header was (re)written (the eval opened the run: its setup is done)."""
    peak = killed_at = 0
    killed = False
    last_size = -1
    header = samples.parent / "header.json"
    header_was = _mtime(header)
    while proc.poll() is None:
        peak = max(peak, _hwm_kb(proc.pid))
        if header_was is not None or not any(n < 0 for _, n in marks):
            if _mtime(header) != header_was:
                marks.append((time.perf_counter() - t0, -1))
                header_was = None
        size = samples.stat().st_size if samples.exists() else 0
        if size != last_size and not killed:
            last_size = size
            lines = _count_lines(samples)
            marks.append((time.perf_counter() - t0, lines))
            if kill_at is not None and lines >= kill_at:
                time.sleep(rng.uniform(0, 0.2))
                killed_at = _count_lines(samples)
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
        if time.perf_counter() - t0 > timeout_s:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise TimeoutError(f"eval ran over {timeout_s:.0f} s: {' '.join(cmd)}")
        time.sleep(0.05)
    return peak, killed, killed_at


# -- the small disk --------------------------------------------------------------------------------
class Tmpfs:
    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
        )
        if res.returncode != 0:
            raise OSError(res.stderr.strip() or "mount failed")

    def used(self) -> int:
        st = os.statvfs(self.path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def resize(self, size_bytes: int) -> None:
        size_bytes = -(-size_bytes // 4096) * 4096
        subprocess.run(["mount", "-o", f"remount,size={size_bytes}", str(self.path)], check=True)

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


# -- the soak --------------------------------------------------------------------------------------
def analyse(run_dir: Path, n: int) -> dict[str, Any]:
    raw = (run_dir / "samples.jsonl").read_bytes()
    keys, corrupt, failed = [], 0, 0
    for line in raw.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            corrupt += 1
            continue
        keys.append((str(rec["problem_id"]), int(rec.get("sample_index", 0))))
        failed += rec.get("status") == "failed"
    ids = {k[0] for k in keys}
    expected = {str(i) for i in range(n)}
    return {
        "accounted": len(ids & expected),
        "duplicates": len(keys) - len(set(keys)),
        "lost": len(expected - ids),
        "corrupt_lines": corrupt,
        "failed_samples": failed,
        "moved_aside": (run_dir / "samples.bad.jsonl").exists(),
        "temporary_files": sorted(p.name for p in run_dir.rglob("*.tmp")),
    }


def summaries_equal(a: dict[str, Any], b: dict[str, Any]) -> tuple[bool, list[str]]:
    """Whether the faulted run's summary has the clean run's results (times and invocation counts may
    differ): :data:`mathagent.evals.summary.RESULT_FIELDS`."""
    diff = result_differences(a, b)
    return not diff, diff


def soak(cfg: SoakConfig) -> dict[str, Any]:
    work = Path(cfg.work or tempfile.mkdtemp(prefix="mathagent-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(cfg.seed)
    problems = work / "problems.jsonl"
    pairs = write_problems(problems, cfg.problems, cfg.seed)
    env = {**os.environ, "MATHAGENT_LOG_LEVEL": "WARNING"}  # the retries are logged as warnings
    server = None
    if cfg.backend == "server":
        sys.path.insert(0, str(BENCH))
        from fault_server import FaultServer

        server = FaultServer(
            responder=lambda body: responder(body, cfg.code),
            latency=cfg.latency,
            rate=0.0,
            retry_after=cfg.retry_after,
            hang_s=cfg.hang_s,
            seed=cfg.seed,
        ).start()
        backend_args = ["--base-url", server.base_url, "--model", "fake", "--backend", "openai"]
        backend_args += ["--continue-mode", "user"]  # measure request faults, not the capability probe
    elif cfg.backend == "scripted":
        script = work / "script.jsonl"
        write_script(script, pairs, cfg.latency, cfg.code)
        backend_args = ["--backend", "scripted", "--script", str(script)]
    else:
        raise ValueError(f"backend must be server or scripted, not {cfg.backend!r}")

    def command(run_dir: Path) -> list[str]:
        return [
            sys.executable, "-m", "mathagent.agent.cli", "eval", "--dataset", str(problems),
            "--run-dir", str(run_dir), "--concurrency", str(cfg.concurrency), "--no-verify", "--json",
            *backend_args, *cfg.eval_args,
        ]  # fmt: skip

    disk: Tmpfs | None = None
    notes: list[str] = []
    try:
        # the clean run
        clean_dir = work / "clean"
        clean = invoke(
            command(clean_dir),
            env,
            clean_dir / "samples.jsonl",
            kill_at=None,
            rng=rng,
            timeout_s=cfg.timeout_s,
        )
        if clean["rc"] != 0:
            raise RuntimeError(f"clean run failed (rc {clean['rc']}): {clean['stderr'][-2000:]}")
        clean_summary = json.loads((clean_dir / "summary.json").read_text())
        requests_clean = server.hits if server else 0

        # the faulted run
        if cfg.disk_full:
            try:
                disk = Tmpfs(work / "disk", "1g")
            except OSError as e:
                notes.append(f"disk-full episode skipped: cannot mount a tmpfs ({e})")
        run_dir = (disk.path if disk else work) / "faulted"
        if server is not None:
            server.rate = cfg.fault_rate
        total = cfg.problems
        lo, hi = max(1, int(0.05 * total)), max(2, int(0.5 * total))
        kill_points = sorted(rng.sample(range(lo, hi), min(cfg.kills, hi - lo)))
        invocations: list[dict[str, Any]] = []
        for point in kill_points:
            inv = invoke(
                command(run_dir),
                env,
                run_dir / "samples.jsonl",
                kill_at=point,
                rng=rng,
                timeout_s=cfg.timeout_s,
            )
            inv["phase"] = "kill"
            invocations.append(inv)
            if not inv["killed"]:
                notes.append(f"a kill planned at {point} samples missed: the run finished first")
        disk_episode: dict[str, Any] | None = None
        if disk is not None:
            done = _count_lines(run_dir / "samples.jsonl")
            per = max(1, (run_dir / "samples.jsonl").stat().st_size // max(done, 1))
            # room for the header's rewrite and about a third of the samples still to run
            disk.resize(disk.used() + 16 * 1024 + per * max(1, (total - done) // 3))
            inv = invoke(
                command(run_dir),
                env,
                run_dir / "samples.jsonl",
                kill_at=None,
                rng=rng,
                timeout_s=cfg.timeout_s,
            )
            inv["phase"] = "disk-full"
            invocations.append(inv)
            disk_episode = {
                "rc": inv["rc"],
                "message": "no space left on the device" in inv["stderr"],
                "resume_hint": "to resume: mathagent eval" in inv["stderr"],
                "traceback": "Traceback" in inv["stderr"],
                "temporary_files": sorted(p.name for p in run_dir.rglob("*.tmp")),
                "saved_before": done,
                "saved_after": _count_lines(run_dir / "samples.jsonl"),
            }
            disk.resize(1 << 30)
        final = invoke(
            command(run_dir), env, run_dir / "samples.jsonl", kill_at=None, rng=rng, timeout_s=cfg.timeout_s
        )
        final["phase"] = "final"
        invocations.append(final)
        if final["rc"] != 0:
            notes.append(f"the final invocation exited {final['rc']}: {final['stderr'][-1500:]}")
            summary = {}
        else:
            summary = json.loads((run_dir / "summary.json").read_text())
        result = analyse(run_dir, cfg.problems)
        if disk is not None:  # keep the faulted run for a look once the tmpfs is gone
            shutil.copytree(run_dir, work / "faulted", dirs_exist_ok=True)
        at_end = server_counts(server, requests_clean)
        faults_only = None
        if cfg.faults_only and server is not None:
            faults_only = run_faults_only(cfg, command(work / "faults"), env, work / "faults", server, rng)
            faults_only["ratio"] = round(faults_only["wall_s"] / clean["wall_s"], 3)
            faults_only["summary_equal"] = summaries_equal(faults_only.pop("summary"), clean_summary)[0]
        equal, differs = summaries_equal(summary, clean_summary)
        fault_wall = sum(i["wall_s"] for i in invocations)
        result.update(
            problems=cfg.problems,
            backend=cfg.backend,
            summary_equal=equal,
            summary_differs=differs,
            clean_wall_s=round(clean["wall_s"], 2),
            faulted_wall_s=round(fault_wall, 2),
            wall_ratio=round(fault_wall / clean["wall_s"], 3),
            invocations=[
                {k: v for k, v in i.items() if k != "stdout"}
                | {"wall_s": round(i["wall_s"], 2), "stderr": i["stderr"][-1500:]}
                for i in invocations
            ],
            kills=sum(1 for i in invocations if i["killed"]),
            disk_full=disk_episode,
            peak_rss_mb=round(max(i["peak_rss_kb"] for i in invocations) / 1024, 1),
            clean_peak_rss_mb=round(clean["peak_rss_kb"] / 1024, 1),
            accuracy=(summary.get("overall") or {}).get("accuracy"),
            failed_reasons=summary.get("failed_reasons"),
            clean_failed_reasons=clean_summary.get("failed_reasons"),
            faults=at_end["faults"],
            requests={"clean": requests_clean, "faulted": at_end["requests"]},
            faults_only=faults_only,
            counts=summary.get("counts"),
            split=time_split(clean, invocations, cfg, at_end, requests_clean),
            notes=notes,
            config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        )
        return result
    finally:
        if server is not None:
            server.stop()
        if disk is not None:
            disk.close()


def server_counts(server: Any, before: int) -> dict[str, Any]:
    """The fault server's counters since the clean run: requests, faults injected by kind, and how long
    each hung request was waited on (nothing without a server)."""
    if server is None:
        return {"requests": 0, "faults": {}, "hang_waits": [], "server": False}
    return {
        "requests": server.hits - before,
        "faults": dict(server.faults),
        "hang_waits": list(getattr(server, "hang_waits", []) or []),
        "server": True,
    }


def run_faults_only(
    cfg: SoakConfig, cmd: list[str], env: dict[str, str], run_dir: Path, server: Any, rng: random.Random
) -> dict[str, Any]:
    """One invocation through the faulty server into a fresh folder: no kill, no disk episode."""
    hits, faults, hangs = server.hits, dict(server.faults), len(server.hang_waits)
    inv = invoke(cmd, env, run_dir / "samples.jsonl", kill_at=None, rng=rng, timeout_s=cfg.timeout_s)
    summary = json.loads((run_dir / "summary.json").read_text()) if inv["rc"] == 0 else {}
    counted = analyse(run_dir, cfg.problems)
    waits = server.hang_waits[hangs:]
    return {
        "rc": inv["rc"],
        "wall_s": round(inv["wall_s"], 2),
        "timeline": inv["timeline"],
        "accounted": counted["accounted"],
        "duplicates": counted["duplicates"],
        "failed_samples": counted["failed_samples"],
        "requests": server.hits - hits,
        "faults": {k: v - faults.get(k, 0) for k, v in server.faults.items() if v - faults.get(k, 0)},
        "hangs": {"n": len(waits), "waited_s": round(sum(waits), 2)},
        "summary": summary,
        "stderr": inv["stderr"][-1500:] if inv["rc"] else "",
    }


def time_split(
    clean: dict[str, Any],
    invocations: list[dict[str, Any]],
    cfg: SoakConfig,
    at_end: dict[str, Any],
    requests_clean: int,
) -> dict[str, Any]:
    """Where the faulted run's extra wall time went, against the clean run.

    - ``start``/``stop``: the faulted run starts ``len(invocations)`` times and the clean run once
      (each start: interpreter, run folder, backend, kernel pool, first sample; see :func:`timeline`);
    - ``work``: first to last saved sample, summed; the excess over the clean run holds the faults'
      waits and the samples in flight at each kill (lost and run again);
    - ``requests_rerun``: requests beyond the clean run's that no injected fault explains (the
      requests of samples lost to the kills);
    - ``hangs``: how long each hung request was waited on (the server's view), and ``retry_waits``:
      the backoff after each failed try (the eval's log), both in slot-seconds: a trajectory waits,
      the others go on (``/ concurrency`` is the wall cost when the run is bound by its slots).
    """
    tl_clean = clean["timeline"]
    tls = [i["timeline"] for i in invocations]
    sums = {k: round(sum(t[k] for t in tls), 2) for k in ("start_s", "work_s", "stop_s")}
    retry_waits: dict[str, dict[str, float]] = {}
    for inv in invocations:
        for head, waits in inv["retries"].items():
            d = retry_waits.setdefault(head, {"n": 0, "wait_s": 0.0})
            d["n"] += len(waits)
            d["wait_s"] = round(d["wait_s"] + sum(waits), 2)
    hang_waits = at_end["hang_waits"]
    faults = sum(at_end["faults"].values())
    requests = at_end["requests"]
    return {
        "clean": tl_clean,
        "faulted": dict(sums, saved=sum(t["saved"] for t in tls), invocations=len(tls)),
        "extra": {k: round(sums[k] - tl_clean[k], 2) for k in sums},
        "hangs": {
            "n": len(hang_waits),
            "waited_s": round(sum(hang_waits), 2),
            "mean_s": round(sum(hang_waits) / len(hang_waits), 2) if hang_waits else None,
            "max_s": round(max(hang_waits), 2) if hang_waits else None,
        },
        "retry_waits": retry_waits,
        "requests_rerun": requests - requests_clean - faults if at_end["server"] else None,
        "concurrency": cfg.concurrency,
    }


def split_lines(sp: dict[str, Any], invocations: list[dict[str, Any]]) -> list[str]:
    c, f, x = sp["clean"], sp["faulted"], sp["extra"]
    lines = [
        "where the time went (start: launch -> first saved sample, of which setup: launch -> run folder "
        "opened; work: first -> last saved sample; stop: last saved sample -> exit):",
        f"  clean      start {c['start_s']:6.2f} s (setup {c['setup_s']} s)  work {c['work_s']:6.2f} s  stop "
        f"{c['stop_s']:5.2f} s  {c['saved']} samples",
    ]
    for inv in invocations:
        t = inv["timeline"]
        rate = t["saved"] / t["work_s"] if t["work_s"] else 0.0
        lines.append(
            f"  {inv['phase']:<9}  start {t['start_s']:6.2f} s (setup {t['setup_s']} s)  work "
            f"{t['work_s']:6.2f} s  stop {t['stop_s']:5.2f} s  {t['saved']} samples ({rate:.1f}/s)"
        )
    crate = c["saved"] / c["work_s"] if c["work_s"] else 0.0
    lines.append(
        f"  faulted-clean: starts {x['start_s']:+.2f} s ({f['invocations']} starts vs 1), work "
        f"{x['work_s']:+.2f} s (clean rate {crate:.1f}/s), stops {x['stop_s']:+.2f} s"
    )
    h = sp["hangs"]
    if h["n"]:
        lines.append(
            f"  hung requests: {h['n']}, waited {h['waited_s']} slot-s before given up (mean {h['mean_s']} s, "
            f"max {h['max_s']} s)"
        )
    if sp["retry_waits"]:
        parts = ", ".join(f"{k} {v['n']}x {v['wait_s']} s" for k, v in sorted(sp["retry_waits"].items()))
        total = sum(v["wait_s"] for v in sp["retry_waits"].values())
        lines.append(f"  backoff before retries: {round(total, 2)} slot-s ({parts})")
    if sp["requests_rerun"] is not None:
        lines.append(f"  requests re-sent for samples lost to the kills: {sp['requests_rerun']}")
    lines.append(f"  (slot-s / {sp['concurrency']} trajectories = wall s when the run is bound by its slots)")
    return lines


def faults_only_lines(fo: dict[str, Any] | None, n: int) -> list[str]:
    if not fo:
        return []
    t = fo["timeline"]
    return [
        f"faults only (one invocation, no kill, no disk episode): wall {fo['wall_s']} s; ratio {fo['ratio']}; "
        f"{fo['accounted']}/{n} accounted for, {fo['duplicates']} duplicates, {fo['failed_samples']} failed, "
        f"summary equal to the clean run's: {'yes' if fo['summary_equal'] else 'no'}",
        f"  faults {fo['faults']} over {fo['requests']} requests; hung requests {fo['hangs']['n']} waited "
        f"{fo['hangs']['waited_s']} slot-s; start {t['start_s']} s, work {t['work_s']} s, stop {t['stop_s']} s"
        + (f"; rc {fo['rc']}: {fo['stderr']}" if fo["rc"] else ""),
    ]


def report(r: dict[str, Any]) -> str:
    d = r.get("disk_full")
    lines = [
        f"problems accounted for: {r['accounted']}/{r['problems']}",
        f"duplicates: {r['duplicates']}",
        f"records lost: {r['lost']}",
        f"corrupt lines: {r['corrupt_lines']}; temporary files left: {len(r['temporary_files'])}",
        f"samples failed after the backend's retries: {r['failed_samples']}",
        f"summary equal to a clean run's: {'yes' if r['summary_equal'] else 'no ' + str(r['summary_differs'])}",
        f"wall: clean {r['clean_wall_s']} s; faulted {r['faulted_wall_s']} s over {len(r['invocations'])} "
        f"invocations ({r['kills']} killed); ratio {r['wall_ratio']}",
        *faults_only_lines(r.get("faults_only"), r["problems"]),
        f"harness peak RSS: {r['peak_rss_mb']} MB (clean run {r['clean_peak_rss_mb']} MB)",
        f"accuracy: {r['accuracy']}",
        f"failed reasons: faulted run {r['failed_reasons']}, clean run {r['clean_failed_reasons']}",
    ]
    if d:
        lines.append(
            f"disk full: exit {d['rc']}, message {'yes' if d['message'] else 'no'}, resume hint "
            f"{'yes' if d['resume_hint'] else 'no'}, traceback {'yes' if d['traceback'] else 'no'}, "
            f"temporary files {len(d['temporary_files'])}, samples saved {d['saved_before']} -> {d['saved_after']}"
        )
    if r["faults"]:
        lines.append(f"faults injected: {r['faults']} over {r['requests']['faulted']} requests")
    for inv in r["invocations"]:
        lines.append(
            f"  {inv['phase']:<9} rc {inv['rc']:>4}  wall {inv['wall_s']:>8.2f} s  peak RSS "
            f"{inv['peak_rss_kb'] / 1024:.0f} MB"
            + (f"  killed at {inv['killed_at_records']} samples" if inv["killed"] else "")
        )
    if r.get("split"):
        lines += split_lines(r["split"], r["invocations"])
    lines += [f"note: {n}" for n in r["notes"]]
    if d and d["traceback"]:
        lines.append("disk-full stderr: " + r["invocations"][-2]["stderr"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--problems", type=int, default=1000)
    p.add_argument("--kills", type=int, default=3)
    p.add_argument("--no-disk-full", dest="disk_full", action="store_false")
    p.add_argument("--backend", choices=("server", "scripted"), default="server")
    p.add_argument("--fault-rate", type=float, default=0.05)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--latency", type=float, default=0.25)
    p.add_argument("--retry-after", type=float, default=2.0)
    p.add_argument("--hang-s", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a new temp dir)")
    p.add_argument("--eval-arg", action="append", default=[], help="extra flag for `mathagent eval` (repeat)")
    p.add_argument("--timeout-s", type=float, default=3600.0)
    p.add_argument("--no-code", dest="code", action="store_false", help="answers without a code cell")
    p.add_argument(
        "--no-faults-only", dest="faults_only", action="store_false", help="skip the run of the faults alone"
    )
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up (evals, server, tmpfs)
    cfg = SoakConfig(
        problems=a.problems,
        kills=a.kills,
        disk_full=a.disk_full,
        backend=a.backend,
        fault_rate=a.fault_rate,
        concurrency=a.concurrency,
        latency=a.latency,
        retry_after=a.retry_after,
        hang_s=a.hang_s,
        seed=a.seed,
        work=a.work,
        eval_args=a.eval_arg,
        timeout_s=a.timeout_s,
        code=a.code,
        faults_only=a.faults_only,
    )
    r = soak(cfg)
    print(json.dumps(r, indent=2) if a.json else report(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
