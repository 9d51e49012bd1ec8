"""`cniplug tutorial N --run` on this machine: every ping passes and nothing is left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import sh

pytestmark = pytest.mark.root


def snapshot(prefix: str, subnet: str) -> tuple[str, str, str]:
    """This test's namespaces, links and iptables rules (by its prefix and subnet: other suites may run tutorials
    with 203.0.113.0/24 at the same time, and turn ip_forward on, so neither is compared)."""
    netns = "\n".join(n for n in sh("ip", "netns", "list").splitlines() if n.startswith(prefix))
    links = "\n".join(n for n in sh("ip", "-o", "link").splitlines() if prefix in n)
    rules = "\n".join(r for r in sh("iptables-save").splitlines() if prefix in r or subnet in r)
    return netns, links, rules


@pytest.mark.parametrize("example", [1, 2, 3])
def test_tutorial_runs_and_cleans_up(example: int) -> None:
    prefix, subnet = f"tct{example}-", f"10.250.{130 + 2 * example}.0/24"
    before = snapshot(prefix, subnet)
    proc = subprocess.run([sys.executable, "-m", "cniplug", "tutorial", str(example), "--run", "--prefix", prefix,
                           "--subnet", subnet], capture_output=True, text=True, timeout=120)
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"tutorial example {example}: passed" in proc.stdout
        assert proc.stdout.count("0% packet loss") >= 2
        # At once: --run says "passed" only after the kernel removed the host ends of its deleted namespaces' veths.
        assert snapshot(prefix, subnet) == before
    finally:
        for name in sh("ip", "netns", "list").split():
            if name.startswith(prefix):
                subprocess.run(["ip", "netns", "delete", name])
        wait_links_gone(prefix)


def wait_links_gone(prefix: str, timeout: float = 10.0) -> None:
    """The kernel removes a deleted namespace's veths asynchronously: wait, so the next test starts clean."""
    deadline = time.monotonic() + timeout
    while any(name.startswith(prefix) for name in os.listdir("/sys/class/net")) and time.monotonic() < deadline:
        time.sleep(0.05)
