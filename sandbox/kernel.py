"""``JupyterSandbox``: one trajectory's persistent ipykernel, isolated, bounded, and always answerable.

Every cell goes through :meth:`JupyterSandbox.run`, which never raises for anything the cell's code
does: timeouts interrupt the kernel with SIGINT sent straight to its process (then kill the whole
sandbox and start a replacement when that does not work), a dead kernel is noticed within ~0.1 s
and replaced, and output past the cap is dropped (a cell that keeps flooding is interrupted).

Everything that crosses from the sandbox to this process is bounded in bytes: the zygote's log pipe
is read in chunks into a short tail (kernels do not even hold it), the control pipe's lines are
capped, and a kernel's zmq messages reach this process only through the slot's relay (``relay.py``,
a process under its own RLIMIT_AS), which forwards only messages of at most ``max_message_bytes`` in
``RELAY_MAX_FRAMES`` frames; this process's sockets also refuse frames over ``max_message_bytes``
and queue at most ``RCVHWM`` messages. A cell finishes on its shell reply plus the idle status for that request, never
on messages whose parent header names another request.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import queue
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.blocking import BlockingKernelClient
from mathagent.sandbox.base import ExecError, ExecResult, IsolationLevel, IsolationReport
from mathagent.sandbox.boot import empty_dir, remove_tree
from mathagent.sandbox.cgroups import children_of, kill, pids_of_uid, proc_stat, process_cpu_s
from mathagent.sandbox.concurrency import cell_slot
from mathagent.sandbox.config import SandboxConfig
from mathagent.sandbox.isolation import Plan, make_plan
from mathagent.sandbox.launch import build_command, conn_inside
from mathagent.sandbox.output import OutputCollector, clean_traceback, safe_text
from mathagent.sandbox.slots import Slot, claim

log = logging.getLogger(__name__)

POLL_S = 0.1
"""How often the message loop checks that the kernel process is still alive."""
LOG_LINES = 40
"""Lines of the zygote's log kept (each cut to ``LOG_LINE_CHARS``) for start-failure messages."""
LOG_LINE_CHARS = 500
CONTROL_LINE_MAX = 64 * 1024
"""Longest line accepted on the zygote's reply pipe; a longer one is dropped."""
EXITS_KEPT = 256
"""Exit codes of reaped processes remembered per zygote (the oldest are forgotten)."""
RCVHWM = 16
"""Messages each of a kernel's zmq sockets queues in this process before the kernel has to wait."""
RELAY = (Path(__file__).with_name("relay.py")).read_text(encoding="utf-8")
RELAY_HWM = 16
"""``RCVHWM`` and ``SNDHWM`` of the relay's sockets (see ``relay.py``)."""
RELAY_MAX_FRAMES = 64
"""Most frames of one message the relay forwards (a Jupyter message has ~7, plus its buffers)."""
RELAY_BASE_AS = 160 * 1024 * 1024
"""Address space of an idle relay process (Python and libzmq take ~105 MB here), with some room."""
IDLE_AFTER_REPLY_S = 30.0
"""After a cell's shell reply (and its last iopub message), how long to wait for its idle status. The
kernel sends the idle status right after the reply, but on a loaded machine its iopub thread can lag
by seconds; when nothing comes for this long its iopub connection is taken as gone (zmq ends a
connection that sent an oversized frame for good) and the kernel is replaced."""


class SandboxStartError(RuntimeError):
    """A kernel did not start (or did not answer) within ``start_timeout_s``."""


class _SlotUnclean(SandboxStartError):
    """Something of the last trajectory could not be removed from the slot: it must not be reused."""


def max_message_bytes(config: SandboxConfig) -> int:
    """Largest zmq frame (and, at the relay, message) accepted from a kernel: a displayed value cut to
    the output cap (by the kernel, see ``boot._bound_output``) fits twice over; a larger frame drops
    the connection, a larger message is dropped by the relay."""
    return 2 * config.output_cap_bytes + 256 * 1024


def relay_as_bytes(config: SandboxConfig) -> int:
    """The relay's RLIMIT_AS: its idle size, plus the messages it may hold (``RCVHWM`` per socket)."""
    return RELAY_BASE_AS + 4 * RELAY_HWM * max_message_bytes(config)


def json_lines(buf: bytes) -> tuple[list[dict[str, Any]], bytes]:
    """The JSON objects on the complete lines of ``buf`` (other lines skipped) and the unfinished rest."""
    msgs: list[dict[str, Any]] = []
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict):
            msgs.append(msg)
    return msgs, buf


