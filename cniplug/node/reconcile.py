"""One reconcile of the node agent: read the node's state (facts), compare it with the cluster (plan),
run the difference (apply). Level-triggered: the plan is computed from what is there now, never from
what the last round did, so a restarted agent converges, a route deleted by hand comes back, and a
second reconcile in a row renders a script with no steps.

What the agent keeps on this node (all rendered from templates/node/reconcile.sh.j2):

1. A route `POD_CIDR via NODE_IP proto P` for every other node (host-gw, as in the tutorial's example 3
   and flannel's host-gw backend). The routes carry the protocol number P (default 222, --route-proto):
   that is how the agent knows its own routes and deletes only those (a route for a node that left);
   a route of anyone else to the same destination is left alone and reported.
2. Pod traffic inside the cluster CIDR keeps its source address: a nat chain of its own (CHAIN, default
   CNIPLUG-POSTRTG) that ACCEPTs `-s CLUSTER -d CLUSTER`, jumped to from POSTROUTING ahead of the
   per-container chains cniplug-bridge's ipMasq adds (CNI-xxxx, cni-notes 2.4). ACCEPT, not RETURN: in a
   chain of our own RETURN goes back to POSTROUTING, whose next rule jumps to the CNI chain that
   masquerades; ACCEPT ends the nat table's POSTROUTING walk, so no later rule masquerades it. Traffic
   to anywhere else still reaches the CNI chains and is masqueraded.
3. `net.ipv4.ip_forward=1` (the node routes between its pods and the other nodes).
4. This node's network config list (cniplug-bridge with host-local IPAM on this node's pod CIDR, after
   cniplug-loopback), written atomically (a temporary file, then mv) into the config dir, and only once
   the node has a pod CIDR: a runtime never starts pods on a node whose routes nobody else knows.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

from cniplug import render, runner, script
from cniplug.facts import iptables_words
from cniplug.node.model import NodeInfo
from cniplug.spec import ERR_INVALID_CONFIG, CNIError

log = logging.getLogger("cniplug")

CHAIN = "CNIPLUG-POSTRTG"
ROUTE_PROTO = 222  # not in iproute2's rt_protos; --route-proto to change
RULE_COMMENT = "cniplug node: pod to pod in the cluster keeps its source"
JUMP_COMMENT = "cniplug node: cluster traffic before the CNI masquerade chains"
WRITE_FILE = 'umask 022 && mkdir -p "${2%/*}" && printf %b "$1" > "$2.cniplug-tmp" && mv -f "$2.cniplug-tmp" "$2"'


@dataclass(frozen=True)
class Settings:
    """What the agent was told. cluster_cidr: the pods' IPv4 network (all nodes' pod CIDRs inside it).
    conf_dir/conf_name: where this node's config list goes. network: the list's name. bridge: the
    bridge cniplug-bridge makes. route_proto: the protocol number marking the agent's routes (1-255,
    not 0-4 which the kernel and iproute2 use themselves). chain: the agent's nat chain. lang: en, zh.
    write_conf: whether the config list may be written (the kubelet takes its presence as "network
    ready", so not before the plugins answer)."""

    cluster_cidr: str = "10.244.0.0/16"
    conf_dir: str = "/etc/cni/net.d"
    conf_name: str = "10-cniplug.conflist"
    network: str = "cniplug-pods"
    bridge: str = "cni0"
    route_proto: int = ROUTE_PROTO
    chain: str = CHAIN
    lang: str = "en"
    write_conf: bool = True  # False until the plugins can serve (agent --bin-dir): no config list yet

    @property
    def conf_path(self) -> str:
        return os.path.join(self.conf_dir, self.conf_name)


@dataclass(frozen=True)
class Route:
    """A route of the main table: destination (normalised CIDR), gateway ("" if none), protocol as
    `ip -j` prints it ("kernel", "222", "" for boot), scope ("" for global)."""

    dst: str
    gateway: str = ""
    protocol: str = ""
    scope: str = ""


@dataclass(frozen=True)
class Facts:
    """The node's state, read by probe(): main-table routes, `iptables -t nat -S` lines, the config
    list now at conf_path (None: no file), /proc/sys/net/ipv4/ip_forward ("" unreadable)."""

    routes: tuple[Route, ...] = ()
    nat: tuple[str, ...] = ()
    conflist: str | None = None
    forwarding: str = "1"


@dataclass
class Plan:
    """What plan() decided, before rendering (tests look at it; the template renders it)."""

    add: list[dict[str, str]] = field(default_factory=list)
    delete: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    nat: dict[str, Any] = field(default_factory=dict)
    conf: dict[str, str] | None = None
    forwarding: bool = False
    invalid: int = 0  # nodes left out: a name, address or pod CIDR that is not well-formed


NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")  # RFC 1123 subdomain (Kubernetes node names)


def _cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except (ValueError, TypeError):
        return False
    return True


def valid(node: NodeInfo) -> bool:
    """A node the agent can act on: an RFC 1123 name, an IPv4 address or "", pod CIDRs that parse.
    Anything else (a source gone wrong) is left out of the plan and counted, never rendered."""
    if not isinstance(node.name, str) or not NODE_NAME.match(node.name):
        return False
    if node.address:
        try:
            if ipaddress.ip_address(node.address).version != 4:
                return False
        except (ValueError, TypeError):
            return False
    return all(isinstance(c, str) and _cidr(c) for c in node.pod_cidrs)


def normalise(dst: str) -> str:
    """`ip -j` destination -> CIDR: 'default' -> '0.0.0.0/0', '10.1.2.3' -> '10.1.2.3/32'."""
    if dst == "default":
        return "0.0.0.0/0"
    return str(ipaddress.ip_network(dst, strict=False))


def routes_from_json(raw: list[dict[str, Any]]) -> tuple[Route, ...]:
    """`ip -j route show table main` -> Routes (IPv4 only; anything unparsable skipped)."""
    found = []
    for r in raw:
        try:
            dst = normalise(str(r.get("dst", "")))
        except ValueError:
            continue
        found.append(Route(dst, str(r.get("gateway", "")), str(r.get("protocol", "")), str(r.get("scope", ""))))
    return tuple(found)


def probe(settings: Settings) -> Facts:
    """Read the facts of this network namespace (read-only: `ip -j route`, `iptables -S`, two files).
    Raises CNIError when `ip` or `iptables` cannot be run."""
    done = runner.execute(["ip", "-j", "-4", "route", "show", "table", "main"])
    if done.rc != 0:
        raise CNIError(999, "ip route show failed", done.stderr.strip())
    routes = routes_from_json(json.loads(done.stdout or "[]"))
    nat = runner.execute(["iptables", "-w", "-t", "nat", "-S"])
    if nat.rc != 0:
        raise CNIError(999, "iptables -t nat -S failed", nat.stderr.strip())
    try:
        with open(settings.conf_path, encoding="utf-8") as f:
            conflist: str | None = f.read()
    except FileNotFoundError:
        conflist = None
    except OSError as err:
        raise CNIError(999, f"cannot read {settings.conf_path}", str(err)) from err
    try:
        with open("/proc/sys/net/ipv4/ip_forward", encoding="ascii") as f:
            forwarding = f.read().strip()
    except OSError:
        forwarding = ""
    return Facts(routes, tuple(nat.stdout.splitlines()), conflist, forwarding)


def conflist_text(me: NodeInfo, settings: Settings) -> str:
    """This node's config list (JSON text, 2-space indent, ending in a newline): cniplug-loopback, then
    cniplug-bridge (gateway, ipMasq) with host-local IPAM on the node's IPv4 pod CIDRs and a default
    route. The loopback comes first: a later plugin's result is the list's result (libcni), and the
    bridge's is the one the runtime needs."""
    ranges = [[{"subnet": c}] for c in me.pod_cidrs if ipaddress.ip_network(c).version == 4]
    data = {
        "cniVersion": "1.0.0",
        "name": settings.network,
        "plugins": [
            {"type": "cniplug-loopback"},
            {"type": "cniplug-bridge", "bridge": settings.bridge, "isGateway": True, "ipMasq": True,
             "ipam": {"type": "cniplug-host-local", "ranges": ranges, "routes": [{"dst": "0.0.0.0/0"}]}},
        ],
    }
    return json.dumps(data, indent=2) + "\n"


def subnet_of_conflist(text: str | None) -> str:
    """The first IPAM subnet of a config list written by conflist_text ("" for none or another shape):
    the subnet a restarted node asks its source for first."""
    try:
        for plugin in json.loads(text or "")["plugins"]:
            if plugin.get("type") == "cniplug-bridge":
                return str(plugin["ipam"]["ranges"][0][0]["subnet"])
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        pass
    return ""


def nat_plan(facts: Facts, settings: Settings) -> dict[str, Any]:
    """The nat steps: create the chain, make its rules exactly [the ACCEPT rule], and have POSTROUTING
    jump to it before any jump to a CNI- chain (the masquerade chains of cniplug-bridge and the reference).
    Returns {"chain", "create": bool, "flush": [old rules], "rule": words or None, "drop_jumps": [words],
    "jump": words or None}: what to change; all empty when nothing is to change."""
    cluster = str(ipaddress.ip_network(settings.cluster_cidr))
    rule = ["-s", cluster, "-d", cluster, "-m", "comment", "--comment", RULE_COMMENT, "-j", "ACCEPT"]
    jump = ["-m", "comment", "--comment", JUMP_COMMENT, "-j", settings.chain]
    lines = [iptables_words(line) for line in facts.nat]
    exists = ["-N", settings.chain] in lines
    rules = [w[2:] for w in lines if w[:2] == ["-A", settings.chain]]
    post = [w[2:] for w in lines if w[:2] == ["-A", "POSTROUTING"]]
    mine = [i for i, w in enumerate(post) if w[-2:] == ["-j", settings.chain]]
    first_cni = next((i for i, w in enumerate(post) if len(w) >= 2 and w[-2] == "-j" and w[-1].startswith("CNI-")),
                     len(post))
    ok_jump = len(mine) == 1 and post[mine[0]] == jump and mine[0] < first_cni
    return {
        "chain": settings.chain,
        "create": not exists,
        "flush": rules if rules != [rule] else [],
        "rule": rule if rules != [rule] else None,
        "drop_jumps": [] if ok_jump else [post[i] for i in mine],
        "jump": None if ok_jump else jump,
    }


def decide(me: NodeInfo, nodes: list[NodeInfo], facts: Facts, settings: Settings = Settings()) -> Plan:
    """The difference between the cluster and this node: see the module text. Pure."""
    p = Plan()
    me = NodeInfo(me.name, tuple(c for c in me.pod_cidrs if _cidr(c)), me.address)
    good = [n for n in nodes if valid(n)]
    p.invalid = len(nodes) - len(good)
    nodes = good
    proto = str(settings.route_proto)
    owned = {r.dst: r.gateway for r in facts.routes if r.protocol == proto}
    foreign = {r.dst for r in facts.routes if r.protocol != proto}
    connected = [ipaddress.ip_network(r.dst) for r in facts.routes if r.scope == "link" and not r.gateway]
    mine = {str(ipaddress.ip_network(c)) for c in me.pod_cidrs}
    want: dict[str, str] = {}
    for node in sorted(nodes, key=lambda n: n.name):
        if node.name == me.name:
            continue
        for raw in node.pod_cidrs:
            net = ipaddress.ip_network(raw, strict=False)
            cidr = str(net)
            if net.version != 4:
                continue
            if not node.address:
                p.skipped.append({"dst": cidr, "node": node.name, "why": "node_skip_noaddr"})
            elif any(net.overlaps(ipaddress.ip_network(m)) for m in mine):
                p.skipped.append({"dst": cidr, "node": node.name, "why": "node_skip_mine"})
            elif cidr in foreign:
                p.skipped.append({"dst": cidr, "node": node.name, "why": "node_skip_foreign"})
            elif connected and not any(ipaddress.ip_address(node.address) in c for c in connected):
                p.skipped.append({"dst": cidr, "node": node.name, "why": "node_skip_offlink"})
            elif cidr not in want:
                want[cidr] = node.address
    for dst, gw in sorted(owned.items()):
        if want.get(dst) != gw:
            p.delete.append({"dst": dst, "gw": gw})
    for dst, gw in sorted(want.items()):
        if owned.get(dst) != gw:
            p.add.append({"dst": dst, "gw": gw})
    p.nat = nat_plan(facts, settings)
    p.forwarding = facts.forwarding != "1"
    if me.pod_cidrs and settings.write_conf:
        body = conflist_text(me, settings)
        if facts.conflist != body:
            p.conf = {"path": settings.conf_path, "body": escape(body),
                      "old": escape(facts.conflist) if facts.conflist is not None else ""}
    return p


def escape(body: str) -> str:
    """File text -> one `printf %b` argument on one script line."""
    return body.replace("\\", "\\\\").replace("\n", "\\n")


def plan(me: NodeInfo, nodes: list[NodeInfo], facts: Facts, settings: Settings = Settings()) -> str:
    """The script of one reconcile (what --dry-run prints and apply() runs): header, what the agent saw
    (as comments), the steps. A node in sync gets a script with no steps. Pure: (me, nodes, facts,
    settings) -> text; raises CNIError 7 for a value that cannot be rendered (render.quote)."""
    p = decide(me, nodes, facts, settings)
    if not valid(NodeInfo(me.name, (), me.address)):
        raise CNIError(ERR_INVALID_CONFIG, f"this node's name {me.name!r} or address {me.address!r} is not well-formed")
    body = render.render("node/reconcile.sh.j2", me=me, nodes=sorted(filter(valid, nodes), key=lambda n: n.name), p=p,
                         s=settings, proto=str(settings.route_proto), write_file=WRITE_FILE,
                         lang=settings.lang)
    return script.header(settings.lang) + body


def uninstall_plan(facts: Facts, settings: Settings) -> str:
    """The script that takes back everything the agent keeps (its routes, its nat chain and jump, the
    config list); every step tolerant, as a CNI DEL is. ip_forward stays (pods may still need it)."""
    proto = str(settings.route_proto)
    nat = nat_plan(Facts(nat=()), settings)
    lines = [iptables_words(line) for line in facts.nat]
    jumps = [w[2:] for w in lines if w[:2] == ["-A", "POSTROUTING"] and w[-2:] == ["-j", settings.chain]]
    body = render.render("node/uninstall.sh.j2", routes=[r for r in facts.routes if r.protocol == proto],
                         proto=proto, chain=nat["chain"], jumps=jumps,
                         chain_exists=["-N", settings.chain] in lines,
                         conf=settings.conf_path if facts.conflist is not None else "", lang=settings.lang)
    return script.header(settings.lang) + body


def body_of(text: str) -> str:
    """A rendered script without its header (up to `set -e`, which is bash's, not a step)."""
    head, sep, rest = text.partition("\nset -e\n")
    return rest if sep and head.startswith("#!/bin/bash") else text


def steps_of(text: str) -> list[script.Step]:
    """The steps of a rendered script."""
    return script.parse(body_of(text)).steps


def apply(text: str, run: runner.Runner | None = None, best_effort: bool = False) -> int:
    """Run a script from plan() (or uninstall_plan()) with the runner: on a failed step the completed
    ones are undone and CNIError is raised. Returns how many steps ran."""
    parsed = script.parse(body_of(text))
    (run or runner.Runner()).run(parsed, best_effort=best_effort)
    return len(parsed.steps)
