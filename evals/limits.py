"""How many model requests, trajectories and ready kernels a run keeps going: ``--max-inflight``,
``--concurrency`` and ``--pool-size`` of ``eval``, ``generate`` and ``replay``.

:func:`derive_limits` is the one place the defaults come from; it is pure (the machine's figures
are arguments), so it is tested with tables. :func:`machine` reads those figures from this host.

The rule, for a flag left unset:

- **Kernel budget**: ``KERNEL_MEMORY_SHARE`` of the available memory divided by the memory of one
  sandbox slot (zygote plus idle kernel, ``KERNEL_MB`` = 113 MB measured in docs/sandbox.md). Every
  trajectory holds one kernel and every ready kernel is one more, so trajectories plus ready kernels
  stay within it.
- **Requests in flight**: against a served model (``--base-url``, ``remote``), ``INFLIGHT_PER_CORE``
  per core (the agent's own work per model turn is CPU: parsing, grading, code execution; see the
  figures of ``bench/inflight_bench.py`` in docs/eval.md), at most ``MAX_INFLIGHT`` (vLLM's default
  ``max_num_seqs``) and at most the kernel budget. A model this process runs itself (the bundled
  llama.cpp server, transformers, scripted turns) decodes one request at a time, so more requests only
  queue and hold kernels: ``LOCAL_INFLIGHT`` (4, the old ``--concurrency`` default).
- **Trajectories at once** (``--concurrency``): requests in flight plus a quarter more, because a
  trajectory spends part of its time executing code, when no request of it is in flight; capped by
  the kernel budget. Except on a local server with one slot (llama-cpp-python's): it keeps ONE KV
  state, so a second trajectory taking turns with the first makes every call re-read its whole
  conversation; there, one trajectory at a time (``bench/interleave_bench.py``: 2 trajectories took
  2.2x the wall time of 1 on the bundled 0.5B model, loop+verify).
- **Ready kernels** (``--pool-size``): one per trajectory, at most ``POOL_PER_CORE`` per core (a
  kernel start costs CPU; 8 per core gives the 16 that measured best on 2 cores: a pool of 8 for 16
  trajectories cost 15% over the model's time, a pool of 16 cost 5%) and at most what the kernel budget leaves after the trajectories' own kernels.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from mathagent.sandbox.concurrency import usable_cpus

KERNEL_MB = 113
"""Memory of one sandbox slot (zygote + idle kernel in its memory cgroup; docs/sandbox.md)."""
KERNEL_MEMORY_SHARE = 0.5
"""Share of the available memory the run's kernels may take (the rest: model server, grader, OS)."""
INFLIGHT_PER_CORE = 32
"""Requests in flight per core against a served model (bench/inflight_bench.py, docs/eval.md)."""
MAX_INFLIGHT = 256
"""Most requests in flight by default (vLLM's default ``max_num_seqs``)."""
LOCAL_INFLIGHT = 4
"""Requests in flight for a model this process runs itself (one decode at a time)."""
POOL_PER_CORE = 8
"""Most ready kernels per core."""
MIN_POOL = 4
"""Fewest ready kernels (when the trajectories allow): the pool starts this many kernels in parallel,
and a smaller pool starved 64 trajectories on 2 busy cores (kernels not ready within 60 s)."""


@dataclass(frozen=True)
class Machine:
    """The figures of a host the defaults are derived from."""

    cores: int
    """CPUs this process may run on."""
    mem_available_mb: int
    """Memory available now (``MemAvailable`` of /proc/meminfo), in MB."""


