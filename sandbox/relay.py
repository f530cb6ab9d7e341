"""A slot's message relay: the one host process that receives a kernel's zmq messages.

It is not imported by the host: :mod:`mathagent.sandbox.kernel` reads this file and runs it with
``python -I -c`` next to the slot's zygote (argv[1]: a JSON config), under an address-space limit of
its own (``RLIMIT_AS``), so whatever a kernel sends costs this process, never the harness.

Why: zmq bounds each frame (``MAXMSGSIZE``) and the count of queued messages (``RCVHWM``), but not
the frames of one multipart message, which libzmq assembles whole before delivering it. A kernel can
therefore make the process that receives its messages hold any number of bytes. Here that process is
the relay: past its limit it dies (libzmq aborts when an allocation fails), and the host, which
watches it, replaces the slot. Messages it receives are forwarded only when they fit
``budget`` bytes in at most ``max_frames`` frames; the others are dropped and reported.

Protocol on its stdin (one JSON line per request) and stdout (one JSON line per event):

- ``{"op": "attach", "kernel": BASE, "front": BASE}``: drop the sockets of the last kernel, connect
  to the kernel's shell (``BASE-1``) and iopub (``BASE-2``) ipc sockets and bind the same two for the
  harness on the ``front`` base; answers ``{"attached": true}``.
- ``{"op": "detach"}``: drop the sockets; answers ``{"detached": true}``.
- ``{"dropped": BYTES, "frames": N, "channel": NAME}`` is written for each message not forwarded.

The shell channel is DEALER to DEALER in front (a DEALER may bind) and DEALER to the kernel's ROUTER
behind, so messages pass through unchanged; iopub is SUB (everything) behind and PUB in front. The
HMAC signatures pass through untouched: the harness still checks every message.
"""

import json
import os
import resource
import sys

import zmq

RCVHWM = 16
"""Messages each socket queues before its peer waits (or, on PUB, before messages are dropped)."""


def _limit(cfg: dict) -> None:
    value = int(cfg["as_bytes"])
    if value > 0:
        try:
            resource.setrlimit(resource.RLIMIT_AS, (value, value))
        except (ValueError, OSError) as e:
            print(json.dumps({"warning": f"cannot limit the relay: {e}"}), flush=True)


def serve(cfg: dict) -> None:
    budget = int(cfg["budget"])
    max_frames = int(cfg["max_frames"])
    ctx = zmq.Context(io_threads=1)
    ctx.setsockopt(zmq.LINGER, 0)
    ctx.setsockopt(zmq.MAXMSGSIZE, budget)
    ctx.setsockopt(zmq.RCVHWM, RCVHWM)
    ctx.setsockopt(zmq.SNDHWM, RCVHWM)
    ctx.setsockopt(zmq.RECONNECT_IVL, 5)  # the kernel may bind a few ms after we connect
    out = sys.stdout

    def say(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    stdin = sys.stdin.fileno()
    socks: dict = {}
    routes: dict = {}
    poller = zmq.Poller()
    poller.register(stdin, zmq.POLLIN)

    def drop_sockets() -> None:
        for s in socks.values():
            if s in routes:
                poller.unregister(s)
            s.close(linger=0)
        socks.clear()
        routes.clear()

    def attach(kernel: str, front: str) -> None:
        drop_sockets()
        back_shell = ctx.socket(zmq.DEALER)
        back_shell.connect(f"ipc://{kernel}-1")
        back_iopub = ctx.socket(zmq.SUB)
        back_iopub.setsockopt(zmq.SUBSCRIBE, b"")
        back_iopub.connect(f"ipc://{kernel}-2")
        front_shell = ctx.socket(zmq.DEALER)
        front_shell.bind(f"ipc://{front}-1")
        front_iopub = ctx.socket(zmq.PUB)
        front_iopub.bind(f"ipc://{front}-2")
        socks.update(bs=back_shell, bi=back_iopub, fs=front_shell, fi=front_iopub)
        routes.update(
            {
                back_shell: (front_shell, "shell"),
                back_iopub: (front_iopub, "iopub"),
                front_shell: (back_shell, ""),
            }
        )
        for s in (back_shell, back_iopub, front_shell):
            poller.register(s, zmq.POLLIN)

    buf = b""
    while True:
        for sock, _ in poller.poll():
            if sock == stdin:
                chunk = os.read(stdin, 65536)
                if not chunk:
                    os._exit(0)  # the host is gone
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    try:
                        req = json.loads(line)
                        if req.get("op") == "attach":
                            attach(req["kernel"], req["front"])
                            say({"attached": True})
                        elif req.get("op") == "detach":
                            drop_sockets()
                            say({"detached": True})
                    except Exception as e:  # the host sees the error; the relay stays up
                        say({"error": f"{type(e).__name__}: {e}"})
                continue
            if sock not in routes:
                continue  # a socket dropped by a request handled in this same poll
            dest, channel = routes[sock]
            for _ in range(RCVHWM):  # what is queued now, then look at the others again
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                size = sum(len(f) for f in frames)
                if channel and (size > budget or len(frames) > max_frames):
                    say({"dropped": size, "frames": len(frames), "channel": channel})
                    del frames
                    continue
                try:
                    dest.send_multipart(frames, zmq.NOBLOCK, copy=False)
                except zmq.Again:  # the harness is not reading: it must not be made to queue more
                    if channel:
                        say({"dropped": size, "frames": len(frames), "channel": channel})


if __name__ == "__main__":
    config = json.loads(sys.argv[1])
    _limit(config)
    serve(config)
