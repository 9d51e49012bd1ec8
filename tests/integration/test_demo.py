"""The README's main job, `cniplug demo`: it tells the whole story with the real objects and leaves nothing."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

from tests.conftest import sh

pytestmark = pytest.mark.root


def leftovers(prefix: str) -> tuple[list[str], list[str], int]:
    return ([n for n in sh("ip", "netns", "list").splitlines() if n.startswith(prefix)],
            [n for n in sh("ip", "-o", "link").splitlines() if prefix in n],
            sh("iptables-save", "-t", "nat").count(prefix))


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_demo_tells_the_story_and_cleans_up(lang: str) -> None:
    prefix = f"tdm{lang}"
    proc = subprocess.run([sys.executable, "-m", "cniplug", "demo", "--subnet", "10.250.175.0/24", "--prefix", prefix,
                           "--lang", lang, "--outside", "198.18.2.0/24"], capture_output=True, text=True, timeout=180)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "demo passed" in out and "2 received" in out
    assert f"CNI_NETNS=/run/netns/{prefix}" in out and '"type": "cniplug-bridge"' in out  # env and stdin
    # the script that ran names the veth the result reports (not another one from a dry run)
    veth = re.search(r'"name": "(veth[0-9a-f]{8})"', out)
    assert veth and f"ip link add {veth.group(1)} " in out, "the script shown is not the one that ran"
    assert "127.0.0.1/8" in out  # loopback brought up by cniplug-loopback
    assert "-j MASQUERADE" in out and "10.250.175.2" in out  # NAT chain and IPAM file
    assert re.search(r"(saw|看到的是) 198\.18\.2\.254", out), "the outside did not see the host's address"
    assert "<->" in out and ("veth pairs:" in out or "veth pair:" in out)  # the topology
    if lang == "zh":
        assert "运行时交给" in out and "# 创建网桥" in out
        assert "已清理：" in out and "演示通过 (demo passed)" in out and "cleaned up:" not in out
    assert leftovers(prefix) == ([], [], 0)


def test_demo_interrupted_or_piped_to_head_leaves_nothing() -> None:
    prefix = "tdmint"
    proc = subprocess.Popen([sys.executable, "-m", "cniplug", "demo", "--subnet", "10.250.176.0/24", "--prefix", prefix,
                             "--outside", "198.18.3.0/24"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen = ""
    while "ping the gateway" not in seen:  # the bridge, the NAT chain and the outside stand-in exist now
        line = proc.stdout.readline()
        assert line, seen
        seen += line
    proc.send_signal(signal.SIGINT)
    out = seen + proc.communicate(timeout=120)[0]
    assert "cleaned up" in out and proc.returncode == 1, out
    assert leftovers(prefix) == ([], [], 0)
    # the reader of its output goes away (`cniplug demo | head`): it still cleans up
    piped = subprocess.run(f"{sys.executable} -m cniplug demo --subnet 10.250.176.0/24 --prefix {prefix} "
                           f"--outside 198.18.3.0/24 | head -3", shell=True, capture_output=True, text=True,
                           timeout=120)
    assert len(piped.stdout.splitlines()) == 3
    assert leftovers(prefix) == ([], [], 0)


def test_an_outside_range_the_host_uses_is_refused() -> None:
    """The stand-in's subnet gets a route on the host: a range the host already routes must not be taken over."""
    subprocess.run(["ip", "link", "add", "tdxchk0", "type", "veth", "peer", "name", "tdxchk1"],
                   check=True)
    try:
        sh("ip", "addr", "add", "198.18.9.1/24", "dev", "tdxchk0")
        sh("ip", "link", "set", "tdxchk0", "up")
        proc = subprocess.run([sys.executable, "-m", "cniplug", "demo", "--prefix", "tdmchk", "--outside",
                               "198.18.9.0/24"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and "198.18.9.0/24 is in use on this host" in proc.stderr, proc.stderr
        assert len(proc.stderr.splitlines()) == 1 and not leftovers("tdmchk")[0]
    finally:
        subprocess.run(["ip", "link", "delete", "tdxchk0"], capture_output=True)
