"""cniplug-bridge + built-in cniplug-host-local, run as a runtime runs them, checked against the real kernel.

Every name starts with `tcb` (namespaces `tcp-b<N>-*` from make_netns, bridges `tcbbr<N>`, networks `tcbnet<N>`,
containers `tcbc<N>*`); addresses come from 10.250.110.0/24, 10.250.119.0/30 and fd10:250:110::/48.
Each test gets its own slot N, a /27 (or smaller) of 10.250.110.0/24 and fd10:250:110:<N>::/64.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PluginRun, run_plugin, sh

from cniplug.plugins.bridge import lock_path
from cniplug.plugins.common import chain_name

pytestmark = pytest.mark.root

PLUGIN = "cniplug-bridge"


# ---------------------------------------------------------------------------------------------- helpers


def ipj(*argv: str) -> list[dict[str, Any]]:
    out = sh("ip", "-j", *argv)
    return json.loads(out) if out.strip() else []


def ns_name(netns: str) -> str:
    return Path(netns).name


def nsx(netns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", "netns", "exec", ns_name(netns), *argv], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"in {netns}: {' '.join(argv)} failed: {proc.stderr}")
    return proc


def ping(netns: str, addr: str, within: float = 0.0) -> bool:
    """One echo request from the namespace; retried until `within` seconds have passed (IPv6 DAD)."""
    deadline = time.monotonic() + within
    while True:
        if nsx(netns, "ping", "-c", "1", "-W", "1", addr, check=False).returncode == 0:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def wait_for(predicate: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Poll: some kernel clean-up (a deleted namespace's veth) is asynchronous."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def host_link_names() -> set[str]:
    return {link["ifname"] for link in ipj("link", "show")}


def links_into(netns: str) -> list[str]:
    """Host `ip -o link` lines of devices whose peer lives in this namespace (a leaked host veth)."""
    name = ns_name(netns)
    return [line for line in sh("ip", "-o", "link", "show").splitlines() if f"link-netns {name} " in line + " "]


def container_links(netns: str) -> list[str]:
    return sorted(link["ifname"] for link in ipj("-n", ns_name(netns), "link", "show"))


def global_addrs(*argv: str) -> set[str]:
    links = ipj(*argv)
    return {f"{a['local']}/{a['prefixlen']}" for link in links for a in link.get("addr_info", [])
            if a.get("scope") == "global"}


def nat_rules(family: int) -> list[str]:
    return sh("iptables-save" if family == 4 else "ip6tables-save", "-t", "nat").splitlines()


def chain_exists(chain: str, family: int = 4) -> bool:
    return any(line.startswith(f":{chain} ") or f"-j {chain}" in line or f"-A {chain} " in line
               for line in nat_rules(family))


def masq_packets(chain: str) -> int:
    """Packet counter of the MASQUERADE rule in the container's NAT chain."""
    out = sh("iptables", "-w", "-t", "nat", "-L", chain, "-v", "-x", "-n")
    for line in out.splitlines():
        words = line.split()
        if len(words) > 2 and words[2] == "MASQUERADE":
            return int(words[0])
    raise AssertionError(f"no MASQUERADE rule in {chain}:\n{out}")


def reserved_ips(data_dir: Path, network: str) -> dict[str, str]:
    """host-local's reservation files: address -> content (the lock and last_reserved_ip.* are not reservations)."""
    d = data_dir / network
    if not d.is_dir():
        return {}
    return {p.name: p.read_bytes().decode() for p in d.iterdir()
            if p.name != "lock" and not p.name.startswith("last_reserved")}


def addr_of(result: dict[str, Any], version: int) -> str:
    return str(next(ip["address"] for ip in result["ips"]
                    if ipaddress.ip_interface(ip["address"]).version == version))


def gw_of(result: dict[str, Any], version: int) -> str:
    return str(next(ip["gateway"] for ip in result["ips"]
                    if ipaddress.ip_interface(ip["address"]).version == version))


def bare(cidr: str) -> str:
    return str(ipaddress.ip_interface(cidr).ip)