def pump_json_lines(
    fd: int,
    handle: Callable[[dict[str, Any]], None],
    *,
    lock: threading.Lock | None = None,
    on_overlong: Callable[[], None] | None = None,
) -> None:
    """Read ``fd`` to its end (or an error), calling ``handle`` for each JSON object on a line, under
    ``lock`` when given. An unfinished line longer than ``CONTROL_LINE_MAX`` is dropped (and
    ``on_overlong`` called), so whatever writes to the pipe cannot grow this process."""
    buf = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            return
        with lock if lock is not None else contextlib.nullcontext():
            msgs, buf = json_lines(buf + chunk)
            for msg in msgs:
                handle(msg)
            if len(buf) > CONTROL_LINE_MAX:
                if on_overlong is not None:
                    on_overlong()
                buf = b""


class _Relay:
    """The slot's message relay (see ``relay.py``): a host process of its own, under RLIMIT_AS, which
    receives every message of the slot's kernels and forwards to this process only those that fit
    ``max_message_bytes`` in ``RELAY_MAX_FRAMES`` frames. Whatever a kernel sends beyond that costs
    the relay (which dies past its limit, and the slot is replaced), never this process."""

    def __init__(self, config: SandboxConfig, slot: Slot):
        self.dir = slot.dir / "relay"
        """Host-only dir of the sockets this process connects to (the sandbox never sees it)."""
        self.dir.mkdir(mode=0o700, exist_ok=True)
        cfg = {
            "budget": max_message_bytes(config),
            "max_frames": RELAY_MAX_FRAMES,
            "as_bytes": relay_as_bytes(config),
        }
        # -S: no site (saves ~20 ms of CPU per start); zmq's own dir is put on the path instead
        prelude = f"import sys; sys.path.insert(0, {os.path.dirname(os.path.dirname(zmq.__file__))!r})\n"
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", prelude + RELAY, json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.dropped = 0
        """Bytes of messages the relay did not forward (too large, or this process not reading)."""
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reading = threading.Lock()
        """Held by the reader while it handles what it read (see :meth:`settle`)."""
        self.slot_index = slot.index
        threading.Thread(target=self._read, daemon=True, name=f"sandbox-relay-{slot.index}").start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        pump_json_lines(self.proc.stdout.fileno(), self._handle, lock=self._reading)
        self._replies.put({"closed": True})

    def _handle(self, msg: dict[str, Any]) -> None:
        if "dropped" in msg:
            self.dropped += int(msg["dropped"]) if isinstance(msg["dropped"], int) else 0
            log.info("sandbox slot %d: the relay dropped an oversized message: %s", self.slot_index, msg)
        else:
            self._replies.put(msg)

    def settle(self, limit_s: float = 0.2) -> None:
        """Let the reader take in what the relay has already written. The relay reports a dropped
        message before it forwards the next one, so once a cell's idle status came through, the
        report of anything dropped before it is in the pipe (it may just not be read yet)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        end = time.monotonic() + limit_s
        try:
            while select.select([fd], [], [], 0)[0] and time.monotonic() < end:
                time.sleep(0.001)
        except (OSError, ValueError):
            return
        with self._reading:
            pass

    def alive(self) -> bool:
        return self.proc.poll() is None

    def attach(self, kernel: str, front: str, deadline: float) -> None:
        """Relay the kernel whose ipc sockets are on ``kernel`` to sockets bound on ``front``."""
        self._request({"op": "attach", "kernel": kernel, "front": front}, "attached", deadline)

    def detach(self) -> None:
        """Close the relay's sockets to the last kernel (no wait: the next attach replaces them anyway)."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b'{"op": "detach"}\n')
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass

    def _request(self, req: dict[str, Any], key: str, deadline: float) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
        except (OSError, ValueError) as e:
            raise SandboxStartError(f"the sandbox's message relay is gone ({e})") from None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SandboxStartError("the sandbox's message relay did not answer within start_timeout_s")
            try:
                msg = self._replies.get(timeout=min(left, POLL_S))
            except queue.Empty:
                continue
            if msg.get("closed"):
                raise SandboxStartError(f"the sandbox's message relay exited ({self.proc.poll()})")
            if "error" in msg:
                raise SandboxStartError(f"the sandbox's message relay failed: {str(msg['error'])[:300]}")
            if key in msg:
                return

    def kill(self) -> None:
        kill(self.proc.pid)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("sandbox relay %d did not exit after SIGKILL", self.proc.pid)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        remove_tree(str(self.dir))


