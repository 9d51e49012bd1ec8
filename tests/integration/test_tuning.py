"""cniplug-tuning against the real kernel and against the reference tuning (/usr/lib/cni/tuning, 1.1.1).

A node namespace (`ttn-node*`) runs cniplug-bridge (ours) or the reference bridge for the containers
(`ttn-*`), then tuning with the same config. Compared: the container link (MAC, MTU, promisc, allmulti,
txqueuelen), the sysctls, the backup file (name, mode, content), the result, and what DEL restores.
Either plugin's DEL restores from the other's backup. Names `ttn*`, addresses 10.232.10.0/24.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tfw_lab import REPO, in_ns, ns, run, setup_node

from cniplug.cli import plugin_argv
from cniplug.plugins.bridge import lock_path

pytestmark = pytest.mark.root

REFERENCE = "/usr/lib/cni/tuning"
SYSCTLS = {"net.core.somaxconn": "512", "net.ipv4.conf.IFNAME.arp_filter": "1"}
PATHS = ("net/core/somaxconn", "net/ipv4/conf/eth0/arp_filter")


@pytest.fixture
def lab(make_netns: Callable[..., str]) -> Iterator[Callable[[str], str]]:
    def make(tag: str) -> str:
        return make_netns(f"ttn-{tag}", prefix="")

    yield make
    Path(lock_path("ttnbr0")).unlink(missing_ok=True)


def attach(lab: Callable[[str], str], node: str, cid: str, tmp: Path, reference: bool = False) -> tuple[str, Any]:
    netns = lab(cid)
    conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": "ttnnet", "type": "cniplug-bridge", "bridge": "ttnbr0",
                            "isGateway": True, "ipam": {"type": "cniplug-host-local", "dataDir": str(tmp / "ipam"),
                                                        "subnet": "10.232.10.0/24"}}
    plugin = "cniplug-bridge"
    if reference:
        conf = {**conf, "type": "bridge", "ipam": {**conf["ipam"], "type": "host-local"}}
        plugin = "/usr/lib/cni/bridge"
    r = run(node, plugin, "ADD", conf, netns, cid)
    assert r.rc == 0, r.stdout + r.stderr
    return netns, r.json


def tconf(prev: Any, data: Path, **keys: Any) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "ttnnet", "type": "cniplug-tuning", "dataDir": str(data),
            "prevResult": prev, **keys}


def link(netns: str) -> dict[str, Any]:
    info = json.loads(in_ns(ns(netns), "ip", "-d", "-j", "link", "show", "dev", "eth0").stdout)[0]
    return {"mac": info["address"], "mtu": info["mtu"], "promisc": "PROMISC" in info["flags"],
            "allmulti": "ALLMULTI" in info["flags"], "promiscuity": info.get("promiscuity"),
            "txqlen": info.get("txqlen")}


def sysctls(netns: str) -> dict[str, str]:
    out = in_ns(ns(netns), "cat", *(f"/proc/sys/{p}" for p in PATHS)).stdout.split()
    return dict(zip(PATHS, out, strict=True))


def test_applies_and_restores(lab: Callable[[str], str], tmp_path: Path) -> None:
    node = Path(lab("node")).name
    setup_node(node)
    c1, prev = attach(lab, node, "ttnc1", tmp_path)
    orig, orig_sys = link(c1), sysctls(c1)
    data = tmp_path / "tuning"
    conf = tconf(prev, data, sysctl=SYSCTLS, mac="02:00:00:0a:e8:01", mtu=1300, promisc=True, allmulti=True,
                 txQLen=500)
    r = run(node, "cniplug-tuning", "ADD", conf, c1, "ttnc1")
    assert r.rc == 0, r.stdout + r.stderr
    now = link(c1)
    assert now == {"mac": "02:00:00:0a:e8:01", "mtu": 1300, "promisc": True, "allmulti": True, "promiscuity": 1,
                   "txqlen": 500}, now
    assert sysctls(c1) == {"net/core/somaxconn": "512", "net/ipv4/conf/eth0/arp_filter": "1"}
    eth0 = [i for i in r.json["interfaces"] if i["name"] == "eth0"][0]
    assert eth0["mac"] == "02:00:00:0a:e8:01", "the result's interface MAC must be the new one"
    backup = data / "ttnc1_eth0.json"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600 and stat.S_IMODE(data.stat().st_mode) == 0o600
    assert json.loads(backup.read_text()) == {"mac": orig["mac"], "promisc": False, "mtu": orig["mtu"],
                                              "allmulti": False, "txQLen": orig["txqlen"]}
    assert run(node, "cniplug-tuning", "CHECK", conf, c1, "ttnc1").rc == 0, "CHECK substitutes IFNAME"
    gc = {k: v for k, v in conf.items() if k != "prevResult"} | {"cniVersion": "1.1.0",
                                                                  "cni.dev/valid-attachments": []}
    assert run(node, "cniplug-tuning", "GC", gc, "", "", ifname="").rc == 0
    assert backup.exists(), "GC cannot tell another network's backup from a stale one: it removes none"
    r = run(node, "cniplug-tuning", "DEL", conf, c1, "ttnc1")
    assert r.rc == 0, r.stdout + r.stderr
    assert link(c1) == orig, "DEL restores MAC, MTU, promisc, allmulti, txqueuelen"
    assert sysctls(c1) != orig_sys and sysctls(c1)["net/core/somaxconn"] == "512", \
        "sysctls are not restored, as the reference"
    assert not backup.exists()
    assert run(node, "cniplug-tuning", "DEL", conf, c1, "ttnc1").rc == 0, "DEL twice"
    assert run(node, "cniplug-tuning", "DEL", conf, "", "ttnc1").rc == 0, "DEL without netns"


def test_mac_sources_and_refusals(lab: Callable[[str], str], tmp_path: Path) -> None:
    node = Path(lab("node")).name
    setup_node(node)
    c1, prev = attach(lab, node, "ttnc1", tmp_path)
    data = tmp_path / "tuning"
    orig = link(c1)
    r = run(node, "cniplug-tuning", "ADD", tconf(prev, data), c1, "ttnc1", args="IgnoreUnknown=1;MAC=02:00:00:0a:e8:02")
    assert r.rc == 0 and link(c1)["mac"] == "02:00:00:0a:e8:02", r.stdout
    assert run(node, "cniplug-tuning", "DEL", tconf(prev, data), c1, "ttnc1").rc == 0
    conf = tconf(prev, data, mac="02:00:00:0a:e8:03", runtimeConfig={"mac": "02:00:00:0a:e8:04"},
                 args={"cni": {"mac": "02:00:00:0a:e8:05", "mtu": 1280}})
    r = run(node, "cniplug-tuning", "ADD", conf, c1, "ttnc1")
    assert r.rc == 0 and link(c1)["mac"] == "02:00:00:0a:e8:05" and link(c1)["mtu"] == 1280, r.stdout
    assert run(node, "cniplug-tuning", "DEL", conf, c1, "ttnc1").rc == 0
    assert link(c1) == orig
    for bad, named in (({"sysctl": {"kernel.hostname": "x"}}, "kernel.hostname"),
                       ({"sysctl": {"net/../kernel/hostname": "x"}}, ".."),
                       ({"sysctl": {"net.core.somaxconn": "1\n2"}}, "somaxconn"),
                       ({"sysctl": {"net.ipv4.conf.eth0.nosuch": "1"}}, "nosuch"),
                       ({"mtu": 10}, "mtu"), ({"mac": "01:00:00:00:00:01"}, "multicast"),
                       ({"promisc": "yes"}, "promisc"), ({"dataDir": "rel/dir"}, "dataDir")):
        r = run(node, "cniplug-tuning", "ADD", tconf(prev, data, **bad), c1, "ttnc1")
        assert r.rc == 1 and r.json["code"] == 7 and named in r.stdout, (bad, r.stdout)
    assert link(c1) == orig and not list(data.iterdir()), "a refused ADD writes no backup"


def reference_view(netns: str, data: Path, cid: str, orig_mac: str) -> dict[str, Any]:
    """What must be equal between ours and the reference: the link without its (random) MAC, the sysctls,
    the backup file byte for byte with the container's original MAC masked, its mode."""
    backup = data / f"{cid}_eth0.json"
    return {"link": {k: v for k, v in link(netns).items() if k != "mac"}, "sysctl": sysctls(netns),
            "backup": backup.read_text().replace(orig_mac, "MAC") if backup.exists() else None,
            "backup_mode": oct(stat.S_IMODE(backup.stat().st_mode)) if backup.exists() else None}