class Net:
    """One bridge network (config + the attachments made on it); DEL and cleanup happen in the fixture."""

    def __init__(self, n: int, data_dir: Path, subnets: list[str], chains: list[str], **overrides: Any) -> None:
        self.n = n
        self.data_dir = data_dir
        self.name = f"tcbnet{n}"
        self.bridge = f"tcbbr{n}"
        self.chains = chains
        routes = [{"dst": "0.0.0.0/0" if ipaddress.ip_network(s, strict=False).version == 4 else "::/0"}
                  for s in subnets]
        self.config: dict[str, Any] = {
            "cniVersion": "1.0.0", "name": self.name, "type": PLUGIN, "bridge": self.bridge,
            "isGateway": True, "ipMasq": True,
            "ipam": {"type": "cniplug-host-local", "dataDir": str(data_dir),
                     "ranges": [[{"subnet": s}] for s in subnets], "routes": routes},
        }
        self.config.update(overrides)
        self.attached: list[tuple[str, str]] = []

    def run(self, command: str, cid: str, netns: str, prev: dict[str, Any] | None = None, **kw: Any) -> PluginRun:
        config = dict(self.config, prevResult=prev) if prev is not None else self.config
        return run_plugin(PLUGIN, command, config, netns=netns, container_id=cid, **kw)

    def add(self, cid: str, netns: str, ok: bool = True, **kw: Any) -> PluginRun:
        self.chains.append(chain_name(self.name, cid))
        self.attached.append((cid, netns))
        r = self.run("ADD", cid, netns, **kw)
        if ok:
            assert r.rc == 0, f"ADD {cid} failed: {r.stdout} {r.stderr}"
        return r

    def delete(self, cid: str, netns: str) -> PluginRun:
        return self.run("DEL", cid, netns)


@pytest.fixture
def make_net(tmp_path: Path, cleanup_links: list[str], cleanup_chains: list[str]) -> Iterator[Callable[..., Net]]:
    nets: list[Net] = []

    def make(n: int, subnets: list[str], **overrides: Any) -> Net:
        net = Net(n, tmp_path / "cni", subnets, cleanup_chains, **overrides)
        if isinstance(net.config.get("bridge"), str):
            cleanup_links.append(net.config["bridge"])
        nets.append(net)
        return net

    yield make
    for net in nets:  # best effort: the namespaces (make_netns) and bridges/chains (conftest) go after this
        for cid, netns in reversed(net.attached):
            net.delete(cid, netns)
        if isinstance(net.config.get("bridge"), str):  # the plugin's per-bridge lock file stays by design
            Path(lock_path(net.config["bridge"])).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- tests


def test_two_containers_ping_each_other_and_the_gateway(make_net: Callable[..., Net],
                                                        make_netns: Callable[[str], str]) -> None:
    net = make_net(10, ["10.250.110.0/27"])
    ns1, ns2 = make_netns("b10-a"), make_netns("b10-b")
    r1 = net.add("tcbc10a", ns1).json
    r2 = net.add("tcbc10b", ns2).json

    assert addr_of(r1, 4) == "10.250.110.2/27"
    assert addr_of(r2, 4) == "10.250.110.3/27"
    assert gw_of(r1, 4) == gw_of(r2, 4) == "10.250.110.1"
    assert "10.250.110.1/27" in global_addrs("addr", "show", "dev", net.bridge)
    ports = {link["ifname"] for link in ipj("link", "show", "master", net.bridge)}
    assert ports == {r1["interfaces"][1]["name"], r2["interfaces"][1]["name"]}
    assert global_addrs("-n", ns_name(ns1), "addr", "show", "dev", "eth0") == {"10.250.110.2/27"}

    assert ping(ns1, "10.250.110.1"), "container 1 cannot reach the gateway"
    assert ping(ns1, "10.250.110.3"), "container 1 cannot reach container 2"
    assert ping(ns2, "10.250.110.2"), "container 2 cannot reach container 1"


