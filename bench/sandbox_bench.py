"""Sandbox benchmark: start, pool acquire, cell round trip vs a raw jupyter_client kernel; MathCoder
trajectories in our persistent kernel vs a ToRA-style executor; memory per idle kernel.

Prints figures and ratios (not a test). Usage:

    python bench/sandbox_bench.py [--cells 200] [--trajectories 40] [--level auto]
    python bench/sandbox_bench.py --attacks   # the harness's peak RSS growth under memory attacks
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mathagent.sandbox import JupyterSandbox, KernelPool
from mathagent.sandbox.config import SandboxConfig

TRACES = (
    Path(__file__).resolve().parents[1].parent
    / "shared/data/traces/traces_mathcoderL70b_gsm8k_test_correct.jsonl"
)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(int(q * len(xs)), len(xs) - 1)]


def ms(x: float) -> str:
    return f"{x * 1000:.2f} ms"


def round_trips(config: SandboxConfig, n: int) -> dict[str, object]:
    """Start a raw jupyter_client kernel and a JupyterSandbox, then alternate trivial cells between them
    so both see the same machine load."""
    from jupyter_client.manager import KernelManager

    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        km = KernelManager(
            transport="ipc", ip=os.path.join(d, "k"), connection_file=os.path.join(d, "k.json")
        )
        km.start_kernel(extra_arguments=["--HistoryManager.enabled=False"])
        kc = km.blocking_client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        out["raw_start"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        sb = JupyterSandbox(config.with_(preload=()))
        out["our_start_bare"] = time.perf_counter() - t0
        raw, mine = [], []
        for i in range(n):
            t = time.perf_counter()
            kc.execute_interactive(f"x = {i}", timeout=10, output_hook=lambda m: None)
            raw.append(time.perf_counter() - t)
            t = time.perf_counter()
            r = sb.run(f"x = {i}", timeout=10)
            mine.append(time.perf_counter() - t)
            assert r.ok, r
        out["raw"], out["mine"] = raw, mine
        out["rss_bare_mb"] = rss_mb(sb.kernel_pid)
        sb.close()
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    t0 = time.perf_counter()
    with JupyterSandbox(config) as sb:
        out["our_start_preload"] = time.perf_counter() - t0
        out["rss_preloaded_mb"] = rss_mb(sb.kernel_pid)
        cg = sb._slot.cgroup if sb._slot else None
        if cg is not None and "memory" in cg.controllers:
            out["cgroup_usage_mb"] = int((cg.path("memory") / "memory.usage_in_bytes").read_text()) / 2**20
    return out


def rss_mb(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pool_acquire(config: SandboxConfig, k: int) -> list[float]:
    times = []
    with KernelPool(size=2, config=config) as pool:
        for _ in range(k):
            while pool.ready_count() < 1:  # measure acquire from a warm pool, not a kernel start
                time.sleep(0.05)
            t = time.perf_counter()
            sb = pool.acquire()
            times.append(time.perf_counter() - t)
            sb.close()
    return times


def load_trajectories(limit: int) -> list[list[str]]:
    out = []
    with open(TRACES) as f:
        for line in f:
            cells = [m["content"] for m in json.loads(line)["debug_result"] if m["role"] == "code"]
            if len(cells) >= 2:
                out.append(cells)
            if len(out) >= limit:
                break
    return out


def run_ours(config: SandboxConfig, trajs: list[list[str]]) -> tuple[float, int, list[float]]:
    """End to end through a pool of 2: acquire, run the trajectory's cells, close."""
    cpu: list[float] = []
    with KernelPool(size=2, config=config) as pool:
        while pool.ready_count() < 2:
            time.sleep(0.05)
        t0 = time.perf_counter()
        n = 0
        for cells in trajs:
            with pool.acquire() as sb:
                for c in cells:
                    r = sb.run(c, timeout=30)
                    n += 1
                    if r.cpu_s is not None:
                        cpu.append(r.cpu_s)
        return time.perf_counter() - t0, n, cpu


