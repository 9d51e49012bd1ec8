"""Issue #13 items 2-3: nftables masquerade (ipMasqBackend, and its automatic choice when iptables is not
installed), macspoofchk, portIsolation, vlanTrunk, vlan with isGateway, disableContainerInterface, in real
namespaces, against the reference bridge 1.1.1 where it has the key.

Every plugin runs inside a private "host" namespace (the nftables tables it makes are that namespace's own),
so nothing here touches the machine's ruleset. Names: `tnf-` namespaces, `tnfbr*` bridges; addresses
10.236.0.0/16, fd36::/16 subnets.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PluginRun
from tcr_netstate import (
    IP,
    in_host,
    plugin_env,
    remove_lock_files,
    remove_nft_lock,
    reservations,
    run_in_host,
    setup_host,
    snapshot,
)

from cniplug import nft
from cniplug.cli import plugin_argv

pytestmark = pytest.mark.root

REFERENCE = "/usr/lib/cni/bridge"
OUTSIDE = "10.236.200.2"  # the "internet": a namespace that knows no route to any container subnet


@pytest.fixture
def ns(make_netns: Callable[..., str]) -> Callable[[str], str]:
    def make(tag: str) -> str:
        return make_netns(tag, prefix="tnf-")
    return make


@pytest.fixture
def bridges() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    remove_lock_files(names)


@pytest.fixture(autouse=True)
def nft_lock_file() -> Iterator[None]:
    """The plugins' /run/cniplug/nft.lock: removed afterwards, unless a plugin holds it."""
    yield
    remove_nft_lock()


def host(ns: Callable[[str], str], tag: str, outside: bool = False) -> str:
    """A fresh host namespace; with `outside`, a second namespace at OUTSIDE behind the host's tnfup0."""
    name = Path(ns(tag)).name
    setup_host(name)
    if outside:
        out = Path(ns(tag + "o")).name
        in_host(name, "ip", "link", "add", "tnfup0", "type", "veth", "peer", "name", "eth0", "netns", out)
        in_host(name, "ip", "addr", "add", "10.236.200.1/24", "dev", "tnfup0")
        in_host(name, "ip", "link", "set", "tnfup0", "up")
        for argv in (["addr", "add", f"{OUTSIDE}/24", "dev", "eth0"], ["link", "set", "eth0", "up"],
                     ["link", "set", "lo", "up"]):
            subprocess.run(["ip", "-n", out, *argv], check=True)
    return name


def ping(netns: str, addr: str, count: int = 1) -> bool:
    return subprocess.run(["ip", "netns", "exec", Path(netns).name, "ping", "-c", str(count), "-W", "1", addr],
                          capture_output=True).returncode == 0


def ok(run: PluginRun) -> dict[str, Any]:
    assert run.rc == 0, run.stdout + run.stderr
    return run.json if run.stdout.strip() else {}


def ruleset(h: str, family: str, table: str) -> str:
    return subprocess.run([IP, "netns", "exec", h, "nft", "list", "table", family, table],
                          capture_output=True, text=True).stdout


def ptp_conf(subnet: str, backend: str | None = "nftables", masq: bool = True, name: str = "tnfnet") -> dict[str, Any]:
    conf: dict[str, Any] = {"cniVersion": "1.1.0", "name": name, "type": "cniplug-ptp", "ipMasq": masq,
                            "ipam": {"type": "cniplug-host-local", "subnet": subnet, "dataDir": "",
                                     "routes": [{"dst": "0.0.0.0/0"}]}}
    if backend:
        conf["ipMasqBackend"] = backend
    return conf