def test_masquerade_to_the_outside(make_net: Callable[..., Net], make_netns: Callable[[str], str],
                                   cleanup_links: list[str]) -> None:
    net = make_net(11, ["10.250.110.32/27"])
    ns, outside = make_netns("b11-c"), make_netns("b11-out")
    out = ns_name(outside)
    # "The outside": a namespace behind a veth from the host, with NO route back to the container subnet,
    # so a reply can only come back if the request left the host masqueraded as 10.250.119.1.
    cleanup_links.append("tcbout11")
    sh("ip", "link", "add", "tcbout11", "type", "veth", "peer", "name", "eth0", "netns", outside)
    sh("ip", "addr", "add", "10.250.119.1/30", "dev", "tcbout11")
    sh("ip", "link", "set", "tcbout11", "up")
    sh("ip", "-n", out, "addr", "add", "10.250.119.2/30", "dev", "eth0")
    sh("ip", "-n", out, "link", "set", "eth0", "up")
    # Count echo requests by source inside the outside namespace (its own netfilter tables, not the host's).
    for src in ("10.250.119.1/32", "10.250.110.32/27"):
        nsx(outside, "iptables", "-w", "-A", "INPUT", "-p", "icmp", "-s", src, "-j", "ACCEPT")
    assert subprocess.run(["ip", "-n", out, "route", "get", "10.250.110.34"], capture_output=True).returncode != 0

    r = net.add("tcbc11", ns).json
    assert addr_of(r, 4) == "10.250.110.34/27"
    chain = chain_name(net.name, "tcbc11")
    before = masq_packets(chain)

    assert ping(ns, "10.250.119.2"), "no reply from the outside: not masqueraded?"

    assert masq_packets(chain) > before, "the MASQUERADE rule did not count the ping"
    counts = {}
    for line in nsx(outside, "iptables", "-w", "-L", "INPUT", "-v", "-x", "-n").stdout.splitlines():
        words = line.split()
        if len(words) >= 8 and words[2] == "ACCEPT":
            counts[words[7]] = int(words[0])
    assert counts["10.250.119.1"] >= 1, counts
    assert counts["10.250.110.32/27"] == 0, f"the outside saw the container's own address: {counts}"


def test_check_passes_then_reports_a_missing_route(make_net: Callable[..., Net],
                                                   make_netns: Callable[[str], str]) -> None:
    net = make_net(12, ["10.250.110.64/27"])
    ns = make_netns("b12-c")
    result = net.add("tcbc12", ns).json

    ok = net.run("CHECK", "tcbc12", ns, prev=result)
    assert ok.rc == 0, f"CHECK after ADD failed: {ok.stdout} {ok.stderr}"

    sh("ip", "-n", ns_name(ns), "route", "del", "default")
    bad = net.run("CHECK", "tcbc12", ns, prev=result)
    assert bad.rc == 1, bad
    err = bad.json
    assert isinstance(err.get("code"), int) and err["code"] > 0, err
    assert "route" in err["msg"] and "0.0.0.0/0" in err["msg"], err


def test_del_releases_everything_and_is_idempotent(make_net: Callable[..., Net],
                                                   make_netns: Callable[[str], str], tmp_path: Path) -> None:
    net = make_net(13, ["10.250.110.96/27", "fd10:250:110:13::/64"])
    ns = make_netns("b13-a")
    r = net.add("tcbc13a", ns).json
    veth = r["interfaces"][1]["name"]
    chain = chain_name(net.name, "tcbc13a")
    data = tmp_path / "cni"
    assert reserved_ips(data, net.name) == {"10.250.110.98": "tcbc13a\r\neth0", "fd10:250:110:13::2": "tcbc13a\r\neth0"}
    assert veth in host_link_names()
    assert chain_exists(chain, 4) and chain_exists(chain, 6)

    d = net.delete("tcbc13a", ns)
    assert d.rc == 0, d
    assert reserved_ips(data, net.name) == {}
    assert veth not in host_link_names()
    assert container_links(ns) == ["lo"]
    assert not chain_exists(chain, 4) and not chain_exists(chain, 6)
    assert (d := net.delete("tcbc13a", ns)).rc == 0, f"second DEL: {d}"
    assert (d := net.delete("tcbc13a", "")).rc == 0, f"DEL with empty CNI_NETNS: {d}"

    # The namespace disappears before DEL (the runtime lost it): the reference leaks the NAT chain here.
    ns2 = make_netns("b13-b")
    r2 = net.add("tcbc13b", ns2).json
    chain2 = chain_name(net.name, "tcbc13b")
    sh("ip", "netns", "delete", ns_name(ns2))
    assert wait_for(lambda: r2["interfaces"][1]["name"] not in host_link_names()), "veth outlived its netns"
    assert chain_exists(chain2, 4) and chain_exists(chain2, 6)
    d = net.delete("tcbc13b", ns2)
    assert d.rc == 0, d
    assert not chain_exists(chain2, 4), "NAT chain (IPv4) left behind after DEL of a deleted netns"
    assert not chain_exists(chain2, 6), "NAT chain (IPv6) left behind after DEL of a deleted netns"
    assert reserved_ips(data, net.name) == {}


