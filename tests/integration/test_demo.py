"""The README's main job, `cniplug demo`, works and leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import sh

pytestmark = pytest.mark.root


def test_demo_runs_and_cleans_up() -> None:
    before = (sh("ip", "netns", "list"), sh("ip", "-o", "link"), sh("iptables-save", "-t", "nat").count("cnidemo"))
    proc = subprocess.run([sys.executable, "-m", "cniplug", "demo", "--subnet", "10.250.175.0/24"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "demo passed" in proc.stdout and "2 received" in proc.stdout
    assert "ip link add" in proc.stdout  # it shows the script it is about to run
    after = (sh("ip", "netns", "list"), sh("ip", "-o", "link"), sh("iptables-save", "-t", "nat").count("cnidemo"))
    assert [line for line in after[0].splitlines() if "cnidemo" in line] == []
    assert "cnidemo" not in after[1] and after[2] == before[2]