def run_cells_only(config: SandboxConfig, trajs: list[list[str]], batch: int = 8) -> tuple[float, int]:
    """Time inside ``run`` only: kernels are started (and closed) in batches outside the clock."""
    total, n = 0.0, 0
    for i in range(0, len(trajs), batch):
        sbs = [JupyterSandbox(config) for _ in trajs[i : i + batch]]
        try:
            t0 = time.perf_counter()
            for sb, cells in zip(sbs, trajs[i : i + batch], strict=True):
                for c in cells:
                    sb.run(c, timeout=30)
                    n += 1
            total += time.perf_counter() - t0
        finally:
            for sb in sbs:
                sb.close()
    return total, n


def run_tora(trajs: list[list[str]]) -> tuple[float, int]:
    """ToRA-style: each round starts a fresh interpreter and re-runs every earlier block, then the new one."""
    t0 = time.perf_counter()
    n = 0
    for cells in trajs:
        for i in range(len(cells)):
            prog = "\n".join(cells[: i + 1])
            subprocess.run(
                [sys.executable, "-c", prog], capture_output=True, timeout=60, cwd=tempfile.gettempdir()
            )
            n += 1
    return time.perf_counter() - t0, n


ATTACKS = {
    "256 MiB without a newline to the inherited log pipe": (
        "import os, sys\nfor s in (sys.stdout, sys.stderr):\n"
        "    fd = getattr(s, '_original_stdstream_copy', None)\n"
        "    for _ in range(128 if fd is not None else 0):\n"
        "        try:\n            os.write(fd, b'x' * 2**20)\n        except OSError:\n            break"
    ),
    "24 x 8 MiB iopub messages with a foreign parent, sent while idle": (
        "import threading\nk = get_ipython().kernel\ndef f():\n    for i in range(24):\n"
        "        k.session.send(k.iopub_socket, 'stream', {'name': 'stdout', 'text': 'y' * 2**23},"
        " parent={'msg_id': f'x{i}'})\nthreading.Thread(target=f, daemon=True).start()"
    ),
    "print('x' * 10**8)": "print('x' * 10**8)",
    "a 4 MiB value ('😀' * 2**20)": "'😀' * 2**20",
    "one multipart message of 100 x 2 MiB frames on iopub": (
        "k = get_ipython().kernel\nk.iopub_socket.send_multipart([b'stream'] + [b'z' * 2**21] * 100)"
    ),
    "3 messages of 8 x 1 MiB buffers for this cell (over the relay's budget)": (
        "k = get_ipython().kernel\nfor i in range(3):\n"
        "    k.session.send(k.iopub_socket, 'stream', {'name': 'stdout', 'text': 's'},"
        " parent=k.get_parent('shell'), buffers=[b'w' * 2**20] * 8)"
    ),
}


