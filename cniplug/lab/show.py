"""`cniplug show`: the live network topology of this host and its namespaces, as text or as an SVG picture.

Three stages, each testable alone:

    probe(data_dir) -> raw dict       read-only probes, through runner.execute: in every namespace
                                      `ip -j -d addr show` (links with their addresses, veth peers, masters),
                                      `ip -j route show`, `ip -j -6 route show`, `ip -j netns list-id`;
                                      once `iptables -w -t nat -S` (and ip6tables if present); host-local's
                                      reservation files under data_dir. Plain JSON-able data.
    assemble(raw, prefix, netns)      pure: pair veth ends across namespaces, parse NAT chains, filter
        -> Topology
    render_text(topo) / render_svg(topo) -> str   pure

collect(...) is probe + assemble. The unit tests feed assemble recorded probes.

Namespaces: the one cniplug runs in ("host", key ""), the named ones (`ip netns list`, /run/netns), and the
unnamed ones processes live in (e.g. podman's containers), found through /proc/PID/ns/net and keyed "pid:PID".
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from cniplug import facts, i18n, runner
from cniplug.ipam.store import ip_from_name, parse_owner
from cniplug.spec import CNIError

DEFAULT_DATA_DIR = "/var/lib/cni/networks"  # host-local's default (cniplug.ipam.host_local.DEFAULT_DATA_DIR)
HOST = ""  # key of the namespace cniplug runs in



def label(key: str, lang: str, **fields: str) -> str:
    """show's label `key` (i18n.MESSAGES["show_" + key]) in `lang`."""
    return i18n.text(f"show_{key}", lang, **fields)


@dataclass
class Link:
    """One network device in one namespace. peer = (namespace key, name) of a veth's other end."""

    netns: str
    name: str
    ifindex: int
    kind: str  # veth, bridge, loopback, ether, dummy, ...
    state: str
    mtu: int
    mac: str = ""
    master: str = ""
    addrs: list[str] = field(default_factory=list)
    peer: tuple[str, str] | None = None
    peer_ifindex: int | None = None  # `link_index`: the peer's ifindex, in the peer's namespace
    peer_nsid: int | None = None  # `link_netnsid`: the peer's namespace as this namespace numbers it

    @property
    def key(self) -> tuple[str, str]:
        return (self.netns, self.name)


@dataclass
class Route:
    netns: str
    dst: str
    dev: str = ""
    via: str = ""
    src: str = ""
    scope: str = ""

    def __str__(self) -> str:
        words = [self.dst] + (["via", self.via] if self.via else []) + (["dev", self.dev] if self.dev else [])
        return " ".join(words + (["src", self.src] if self.src else []) + (["scope", self.scope] if self.scope else []))


@dataclass
class NatChain:
    """A CNI-* chain jumped to from nat POSTROUTING, with the `name: "<net>" id: "<cid>"` comment of the jump."""

    chain: str
    network: str
    container_id: str
    sources: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)  # the chain's own rules, `-A` and chain name left out


@dataclass
class Reservation:
    """A host-local reservation file: <data_dir>/<network>/<ip> holding "<containerID>\\r\\n<ifname>"."""

    network: str
    ip: str
    container_id: str
    ifname: str


@dataclass
class Topology:
    namespaces: list[str]  # keys, host ("") first
    links: list[Link]
    routes: list[Route]
    nat: list[NatChain]
    reservations: list[Reservation]
    data_dir: str = DEFAULT_DATA_DIR

    def link(self, key: tuple[str, str]) -> Link | None:
        return next((link for link in self.links if link.key == key), None)

    def veth_pairs(self) -> list[tuple[Link, Link]]:
        """Each veth pair once, as (end, other end); an end whose peer is not shown is left out."""
        pairs, seen = [], set[tuple[str, str]]()
        for link in self.links:
            other = self.link(link.peer) if link.peer else None
            if other and link.key not in seen:
                seen.update((link.key, other.key))
                pairs.append((link, other))
        return pairs

    def ports(self) -> list[tuple[Link, Link]]:
        """(port, bridge) for every link enslaved to a shown bridge."""
        out = []
        for link in self.links:
            bridge = self.link((link.netns, link.master)) if link.master else None
            if bridge:
                out.append((link, bridge))
        return out