def test_dual_stack_pings_both_gateways(make_net: Callable[..., Net], make_netns: Callable[[str], str]) -> None:
    net = make_net(14, ["10.250.110.128/27", "fd10:250:110:14::/64"])
    ns = make_netns("b14-c")
    r = net.add("tcbc14", ns).json
    assert [ip["interface"] for ip in r["ips"]] == [2, 2]
    assert addr_of(r, 4) == "10.250.110.130/27" and addr_of(r, 6) == "fd10:250:110:14::2/64"
    assert global_addrs("-n", ns_name(ns), "addr", "show", "dev", "eth0") == {
        "10.250.110.130/27", "fd10:250:110:14::2/64"}
    assert {"10.250.110.129/27", "fd10:250:110:14::1/64"} <= global_addrs("addr", "show", "dev", net.bridge)
    defaults = {(rt["dst"], rt.get("gateway")) for fam in ("-4", "-6")
                for rt in ipj("-n", ns_name(ns), fam, "route", "show")}
    assert {("default", "10.250.110.129"), ("default", "fd10:250:110:14::1")} <= defaults
    sysctls = nsx(ns, "cat", "/proc/sys/net/ipv4/conf/eth0/arp_notify",
                  "/proc/sys/net/ipv6/conf/eth0/accept_dad").stdout.split()
    assert sysctls == ["1", "0"]

    assert ping(ns, "10.250.110.129"), "IPv4 gateway unreachable"
    assert ping(ns, "fd10:250:110:14::1", within=5), "IPv6 gateway unreachable after 5 s"


@pytest.mark.parametrize("existing", [False, True], ids=["new-bridge", "existing-bridge"])
def test_gateway_mac_is_pinned(existing: bool, make_net: Callable[..., Net], make_netns: Callable[[str], str],
                               cleanup_links: list[str]) -> None:
    """A bridge whose MAC was never set takes its lowest port's MAC: the gateway MAC would change whenever a port
    comes or goes (stale ARP in every container). The reference pins it after adding the gateway; so must we."""
    net = make_net(19, ["10.250.111.32/27"])
    if existing:
        sh("ip", "link", "add", net.bridge, "type", "bridge")  # random MAC, as an admin or another tool makes it
    ns = make_netns("b19-c")
    gw_mac = net.add("tcbc19", ns).json["interfaces"][0]["mac"]
    assert ipj("link", "show", net.bridge)[0]["address"] == gw_mac
    cleanup_links.append("tcbport19")
    sh("ip", "link", "add", "tcbport19", "address", "02:00:00:00:00:01", "type", "veth", "peer", "name", "tcbpeer19")
    sh("ip", "link", "set", "tcbport19", "master", net.bridge)
    assert ipj("link", "show", net.bridge)[0]["address"] == gw_mac, "the gateway MAC followed a new port"


BAD_SUBNET = "10.250.110.160/27"
BAD_CONFIGS = [
    pytest.param({"ipam": {"ranges": [[{"subnet": "10.250.110.160/33"}]]}}, 7, id="bad-cidr"),
    pytest.param({"ipam": {"ranges": [[{"subnet": BAD_SUBNET, "rangeStart": "10.250.111.5"}]]}}, 7,
                 id="rangeStart-outside-subnet"),
    pytest.param({"mtu": -1}, 7, id="mtu-negative"),
    pytest.param({"mtu": 67}, 7, id="mtu-67"),
    pytest.param({"mtu": 70000}, 7, id="mtu-70000"),
    pytest.param({"bridge": "tcbbr15abcdefghi"}, 7, id="bridge-name-16-chars"),
    pytest.param({"ipam": {"type": "nonexistent-ipam"}}, 7, id="unknown-ipam-type"),
    pytest.param({"macspoofchk": "yes"}, 7, id="macspoofchk-not-bool"),
]


@pytest.mark.parametrize(("change", "code"), BAD_CONFIGS)
def test_bad_config_is_refused_and_leaves_nothing(change: dict[str, Any], code: int, make_net: Callable[..., Net],
                                                  make_netns: Callable[[str], str], tmp_path: Path) -> None:
    net = make_net(15, [BAD_SUBNET])
    for key, value in change.items():
        if key == "ipam":
            net.config["ipam"] = dict(net.config["ipam"], **value)
        else:
            net.config[key] = value
    bridge = net.config["bridge"]
    ns = make_netns("b15-c")
    had_bridge = bridge in host_link_names()

    r = net.add("tcbc15", ns, ok=False)

    assert r.rc == 1, f"bad config accepted: {r}"
    err = r.json
    assert err["code"] == code, err
    assert err.get("msg"), err
    assert not had_bridge
    assert bridge not in host_link_names() and bridge[:15] not in host_link_names(), "a bridge was created"
    assert container_links(ns) == ["lo"], "something was created in the container namespace"
    assert links_into(ns) == [], "a host veth was left behind"
    assert reserved_ips(tmp_path / "cni", net.name) == {}, "an IP stays reserved"
    chain = chain_name(net.name, "tcbc15")
    assert not chain_exists(chain, 4) and not chain_exists(chain, 6), "a NAT chain was left behind"


