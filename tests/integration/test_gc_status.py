"""GC and STATUS (spec 1.1.0) end to end: containers vanish without DEL, GC frees exactly theirs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cniplug.plugins.bridge import lock_path
from cniplug.plugins.common import chain_name
from tests.conftest import run_plugin, sh

pytestmark = pytest.mark.root
BRIDGE = "tcgbr0"


def conf(data_dir: Path, name: str = "tcg-net", subnet: str = "10.250.160.0/24", **extra: Any) -> dict[str, Any]:
    bridge = BRIDGE if name != "tcg-other" else BRIDGE + "x"  # one IPv4 gateway per bridge
    return {"cniVersion": "1.1.0", "name": name, "type": "cniplug-bridge", "bridge": bridge, "isGateway": True,
            "ipMasq": True, "ipam": {"type": "cniplug-host-local", "dataDir": str(data_dir),
                                     "ranges": [[{"subnet": subnet}]]}, **extra}


def reserved(data_dir: Path, name: str = "tcg-net") -> dict[str, str]:
    d = data_dir / name
    if not d.is_dir():
        return {}
    return {p.name: p.read_bytes().decode().split("\r\n")[0] for p in d.iterdir() if p.name[0].isdigit()}


def nat() -> str:
    return sh("iptables-save", "-t", "nat")


@pytest.fixture
def bridge_cleanup(tmp_path: Path) -> Iterator[None]:
    yield
    for cid in ("tcg-a", "tcg-b", "tcg-c", "tcg-x", "tcg-y"):
        for name in ("tcg-net", "tcg-other", "tcg-small"):
            run_plugin("cniplug-bridge", "DEL", conf(tmp_path, name), container_id=cid)
    for bridge in (BRIDGE, BRIDGE + "x"):
        subprocess.run(["ip", "link", "delete", bridge], capture_output=True)
        Path(lock_path(bridge)).unlink(missing_ok=True)


def test_gc_after_crash_frees_vanished_and_keeps_live(make_netns: Callable[[str], str], tmp_path: Path,
                                                      bridge_cleanup: None) -> None:
    netns = {cid: make_netns(f"g-{cid[-1]}") for cid in ("tcg-a", "tcg-b", "tcg-c")}
    for cid, ns in netns.items():
        out = run_plugin("cniplug-bridge", "ADD", conf(tmp_path), netns=ns, container_id=cid)
        assert out.rc == 0, out.stdout
    # another network on the same bridge: GC of tcg-net must not touch it
    other = make_netns("g-x")
    assert run_plugin("cniplug-bridge", "ADD", conf(tmp_path, "tcg-other", "10.250.161.0/24"), netns=other,
                      container_id="tcg-x").rc == 0
    assert set(reserved(tmp_path).values()) == {"tcg-a", "tcg-b", "tcg-c"}
    # crash: b and c vanish without DEL (their veths die with the namespaces)
    for cid in ("tcg-b", "tcg-c"):
        sh("ip", "netns", "delete", os.path.basename(netns[cid]))
    assert chain_name("tcg-net", "tcg-b") in nat()
    valid = [{"containerID": "tcg-a", "ifname": "eth0"}]
    out = run_plugin("cniplug-bridge", "GC", {**conf(tmp_path), "cni.dev/valid-attachments": valid},
                     container_id="", ifname="", netns="")
    assert out.rc == 0 and out.stdout == "", out.stdout + out.stderr
    assert set(reserved(tmp_path).values()) == {"tcg-a"}
    rules = nat()
    assert chain_name("tcg-net", "tcg-b") not in rules and chain_name("tcg-net", "tcg-c") not in rules
    assert chain_name("tcg-net", "tcg-a") in rules and chain_name("tcg-other", "tcg-x") in rules
    assert set(reserved(tmp_path, "tcg-other").values()) == {"tcg-x"}
    ports = os.listdir(f"/sys/class/net/{BRIDGE}/brif")
    assert len(ports) == 1, ports  # a's veth; b's and c's went with their namespaces
    ping = subprocess.run(["ip", "netns", "exec", "tcp-g-a", "ping", "-c1", "-W2", "10.250.160.1"])
    assert ping.returncode == 0, "GC broke a live container"
    # the older key works too, and an absent key frees nothing
    out = run_plugin("cniplug-bridge", "GC", conf(tmp_path), container_id="", ifname="", netns="")
    assert out.rc == 0 and set(reserved(tmp_path).values()) == {"tcg-a"}
    out = run_plugin("cniplug-bridge", "GC", {**conf(tmp_path), "cni.dev/attachments": []},
                     container_id="", ifname="", netns="")
    assert out.rc == 0 and reserved(tmp_path) == {}
    assert chain_name("tcg-net", "tcg-a") not in nat()


def test_status_50_when_exhausted_51_when_bridge_down(make_netns: Callable[[str], str], tmp_path: Path,
                                                      bridge_cleanup: None) -> None:
    small = conf(tmp_path, "tcg-small", "10.250.162.0/30")  # .1 gateway, .2 the only address
    status = run_plugin("cniplug-bridge", "STATUS", small, container_id="", ifname="", netns="")
    assert status.rc == 0 and status.stdout == ""
    assert run_plugin("cniplug-bridge", "ADD", small, netns=make_netns("g-y"), container_id="tcg-y").rc == 0
    status = run_plugin("cniplug-bridge", "STATUS", small, container_id="", ifname="", netns="")
    assert status.rc == 1 and status.json["code"] == 50, status.stdout
    add = run_plugin("cniplug-bridge", "ADD", small, netns=make_netns("g-z"), container_id="tcg-z")
    assert add.rc == 1 and "no IP addresses available" in add.json["msg"] + add.json.get("details", "")
    assert run_plugin("cniplug-bridge", "DEL", small, container_id="tcg-y").rc == 0
    assert run_plugin("cniplug-bridge", "STATUS", small, container_id="", ifname="", netns="").rc == 0
    sh("ip", "link", "set", BRIDGE, "down")
    status = run_plugin("cniplug-bridge", "STATUS", small, container_id="", ifname="", netns="")
    assert status.rc == 1 and status.json["code"] == 51, status.stdout
    # STATUS and GC need spec 1.1.0
    old = run_plugin("cniplug-bridge", "STATUS", {**small, "cniVersion": "1.0.0"}, container_id="", netns="")
    assert old.rc == 1 and old.json["code"] == 1