CONFIGS = {
    "all": {"sysctl": SYSCTLS, "mac": "02:00:00:0a:e8:10", "mtu": 1300, "promisc": True, "allmulti": True},
    "mtu-only": {"mtu": 1400},
    "allmulti-off-promisc-false": {"promisc": False, "allmulti": False},
    "sysctl-only": {"sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1"}},
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_same_state_as_reference(lab: Callable[[str], str], tmp_path: Path, name: str) -> None:
    """Ours and the reference tuning, same config, each on its own node: the same kernel state after ADD and
    after DEL, the same backup file shape; and each plugin's DEL restores from the other's ADD."""
    views: dict[str, list[Any]] = {}
    for who in ("ours", "ref"):
        node = Path(lab(f"node{who}")).name
        setup_node(node)
        netns, prev = attach(lab, node, f"{who}1", tmp_path / who)
        orig = link(netns)
        data = tmp_path / who / "tuning"
        conf = tconf(prev, data, **CONFIGS[name])
        add_plugin, del_plugin = ("cniplug-tuning", REFERENCE) if who == "ours" else (REFERENCE, "cniplug-tuning")
        r = run(node, add_plugin, "ADD", conf if add_plugin.startswith("cniplug") else {**conf, "type": "tuning"},
                netns, f"{who}1")
        assert r.rc == 0, r.stdout + r.stderr
        result = json.loads(r.stdout)
        after_add = reference_view(netns, data, f"{who}1", orig["mac"])
        mac_after = link(netns)["mac"]
        r = run(node, del_plugin, "DEL", conf if del_plugin.startswith("cniplug") else {**conf, "type": "tuning"},
                netns, f"{who}1")
        assert r.rc == 0, r.stdout + r.stderr
        restored = link(netns) == orig
        eth0 = [i for i in result["interfaces"] if i["name"] == "eth0"][0]
        after_del = reference_view(netns, data, f"{who}1", orig["mac"])
        views[who] = [after_add, restored, eth0["mac"] == mac_after, after_del]
    assert views["ours"] == views["ref"], json.dumps(views, indent=1)
    assert views["ours"][1], "DEL (crossed: the other plugin's backup) restored the link"


