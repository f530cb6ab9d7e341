"""The kernel pool from cold: how soon kernels come, and a soak-like load of many trajectories.

    python bench/pool_bench.py cold [--size 16] [--acquires 16]
    python bench/pool_bench.py load [--size 16] [--trajectories 150] [--threads 16] [--model-s 0.25]

``cold`` starts a pool of ``--size`` and acquires ``--acquires`` kernels one after another without
giving any back (so each is a new slot), printing when each arrived: the first kernel's time is what a
run waits before its first cell. ``load`` runs ``--threads`` workers, each solving trajectories shaped
like the soak's (``bench/soak.py``): a model call (sleep ``--model-s``), acquire, one cell, another
model call, close; it prints the wall time, when the first and 50th trajectories finished, slots
started, and any acquire that failed (``no kernel became ready``). Real sandboxed kernels; figures only.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from mathagent.sandbox.pool import KernelPool, start_threads


def cold(args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    pool = KernelPool(size=args.size)
    got = []
    try:
        for i in range(args.acquires):
            got.append(pool.acquire())
            print(f"kernel {i + 1:2d} after {time.monotonic() - t0:6.2f} s", flush=True)
        assert got[0].run("6 * 7").result == "42"
    finally:
        for sb in got:
            sb.close()
        t = time.monotonic()
        pool.close()
        print(f"pool.close {time.monotonic() - t:.2f} s; slots started {pool.slots_started}")


def load(args: argparse.Namespace) -> None:
    pool = KernelPool(size=args.size)
    lock, todo, ends, failures = threading.Lock(), [args.trajectories], [], []
    t0 = time.monotonic()

    def worker() -> None:
        while True:
            with lock:
                if todo[0] <= 0:
                    return
                todo[0] -= 1
            time.sleep(args.model_s)
            try:
                sb = pool.acquire()
            except Exception as e:  # noqa: BLE001 - counted and printed
                failures.append(f"{type(e).__name__}: {e}")
                continue
            sb.run("print(2 + 3)")
            time.sleep(args.model_s)
            sb.close()
            with lock:
                ends.append(time.monotonic() - t0)

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    ends.sort()
    mid = ends[min(49, len(ends) - 1)] if ends else float("nan")
    print(
        f"{len(ends)} trajectories in {wall:.1f} s ({len(ends) / wall:.2f}/s); first done "
        f"{ends[0] if ends else float('nan'):.1f} s, 50th {mid:.1f} s; slots started {pool.slots_started}; "
        f"acquires failed {len(failures)}" + (f" ({failures[0]})" if failures else "")
    )
    t = time.monotonic()
    pool.close()
    print(f"pool.close {time.monotonic() - t:.2f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cold", help="kernels from a cold pool, one after another")
    c.add_argument("--size", type=int, default=16)
    c.add_argument("--acquires", type=int, default=16)
    ld = sub.add_parser("load", help="many soak-shaped trajectories sharing the pool")
    ld.add_argument("--size", type=int, default=16)
    ld.add_argument("--trajectories", type=int, default=150)
    ld.add_argument("--threads", type=int, default=16)
    ld.add_argument("--model-s", type=float, default=0.25)
    args = p.parse_args(argv)
    print(f"new slots started at once: {start_threads(args.size)}", flush=True)
    (cold if args.cmd == "cold" else load)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
