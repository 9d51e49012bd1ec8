"""The stand-in for "the Internet" in the lab and the demo: a namespace behind a veth of the host.

Its subnet gets a connected route on the host, so it must not cover anything the host really reaches:
on some machines the documentation ranges (192.0.2.0/24, 203.0.113.0/24) carry the real uplink or the
package mirrors. `check` refuses a subnet that overlaps a route or address of the host (but the default
route) or contains a DNS server of /etc/resolv.conf.
"""

from __future__ import annotations

import ipaddress

from cniplug import facts
from cniplug.spec import ERR_INVALID_CONFIG, CNIError

DEFAULT = "198.18.0.0/24"  # RFC 2544's benchmarking range: never routed on the Internet


def check_pair(subnet: str, outside: str, mine: str) -> None:
    """Both networks a lab or demo puts on the host: free on this host (check) and apart from each other.
    Raises CNIError 7 naming the option and the value."""
    inside = check(subnet, mine, "--subnet")
    if inside.overlaps(check(outside, mine)):
        raise CNIError(ERR_INVALID_CONFIG, f"--outside {outside} overlaps --subnet {subnet}",
                       "the stand-in Internet must be another network than the containers'")


def nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    try:
        with open(path) as f:
            return [line.split()[1] for line in f if line.startswith("nameserver") and len(line.split()) > 1]
    except OSError:
        return []


def check(subnet: str, mine: str, flag: str = "--outside") -> ipaddress.IPv4Network:
    """The stand-in subnet, if the host uses none of it (routes on links named `mine`... are the caller's own).
    Raises CNIError 7 naming the route or DNS server in the way."""
    try:
        net = ipaddress.ip_network(subnet)
    except ValueError as err:
        raise CNIError(ERR_INVALID_CONFIG, f"{flag} {subnet!r} is not a network", str(err)) from None
    if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 29:
        raise CNIError(ERR_INVALID_CONFIG, f"{flag} {subnet!r} must be an IPv4 network of /29 or larger")
    try:
        routes = facts.ip_json(["ip"], "-4", "route", "show", "table", "all")
    except CNIError:  # could not look (not iproute2's JSON): nothing to compare with
        routes = []
    for route in routes:
        dst = str(route.get("dst", ""))
        if dst in ("default", "") or route.get("type") in ("broadcast", "multicast"):
            continue
        try:
            other = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        except ValueError:
            continue
        if other.overlaps(net) and not str(route.get("dev", "")).startswith(mine):
            raise CNIError(ERR_INVALID_CONFIG, f"{flag} {subnet} is in use on this host: route {dst} dev "
                           f"{route.get('dev')}", f"choose another {flag}"
                           + (f" (default {DEFAULT})" if flag == "--outside" else ""))
    for server in nameservers():
        try:
            if ipaddress.ip_address(server) in net:
                raise CNIError(ERR_INVALID_CONFIG, f"{flag} {subnet} holds this host's DNS server {server}",
                               f"choose another {flag}")
        except ValueError:
            continue
    return net