def test_dry_run_script_gives_the_same_state(lab: Callable[[str], str], tmp_path: Path) -> None:
    """The --dry-run script, run with bash, changes the link and sysctls as the plugin does, and writes the
    backup file the plugin writes (the plugin itself writes nothing in a dry run)."""
    node = Path(lab("node")).name
    setup_node(node)
    states = []
    for cid in ("ttnp", "ttns"):
        netns, prev = attach(lab, node, cid, tmp_path)
        conf = tconf(prev, tmp_path / "tuning", sysctl=SYSCTLS, mac=f"02:00:00:0a:e8:3{len(states)}", mtu=1300,
                     promisc=True, allmulti=True, txQLen=500)
        if cid == "ttnp":
            r = run(node, "cniplug-tuning", "ADD", conf, netns, cid)
            assert r.rc == 0, r.stdout + r.stderr
        else:
            proc = subprocess.run(
                ["ip", "netns", "exec", node, *plugin_argv("cniplug-tuning"), "--dry-run"],
                input=json.dumps(conf).encode(), capture_output=True, timeout=60,
                env={**os.environ, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": cid, "CNI_NETNS": netns,
                     "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", "PYTHONPATH": str(REPO)})
            assert proc.returncode == 0, proc.stderr
            backup = tmp_path / "tuning" / f"{cid}_eth0.json"
            assert not backup.exists(), "the dry run itself wrote the backup"
            in_ns(node, "bash", "-c", proc.stdout.decode())
            ours = json.loads((tmp_path / "tuning" / "ttnp_eth0.json").read_text())
            assert sorted(json.loads(backup.read_text())) == sorted(ours), "the script's backup differs"
            assert backup.stat().st_mode & 0o777 == 0o600
        states.append({**{k: v for k, v in link(netns).items() if k != "mac"}, "sysctl": sysctls(netns)})
    assert states[0] == states[1]
