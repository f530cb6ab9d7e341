"""A process holding many kernels has file descriptors past 1024 (each kernel's zmq sockets and
pipes): waiting on one must not use ``select`` (FD_SETSIZE), or no kernel can start any more."""

from __future__ import annotations

import json
import os
import resource
import time

import pytest
from mathagent.sandbox.kernel import _read_child_pid, wait_readable

HIGH_FD = 1500


@pytest.fixture
def high_pipe():
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= HIGH_FD:
        pytest.skip(f"RLIMIT_NOFILE {soft} is too low to open descriptor {HIGH_FD}")
    r, w = os.pipe()
    os.dup2(r, HIGH_FD)
    os.close(r)
    try:
        yield HIGH_FD, w
    finally:
        for fd in (HIGH_FD, w):
            try:
                os.close(fd)
            except OSError:
                pass


def test_wait_readable_takes_a_descriptor_past_1024(high_pipe):
    r, w = high_pipe
    assert not wait_readable(r, 0.01)
    os.write(w, b"x")
    assert wait_readable(r, 1.0)


def test_the_child_pid_is_read_from_a_descriptor_past_1024(high_pipe):
    r, w = high_pipe
    os.write(w, json.dumps({"child-pid": 4242}).encode())
    assert _read_child_pid(r, time.monotonic() + 5) == 4242  # select() raised ValueError here
