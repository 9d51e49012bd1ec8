"""cniplug-ptp: a routed veth pair per container; the host is the router (tutorial examples 1 and 3).

Config keys follow the reference ptp plugin (cni-notes 3.2): ipMasq, ipMasqBackend (reference 1.6.0+:
"iptables" | "nftables", see cniplug/nft.py), mtu, ipam (required), dns.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from cniplug import facts, ipam, nft, skel
from cniplug.plugins import common
from cniplug.skel import Request
from cniplug.spec import ERR_INTERNAL, ERR_INVALID_CONFIG, CNIError


def parse_config(req: Request) -> tuple[bool, int]:
    """-> (ipMasq, mtu). CNIError 7 for a missing ipam, a bad ipMasq, ipMasqBackend or mtu."""
    nft.masq_backend(req.config)  # validated also when ipMasq is off
    if not ipam.ipam_type(req):
        raise CNIError(ERR_INVALID_CONFIG, "field 'ipam' is required for ptp",
                       'e.g. {"type": "cniplug-host-local", ...}')
    return common.get_bool(req.config, "ipMasq"), common.get_mtu(req.config)


def gateway_for(ip: dict[str, Any]) -> str:
    iface = ipaddress.ip_interface(ip["address"])
    gw = ip.get("gateway") or common.first_other_host(ip["address"]) or str(iface.ip)
    if gw == str(iface.ip):
        raise CNIError(ERR_INVALID_CONFIG, f"ptp needs a gateway other than the container address {ip['address']}")
    return str(gw)


def plan_add(req: Request, ip_masq: bool, mtu: int, ipam_result: dict[str, Any], host_veth: str,
             mac: str) -> tuple[dict[str, Any], dict[str, Any]]:
    ips = [dict(ip) for ip in ipam_result.get("ips", [])]
    if not ips:
        raise CNIError(ERR_INTERNAL, "IPAM returned no IP addresses")
    for ip in ips:
        ip["gateway"] = gateway_for(ip)
        ip["interface"] = 1
    result: dict[str, Any] = {"cniVersion": "1.1.0", "ips": ips, "routes": list(ipam_result.get("routes", []))}
    dns = req.config.get("dns")
    if isinstance(dns, dict) and any(dns.values()):
        result["dns"] = dns
    elif ipam_result.get("dns"):
        result["dns"] = ipam_result["dns"]
    forwarding = common.forwarding_plan({ipaddress.ip_interface(ip["address"]).version for ip in ips})
    addrs: list[dict[str, Any]] = []
    p2p: list[dict[str, str]] = []
    host: list[dict[str, Any]] = []
    for ip in ips:
        iface = ipaddress.ip_interface(ip["address"])
        full = iface.max_prefixlen
        # IPv6 DAD is pointless on a two-ended link and would delay the routes that use these addresses.
        extra = ["nodad"] if iface.version == 6 else []
        addrs.append({"cidr": ip["address"], "extra": extra if iface.version == 6 else ["broadcast", "+"]})
        p2p.append({"network": str(iface.network), "ip": str(iface.ip), "gw": ip["gateway"],
                    "gw_host": f"{ip['gateway']}/{full}"})
        host.append({"gw_cidr": f"{ip['gateway']}/{full}", "extra": extra, "route": f"{iface.ip}/{full}"})
    # The same gateway address may serve several container addresses: put it on the veth once.
    seen: set[str] = set()
    for h in host:
        if h["gw_cidr"] in seen:
            h["gw_cidr"] = ""
        seen.add(h["gw_cidr"])
    context = {
        "forwarding": forwarding,
        "veth": {"host": host_veth, "peer": req.ifname, "netns": req.netns, "mtu": mtu, "mac": mac,
                 "accept_ra": facts.has_ipv6() and not 0 < mtu < common.IPV6_MIN_MTU},
        "container": {"ip": facts.ns_ip(req.netns), "addrs": addrs, "routes": common.routes_with_gateways(result),
                      "p2p": p2p},
        "host": host,
        "masq": common.masq_plan(req, ips) if ip_masq and nft.masq_backend(req.config) == "iptables" else None,
        "nft_masq": common.nft_masq_plan(req, ips) if ip_masq and nft.masq_backend(req.config) == "nftables" else None,
        "ipam_note": {"type": ipam.ipam_type(req), "addrs": ", ".join(ip["address"] for ip in ips)},
    }
    return context, result


def add(req: Request) -> dict[str, Any] | str | None:
    ip_masq, mtu = parse_config(req)
    mac = common.mac_from_request(req)
    if not req.dry_run:
        facts.check_netns(req.netns)
    with common.ipam_transaction(req) as ipam_result:
        host_veth = common.host_veth_name()
        mac = mac or common.random_mac()
        text, context, result = common.perform_with_nft(
            req, "ptp/add.sh.j2", lambda: plan_add(req, ip_masq, mtu, ipam_result or {}, host_veth, mac))
        if text is not None:
            # The result as far as it is known unprinted: the host veth's MAC is the kernel's choice.
            req.dry_result = {**result, "interfaces": [{"name": host_veth},
                                                       {"name": req.ifname, "mac": mac, "sandbox": req.netns}]}
            if mtu:
                req.dry_result["interfaces"][1]["mtu"] = mtu
            return text
    result["interfaces"] = [
        {"name": host_veth, "mac": facts.mac_of(host_veth)},
        {"name": req.ifname, "mac": mac, "sandbox": req.netns},
    ]
    if mtu:
        result["interfaces"][1]["mtu"] = mtu
    return result


def delete(req: Request) -> str | None:
    ip_masq, _ = parse_config(req)
    if not req.dry_run:
        ipam.run(req, "DEL")  # like the reference ptp: release the address first
    alive = facts.netns_alive(req.netns)
    return common.perform(
        req, "ptp/del.sh.j2", best_effort=True, alive=alive, ifname=req.ifname,
        container_ip=facts.ns_ip(req.netns) if alive else [],
        masq=common.masq_teardown(req) if ip_masq else [],
        nft_masq=common.nft_masq_teardown(req) if ip_masq else None,
    )


def check(req: Request) -> None:
    ip_masq, _ = parse_config(req)
    common.check_veth(req, ip_masq, backend=nft.masq_backend(req.config))


def gc(req: Request) -> str | None:
    parse_config(req)
    return common.gc(req)


def status(req: Request) -> None:
    ip_masq, _ = parse_config(req)
    common.check_tools(ip_masq, nft.masq_backend(req.config))
    ipam.run(req, "STATUS")


HANDLERS = {"ADD": add, "DEL": delete, "CHECK": check, "GC": gc, "STATUS": status}


ABOUT = "cniplug ptp plugin"


def main() -> None:
    skel.main(HANDLERS, ABOUT)
