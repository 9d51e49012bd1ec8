"""cniplug-firewall against the real kernel, inside a namespace that plays the host (`tfw-node`).

The node's FORWARD policy is DROP (the node's own, never the machine's): a container on a cniplug-bridge in
the node pings an "outside" namespace routed beyond the node. Blocked without the firewall plugin, flowing
with it, blocked again after its DEL. Also: same-bridge isolation, GC, CHECK, and the filter table compared
with the reference firewall's for the same chain. Names `tfw-*`, addresses 10.232.0.0/16.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tfw_lab import REPO, add_outside, filter_rules, in_ns, pings, run, setup_node

from cniplug import rundir
from cniplug.cli import plugin_argv
from cniplug.plugins import firewall
from cniplug.plugins.bridge import lock_path

pytestmark = pytest.mark.root

REFERENCE = "/usr/lib/cni/firewall"


def bridge_conf(net: str, bridge: str, subnet: str, data: Path) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": net, "type": "cniplug-bridge", "bridge": bridge, "isGateway": True,
            "ipam": {"type": "cniplug-host-local", "dataDir": str(data), "subnet": subnet,
                     "routes": [{"dst": "0.0.0.0/0"}]}}


def fw_conf(net: str, prev: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": net, "type": "cniplug-firewall", "prevResult": prev, **extra}


@pytest.fixture
def lab(make_netns: Callable[..., str]) -> Iterator[Callable[[str], str]]:
    """make(tag) -> netns path of `tfw-<tag>`; afterwards the bridge lock files and firewall records the
    tests name in `lab.records`/`lab.bridges` are removed (the namespaces take everything else with them)."""
    records: list[str] = []
    bridges: list[str] = []

    def make(tag: str) -> str:
        return make_netns(f"tfw-{tag}", prefix="")

    make.records = records  # type: ignore[attr-defined]
    make.bridges = bridges  # type: ignore[attr-defined]
    yield make
    for path in records:
        Path(path).unlink(missing_ok=True)
    for b in bridges:
        Path(lock_path(b)).unlink(missing_ok=True)


def attach(lab: Any, node: str, net: str, bridge: str, subnet: str, cid: str, tmp: Path) -> tuple[str, dict[str, Any]]:
    netns = lab(cid)
    lab.bridges.append(bridge)
    lab.records.append(firewall.record_path(net, cid, "eth0"))
    r = run(node, "cniplug-bridge", "ADD", bridge_conf(net, bridge, subnet, tmp / "ipam"), netns, cid)
    assert r.rc == 0, r.stdout + r.stderr
    return netns, r.json


def test_forward_drop_blocked_without_flowing_with_blocked_after_del(lab: Any, tmp_path: Path) -> None:
    node = Path(lab("node")).name
    out = Path(lab("out")).name
    setup_node(node, "DROP")
    add_outside(node, out, "10.232.2.1/24", "10.232.2.2/24", ["10.232.1.0/24"], "tfwup0")
    c1, prev = attach(lab, node, "tfwnet", "tfwbr0", "10.232.1.0/24", "tfwc1", tmp_path)
    assert pings(c1, "10.232.1.1"), "the gateway (the node itself) must answer: INPUT, not FORWARD"
    assert not pings(c1, "10.232.2.2"), "FORWARD policy DROP must block the container without the plugin"

    conf = fw_conf("tfwnet", prev)
    r = run(node, "cniplug-firewall", "ADD", conf, c1, "tfwc1")
    assert r.rc == 0, r.stdout + r.stderr
    assert r.json == prev, "the firewall passes prevResult through unchanged"
    assert pings(c1, "10.232.2.2"), "with the firewall plugin the traffic must flow"
    rules = filter_rules(node)
    assert '-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD' in rules
    assert "-A CNI-FORWARD -s 10.232.1.2/32 -j ACCEPT" in rules
    assert Path(firewall.record_path("tfwnet", "tfwc1", "eth0")).exists()
    assert run(node, "cniplug-firewall", "CHECK", conf, c1, "tfwc1").rc == 0

    r = run(node, "cniplug-firewall", "DEL", conf, c1, "tfwc1")
    assert r.rc == 0, r.stdout + r.stderr
    assert not pings(c1, "10.232.2.2"), "after DEL the container must be blocked again"
    after = filter_rules(node)
    assert not [x for x in after if "10.232.1.2" in x], after
    # The shared chains and jumps stay, as the reference leaves them.
    assert ":CNI-FORWARD -" in after and ":CNI-ADMIN -" in after
    assert not Path(firewall.record_path("tfwnet", "tfwc1", "eth0")).exists()
    check = run(node, "cniplug-firewall", "CHECK", conf, c1, "tfwc1")
    assert check.rc == 1 and "not found" in check.json["msg"], check.stdout
    # DEL again, and DEL without prevResult or netns: nothing to do, success.
    assert run(node, "cniplug-firewall", "DEL", conf, c1, "tfwc1").rc == 0
    bare = {k: v for k, v in conf.items() if k != "prevResult"}
    assert run(node, "cniplug-firewall", "DEL", bare, "", "tfwc1").rc == 0
    assert run(node, "cniplug-bridge", "DEL", bridge_conf("tfwnet", "tfwbr0", "10.232.1.0/24", tmp_path / "ipam"),
               c1, "tfwc1").rc == 0


def test_del_without_prevresult_uses_the_record_and_keeps_other_containers(lab: Any, tmp_path: Path) -> None:
    node = Path(lab("node")).name
    setup_node(node, "DROP")
    c1, prev1 = attach(lab, node, "tfwnet", "tfwbr0", "10.232.1.0/24", "tfwc1", tmp_path)
    c2, prev2 = attach(lab, node, "tfwnet", "tfwbr0", "10.232.1.0/24", "tfwc2", tmp_path)
    for netns, cid, prev in ((c1, "tfwc1", prev1), (c2, "tfwc2", prev2)):
        assert run(node, "cniplug-firewall", "ADD", fw_conf("tfwnet", prev), netns, cid).rc == 0
    bare = {k: v for k, v in fw_conf("tfwnet", prev1).items() if k != "prevResult"}
    r = run(node, "cniplug-firewall", "DEL", bare, "", "tfwc1")
    assert r.rc == 0, r.stdout
    rules = filter_rules(node)
    assert not [x for x in rules if "10.232.1.2/" in x], "DEL without prevResult must find c1's rules in its record"
    assert "-A CNI-FORWARD -s 10.232.1.3/32 -j ACCEPT" in rules, "c2's rules must stay"


def test_gc_removes_rules_of_attachments_not_valid(lab: Any, tmp_path: Path) -> None:
    node = Path(lab("node")).name
    setup_node(node)
    c1, prev1 = attach(lab, node, "tfwnet", "tfwbr0", "10.232.1.0/24", "tfwc1", tmp_path)
    c2, prev2 = attach(lab, node, "tfwnet", "tfwbr0", "10.232.1.0/24", "tfwc2", tmp_path)
    for netns, cid, prev in ((c1, "tfwc1", prev1), (c2, "tfwc2", prev2)):
        assert run(node, "cniplug-firewall", "ADD", fw_conf("tfwnet", prev), netns, cid).rc == 0
    gc = {"cniVersion": "1.1.0", "name": "tfwnet", "type": "cniplug-firewall",
          "cni.dev/valid-attachments": [{"containerID": "tfwc2", "ifname": "eth0"}]}
    r = run(node, "cniplug-firewall", "GC", gc, "", "", ifname="")
    assert r.rc == 0, r.stdout + r.stderr
    rules = filter_rules(node)
    assert not [x for x in rules if "10.232.1.2/" in x], rules
    assert "-A CNI-FORWARD -s 10.232.1.3/32 -j ACCEPT" in rules
    assert not Path(firewall.record_path("tfwnet", "tfwc1", "eth0")).exists()
    assert Path(firewall.record_path("tfwnet", "tfwc2", "eth0")).exists()
    # Without the key GC removes nothing.
    del gc["cni.dev/valid-attachments"]
    assert run(node, "cniplug-firewall", "GC", gc, "", "", ifname="").rc == 0
    assert "-A CNI-FORWARD -s 10.232.1.3/32 -j ACCEPT" in filter_rules(node)


def test_same_bridge_isolates_bridges(lab: Any, tmp_path: Path) -> None:
    node = Path(lab("node")).name
    out = Path(lab("out")).name
    setup_node(node)
    add_outside(node, out, "10.232.2.1/24", "10.232.2.2/24", ["10.232.3.0/24", "10.232.4.0/24"], "tfwup0")
    a, prev_a = attach(lab, node, "tfwnet1", "tfwbr1", "10.232.3.0/24", "tfwa", tmp_path)
    b, prev_b = attach(lab, node, "tfwnet2", "tfwbr2", "10.232.4.0/24", "tfwb", tmp_path)
    assert pings(a, "10.232.4.2"), "without isolation the two bridges' containers reach each other"
    for netns, cid, net, prev in ((a, "tfwa", "tfwnet1", prev_a), (b, "tfwb", "tfwnet2", prev_b)):
        r = run(node, "cniplug-firewall", "ADD", fw_conf(net, prev, ingressPolicy="same-bridge"), netns, cid)
        assert r.rc == 0, r.stdout + r.stderr
    assert not pings(a, "10.232.4.2"), "same-bridge must drop traffic between the bridges"
    assert pings(a, "10.232.2.2") and pings(b, "10.232.2.2"), "the outside stays reachable"
    conf = fw_conf("tfwnet1", prev_a, ingressPolicy="same-bridge")
    assert run(node, "cniplug-firewall", "CHECK", conf, a, "tfwa").rc == 0


def normalised(rules: list[str]) -> list[str]:
    return sorted(rules)


@pytest.mark.parametrize("policy", ["open", "same-bridge"])
def test_filter_table_same_as_reference(lab: Any, tmp_path: Path, policy: str) -> None:
    """Two nodes, same names and subnet: ours (bridge + firewall) and the reference's (bridge + firewall);
    the filter tables must be identical, after ADD (two containers) and after DEL of one."""
    if not Path(REFERENCE).exists():  # pragma: no cover
        pytest.fail(f"reference {REFERENCE} missing: apt-get install containernetworking-plugins")
    states: dict[str, list[list[str]]] = {}
    for who, plugin, bridge_plugin in (("ours", "cniplug-firewall", "cniplug-bridge"),
                                       ("ref", REFERENCE, "/usr/lib/cni/bridge")):
        node = Path(lab(f"n{who}")).name
        setup_node(node, "DROP")
        seen = []
        prevs = {}
        for cid in ("tfwr1", "tfwr2"):
            netns = lab(f"{who}{cid}")
            conf = bridge_conf("tfwnet", "tfwbr0", "10.232.5.0/24", tmp_path / who)
            if bridge_plugin != "cniplug-bridge":
                conf = {**conf, "type": "bridge", "ipam": {**conf["ipam"], "type": "host-local"}}
            lab.bridges.append("tfwbr0")
            lab.records.append(firewall.record_path("tfwnet", cid, "eth0"))
            r = run(node, bridge_plugin, "ADD", conf, netns, cid)
            assert r.rc == 0, r.stdout + r.stderr
            prevs[cid] = (netns, json.loads(r.stdout))
            extra = {"ingressPolicy": policy} if policy != "open" else {}
            r = run(node, plugin, "ADD", fw_conf("tfwnet", prevs[cid][1], type="firewall", **extra), netns, cid)
            assert r.rc == 0, r.stdout + r.stderr
        seen.append(filter_rules(node))
        netns, prev = prevs["tfwr1"]
        extra = {"ingressPolicy": policy} if policy != "open" else {}
        assert run(node, plugin, "DEL", fw_conf("tfwnet", prev, type="firewall", **extra), netns, "tfwr1").rc == 0
        seen.append(filter_rules(node))
        states[who] = seen
        in_ns(node, "true")
    assert states["ours"][0] == states["ref"][0], (states["ours"][0], states["ref"][0])
    assert states["ours"][1] == states["ref"][1], (states["ours"][1], states["ref"][1])


def test_refusals_change_nothing(lab: Any, tmp_path: Path) -> None:
    node = Path(lab("node")).name
    setup_node(node)
    c1, prev = attach(lab, node, "tfwnet", "tfwbr0", "10.232.1.0/24", "tfwc1", tmp_path)
    before = filter_rules(node)
    for extra, code, named in (({"backend": "firewalld"}, 2, "firewalld"), ({"backend": "nft"}, 7, "nft"),
                               ({"ingressPolicy": "bogus"}, 7, "bogus"),
                               ({"iptablesAdminChainName": "ACCEPT"}, 7, "ACCEPT")):
        r = run(node, "cniplug-firewall", "ADD", fw_conf("tfwnet", prev, **extra), c1, "tfwc1")
        assert r.rc == 1 and r.json["code"] == code and named in r.json["msg"], r.stdout
    r = run(node, "cniplug-firewall", "ADD", {k: v for k, v in fw_conf("tfwnet", prev).items() if k != "prevResult"},
            c1, "tfwc1")
    assert r.rc == 1 and "prevResult" in r.json["msg"], r.stdout
    assert filter_rules(node) == before
    assert not Path(firewall.record_path("tfwnet", "tfwc1", "eth0")).exists()
    assert Path(rundir.RUN_DIR).exists()


def test_dry_run_script_gives_the_same_state(lab: Any, tmp_path: Path) -> None:
    """The --dry-run script, run with bash in a second node, leaves the filter table the plugin leaves."""
    tables = []
    for who in ("plugin", "script"):
        node = Path(lab(f"d{who}")).name
        setup_node(node, "DROP")
        netns, prev = attach(lab, node, "tfwnet", "tfwbr0", "10.232.1.0/24", f"tfwd{who[0]}", tmp_path / who)
        conf = fw_conf("tfwnet", prev, ingressPolicy="same-bridge")
        if who == "plugin":
            r = run(node, "cniplug-firewall", "ADD", conf, netns, "tfwdp")
            assert r.rc == 0, r.stdout + r.stderr
        else:
            env_run = subprocess.run(
                ["ip", "netns", "exec", node, *plugin_argv("cniplug-firewall"), "--dry-run"],
                input=json.dumps(conf).encode(), capture_output=True, timeout=60,
                env={**os.environ, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "tfwds", "CNI_NETNS": netns,
                     "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", "PYTHONPATH": str(REPO)})
            assert env_run.returncode == 0, env_run.stderr
            record = Path(firewall.record_path("tfwnet", "tfwds", "eth0"))
            assert not record.exists(), "the dry run itself wrote a record"
            in_ns(node, "bash", "-c", env_run.stdout.decode())
            assert record.exists() and record.stat().st_mode & 0o777 == 0o600, "the script did not write the record"
            mine = json.loads(Path(firewall.record_path("tfwnet", "tfwdp", "eth0")).read_text())
            theirs = json.loads(record.read_text())
            assert {**theirs, "containerID": "", "ips": len(theirs["ips"])} == \
                {**mine, "containerID": "", "ips": len(mine["ips"])}
        tables.append(filter_rules(node))
    assert tables[0] == tables[1]
