"""nftables plumbing shared by the plugins: the backend choice, read-only probes (`nft -j list ...`), and the
layouts the reference plugins use, so that a node can move between them and us.

Followed: containernetworking/plugins v1.9.1 (pkg/ip/ipmasq_nftables_linux.go, pkg/ip/ipmasq_linux.go,
pkg/utils/netfilter.go, pkg/link/spoofcheck.go); the nftables masquerade backend appeared there in 1.6.0 and
its layout has not changed since. Debian's 1.1.1 has no nftables masquerade, but it has macspoofchk (same
layout as 1.9.1: compared by running it, tests/integration/test_bridge_nft.py).

Masquerade (table `inet cni_plugins_masquerade`):

    chain postrouting { type nat hook postrouting priority srcnat;   <- created once, never removed
        ip daddr 224.0.0.0/4 return ; ip6 daddr ff00::/8 return ; goto masq_checks }
    chain masq_checks {                                               <- one rule per container address
        ip saddr 10.1.1.2 ip daddr != 10.1.1.0/24 masquerade comment "<H(net)>-<H(if:id)>, net: N, if: I, id: C" }

H(s) is the first 16 hex digits of sha512(s). DEL finds its rules by the comment's prefix `H(net)-H(if:id)`,
GC by `H(net)-`; both delete them by handle.

MAC spoof check (table `bridge nat`, from reference pkg/link/spoofcheck.go):

    chain PREROUTING { type filter hook prerouting priority -300; policy accept;
        iifname "<host veth>" jump cni-br-iface-<id> comment "macspoofchk-<id>" }
    chain cni-br-iface-<id> { jump cni-br-iface-<id>-mac comment "macspoofchk-<id>" }
    chain cni-br-iface-<id>-mac { ether saddr <container MAC> return comment ...; drop comment ... }

with <id> = "<container id>-<ifname>".

Backend choice (reference pkg/ip/ipmasq_linux.go): `ipMasqBackend` when set, else iptables unless only
nftables is available. The reference asks each tool to look at a table; we look for the executables on PATH
(as runner.which finds them): no process per ADD. A host whose iptables binary is installed but cannot work
is thus still given iptables.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cniplug import runner
from cniplug.spec import ERR_INTERNAL, ERR_INVALID_CONFIG, CNIError

MASQ_TABLE = "cni_plugins_masquerade"
MASQ_FAMILY = "inet"
MASQ_CHAIN = "masq_checks"
MASQ_POSTROUTING = "postrouting"
COMMENT_MAX = 128  # knftables.CommentLengthMax: the reference truncates longer comments

SPOOF_TABLE = "nat"
SPOOF_FAMILY = "bridge"
SPOOF_BASE = "PREROUTING"

BACKENDS = ("iptables", "nftables")


def installed(tool: str) -> bool:
    """Is `tool` an executable on the runner's PATH (runner.which)?"""
    try:
        runner.which(tool)
    except CNIError:
        return False
    return True


def masq_backend(config: dict[str, Any]) -> str:
    """config['ipMasqBackend'] -> "iptables" or "nftables".

    Absent (or null): iptables, unless iptables is not installed and nft is (reference
    SetupIPMasqForNetworks). Anything else than the two names, or not a string: CNIError 7 naming the field.
    """
    value = config.get("ipMasqBackend")
    if value is None:
        return "nftables" if not installed("iptables") and installed("nft") else "iptables"
    if not isinstance(value, str) or value not in BACKENDS:
        raise CNIError(ERR_INVALID_CONFIG, f"field 'ipMasqBackend' must be \"iptables\" or \"nftables\", got {value!r}")
    return value


def short_hash(text: str) -> str:
    """First 16 hex digits of sha512(text) (reference utils.MustFormatHashWithPrefix(16, "", text))."""
    return hashlib.sha512(text.encode()).hexdigest()[:16]


def masq_network_prefix(network: str) -> str:
    """Comment prefix of every masquerade rule of a network (GC)."""
    return short_hash(network) + "-"


def masq_instance_prefix(network: str, ifname: str, container_id: str) -> str:
    """Comment prefix of one attachment's masquerade rules (DEL)."""
    return masq_network_prefix(network) + short_hash(f"{ifname}:{container_id}")


def masq_comment(network: str, ifname: str, container_id: str) -> str:
    """The comment the reference puts on an attachment's masquerade rules, truncated to COMMENT_MAX."""
    text = (f"{masq_instance_prefix(network, ifname, container_id)}, net: {network.replace(chr(34), '')}, "
            f"if: {ifname.replace(chr(34), '')}, id: {container_id.replace(chr(34), '')}")
    return text[:COMMENT_MAX]


def nft_string(text: str) -> str:
    """A value as an nft double-quoted string (the caller's text has no `"`: names are validated)."""
    if '"' in text or "\\" in text:
        raise CNIError(ERR_INTERNAL, f"cannot quote {text!r} for nft")
    return f'"{text}"'


def table(family: str, name: str) -> list[dict[str, Any]]:
    """`nft -j list table FAMILY NAME` -> its objects ({"table": ...}, {"chain": ...}, {"rule": ...});
    [] when the table is not there or nft is not installed.

    Raises CNIError 999 (naming the command and its stderr) when nft could not look, or printed no JSON:
    "could not look" must never read as "nothing there".
    """
    if not installed("nft"):
        return []
    result = runner.execute(["nft", "-j", "list", "table", family, name])
    if result.rc != 0:
        if "No such file or directory" in result.stderr:
            return []
        raise CNIError(ERR_INTERNAL, f"cannot read state: {' '.join(result.argv)} failed",
                       f"exit {result.rc}: {result.stderr.strip()}")
    try:
        data = json.loads(result.stdout)
    except ValueError:
        raise CNIError(ERR_INTERNAL, f"cannot parse output of {' '.join(result.argv)}") from None
    return [item for item in data.get("nftables", []) if "metainfo" not in item]


