"""cniplug-bridge + cniplug-host-local against the reference Go bridge + host-local (/usr/lib/cni, spec 1.0.0).

Each case runs both in their own namespace, bridge, network name and subnet, then compares the kernel state and
the result with names, MACs and addresses mapped (addresses become subnet-relative: `N4+2`, `N6+1`).
Ours: bridge tcbbr2<k>, network tcbnet2<k>, 10.250.112.<32k>/27, fd10:250:110:2<k>::/64;
reference: tcbbr3<k>, tcbnet3<k>, 10.250.113.<32k>/27, fd10:250:110:3<k>::/64.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import PluginRun, run_plugin, sh

from cniplug.plugins.bridge import lock_path
from cniplug.plugins.common import chain_name

pytestmark = pytest.mark.root

REFERENCE = "/usr/lib/cni/bridge"
if not Path(REFERENCE).exists():  # pragma: no cover - the machines this runs on have it
    pytest.skip(f"reference plugin {REFERENCE} not installed", allow_module_level=True)

SLAVE_KEYS = ("state", "hairpin", "learning", "flood", "isolated", "guard", "root_block", "fastleave",
              "proxy_arp", "mcast_flood", "bcast_flood", "neigh_suppress")
BRIDGE_KEYS = ("stp_state", "forward_delay", "ageing_time", "mcast_snooping", "vlan_filtering", "hello_time",
               "max_age", "priority", "nf_call_iptables", "nf_call_ip6tables")

# Documented, accepted differences between ours and the reference, removed from both sides before comparing.
# Each entry: (path into the normalised kernel state, why). Keep this list short; anything else is a bug.
INTENDED_DIFFERENCES: list[tuple[tuple[str, ...], str]] = [
    # The reference creates the veth over netlink with tx_queue_len 0; `ip link add ... type veth` gives 1000.
    # Both ends use the noqueue qdisc, so the length has no effect unless a qdisc is added later (bandwidth).
    (("container", "eth0", "txqlen"), "veth created by iproute2 (txqlen 1000) instead of netlink (0)"),
    (("ports", "0", "link", "txqlen"), "same, host end of the veth"),
]
# Not a kernel-state difference, so not listed: our bridge gets its MAC at creation (`ip link add ... address`),
# the reference re-sets the MAC it has after adding the gateway; both end up pinned (addr_assign_type 3).
# Behaviour differences tested elsewhere (test_bridge.py): our DEL removes the NAT chain even when the netns is
# gone (the reference leaks it). macspoofchk (nftables) is compared with the reference in test_bridge_nft.py.
# Not compared at all: MAC addresses and ifindexes (random), IPv6 `tentative` (DAD timing), link-local
# addresses (derived from the MAC), the global forwarding sysctls (host-wide, set by whichever ran first).


# ---------------------------------------------------------------------------------------------- helpers


def ipj(*argv: str) -> list[dict[str, Any]]:
    out = sh("ip", "-j", *argv)
    return json.loads(out) if out.strip() else []


def ns_name(netns: str) -> str:
    return Path(netns).name


def read_sysctls(netns: str | None, *keys: str) -> dict[str, str]:
    prefix = ["ip", "netns", "exec", ns_name(netns)] if netns else []
    values = sh(*prefix, "cat", *("/proc/sys/" + k.replace(".", "/") for k in keys)).split()
    return dict(zip(keys, values, strict=True))


def link_state(link: dict[str, Any], broadcast: bool) -> dict[str, Any]:
    addrs = sorted(
        (a["family"], a["local"], a["prefixlen"], a.get("broadcast", "") if broadcast else "", a.get("scope"),
         sorted(k for k in ("noprefixroute", "nodad", "dadfailed", "deprecated", "home") if a.get(k)))
        for a in link.get("addr_info", []) if a.get("scope") != "link")
    return {"mtu": link["mtu"], "flags": sorted(link["flags"]), "operstate": link.get("operstate"),
            "kind": (link.get("linkinfo") or {}).get("info_kind"), "promiscuity": link.get("promiscuity"),
            "master": link.get("master"), "txqlen": link.get("txqlen", 0), "addrs": addrs}


def bridge_state(bridge: str, broadcast: bool = False) -> dict[str, Any]:
    br = ipj("-d", "addr", "show", "dev", bridge)[0]
    return {
        "link": link_state(br, broadcast),
        "attrs": {k: br["linkinfo"]["info_data"].get(k) for k in BRIDGE_KEYS},
        "addr_assign_type": Path(f"/sys/class/net/{bridge}/addr_assign_type").read_text().strip(),
        "sysctl": read_sysctls(None, f"net.ipv6.conf.{bridge}.accept_ra"),
    }


def kernel_state(netns: str, bridge: str, broadcast: bool = False) -> dict[str, Any]:
    ns = ns_name(netns)
    eth0 = ipj("-n", ns, "-d", "addr", "show", "dev", "eth0")[0]
    routes = sorted(
        json.dumps({k: r.get(k) for k in ("dst", "gateway", "dev", "protocol", "scope", "metric", "prefsrc",
                                           "flags", "pref")}, sort_keys=True)
        for fam in ("-4", "-6") for r in ipj("-n", ns, fam, "route", "show", "table", "main"))
    ports = ipj("-d", "addr", "show", "master", bridge)
    return {
        "container": {
            "eth0": link_state(eth0, broadcast), "lo": sorted(ipj("-n", ns, "link", "show", "lo")[0]["flags"]),
            "routes": routes,
            "sysctl": read_sysctls(netns, "net.ipv4.conf.eth0.arp_notify", "net.ipv6.conf.eth0.accept_dad",
                                   "net.ipv6.conf.eth0.disable_ipv6"),
        },
        "bridge": bridge_state(bridge, broadcast),
        "ports": [{"link": link_state(p, broadcast),
                   "attrs": {k: p["linkinfo"].get("info_slave_data", {}).get(k) for k in SLAVE_KEYS},
                   "sysctl": read_sysctls(None, f"net.ipv6.conf.{p['ifname']}.accept_ra"),
                   "name": p["ifname"]} for p in ports],
    }


def nat_state(chain: str) -> dict[str, list[str]]:
    out = {}
    for fam, tool in ((4, "iptables-save"), (6, "ip6tables-save")):
        lines = sh(tool, "-t", "nat").splitlines()
        out[str(fam)] = sorted(re.sub(r"\[\d+:\d+\]", "[0:0]", line) for line in lines if chain in line)
    return out


IP_RE = re.compile(r"(?<![\w.:])(\d{1,3}(?:\.\d{1,3}){3}|fd10:250:[0-9a-f:]+)")


def drop(state: dict[str, Any], path: tuple[str, ...]) -> None:
    node: Any = state
    for key in path[:-1]:
        if isinstance(node, list):
            if int(key) >= len(node):
                return
            node = node[int(key)]
        elif key in node:
            node = node[key]
        else:
            return
    if isinstance(node, dict):
        node.pop(path[-1], None)


def flatten(node: Any, path: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        return {k: v for key, child in node.items() for k, v in flatten(child, f"{path}.{key}").items()}
    if isinstance(node, list) and node and all(isinstance(x, dict) for x in node):
        return {k: v for i, child in enumerate(node) for k, v in flatten(child, f"{path}[{i}]").items()}
    return {path: node}


def differences(ours: Any, ref: Any) -> list[str]:
    """Readable list of `path: ours=... reference=...` for every leaf that differs."""
    a, b = flatten(ours), flatten(ref)
    return [f"{key}: ours={a.get(key, '<absent>')!r} reference={b.get(key, '<absent>')!r}"
            for key in sorted(set(a) | set(b)) if a.get(key, "<absent>") != b.get(key, "<absent>")]


@dataclass
class Side:
    """One plugin suite's attachment: its names and subnets, so its state can be mapped to placeholders."""

    label: str
    plugin: str
    ipam: str
    n: int
    cid: str
    netns: str
    subnet4: ipaddress.IPv4Network
    subnet6: ipaddress.IPv6Network

    @property
    def network(self) -> str:
        return f"tcbnet{self.n}"

    @property
    def bridge(self) -> str:
        return f"tcbbr{self.n}"

    @property
    def chain(self) -> str:
        return chain_name(self.network, self.cid)

    def config(self, dual: bool, overrides: dict[str, Any], data_dir: Path) -> dict[str, Any]:
        ranges = [[{"subnet": str(self.subnet4)}]] + ([[{"subnet": str(self.subnet6)}]] if dual else [])
        routes = [{"dst": "0.0.0.0/0"}] + ([{"dst": "::/0"}] if dual else [])
        cfg: dict[str, Any] = {
            "cniVersion": "1.0.0", "name": self.network, "type": Path(self.plugin).name, "bridge": self.bridge,
            "isGateway": True, "ipMasq": True,
            "ipam": {"type": self.ipam, "dataDir": str(data_dir), "ranges": ranges, "routes": routes},
        }
        for key, value in overrides.items():
            if key == "ipam":
                cfg["ipam"] = {k: v for k, v in dict(cfg["ipam"], **value).items() if v is not None}
            else:
                cfg[key] = value
        return cfg

    def run(self, command: str, config: dict[str, Any]) -> PluginRun:
        return run_plugin(self.plugin, command, config, netns=self.netns, container_id=self.cid)

    def normalise(self, state: Any, veth: str = "") -> Any:
        text = json.dumps(state, sort_keys=True)
        names = {self.chain: "CHAIN", self.bridge: "BRIDGE", self.network: "NET", self.cid: "CID",
                 ns_name(self.netns): "NS"}
        if veth:
            names[veth] = "VETH"
        for old, new in names.items():
            text = text.replace(old, new)

        def relative(m: re.Match[str]) -> str:
            try:
                addr = ipaddress.ip_address(m[1])
            except ValueError:
                return m[0]
            for net, tag in ((self.subnet4, "N4"), (self.subnet6, "N6")):
                if addr.version == net.version and addr in net:
                    return f"{tag}+{int(addr) - int(net.network_address)}"
            return m[0]

        return json.loads(IP_RE.sub(relative, text))


