"""`cniplug tutorial N --run` on this machine: every ping passes and nothing is left behind."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import sh

pytestmark = pytest.mark.root


def snapshot(prefix: str) -> tuple[str, str, str, str]:
    netns = "\n".join(n for n in sh("ip", "netns", "list").splitlines() if n.startswith(prefix))
    links = "\n".join(n for n in sh("ip", "-o", "link").splitlines() if prefix in n)
    rules = "\n".join(r for r in sh("iptables-save").splitlines() if prefix in r or "203.0.113" in r)
    return netns, links, rules, sh("cat", "/proc/sys/net/ipv4/ip_forward")


@pytest.mark.parametrize("example", [1, 2, 3])
def test_tutorial_runs_and_cleans_up(example: int) -> None:
    prefix = f"tct{example}-"
    before = snapshot(prefix)
    proc = subprocess.run([sys.executable, "-m", "cniplug", "tutorial", str(example), "--run", "--prefix", prefix,
                           "--subnet", f"10.250.{130 + 2 * example}.0/24"], capture_output=True, text=True,
                          timeout=120)
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"tutorial example {example}: passed" in proc.stdout
        assert proc.stdout.count("0% packet loss") >= 2
        assert snapshot(prefix) == before
    finally:
        for name in sh("ip", "netns", "list").split():
            if name.startswith(prefix):
                subprocess.run(["ip", "netns", "delete", name])
