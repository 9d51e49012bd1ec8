"""static IPAM: hand out the configured addresses (no state). See cni-notes 3.4.

Sources, in order: `ipam.addresses`; CNI_ARGS `IP=` (comma list of CIDRs, appended) and `GATEWAY=` (comma list,
each attached to the addresses whose subnet contains it); `args.cni.ips` then `runtimeConfig.ips` replace
everything before them (CIDRs, no gateway).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from cniplug.ipam.host_local import CIDR_RE, expect_list, expect_obj, expect_str, parse_ip, parse_routes, quote_value
from cniplug.ipam.store import IPAddress
from cniplug.skel import Request
from cniplug.spec import CURRENT_VERSION, ERR_INTERNAL, ERR_INVALID_CONFIG, ERR_INVALID_ENV, CNIError

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
CNI_ARGS_KEYS = ("IP", "GATEWAY", "MAC")
DNS_LIST_KEYS = ("nameservers", "search", "options")


@dataclass
class Address:
    address: IPInterface
    gateway: IPAddress | None = None

    def to_result(self) -> dict[str, str]:
        out = {"address": str(self.address)}
        if self.gateway is not None:
            out["gateway"] = str(self.gateway)
        return out


def parse_cidr(value: Any, where: str, code: int = ERR_INVALID_CONFIG) -> IPInterface:
    """'10.1.0.5/24' (host bits kept: it is the interface address); plain IPs are refused."""
    if not isinstance(value, str):
        raise CNIError(code, f"{where} must be a string, got {quote_value(value)}")
    text = value.strip()
    try:
        if not CIDR_RE.match(text):
            raise ValueError(text)
        return ipaddress.ip_interface(text)
    except ValueError:
        raise CNIError(code, f"{where} {quote_value(value)} is not in CIDR notation (address/prefix)") from None


def _gateway_for(addr: IPInterface, value: Any, where: str) -> IPAddress:
    gw = parse_ip(value, where)
    if gw.version != addr.version:
        raise CNIError(ERR_INVALID_CONFIG, f"{where} {quote_value(value)} is not the same address family as {addr}")
    return gw


def parse_addresses(ipam: dict[str, Any]) -> list[Address]:
    out: list[Address] = []
    for i, item in enumerate(expect_list(ipam.get("addresses", []), "ipam.addresses")):
        obj = expect_obj(item, f"ipam.addresses[{i}]")
        if "address" not in obj:
            raise CNIError(ERR_INVALID_CONFIG, f"ipam.addresses[{i}].address is required")
        addr = parse_cidr(obj["address"], f"ipam.addresses[{i}].address")
        gw = None
        if obj.get("gateway") not in (None, ""):
            gw = _gateway_for(addr, obj["gateway"], f"ipam.addresses[{i}].gateway")
        out.append(Address(addr, gw))
    return out


def apply_cni_args(req: Request, addresses: list[Address]) -> list[Address]:
    args = req.known_args(CNI_ARGS_KEYS)
    if args.get("IP"):
        for i, item in enumerate(args["IP"].split(",")):
            addresses.append(Address(parse_cidr(item, f"CNI_ARGS IP[{i}]", ERR_INVALID_ENV)))
    if args.get("GATEWAY"):
        for item in args["GATEWAY"].split(","):
            try:
                gw = ipaddress.ip_address(item.strip())
            except ValueError:
                raise CNIError(ERR_INVALID_ENV,
                               f"CNI_ARGS GATEWAY {quote_value(item)} is not a valid IP address") from None
            for addr in addresses:
                if gw.version == addr.address.version and gw in addr.address.network:
                    addr.gateway = gw
    return addresses


def _replacement(value: Any, where: str) -> list[Address] | None:
    if value is None:
        return None
    items = expect_list(value, where)
    if not items:
        return None
    return [Address(parse_cidr(item, f"{where}[{i}]")) for i, item in enumerate(items)]


def parse_dns(value: Any) -> dict[str, Any]:
    obj = expect_obj(value, "ipam.dns")
    dns: dict[str, Any] = {}
    for key in DNS_LIST_KEYS:
        if obj.get(key) is not None:
            items = expect_list(obj[key], f"ipam.dns.{key}")
            dns_values = [expect_str(v, f"ipam.dns.{key}[{i}]") for i, v in enumerate(items)]
            if key == "nameservers":
                for i, v in enumerate(dns_values):
                    parse_ip(v, f"ipam.dns.nameservers[{i}]")
            if dns_values:
                dns[key] = dns_values
    if obj.get("domain") not in (None, ""):
        dns["domain"] = expect_str(obj["domain"], "ipam.dns.domain")
    return dns


@dataclass
class StaticConfig:
    addresses: list[Address]
    routes: list[dict[str, Any]]
    dns: dict[str, Any]


def parse_config(req: Request) -> StaticConfig:
    ipam = req.config.get("ipam")
    if ipam is None:
        raise CNIError(ERR_INVALID_CONFIG, "IPAM config missing 'ipam' key")
    ipam = expect_obj(ipam, "ipam")
    addresses = apply_cni_args(req, parse_addresses(ipam))
    cfg_args = req.config.get("args")
    if isinstance(cfg_args, dict) and isinstance(cfg_args.get("cni"), dict):
        addresses = _replacement(cfg_args["cni"].get("ips"), "args.cni.ips") or addresses
    addresses = _replacement(req.runtime_config("ips"), "runtimeConfig.ips") or addresses
    routes = parse_routes(ipam["routes"]) if ipam.get("routes") is not None else []
    dns = parse_dns(ipam["dns"]) if ipam.get("dns") is not None else {}
    return StaticConfig(addresses, routes, dns)


def add(req: Request) -> dict[str, Any]:
    cfg = parse_config(req)
    result: dict[str, Any] = {
        "cniVersion": CURRENT_VERSION,
        "ips": [a.to_result() for a in cfg.addresses],
        "routes": cfg.routes,
    }
    if cfg.dns:
        result["dns"] = cfg.dns
    return result


def delete(req: Request) -> None:
    """Nothing to release; the config is still validated like the reference does."""
    parse_config(req)


def check(req: Request) -> None:
    """Every configured address must be in prevResult (with the same gateway when one is configured)."""
    cfg = parse_config(req)
    prev = req.prev_result()
    if prev is None:
        raise CNIError(ERR_INTERNAL, "Required prevResult missing")
    present: dict[IPAddress, str | None] = {}
    for entry in prev.get("ips", []):
        present[ipaddress.ip_interface(entry["address"]).ip] = entry.get("gateway")
    for addr in cfg.addresses:
        ip = addr.address.ip
        if ip not in present:
            raise CNIError(ERR_INTERNAL, f"static: address {addr.address} not found in prevResult for {req.ifname}")
        gw = present[ip]
        if addr.gateway is not None and not _same_ip(gw, addr.gateway):
            raise CNIError(ERR_INTERNAL, f"static: address {addr.address} has gateway {gw} in prevResult,"
                                         f" expected {addr.gateway}")


def _same_ip(text: str | None, ip: IPAddress) -> bool:
    try:
        return text is not None and ipaddress.ip_address(text) == ip
    except ValueError:
        return False


def gc(req: Request) -> None:
    return None


def status(req: Request) -> None:
    return None