class _Zygote:
    """A slot's long-lived sandbox process, which forks one fresh kernel per trajectory (see ``boot.py``).

    Everything a trajectory leaves behind is removed before the next kernel starts: the host kills
    every process of the slot except the zygote, and the zygote empties the writable dirs before
    it forks. Kernels of one slot never run at the same time.
    """

    def __init__(self, config: SandboxConfig, plan: Plan, slot: Slot, cancel: threading.Event | None = None):
        self.slot = slot
        self.cancel = cancel
        """Set by a closing pool: a start still waiting gives up at once (:meth:`check_cancel`)."""
        self.conn_inside = conn_inside(plan, slot)
        """The slot's connection dir as the sandbox sees it."""
        self.exits: OrderedDict[int, int] = OrderedDict()
        """ns pid -> exit code of processes the zygote has reaped (the last ``EXITS_KEPT``)."""
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._count = 0
        cmd_r, cmd_w = os.pipe()
        rep_r, rep_w = os.pipe()
        rfd = wfd = args_r = args_w = None
        if plan.bwrap:
            rfd, wfd = os.pipe()
            args_r, args_w = os.pipe()
        cmd, payload = build_command(config, plan, slot, (cmd_r, rep_w), wfd, args_r)
        self.log_tail: deque[str] = deque(maxlen=LOG_LINES)
        try:
            self.relay = _Relay(config, slot)  # starts while the zygote boots
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=tuple(fd for fd in (cmd_r, rep_w, wfd, args_r) if fd is not None),
                start_new_session=True,
            )
        except BaseException:
            for fd in (rfd, args_w, cmd_w, rep_r):
                if fd is not None:
                    os.close(fd)
            relay = getattr(self, "relay", None)
            if relay is not None:
                relay.kill()
            raise
        finally:
            for fd in (cmd_r, rep_w, wfd, args_r):
                if fd is not None:
                    os.close(fd)
        if args_w is not None:
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(args_w, view) :]
            except OSError as e:
                log.warning("could not pass bubblewrap its arguments: %s", e)
            finally:
                os.close(args_w)
        self._cmd = os.fdopen(cmd_w, "wb", buffering=0)
        self._rep = rep_r
        threading.Thread(target=self._drain, daemon=True, name=f"sandbox-log-{slot.index}").start()
        threading.Thread(target=self._read_replies, daemon=True, name=f"sandbox-ctl-{slot.index}").start()
        self.ns_init: int | None = None
        self.pid = self.proc.pid
        deadline = time.monotonic() + config.start_timeout_s
        try:
            if rfd is not None:
                self.ns_init = _read_child_pid(rfd, deadline)
            ready = self._reply(("ready",), deadline, starting=True)
            if self.ns_init is not None:
                kids = children_of(self.ns_init)
                self.pid = kids[0] if kids else self.ns_init
            if ready.get("threads", 1) > 1:
                log.warning("sandbox zygote runs %d threads; forking it may be unsafe", ready["threads"])
        except BaseException:
            self.kill()
            raise

    def _drain(self) -> None:
        """Keep the last lines of the sandbox's log; reads in chunks, so a line with no end costs nothing."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        partial = b""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()[:LOG_LINE_CHARS]
            for raw in lines[-LOG_LINES:]:
                self.log_tail.append(raw.decode("utf-8", "replace").rstrip()[:LOG_LINE_CHARS])
        if partial:
            self.log_tail.append(partial.decode("utf-8", "replace").rstrip())

    def _read_replies(self) -> None:
        def overlong() -> None:
            log.warning("sandbox slot %d: dropped an overlong control line", self.slot.index)

        pump_json_lines(self._rep, self._handle_reply, on_overlong=overlong)
        self._replies.put({"closed": True})
        os.close(self._rep)

    def _handle_reply(self, msg: dict[str, Any]) -> None:
        if "exited" in msg:
            self.exits[int(msg["exited"])] = int(msg["status"])
            while len(self.exits) > EXITS_KEPT:
                self.exits.popitem(last=False)
        else:
            self._replies.put(msg)

    def check_cancel(self) -> None:
        """Raise :class:`SandboxStartError` when the pool that started this slot is closing."""
        if self.cancel is not None and self.cancel.is_set():
            raise SandboxStartError("start abandoned: the kernel pool is closing")

    def _reply(self, keys: tuple[str, ...], deadline: float, *, starting: bool = False) -> dict[str, Any]:
        """The next reply with one of ``keys``; ``starting``: a start, which a closing pool abandons
        (never a sweep: what it kills must die even while the pool closes)."""
        while True:
            if starting:
                self.check_cancel()
            left = deadline - time.monotonic()
            if left <= 0:
                raise self.fail("no answer within start_timeout_s")
            try:
                msg = self._replies.get(timeout=min(left, POLL_S))
            except queue.Empty:
                if self.proc.poll() is not None:
                    time.sleep(0.05)  # let the drain thread catch the last words
                    raise self.fail(f"process exited with code {self.proc.returncode}") from None
                if self.stopped():
                    raise self.fail("the zygote was stopped (SIGSTOP)") from None
                continue
            if msg.get("closed"):
                self.proc.wait(timeout=1)
                time.sleep(0.05)
                raise self.fail(f"process exited with code {self.proc.poll()}")
            if any(k in msg for k in keys):
                return msg

    def fail(self, why: str) -> SandboxStartError:
        tail = "\n".join(self.log_tail)
        return SandboxStartError(
            f"kernel did not start: {why}" + (f"\nkernel output:\n{tail}" if tail else "")
        )

    def stopped(self) -> bool:
        """The zygote is stopped (a kernel sent it SIGSTOP) or gone: it will never answer again."""
        st = proc_stat(self.pid)
        return st is None or st[0] in ("T", "t", "Z", "X")

    def alive(self) -> bool:
        return self.proc.poll() is None and not self.stopped() and self.relay.alive()

    def spawn(self, conn: str, deadline: float) -> tuple[int, int]:
        """Fork a kernel on ``conn`` (a path inside the sandbox); returns (pid inside it, pid on the host)."""
        try:
            self._cmd.write((json.dumps({"op": "spawn", "conn": conn}) + "\n").encode())
        except OSError as e:
            raise self.fail(f"zygote is gone ({e})") from None
        msg = self._reply(("spawned", "unclean"), deadline, starting=True)
        if "unclean" in msg:
            raise _SlotUnclean(f"the slot could not be emptied: {str(msg['unclean'])[:300]}")
        ns_pid = int(msg["spawned"])
        if self.ns_init is None:
            return ns_pid, ns_pid
        while time.monotonic() < deadline:
            # the slot's cgroup lists few pids; without one, scan the zygote's children in /proc
            candidates = self.slot.cgroup.pids() if self.slot.cgroup is not None else children_of(self.pid)
            for pid in candidates:
                if pid != self.pid and _ns_pid(pid) == ns_pid:
                    return ns_pid, pid
            time.sleep(0.002)
        raise self.fail("the forked kernel's host pid was not found")

    def next_name(self) -> str:
        self._count += 1
        return f"k{self._count}"

    def slot_pids(self) -> set[int]:
        """Every process of the slot (its cgroup, else its uid); empty when neither is known."""
        if self.slot.cgroup is not None:
            return self.slot.cgroup.pids()
        if self.slot.uid is not None:
            return set(pids_of_uid(self.slot.uid))
        return set()

    def sweep(self, timeout: float = 2.0) -> bool:
        """Have the zygote kill every process left under it (all a finished kernel left running)."""
        if not self.alive():
            return False
        try:
            self._cmd.write(b'{"op": "sweep"}\n')
            self._reply(("swept",), time.monotonic() + timeout)
            return True
        except (OSError, SandboxStartError):
            return False

    def kill(self) -> None:
        if self.slot.cgroup is None and self.slot.uid is None and self.ns_init is None:
            self.sweep()  # nothing else finds the processes a kernel detached from itself
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
        self.relay.kill()
        try:
            self._cmd.close()
        except OSError:
            pass


class _Kernel:
    """One trajectory's kernel: a fresh fork of the slot's zygote, and its client.

    Its connection file and sockets live in a dir of their own, made by the host in the emptied
    ``conn`` dir and removed when the kernel is killed; the file is written without following links.
    """

    def __init__(self, zygote: _Zygote, deadline: float, config: SandboxConfig):
        self.zygote = zygote
        self.slot = zygote.slot
        name = zygote.next_name()
        conn_dir = self.slot.conn_dir
        left = empty_dir(str(conn_dir), [])  # nothing of an earlier kernel, whatever its kill left
        if left:
            raise _SlotUnclean(f"the connection dir could not be emptied: {left[:5]}")
        self.dir = conn_dir / name
        self.conn = conn_dir / f"{name}.json"
        os.mkdir(self.dir, 0o700)
        if self.slot.uid is not None:
            os.chown(self.dir, self.slot.uid, self.slot.uid)
        info: dict[str, Any] = {
            "transport": "ipc",
            "ip": f"{zygote.conn_inside}/{name}/k",
            "shell_port": 1,
            "iopub_port": 2,
            "stdin_port": 3,
            "control_port": 4,
            "hb_port": 5,
            "key": secrets.token_hex(16),
            "signature_scheme": "hmac-sha256",
            "kernel_name": "",
        }
        _write_new_file(self.conn, json.dumps(info).encode(), self.slot.uid)
        cg = self.slot.cgroup
        self.oom0 = cg.oom_kills() if cg is not None else 0
        self.ns_pid, self.pid = zygote.spawn(f"{zygote.conn_inside}/{name}.json", deadline)
        relay = zygote.relay
        empty_dir(str(relay.dir), [])  # the sockets of earlier kernels
        relay.attach(str(self.dir / "k"), str(relay.dir / name), deadline)
        self.info = {**info, "ip": str(relay.dir / name)}  # this process talks to the relay only
        self.zmq_context = zmq.Context()
        self.zmq_context.setsockopt(zmq.MAXMSGSIZE, max_message_bytes(config))
        self.zmq_context.setsockopt(zmq.RCVHWM, RCVHWM)
        self.zmq_context.setsockopt(zmq.LINGER, 0)
        # The blocking client runs its coroutines on an event loop that jupyter_core keeps in a context
        # variable. Contexts are copied into asyncio.to_thread workers, so two workers could be handed
        # the same loop and one would find it "already running". Each kernel's client therefore runs in
        # its own context, with its own loop (calls on one sandbox are serialised by its lock).
        self.ctx = contextvars.Context()
        try:
            self.ctx.run(self._connect, deadline)
        except BaseException:
            self.kill()
            raise

    def _connect(self, deadline: float) -> None:
        self.client = BlockingKernelClient(context=self.zmq_context)
        self.client.load_connection_info(self.info)  # type: ignore[arg-type]
        # liveness comes from the process itself; stdin and control are never used (and not relayed)
        self.client.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=False)
        self.poller = zmq.Poller()
        self.poller.register(self.client.shell_channel.socket, zmq.POLLIN)
        self.poller.register(self.client.iopub_channel.socket, zmq.POLLIN)
        self._wait_ready(deadline)

    def _wait_ready(self, deadline: float) -> None:
        kc = self.client
        while True:
            msg_id = kc.kernel_info()
            got_reply = False
            while not got_reply:
                if not self.alive():
                    time.sleep(0.05)  # let the drain thread catch the last words
                    raise self.zygote.fail(f"kernel exited with code {self.exit_code()}")
                if time.monotonic() > deadline:
                    raise self.zygote.fail("no answer within start_timeout_s")
                self.zygote.check_cancel()
                try:
                    reply = kc.get_shell_msg(timeout=POLL_S)
                except queue.Empty:
                    continue
                got_reply = reply["parent_header"].get("msg_id") == msg_id
            # the iopub subscription must be live before the first cell, or its output is lost
            try:
                kc.get_iopub_msg(timeout=0.02)
            except queue.Empty:
                continue  # not subscribed yet: ask again
            try:
                while True:
                    kc.get_iopub_msg(timeout=0.01)
            except queue.Empty:
                return

    def alive(self) -> bool:
        if not self.zygote.alive() or self.ns_pid in self.zygote.exits:
            return False
        st = proc_stat(self.pid)
        return st is not None and st[0] not in ("Z", "X")

    def exit_code(self) -> int | None:
        return self.zygote.exits.get(self.ns_pid)

    def oom_killed(self) -> bool:
        cg = self.slot.cgroup
        return cg is not None and cg.oom_kills() > self.oom0

    def cpu_s(self) -> float | None:
        cg = self.slot.cgroup
        if cg is not None and "cpuacct" in cg.controllers:
            return cg.cpu_s()
        return process_cpu_s(self.pid)

    def _keep(self) -> set[int]:
        z = self.zygote
        return {z.proc.pid, z.pid} | ({z.ns_init} if z.ns_init is not None else set())

    def kill_strays(self) -> int:
        """Kill every process in the sandbox except the kernel and the zygote (after a timed-out cell)."""
        return self._kill_all_but(self._keep() | {self.pid})

    def _kill_all_but(self, keep: set[int]) -> int:
        if self.slot.cgroup is None and self.slot.uid is None:
            return 0  # nothing tells the slot's processes apart (see the zygote's sweep)
        pids = self.zygote.slot_pids()
        killed = 0
        for _ in range(50):  # a fork bomb keeps forking while we kill: repeat until none is left
            strays = pids - keep
            if not strays:
                break
            for pid in strays:
                kill(pid)
            killed += len(strays)
            time.sleep(0.005)
            pids = self.zygote.slot_pids()
        return killed

    def interrupt(self) -> None:
        kill(self.pid, signal.SIGINT)

    def kill(self) -> None:
        """Kill the kernel and everything it started; the zygote stays, ready for the next fork."""
        kill(self.pid)
        if self.slot.cgroup is None and self.slot.uid is None:
            try:  # no cgroup, no uid: the kernel's session, then what the zygote inherited
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.zygote.sweep()
        else:
            self._kill_all_but(self._keep())
        end = time.monotonic() + 2.0
        while self.zygote.alive() and self.ns_pid not in self.zygote.exits and time.monotonic() < end:
            time.sleep(0.002)  # wait for the zygote to reap it, so its pid is not mistaken later
        client = getattr(self, "client", None)
        if client is not None:
            client.stop_channels()  # plain socket closes: no event loop (and maybe inside self.ctx now)
            _close_loop(self.ctx)
        self.zmq_context.destroy(linger=0)
        self.zygote.relay.detach()
        remove_tree(str(self.dir))
        try:
            self.conn.unlink()
        except OSError:
            pass


def _write_new_file(path: Path, data: bytes, uid: int | None) -> None:
    """Create ``path`` (never an existing file, never through a link), owned by ``uid``, readable by it only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o400)
    try:
        if uid is not None:
            os.fchown(fd, uid, uid)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _ns_pid(pid: int) -> int | None:
    """The innermost pid of a host process (its pid inside its pid namespace)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return None


def wait_readable(fd: int, timeout: float) -> bool:
    """Whether ``fd`` became readable within ``timeout`` seconds. ``poll``, not ``select``: a process
    holding many kernels (zmq sockets, pipes) has descriptors past 1024, which ``select`` refuses
    ("filedescriptor out of range in select()": no kernel could start at 64 trajectories at once)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(max(0.0, timeout) * 1000))


