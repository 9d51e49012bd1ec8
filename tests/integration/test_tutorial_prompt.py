"""`cniplug tutorial N --run --step` answered with Ctrl-D (end of input on the terminal): stop and clean up, as
with q, without a Python traceback. Names start with `qa3`."""

from __future__ import annotations

import os
import pty
import select
import sys
import time

import pytest

from tests.conftest import sh

pytestmark = pytest.mark.root


def test_ctrl_d_at_a_step_prompt_stops_and_cleans_up() -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: the lab on a terminal
        os.execv(sys.executable, [sys.executable, "-m", "cniplug", "tutorial", "1", "--run", "--step",
                                  "--prefix", "qa3s-"])
    out = b""

    def read_until(text: bytes, seconds: float = 20.0) -> None:
        nonlocal out
        deadline = time.monotonic() + seconds
        while text not in out and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    out += os.read(fd, 65536)
                except OSError:
                    return

    try:
        read_until(b"[1/")
        os.write(fd, b"\n")  # run the first step
        read_until(b"[2/")
        os.write(fd, b"\x04")  # Ctrl-D at the second prompt
        read_until(b"tutorial example 1:")
        read_until(b"\n", 2.0)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    text = out.decode(errors="replace")
    assert "Traceback" not in text, text
    assert "everything the lab made is gone" in text and os.waitstatus_to_exitcode(status) == 1, text
    assert not [n for n in sh("ip", "netns", "list").splitlines() if n.startswith("qa3s-")]
