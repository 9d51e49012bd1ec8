"""End to end through libcni's `cnitool`: cniplug-bridge -> cniplug-tuning -> cniplug-firewall as one
network list, with the `mac` capability, run inside a namespace that plays the node (`tfw-e2enode`, FORWARD
policy DROP) so that the machine's own filter table is never touched. The libcni cache file
(/var/lib/cni/results/tfwe2enet-...) is removed afterwards. Addresses 10.232.30.0/24, 10.232.31.0/24.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_cnitool import LIBCNI_CACHE, cnitool_container_id, cnitool_path, missing

from cniplug.plugins import firewall
from cniplug.plugins.bridge import lock_path

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
NET = "tfwe2enet"


def in_ns(name: str, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def node(make_netns: Callable[..., str], tmp_path: Path) -> Iterator[dict[str, str]]:
    tool = cnitool_path()
    if not (tool.is_file() and os.access(tool, os.X_OK)):
        missing(f"cnitool not found at {tool}: run contrib/build-cnitool.sh first")
    bin_dir = tmp_path / "bin"
    subprocess.run([sys.executable, "-m", "cniplug", "install", "--bin-dir", str(bin_dir)], check=True,
                   capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    name = Path(make_netns("tfw-e2enode", prefix="")).name
    out = Path(make_netns("tfw-e2eout", prefix="")).name
    container = make_netns("tfw-e2ec", prefix="")
    script = (f"set -e; ip link set lo up; sysctl -qw net.ipv4.ip_forward=1; iptables -w -P FORWARD DROP;"
              f" ip link add tfwe2eup type veth peer name tfwe2eupo netns {out};"
              " ip addr add 10.232.31.1/24 dev tfwe2eup; ip link set tfwe2eup up")
    assert in_ns(name, "bash", "-c", script).returncode == 0
    for argv in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", "10.232.31.2/24", "dev", "tfwe2eupo"],
                 ["ip", "link", "set", "tfwe2eupo", "up"],
                 ["ip", "route", "add", "10.232.30.0/24", "via", "10.232.31.1"]):
        assert in_ns(out, *argv).returncode == 0
    netd = tmp_path / "net.d"
    netd.mkdir()
    conflist = json.loads((REPO / "contrib" / "cniplug-chain.conflist").read_text())
    conflist["name"] = NET
    conflist["plugins"][0].update(bridge="tfwe2ebr0", ipMasq=False)
    conflist["plugins"][0]["ipam"].update(ranges=[[{"subnet": "10.232.30.0/24"}]], dataDir=str(tmp_path / "ipam"))
    conflist["plugins"][1]["dataDir"] = str(tmp_path / "tuning")
    (netd / f"{NET}.conflist").write_text(json.dumps(conflist))
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CNI_PATH": str(bin_dir),
           "NETCONFPATH": str(netd), "CNI_IFNAME": "eth0", "CAP_ARGS": json.dumps({"mac": "02:00:00:0a:e8:40"})}
    cid = cnitool_container_id(container)
    yield {"node": name, "container": container, "tool": str(tool), "cid": cid,
           **{f"env.{k}": v for k, v in env.items()}}
    (LIBCNI_CACHE / f"{NET}-{cid}-eth0").unlink(missing_ok=True)
    Path(lock_path("tfwe2ebr0")).unlink(missing_ok=True)
    Path(firewall.record_path(NET, cid, "eth0")).unlink(missing_ok=True)


def cnitool(n: dict[str, str], verb: str) -> subprocess.CompletedProcess[str]:
    env = {k[4:]: v for k, v in n.items() if k.startswith("env.")}
    return in_ns(n["node"], n["tool"], verb, NET, n["container"], env=env)


def test_chain_add_check_del(node: dict[str, str]) -> None:
    c = Path(node["container"]).name
    r = cnitool(node, "add")
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(r.stdout)
    eth0 = [i for i in result["interfaces"] if i["name"] == "eth0"][0]
    assert eth0["mac"] == "02:00:00:0a:e8:40", "tuning applied the mac capability and patched the result"
    link = json.loads(in_ns(c, "ip", "-j", "link", "show", "dev", "eth0").stdout)[0]
    assert link["address"] == "02:00:00:0a:e8:40" and link["mtu"] == 1400
    assert in_ns(c, "cat", "/proc/sys/net/core/somaxconn").stdout.strip() == "512"
    assert in_ns(c, "ping", "-c", "1", "-W", "1", "10.232.31.2").returncode == 0, "the firewall lets it through"
    r = cnitool(node, "check")
    assert r.returncode == 0, r.stderr
    r = cnitool(node, "del")
    assert r.returncode == 0, r.stderr
    rules = in_ns(node["node"], "iptables-save", "-t", "filter").stdout
    assert "10.232.30.2" not in rules and ":CNI-FORWARD" in rules
    assert not (LIBCNI_CACHE / f"{NET}-{node['cid']}-eth0").exists()