def result_shape(side: Side, result: dict[str, Any]) -> Any:
    res = json.loads(json.dumps(result))
    for itf in res.get("interfaces", []):
        if "mac" in itf:
            itf["mac"] = "MAC"
    veth = res["interfaces"][1]["name"] if len(res.get("interfaces", [])) > 1 else ""
    return side.normalise(res, veth)


@pytest.fixture
def pair(make_netns: Callable[[str], str], cleanup_links: list[str],
         cleanup_chains: list[str]) -> Iterator[Callable[[int], tuple[Side, Side]]]:
    """pair(k) -> (ours, reference) sides; their attachments are DELeted and their bridges/chains removed after."""
    sides: list[tuple[Side, dict[str, Any]]] = []

    def make(k: int) -> tuple[Side, Side]:
        ours = Side("ours", "cniplug-bridge", "cniplug-host-local", 20 + k, f"tcbc2{k}", make_netns(f"r{k}-o"),
                    ipaddress.IPv4Network(f"10.250.112.{32 * k}/27"), ipaddress.IPv6Network(f"fd10:250:110:2{k}::/64"))
        ref = Side("reference", REFERENCE, "host-local", 30 + k, f"tcbc3{k}", make_netns(f"r{k}-r"),
                   ipaddress.IPv4Network(f"10.250.113.{32 * k}/27"), ipaddress.IPv6Network(f"fd10:250:110:3{k}::/64"))
        for side in (ours, ref):
            cleanup_links.append(side.bridge)
            cleanup_chains.append(side.chain)
        return ours, ref

    def remember(side: Side, config: dict[str, Any]) -> None:
        sides.append((side, config))

    make.remember = remember  # type: ignore[attr-defined]
    yield make
    for side, config in sides:
        side.run("DEL", config)
        Path(lock_path(side.bridge)).unlink(missing_ok=True)  # ours keeps one per bridge


