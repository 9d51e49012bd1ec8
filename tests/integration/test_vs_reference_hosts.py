"""Ours against the reference Go plugins, compared on the whole host (issue #16): bridge, ptp and loopback.

Each side runs in a private "host" network namespace of its own (tcr_netstate.setup_host), with the same
network name, container id, subnet and config keys (only `type` and `ipam.type` differ). The comparison is
the full change each ADD makes to its host and container: every link, address and route, the whole nat and
filter tables (iptables-save and ip6tables-save, not a filtered view) and the forwarding sysctls. Then DEL
must bring each side back to where it started, but for what both leave on purpose (a bridge, forwarding).

Random names and numbers are masked on both sides the same way: host veth names, MACs, ifindexes, link-local
addresses (derived from the MAC). Known, intended differences are listed in INTENDED with the reason.
Names: host namespaces tcp-r-hv*, containers tcp-r-cv*, networks tcvnet*, 10.250.150.0/24, fd10:250:150::/64.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tcr_netstate import IP, host_argv, plugin_env, remove_lock_files, run_in_host, setup_host, snapshot

pytestmark = pytest.mark.root

REFERENCE_DIR = Path("/usr/lib/cni")
V4, V6 = "10.250.150.0/24", "fd10:250:150::/64"
# Fields that differ between any two runs, whoever made the object (random by design).
RANDOM_KEYS = {"ifindex", "link_index", "address", "broadcast", "permaddr", "link_netnsid", "operstate",
               "linkmode", "group", "altnames", "parentbus", "parentdev", "inet6_addr_gen_mode", "num_tx_queues",
               "num_rx_queues", "gso_max_size", "gso_max_segs", "gro_max_size", "tso_max_size", "tso_max_segs",
               "gso_ipv4_max_size", "gro_ipv4_max_size", "id", "no_master", "info_data", "info_slave_data",
               "protocol", "pref"}
# (state key, why): accepted differences between ours and the reference, dropped from both before comparing.
INTENDED: dict[str, str] = {
    "txqlen": "iproute2 creates a veth with txqueuelen 1000, netlink (the reference) with 0; noqueue either way",
    "nodad": "ours adds ptp's IPv6 addresses with nodad (a two-ended link: no duplicate to detect), the reference "
             "waits for DAD to settle instead",
}
CARRIER_FLAGS = {"LOWER_UP", "NO-CARRIER", "M-DOWN", "linkdown"}  # follow the carrier asynchronously; UP is compared


@dataclass
class Case:
    name: str
    plugin: str  # reference type; ours is "cniplug-" + plugin
    keys: dict[str, Any]
    ranges: list[list[dict[str, str]]]
    ifname: str = "eth0"

    def config(self, ours: bool, data_dir: Path) -> dict[str, Any]:
        conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": f"tcvnet{self.name[:6]}",
                                "type": f"cniplug-{self.plugin}" if ours else self.plugin, **self.keys}
        if self.ranges:
            conf["ipam"] = {"type": "cniplug-host-local" if ours else "host-local", "dataDir": str(data_dir),
                            "ranges": self.ranges}
            if not self.keys.get("isDefaultGateway"):  # which adds the default routes itself
                conf["ipam"]["routes"] = [{"dst": "0.0.0.0/0"}] + ([{"dst": "::/0"}] if len(self.ranges) > 1 else [])
        return conf


DUAL = [[{"subnet": V4}], [{"subnet": V6}]]
CASES = [
    Case("bridge-masq", "bridge", {"bridge": "tcvbr0", "isGateway": True, "ipMasq": True}, [[{"subnet": V4}]]),
    Case("bridge-dual", "bridge", {"bridge": "tcvbr0", "isGateway": True, "isDefaultGateway": True, "ipMasq": True,
                                   "mtu": 1400}, DUAL),
    Case("ptp-masq", "ptp", {"ipMasq": True, "mtu": 1400}, [[{"subnet": V4}]]),
    Case("ptp-dual", "ptp", {"ipMasq": True}, DUAL),
    Case("ptp-plain", "ptp", {}, [[{"subnet": V4}]]),
    Case("loopback", "loopback", {}, [], ifname="lo"),
]


def mask(value: Any) -> Any:
    """Drop random fields, name host veths `vethX`, drop link-local and tentative-state details."""
    if isinstance(value, dict):
        out = {k: mask(v) for k, v in value.items() if k not in RANDOM_KEYS and k not in INTENDED
               and k not in ("valid_life_time", "preferred_life_time", "tentative")}
        if isinstance(out.get("flags"), list):
            out["flags"] = [f for f in out["flags"] if f not in CARRIER_FLAGS]
        if out.get("ifname", "").startswith("veth"):
            out["ifname"] = "vethX"
        if "addr_info" in out:
            out["addr_info"] = [a for a in out["addr_info"] if a.get("scope") != "link"]
        for key in ("dev", "master", "link"):
            if isinstance(out.get(key), str) and out[key].startswith("veth"):
                out[key] = "vethX"
        return out
    if isinstance(value, list):
        return [mask(v) for v in value]
    if isinstance(value, str):
        return re.sub(r"veth[0-9a-f]{8}", "vethX", value)
    return value


def mask_list(items: list[Any]) -> list[Any]:
    """mask() each item; drop routes to a link-local address (fe80::<from the MAC>)."""
    return [mask(x) for x in items
            if not (isinstance(x, dict) and str(x.get("dst", "")).startswith("fe80::") and x.get("dst") != "fe80::/64")]


def compare(ours: dict[str, Any], ref: dict[str, Any]) -> list[str]:
    """What one side changed that the other did not, per state key."""
    out = []
    for key in sorted(set(ours) | set(ref)):
        a, b = ours.get(key), ref.get(key)
        if isinstance(a, dict) or isinstance(b, dict):
            a, b = a or {"removed": [], "added": []}, b or {"removed": [], "added": []}
            for what in ("removed", "added"):
                only_ours = sorted((Counter(a[what]) - Counter(b[what])).elements())
                only_ref = sorted((Counter(b[what]) - Counter(a[what])).elements())
                if only_ours or only_ref:
                    out.append(f"{key} {what}: only ours {only_ours}, only the reference {only_ref}")
        elif a != b:
            out.append(f"{key}: ours {a}, the reference {b}")
    return out


def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What changed, per state key: sorted removed and added items (JSON text), or old -> new for values."""
    out: dict[str, Any] = {}
    for key in sorted(set(before) | set(after)):
        if key == "ipam":
            continue
        a, b = before.get(key), after.get(key)
        if isinstance(a, list) and isinstance(b, list):
            a, b = mask_list(a), mask_list(b)
            # multisets: a second `vethX` on a bridge that already has one is a change too
            ta = Counter(json.dumps(x, sort_keys=True) for x in a)
            tb = Counter(json.dumps(x, sort_keys=True) for x in b)
            removed, added = sorted((ta - tb).elements()), sorted((tb - ta).elements())
            if removed or added:
                out[key] = {"removed": removed, "added": added}
        elif a != b:
            out[key] = f"{a} -> {b}"
    return out


