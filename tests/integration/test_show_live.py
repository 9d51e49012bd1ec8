"""cniplug show on a known topology built by the real plugins, run as a runtime runs them.

Every name starts with `tsh` (namespaces tsh-c1, tsh-c2, tsh-c3, tsh-a, tsh-b; bridge tshbr0; networks
tsh-brnet, tsh-ptpnet); addresses come from 10.247.1.0/24 (bridge), 10.247.2.0/24 (ptp) and 10.247.3.0/24
(the tutorial's example 1: a veth straight between two namespaces). All of it is removed afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_plugin, sh

from cniplug.lab import show
from cniplug.plugins.common import chain_name

pytestmark = pytest.mark.root

BRIDGE, BRNET, PTPNET = "tshbr0", "tsh-brnet", "tsh-ptpnet"
SVG = "{http://www.w3.org/2000/svg}"


def bridge_conf(data_dir: Path) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": BRNET, "type": "cniplug-bridge", "bridge": BRIDGE, "isGateway": True,
            "ipMasq": True, "ipam": {"type": "cniplug-host-local", "dataDir": str(data_dir),
                                     "ranges": [[{"subnet": "10.247.1.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}


def ptp_conf(data_dir: Path) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": PTPNET, "type": "cniplug-ptp", "ipMasq": True,
            "ipam": {"type": "cniplug-host-local", "dataDir": str(data_dir),
                     "ranges": [[{"subnet": "10.247.2.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}


CONTAINERS: list[tuple[str, Callable[[Path], dict[str, Any]]]] = [
    ("tsh-c1", bridge_conf), ("tsh-c2", bridge_conf), ("tsh-c3", ptp_conf)]


@pytest.fixture
def tsh_netns(make_netns: Callable[..., str]) -> Callable[[str], str]:
    """tsh_netns(name) -> '/run/netns/<name>' for a name starting with tsh-; deleted afterwards."""

    def make(name: str) -> str:
        assert name.startswith("tsh-")
        return make_netns(name, prefix="")

    return make


@pytest.fixture
def topology(tmp_path: Path, tsh_netns: Callable[[str], str], cleanup_links: list[str],
             cleanup_chains: list[str]) -> Iterator[dict[str, Any]]:
    """Bridge tshbr0 with tsh-c1 and tsh-c2, tsh-c3 on ptp, tsh-a <-> tsh-b; -> the ADD results by container."""
    data_dir = tmp_path / "ipam"
    cleanup_links.append(BRIDGE)
    results: dict[str, Any] = {"data_dir": data_dir}
    added: list[tuple[str, dict[str, Any]]] = []
    try:
        for cid, conf in CONTAINERS:
            cleanup_chains.append(chain_name(conf(data_dir)["name"], cid))
            run = run_plugin(conf(data_dir)["type"], "ADD", conf(data_dir), netns=tsh_netns(cid), container_id=cid)
            added.append((cid, conf(data_dir)))
            assert run.rc == 0, run.stdout + run.stderr
            results[cid] = run.json
        tsh_netns("tsh-a"), tsh_netns("tsh-b")
        sh("ip", "-n", "tsh-a", "link", "add", "tsh-va", "type", "veth", "peer", "name", "tsh-vb", "netns", "tsh-b")
        sh("ip", "-n", "tsh-a", "addr", "add", "10.247.3.1/24", "dev", "tsh-va")
        sh("ip", "-n", "tsh-b", "addr", "add", "10.247.3.2/24", "dev", "tsh-vb")
        sh("ip", "-n", "tsh-a", "link", "set", "tsh-va", "up")
        sh("ip", "-n", "tsh-b", "link", "set", "tsh-vb", "up")
        yield results
    finally:
        for cid, conf in added:
            run_plugin(conf["type"], "DEL", conf, netns=f"/run/netns/{cid}", container_id=cid)


def host_veth(result: dict[str, Any]) -> str:
    return str(next(i["name"] for i in result["interfaces"] if "sandbox" not in i and i["name"] != BRIDGE))


def address(result: dict[str, Any]) -> str:
    return str(result["ips"][0]["address"])


def test_show_lists_every_object_and_edge_of_the_known_topology(topology: dict[str, Any], tmp_path: Path) -> None:
    svg = tmp_path / "topology.svg"
    proc = subprocess.run([sys.executable, "-m", "cniplug", "show", "--prefix", "tsh", "--data-dir",
                           str(topology["data_dir"]), "--svg", str(svg)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    text = proc.stdout
    lines = [line.split() for line in text.splitlines()]
    sections = [line for line in text.splitlines() if not line.startswith(" ")]
    assert sections[:7] == ["host", "namespace tsh-a", "namespace tsh-b", "namespace tsh-c1", "namespace tsh-c2",
                            "namespace tsh-c3", "veth pairs:"], "not exactly our namespaces"
    veths = {cid: host_veth(topology[cid]) for cid, _ in CONTAINERS}
    assert ["tshbr0", "bridge", "UP", "mtu", "1500", "10.247.1.1/24"] in lines
    for cid, _ in CONTAINERS:
        result = topology[cid]
        assert f"host/{veths[cid]} <-> {cid}/eth0" in text  # the veth pair, both ends with their namespace
        assert any(w[:2] == ["eth0", "veth"] and address(result) in w and f"host/{veths[cid]}" in w for w in lines)
        ip = address(result).split("/")[0]
        chain = chain_name(BRNET if cid != "tsh-c3" else PTPNET, cid)
        net = BRNET if cid != "tsh-c3" else PTPNET
        assert [chain, "net", net, "container", cid, "-s", f"{ip}/32"] in lines
        assert [net, ip, "container", cid, "eth0"] in lines  # the host-local reservation
    for cid in ("tsh-c1", "tsh-c2"):
        assert f"host/{veths[cid]} -> {BRIDGE}" in text  # port -> bridge
        assert any(w[0] == veths[cid] and w[-4:] == ["master", BRIDGE, "peer", f"{cid}/eth0"] for w in lines if w)
    assert "tsh-a/tsh-va <-> tsh-b/tsh-vb" in text
    # addresses and routes in each namespace and on the host
    ptp_ip = address(topology["tsh-c3"]).split("/")[0]
    for line in ("default via 10.247.1.1 dev eth0", "default via 10.247.2.1 dev eth0",
                 "10.247.1.0/24 dev tshbr0 src 10.247.1.1 scope link", f"{ptp_ip} dev {veths['tsh-c3']} scope host",
                 "10.247.3.0/24 dev tsh-va src 10.247.3.1 scope link"):
        assert f"    {line}\n" in text, line
    assert any(w[0] == veths["tsh-c3"] and "10.247.2.1/32" in w for w in lines if w)
    # the picture names the same objects and draws the same edges
    root = ET.parse(svg).getroot()
    assert root.tag == f"{SVG}svg"
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    for name in ["tsh-c1", "tsh-c2", "tsh-c3", "tsh-a", "tsh-b", BRIDGE, "10.247.1.1/24", "tsh-va", "tsh-vb",
                 *veths.values(), *(address(topology[c]) for c, _ in CONTAINERS),
                 *(chain_name(BRNET, c) for c in ("tsh-c1", "tsh-c2")), chain_name(PTPNET, "tsh-c3"), PTPNET]:
        assert name in texts, name
    drawn = {frozenset({p.get("data-a"), p.get("data-b")}) for p in root.iter(f"{SVG}path")}
    assert drawn == {frozenset({f"host/{veths[c]}", f"{c}/eth0"}) for c, _ in CONTAINERS} | \
        {frozenset({"tsh-a/tsh-va", "tsh-b/tsh-vb"})}
    ports = {(x.get("data-port"), x.get("data-bridge")) for x in root.iter(f"{SVG}line") if x.get("class") == "port"}
    assert ports == {(f"host/{veths['tsh-c1']}", BRIDGE), (f"host/{veths['tsh-c2']}", BRIDGE)}


def test_collect_with_netns_filter(topology: dict[str, Any]) -> None:
    topo = show.collect(netns="tsh-c3", data_dir=str(topology["data_dir"]))
    veth = host_veth(topology["tsh-c3"])
    assert topo.namespaces == ["", "tsh-c3"]
    assert {(a.key, b.key) for a, b in topo.veth_pairs()} in ({(("", veth), ("tsh-c3", "eth0"))},
                                                              {(("tsh-c3", "eth0"), ("", veth))})
    assert [(c.network, c.container_id) for c in topo.nat] == [(PTPNET, "tsh-c3")]
    assert [(r.network, r.container_id, r.ifname) for r in topo.reservations] == [(PTPNET, "tsh-c3", "eth0")]
    proc = subprocess.run([sys.executable, "-m", "cniplug", "show", "--netns", "tsh-nope"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr == "cniplug show: no network namespace 'tsh-nope'\n"


def test_a_namespace_only_a_process_holds_is_shown_by_pid() -> None:
    """Unnamed namespaces (podman's containers, `unshare -n`) are found through /proc/PID/ns/net."""
    proc = subprocess.Popen(["unshare", "-n", "sleep", "30"])
    try:
        mine = os.stat("/proc/self/ns/net").st_ino
        deadline = time.monotonic() + 5
        while os.stat(f"/proc/{proc.pid}/ns/net").st_ino == mine and time.monotonic() < deadline:
            time.sleep(0.02)
        topo = show.collect(netns=f"pid:{proc.pid}")
        assert topo.namespaces == [f"pid:{proc.pid}"]
        assert [(link.name, link.kind) for link in topo.links] == [("lo", "loopback")]
    finally:
        proc.kill()
        proc.wait()