def chains(objects: list[dict[str, Any]]) -> set[str]:
    """Names of the chains in a table() listing."""
    return {o["chain"]["name"] for o in objects if "chain" in o}


def rules(objects: list[dict[str, Any]], chain: str) -> list[dict[str, Any]]:
    """The rules of one chain in a table() listing (each with "handle", "comment", "expr")."""
    return [o["rule"] for o in objects if "rule" in o and o["rule"].get("chain") == chain]


# ---- masquerade -------------------------------------------------------------------------------------------


def masq_plan(network: str, ifname: str, container_id: str, addresses: list[str]) -> dict[str, Any]:
    """ADD: the masquerade steps for these container addresses (CIDRs such as "10.1.1.2/24").

    Returns {"table": create the table?, "chain": create masq_checks?, "postrouting": create postrouting and
    its three rules?, "rules": [(family word "ip"/"ip6", address, network CIDR)], "comment": nft string}.
    Probes the table once (read-only). Unlike the reference, a second ADD of the same attachment does not
    replace its earlier rules (it adds its own; DEL removes all of them by the comment prefix), and an
    existing postrouting chain is left as it is (the reference flushes and refills it with the same rules).
    """
    import ipaddress

    objects = table(MASQ_FAMILY, MASQ_TABLE)
    have = chains(objects)
    out = []
    for cidr in addresses:
        iface = ipaddress.ip_interface(cidr)
        out.append(("ip" if iface.version == 4 else "ip6", str(iface.ip), str(iface.network)))
    return {"family": MASQ_FAMILY, "name": MASQ_TABLE, "chain_name": MASQ_CHAIN,
            "table": not objects, "chain": MASQ_CHAIN not in have, "postrouting": MASQ_POSTROUTING not in have,
            "rules": out, "comment": nft_string(masq_comment(network, ifname, container_id))}


def masq_teardown(network: str, ifname: str, container_id: str) -> list[int]:
    """DEL: handles of this attachment's masquerade rules (found by comment prefix, whatever its addresses)."""
    prefix = masq_instance_prefix(network, ifname, container_id)
    return [r["handle"] for r in rules(table(MASQ_FAMILY, MASQ_TABLE), MASQ_CHAIN)
            if str(r.get("comment", "")).startswith(prefix)]


def masq_stale(network: str, valid: set[tuple[str, str]]) -> list[int]:
    """GC: handles of this network's masquerade rules whose (container id, ifname) is not in `valid`
    (reference gcIPMasqNFTables: the full comment of each valid attachment is kept)."""
    keep = {masq_comment(network, ifname, cid) for cid, ifname in valid}
    prefix = masq_network_prefix(network)
    return [r["handle"] for r in rules(table(MASQ_FAMILY, MASQ_TABLE), MASQ_CHAIN)
            if str(r.get("comment", "")).startswith(prefix) and r.get("comment") not in keep]


def masq_present(network: str, ifname: str, container_id: str, addresses: list[str]) -> list[str]:
    """CHECK: the addresses among `addresses` (CIDRs) with no masquerade rule of this attachment."""
    import ipaddress

    comment = masq_comment(network, ifname, container_id)
    found = set()
    for r in rules(table(MASQ_FAMILY, MASQ_TABLE), MASQ_CHAIN):
        if r.get("comment") != comment:
            continue
        for e in r.get("expr", []):
            m = e.get("match", {})
            if m.get("op") == "==" and (m.get("left", {}).get("payload") or {}).get("field") == "saddr":
                found.add(str(m.get("right")))
    return [a for a in addresses if str(ipaddress.ip_interface(a).ip) not in found]


# ---- MAC spoof check --------------------------------------------------------------------------------------


def spoof_id(container_id: str, ifname: str) -> str:
    """The reference's uniqueID: "<container id>-<ifname>"."""
    return f"{container_id}-{ifname}"


def spoof_plan(container_id: str, ifname: str, host_veth: str, mac: str) -> dict[str, Any]:
    """ADD: {"table": create `bridge nat`?, "base": create its PREROUTING chain?, "iface"/"mac_chain": the two
    chain names, "comment", "host": nft strings, "addr": the container MAC}. `nft add chain` of a chain that
    exists (a repeated ADD) keeps it, and its rules are added again."""
    ref = spoof_id(container_id, ifname)
    iface = "cni-br-iface-" + ref
    objects = table(SPOOF_FAMILY, SPOOF_TABLE)
    have = chains(objects)
    return {"table": not objects, "base": SPOOF_BASE not in have, "iface": iface, "mac_chain": iface + "-mac",
            "comment": nft_string("macspoofchk-" + ref), "host": nft_string(host_veth), "host_name": host_veth,
            "addr": mac}


def spoof_teardown(container_id: str, ifname: str) -> dict[str, Any]:
    """DEL: {"jumps": handles of the PREROUTING rules with our comment, "chains": our chains that exist}."""
    ref = spoof_id(container_id, ifname)
    iface = "cni-br-iface-" + ref
    objects = table(SPOOF_FAMILY, SPOOF_TABLE)
    have = chains(objects)
    return {"jumps": [r["handle"] for r in rules(objects, SPOOF_BASE) if r.get("comment") == "macspoofchk-" + ref],
            "chains": [c for c in (iface, iface + "-mac") if c in have]}