def _read_child_pid(fd: int, deadline: float) -> int:
    buf = b""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not wait_readable(fd, left):
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

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        start: bool = True,
        _zygote: _Zygote | None = None,
        _give_back: Callable[[_Zygote], None] | None = None,
        _cancel: threading.Event | None = None,
    ):
        self.config = config or SandboxConfig.from_env()
        self._cancel = _cancel
        """A pool's closing event: set, a start in progress is abandoned."""
        self.plan = make_plan(self.config)
        self._lock = threading.RLock()
        self._zygote = _zygote
        self._slot: Slot | None = _zygote.slot if _zygote is not None else None
        self._give_back = _give_back
        """Set by a pool: on close the slot's zygote goes back to it instead of being killed."""
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
            try:
                if self._zygote is None:
                    self._start_zygote()
                self._new_kernel()
            except BaseException:
                self._give_back = None  # a slot that cannot start a kernel is not reused
                self._drop_zygote()
                raise

    def _start_zygote(self) -> None:
        if self._slot is None:
            uid_base = self.config.uid_base if self.plan.drop_uid else None
            c = self.config
            self._slot = claim(c.base_dir, c.max_slots, uid_base, self.plan.cgroups, c.conn_kb, c.conn_inodes)
            if self._slot.cgroup is not None:
                c = self.config
                self._slot.cgroup.create(c.memory_mb, c.pids_max, c.cpu_quota)
        self._zygote = _Zygote(self.config, self.plan, self._slot, self._cancel)

    def _new_kernel(self) -> None:
        """A fresh kernel forked from the zygote; if the zygote cannot give one, a whole new sandbox."""
        deadline = time.monotonic() + self.config.start_timeout_s
        assert self._zygote is not None
        if self._zygote.alive():
            try:
                self._kernel = _Kernel(self._zygote, deadline, self.config)
                return
            except _SlotUnclean as e:  # never reuse it: everything in it dies with a new sandbox
                log.warning("sandbox slot %d: %s; starting a fresh sandbox", self._zygote.slot.index, e)
            except SandboxStartError as e:
                if self._zygote.alive():
                    raise
                log.info("sandbox zygote died or was stopped; starting a new one: %s", e)
        self._zygote.kill()
        assert self._slot is not None
        for d in (self._slot.conn_dir, self._slot.host_workdir):
            left = empty_dir(str(d), [])
            if left:
                raise SandboxStartError(f"sandbox slot {self._slot.index} cannot be emptied: {left[:5]}")
        self._zygote = _Zygote(self.config, self.plan, self._slot, self._cancel)
        self._kernel = _Kernel(self._zygote, time.monotonic() + self.config.start_timeout_s, self.config)

    def _drop_zygote(self) -> None:
        """Kill the zygote and free the slot (or hand both back to the pool that lent them)."""
        z, self._zygote = self._zygote, None
        if self._give_back is not None and z is not None:
            give, self._give_back = self._give_back, None
            self._slot = None
            give(z)
            return
        if z is not None:
            z.kill()
        self._release_slot()

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
                assert self._kernel is not None
                res = self._kernel.ctx.run(self._execute, code, timeout)
            if restarted and not res.kernel_restarted:
                res = ExecResult(**{**res.__dict__, "kernel_restarted": True})
            return res

    def _execute(self, code: str, timeout: float) -> ExecResult:
        k = self._kernel
        assert k is not None
        cfg = self.config
        kc = k.client
        col = OutputCollector(cfg.output_cap_bytes)
        cpu0 = k.cpu_s()
        t0 = time.monotonic()
        _drain_shell(kc)
        msg_id = kc.execute(code, store_history=True, allow_stdin=False, stop_on_error=False)
        mine = (msg_id, kc.session.session)
        shell_sock, iopub_sock = kc.shell_channel.socket, kc.iopub_channel.socket
        deadline = t0 + timeout
        interrupted_at: float | None = None
        replied_at: float | None = None
        heard_at = t0  # when the last iopub message for this request came
        relay = k.zygote.relay
        dropped0 = relay.dropped  # bytes of this cell's messages the relay did not forward
        idle = False
        timed_out = flooded = died = lost = False
        reply_error: ExecError | None = None  # the error the shell reply reports, if any
        while True:
            now = time.monotonic()
            if replied_at is not None and idle:  # finished: the shell reply and the idle status for it
                relay.settle()  # reports of this cell's messages the relay dropped
                if relay.dropped > dropped0:
                    col.count_dropped(relay.dropped - dropped0)
                if col.error is None:  # the iopub error message can be lost in a flood; the reply is not
                    col.error = reply_error
                return self._finish(col, k, cpu0, t0, timed_out, flooded, timeout)
            if replied_at is not None and now >= max(replied_at, heard_at) + IDLE_AFTER_REPLY_S:
                lost = True  # the iopub channel is gone (zmq drops a connection that sent an oversized frame)
                break
            if interrupted_at is None and now >= deadline and replied_at is None:
                timed_out = True
                interrupted_at = now
                k.interrupt()
            elif interrupted_at is not None and now >= interrupted_at + cfg.interrupt_grace_s:
                break  # did not stop: kill below
            limit = deadline if interrupted_at is None else interrupted_at + cfg.interrupt_grace_s
            if replied_at is not None:
                limit = min(limit, max(replied_at, heard_at) + IDLE_AFTER_REPLY_S)
            wait = max(min(limit - now, POLL_S), 0.001)
            ready = dict(k.poller.poll(int(wait * 1000)))
            if not ready:
                if not k.alive():
                    died = True
                    break
                continue
            if shell_sock in ready:
                reply = _recv(kc.get_shell_msg)
                if reply is not None and _parent(reply) == mine and reply.get("msg_type") == "execute_reply":
                    replied_at = time.monotonic()
                    reply_error = _reply_error(reply)
            if iopub_sock in ready:
                for _ in range(RCVHWM):  # what is queued now, then look at the shell socket again
                    msg = _recv(kc.get_iopub_msg)
                    if msg is None:
                        break
                    if _parent(msg) != mine:
                        continue  # another request's, or forged with a foreign parent
                    heard_at = time.monotonic()
                    if self._handle(msg, col):
                        idle = True
            if relay.dropped > dropped0:
                col.count_dropped(relay.dropped - dropped0)
                dropped0 = relay.dropped
            if interrupted_at is None and col.offered > cfg.output_cap_bytes * cfg.flood_kill_factor:
                flooded = True
                interrupted_at = time.monotonic()
                k.interrupt()
        wall = time.monotonic() - t0
        cpu = _delta(cpu0, k.cpu_s())
        if died:
            if k.oom_killed():
                why = "out of memory"
            elif not relay.alive():
                why = "its message relay died: a message larger than the relay's memory limit"
            elif not k.zygote.alive():
                why = "the sandbox around it was killed or stopped"
            else:
                why = f"exit status {k.exit_code()}"
            col.error = ExecError("KernelDied", f"the kernel process died ({why}); all variables lost", "")
        elif lost:
            col.error = ExecError(
                "OutputLost",
                "the kernel's output channel broke (an oversized or lost message); kernel restarted",
                "",
            )
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
        """Fold one iopub message into ``col``; True when it says the cell is finished (kernel idle).

        Messages come from code the sandbox runs: every field is checked, every string made safe."""
        kind = msg.get("msg_type")
        c = msg.get("content")
        if not isinstance(c, dict):
            return False
        if kind == "stream":
            col.add("stderr" if c.get("name") == "stderr" else "stdout", _str(c.get("text")))
        elif kind in ("execute_result", "display_data"):
            data = c.get("data")
            text = data.get("text/plain") if isinstance(data, dict) else None
            md = c.get("metadata")
            dropped = md.get("mathagent/dropped_bytes", 0) if isinstance(md, dict) else 0
            dropped = min(max(dropped, 0), 1 << 40) if isinstance(dropped, int) else 0
            if kind == "execute_result":
                col.set_result(_str(text), dropped)
            elif text:
                col.add("stdout", _str(text) + "\n")
        elif kind == "error":
            col.error = _exec_error(c)
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
        """Kill the current kernel (and all it started) and fork a fresh one from the slot's zygote."""
        if self._kernel is not None:
            self._kernel.kill()
            self._kernel = None
        self.restarts += 1
        self._new_kernel()

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
            self._drop_zygote()

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


