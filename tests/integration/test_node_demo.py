"""`cniplug node demo`: it runs the whole story on 3 simulated nodes, every check passes, and nothing is left,
also when it is interrupted (Ctrl-C) halfway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from cniplug.node import sim

pytestmark = pytest.mark.root


def ours_running(prefix: str) -> list[int]:
    """PIDs whose command line names the demo's prefix (its etcd, holders, agents), read from /proc."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
            except OSError:
                continue
            if prefix.encode() in b" ".join(cmd) and b"pytest" not in b" ".join(cmd):
                found.append(int(pid))
    return found


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_demo_runs_every_check_and_leaves_nothing(lang: str) -> None:
    prefix = f"tnd{lang}"
    done = subprocess.run([sys.executable, "-m", "cniplug", "node", "demo", "--nodes", "3", "--prefix", prefix,
                           "--lang", lang], capture_output=True, text=True, timeout=300)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "FAIL" not in out
    assert out.count("ttl=62") >= 3
    assert "/cniplug/network/subnets/10.239.0.0-24" in out and '"type": "cniplug-bridge"' in out
    assert "10.239.200.12" in out  # the outside saw node n2's address
    assert ("All checks passed." if lang == "en" else "全部检查通过。") in out
    assert not [n for n in sim.netns_names() if n.startswith(prefix)]
    assert not ours_running(prefix)


def test_interrupted_demo_cleans_up() -> None:
    prefix = "tndint"
    proc = subprocess.Popen([sys.executable, "-m", "cniplug", "node", "demo", "--nodes", "3", "--prefix", prefix],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    try:
        seen = ""
        deadline = time.monotonic() + 120
        while "Two pods per node" not in seen and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
        assert "Two pods per node" in seen, seen
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Interrupted" in rest and "nothing left" in rest, rest
    assert proc.returncode == 1
    assert not [n for n in sim.netns_names() if n.startswith(prefix)]
    assert not ours_running(prefix)
