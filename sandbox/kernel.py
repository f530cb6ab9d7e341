"""``JupyterSandbox``: one trajectory's persistent ipykernel, isolated, bounded, and always answerable.

Every cell goes through :meth:`JupyterSandbox.run`, which never raises for anything the cell's code
does: timeouts interrupt the kernel with SIGINT sent straight to its process (then kill the whole
sandbox and start a replacement when that does not work), a dead kernel is noticed within ~0.1 s
and replaced, and output past the cap is dropped (a cell that keeps flooding is interrupted).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import secrets
import select
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.connect import write_connection_file
from mathagent.sandbox.base import ExecError, ExecResult, IsolationLevel, IsolationReport
from mathagent.sandbox.cgroups import children_of, kill, pids_of_uid, process_cpu_s
from mathagent.sandbox.concurrency import cell_slot
from mathagent.sandbox.config import SandboxConfig
from mathagent.sandbox.isolation import Plan, make_plan
from mathagent.sandbox.launch import build_command
from mathagent.sandbox.output import OutputCollector, clean_traceback
from mathagent.sandbox.slots import Slot, claim

log = logging.getLogger(__name__)

POLL_S = 0.1
"""How often the message loop checks that the kernel process is still alive."""


class SandboxStartError(RuntimeError):
    """A kernel did not start (or did not answer) within ``start_timeout_s``."""


class _Kernel:
    """One running kernel process tree and its client (internal to :class:`JupyterSandbox`)."""

    def __init__(self, config: SandboxConfig, plan: Plan, slot: Slot):
        self.slot = slot
        conn = slot.conn_dir / "kernel.json"
        write_connection_file(
            str(conn), transport="ipc", ip=str(slot.conn_dir / "k"), key=secrets.token_hex(16).encode()
        )
        if slot.uid is not None:
            os.chown(conn, slot.uid, slot.uid)
        rfd = wfd = None
        if plan.bwrap:
            rfd, wfd = os.pipe()
        cmd = build_command(config, plan, slot, conn, wfd)
        self.log_tail: deque[str] = deque(maxlen=40)
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(wfd,) if wfd is not None else (),
            start_new_session=True,
        )
        threading.Thread(target=self._drain, daemon=True, name=f"sandbox-log-{slot.index}").start()
        self.ns_init: int | None = None
        self.pid = self.proc.pid
        deadline = time.monotonic() + config.start_timeout_s
        try:
            if rfd is not None:
                os.close(wfd)  # type: ignore[arg-type]
                self.ns_init = _read_child_pid(rfd, deadline)
            self.client = BlockingKernelClient()
            self.client.load_connection_file(str(conn))
            self.client.start_channels()
            self._wait_ready(deadline)
            if self.ns_init is not None:
                kids = children_of(self.ns_init)
                self.pid = kids[0] if kids else self.ns_init
        except BaseException:
            self.kill()
            raise

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            self.log_tail.append(raw.decode("utf-8", "replace").rstrip()[:500])

    def _fail(self, why: str) -> SandboxStartError:
        tail = "\n".join(self.log_tail)
        return SandboxStartError(
            f"kernel did not start: {why}" + (f"\nkernel output:\n{tail}" if tail else "")
        )

    def _wait_ready(self, deadline: float) -> None:
        kc = self.client
        while True:
            msg_id = kc.kernel_info()
            got_reply = False
            while not got_reply:
                if self.proc.poll() is not None:
                    time.sleep(0.05)  # let the drain thread catch the last words
                    raise self._fail(f"process exited with code {self.proc.returncode}")
                if time.monotonic() > deadline:
                    raise self._fail("no answer within start_timeout_s")
                try:
                    reply = kc.get_shell_msg(timeout=POLL_S)
                except queue.Empty:
                    continue
                got_reply = reply["parent_header"].get("msg_id") == msg_id
            # the iopub subscription must be live before the first cell, or its output is lost
            try:
                kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                continue  # not subscribed yet: ask again
            try:
                while True:
                    kc.get_iopub_msg(timeout=0.01)
            except queue.Empty:
                return

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_s(self) -> float | None:
        cg = self.slot.cgroup
        if cg is not None and "cpuacct" in cg.controllers:
            return cg.cpu_s()
        return process_cpu_s(self.pid)

    def kill_strays(self) -> int:
        """Kill every process in the sandbox except the kernel itself (after a timed-out cell)."""
        keep = {self.proc.pid, self.pid, self.ns_init}
        if self.slot.cgroup is not None:
            pids = self.slot.cgroup.pids()
        elif self.slot.uid is not None:
            pids = set(pids_of_uid(self.slot.uid))
        else:
            return 0
        killed = 0
        for _ in range(50):  # a fork bomb keeps forking while we kill: repeat until none is left
            strays = pids - keep
            if not strays:
                break
            for pid in strays:
                kill(pid)
            killed += len(strays)
            time.sleep(0.005)
            pids = (
                self.slot.cgroup.pids() if self.slot.cgroup is not None else set(pids_of_uid(self.slot.uid))
            )
        return killed

    def interrupt(self) -> None:
        kill(self.pid, signal.SIGINT)

    def kill(self) -> None:
        if self.ns_init is not None:
            kill(self.ns_init)  # the pid namespace's init: everything inside dies with it
        kill(self.proc.pid)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.slot.cgroup is not None:
            self.slot.cgroup.kill_all()
        if self.slot.uid is not None:
            for pid in pids_of_uid(self.slot.uid):
                kill(pid)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("sandbox process %d did not exit after SIGKILL", self.proc.pid)
        client = getattr(self, "client", None)
        if client is not None:
            client.stop_channels()


def _read_child_pid(fd: int, deadline: float) -> int:
    buf = b""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise SandboxStartError("bubblewrap did not report its child pid in time")
            chunk = os.read(fd, 4096)
            buf += chunk
            try:
                return int(json.loads(buf)["child-pid"])
            except ValueError:
                if not chunk:
                    raise SandboxStartError(f"bubblewrap failed before starting: {buf!r}") from None
    finally:
        os.close(fd)


class JupyterSandbox:
    """A fresh, isolated ipykernel for one trajectory (implements :class:`~mathagent.sandbox.base.Sandbox`).

    The isolation it reached is in :attr:`level` and :attr:`report` (see ``mathagent sandbox check``).
    Use as a context manager, or call :meth:`close`: that kills the process tree and removes the
    slot's dirs and cgroups.
    """

    def __init__(self, config: SandboxConfig | None = None, *, start: bool = True):
        self.config = config or SandboxConfig.from_env()
        self.plan = make_plan(self.config)
        self._lock = threading.RLock()
        self._slot: Slot | None = None
        self._kernel: _Kernel | None = None
        self._closed = False
        self.restarts = 0
        if start:
            self.start()

    @property
    def level(self) -> IsolationLevel:
        return self.plan.level

    @property
    def report(self) -> IsolationReport:
        return self.plan.report

    def start(self) -> None:
        with self._lock:
            if self._kernel is not None:
                return
            if self._slot is None:
                uid_base = self.config.uid_base if self.plan.drop_uid else None
                self._slot = claim(self.config.base_dir, self.config.max_slots, uid_base, self.plan.cgroups)
                if self._slot.cgroup is not None:
                    c = self.config
                    self._slot.cgroup.create(c.memory_mb, c.pids_max, c.cpu_quota)
            try:
                self._kernel = _Kernel(self.config, self.plan, self._slot)
            except BaseException:
                self._release_slot()
                raise

    @property
    def kernel_pid(self) -> int | None:
        return self._kernel.pid if self._kernel else None

    def run(self, code: str, timeout: float | None = None) -> ExecResult:
        """Execute ``code`` in the persistent kernel; errors, timeouts and crashes come back in the result."""
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        timeout = self.config.default_timeout_s if timeout is None else float(timeout)
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        with self._lock:
            if self._closed:
                raise RuntimeError("sandbox is closed")
            restarted = False
            if self._kernel is None or not self._kernel.alive():
                restarted = self._kernel is not None
                self._replace()
            with cell_slot(self.config.max_concurrent_cells):
                res = self._execute(code, timeout)
            if restarted and not res.kernel_restarted:
                res = ExecResult(**{**res.__dict__, "kernel_restarted": True})
            return res

    def _execute(self, code: str, timeout: float) -> ExecResult:
        k = self._kernel
        assert k is not None
        cfg = self.config
        col = OutputCollector(cfg.output_cap_bytes)
        cpu0 = k.cpu_s()
        t0 = time.monotonic()
        _drain_shell(k.client)
        msg_id = k.client.execute(code, store_history=True, allow_stdin=False, stop_on_error=False)
        deadline = t0 + timeout
        interrupted_at: float | None = None
        timed_out = flooded = died = False
        while True:
            now = time.monotonic()
            if interrupted_at is None and now >= deadline:
                timed_out = True
                interrupted_at = now
                k.interrupt()
            elif interrupted_at is not None and now >= interrupted_at + cfg.interrupt_grace_s:
                died = False
                break  # did not stop: kill below
            limit = deadline if interrupted_at is None else interrupted_at + cfg.interrupt_grace_s
            try:
                msg = k.client.get_iopub_msg(timeout=max(min(limit - now, POLL_S), 0.001))
            except queue.Empty:
                if not k.alive():
                    died = True
                    break
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if self._handle(msg, col):
                return self._finish(col, k, cpu0, t0, timed_out, flooded, timeout)
            if interrupted_at is None and col.offered > cfg.output_cap_bytes * cfg.flood_kill_factor:
                flooded = True
                interrupted_at = time.monotonic()
                k.interrupt()
        wall = time.monotonic() - t0
        cpu = _delta(cpu0, k.cpu_s())
        oom = k.slot.cgroup.oom_killed() if k.slot.cgroup else False
        if died:
            why = "out of memory" if oom else f"exit status {k.proc.returncode}"
            col.error = ExecError("KernelDied", f"the kernel process died ({why}); all variables lost", "")
        elif timed_out:
            col.error = ExecError(
                "TimeoutError", f"cell exceeded {timeout:g} s and ignored the interrupt; kernel restarted", ""
            )
        else:
            col.error = ExecError(
                "OutputLimitExceeded", "cell kept printing past the output cap; kernel restarted", ""
            )
        self._replace()
        return col.build(wall_s=wall, cpu_s=cpu, timed_out=timed_out, kernel_restarted=True)

    def _handle(self, msg: dict[str, Any], col: OutputCollector) -> bool:
        """Fold one iopub message into ``col``; True when the cell is finished (kernel idle)."""
        kind = msg["msg_type"]
        c = msg["content"]
        if kind == "stream":
            col.add(c.get("name", "stdout"), c.get("text", ""))
        elif kind == "execute_result":
            col.set_result(c.get("data", {}).get("text/plain", ""))
        elif kind == "display_data":
            text = c.get("data", {}).get("text/plain")
            if text:
                col.add("stdout", text + "\n")
        elif kind == "error":
            col.error = ExecError(
                c.get("ename", ""), c.get("evalue", ""), clean_traceback(c.get("traceback", []))
            )
        elif kind == "status" and c.get("execution_state") == "idle":
            return True
        return False

    def _finish(
        self,
        col: OutputCollector,
        k: _Kernel,
        cpu0: float | None,
        t0: float,
        timed_out: bool,
        flooded: bool,
        timeout: float,
    ) -> ExecResult:
        wall = time.monotonic() - t0
        if timed_out:
            tb = col.error.traceback if col.error else ""
            col.error = ExecError("TimeoutError", f"cell exceeded {timeout:g} s and was interrupted", tb)
            if k.kill_strays():
                log.info("killed processes the timed-out cell left behind")
        elif flooded and col.error is not None and col.error.ename == "KeyboardInterrupt":
            col.error = ExecError(
                "OutputLimitExceeded", "cell kept printing past the output cap; interrupted", ""
            )
        return col.build(wall_s=wall, cpu_s=_delta(cpu0, k.cpu_s()), timed_out=timed_out)

    def _replace(self) -> None:
        """Kill the current kernel tree and start a fresh one in the same slot."""
        if self._kernel is not None:
            self._kernel.kill()
            self._kernel = None
        assert self._slot is not None
        _clear_dir(self._slot.conn_dir)
        _clear_dir(self._slot.host_workdir)
        self.restarts += 1
        self._kernel = _Kernel(self.config, self.plan, self._slot)

    def interrupt(self) -> bool:
        """Send SIGINT to the kernel process from any thread (stops the running cell, e.g. on Ctrl-C).

        The cell's ``run`` then returns as usual (a ``KeyboardInterrupt`` error); if the code ignores the
        signal, its own timeout path kills and replaces the kernel. Returns False when no kernel runs.
        """
        k = self._kernel
        if k is None:
            return False
        k.interrupt()
        return True

    def reset(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("sandbox is closed")
            self._replace()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._kernel is not None:
                self._kernel.kill()
                self._kernel = None
            self._release_slot()

    def _release_slot(self) -> None:
        if self._slot is not None:
            self._slot.release()
            self._slot = None

    def __enter__(self) -> JupyterSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _drain_shell(kc: BlockingKernelClient) -> None:
    """Discard earlier execute replies (their content already came over iopub) so they never pile up."""
    try:
        while kc.shell_channel.msg_ready():
            kc.get_shell_msg(timeout=0)
    except queue.Empty:
        pass


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else max(b - a, 0.0)


def _clear_dir(d: Path) -> None:
    if not d.is_dir():
        return
    for p in d.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                p.unlink()
            except OSError:
                pass
