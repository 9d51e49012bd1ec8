"""cniplug-portmap: host ports forwarded to a container (DNAT), a chained plugin after bridge or ptp.

Config keys follow the reference portmap (cni-notes 3.6, observed state 4.3): snat (true), markMasqBit (13,
0..31), externalSetMarkChain (exclusive with markMasqBit), conditionsV4 / conditionsV6 (extra iptables match
words for the per-container entry rules), backend ("iptables"), and the capability `portMappings` in
runtimeConfig: [{hostPort, containerPort, protocol (tcp|udp|sctp), hostIP?}]. Keys are matched
case-insensitively (containerd sends HostPort, podman hostPort; Go's JSON decoding does the same).

Kernel state, the reference's names and layout so that a node can switch between the two and either one's
DEL/GC finds what the other made:

    nat PREROUTING  -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT        (appended)
    nat OUTPUT      -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT        (appended)
    nat POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ (inserted at 1)
    CNI-HOSTPORT-SETMARK  -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark M/M
    CNI-HOSTPORT-MASQ     -m mark --mark M/M -j MASQUERADE
    CNI-HOSTPORT-DNAT     -p P -m comment --comment 'dnat name: "NET" id: "CID"' -m multiport --dports ... -j CNI-DN-H
    CNI-DN-H              per mapping: hairpin mark (-s container subnet), localhost mark (v4), DNAT

where H is the first 21 hex digits of sha512(network name + container id). Unlike the reference:
a host port already mapped for another container is an error (the reference silently shadows it), and DEL
finds the container's rules from the kernel, so it works without runtimeConfig and without prevResult.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cniplug import facts, nft, rundir, skel
from cniplug.plugins import common
from cniplug.skel import Request
from cniplug.spec import ERR_INTERNAL, ERR_INVALID_CONFIG, CNIError

DNAT_CHAIN = "CNI-HOSTPORT-DNAT"
SETMARK_CHAIN = "CNI-HOSTPORT-SETMARK"
MASQ_CHAIN = "CNI-HOSTPORT-MASQ"
MASQ_COMMENT = "CNI portfwd requiring masquerade"
MARK_COMMENT = "CNI portfwd masquerade mark"
PROTOCOLS = ("tcp", "udp", "sctp")
MULTIPORT_MAX = 15  # iptables' multiport match takes at most 15 ports
LOCK_PATH = f"{rundir.RUN_DIR}/portmap.lock"
LOCK_TIMEOUT = 120.0
TOOLS = {4: "iptables", 6: "ip6tables"}
# Words that would turn a condition (a match) into a target or another command: refused in conditionsV4/V6.
_TARGET_WORDS = {"-j", "--jump", "-g", "--goto", "-A", "--append", "-I", "--insert", "-D", "--delete", "-N", "-X",
                 "-F", "-R", "-P", "-t", "--table", "-E"}


@dataclass
class Mapping:
    host_port: int
    container_port: int
    protocol: str
    host_ip: str  # "" when unspecified (absent, "", 0.0.0.0 or ::)

    def host_ip_family(self) -> int:
        return ipaddress.ip_address(self.host_ip).version if self.host_ip else 0

    def describe(self) -> str:
        return f"{self.host_ip or '*'}:{self.host_port}/{self.protocol}"


@dataclass
class Config:
    snat: bool
    mark_bit: int
    external_chain: str
    conditions: dict[int, list[str]]
    mappings: list[Mapping]
    backend: str = "iptables"  # or "nftables"

    @property
    def mark(self) -> str:
        """The masquerade mark as iptables prints it: 0x2000/0x2000 for bit 13."""
        value = 1 << self.mark_bit
        return f"{value:#x}/{value:#x}"

    @property
    def setmark_target(self) -> str:
        return self.external_chain or SETMARK_CHAIN


def _key(data: dict[str, Any], name: str) -> Any:
    """data[name], the key matched case-insensitively (Go's JSON decoding does the same); None if absent."""
    if name in data:
        return data[name]
    lowered = name.lower()
    for k, v in data.items():
        if isinstance(k, str) and k.lower() == lowered:
            return v
    return None


def _port(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise CNIError(ERR_INVALID_CONFIG, f"field {field!r} must be a port number in 1..65535, got {value!r}")
    return value


def _chain_name(value: Any, field: str) -> str:
    """An iptables chain name: 1-28 characters of letters, digits, '-', '_', not starting with '-'."""
    if (not isinstance(value, str) or not 1 <= len(value) <= 28 or value.startswith("-")
            or not all(c.isascii() and (c.isalnum() or c in "-_") for c in value)):
        raise CNIError(ERR_INVALID_CONFIG, f"field {field!r} must be an iptables chain name "
                       f"(1-28 letters, digits, '-', '_'), got {value!r}")
    return value


def _conditions(value: Any, field: str) -> list[str]:
    """conditionsV4/V6: a list of iptables words (as the reference: one word per element), matches only."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        raise CNIError(ERR_INVALID_CONFIG, f"field {field!r} must be a list of strings, got {value!r}")
    for word in value:
        if not word or word in _TARGET_WORDS or any(c in word for c in "\0\n\r") or word.strip() != word:
            raise CNIError(ERR_INVALID_CONFIG, f"field {field!r}: {word!r} is not allowed in a match condition",
                           "conditions are iptables match words, e.g. [\"-s\", \"192.168.0.0/16\"]")
    return list(value)


def parse_mappings(value: Any) -> list[Mapping]:
    """runtimeConfig.portMappings -> Mappings; CNIError 7 naming the entry's field and value.

    Protocol defaults to tcp when absent (as runtimes send it: Kubernetes' default). Two entries asking for
    the same host port, protocol and an overlapping hostIP are refused.
    """
    if value is None:
        return []
    if not isinstance(value, list):
        raise CNIError(ERR_INVALID_CONFIG, f"field 'runtimeConfig.portMappings' must be a list, got {value!r}")
    out: list[Mapping] = []
    for i, entry in enumerate(value):
        where = f"runtimeConfig.portMappings[{i}]"
        if not isinstance(entry, dict):
            raise CNIError(ERR_INVALID_CONFIG, f"field {where!r} must be an object, got {entry!r}")
        host_port = _port(_key(entry, "hostPort"), f"{where}.hostPort")
        container_port = _port(_key(entry, "containerPort"), f"{where}.containerPort")
        protocol = _key(entry, "protocol")
        protocol = "tcp" if protocol is None or protocol == "" else protocol
        if not isinstance(protocol, str) or protocol.lower() not in PROTOCOLS:
            raise CNIError(ERR_INVALID_CONFIG, f"field '{where}.protocol' must be tcp, udp or sctp, got {protocol!r}")
        host_ip = _key(entry, "hostIP")
        if host_ip is None or host_ip == "":
            host_ip = ""
        else:
            try:
                addr = ipaddress.ip_address(host_ip) if isinstance(host_ip, str) else None
            except ValueError:
                addr = None
            if addr is None or isinstance(addr, ipaddress.IPv6Address) and addr.scope_id:  # iptables takes no %zone
                raise CNIError(ERR_INVALID_CONFIG, f"field '{where}.hostIP' must be an IP address, got {host_ip!r}")
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:  # IPv4, as Go's To4() reads it
                addr = addr.ipv4_mapped
            host_ip = "" if addr.is_unspecified else str(addr)
        m = Mapping(host_port, container_port, protocol.lower(), host_ip)
        for other in out:
            if overlaps(m, other.protocol, other.host_port, other.host_ip):
                raise CNIError(ERR_INVALID_CONFIG, f"field {where!r}: host port {m.describe()} is mapped twice",
                               f"also {other.describe()}")
        out.append(m)
    return out


def overlaps(m: Mapping, protocol: str, host_port: int, host_ip: str) -> bool:
    """Same protocol and port, and host addresses that can meet (either unspecified, or equal)."""
    return (m.protocol == protocol and m.host_port == host_port
            and (not m.host_ip or not host_ip or ipaddress.ip_address(m.host_ip) == ipaddress.ip_address(host_ip)))


def parse_config(req: Request) -> Config:
    """The request's portmap config -> Config; CNIError 7 naming the field and value for anything invalid."""
    cfg = req.config
    snat = _key(cfg, "snat")
    if snat is None:
        snat = True
    if not isinstance(snat, bool):
        raise CNIError(ERR_INVALID_CONFIG, f"field 'snat' must be true or false, got {snat!r}")
    bit = _key(cfg, "markMasqBit")
    external = _key(cfg, "externalSetMarkChain")
    if bit is not None and external is not None:
        raise CNIError(ERR_INVALID_CONFIG, "fields 'markMasqBit' and 'externalSetMarkChain' are mutually exclusive",
                       f"markMasqBit {bit!r}, externalSetMarkChain {external!r}")
    if bit is None:
        bit = 13
    if isinstance(bit, bool) or not isinstance(bit, int) or not 0 <= bit <= 31:
        raise CNIError(ERR_INVALID_CONFIG, f"field 'markMasqBit' must be an integer in 0..31, got {bit!r}")
    external = "" if external is None else _chain_name(external, "externalSetMarkChain")
    backend = _key(cfg, "backend")
    if backend in (None, ""):
        # As the reference: iptables, unless only nft is there.
        backend = "nftables" if not nft.installed("iptables") and nft.installed("nft") else "iptables"
    if backend not in ("iptables", "nftables"):
        raise CNIError(ERR_INVALID_CONFIG, f"field 'backend' must be \"iptables\" or \"nftables\", got {backend!r}")
    check = _nft_conditions if backend == "nftables" else _conditions
    conditions = {4: check(_key(cfg, "conditionsV4"), "conditionsV4"),
                  6: check(_key(cfg, "conditionsV6"), "conditionsV6")}
    return Config(snat, bit, external, conditions, parse_mappings(req.runtime_config("portMappings")), backend)


# Words of an nft expression that end a match or start another command; refused in nftables conditions, which
# become part of one nft transaction text (a `;` there would start a command of its own).
_NFT_VERDICTS = {"accept", "drop", "reject", "jump", "goto", "return", "continue", "queue", "dnat", "snat",
                 "masquerade", "redirect", "add", "delete", "insert", "flush", "table", "chain", "rule"}
_NFT_WORD = re.compile(r"^[A-Za-z0-9_.:/!=<>,-]+$")


def _nft_conditions(value: Any, field: str) -> list[str]:
    """conditionsV4/V6 for the nftables backend: nft match words (e.g. ["ip", "saddr", "!=", "10.0.0.0/8"])."""
    words = _conditions(value, field)
    for word in words:
        if not _NFT_WORD.match(word) or word.lower() in _NFT_VERDICTS:
            raise CNIError(ERR_INVALID_CONFIG, f"field {field!r}: {word!r} is not allowed in an nftables match "
                           "condition", "letters, digits and . : / ! = < > , - _ only; no verdicts or commands")
    return words


def dn_chain(network: str, container_id: str) -> str:
    """CNI-DN- + the first 21 hex digits of sha512(network name + container id), as the reference (28 chars)."""
    return common.chain_name(network, container_id, prefix="CNI-DN-", length=21)


def dnat_comment(network: str, container_id: str) -> str:
    return f'dnat name: "{network}" id: "{container_id}"'


def container_ips(req: Request, prev: dict[str, Any]) -> dict[int, ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """The first IPv4 and first IPv6 address of prevResult on CNI_IFNAME (as the reference picks them):
    an ips entry whose `interface` index names an interface called CNI_IFNAME with a sandbox, or one
    without an index. {4: ip_interface, 6: ...}."""
    interfaces = prev.get("interfaces") or []
    out: dict[int, Any] = {}
    for entry in prev.get("ips", []):
        index = entry.get("interface")
        if index is not None:
            if not isinstance(index, int) or not 0 <= index < len(interfaces):
                continue
            itf = interfaces[index]
            if itf.get("name") != req.ifname or not itf.get("sandbox"):
                continue
        iface = ipaddress.ip_interface(entry["address"])
        out.setdefault(iface.version, iface)
    return out


def rules_for(cfg: Config, chain: str, family: int, ip: Any) -> list[dict[str, Any]]:
    """The container chain's rules for one family: [{"note": key, "rule": [words after -A CHAIN]}].

    Per mapping, in order (reference, cni-notes 3.6 step 4): with snat the hairpin mark (source = the
    container's subnet), for IPv4 the localhost mark (source 127.0.0.1), then the DNAT. A hostIP of the
    other family skips the mapping.
    """
    out: list[dict[str, Any]] = []
    for m in cfg.mappings:
        if m.host_ip and m.host_ip_family() != family:
            continue
        match = ["-p", m.protocol, "--dport", str(m.host_port)]
        dest = ["-d", m.host_ip] if m.host_ip else []
        if cfg.snat:
            out.append({"note": "pm_hairpin", "port": m.describe(),
                        "rule": ["-s", str(ip.network), *dest, *match, "-j", cfg.setmark_target]})
            if family == 4:
                out.append({"note": "pm_localhost", "port": m.describe(),
                            "rule": ["-s", "127.0.0.1", *dest, *match, "-j", cfg.setmark_target]})
        to = f"{ip.ip}:{m.container_port}" if family == 4 else f"[{ip.ip}]:{m.container_port}"
        out.append({"note": "pm_dnat", "port": m.describe(), "to": to,
                    "rule": [*dest, *match, "-j", "DNAT", "--to-destination", to]})
    return out


def entry_rules(cfg: Config, chain: str, comment: str, family: int) -> list[list[str]]:
    """CNI-HOSTPORT-DNAT rules sending this container's host ports to its chain: one per protocol (sorted,
    as the reference) and per 15 ports (multiport's limit), with conditionsV4/V6 after the ports."""
    ports: dict[str, list[str]] = {}
    for m in cfg.mappings:
        lst = ports.setdefault(m.protocol, [])
        if str(m.host_port) not in lst:
            lst.append(str(m.host_port))
    out = []
    for protocol in sorted(ports):
        lst = ports[protocol]
        for i in range(0, len(lst), MULTIPORT_MAX):
            out.append(["-p", protocol, "-m", "comment", "--comment", comment, "-m", "multiport", "--dports",
                        ",".join(lst[i:i + MULTIPORT_MAX]), *cfg.conditions[family], "-j", chain])
    return out


_DNAT_COMMENT = re.compile(r'^dnat name: "(?P<name>[^"]*)" id: "(?P<id>[^"]*)"$')


def find_conflicts(cfg: Config, family: int, chain: str, dnat_lines: list[str]) -> list[str]:
    """Host ports of this request already forwarded to another container's chain in this family.

    Reads the entry rules of CNI-HOSTPORT-DNAT (protocol, ports, target chain, the comment naming network
    and container); for a candidate, the other chain's DNAT rules (their -d says which hostIP). Returns
    human-readable descriptions; [] when there is no conflict.
    """
    found: list[str] = []
    checked: dict[str, list[str]] = {}
    for line in dnat_lines:
        words = facts.iptables_words(line)
        if words[:2] != ["-A", DNAT_CHAIN] or "-j" not in words:
            continue
        target = words[words.index("-j") + 1]
        if target == chain or "-p" not in words or "--dports" not in words:
            continue
        protocol = words[words.index("-p") + 1]
        ports = set(words[words.index("--dports") + 1].split(","))
        who = _who(_after(words, "--comment"), target)
        for m in cfg.mappings:
            if m.protocol != protocol or str(m.host_port) not in ports:
                continue
            if target not in checked:
                checked[target] = facts.iptables_rules(family, "nat", target)
            for rule in checked[target]:
                r = facts.iptables_words(rule)
                if "DNAT" not in r or "--dport" not in r or "-p" not in r:
                    continue
                host_ip = r[r.index("-d") + 1].split("/")[0] if "-d" in r else ""
                if overlaps(m, r[r.index("-p") + 1], int(r[r.index("--dport") + 1]), host_ip):
                    text = f"{m.describe()} is forwarded to {who}"
                    if text not in found:
                        found.append(text)
                    break
    return found


def _who(comment: str, chain: str) -> str:
    """`dnat name: "NET" id: "CID"` -> 'container CID (network NET, chain C)'; the chain alone without one."""
    m = _DNAT_COMMENT.match(comment)
    return f"container {m['id']} (network {m['name']}, chain {chain})" if m else f"chain {chain}"


def route_localnet_plan(ip: Any, prev: dict[str, Any], dry_run: bool = False) -> dict[str, Any] | None:
    """route_localnet=1 on the host interface that routes to the container (the bridge, or ptp's veth), so
    that 127.0.0.1-sourced packets DNATed to the container may leave (cni-notes 3.6 step 6).

    The interface is what `ip route get` says when that is one of prevResult's host interfaces; else (nothing
    yet, e.g. in a --dry-run of a whole list before the veth exists, where the lookup finds the default route,
    or no route at all on a node without one) the first host interface of prevResult. None when it is already 1
    or no interface is found; also when the interface does not exist, except in a --dry-run (the list's earlier
    plugin has not made it yet: shown as 0).
    """
    host = [str(i.get("name", "")) for i in prev.get("interfaces") or [] if not i.get("sandbox") and i.get("name")]
    dev = ""
    try:
        routes = facts.ip_json(["ip"], "route", "get", str(ip.ip))
    except CNIError as err:  # the kernel has no route (unreachable, prohibit, blackhole): as the reference,
        if "RTNETLINK answers" not in err.details:  # not an error (a missing `ip` still is)
            raise
        routes = []
    for route in routes:
        dev = str(route.get("dev", ""))
        break
    if dev not in host:
        dev = host[0] if host else ""
    if not dev:
        return None
    # sysctl reads a dotted name's dots as slashes; an interface name with a dot (a VLAN) needs the slash form.
    key = f"net/ipv4/conf/{dev}/route_localnet" if "." in dev else f"net.ipv4.conf.{dev}.route_localnet"
    old = facts.sysctl(key) if "." not in dev else _proc_sysctl(key)
    if old is None and dry_run:
        old = "0"
    if old is None or old == "1":
        return None
    return {"dev": dev, "settings": [(key, 1)], "old": {key: old}}


def _proc_sysctl(key: str) -> str | None:
    try:
        with open("/proc/sys/" + key) as f:
            return f.read().strip()
    except OSError:
        return None


def shared_plan(cfg: Config, family: int) -> dict[str, Any]:
    """What the shared chains still lack in one family: each is created (and jumped to) only when missing."""
    def has(chain: str) -> list[str] | None:
        lines = facts.iptables_rules(family, "nat", chain)
        return lines if lines else None

    plan: dict[str, Any] = {"mark": cfg.mark}
    if cfg.snat and not cfg.external_chain:
        setmark = has(SETMARK_CHAIN)
        plan["setmark_chain"] = setmark is None
        plan["setmark_rule"] = setmark is None or not any(f'"{MARK_COMMENT}"' in x for x in setmark)
        masq = has(MASQ_CHAIN)
        plan["masq_chain"] = masq is None
        plan["masq_rule"] = masq is None or not any("-j MASQUERADE" in x for x in masq)
        post = facts.iptables_rules(family, "nat", "POSTROUTING")
        plan["masq_jump"] = not any(x.endswith(f"-j {MASQ_CHAIN}") for x in post)
    dnat = has(DNAT_CHAIN)
    plan["dnat_chain"] = dnat is None
    plan["dnat_lines"] = dnat or []
    plan["jumps"] = [c for c in ("PREROUTING", "OUTPUT")
                     if not any(x.endswith(f"-j {DNAT_CHAIN}") and "--dst-type LOCAL" in x
                                for x in facts.iptables_rules(family, "nat", c))]
    return plan


@contextmanager
def portmap_lock() -> Iterator[Callable[[], None]]:
    """Serialise cniplug-portmap ADDs on this node: the shared chains are created once, and two containers
    asking for one host port cannot both pass the conflict check. 11 past LOCK_TIMEOUT seconds."""
    try:
        rundir.ensure()
        fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise CNIError(ERR_INTERNAL, f"cannot open the portmap lock {LOCK_PATH}: {err}",
                       "cniplug-portmap runs as root") from None
    try:
        common.flock_with_timeout(fd, LOCK_TIMEOUT, "another cniplug-portmap holds the portmap lock")
        yield lambda: None
    finally:
        os.close(fd)


def _prev_or_error(req: Request) -> dict[str, Any]:
    prev = req.prev_result()
    if prev is None:
        raise CNIError(ERR_INVALID_CONFIG, "must be called as chained plugin: prevResult missing",
                       "put cniplug-portmap after cniplug-bridge or cniplug-ptp in a conflist")
    return prev


def add(req: Request) -> dict[str, Any] | str | None:
    """ADD: forward the host ports; the result is prevResult unchanged. A host port another container already
    has is an error (999) naming the port and that container, before anything changes."""
    cfg = parse_config(req)
    prev = _prev_or_error(req)
    ips = container_ips(req, prev)
    if cfg.backend == "nftables":
        return add_nft(req, cfg, prev, ips)
    if not cfg.mappings or not ips:
        text = common.perform(req, "portmap/add.sh.j2", chain="", families=[], localnet=None, snat=cfg.snat,
                              external=cfg.external_chain)
        return prev if text is None else text
    with common.maybe_lock(req, lambda _name: portmap_lock(), "portmap"):
        chain = dn_chain(req.name, req.container_id)
        comment = dnat_comment(req.name, req.container_id)
        families = []
        conflicts: list[str] = []
        for family in sorted(ips):
            if family == 6 and not facts.has_ipv6():
                continue
            ip = ips[family]
            shared = shared_plan(cfg, family)
            conflicts += [c for c in find_conflicts(cfg, family, chain, shared["dnat_lines"]) if c not in conflicts]
            if nft.installed("nft"):  # a node that switched backends: the nft tables' ports count too
                conflicts += [c for c in nft_conflicts(cfg, family, req.container_id, nft_rules(family))
                              if c not in conflicts]
            stale = [line for line in shared["dnat_lines"] if line.endswith(f"-j {chain}")]
            old = facts.iptables_rules(family, "nat", chain)  # an earlier ADD's: put back if this one fails
            families.append({
                "tool": TOOLS[family], "family": family, "shared": shared,
                "chain_exists": bool(old),
                "old_rules": [facts.iptables_words(x)[2:] for x in old if x.startswith(f"-A {chain} ")],
                "stale_entries": [facts.iptables_words(x)[2:] for x in stale],
                "rules": rules_for(cfg, chain, family, ip), "entries": entry_rules(cfg, chain, comment, family),
            })
        if conflicts:
            raise CNIError(ERR_INTERNAL, f"host port already mapped for another container: {'; '.join(conflicts)}",
                           f"container {req.container_id} on network {req.name} asked for "
                           f"{', '.join(m.describe() for m in cfg.mappings)}")
        localnet = route_localnet_plan(ips[4], prev, req.dry_run) if cfg.snat and 4 in ips else None
        text = common.perform(req, "portmap/add.sh.j2", chain=chain, families=families, localnet=localnet,
                              snat=cfg.snat, external=cfg.external_chain)
    if text is not None:
        return text
    return prev


def teardown(req: Request, network: str, container_id: str) -> list[dict[str, Any]]:
    """Per family where anything is left: the entry rules jumping to the container's chain, and whether the
    chain exists. Found from the kernel, so it works without prevResult, runtimeConfig or netns."""
    chain = dn_chain(network, container_id)
    out = []
    for family in (4, 6):
        if family == 6 and not facts.has_ipv6() or not nft.installed(TOOLS[family]):
            continue  # nothing can be there: DEL must not fail for it
        entries = [facts.iptables_words(x)[2:] for x in facts.iptables_rules(family, "nat", DNAT_CHAIN)
                   if x.startswith(f"-A {DNAT_CHAIN} ") and x.endswith(f"-j {chain}")]
        exists = bool(facts.iptables_rules(family, "nat", chain))
        if entries or exists:
            out.append({"tool": TOOLS[family], "chain": chain, "entries": entries, "exists": exists})
    return out


NFT_TABLE = "cni_hostport"
NFT_CHAINS = ("hostports", "hostip_hostports", "masquerading")
NFT_FAMILIES = {4: "ip", 6: "ip6"}


def nft_rules(family: int) -> list[dict[str, Any]]:
    """The rules of the reference's nft portmap table of one family (ip/ip6 cni_hostport), [] when absent."""
    return [item["rule"] for item in nft.table(NFT_FAMILIES[family], NFT_TABLE) if isinstance(item.get("rule"), dict)]


def nft_mapping(rule: dict[str, Any]) -> tuple[str, int, str] | None:
    """A hostports/hostip_hostports rule -> (protocol, host port, host address or ""); None for other rules."""
    protocol, port, host_ip = "", 0, ""
    for expr in rule.get("expr") or []:
        match = expr.get("match") if isinstance(expr, dict) else None
        if not isinstance(match, dict) or match.get("op", "==") != "==":
            continue
        left = match.get("left")
        payload = left.get("payload") if isinstance(left, dict) else None
        if not isinstance(payload, dict):
            continue
        if payload.get("field") == "dport" and isinstance(match.get("right"), int):
            protocol, port = str(payload.get("protocol")), match["right"]
        elif payload.get("field") == "daddr" and isinstance(match.get("right"), str):
            host_ip = match["right"]
    return (protocol, port, host_ip) if protocol and port else None


def nft_conflicts(cfg: Config, family: int, container_id: str, rules: list[dict[str, Any]]) -> list[str]:
    """Host ports of this request that the nft tables (the reference 1.6+ layout) forward to another container:
    rules of hostports/hostip_hostports whose comment is not this container id. Descriptions, [] if none."""
    found: list[str] = []
    for r in rules:
        have = nft_mapping(r) if r.get("chain") in NFT_CHAINS[:2] else None
        if have is None or r.get("comment") == container_id:
            continue
        for m in cfg.mappings:
            if overlaps(m, *have):
                desc = (f"{m.describe()} is forwarded to container {r.get('comment')} (nft table "
                        f"{NFT_FAMILIES[family]} {NFT_TABLE})")
                if desc not in found:
                    found.append(desc)
    return found


def add_nft(req: Request, cfg: Config, prev: dict[str, Any], ips: dict[int, Any]) -> dict[str, Any] | str:
    """ADD with the nftables backend (the reference 1.6+ layout, see templates/portmap/nft_add.sh.j2)."""
    with common.maybe_lock(req, lambda _name: portmap_lock(), "portmap"):
        families = []
        conflicts: list[str] = []
        for family in sorted(ips) if cfg.mappings else []:
            if family == 6 and not facts.has_ipv6():
                continue
            ip = ips[family]
            existing = nft_rules(family)
            stale = [{"chain": r["chain"], "handle": r["handle"]} for r in existing
                     if r.get("comment") == req.container_id and r.get("chain") in NFT_CHAINS]
            conflicts += [c for c in nft_conflicts(cfg, family, req.container_id, existing) if c not in conflicts]
            if nft.installed("iptables"):  # a node that switched backends: the iptables chains' ports count too
                dnat_lines = facts.iptables_rules(family, "nat", DNAT_CHAIN)
                chain = dn_chain(req.name, req.container_id)
                conflicts += [c for c in find_conflicts(cfg, family, chain, dnat_lines) if c not in conflicts]
            ipx = NFT_FAMILIES[family]
            dnat = []
            for m in cfg.mappings:
                if m.host_ip and m.host_ip_family() != family:
                    continue
                to = f"{ip.ip}:{m.container_port}" if family == 4 else f"[{ip.ip}]:{m.container_port}"
                match = f"{m.protocol} dport {m.host_port}"
                dnat.append({"chain": "hostip_hostports" if m.host_ip else "hostports", "to": to,
                             "match": f"{ipx} daddr {m.host_ip} {match}" if m.host_ip else match})
            families.append({"fam": ipx, "ipx": ipx, "ip": str(ip.ip), "stale": stale, "dnat": dnat,
                             "conditions": " ".join(cfg.conditions[family]),
                             "ports": ", ".join(m.describe() for m in cfg.mappings
                                                if not m.host_ip or m.host_ip_family() == family),
                             "masq": ([str(ip.ip)] + (["127.0.0.1"] if family == 4 else [])) if cfg.snat else []})
        if conflicts:
            raise CNIError(ERR_INTERNAL, f"host port already mapped for another container: {'; '.join(conflicts)}",
                           f"container {req.container_id} on network {req.name} asked for "
                           f"{', '.join(m.describe() for m in cfg.mappings)}")
        localnet = route_localnet_plan(ips[4], prev, req.dry_run) if cfg.snat and 4 in ips and families else None
        text = common.perform(req, "portmap/nft_add.sh.j2", families=families, localnet=localnet, snat=cfg.snat,
                              cid=req.container_id)
    return prev if text is None else text


def nft_teardown(container_id: str) -> list[dict[str, Any]]:
    """The nft rules (both families) commented with this container id in the reference's three chains."""
    if not nft.installed("nft"):
        return []
    out = []
    for family, fam in NFT_FAMILIES.items():
        if family == 6 and not facts.has_ipv6():
            continue
        out += [{"fam": fam, "chain": r["chain"], "handle": r["handle"]} for r in nft_rules(family)
                if r.get("comment") == container_id and r.get("chain") in NFT_CHAINS]
    return out


def delete(req: Request) -> str | None:
    """DEL: remove this container's entry rules and chain in both families (best effort, idempotent).
    Unlike the reference it does not need runtimeConfig.portMappings; the shared chains stay."""
    parse_config(req)
    if req.config.get("prevResult"):
        req.prev_result()
    return common.perform(req, "portmap/del.sh.j2", best_effort=True, chains=teardown(req, req.name, req.container_id),
                          nft=nft_teardown(req.container_id))


def check(req: Request) -> None:
    """CHECK: every DNAT of the config is in the container's chain and its entry rules are present; only the
    families the container has (the reference 1.1.1 demands IPv6 for an IPv4-only container, plugins #819)."""
    cfg = parse_config(req)
    prev = _prev_or_error(req)
    ips = container_ips(req, prev)
    if not cfg.mappings:
        return
    if cfg.backend == "nftables":
        check_nft(req, cfg, ips)
        return
    chain = dn_chain(req.name, req.container_id)
    for family, ip in sorted(ips.items()):
        if family == 6 and not facts.has_ipv6():
            continue
        lines = facts.iptables_rules(family, "nat", chain)
        if not lines:
            raise CNIError(ERR_INTERNAL, f"chain {chain} missing in {TOOLS[family]} nat")
        entries = [x for x in facts.iptables_rules(family, "nat", DNAT_CHAIN) if x.endswith(f"-j {chain}")]
        for m in cfg.mappings:
            if m.host_ip and m.host_ip_family() != family:
                continue
            to = f"{ip.ip}:{m.container_port}" if family == 4 else f"[{ip.ip}]:{m.container_port}"
            if not any(_is_dnat(x, m, to) for x in lines):
                raise CNIError(ERR_INTERNAL, f"DNAT {m.describe()} -> {to} missing in chain {chain}")
            if not any(_sends(x, m) for x in entries):
                raise CNIError(ERR_INTERNAL, f"no rule in {DNAT_CHAIN} sends {m.describe()} to {chain}")


def check_nft(req: Request, cfg: Config, ips: dict[int, Any]) -> None:
    """CHECK, nftables backend: a rule commented with the container id for every mapping of each family."""
    for family in sorted(ips):
        if family == 6 and not facts.has_ipv6():
            continue
        mine = [nft_mapping(r) for r in nft_rules(family)
                if r.get("comment") == req.container_id and r.get("chain") in NFT_CHAINS[:2]]
        for m in cfg.mappings:
            if m.host_ip and m.host_ip_family() != family:
                continue
            if not any(have and have[:2] == (m.protocol, m.host_port) and (have[2] or "") == m.host_ip
                       for have in mine):
                raise CNIError(ERR_INTERNAL, f"nft rule for {m.describe()} of container {req.container_id} missing "
                               f"in table {NFT_FAMILIES[family]} {NFT_TABLE}")


def _is_dnat(line: str, m: Mapping, to: str) -> bool:
    """Is this `iptables -S` line the DNAT rule of mapping m to `to`?"""
    w = facts.iptables_words(line)
    return ("DNAT" in w and _after(w, "-p") == m.protocol and _after(w, "--dport") == str(m.host_port)
            and _after(w, "--to-destination") == to and _after(w, "-d").split("/")[0] == m.host_ip)


def _sends(line: str, m: Mapping) -> bool:
    """Does this CNI-HOSTPORT-DNAT entry rule cover mapping m's protocol and host port?"""
    w = facts.iptables_words(line)
    return _after(w, "-p") == m.protocol and str(m.host_port) in _after(w, "--dports").split(",")


def _after(words: list[str], flag: str) -> str:
    return words[words.index(flag) + 1] if flag in words[:-1] else ""


def gc(req: Request) -> str | None:
    """GC: the chains of this network's attachments that are not in cni.dev/valid-attachments (found by the
    entry rules' comment `dnat name: "NET" id: "CID"`); without that key nothing is removed."""
    parse_config(req)
    valid = common._attachment_ids(req)  # noqa: SLF001 (the veth plugins' GC reads it the same way)
    stale: dict[str, dict[str, Any]] = {}
    if valid is not None:
        for family in (4, 6):
            if family == 6 and not facts.has_ipv6():
                continue
            for line in facts.iptables_rules(family, "nat", DNAT_CHAIN):
                words = facts.iptables_words(line)
                if words[:2] != ["-A", DNAT_CHAIN] or "--comment" not in words or words[-2] != "-j":
                    continue
                comment = words[words.index("--comment") + 1]
                prefix = f'dnat name: "{req.name}" id: "'
                if not comment.startswith(prefix) or not comment.endswith('"'):
                    continue
                cid = comment[len(prefix):-1]
                if cid in valid:
                    continue
                key = f"{family} {words[-1]}"
                entry = stale.setdefault(key, {"tool": TOOLS[family], "chain": words[-1], "entries": [],
                                               "exists": True})
                entry["entries"].append(words[2:])
    return common.perform(req, "portmap/del.sh.j2", best_effort=True, chains=list(stale.values()), gc=True,
                          network=req.name)


def status(req: Request) -> None:
    """STATUS: the backend's tools must be installed (50 otherwise): iptables and iptables-restore (and the
    ip6tables pair where IPv6 is on), or nft."""
    cfg = parse_config(req)

    tools: tuple[str, ...] = ("nft",) if cfg.backend == "nftables" else (
        ("iptables", "iptables-restore") + (("ip6tables", "ip6tables-restore") if facts.has_ipv6() else ()))
    common.require_commands(tools, "install iptables" if cfg.backend != "nftables" else "install nftables")


HANDLERS = {"ADD": add, "DEL": delete, "CHECK": check, "GC": gc, "STATUS": status}


ABOUT = "cniplug portmap plugin"


def main() -> None:
    skel.main(HANDLERS, ABOUT)