# ---------------------------------------------------------------------------------------------- cases


@dataclass
class Case:
    id: str
    dual: bool = False
    overrides: dict[str, Any] | None = None
    existing_bridge: bool = False


CASES = [
    Case("ipv4-gateway-masq"),
    Case("dual-stack", dual=True),
    Case("mtu1400-hairpin", overrides={"mtu": 1400, "hairpinMode": True}),
    Case("default-gateway", dual=True, overrides={"isDefaultGateway": True, "isGateway": False,
                                                   "ipam": {"routes": None}}),
    Case("no-masq", overrides={"ipMasq": False}),
    Case("existing-bridge", existing_bridge=True),
]


@pytest.mark.parametrize("k", range(len(CASES)), ids=[c.id for c in CASES])
def test_same_kernel_state_as_the_reference(k: int, pair: Any, tmp_path: Path) -> None:
    case = CASES[k]
    ours, ref = pair(k)
    states: dict[str, Any] = {}
    results: dict[str, Any] = {}
    nats: dict[str, Any] = {}
    configs: dict[str, dict[str, Any]] = {}
    for side in (ours, ref):
        configs[side.label] = cfg = side.config(case.dual, case.overrides or {}, tmp_path / side.label)
        if case.existing_bridge:
            sh("ip", "link", "add", side.bridge, "type", "bridge")
        pair.remember(side, cfg)
        r = side.run("ADD", cfg)
        assert r.rc == 0, f"{side.label} ADD failed: {r.stdout} {r.stderr}"
        results[side.label] = r.json
    for side in (ours, ref):
        result = results[side.label]
        veth = result["interfaces"][1]["name"]
        state = kernel_state(side.netns, side.bridge)
        assert [p["name"] for p in state["ports"]] == [veth]
        # the result's MACs are the kernel's (bridge, host veth, container side)
        macs = [ipj("link", "show", side.bridge)[0]["address"], ipj("link", "show", veth)[0]["address"],
                ipj("-n", ns_name(side.netns), "link", "show", "eth0")[0]["address"]]
        assert [itf["mac"] for itf in result["interfaces"]] == macs, side.label
        for path, _why in INTENDED_DIFFERENCES:
            drop(state, path)
        states[side.label] = side.normalise(state, veth)
        nats[side.label] = side.normalise(nat_state(side.chain))

    # the reference and we agree on the chain name (and so can clean up each other's chains)
    if (case.overrides or {}).get("ipMasq", True):
        assert nats["reference"]["4"], "reference installed no NAT rules: the case does not test masquerading"
    else:
        assert nats["reference"] == {"4": [], "6": []}

    diff = differences(states["ours"], states["reference"])
    assert not diff, "kernel state differs from the reference:\n" + "\n".join(diff)
    assert not (diff := differences(nats["ours"], nats["reference"])), "NAT rules differ:\n" + "\n".join(diff)

    shape = {side.label: result_shape(side, results[side.label]) for side in (ours, ref)}
    assert not (diff := differences(shape["ours"], shape["reference"])), "results differ:\n" + "\n".join(diff)
    assert len(shape["ours"]["interfaces"]) == 3
    assert all(ip["interface"] == 2 and ip["gateway"].endswith("+1") for ip in shape["ours"]["ips"])

    # After DEL: both leave the bridge (with its gateway addresses) and nothing else.
    for side in (ours, ref):
        d = side.run("DEL", configs[side.label])
        assert d.rc == 0, f"{side.label} DEL failed: {d.stdout} {d.stderr}"
    after = {side.label: side.normalise({"bridge": bridge_state(side.bridge),
                                         "ports": ipj("link", "show", "master", side.bridge),
                                         "nat": nat_state(side.chain)}) for side in (ours, ref)}
    assert not (diff := differences(after["ours"], after["reference"])), "after DEL:\n" + "\n".join(diff)
    assert after["ours"]["ports"] == [] and after["ours"]["nat"] == {"4": [], "6": []}