def _close_loop(ctx: contextvars.Context) -> None:
    """Close the event loop jupyter_core made for a client in ``ctx`` (each holds an epoll fd)."""
    try:
        from jupyter_core.utils import _loop
    except ImportError:
        return
    loop = ctx.get(_loop)
    if loop is not None and not loop.is_running() and not loop.is_closed():
        loop.close()


def _drain_shell(kc: BlockingKernelClient) -> None:
    """Discard earlier execute replies (their content already came over iopub) so they never pile up."""
    try:
        while kc.shell_channel.msg_ready():
            kc.get_shell_msg(timeout=0)
    except queue.Empty:
        pass


def _recv(get: Callable[..., dict[str, Any]]) -> dict[str, Any] | None:
    """One message without waiting, or None; a message that does not parse is dropped, not raised."""
    try:
        msg = get(timeout=0)
    except queue.Empty:
        return None
    except Exception as e:  # bad signature, bad JSON: the kernel's process sent it, not jupyter_client
        log.info("dropped a malformed kernel message: %s", type(e).__name__)
        return {}
    return msg if isinstance(msg, dict) else {}


def _reply_error(reply: dict[str, Any]) -> ExecError | None:
    """The error an ``execute_reply`` reports, or None when it reports none.

    The iopub ``error`` message normally carries it; a cell that floods iopub can make that message be
    dropped on the way (PUB sockets drop past their high-water mark), while the shell reply, on a
    channel that does not drop, still says how the cell ended. Checked like every kernel message."""
    c = reply.get("content")
    if not isinstance(c, dict) or c.get("status") != "error":
        return None
    return _exec_error(c)


def _exec_error(content: dict[str, Any]) -> ExecError:
    """The error in an iopub ``error`` message's or an error ``execute_reply``'s content (the same
    ``ename``/``evalue``/``traceback`` fields), every string made safe and bounded."""
    tb = content.get("traceback")
    frames = [_str(f) for f in tb] if isinstance(tb, list) else []
    return ExecError(
        safe_text(_str(content.get("ename")))[:1000],
        safe_text(_str(content.get("evalue")))[:20_000],
        safe_text(clean_traceback(frames)),
    )


def _parent(msg: dict[str, Any]) -> tuple[Any, Any] | None:
    ph = msg.get("parent_header")
    return (ph.get("msg_id"), ph.get("session")) if isinstance(ph, dict) else None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else max(b - a, 0.0)