# ------------------------------------------------------------------------------------------------ probe


def _ns_prefix(name: str) -> list[str]:
    if name == HOST:
        return ["ip"]
    if name.startswith("pid:"):
        return facts.ns_ip(f"/proc/{name[4:]}/ns/net")
    return ["ip", "-n", name]


def _process_namespaces(known: set[tuple[int, int]]) -> list[str]:
    """Network namespaces of processes that are neither the host's nor named: "pid:PID" (lowest PID each)."""
    found: dict[tuple[int, int], int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue  # gone, or a kernel thread
        ident = (st.st_dev, st.st_ino)
        if ident not in known and (ident not in found or int(entry) < found[ident]):
            found[ident] = int(entry)
    return [f"pid:{pid}" for pid in sorted(found.values())]


def probe(data_dir: str = DEFAULT_DATA_DIR, processes: bool = True) -> dict[str, Any]:
    """Read the host: every namespace's links+addresses, routes and nsid map, the nat table, the IPAM store.

    Raises CNIError when `ip` or `iptables` is missing. Returns {"namespaces": [{"name", "links", "routes",
    "ids"}], "nat": [iptables -S lines], "reservations": [{"network", "ip", "owner"}], "data_dir"}.
    """
    runner.which("ip")
    runner.which("iptables")
    names = [HOST] + sorted(str(ns["name"]) for ns in facts.ip_json(["ip"], "netns", "list"))
    if processes:
        known = {_ident("/proc/self/ns/net")} | {_ident(f"/run/netns/{n}") for n in names[1:]}
        names += _process_namespaces(known)
    namespaces = []
    for name in names:
        prefix = _ns_prefix(name)
        try:
            links = facts.ip_json(prefix, "-d", "addr", "show")
            routes = facts.ip_json(prefix, "route", "show") + facts.ip_json(prefix, "-6", "route", "show")
            ids = facts.ip_json(prefix, "netns", "list-id")
        except CNIError:  # nsenter missing, or output that is not JSON: leave this namespace out
            continue
        if name == HOST or links:  # a stale /run/netns entry or a process that exited gives nothing
            namespaces.append({"name": name, "links": links, "routes": routes, "ids": ids})
    nat = _iptables("iptables", required=True) + _iptables("ip6tables", required=False)
    return {"namespaces": namespaces, "nat": nat, "reservations": _reservations(data_dir), "data_dir": data_dir}


def _ident(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_dev, st.st_ino)


def _iptables(tool: str, required: bool) -> list[str]:
    try:
        result = runner.execute([tool, "-w", "-t", "nat", "-S"])
    except CNIError:
        if required:
            raise
        return []
    if result.rc != 0 and required:
        raise CNIError(1, f"{tool} -t nat -S failed: {result.stderr.strip()}")
    return result.stdout.splitlines() if result.rc == 0 else []


def _reservations(data_dir: str) -> list[dict[str, str]]:
    out = []
    try:
        networks = sorted(os.listdir(data_dir))
    except OSError:
        return []
    for network in networks:
        try:
            entries = sorted(os.listdir(os.path.join(data_dir, network)))
        except OSError:
            continue
        for entry in entries:
            if ip_from_name(entry) is None:
                continue
            try:
                with open(os.path.join(data_dir, network, entry), encoding="utf-8", errors="replace", newline="") as f:
                    out.append({"network": network, "ip": entry, "owner": f.read()})
            except OSError:
                continue
    return out


# --------------------------------------------------------------------------------------------- assemble


def parse_links(netns: str, raw: list[dict[str, Any]]) -> list[Link]:
    """`ip -j -d addr show` of one namespace -> Links (addresses without the link-local ones)."""
    links = []
    for item in raw:
        info = item.get("linkinfo", {})
        kind = info.get("info_kind") or item.get("link_type", "")
        addrs = [f"{a['local']}/{a['prefixlen']}" for a in item.get("addr_info", [])
                 if "local" in a and a.get("scope") != "link"]
        links.append(Link(
            netns=netns, name=str(item["ifname"]), ifindex=int(item["ifindex"]), kind=str(kind),
            state=str(item.get("operstate", "")), mtu=int(item.get("mtu", 0)), mac=str(item.get("address", "")),
            master=str(item.get("master", "")), addrs=addrs,
            peer_ifindex=item.get("link_index") if kind == "veth" else None,
            peer_nsid=item.get("link_netnsid") if kind == "veth" else None))
    return links


def pair_veths(links: list[Link], ids: dict[str, dict[int, str]]) -> None:
    """Set each veth's peer. ids[ns][nsid] is the name of a named namespace as `ns` numbers it.

    A veth with no link_netnsid has its peer in its own namespace; one whose nsid names a namespace has it
    there, at ifindex link_index. The rest (the peer is in an unnamed namespace, e.g. the host as a container
    sees it) are matched from the other end, or else by the one link elsewhere whose ifindex and link_index
    mirror theirs.
    """
    by_index = {(link.netns, link.ifindex): link for link in links}
    for link in links:
        if link.kind != "veth" or link.peer_ifindex is None:
            continue
        peer_ns = link.netns if link.peer_nsid is None else ids.get(link.netns, {}).get(link.peer_nsid)
        other = by_index.get((peer_ns, link.peer_ifindex)) if peer_ns is not None else None
        if other is not None:
            link.peer, other.peer = other.key, link.key
    for link in links:
        if link.kind != "veth" or link.peer is not None or link.peer_ifindex is None:
            continue
        mirrors = [o for o in links if o.kind == "veth" and o.netns != link.netns and o.peer is None
                   and o.ifindex == link.peer_ifindex and o.peer_ifindex == link.ifindex]
        if len(mirrors) == 1:
            link.peer, mirrors[0].peer = mirrors[0].key, link.key


def parse_routes(netns: str, raw: list[dict[str, Any]]) -> list[Route]:
    """`ip -j route` (+ -6) of one namespace -> Routes, without IPv6 link-local and multicast ones."""
    out = []
    for r in raw:
        dst = str(r.get("dst", ""))
        if dst.startswith(("fe80:", "ff00:", "multicast")) or r.get("type") == "multicast":
            continue
        out.append(Route(netns, dst, str(r.get("dev", "")), str(r.get("gateway", "")), str(r.get("prefsrc", "")),
                         str(r.get("scope", "")) if r.get("scope") not in (None, "global") else ""))
    return out


def parse_nat(lines: list[str]) -> list[NatChain]:
    """`iptables -t nat -S` lines -> the CNI-* chains jumped to from POSTROUTING, with net and container ids."""
    chains: dict[str, NatChain] = {}
    rules: dict[str, list[str]] = {}
    for line in lines:
        words = facts.iptables_words(line)
        if len(words) < 2 or words[0] != "-A":
            continue
        if words[1] != "POSTROUTING":
            rules.setdefault(words[1], []).append(" ".join(_without_comment(words[2:])))
            continue
        if words[-2:-1] != ["-j"] or not words[-1].startswith("CNI-"):
            continue
        net, cid = _comment_ids(words)
        chain = chains.setdefault(words[-1], NatChain(words[-1], net, cid))
        if "-s" in words:
            chain.sources.append(words[words.index("-s") + 1])
    for chain in chains.values():
        chain.rules = rules.get(chain.chain, [])
    return list(chains.values())


def _without_comment(words: list[str]) -> list[str]:
    """A rule's words without `-m comment --comment TEXT` (show prints the comment's ids once, per chain)."""
    if "--comment" in words:
        i = words.index("--comment")
        start = i - 2 if words[i - 2:i] == ["-m", "comment"] else i
        words = words[:start] + words[i + 2:]
    return words


def _comment_ids(words: list[str]) -> tuple[str, str]:
    """`--comment 'name: "net" id: "cid"'` -> ("net", "cid"); ("", "") without such a comment."""
    if "--comment" not in words:
        return "", ""
    try:
        parts = shlex.split(words[words.index("--comment") + 1])
    except (ValueError, IndexError):
        return "", ""
    found = dict(zip(parts[0::2], parts[1::2], strict=False))
    return found.get("name:", ""), found.get("id:", "")


def assemble(raw: dict[str, Any], prefix: str = "", netns: str | None = None) -> Topology:
    """Probed data (see probe) -> Topology, keeping only what matches the filters plus what it connects to.

    prefix: namespaces and links whose names start with it (NAT chains and reservations: by network or
    container id, or by address). netns: one namespace ("host" or "" for the one cniplug runs in).
    What they connect to: veth peers, the bridges of shown ports, and the ports (with peers) of a matched bridge.
    """
    links: list[Link] = []
    routes: list[Route] = []
    ids: dict[str, dict[int, str]] = {}
    names = []
    for ns in raw["namespaces"]:
        name = str(ns["name"])
        names.append(name)
        links += parse_links(name, ns["links"])
        routes += parse_routes(name, ns["routes"])
        ids[name] = {int(i["nsid"]): str(i["name"]) for i in ns.get("ids", []) if "name" in i}
    pair_veths(links, ids)
    nat = parse_nat(raw.get("nat", []))
    reservations = []
    for r in raw.get("reservations", []):
        cid, ifname = parse_owner(r["owner"])
        reservations.append(Reservation(r["network"], r["ip"], cid, ifname))
    topo = Topology(names, links, routes, nat, reservations, raw.get("data_dir", DEFAULT_DATA_DIR))
    if prefix or netns is not None:
        _filter(topo, prefix, HOST if netns == "host" else netns)
    return topo


def _filter(topo: Topology, prefix: str, netns: str | None) -> None:
    def matches(link: Link) -> bool:
        by_prefix = not prefix or link.name.startswith(prefix) or (link.netns != HOST and link.netns.startswith(prefix))
        return by_prefix and (netns is None or link.netns == netns)

    seeds = {link.key for link in topo.links if matches(link)}
    keep = set(seeds)
    for link in topo.links:  # ports (with their peers) of a matched bridge
        if link.master and (link.netns, link.master) in seeds:
            keep.add(link.key)
    keep |= {link.peer for link in topo.links if link.key in keep and link.peer}
    keep |= {(link.netns, link.master) for link in topo.links if link.key in keep and link.master}
    shown_ns = {ns for ns, _ in keep} | {ns for ns in topo.namespaces if ns == netns or
                                        (prefix and ns != HOST and ns.startswith(prefix) and netns is None)}
    addrs = {a.split("/")[0] for link in topo.links if link.key in keep for a in link.addrs}

    def owned(network: str, cid: str, ips: list[str]) -> bool:
        mine = bool(prefix) and netns is None and (network.startswith(prefix) or cid.startswith(prefix))
        return mine or any(ip.split("/")[0] in addrs for ip in ips)

    topo.namespaces = [ns for ns in topo.namespaces if ns in shown_ns]
    topo.links = [link for link in topo.links if link.key in keep]
    topo.routes = [r for r in topo.routes if (r.netns, r.dev) in keep]
    topo.nat = [c for c in topo.nat if owned(c.network, c.container_id, c.sources)]
    topo.reservations = [r for r in topo.reservations if owned(r.network, r.container_id, [r.ip])]


def collect(prefix: str = "", netns: str | None = None, data_dir: str = DEFAULT_DATA_DIR) -> Topology:
    """Probe this host (read-only) and assemble its Topology; see probe and assemble."""
    return assemble(probe(data_dir), prefix, netns)


# ----------------------------------------------------------------------------------------------- render


def ns_label(netns: str, lang: str = "en") -> str:
    return label("host", lang) if netns == HOST else netns


def end_label(key: tuple[str, str], lang: str = "en") -> str:
    """(namespace, link) -> "namespace/link", e.g. "host/veth1234abcd" or "tsh-c1/eth0"."""
    return f"{ns_label(key[0], lang)}/{key[1]}"


def render_text(topo: Topology, lang: str = "en") -> str:
    """The topology as plain text: each namespace with its links and routes, then the edges, NAT, IPAM."""
    out = []
    for ns in topo.namespaces:
        out.append(label("host", lang) if ns == HOST else f"{label('netns', lang)} {ns}")
        for link in (lk for lk in topo.links if lk.netns == ns):
            words = [f"  {link.name:<15} {link.kind:<8} {link.state:<7} mtu {link.mtu}"]
            words += [" ".join(link.addrs)] if link.addrs else []
            words += [f"{label('master', lang)} {link.master}"] if link.master else []
            words += [f"{label('peer', lang)} {end_label(link.peer, lang)}"] if link.peer else []
            out.append("  ".join(words))
        ns_routes = [r for r in topo.routes if r.netns == ns]
        if ns_routes:
            out.append(f"  {label('routes', lang)}:")
            out += [f"    {r}" for r in ns_routes]
    none = [f"  {label('none', lang)}"]
    out.append(f"{label('pairs', lang)}:")
    out += [f"  {end_label(a.key, lang)} <-> {end_label(b.key, lang)}" for a, b in topo.veth_pairs()] or none
    out.append(f"{label('ports', lang)}:")
    out += [f"  {end_label(p.key, lang)} -> {b.name}" for p, b in topo.ports()] or none
    out.append(f"{label('nat', lang)}:")
    for c in topo.nat:
        out.append(f"  {c.chain}  {label('net', lang)} {c.network}  {label('container', lang)} {c.container_id}"
                   f"  -s {' '.join(c.sources)}")
        out += [f"    {rule}" for rule in c.rules]
    out += [] if topo.nat else none
    out.append(f"{label('ipam', lang, dir=topo.data_dir)}:")
    out += [f"  {r.network:<20} {r.ip:<16} {label('container', lang)} {r.container_id}  {r.ifname}"
            for r in topo.reservations] or none
    return "\n".join(out) + "\n"


LINK_W, LINK_H, LINE_H, GAP, MARGIN = 190, 22, 14, 30, 20


def render_svg(topo: Topology, lang: str = "en") -> str:
    """The topology as an SVG picture in the tutorial's style: a box per namespace (containers on top, the host
    below), a box per interface labelled with its addresses, each bridge as a bar its ports hang from, each veth
    pair as a line between its ends. Every object is named in a <text>; shapes carry class and data-* names."""
    parts: list[str] = []
    pos: dict[tuple[str, str], tuple[float, float, float, float]] = {}  # link -> x, y, w, h of its box

    def text(x: float, y: float, s: str, size: int = 12, weight: str = "normal", anchor: str = "start") -> None:
        indent = len(s) - len(s.lstrip(" "))  # SVG collapses leading spaces: indent by position instead
        x, s = x + indent * 4, s.lstrip(" ")
        parts.append(f'<text x="{x:.0f}" y="{y:.0f}" font-size="{size}" font-weight="{weight}" '
                     f'text-anchor="{anchor}">{escape(s)}</text>')

    def rect(x: float, y: float, w: float, h: float, cls: str, name: str, fill: str, rx: int = 4) -> None:
        parts.append(f'<rect class="{cls}" data-name={quoteattr(name)} x="{x:.0f}" y="{y:.0f}" width="{w:.0f}" '
                     f'height="{h:.0f}" rx="{rx}" fill="{fill}" stroke="#333"/>')

    def link_box(link: Link, x: float, y: float) -> float:
        h = LINK_H + LINE_H * len(link.addrs)
        rect(x, y, LINK_W, h, "link", end_label(link.key), "#fff7d6" if link.kind == "veth" else "#eef")
        text(x + 6, y + 15, f"{link.name} ({link.kind})", weight="bold")
        for i, addr in enumerate(link.addrs):
            text(x + 6, y + 15 + LINE_H * (i + 1), addr, size=11)
        pos[link.key] = (x, y, LINK_W, h)
        return h

    def shown(link: Link) -> bool:
        return link.kind != "loopback"

    # containers (every namespace but the host) in a row on top, their links at the bottom of each box
    top, x = 50.0, float(MARGIN)
    boxes = []
    for ns in (n for n in topo.namespaces if n != HOST):
        ns_links = [lk for lk in topo.links if lk.netns == ns and shown(lk)]
        ns_routes = [r for r in topo.routes if r.netns == ns]
        longest = max([len(str(r)) for r in ns_routes], default=0)
        w = max(LINK_W + 20, len(ns_links) * (LINK_W + 10) + 10, 24 + 5.6 * longest)
        links_h = max([LINK_H + LINE_H * len(lk.addrs) for lk in ns_links], default=0)
        boxes.append((ns, x, w, ns_links, ns_routes, links_h))
        x += w + GAP
    row_h = max([40 + LINE_H * (len(b[4]) + 1) + b[5] + 10 for b in boxes], default=0)
    for ns, bx, w, ns_links, ns_routes, links_h in boxes:
        rect(bx, top, w, row_h, "netns", ns, "#e8f4e8", rx=8)
        text(bx + 8, top + 18, f"{label('netns', lang)} {ns}", size=13, weight="bold")
        text(bx + 8, top + 34, f"{label('routes', lang)}:", size=11)
        for i, r in enumerate(ns_routes):
            text(bx + 14, top + 34 + LINE_H * (i + 1), str(r), size=10)
        for i, lk in enumerate(ns_links):
            link_box(lk, bx + 10 + i * (LINK_W + 10), top + row_h - 10 - links_h)
    # the host below: first the ends of pairs that reach up, under their peers, then the bridges, then the rest
    host_y = top + row_h + (70 if boxes else 0)
    host_links = [lk for lk in topo.links if lk.netns == HOST and shown(lk)]
    y = host_y + 30
    placed_x = float(MARGIN)
    upper = [lk for lk in host_links if lk.peer and lk.peer in pos]
    upper.sort(key=lambda lk: pos[lk.peer][0] if lk.peer else 0)
    row = 0.0
    for lk in upper:
        px = max(pos[lk.peer][0] if lk.peer else 0, placed_x)
        row = max(row, link_box(lk, px, y))
        placed_x = px + LINK_W + 10
    y += row + (30 if upper else 0)
    bridges = [lk for lk in host_links if lk.kind == "bridge"]
    for br in bridges:
        ports = [pos[p.key] for p, b in topo.ports() if b.key == br.key and p.key in pos]
        bx = min([p[0] for p in ports], default=float(MARGIN) + 10)
        bw = max(max([p[0] + p[2] for p in ports], default=0) - bx, LINK_W * 1.5)
        rect(bx, y, bw, 26, "bridge", end_label(br.key), "#cde", rx=2)
        text(bx + 8, y + 17, f"{br.name} (bridge)  {' '.join(br.addrs)}", weight="bold")
        pos[br.key] = (bx, y, bw, 26)
        y += 46
    rest = [lk for lk in host_links if lk.key not in pos]
    x, row = float(MARGIN) + 10, 0.0
    for lk in rest:
        row = max(row, link_box(lk, x, y))
        x += LINK_W + 10
    y += row + (20 if rest else 0)
    host_routes = [r for r in topo.routes if r.netns == HOST]
    lines = [f"{label('routes', lang)}:"] + [f"  {r}" for r in host_routes]
    lines += [f"{label('nat', lang)}:"] + [f"  {c.chain} {label('net', lang)} {c.network} "
                                           f"{label('container', lang)} {c.container_id} -s {' '.join(c.sources)}"
                                           for c in topo.nat]
    y0 = y
    for i, line in enumerate(lines):
        text(MARGIN + 10, y0 + LINE_H * i + 10, line, size=11)
    y += LINE_H * len(lines) + 10
    right = max([p[0] + p[2] for p in pos.values()] + [b[1] + b[2] for b in boxes] + [700.0]) + MARGIN
    if HOST in topo.namespaces:
        parts.insert(0, f'<rect class="netns" data-name={quoteattr(label("host", "en"))} x="{MARGIN/2:.0f}" '
                        f'y="{host_y:.0f}" width="{right - MARGIN:.0f}" height="{y - host_y:.0f}" rx="8" '
                        f'fill="#f4f4f4" stroke="#333"/>')
        text(MARGIN, host_y + 18, label("host", lang), size=13, weight="bold")
    # edges: veth pairs and ports
    for a, b in topo.veth_pairs():
        if a.key not in pos or b.key not in pos:
            continue
        (ax, ay, aw, ah), (bx_, by, bw_, bh) = pos[a.key], pos[b.key]
        if ay > by:
            (ax, ay, aw, ah), (bx_, by, bw_, bh) = (bx_, by, bw_, bh), (ax, ay, aw, ah)
        x1, y1, x2 = ax + aw / 2, ay + ah, bx_ + bw_ / 2
        y2 = by if by > ay + ah else by + bh
        mid = (y1 + y2) / 2 if by > ay + ah else y1 + 25
        d = f"M{x1:.0f},{y1:.0f} V{mid:.0f} H{x2:.0f} V{y2:.0f}"
        parts.append(f'<path class="veth-pair" data-a={quoteattr(end_label(a.key))} '
                     f'data-b={quoteattr(end_label(b.key))} d="{d}" fill="none" stroke="#c60" stroke-width="2"/>')
        text(x2 + 4, mid - 3, "veth pair", size=10)
    for p, b in topo.ports():
        if p.key in pos and b.key in pos:
            px, py, pw, ph = pos[p.key]
            parts.append(f'<line class="port" data-port={quoteattr(end_label(p.key))} data-bridge={quoteattr(b.name)} '
                         f'x1="{px + pw / 2:.0f}" y1="{py + ph:.0f}" x2="{px + pw / 2:.0f}" y2="{pos[b.key][1]:.0f}" '
                         f'stroke="#06c" stroke-width="2"/>')
    # IPAM reservations under the host
    lines = [label("ipam", lang, dir=topo.data_dir) + ":"]
    lines += [f"  {r.network}  {r.ip}  {label('container', lang)} {r.container_id}  {r.ifname}"
              for r in topo.reservations] or [f"  {label('none', lang)}"]
    for i, line in enumerate(lines):
        text(MARGIN, y + 24 + LINE_H * i, line, size=11)
    height = y + 24 + LINE_H * len(lines) + MARGIN
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{right:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {right:.0f} {height:.0f}" font-family="DejaVu Sans, Noto Sans CJK SC, sans-serif">\n'
            f'<rect width="100%" height="100%" fill="white"/>\n')
    title = (f'<text x="{MARGIN}" y="28" font-size="16" font-weight="bold">{escape(label("title", lang))}</text>\n')
    return head + title + "\n".join(parts) + "\n</svg>\n"


# ------------------------------------------------------------------------------------------------- main


def main(prefix: str, netns: str | None, data_dir: str, svg: str, lang: str) -> int:
    """`cniplug show`: text on stdout, the picture into `svg` if given. 1 with one line on stderr on failure."""
    if os.geteuid() != 0:
        print("cniplug show: needs root (it enters every network namespace and reads the iptables nat table)",
              file=sys.stderr)
        return 1
    try:
        topo = collect(prefix, netns, data_dir)
    except CNIError as err:
        print(f"cniplug show: {err.msg}", file=sys.stderr)
        return 1
    if netns is not None and netns not in ("host", HOST) and netns not in topo.namespaces:
        print(f"cniplug show: no network namespace {netns!r}", file=sys.stderr)
        return 1
    print(render_text(topo, lang), end="")
    if svg:
        try:
            with open(svg, "w", encoding="utf-8") as f:
                f.write(render_svg(topo, lang))
        except OSError as err:
            print(f"cniplug show: cannot write {svg}: {err.strerror}", file=sys.stderr)
            return 1
    return 0
