"""cniplug-loopback: bring `lo` up in the container (CNI_IFNAME is ignored, as in the reference)."""

from __future__ import annotations

from typing import Any

from cniplug import facts, skel
from cniplug.plugins.common import perform
from cniplug.skel import Request
from cniplug.spec import ERR_INTERNAL, CNIError


def add(req: Request) -> dict[str, Any] | str | None:
    req.known_args(("IP", "MAC"))
    if not req.dry_run:
        facts.check_netns(req.netns)
    ip = facts.ns_ip(req.netns)
    text = perform(req, "loopback/add.sh.j2", ip=ip)
    if text is not None:
        return text
    prev = req.prev_result()
    if prev is not None:
        return prev
    ips = []
    seen: set[int] = set()
    for cidr in _host_scope(ip):
        family = 6 if ":" in cidr else 4
        if family not in seen:
            seen.add(family)
            ips.append({"interface": 0, "address": cidr})
    return {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": req.netns}],
        "ips": ips,
        "routes": [],
    }


def _host_scope(ip: list[str]) -> list[str]:
    """lo's addresses have scope host; facts.addresses only lists global ones."""
    out = []
    for link in facts.ip_json(ip, "addr", "show", "dev", "lo"):
        for a in link.get("addr_info", []):
            out.append(f"{a['local']}/{a['prefixlen']}")
    return out


def delete(req: Request) -> str | None:
    alive = facts.netns_alive(req.netns)
    return perform(req, "loopback/del.sh.j2", best_effort=True, alive=alive, ip=facts.ns_ip(req.netns or "/"))


def check(req: Request) -> None:
    facts.check_netns(req.netns)
    links = facts.ip_json(facts.ns_ip(req.netns), "link", "show", "dev", "lo")
    if not links or "UP" not in links[0].get("flags", []):
        raise CNIError(ERR_INTERNAL, "loopback interface lo is not up", f"in {req.netns}")


HANDLERS = {"ADD": add, "DEL": delete, "CHECK": check}


ABOUT = "cniplug loopback plugin"


def main() -> None:
    skel.main(HANDLERS, ABOUT)