def bridge_conf(bridge: str, subnet: str | None, tmp: Path, **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {"cniVersion": "1.1.0", "name": "tnfnet" + bridge[-1], "type": "cniplug-bridge",
                            "bridge": bridge, **extra}
    if subnet:
        conf["ipam"] = {"type": "cniplug-host-local", "subnet": subnet, "dataDir": str(tmp / "ipam"),
                        "routes": [{"dst": "0.0.0.0/0"}]}
    return conf


# ---------------------------------------------------------------------------------------------- nft masquerade


def test_ptp_nftables_masquerade_reaches_outside_and_del_removes_it(ns: Callable[[str], str], tmp_path: Path) -> None:
    h = host(ns, "h1", outside=True)
    c1, c2 = ns("c1a"), ns("c1b")
    conf = ptp_conf("10.236.1.0/24")
    conf["ipam"]["dataDir"] = str(tmp_path / "ipam")
    ok(run_in_host(h, "cniplug-ptp", "ADD", conf, c1, "tnfc1"))
    plain = json.loads(json.dumps(conf))
    plain["ipMasq"] = False
    ok(run_in_host(h, "cniplug-ptp", "ADD", plain, c2, "tnfc2"))
    # Only the masqueraded container gets answers: OUTSIDE has no route back to 10.236.1.0/24.
    assert ping(c1, OUTSIDE, 2), ruleset(h, "inet", nft.MASQ_TABLE)
    assert not ping(c2, OUTSIDE), "reached OUTSIDE without NAT: the test cannot tell NAT from routing"
    text = ruleset(h, "inet", nft.MASQ_TABLE)
    comment = nft.masq_comment("tnfnet", "eth0", "tnfc1")
    assert f'ip saddr 10.236.1.2 ip daddr != 10.236.1.0/24 masquerade comment "{comment}"' in text, text
    assert "type nat hook postrouting priority srcnat" in text and "goto masq_checks" in text
    assert "CNI-" not in in_host(h, "iptables-save", "-t", "nat"), "iptables used with ipMasqBackend nftables"
    # CHECK sees the rule; DEL removes it (and only it); DEL again is fine.
    prev = ok(run_in_host(h, "cniplug-ptp", "ADD", conf, ns("c1c"), "tnfc3"))
    assert ruleset(h, "inet", nft.MASQ_TABLE).count("masquerade comment") == 2
    check = dict(conf, prevResult=prev)
    ok(run_in_host(h, "cniplug-ptp", "CHECK", check, prev["interfaces"][1]["sandbox"], "tnfc3"))
    for _ in range(2):
        ok(run_in_host(h, "cniplug-ptp", "DEL", conf, c1, "tnfc1"))
    text = ruleset(h, "inet", nft.MASQ_TABLE)
    assert comment not in text and text.count("masquerade comment") == 1, text
    assert not ping(c1, OUTSIDE)
    ok(run_in_host(h, "cniplug-ptp", "DEL", conf, prev["interfaces"][1]["sandbox"], "tnfc3"))
    bad = run_in_host(h, "cniplug-ptp", "CHECK", check, prev["interfaces"][1]["sandbox"], "tnfc3")
    assert bad.rc == 1


def hidden_iptables_argv(h: str, plugin: str) -> list[str]:
    """Run the plugin in host namespace `h` inside a private mount namespace where every iptables binary is
    /dev/null (not executable): as on a host without iptables."""
    targets = sorted({str(Path(p).resolve()) for p in ("/usr/sbin/iptables", "/usr/sbin/ip6tables",
                                                       "/usr/sbin/iptables-restore", "/usr/sbin/ip6tables-restore")
                      if Path(p).exists()})
    mounts = "; ".join(f"mount --bind /dev/null {t}" for t in targets)
    return ["unshare", "-m", "--propagation", "private", "bash", "-c",
            f'set -e; {mounts}; exec "$@"', "tnf", IP, "netns", "exec", h, *plugin_argv(plugin)]


def run_hidden(h: str, plugin: str, command: str, conf: dict[str, Any], netns: str, cid: str) -> PluginRun:
    proc = subprocess.run(hidden_iptables_argv(h, plugin), input=json.dumps(conf).encode(),
                          env=plugin_env(command, netns, cid), capture_output=True, timeout=60)
    return PluginRun(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def test_nftables_chosen_when_iptables_is_not_installed(ns: Callable[[str], str], tmp_path: Path,
                                                        bridges: list[str]) -> None:
    h = host(ns, "h2", outside=True)
    c = ns("c2a")
    bridges.append("tnfbr2")
    conf = bridge_conf("tnfbr2", "10.236.2.0/24", tmp_path, isGateway=True, ipMasq=True)  # no ipMasqBackend
    # The hiding works: in there iptables cannot run, and the dry run shows nft, not iptables.
    probe = subprocess.run(hidden_iptables_argv(h, "cniplug-bridge")[:-len(plugin_argv("cniplug-bridge"))]
                           + ["iptables", "-S"], capture_output=True)
    assert probe.returncode != 0
    dry = subprocess.run(hidden_iptables_argv(h, "cniplug-bridge") + ["--dry-run"], input=json.dumps(conf),
                         env=plugin_env("ADD", c, "tnfc1"), capture_output=True, text=True)
    assert "nft --echo --handle add rule inet cni_plugins_masquerade" in dry.stdout and "iptables" not in \
        "\n".join(line for line in dry.stdout.splitlines() if not line.startswith("#")), dry.stdout + dry.stderr
    ok(run_hidden(h, "cniplug-bridge", "ADD", conf, c, "tnfc1"))
    assert ping(c, OUTSIDE, 2)
    assert nft.masq_comment("tnfnet2", "eth0", "tnfc1") in ruleset(h, "inet", nft.MASQ_TABLE)
    # STATUS asks for nft, not iptables; DEL (iptables still hidden) finds the nft rule.
    ok(run_hidden(h, "cniplug-bridge", "STATUS", conf, "", ""))
    ok(run_hidden(h, "cniplug-bridge", "DEL", conf, c, "tnfc1"))
    assert "masquerade comment" not in ruleset(h, "inet", nft.MASQ_TABLE)
    # With iptables visible the same config picks iptables, as the reference does.
    ok(run_in_host(h, "cniplug-bridge", "ADD", conf, c, "tnfc2"))
    assert "CNI-" in in_host(h, "iptables-save", "-t", "nat")
    ok(run_in_host(h, "cniplug-bridge", "DEL", conf, c, "tnfc2"))


def test_gc_removes_stale_rules_of_both_backends(ns: Callable[[str], str], tmp_path: Path) -> None:
    h = host(ns, "h3")
    conf = ptp_conf("10.236.3.0/24")
    conf["ipam"]["dataDir"] = str(tmp_path / "ipam")
    ipt = dict(conf, ipMasqBackend="iptables")
    ok(run_in_host(h, "cniplug-ptp", "ADD", conf, ns("c3a"), "tnfkeep"))
    ok(run_in_host(h, "cniplug-ptp", "ADD", conf, ns("c3b"), "tnfgone"))
    ok(run_in_host(h, "cniplug-ptp", "ADD", ipt, ns("c3c"), "tnfgone4"))
    gc = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "tnfkeep", "ifname": "eth0"}]})
    gc["cniVersion"] = "1.1.0"
    ok(run_in_host(h, "cniplug-ptp", "GC", gc, "", ""))
    text = ruleset(h, "inet", nft.MASQ_TABLE)
    assert nft.masq_comment("tnfnet", "eth0", "tnfkeep") in text
    assert "tnfgone" not in text, text
    assert "CNI-" not in in_host(h, "iptables-save", "-t", "nat")


