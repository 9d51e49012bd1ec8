"""What the lab shows after each step: the kernel state of its own objects, as lines a learner can read.

`snapshot(prefix, subnets)` reads, with read-only `ip -j`, `bridge -j`, `iptables -S` and /proc/sys, the
links, addresses, routes, neighbours, bridge ports and learned MACs, nat and filter rules and the
forwarding sysctl of the host and of every namespace whose name starts with `prefix`; on the host only
what carries the prefix or one of the lab's subnets. `changes(before, after)` is the difference, and
`topology(state)` draws the namespaces and the veth pairs between them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from cniplug import facts, runner
from cniplug.spec import CNIError

HOST = "host"


@dataclass
class Link:
    ns: str
    name: str
    ifindex: int
    peer_index: int  # a veth's peer ifindex (in the peer's namespace), -1 otherwise
    kind: str
    up: bool
    master: str = ""
    addrs: list[str] = field(default_factory=list)


@dataclass
class State:
    lines: set[str] = field(default_factory=set)
    links: list[Link] = field(default_factory=list)


def _json(prefix: list[str], *args: str) -> list[dict[str, Any]]:
    """facts.ip_json, but a probe that cannot look shows nothing: the lab only displays what it sees."""
    try:
        return facts.ip_json(prefix, *args)
    except CNIError:
        return []


def lab_namespaces(prefix: str) -> list[str]:
    """Names under /run/netns that start with `prefix` (sorted)."""
    try:
        return sorted(n for n in os.listdir("/run/netns") if n.startswith(prefix))
    except OSError:
        return []


def _sysctl(ns: str, key: str) -> str:
    argv = ["sysctl", "-n", key] if ns == HOST else ["ip", "netns", "exec", ns, "sysctl", "-n", key]
    try:
        result = runner.execute(argv)
    except CNIError:
        return "?"
    return result.stdout.strip() if result.rc == 0 else "?"


def snapshot(prefix: str, subnets: list[str]) -> State:
    """The lab's objects now. Host objects count when their name starts with `prefix` or they name a subnet."""
    state = State()
    for ns in [HOST, *lab_namespaces(prefix)]:
        ip = ["ip"] if ns == HOST else ["ip", "-n", ns]
        mine = (lambda name: name.startswith(prefix)) if ns == HOST else (lambda name: True)
        for link in _json(ip, "-d", "addr", "show"):
            name = str(link.get("ifname", ""))
            if not mine(name):
                continue
            kind = str((link.get("linkinfo") or {}).get("info_kind", ""))
            up = "UP" in link.get("flags", [])
            item = Link(ns, name, int(link.get("ifindex", -1)), int(link.get("link_index", -1)) if kind == "veth"
                        else -1, kind, up, str(link.get("master", "")))
            item.addrs = [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                          if a.get("scope") != "link" and "local" in a]
            state.links.append(item)
            peer = f"@if{item.peer_index}" if item.peer_index > 0 else ""
            desc = f"link   {ns}: {name}{peer} {kind or 'device'} {'UP' if up else 'DOWN'}"
            state.lines.add(desc + (f" master {item.master}" if item.master else ""))
            for addr in item.addrs:
                state.lines.add(f"addr   {ns}: {addr} dev {name}")
        for route in _json(ip, "route", "show"):
            dev = str(route.get("dev", ""))
            if not mine(dev):
                continue
            via = f" via {route['gateway']}" if route.get("gateway") else ""
            state.lines.add(f"route  {ns}: {route.get('dst')}{via} dev {dev}")
        if ns != HOST:
            for n in _json(ip, "neigh", "show"):
                if n.get("lladdr"):
                    state.lines.add(f"neigh  {ns}: {n.get('dst')} is {n['lladdr']} on {n.get('dev')}")
        state.lines.add(f"sysctl {ns}: net.ipv4.ip_forward = {_sysctl(ns, 'net.ipv4.ip_forward')}")
    for fdb in _json(["bridge"], "fdb", "show"):
        if str(fdb.get("master", "")).startswith(prefix) and "permanent" not in fdb.get("state", ""):
            state.lines.add(f"fdb    {HOST}: bridge {fdb['master']} learned {fdb.get('mac')} "
                            f"on port {fdb.get('ifname')}")
    for table in ("nat", "filter"):
        try:
            result = runner.execute(["iptables", "-w", "-t", table, "-S"])
        except CNIError:
            continue
        for rule in result.stdout.splitlines():
            if rule.startswith("-A ") and (prefix in rule or any(s in rule for s in subnets)):
                state.lines.add(f"iptables {table}: {rule}")
    return state


def changes(before: State, after: State) -> list[str]:
    """'+ line' for what appeared, '- line' for what went, sorted by object."""
    gone = [f"- {line}" for line in before.lines - after.lines]
    new = [f"+ {line}" for line in after.lines - before.lines]
    return sorted(gone + new, key=lambda text: (text[2:], text[0]))


def topology(state: State) -> list[str]:
    """Each namespace with its interfaces, then the veth pairs and bridge ports that join them."""
    lines: list[str] = []
    by_ns: dict[str, list[Link]] = {}
    for link in state.links:
        by_ns.setdefault(link.ns, []).append(link)
    for ns, links in by_ns.items():
        shown = [f"{li.name}({', '.join(li.addrs) or '-'}){'' if li.up else ' down'}" for li in links
                 if li.name != "lo"]
        if shown or ns != HOST:
            lines.append(f"[{ns}] " + "  ".join(shown))
    pairs = set()
    for a in state.links:
        for b in state.links:
            if (a.kind == b.kind == "veth" and a.peer_index == b.ifindex and b.peer_index == a.ifindex
                    and (a.ns, a.name) < (b.ns, b.name) and (a.ns != b.ns or a.name != b.name)):
                pairs.add(f"  {a.ns}:{a.name} <==veth==> {b.ns}:{b.name}")
    lines += sorted(pairs)
    lines += sorted(f"  {li.ns}:{li.name} --port of--> {li.master}" for li in state.links if li.master)
    return lines