def run_reference(host: str, plugin: str, command: str, config: dict[str, Any], netns: str, cid: str,
                  ifname: str) -> tuple[int, str, str]:
    env = plugin_env(command, netns, cid, ifname)
    proc = subprocess.run([IP, "netns", "exec", host, str(REFERENCE_DIR / plugin)], input=json.dumps(config).encode(),
                          env=env, capture_output=True, timeout=120)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def settle(host: str, containers: list[str]) -> dict[str, Any]:
    """A snapshot once the links are up (carrier and operstate follow an ADD asynchronously)."""
    deadline = time.monotonic() + 5
    while True:
        state = snapshot(host, containers)
        links = [link for key in state if key.endswith("link") for link in state[key]]
        if all(link.get("operstate") in ("UP", "UNKNOWN") for link in links if "UP" in link.get("flags", [])):
            return state
        if time.monotonic() > deadline:
            return state
        time.sleep(0.05)


@pytest.mark.skipif(not REFERENCE_DIR.joinpath("ptp").exists(), reason="reference plugins missing")
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_same_host_changes_as_the_reference(case: Case, make_netns: Callable[[str], str], tmp_path: Path) -> None:
    sides = {}
    for side in ("ours", "ref"):
        host = Path(make_netns(f"r-hv{side}")).name
        setup_host(host)
        container = make_netns(f"r-cv{side}")
        sides[side] = (host, container, case.config(side == "ours", tmp_path / side))
    deltas, results, dels = {}, {}, {}
    try:
        for side, (host, container, conf) in sides.items():
            before = settle(host, [container])
            if side == "ours":
                run = run_in_host(host, conf["type"], "ADD", conf, container, "tcv1", case.ifname)
                rc, out, err = run.rc, run.stdout, run.stderr
            else:
                rc, out, err = run_reference(host, case.plugin, "ADD", conf, container, "tcv1", case.ifname)
            assert rc == 0, f"{side} ADD failed: {out} {err}"
            results[side] = json.loads(out)
            deltas[side] = delta(before, settle(host, [container]))
            if side == "ours":
                rc = run_in_host(host, conf["type"], "DEL", conf, container, "tcv1", case.ifname).rc
            else:
                rc = run_reference(host, case.plugin, "DEL", conf, container, "tcv1", case.ifname)[0]
            assert rc == 0, f"{side} DEL failed"
            dels[side] = delta(before, settle(host, [container]))
    finally:
        remove_lock_files(["tcvbr0"])
    assert not compare(deltas["ours"], deltas["ref"]), "\n".join(["ADD:", *compare(deltas["ours"], deltas["ref"])])
    assert not compare(dels["ours"], dels["ref"]), "\n".join(["after DEL:", *compare(dels["ours"], dels["ref"])])
    assert mask(strip_result(results["ours"])) == mask(strip_result(results["ref"]))
    print(f"\n[vs-reference] {case.name}: ADD changed {sorted(deltas['ours'])} the same way on both; "
          f"after DEL both leave {sorted(dels['ours']) or 'nothing'}")