def test_exhausted_range_fails_cleanly(make_net: Callable[..., Net], make_netns: Callable[[str], str],
                                       tmp_path: Path) -> None:
    net = make_net(16, ["10.250.110.192/30"])  # .193 is the gateway: .194 is the only free address
    ns1, ns2 = make_netns("b16-a"), make_netns("b16-b")
    assert addr_of(net.add("tcbc16a", ns1).json, 4) == "10.250.110.194/30"

    r = net.add("tcbc16b", ns2, ok=False)

    assert r.rc == 1, r
    assert r.json["code"] == 999, r.json
    assert container_links(ns2) == ["lo"]
    assert links_into(ns2) == [], "a host veth was left behind for the failed ADD"
    assert reserved_ips(tmp_path / "cni", net.name) == {"10.250.110.194": "tcbc16a\r\neth0"}
    chain = chain_name(net.name, "tcbc16b")
    assert not chain_exists(chain, 4) and not chain_exists(chain, 6)
    assert len(ipj("link", "show", "master", net.bridge)) == 1


# ---- dry-run equivalence: the printed script, run with bash, gives the state the plugin gives


SLAVE_KEYS = ("state", "hairpin", "learning", "flood", "isolated", "guard", "root_block", "fastleave",
              "proxy_arp", "mcast_flood", "bcast_flood", "neigh_suppress")
BRIDGE_KEYS = ("stp_state", "forward_delay", "ageing_time", "mcast_snooping", "vlan_filtering", "hello_time",
               "max_age", "priority", "nf_call_iptables", "nf_call_ip6tables")


def read_sysctls(netns: str | None, *keys: str) -> dict[str, str]:
    prefix = ["ip", "netns", "exec", ns_name(netns)] if netns else []
    values = sh(*prefix, "cat", *("/proc/sys/" + k.replace(".", "/") for k in keys)).split()
    return dict(zip(keys, values, strict=True))


def link_state(link: dict[str, Any]) -> dict[str, Any]:
    addrs = sorted(
        (a["family"], a["local"], a["prefixlen"], a.get("broadcast", ""), a.get("scope"),
         sorted(k for k in ("noprefixroute", "nodad", "dadfailed", "deprecated", "home") if a.get(k)))
        for a in link.get("addr_info", []) if a.get("scope") != "link")
    return {"mtu": link["mtu"], "flags": sorted(link["flags"]), "operstate": link.get("operstate"),
            "kind": (link.get("linkinfo") or {}).get("info_kind"), "promiscuity": link.get("promiscuity"),
            "master": link.get("master"), "addrs": addrs}


def kernel_state(netns: str, bridge: str) -> dict[str, Any]:
    """What an attachment looks like in the kernel, names and MACs still in (normalise() maps them)."""
    ns = ns_name(netns)
    eth0 = ipj("-n", ns, "-d", "addr", "show", "dev", "eth0")[0]
    routes = sorted(
        json.dumps({k: r.get(k) for k in ("dst", "gateway", "dev", "protocol", "scope", "metric", "prefsrc",
                                            "flags", "pref")}, sort_keys=True)
         for fam in ("-4", "-6") for r in ipj("-n", ns, fam, "route", "show", "table", "main"))
    br = ipj("-d", "addr", "show", "dev", bridge)[0]
    ports = ipj("-d", "addr", "show", "master", bridge)
    return {
        "container": {
            "eth0": link_state(eth0), "lo": sorted(ipj("-n", ns, "link", "show", "lo")[0]["flags"]),
            "routes": routes,
            "sysctl": read_sysctls(netns, "net.ipv4.conf.eth0.arp_notify", "net.ipv6.conf.eth0.accept_dad",
                                   "net.ipv6.conf.eth0.disable_ipv6"),
        },
        "bridge": {
            "link": link_state(br),
            "attrs": {k: br["linkinfo"]["info_data"].get(k) for k in BRIDGE_KEYS},
            "sysctl": read_sysctls(None, f"net.ipv6.conf.{bridge}.accept_ra"),
        },
        "ports": [{"link": link_state(p),
                   "attrs": {k: p["linkinfo"].get("info_slave_data", {}).get(k) for k in SLAVE_KEYS},
                   "sysctl": read_sysctls(None, f"net.ipv6.conf.{p['ifname']}.accept_ra"),
                   "name": p["ifname"]} for p in ports],
    }