@dataclass(frozen=True)
class Limits:
    """What a run keeps going at once, and why (recorded in the run header)."""

    max_inflight: int
    """Most model requests in flight."""
    concurrency: int
    """Trajectories solved at the same time."""
    pool_size: int
    """Kernels kept ready."""
    derived: tuple[str, ...] = ()
    """Which of the three were derived (not given)."""
    machine: Machine | None = None
    reasons: dict[str, str] = field(default_factory=dict)
    """Per derived value, the rule that gave it, in words."""
    warnings: tuple[str, ...] = ()
    """Given values this machine cannot serve well, in words (the values are kept: the user decides)."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["derived"] = list(self.derived)
        d["warnings"] = list(self.warnings)
        return d

    def describe(self) -> str:
        """One line for the run header printout."""

        def one(name: str, value: int) -> str:
            why = self.reasons.get(name)
            return f"{name.replace('_', '-')} {value}" + (f" ({why})" if why else " (given)")

        m = self.machine
        where = f" on {m.cores} cores, {m.mem_available_mb} MB available" if m else ""
        parts = [one("max_inflight", self.max_inflight), one("concurrency", self.concurrency)]
        return f"limits{where}: " + ", ".join([*parts, one("pool_size", self.pool_size)])


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def derive_limits(
    machine: Machine,
    *,
    remote: bool,
    max_inflight: int | None = None,
    concurrency: int | None = None,
    pool_size: int | None = None,
    kernel_mb: int = KERNEL_MB,
    server_slots: int | None = None,
) -> Limits:
    """The run's limits: given values kept, the others derived from ``machine`` (module docstring).

    ``remote``: the model is served elsewhere (``--base-url``); else this process runs it.
    ``server_slots``: requests the local server works on at once, when known (llama-cpp-python's: 1).
    More in flight would only wait in the server's queue, where their request timeouts tick.
    Raises ``ValueError`` for a given value below 1.
    """
    for name, value in (
        ("max_inflight", max_inflight),
        ("concurrency", concurrency),
        ("pool_size", pool_size),
    ):
        _positive(name, value)
    cores = max(1, machine.cores)
    budget = max(1, int(machine.mem_available_mb * KERNEL_MEMORY_SHARE) // max(1, kernel_mb))
    reasons: dict[str, str] = {}
    if max_inflight is None:
        if not remote and server_slots:
            max_inflight = server_slots
            reasons["max_inflight"] = f"the local server works on {server_slots} request(s) at a time"
        elif concurrency is not None:
            max_inflight = concurrency
            reasons["max_inflight"] = "= concurrency"
        elif remote:
            per_core = INFLIGHT_PER_CORE * cores
            max_inflight = max(1, min(per_core, MAX_INFLIGHT, budget))
            limit = {per_core: f"{INFLIGHT_PER_CORE}/core", MAX_INFLIGHT: "cap", budget: "kernel memory"}
            reasons["max_inflight"] = f"served model: {limit[max_inflight]}"
        else:
            max_inflight = LOCAL_INFLIGHT
            reasons["max_inflight"] = "model run by this process: one decode at a time"
    if concurrency is None and not remote and server_slots == 1 and max_inflight == 1:
        concurrency = 1
        reasons["concurrency"] = (
            "the local server keeps one KV state: a second trajectory would make each call re-read its prompt"
        )
    if concurrency is None:
        concurrency = max(1, min(max_inflight + math.ceil(max_inflight / 4), max(budget, max_inflight)))
        reasons["concurrency"] = "max-inflight + 1/4 (trajectories executing code hold no request)"
    if pool_size is None:
        pool_size = max(
            min(concurrency, MIN_POOL), min(concurrency, POOL_PER_CORE * cores, budget - concurrency)
        )
        reasons["pool_size"] = (
            f"one per trajectory, at most {POOL_PER_CORE}/core and the kernel memory left, at least {MIN_POOL}"
        )
    warnings = _warnings(cores, budget, kernel_mb, remote, server_slots, max_inflight, concurrency, reasons)
    return Limits(max_inflight, concurrency, pool_size, tuple(reasons), machine, reasons, warnings)


def _warnings(
    cores: int,
    budget: int,
    kernel_mb: int,
    remote: bool,
    server_slots: int | None,
    max_inflight: int,
    concurrency: int,
    reasons: dict[str, str],
) -> tuple[str, ...]:
    """What a given ``--max-inflight`` / ``--concurrency`` asks of this machine beyond what it serves
    (256 requests in flight on 2 cores ran at load average 188): kept, but said."""
    out = []
    if "max_inflight" not in reasons:
        if remote and max_inflight > INFLIGHT_PER_CORE * cores:
            out.append(
                f"--max-inflight {max_inflight} on {cores} cores is above the {INFLIGHT_PER_CORE}/core that "
                f"bench/inflight_bench.py measured as useful: the agent's own work per turn (parsing, grading, "
                f"code) will queue for the CPU; the derived value is {min(INFLIGHT_PER_CORE * cores, budget)}"
            )
        if not remote and server_slots and max_inflight > server_slots:
            out.append(
                f"--max-inflight {max_inflight}: the local server works on {server_slots} request(s) at a time; "
                f"the others wait in its queue while their timeouts tick"
            )
    if concurrency > budget and not ("concurrency" in reasons and "max_inflight" in reasons):
        out.append(
            f"{concurrency} trajectories hold {concurrency} kernels of about {kernel_mb} MB "
            f"({concurrency * kernel_mb} MB), more than the {KERNEL_MEMORY_SHARE:.0%} of available memory "
            f"kernels may take ({budget} kernels): expect swapping or kernels that fail to start"
        )
    return tuple(out)


def machine() -> Machine:
    """This host: the CPUs this process may use and ``MemAvailable`` (all memory when unreadable)."""
    cores = usable_cpus()
    mem_kb = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    mem_kb = int(line.split()[1])
                    break
    except (OSError, ValueError):
        pass
    if not mem_kb:
        try:
            mem_kb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024
        except (ValueError, OSError):
            mem_kb = 4 << 20
    return Machine(cores=cores, mem_available_mb=mem_kb // 1024)