def test_ipv4_broadcast_like_the_reference(pair: Any, tmp_path: Path) -> None:
    """The reference's addresses (container and bridge gateway) carry the subnet broadcast (`brd x.x.x.255`)."""
    ours, ref = pair(6)
    brd: dict[str, Any] = {}
    for side in (ours, ref):
        cfg = side.config(False, {"ipMasq": False}, tmp_path / side.label)
        pair.remember(side, cfg)
        r = side.run("ADD", cfg)
        assert r.rc == 0, r
        container = ipj("-n", ns_name(side.netns), "addr", "show", "dev", "eth0")[0]["addr_info"]
        gateway = ipj("addr", "show", "dev", side.bridge)[0]["addr_info"]
        brd[side.label] = side.normalise([[a.get("broadcast") for a in addrs if a["family"] == "inet"]
                                          for addrs in (container, gateway)])
    assert brd["reference"] == [["N4+31"], ["N4+31"]]
    assert brd["ours"] == brd["reference"]


def test_the_two_suites_clean_up_each_others_nat_chain(pair: Any, tmp_path: Path) -> None:
    """Same chain name and comment: our DEL removes a chain the reference made for the same network+container."""
    ours, ref = pair(7)
    cfg_ref = ref.config(False, {}, tmp_path / "ref")
    pair.remember(ref, cfg_ref)
    assert (r := ref.run("ADD", cfg_ref)).rc == 0, r
    assert nat_state(ref.chain)["4"], "reference made no chain"
    # our plugin, same network name, container id, netns and bridge: DEL it as if a node switched suites
    cfg_ours = dict(cfg_ref, type="cniplug-bridge", ipam=dict(cfg_ref["ipam"], type="cniplug-host-local"))
    d = run_plugin("cniplug-bridge", "DEL", cfg_ours, netns=ref.netns, container_id=ref.cid)
    assert d.rc == 0, d
    assert nat_state(ref.chain) == {"4": [], "6": []}
    assert ipj("link", "show", "master", ref.bridge) == []
    leftovers = [p.name for p in (tmp_path / "ref" / ref.network).iterdir()
                 if p.name != "lock" and not p.name.startswith("last_reserved")]
    assert leftovers == [], "our host-local did not release the reference's reservation"
