"""cniplug-ptp in real namespaces: the host routes between containers (the tutorial's router)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cniplug.plugins.common import chain_name
from tests.conftest import run_plugin, sh

pytestmark = pytest.mark.root
NET = "tcpt-net"


def conf(data_dir: Path, **extra: Any) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": NET, "type": "cniplug-ptp", "ipMasq": True, "mtu": 1450,
            "ipam": {"type": "cniplug-host-local", "dataDir": str(data_dir),
                     "ranges": [[{"subnet": "10.250.150.0/24"}], [{"subnet": "fd10:250:150::/64"}]],
                     "routes": [{"dst": "0.0.0.0/0"}]}, **extra}


def ping(netns: str, addr: str, tries: int = 5) -> bool:
    argv = ["ip", "netns", "exec", os.path.basename(netns), "ping", "-c1", "-W1", addr] if netns else \
        ["ping", "-c1", "-W1", addr]
    return any(subprocess.run(argv, capture_output=True).returncode == 0 for _ in range(tries))


def host_state() -> str:
    """Host routes, addresses and NAT lines that mention our subnet or chains."""
    lines = sh("ip", "-o", "addr").splitlines() + sh("ip", "route").splitlines() + \
        sh("ip", "-6", "route").splitlines() + sh("iptables-save", "-t", "nat").splitlines() + \
        sh("ip6tables-save", "-t", "nat").splitlines()
    return "\n".join(sorted(line for line in lines if "10.250.150." in line or "fd10:250:150" in line
                            or chain_name(NET, "tcpt-a") in line or chain_name(NET, "tcpt-b") in line))


@pytest.fixture
def cleanup(tmp_path: Path) -> Any:
    yield
    for cid in ("tcpt-a", "tcpt-b"):
        run_plugin("cniplug-ptp", "DEL", conf(tmp_path), container_id=cid)


def test_two_containers_reach_each_other_through_the_host(make_netns: Callable[[str], str], tmp_path: Path,
                                                          cleanup: None) -> None:
    before = host_state()
    a, b = make_netns("pt-a"), make_netns("pt-b")
    ra = run_plugin("cniplug-ptp", "ADD", conf(tmp_path), netns=a, container_id="tcpt-a")
    rb = run_plugin("cniplug-ptp", "ADD", conf(tmp_path), netns=b, container_id="tcpt-b")
    assert ra.rc == 0 and rb.rc == 0, ra.stdout + rb.stdout
    ia, ib = ra.json, rb.json
    assert [i["interface"] for i in ia["ips"]] == [1, 1] and len(ia["interfaces"]) == 2
    assert ia["interfaces"][1] == {**ia["interfaces"][1], "name": "eth0", "sandbox": a}
    a4, b4 = ia["ips"][0]["address"].split("/")[0], ib["ips"][0]["address"].split("/")[0]
    a6, b6 = ia["ips"][1]["address"].split("/")[0], ib["ips"][1]["address"].split("/")[0]
    assert a4 != b4 and a6 != b6
    assert ping(a, b4) and ping(b, a4), "containers do not reach each other over IPv4"
    assert ping("", a4) and ping("", b4), "the host does not reach the containers"
    assert ping(a, b6) and ping(b, a6), "containers do not reach each other over IPv6"
    link = json.loads(sh("ip", "-n", "tcp-pt-a", "-j", "link", "show", "dev", "eth0"))[0]
    assert link["mtu"] == 1450
    # host side: the gateway /32 on the veth and a host route per container address
    veth = ia["interfaces"][0]["name"]
    assert "10.250.150.1/32" in sh("ip", "-o", "addr", "show", "dev", veth)
    assert a4 in sh("ip", "route", "show", "dev", veth)
    # CHECK passes, then fails once a route it listed is gone
    prev = {**conf(tmp_path), "prevResult": ia}
    assert run_plugin("cniplug-ptp", "CHECK", prev, netns=a, container_id="tcpt-a").rc == 0
    sh("ip", "-n", "tcp-pt-a", "route", "del", "default")
    bad = run_plugin("cniplug-ptp", "CHECK", prev, netns=a, container_id="tcpt-a")
    assert bad.rc == 1 and "0.0.0.0/0" in bad.json["msg"]
    for cid, ns in (("tcpt-a", a), ("tcpt-b", b)):
        for _ in range(2):
            out = run_plugin("cniplug-ptp", "DEL", conf(tmp_path), netns=ns, container_id=cid)
            assert out.rc == 0 and out.stdout == ""
    assert host_state() == before, "DEL left routes, addresses or NAT rules behind"
    assert not [p for p in (tmp_path / NET).iterdir() if p.name[0].isdigit() or ":" in p.name]
    assert veth not in sh("ip", "-o", "link")


def test_dry_run_script_gives_the_same_state_as_the_plugin(make_netns: Callable[[str], str], tmp_path: Path,
                                                           cleanup: None) -> None:
    """The --dry-run script run by bash in one namespace == the plugin in another (names mapped)."""
    a, b = make_netns("pt-c"), make_netns("pt-d")
    script = run_plugin("cniplug-ptp", "ADD", conf(tmp_path, ipMasq=False), netns=a, container_id="tcpt-a",
                        dry_run=True)
    assert script.rc == 0 and script.stdout.startswith("#!/bin/bash")
    veth_a = re.search(r"\bveth[0-9a-f]{8}\b", script.stdout).group(0)  # type: ignore[union-attr]
    try:
        proc = subprocess.run(["bash", "-c", script.stdout], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        # the plugin for container b: other addresses (host routes share one table), mapped back below
        out = run_plugin("cniplug-ptp", "ADD", conf(tmp_path, ipMasq=False,
                                                    runtimeConfig={"ips": ["10.250.150.3/24", "fd10:250:150::3/64"]}),
                         netns=b, container_id="tcpt-b")
        assert out.rc == 0, out.stdout
        veth_b = out.json["interfaces"][0]["name"]

        def state(ns: str, veth: str) -> str:
            name = os.path.basename(ns)
            c = json.loads(sh("ip", "-n", name, "-j", "addr", "show", "dev", "eth0"))[0]
            h = json.loads(sh("ip", "-j", "addr", "show", "dev", veth))[0]
            text = json.dumps({
                "mtu": c["mtu"], "flags": sorted(c["flags"]), "host_mtu": h["mtu"],
                "addrs": sorted(f"{x['local']}/{x['prefixlen']}" for x in c["addr_info"] if x["scope"] == "global"),
                "host_addrs": sorted(f"{x['local']}/{x['prefixlen']}" for x in h["addr_info"]
                                     if x["scope"] == "global"),
                "routes": sorted(sh("ip", "-n", name, "route").splitlines()
                                 + sh("ip", "-n", name, "-6", "route").splitlines()),
                "host_routes": sorted(sh("ip", "route", "show", "dev", veth).splitlines()
                                      + sh("ip", "-6", "route", "show", "dev", veth).splitlines()),
            }, sort_keys=True)
            return text.replace(veth, "VETH")

        sa = state(a, veth_a)
        sb = state(b, veth_b).replace("10.250.150.3", "10.250.150.2").replace("fd10:250:150::3", "fd10:250:150::2")
        assert "10.250.150.2/24" in sa
        assert sa == sb
        # the DEL that follows: bash runs the --dry-run DEL script for a, the plugin deletes b
        dry_del = run_plugin("cniplug-ptp", "DEL", conf(tmp_path, ipMasq=False), netns=a, container_id="tcpt-a",
                             dry_run=True)
        assert dry_del.rc == 0
        ran = subprocess.run(["bash", "-c", dry_del.stdout], capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr
        assert run_plugin("cniplug-ptp", "DEL", conf(tmp_path, ipMasq=False), netns=b, container_id="tcpt-b").rc == 0

        def gone(ns: str, veth: str) -> tuple[bool, bool, bool]:
            return ("eth0" in sh("ip", "-n", os.path.basename(ns), "-o", "link"), veth in sh("ip", "-o", "link"),
                    "10.250.150." in sh("ip", "route"))

        assert gone(a, veth_a) == gone(b, veth_b) == (False, False, False)
    finally:
        subprocess.run(["ip", "link", "delete", veth_a], capture_output=True)
