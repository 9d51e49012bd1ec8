"""End to end through libcni's `cnitool`: contrib/cniplug-ptp-portmap.conflist (cniplug-ptp -> cniplug-portmap) with
the `portMappings` capability (CAP_ARGS), inside a namespace that plays the node (`tpm-e2enode`), so the machine's
own nat table is never touched. A TCP server in the container answers through the host port from an outside
namespace (`tpm-e2eout`, behind a veth) and from the node itself via 127.0.0.1; CHECK passes; DEL removes the
container's chain. The libcni cache file is removed afterwards. Addresses 10.231.40.0/24, 10.231.41.0/24.
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

from cniplug.plugins.portmap import LOCK_PATH, dn_chain

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
NET = "tpme2enet"

CLIENT = ("import socket, sys; s = socket.create_connection((sys.argv[1], 18080), timeout=3); "
          "print(s.recv(100).decode())")
SERVER = ("import socket; t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
          "t.bind(('0.0.0.0', 80)); t.listen(8)\n"
          "while True:\n c, peer = t.accept(); c.sendall(b'tpm-e2e ' + peer[0].encode()); c.close()")


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
    name = Path(make_netns("tpm-e2enode", prefix="")).name
    out = Path(make_netns("tpm-e2eout", prefix="")).name
    container = make_netns("tpm-e2ec", prefix="")
    script = (f"set -e; ip link set lo up; ip link add tpme2eup type veth peer name tpme2eupo netns {out};"
              " ip addr add 10.231.41.1/24 dev tpme2eup; ip link set tpme2eup up")
    assert in_ns(name, "bash", "-c", script).returncode == 0
    for argv in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", "10.231.41.2/24", "dev", "tpme2eupo"],
                 ["ip", "link", "set", "tpme2eupo", "up"], ["ip", "route", "add", "default", "via", "10.231.41.1"]):
        assert in_ns(out, *argv).returncode == 0
    netd = tmp_path / "net.d"
    netd.mkdir()
    conflist = json.loads((REPO / "contrib" / "cniplug-ptp-portmap.conflist").read_text())
    conflist["name"] = NET
    conflist["plugins"][0]["ipam"].update(ranges=[[{"subnet": "10.231.40.0/24"}]], dataDir=str(tmp_path / "ipam"))
    (netd / f"{NET}.conflist").write_text(json.dumps(conflist))
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CNI_PATH": str(bin_dir),
           "NETCONFPATH": str(netd), "CNI_IFNAME": "eth0",
           "CAP_ARGS": json.dumps({"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]})}
    cid = cnitool_container_id(container)
    yield {"node": name, "out": out, "container": container, "tool": str(tool), "cid": cid,
           **{f"env.{k}": v for k, v in env.items()}}
    (LIBCNI_CACHE / f"{NET}-{cid}-eth0").unlink(missing_ok=True)
    Path(LOCK_PATH).unlink(missing_ok=True)


def cnitool(n: dict[str, str], verb: str) -> subprocess.CompletedProcess[str]:
    env = {k[4:]: v for k, v in n.items() if k.startswith("env.")}
    return in_ns(n["node"], n["tool"], verb, NET, n["container"], env=env)


def test_ptp_portmap_list_add_check_del(node: dict[str, str]) -> None:
    c = Path(node["container"]).name
    r = cnitool(node, "add")
    assert r.returncode == 0, r.stdout + r.stderr
    chain = dn_chain(NET, node["cid"])
    assert f":{chain}" in in_ns(node["node"], "iptables-save", "-t", "nat").stdout
    server = subprocess.Popen(["ip", "netns", "exec", c, "timeout", "60", sys.executable, "-c", SERVER])
    try:
        answers = {}
        for label, ns, addr in (("outside", node["out"], "10.231.41.1"), ("node localhost", node["node"],
                                                                          "127.0.0.1")):
            for _ in range(50):  # until the server listens
                p = in_ns(ns, sys.executable, "-c", CLIENT, addr)
                if p.returncode == 0:
                    break
            answers[label] = p.stdout.strip()
        assert all(a.startswith("tpm-e2e ") for a in answers.values()), answers
    finally:
        server.kill()
        server.wait()
    r = cnitool(node, "check")
    assert r.returncode == 0, r.stderr
    r = cnitool(node, "del")
    assert r.returncode == 0, r.stderr
    assert chain not in in_ns(node["node"], "iptables-save", "-t", "nat").stdout
    assert not (LIBCNI_CACHE / f"{NET}-{node['cid']}-eth0").exists()