def nat_state(chain: str) -> dict[int, list[str]]:
    return {fam: sorted(re.sub(r"\[\d+:\d+\]", "[0:0]", line) for line in nat_rules(fam) if chain in line)
            for fam in (4, 6)}


def normalise(state: Any, names: dict[str, str]) -> Any:
    text = json.dumps(state, sort_keys=True)
    for old, new in names.items():
        text = text.replace(old, new)
    return json.loads(text)


def remove_chain(chain: str) -> None:
    for tool, fam in (("iptables", 4), ("ip6tables", 6)):
        for line in nat_rules(fam):
            if line.startswith("-A POSTROUTING") and line.endswith(f"-j {chain}"):
                sh(tool, "-w", "-t", "nat", "-D", *shlex.split(line)[1:])
        subprocess.run([tool, "-w", "-t", "nat", "-F", chain], capture_output=True)
        subprocess.run([tool, "-w", "-t", "nat", "-X", chain], capture_output=True)


def test_dry_run_script_gives_the_same_state_as_the_plugin(make_net: Callable[..., Net],
                                                            make_netns: Callable[[str], str],
                                                            tmp_path: Path) -> None:
    net = make_net(17, ["10.250.110.224/27", "fd10:250:110:17::/64"], mtu=1400, hairpinMode=True)
    ns_a, ns_b = make_netns("b17-a"), make_netns("b17-b")
    chain_a, chain_b = chain_name(net.name, "tcbc17a"), chain_name(net.name, "tcbc17b")
    net.chains.append(chain_a)

    dry = net.run("ADD", "tcbc17a", ns_a, dry_run=True)
    assert dry.rc == 0, dry
    script = tmp_path / "add-a.sh"
    script.write_text(dry.stdout)
    # --dry-run changed nothing: no bridge, no veth, no reservation (the script notes the addresses instead)
    assert net.bridge not in host_link_names()
    assert container_links(ns_a) == ["lo"]
    assert reserved_ips(tmp_path / "cni", net.name) == {}
    assert re.search(r"^#.*10\.250\.110\.226/27.*fd10:250:110:17::2/64", dry.stdout, re.M), dry.stdout

    ran = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    try:
        assert ran.returncode == 0, f"the dry-run script failed: {ran.stderr}"
        state_a = kernel_state(ns_a, net.bridge)
        nat_a = nat_state(chain_a)
        veth_a = state_a["ports"][0]["name"]
        # ... and the DEL that follows: its --dry-run script, run by bash, undoes what the ADD script did
        dry_del = net.run("DEL", "tcbc17a", ns_a, dry_run=True)
        assert dry_del.rc == 0, dry_del
        ran_del = subprocess.run(["bash", "-c", dry_del.stdout], capture_output=True, text=True)
        assert ran_del.returncode == 0, ran_del.stderr
        after_del_a = (container_links(ns_a), nat_state(chain_a), veth_a in host_link_names())
    finally:  # undo the bash run by hand: it is not the plugin's, DEL must not be needed
        sh("ip", "netns", "delete", ns_name(ns_a))
        remove_chain(chain_a)
        subprocess.run(["ip", "link", "delete", net.bridge], capture_output=True)

    r = net.add("tcbc17b", ns_b).json
    assert [ip["address"] for ip in r["ips"]] == ["10.250.110.226/27", "fd10:250:110:17::2/64"]
    state_b = kernel_state(ns_b, net.bridge)
    veth_b = r["interfaces"][1]["name"]
    assert [p["name"] for p in state_b["ports"]] == [veth_b]

    assert len(state_a["ports"]) == 1
    assert normalise(state_a, {veth_a: "VETH"}) == normalise(state_b, {veth_b: "VETH"})
    assert nat_a[4] and nat_a[6], "the script installed no NAT rules"
    assert normalise(nat_a, {chain_a: "CHAIN", "tcbc17a": "CID"}) == normalise(nat_state(chain_b),
                                                                            {chain_b: "CHAIN", "tcbc17b": "CID"})
    assert (d := net.delete("tcbc17b", ns_b)).rc == 0, d
    dele = net.run("DEL", "tcbc17b", ns_b)
    assert dele.rc == 0, dele
    after_del_b = (container_links(ns_b), nat_state(chain_b), veth_b in host_link_names())
    assert after_del_a == after_del_b == (["lo"], {4: [], 6: []}, False)
