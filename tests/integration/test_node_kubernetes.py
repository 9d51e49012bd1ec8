"""The node agent with its Kubernetes source (issue #14 item 5): in a namespace playing the node, against a
fixture API server serving recorded Node objects, it writes the config list for the node's pod CIDR, only
once the installed plugins answer; none for a node without a pod CIDR yet; `--ready` tells which;
`--uninstall` removes it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import sh
from tests.k8s_api import kubeconfig, serve

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
NODE = "tnk-node"
HOST_IP, NODE_IP = "10.238.70.1", "10.238.70.2"


@pytest.fixture
def node() -> Iterator[str]:
    """A namespace joined to the host by a veth (the fixture API server listens on the host's end)."""
    subprocess.run(["ip", "netns", "delete", NODE], capture_output=True)
    subprocess.run(["ip", "link", "delete", "tnkh0"], capture_output=True)
    sh("ip", "netns", "add", NODE)
    try:
        sh("ip", "link", "add", "tnkh0", "type", "veth", "peer", "name", "eth0", "netns", NODE)
        sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", "tnkh0")
        sh("ip", "link", "set", "tnkh0", "up")
        sh("ip", "-n", NODE, "addr", "add", f"{NODE_IP}/30", "dev", "eth0")
        sh("ip", "-n", NODE, "link", "set", "eth0", "up")
        sh("ip", "-n", NODE, "link", "set", "lo", "up")
        yield NODE
    finally:
        subprocess.run(["ip", "netns", "delete", NODE], capture_output=True)
        subprocess.run(["ip", "link", "delete", "tnkh0"], capture_output=True)


def agent(kcfg: Path, conf_dir: Path, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", NODE, sys.executable, "-m", "cniplug", "node",
                           "--source", "kubernetes", "--kubeconfig", str(kcfg), "--name", name,
                           "--address", NODE_IP, "--cluster-cidr", "10.244.0.0/16",
                           "--cni-conf-dir", str(conf_dir), *extra],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def test_agent_writes_the_list_for_its_node_and_removes_it(node: str, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    subprocess.run([sys.executable, "-m", "cniplug", "install", "--bin-dir", str(bin_dir), "--no-auto-helper"],
                   check=True, capture_output=True)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "cniplug-bridge").write_text("#!/bin/sh\nexit 1\n")
    (broken / "cniplug-bridge").chmod(0o755)
    with serve(HOST_IP) as (fake, url):
        kcfg = kubeconfig(tmp_path / "kubeconfig", url)
        conf_dir = tmp_path / "net.d"
        conf = conf_dir / "10-cniplug.conflist"

        # worker-2 has just registered: no pod CIDR, so no config list (the kubelet keeps it NotReady).
        done = agent(kcfg, conf_dir, "worker-2", "--once", "--bin-dir", str(bin_dir))
        assert done.returncode == 0, done.stderr
        assert not conf.exists()
        assert agent(kcfg, conf_dir, "worker-2", "--ready").returncode == 1

        # worker-1 has a pod CIDR, but its plugins do not answer yet: still no list.
        done = agent(kcfg, conf_dir, "worker-1", "--once", "--bin-dir", str(broken))
        assert done.returncode == 0, done.stderr
        assert not conf.exists(), "a config list before the plugins can serve"
        assert f"no config list yet: the plugins in {broken} do not answer" in done.stderr, done.stderr

        done = agent(kcfg, conf_dir, "worker-1", "--once", "--bin-dir", str(bin_dir))
        assert done.returncode == 0, done.stderr
        listed = json.loads(conf.read_text())
        assert listed["name"] == "cniplug-pods"
        bridge = next(p for p in listed["plugins"] if p["type"] == "cniplug-bridge")
        assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24"}]]  # spec.podCIDRs[0] of worker-1
        assert agent(kcfg, conf_dir, "worker-1", "--ready").returncode == 0
        nat = sh("ip", "netns", "exec", NODE, "iptables", "-t", "nat", "-S")
        assert "-s 10.244.0.0/16 -d 10.244.0.0/16" in nat  # pod to pod is not masqueraded
        assert any("/api/v1/nodes" in r for r in fake.requests)

        # Reconciling again changes nothing.
        before = conf.stat().st_mtime_ns
        done = agent(kcfg, conf_dir, "worker-1", "--once", "--bin-dir", str(bin_dir))
        assert done.returncode == 0 and conf.stat().st_mtime_ns == before

        done = agent(kcfg, conf_dir, "worker-1", "--uninstall")
        assert done.returncode == 0, done.stderr
        assert not conf.exists()
        assert "10.244.0.0/16" not in sh("ip", "netns", "exec", NODE, "iptables", "-t", "nat", "-S")
        assert agent(kcfg, conf_dir, "worker-1", "--ready").returncode == 1


def test_agent_with_an_unreachable_api_changes_nothing(node: str, tmp_path: Path) -> None:
    kcfg = kubeconfig(tmp_path / "kubeconfig", f"http://{HOST_IP}:9")
    done = agent(kcfg, tmp_path / "net.d", "worker-1", "--once")
    assert done.returncode == 1 and "listing nodes" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "net.d").exists()


def test_agent_without_api_configuration_says_so_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "cniplug", "node", "--source", "kubernetes", "--kubeconfig",
                           str(tmp_path / "none"), "--name", "worker-1", "--once", "--cni-conf-dir",
                           str(tmp_path / "net.d")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("cniplug node: no Kubernetes API configuration")