def strip_result(result: dict[str, Any]) -> dict[str, Any]:
    """The ADD result without the random parts (MACs, veth names, sandbox paths)."""
    out = json.loads(json.dumps(result))
    for iface in out.get("interfaces", []):
        iface.pop("mac", None)
        iface.pop("sandbox", None)
    return dict(out)


# ---------------------------------------------------------------------------------------------- dry-run equivalence

EQUIVALENCE = [
    Case("bridge-masq", "bridge", {"bridge": "tcvbr0", "isGateway": True, "ipMasq": True}, [[{"subnet": V4}]]),
    Case("bridge-dual", "bridge", {"bridge": "tcvbr0", "isGateway": True, "isDefaultGateway": True, "ipMasq": True,
                                   "mtu": 1400, "hairpinMode": True}, DUAL),
    Case("bridge-existing", "bridge", {"bridge": "tcvbr0", "isGateway": True, "ipMasq": True}, [[{"subnet": V4}]]),
    Case("bridge-l2", "bridge", {"bridge": "tcvbr0", "promiscMode": True}, [[{"subnet": V4}]]),
    Case("ptp-masq", "ptp", {"ipMasq": True, "mtu": 1400}, [[{"subnet": V4}]]),
    Case("ptp-dual", "ptp", {"ipMasq": True}, DUAL),
    Case("loopback", "loopback", {}, [], ifname="lo"),
]


@pytest.mark.parametrize("case", EQUIVALENCE, ids=[c.name for c in EQUIVALENCE])
def test_dry_run_script_run_by_bash_leaves_what_the_plugin_leaves(case: Case, make_netns: Callable[[str], str],
                                                                  tmp_path: Path) -> None:
    """Side "bash" runs the ADD --dry-run script with bash, then the DEL --dry-run script; side "plugin" runs the
    plugin. Each side in its own host namespace; the whole change of each must be the same, after ADD and after
    DEL. "bridge-existing" first attaches another container with the plugin on both sides."""
    deltas, dels = {}, {}
    try:
        for side in ("bash", "plugin"):
            host = Path(make_netns(f"r-hq{side[0]}")).name
            setup_host(host)
            container = make_netns(f"r-cq{side[0]}")
            conf = case.config(True, tmp_path / side)
            if case.name == "bridge-existing":
                other = make_netns(f"r-cq{side[0]}0")
                assert run_in_host(host, conf["type"], "ADD", conf, other, "tcv0", case.ifname).rc == 0
            before = settle(host, [container])
            for verb in ("ADD", "DEL"):
                if side == "plugin":
                    run = run_in_host(host, conf["type"], verb, conf, container, "tcv1", case.ifname)
                    assert run.rc == 0, run.stdout + run.stderr
                else:
                    env = plugin_env(verb, container, "tcv1", case.ifname)
                    dry = subprocess.run(host_argv(host, conf["type"]) + ["--dry-run"],
                                         input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=120)
                    assert dry.returncode == 0 and dry.stdout.startswith(b"#!/bin/bash"), dry.stdout + dry.stderr
                    ran = subprocess.run([IP, "netns", "exec", host, "bash", "-c", dry.stdout.decode()],
                                         capture_output=True, text=True, timeout=120)
                    assert ran.returncode == 0, f"{verb} script failed: {ran.stderr}\n{dry.stdout.decode()}"
                state = delta(before, settle(host, [container]))
                (deltas if verb == "ADD" else dels)[side] = state
    finally:
        remove_lock_files(["tcvbr0"])
    assert deltas["bash"], "the ADD changed nothing"
    for what, got in (("ADD", deltas), ("after DEL", dels)):
        assert not compare(got["bash"], got["plugin"]), "\n".join([what, *compare(got["bash"], got["plugin"])])
    print(f"\n[dry-run] {case.name}: bash and the plugin changed {sorted(deltas['bash'])} alike")
