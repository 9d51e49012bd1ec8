"""End to end on the example list made only of cniplug plugins, contrib/cniplug-bridge-full.conflist (bridge ->
portmap -> firewall -> tuning -> bandwidth), inside a namespace that plays the node (`tfl-node`) so the
machine's own tables are never touched: libcni's `cnitool` and `cniplug net` take turns on one attachment
(add with one, check with the other, del with the first), with the portMappings, bandwidth and mac
capabilities in CAP_ARGS. The node's FORWARD policy is DROP: cniplug-firewall, like the reference, accepts
what the container sends and the replies to it, and leaves new inbound connections to the administrator's
chain CNI-ADMIN, where this node's administrator accepts port-mapped (DNAT) connections. So traffic from
the outside namespace (`tfl-out`) reaches the container's server through the host port.
Addresses 10.238.80.0/24 (pods), 10.238.81.0/24 (node <-> outside)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_cnitool import LIBCNI_CACHE, cnitool_container_id, cnitool_path, missing

from cniplug.plugins.bridge import lock_path

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
NET = "tflnet"
MAC = "02:00:00:0a:ee:50"
CLIENT = ("import socket, sys; s = socket.create_connection((sys.argv[1], 18090), timeout=1); "
          "print(s.recv(100).decode())")
SERVER = ("import socket; t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
          "t.bind(('0.0.0.0', 80)); t.listen(8)\n"
          "while True:\n c, peer = t.accept(); c.sendall(b'tfl ' + peer[0].encode()); c.close()")


def in_ns(name: str, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def node(make_netns: Callable[..., str], tmp_path: Path) -> Iterator[dict[str, str]]:
    tool = cnitool_path()
    if not (tool.is_file() and os.access(tool, os.X_OK)):
        missing(f"cnitool not found at {tool}: run contrib/build-cnitool.sh first")
    bin_dir = tmp_path / "bin"
    subprocess.run([sys.executable, "-m", "cniplug", "install", "--bin-dir", str(bin_dir), "--no-auto-helper"],
                   check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    name = Path(make_netns("tfl-node", prefix="")).name
    out = Path(make_netns("tfl-out", prefix="")).name
    container = make_netns("tfl-c1", prefix="")
    script = (f"set -e; ip link set lo up; ip link add tflup type veth peer name tflupo netns {out};"
              " ip addr add 10.238.81.1/24 dev tflup; ip link set tflup up; iptables -P FORWARD DROP;"
              " iptables -N CNI-ADMIN; iptables -A CNI-ADMIN -m conntrack --ctstate DNAT -j ACCEPT")
    assert in_ns(name, "bash", "-c", script).returncode == 0
    for argv in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", "10.238.81.2/24", "dev", "tflupo"],
                 ["ip", "link", "set", "tflupo", "up"], ["ip", "route", "add", "default", "via", "10.238.81.1"]):
        assert in_ns(out, *argv).returncode == 0
    netd = tmp_path / "net.d"
    netd.mkdir()
    conflist = json.loads((REPO / "contrib" / "cniplug-bridge-full.conflist").read_text())
    conflist["name"] = NET
    bridge, *_ = conflist["plugins"]
    bridge.update(bridge="tflbr0")
    bridge["ipam"].update(ranges=[[{"subnet": "10.238.80.0/24"}]], dataDir=str(tmp_path / "ipam"))
    for plugin in conflist["plugins"]:
        if plugin["type"] == "cniplug-tuning":
            plugin["dataDir"] = str(tmp_path / "tuning")
    (netd / f"{NET}.conflist").write_text(json.dumps(conflist))
    caps = {"portMappings": [{"hostPort": 18090, "containerPort": 80, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 400_000, "egressRate": 8_000_000,
                          "egressBurst": 400_000}, "mac": MAC}
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CNI_PATH": str(bin_dir),
           "NETCONFPATH": str(netd), "CNI_IFNAME": "eth0", "CAP_ARGS": json.dumps(caps),
           "PYTHONPATH": str(REPO)}
    cid = cnitool_container_id(container)
    yield {"node": name, "out": out, "container": container, "tool": str(tool), "cid": cid,
           **{f"env.{k}": v for k, v in env.items()}}
    # Whatever happened: DEL through cniplug net (idempotent), then the cache file.
    in_ns(name, sys.executable, "-m", "cniplug", "net", "del", NET, container, env=env)
    (LIBCNI_CACHE / f"{NET}-{cid}-eth0").unlink(missing_ok=True)
    Path(lock_path("tflbr0")).unlink(missing_ok=True)  # the bridge's lock file in /run/cniplug (the host's /run)


def run(n: dict[str, str], who: str, verb: str) -> subprocess.CompletedProcess[str]:
    env = {k[4:]: v for k, v in n.items() if k.startswith("env.")}
    argv = [n["tool"]] if who == "cnitool" else [sys.executable, "-m", "cniplug", "net"]
    return in_ns(n["node"], *argv, verb, NET, n["container"], env=env)


def served_from_outside(n: dict[str, str]) -> str:
    c = Path(n["container"]).name
    server = subprocess.Popen(["ip", "netns", "exec", c, "timeout", "60", sys.executable, "-c", SERVER])
    try:
        for _ in range(15):  # until the server listens
            p = in_ns(n["out"], sys.executable, "-c", CLIENT, "10.238.81.1")
            if p.returncode == 0:
                return p.stdout.strip()
        return p.stderr.strip()
    finally:
        server.terminate()  # timeout passes SIGTERM on to the server (SIGKILL would orphan it)
        server.wait()


def node_state(n: dict[str, str]) -> str:
    return "\n".join(in_ns(n["node"], *argv).stdout for argv in
                     (["iptables-save"], ["ip", "-br", "link"], ["tc", "qdisc", "show"]))


@pytest.mark.parametrize("first,second", [("cnitool", "cniplug"), ("cniplug", "cnitool")])
def test_full_list_taking_turns(node: dict[str, str], first: str, second: str) -> None:
    before = node_state(node)
    r = run(node, first, "add")
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(r.stdout)
    eth0 = next(i for i in result["interfaces"] if i["name"] == "eth0")
    assert eth0["mac"] == MAC, "tuning's mac capability"
    assert any(i["name"].startswith("bwp") for i in result["interfaces"]), "bandwidth's ifb"
    c = Path(node["container"]).name
    assert in_ns(c, "cat", "/proc/sys/net/core/somaxconn").stdout.strip() == "512"
    assert served_from_outside(node).startswith("tfl "), "the host port through FORWARD DROP"
    assert run(node, second, "check").returncode == 0
    r = run(node, first, "del")
    assert r.returncode == 0, r.stderr
    assert not (LIBCNI_CACHE / f"{NET}-{node['cid']}-eth0").exists()
    assert not served_from_outside(node).startswith("tfl ")
    after = node_state(node)
    # What stays after DEL is what the reference plugins also leave: the bridge, the shared chains.
    left = set(after.splitlines()) - set(before.splitlines())
    assert not [line for line in left if node["cid"][:12] in line or "tflbr0" not in line and "bwp" in line], left