# ---------------------------------------------------------------------------------------------- macspoofchk


def normalise_spoof(text: str, veth: str, mac: str, cid: str) -> str:
    return text.replace(veth, "VETH").replace(mac, "MAC").replace(cid, "CID")


def chains_of(text: str, drop: str = "") -> dict[str, list[str]]:
    """`nft list table` text -> {chain: its lines}, without the chains and rules that mention `drop` (the
    listing order of chains is their creation order, which is not part of the layout)."""
    out: dict[str, list[str]] = {}
    for m in re.finditer(r"chain (\S+) \{\n(.*?)\n\t\}", text, re.S):
        if drop and drop in m.group(1):
            continue
        out[m.group(1)] = [line.strip() for line in m.group(2).splitlines()
                           if line.strip() and not (drop and drop in line)]
    assert out, text
    return out


def container_mac(netns: str) -> str:
    out = subprocess.run(["ip", "-n", Path(netns).name, "-j", "link", "show", "eth0"], capture_output=True,
                         text=True, check=True).stdout
    return str(json.loads(out)[0]["address"])


def test_macspoofchk_drops_a_spoofed_mac_like_the_reference(ns: Callable[[str], str], tmp_path: Path,
                                                            bridges: list[str]) -> None:
    h = host(ns, "h4")
    c1, c2 = ns("c4a"), ns("c4b")
    bridges.append("tnfbr4")
    conf = bridge_conf("tnfbr4", "10.236.4.0/24", tmp_path, isGateway=True, macspoofchk=True)
    r1 = ok(run_in_host(h, "cniplug-bridge", "ADD", conf, c1, "tnfs1"))
    ok(run_in_host(h, "cniplug-bridge", "ADD", conf, c2, "tnfs2"))
    assert ping(c1, "10.236.4.3", 2)
    subprocess.run(["ip", "-n", Path(c1).name, "link", "set", "eth0", "address", "02:36:36:36:36:36"], check=True)
    subprocess.run(["ip", "-n", Path(c1).name, "neigh", "flush", "all"], check=True)
    assert not ping(c1, "10.236.4.3", 2), "a frame with a spoofed source MAC went through"
    assert not ping(c1, "10.236.4.1"), "the gateway answered a spoofed MAC"
    subprocess.run(["ip", "-n", Path(c1).name, "link", "set", "eth0", "address", r1["interfaces"][2]["mac"]],
                   check=True)
    assert ping(c1, "10.236.4.3", 2)
    ours = normalise_spoof(ruleset(h, "bridge", "nat"), r1["interfaces"][1]["name"], r1["interfaces"][2]["mac"],
                           "tnfs1")
    # The reference (Debian 1.1.1 has macspoofchk) in its own host namespace: the same table, chains and rules.
    hr = host(ns, "h4r")
    cr = ns("c4r")
    ref_conf = dict(conf, type="bridge", cniVersion="1.0.0", ipam={"type": "host-local", "subnet": "10.236.5.0/24",
                                               "dataDir": str(tmp_path / "ref-ipam")})
    proc = subprocess.run([IP, "netns", "exec", hr, REFERENCE], input=json.dumps(ref_conf).encode(),
                          env=plugin_env("ADD", cr, "tnfs1"), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rr = json.loads(proc.stdout)
    ref = normalise_spoof(ruleset(hr, "bridge", "nat"), rr["interfaces"][1]["name"], rr["interfaces"][2]["mac"],
                          "tnfs1")
    assert chains_of(ours, drop="tnfs2") == chains_of(ref), f"ours:\n{ours}\nreference:\n{ref}"
    # DEL removes this port's chains and jump, not the other's; again is fine.
    for _ in range(2):
        ok(run_in_host(h, "cniplug-bridge", "DEL", conf, c1, "tnfs1"))
    left = ruleset(h, "bridge", "nat")
    assert "tnfs1" not in left and "cni-br-iface-tnfs2-eth0" in left, left
    # Same names, so each suite's DEL removes what the other made: ours on the reference's ...
    ours_on_ref = dict(ref_conf, type="cniplug-bridge", ipam=dict(ref_conf["ipam"], type="cniplug-host-local"))
    ok(run_in_host(hr, "cniplug-bridge", "DEL", ours_on_ref, cr, "tnfs1"))
    assert "macspoofchk" not in ruleset(hr, "bridge", "nat") and "cni-br-iface" not in ruleset(hr, "bridge", "nat")
    # ... and the reference's on ours.
    ref_on_ours = dict(conf, type="bridge", cniVersion="1.0.0", ipam=dict(conf["ipam"], type="host-local"))
    proc = subprocess.run([IP, "netns", "exec", h, REFERENCE], input=json.dumps(ref_on_ours).encode(),
                          env=plugin_env("DEL", c2, "tnfs2"), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cni-br-iface" not in ruleset(h, "bridge", "nat")


# ---------------------------------------------------------------------------------------------- port isolation


def bridge_link(h: str, dev: str) -> dict[str, Any]:
    return dict(json.loads(in_host(h, "bridge", "-d", "-j", "link", "show", "dev", dev))[0])


def test_isolated_ports_cannot_reach_each_other(ns: Callable[[str], str], tmp_path: Path,
                                                 bridges: list[str]) -> None:
    h = host(ns, "h6")
    bridges.append("tnfbr6")
    iso = bridge_conf("tnfbr6", "10.236.6.0/24", tmp_path, portIsolation=True)
    plain = bridge_conf("tnfbr6", "10.236.6.0/24", tmp_path)
    a, b, c = ns("c6a"), ns("c6b"), ns("c6c")
    ra = ok(run_in_host(h, "cniplug-bridge", "ADD", iso, a, "tnfi1"))
    ok(run_in_host(h, "cniplug-bridge", "ADD", iso, b, "tnfi2"))
    rc = ok(run_in_host(h, "cniplug-bridge", "ADD", plain, c, "tnfi3"))
    assert bridge_link(h, ra["interfaces"][1]["name"])["isolated"] is True
    assert bridge_link(h, rc["interfaces"][1]["name"])["isolated"] is False
    assert ping(a, "10.236.6.4") and ping(b, "10.236.6.4"), "an isolated port must reach a non-isolated one"
    assert not ping(a, "10.236.6.3", 2), "two isolated ports reached each other"
    for cid, netns in (("tnfi1", a), ("tnfi2", b), ("tnfi3", c)):
        ok(run_in_host(h, "cniplug-bridge", "DEL", plain, netns, cid))


# ---------------------------------------------------------------------------------------------- VLANs


def port_vlans(h: str, dev: str) -> list[tuple[int, tuple[str, ...]]]:
    data = json.loads(in_host(h, "bridge", "-j", "vlan", "show", "dev", dev))
    out = []
    for entry in data:
        for v in entry.get("vlans", []):
            for vid in range(v["vlan"], v.get("vlanEnd", v["vlan"]) + 1):
                out.append((vid, tuple(sorted(v.get("flags", [])))))
    return out


def vlan_filtering_supported(h: str) -> bool:
    """Can this kernel filter VLANs on a bridge (CONFIG_BRIDGE_VLAN_FILTERING)? The 6.18 Firecracker kernel of
    the machines this was written on cannot: `ip link add ... type bridge vlan_filtering 1` says "Operation not
    supported", for the reference plugin too."""
    made = subprocess.run([IP, "netns", "exec", h, "ip", "link", "add", "tnfvlprobe", "type", "bridge",
                           "vlan_filtering", "1"], capture_output=True)
    subprocess.run([IP, "netns", "exec", h, "ip", "link", "delete", "tnfvlprobe"], capture_output=True)
    return made.returncode == 0


def assert_refused_cleanly(h: str, run: PluginRun, before: dict[str, Any]) -> None:
    """Without VLAN filtering in the kernel: a CNI error naming the failed step, the host as it was."""
    err = json.loads(run.stdout)
    assert run.rc == 1 and err["code"] == 999 and "vlan_filtering 1" in err["msg"], run.stdout
    assert "Operation not supported" in err["details"]
    assert snapshot(h, []) == before


def test_vlan_trunk_puts_the_vlans_on_the_port(ns: Callable[[str], str], tmp_path: Path,
                                               bridges: list[str]) -> None:
    h = host(ns, "h7")
    bridges += ["tnfbr7", "tnfbr8"]
    trunk = [{"id": 5}, {"minID": 10, "maxID": 12}, {"id": 11}]
    if not vlan_filtering_supported(h):
        before = snapshot(h, [])
        c = ns("c7a")
        for extra in ({"vlanTrunk": trunk}, {"vlan": 7, "vlanTrunk": trunk}):
            assert_refused_cleanly(h, run_in_host(h, "cniplug-bridge", "ADD", bridge_conf("tnfbr7", None, tmp_path,
                                                                                          **extra), c, "tnft1"), before)
        return
    r = ok(run_in_host(h, "cniplug-bridge", "ADD", bridge_conf("tnfbr7", None, tmp_path, vlanTrunk=trunk),
                       ns("c7a"), "tnft1"))
    assert port_vlans(h, r["interfaces"][1]["name"]) == [
        (1, ("PVID", "Egress Untagged")), (5, ()), (10, ()), (11, ()), (12, ())]
    link = json.loads(in_host(h, "ip", "-d", "-j", "link", "show", "tnfbr7"))[0]
    assert link["linkinfo"]["info_data"]["vlan_filtering"] == 1
    r = ok(run_in_host(h, "cniplug-bridge", "ADD", bridge_conf("tnfbr8", None, tmp_path, vlan=7, vlanTrunk=trunk),
                       ns("c7b"), "tnft2"))
    assert port_vlans(h, r["interfaces"][1]["name"]) == [
        (5, ()), (7, ("PVID", "Egress Untagged")), (10, ()), (11, ()), (12, ())]


def gateway_state(h: str, bridge: str, gw: str) -> dict[str, Any]:
    links = {link["ifname"]: link for link in json.loads(in_host(h, "ip", "-d", "-j", "addr", "show"))}
    g = links[gw]
    port = next(name for name, link in links.items() if link.get("ifindex") == g.get("link_index"))
    return {"bridge_addrs": [a["local"] for a in links[bridge].get("addr_info", []) if a["family"] == "inet"],
            "gw_kind": g["linkinfo"]["info_kind"], "gw_up": "UP" in g["flags"],
            "gw_addrs": [f"{a['local']}/{a['prefixlen']}" for a in g.get("addr_info", []) if a["family"] == "inet"],
            "port_master": links[port].get("master"), "port_vlans": port_vlans(h, port),
            "vlan_filtering": links[bridge]["linkinfo"]["info_data"]["vlan_filtering"]}


def test_vlan_with_gateway_like_the_reference(ns: Callable[[str], str], tmp_path: Path, bridges: list[str]) -> None:
    h, hr = host(ns, "h9"), host(ns, "h9r")
    bridges.append("tnfbr9")
    conf = bridge_conf("tnfbr9", "10.236.9.0/24", tmp_path, vlan=7, isGateway=True)
    c1, c2 = ns("c9a"), ns("c9b")
    if not vlan_filtering_supported(h):
        before = snapshot(h, [])
        run = run_in_host(h, "cniplug-bridge", "ADD", conf, c1, "tnfv1")
        assert_refused_cleanly(h, run, before)
        assert not reservations(tmp_path / "ipam"), "the failed ADD kept its address"
        ref_conf = dict(conf, type="bridge", cniVersion="1.0.0", ipam={"type": "host-local", "subnet": "10.236.9.0/24",
                                                                       "dataDir": str(tmp_path / "ref-ipam")})
        proc = subprocess.run([IP, "netns", "exec", hr, REFERENCE], input=json.dumps(ref_conf).encode(),
                              env=plugin_env("ADD", ns("c9r"), "tnfv1"), capture_output=True, timeout=60)
        assert proc.returncode == 1 and b"not supported" in proc.stdout, proc.stdout  # the reference cannot either
        return
    r = ok(run_in_host(h, "cniplug-bridge", "ADD", conf, c1, "tnfv1"))
    ok(run_in_host(h, "cniplug-bridge", "ADD", conf, c2, "tnfv2"))
    assert r["interfaces"][-1]["name"] == "tnfbr9.7"
    assert ping(c1, "10.236.9.1", 2) and ping(c2, "10.236.9.1") and ping(c1, "10.236.9.3")
    ours = gateway_state(h, "tnfbr9", "tnfbr9.7")
    ref_conf = dict(conf, type="bridge", cniVersion="1.0.0", ipam={"type": "host-local", "subnet": "10.236.9.0/24",
                                               "dataDir": str(tmp_path / "ref-ipam")})
    cr = ns("c9r")
    proc = subprocess.run([IP, "netns", "exec", hr, REFERENCE], input=json.dumps(ref_conf).encode(),
                          env=plugin_env("ADD", cr, "tnfv1"), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["interfaces"][-1]["name"] == "tnfbr9.7"
    assert ours == gateway_state(hr, "tnfbr9", "tnfbr9.7")
    assert ours["gw_addrs"] == ["10.236.9.1/24"] and ours["bridge_addrs"] == []
    # DEL keeps the VLAN gateway (shared by the VLAN's containers), as the reference does.
    ok(run_in_host(h, "cniplug-bridge", "DEL", conf, c1, "tnfv1"))
    assert ping(c2, "10.236.9.1")


# ------------------------------------------------------------------------------ disableContainerInterface


def test_disable_container_interface_leaves_it_down(ns: Callable[[str], str], tmp_path: Path,
                                                    bridges: list[str]) -> None:
    h = host(ns, "h10")
    bridges.append("tnfbrd")
    c = ns("c10a")
    r = ok(run_in_host(h, "cniplug-bridge", "ADD", bridge_conf("tnfbrd", None, tmp_path,
                                                               disableContainerInterface=True), c, "tnfd1"))
    link = json.loads(subprocess.run(["ip", "-n", Path(c).name, "-j", "addr", "show", "eth0"], capture_output=True,
                                     text=True, check=True).stdout)[0]
    assert "UP" not in link["flags"] and not [a for a in link.get("addr_info", []) if a["scope"] != "link"]
    assert "ips" not in r or not r["ips"]
    hostlink = json.loads(in_host(h, "ip", "-j", "link", "show", r["interfaces"][1]["name"]))[0]
    assert "UP" in hostlink["flags"] and hostlink["master"] == "tnfbrd"
    with_ipam = bridge_conf("tnfbrd", "10.236.10.0/24", tmp_path, disableContainerInterface=True)
    bad = run_in_host(h, "cniplug-bridge", "ADD", with_ipam, ns("c10b"), "tnfd2")
    assert bad.rc == 1 and json.loads(bad.stdout)["code"] == 7



# ---------------------------------------------------------------------------------------------- concurrency


def test_parallel_first_adds_make_the_tables_once(ns: Callable[[str], str], tmp_path: Path) -> None:
    """Eight ptp ADDs at once on a host without the masquerade table: one of them creates it (holding the nft
    lock exclusively), the others add their rules to it; postrouting gets its three rules once, not per ADD."""
    from concurrent.futures import ThreadPoolExecutor

    h = host(ns, "h11")
    conf = ptp_conf("10.236.11.0/24")
    conf["ipam"]["dataDir"] = str(tmp_path / "ipam")
    containers = [ns(f"c11{i}") for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        runs = list(pool.map(lambda i: run_in_host(h, "cniplug-ptp", "ADD", conf, containers[i], f"tnfp{i}"),
                             range(8)))
    for run in runs:
        ok(run)
    text = ruleset(h, "inet", nft.MASQ_TABLE)
    postrouting = chains_of(text)["postrouting"]
    assert postrouting == ["type nat hook postrouting priority srcnat; policy accept;",
                           "ip daddr 224.0.0.0/4 return", "ip6 daddr ff00::/8 return", "goto masq_checks"], text
    assert text.count("masquerade comment") == 8