def _vm(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def attacks(config: SandboxConfig) -> None:
    """Each attack in a fresh sandbox; the harness's peak resident set over its resident set before."""
    print("\n## harness peak RSS growth under memory attacks (VmHWM reset through /proc/self/clear_refs)")
    for name, code in ATTACKS.items():
        with JupyterSandbox(config) as sb:
            sb.run("1", timeout=60)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            before = _vm("VmRSS")
            t0 = time.monotonic()
            r = sb.run(code, timeout=60)
            time.sleep(4.0)  # what a reader of the flood would still be holding
            after = sb.run("6 * 7", timeout=60)
            for _ in range(60):  # a kernel that flooded its own iopub connection answers once it is over
                if after.result == "42":
                    break
                time.sleep(1.0)
                after = sb.run("6 * 7", timeout=60)
            growth = _vm("VmHWM") - before
            print(
                f"{name}: +{growth:.1f} MiB (RSS before {before:.0f} MiB); cell {time.monotonic() - t0:.1f} s, "
                f"truncated={r.truncated}, output_bytes={r.output_bytes}; next cell ok={after.result == '42'}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cells", type=int, default=200)
    ap.add_argument("--trajectories", type=int, default=40)
    ap.add_argument("--level", default="auto")
    ap.add_argument("--attacks", action="store_true", help="only the harness memory attacks")
    args = ap.parse_args()
    config = SandboxConfig.from_env(level=args.level, start_timeout_s=120.0)
    if args.attacks:
        print(f"# sandbox bench --attacks  level={JupyterSandbox(config, start=False).level.value}")
        print(f"# load average at start: {os.getloadavg()}")
        attacks(config)
        return
    print(f"# sandbox bench  level={JupyterSandbox(config, start=False).level.value}  cpus={os.cpu_count()}")
    print(f"# load average at start: {os.getloadavg()}")

    rt = round_trips(config, args.cells)
    raw, mine = rt["raw"], rt["mine"]
    print("\n## kernel start and cell round trip (trivial cell; the two kernels alternate cells)")
    print(
        f"raw jupyter_client kernel: start {rt['raw_start']:.3f} s; round trip p50 {ms(pct(raw, 0.5))}, p99 {ms(pct(raw, 0.99))}"
    )
    print(
        f"JupyterSandbox:            start {rt['our_start_bare']:.3f} s bare, {rt['our_start_preload']:.3f} s with "
        f"sympy+numpy preloaded; round trip p50 {ms(pct(mine, 0.5))}, p99 {ms(pct(mine, 0.99))}"
    )
    print(f"overhead per cell: p50 {ms(pct(mine, 0.5) - pct(raw, 0.5))}  (target <= 1 ms)")
    mem = {k: rt[k] for k in ("rss_bare_mb", "rss_preloaded_mb", "cgroup_usage_mb") if k in rt}

    acq = pool_acquire(config, 10)
    print("\n## pool acquire (warm pool of 2)")
    print(f"p50 {ms(pct(acq, 0.5))}, max {ms(max(acq))}  (target <= 5 ms)")

    trajs = load_trajectories(args.trajectories)
    t_ours, n_ours, cpu = run_ours(config, trajs)
    in_run, n_run = run_cells_only(config, trajs)
    t_tora, n_tora = run_tora(trajs)
    tora_rate = n_tora / t_tora
    print(f"\n## MathCoder trajectories: {len(trajs)} with >= 2 code cells, {n_ours} cells")
    print(f"ToRA-style fresh process per round:         {t_tora:.2f} s, {tora_rate:.1f} cells/s")
    print(
        f"persistent kernel, cells only (warm kernels): {in_run:.2f} s, {n_run / in_run:.1f} cells/s, "
        f"ratio {(n_run / in_run) / tora_rate:.1f}x  (target >= 4x)"
    )
    print(
        f"persistent kernel, end to end through a pool of 2 (a kernel start per trajectory, back to back, "
        f"no model time to hide the refill): {t_ours:.2f} s, {n_ours / t_ours:.1f} cells/s, "
        f"ratio {(n_ours / t_ours) / tora_rate:.1f}x"
    )
    if cpu:
        print(
            f"kernel CPU per cell: mean {statistics.mean(cpu) * 1000:.1f} ms, p99 {pct(cpu, 0.99) * 1000:.1f} ms"
        )

    print("\n## memory per idle kernel")
    for k, v in mem.items():
        print(f"{k}: {v:.1f}")
    per = max(mem.get("cgroup_usage_mb", 0.0), mem["rss_preloaded_mb"])
    budget = 24 * 1024 * 0.75  # leave a quarter for the model server and the host
    cpu_per_cell = statistics.mean(cpu) if cpu else 0.05
    print(
        f"\n## rough capacity on 2 cores / 24 GiB: memory allows ~{int(budget / per)} idle kernels "
        f"({per:.0f} MiB each, 75% of RAM); CPU: {2 / cpu_per_cell:.0f} trajectory cells/s at "
        f"{cpu_per_cell * 1000:.0f} ms CPU per cell. With a model emitting a cell every few seconds per "
        f"trajectory, memory is the bound: ~{int(budget / per)} concurrent trajectories."
    )


if __name__ == "__main__":
    main()
