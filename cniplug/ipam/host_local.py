"""host-local IPAM: config parsing and the allocator, over a store (see store.py for the disk layout).

Allocation follows the reference plugin (cni-notes section 5): one address per range set, round robin from
`last_reserved_ip.<N>`, each range's gateway skipped, requested IPs honoured, one (id, ifname) per set.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cniplug.ipam.store import DiskStore, IPAddress, MemoryStore, Owner, Store, release_targets, snapshot
from cniplug.skel import Request
from cniplug.spec import (
    CURRENT_VERSION,
    ERR_INTERNAL,
    ERR_INVALID_CONFIG,
    ERR_INVALID_ENV,
    ERR_NOT_AVAILABLE,
    CNIError,
)

log = logging.getLogger("cniplug")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
CNI_ARGS_KEYS = ("IP", "MAC", "GATEWAY")  # MAC/GATEWAY belong to the main plugin (bridge) or static
ROUTE_INT_KEYS = ("mtu", "advmss", "priority", "table", "scope")
CIDR_RE = re.compile(r"^[0-9A-Fa-f:.]+/[0-9]{1,3}$")
GC_KEYS = ("cni.dev/valid-attachments", "cni.dev/attachments")


def quote_value(value: Any) -> str:
    """A value as it appears in error messages: JSON-quoted."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _invalid(msg: str, details: str = "") -> CNIError:
    return CNIError(ERR_INVALID_CONFIG, msg, details)


# ---------------------------------------------------------------------------------------------- types


@dataclass(frozen=True)
class Range:
    subnet: IPNetwork
    start: IPAddress
    end: IPAddress
    gateway: IPAddress

    def contains(self, ip: IPAddress) -> bool:
        return ip.version == self.start.version and int(self.start) <= int(ip) <= int(self.end)

    def capacity(self) -> int:
        """Allocatable addresses: start..end minus the gateway when it lies inside."""
        return int(self.end) - int(self.start) + 1 - (1 if self.contains(self.gateway) else 0)

    def overlaps(self, other: Range) -> bool:
        return (self.start.version == other.start.version
                and int(self.start) <= int(other.end) and int(other.start) <= int(self.end))

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


@dataclass(frozen=True)
class RangeSet:
    ranges: tuple[Range, ...]
    label: str  # where it was configured, e.g. "ipam.ranges[1]"

    @property
    def version(self) -> int:
        return self.ranges[0].start.version

    def range_for(self, ip: IPAddress) -> Range | None:
        return next((r for r in self.ranges if r.contains(ip)), None)

    def contains(self, ip: IPAddress) -> bool:
        return self.range_for(ip) is not None

    def overlaps(self, other: RangeSet) -> bool:
        return any(a.overlaps(b) for a in self.ranges for b in other.ranges)

    def capacity(self) -> int:
        return sum(r.capacity() for r in self.ranges)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.ranges)


@dataclass
class Config:
    network: str
    data_dir: str
    sets: list[RangeSet]
    routes: list[dict[str, Any]] = field(default_factory=list)
    dns: dict[str, Any] = field(default_factory=dict)
    requested: list[IPAddress] = field(default_factory=list)


@dataclass(frozen=True)
class Allocation:
    set_index: int
    ip: IPAddress
    range: Range

    def to_result(self) -> dict[str, str]:
        return {"address": f"{self.ip}/{self.range.subnet.prefixlen}", "gateway": str(self.range.gateway)}


# ---------------------------------------------------------------------------------------------- parsing


def expect_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _invalid(f"{where} must be a string, got {quote_value(value)}")
    return value


def expect_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _invalid(f"{where} must be a list, got {quote_value(value)}")
    return value


def expect_obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(f"{where} must be an object, got {quote_value(value)}")
    return value


def parse_ip(value: Any, where: str) -> IPAddress:
    text = expect_str(value, where)
    try:
        if "%" in text:
            raise ValueError("zone ids are not allowed")
        return ipaddress.ip_address(text)
    except ValueError:
        raise _invalid(f"{where} {quote_value(text)} is not a valid IP address") from None


def parse_subnet(value: Any, where: str) -> IPNetwork:
    text = expect_str(value, where)
    if not CIDR_RE.match(text):
        raise _invalid(f"{where} {quote_value(text)} is not a valid CIDR")
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        raise _invalid(f"{where} {quote_value(text)} is not a valid CIDR") from None
    net = iface.network
    if iface.ip != net.network_address:
        raise _invalid(f"{where} {quote_value(text)} has host bits set", f"the network address is {net}")
    if net.prefixlen > net.max_prefixlen - 2:
        raise _invalid(f"{where} {quote_value(text)} is too small to allocate from",
                       "IPv4 needs /30 or shorter, IPv6 /126 or shorter")
    return net


def _in_subnet(ip: IPAddress, net: IPNetwork, where: str, raw: str) -> None:
    if ip.version != net.version or ip not in net:
        raise _invalid(f"{where} {quote_value(raw)} is not in subnet {net}")


def _last_ip(net: IPNetwork) -> IPAddress:
    """Default rangeEnd: v4 broadcast - 1; v6 has no broadcast, the all-ones address is allocatable."""
    return net.broadcast_address - 1 if net.version == 4 else net.broadcast_address


def parse_range(value: Any, where: str) -> Range:
    obj = expect_obj(value, where)
    if "subnet" not in obj:
        raise _invalid(f"{where}.subnet is required")
    net = parse_subnet(obj["subnet"], f"{where}.subnet")
    first = net.network_address + 1
    addrs: dict[str, IPAddress] = {}
    for key in ("rangeStart", "rangeEnd", "gateway"):
        if obj.get(key) is not None and obj.get(key) != "":
            addrs[key] = parse_ip(obj[key], f"{where}.{key}")
            _in_subnet(addrs[key], net, f"{where}.{key}", obj[key])
    start = addrs.get("rangeStart", first)
    end = addrs.get("rangeEnd", _last_ip(net))
    # Stricter than the reference: never hand out the network (or v4 broadcast) address.
    if start == net.network_address:
        raise _invalid(f"{where}.rangeStart {quote_value(obj['rangeStart'])} is the network address of {net}")
    if net.version == 4 and end == net.broadcast_address:
        raise _invalid(f"{where}.rangeEnd {quote_value(obj['rangeEnd'])} is the broadcast address of {net}")
    if int(start) > int(end):
        raise _invalid(f"{where}.rangeStart {quote_value(str(start))} is after"
                       f" {where}.rangeEnd {quote_value(str(end))}")
    return Range(subnet=net, start=start, end=end, gateway=addrs.get("gateway", first))


def parse_range_set(value: Any, where: str) -> RangeSet:
    items = expect_list(value, where)
    if not items:
        raise _invalid(f"{where} is an empty range set")
    ranges = tuple(parse_range(item, f"{where}[{i}]") for i, item in enumerate(items))
    for i, r in enumerate(ranges):
        if r.start.version != ranges[0].start.version:
            raise _invalid(f"{where}[{i}].subnet {quote_value(str(r.subnet))} mixes address families in one range set",
                           "put IPv4 and IPv6 ranges in separate range sets")
        for j in range(i):
            if r.overlaps(ranges[j]):
                raise _invalid(f"{where}[{i}] {quote_value(str(r))} overlaps with"
                               f" {where}[{j}] {quote_value(str(ranges[j]))}")
    return RangeSet(ranges=ranges, label=where)


def parse_range_sets(req: Request, ipam: dict[str, Any]) -> list[RangeSet]:
    """runtimeConfig.ipRanges, then the legacy top-level range, then ipam.ranges (reference order)."""
    sets: list[RangeSet] = []
    runtime = req.runtime_config("ipRanges")
    if runtime is not None:
        for i, item in enumerate(expect_list(runtime, "runtimeConfig.ipRanges")):
            sets.append(parse_range_set(item, f"runtimeConfig.ipRanges[{i}]"))
    if ipam.get("subnet") not in (None, ""):
        legacy = parse_range(ipam, "ipam")
        sets.append(RangeSet(ranges=(legacy,), label="ipam"))
    if ipam.get("ranges") is not None:
        for i, item in enumerate(expect_list(ipam["ranges"], "ipam.ranges")):
            sets.append(parse_range_set(item, f"ipam.ranges[{i}]"))
    if not sets:
        raise _invalid("no IP ranges specified", "set ipam.ranges (or ipam.subnet)")
    for i, s in enumerate(sets):
        for j in range(i):
            if s.overlaps(sets[j]):
                raise _invalid(f"range set {j} ({sets[j].label}) overlaps with {i} ({s.label})",
                               f"{sets[j]} and {s}")
    return sets


def parse_routes(value: Any, where: str = "ipam.routes") -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = []
    for i, item in enumerate(expect_list(value, where)):
        obj = expect_obj(item, f"{where}[{i}]")
        dst_raw = expect_str(obj.get("dst"), f"{where}[{i}].dst")
        try:
            dst = ipaddress.ip_network(dst_raw, strict=False) if CIDR_RE.match(dst_raw) else None
        except ValueError:
            dst = None
        if dst is None:
            raise _invalid(f"{where}[{i}].dst {quote_value(dst_raw)} is not a valid CIDR")
        route: dict[str, Any] = {"dst": str(dst)}
        if obj.get("gw") not in (None, ""):
            gw = parse_ip(obj["gw"], f"{where}[{i}].gw")
            if gw.version != dst.version:
                raise _invalid(f"{where}[{i}].gw {quote_value(obj['gw'])} is not the same address family as dst {dst}")
            route["gw"] = str(gw)
        for key in ROUTE_INT_KEYS:
            if key in obj:
                if not isinstance(obj[key], int) or isinstance(obj[key], bool) or obj[key] < 0:
                    raise _invalid(f"{where}[{i}].{key} must be a non-negative integer, got {quote_value(obj[key])}")
                route[key] = obj[key]
        routes.append(route)
    return routes


def parse_resolv_conf(path: str) -> dict[str, Any]:
    """nameserver/domain/search/options from a resolv.conf-style file; '#' and ';' start comments."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise _invalid(f"ipam.resolvConf {quote_value(path)} cannot be read", str(err)) from None
    dns: dict[str, Any] = {}
    for line in lines:
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        words = line.split()
        if len(words) < 2:
            continue
        key, rest = words[0], words[1:]
        if key == "nameserver":
            dns.setdefault("nameservers", []).append(rest[0])
        elif key == "domain":
            dns["domain"] = rest[0]
        elif key in ("search", "options"):
            dns.setdefault(key, []).extend(rest)
    return dns


def _parse_requested_ip(text: str, where: str, code: int) -> IPAddress:
    """A requested IP, plain or CIDR (the prefix is ignored, as in the reference ip.IP type)."""
    address = text.split("/", 1)[0] if "/" in text else text
    try:
        if "%" in address or ("/" in text and not CIDR_RE.match(text)):
            raise ValueError(text)
        return ipaddress.ip_address(address)
    except ValueError:
        raise CNIError(code, f"{where} {quote_value(text)} is not a valid IP address") from None


def parse_requested(req: Request) -> list[IPAddress]:
    """CNI_ARGS IP=, then args.cni.ips, then runtimeConfig.ips; all combined, duplicates dropped."""
    found: list[IPAddress] = []
    args = req.known_args(CNI_ARGS_KEYS)
    if args.get("IP"):
        found.append(_parse_requested_ip(args["IP"], "CNI_ARGS IP", ERR_INVALID_ENV))
    cfg_args = req.config.get("args")
    if isinstance(cfg_args, dict) and isinstance(cfg_args.get("cni"), dict) and "ips" in cfg_args["cni"]:
        for i, item in enumerate(expect_list(cfg_args["cni"]["ips"], "args.cni.ips")):
            found.append(_parse_requested_ip(expect_str(item, f"args.cni.ips[{i}]"), f"args.cni.ips[{i}]",
                                             ERR_INVALID_CONFIG))
    runtime = req.runtime_config("ips")
    if runtime is not None:
        for i, item in enumerate(expect_list(runtime, "runtimeConfig.ips")):
            found.append(_parse_requested_ip(expect_str(item, f"runtimeConfig.ips[{i}]"), f"runtimeConfig.ips[{i}]",
                                             ERR_INVALID_CONFIG))
    return list(dict.fromkeys(found))


def _check_path(value: Any, where: str) -> str:
    text = expect_str(value, where)
    if not text or any(ord(c) < 0x20 for c in text):
        raise _invalid(f"{where} {quote_value(text)} is not a usable path", "empty or contains control characters")
    return text


def parse_config(req: Request) -> Config:
    ipam = req.config.get("ipam")
    if ipam is None:
        raise _invalid("IPAM config missing 'ipam' key")
    ipam = expect_obj(ipam, "ipam")
    data_dir = DEFAULT_DATA_DIR
    if ipam.get("dataDir") not in (None, ""):
        data_dir = _check_path(ipam["dataDir"], "ipam.dataDir")
    cfg = Config(network=req.name, data_dir=data_dir, sets=parse_range_sets(req, ipam))
    if ipam.get("routes") is not None:
        cfg.routes = parse_routes(ipam["routes"])
    if ipam.get("resolvConf") not in (None, ""):
        cfg.dns = parse_resolv_conf(_check_path(ipam["resolvConf"], "ipam.resolvConf"))
    cfg.requested = parse_requested(req)
    return cfg


# ---------------------------------------------------------------------------------------------- allocator


def _span(r: Range, lo: int, hi: int) -> Iterator[tuple[IPAddress, Range]]:
    """Addresses lo..hi (ints, inclusive) of range r, without its gateway. Lazy: v6 ranges can be huge."""
    gateway = int(r.gateway)
    for value in range(lo, hi + 1):
        if value != gateway:
            yield (ipaddress.IPv4Address(value) if r.start.version == 4 else ipaddress.IPv6Address(value)), r


def candidates(rs: RangeSet, last: IPAddress | None) -> Iterator[tuple[IPAddress, Range]]:
    """Every address of the set once, in the reference's round-robin order.

    Start right after `last` when it lies in the set (ending with `last` itself), else at the first
    range's start; walk upwards, from one range's end to the next range's start, wrapping around.
    """
    ranges = rs.ranges
    k = 0
    first = int(ranges[0].start)
    if last is not None:
        for i, r in enumerate(ranges):
            if r.contains(last):
                k, first = i, int(last) + 1
                break
    yield from _span(ranges[k], first, int(ranges[k].end))
    for step in range(1, len(ranges)):
        r = ranges[(k + step) % len(ranges)]
        yield from _span(r, int(r.start), int(r.end))
    yield from _span(ranges[k], int(ranges[k].start), first - 1)


def _internal(msg: str) -> CNIError:
    return CNIError(ERR_INTERNAL, msg)


def allocate_one(rs: RangeSet, index: int, store: Store, container_id: str, ifname: str,
                 requested: IPAddress | None) -> Allocation:
    """One address from range set `index` (caller holds the store lock)."""
    if requested is not None:
        r = rs.range_for(requested)
        if r is None:
            raise _internal(f"{requested} not in range set {rs}")
        if requested == r.gateway:
            raise _internal(f"requested ip {requested} is subnet's gateway")
        if not store.reserve(requested, container_id, ifname, index):
            raise _internal(f"requested IP address {requested} is not available in range set {rs}")
        return Allocation(index, requested, r)
    for held in store.owned_by(container_id, ifname):
        if rs.contains(held):
            raise _internal(f"{held} has been allocated to {container_id}, duplicate allocation is not allowed")
    for ip, r in candidates(rs, store.last_reserved(index)):
        if store.reserve(ip, container_id, ifname, index):
            return Allocation(index, ip, r)
    raise _internal(f"no IP addresses available in range set: {rs}")


def allocate(cfg: Config, store: Store, container_id: str, ifname: str) -> list[Allocation]:
    """One address per range set; on any failure the addresses reserved by this call are released."""
    pending = list(cfg.requested)
    done: list[Allocation] = []
    try:
        for index, rs in enumerate(cfg.sets):
            wanted = next((ip for ip in pending if rs.contains(ip)), None)
            if wanted is not None:
                pending.remove(wanted)
            try:
                done.append(allocate_one(rs, index, store, container_id, ifname, wanted))
            except CNIError as err:
                raise CNIError(err.code, f"failed to allocate for range {index}: {err.msg}", err.details) from None
        if pending:
            raise _internal("failed to allocate all requested IPs: " + " ".join(str(ip) for ip in pending))
    except BaseException:
        for alloc in done:
            store.release(alloc.ip)
        raise
    return done


def build_result(cfg: Config, allocs: list[Allocation]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "cniVersion": CURRENT_VERSION,
        "ips": [a.to_result() for a in allocs],
        "routes": [dict(r) for r in cfg.routes],
    }
    if cfg.dns:
        result["dns"] = dict(cfg.dns)
    return result


# ---------------------------------------------------------------------------------------------- verbs


def _store(cfg: Config, store: Store | None) -> Store:
    return store if store is not None else DiskStore(cfg.data_dir, cfg.network)


def plan(req: Request, cfg: Config, store: Store) -> list[Allocation]:
    """What ADD would reserve, computed on an in-memory copy of the store (nothing written)."""
    return allocate(cfg, snapshot(store, len(cfg.sets)), req.container_id, req.ifname)


def add(req: Request, store: Store | None = None) -> dict[str, Any]:
    cfg = parse_config(req)
    st = _store(cfg, store)
    if req.dry_run:
        return build_result(cfg, plan(req, cfg, st))
    with st.lock():
        allocs = allocate(cfg, st, req.container_id, req.ifname)
    return build_result(cfg, allocs)


def delete(req: Request, store: Store | None = None) -> None:
    """Release everything (id, ifname) holds; unknown ids and a missing store are success.

    A store on a read-only filesystem is success too, with a warning: DEL must not fail (spec: DEL
    "should not return an error" for what it cannot clean up), and the address is freed by a later GC
    once the store is writable, since this container is no longer among the valid attachments.
    """
    cfg = parse_config(req)
    st = _store(cfg, store)
    if req.dry_run or not st.exists():
        return
    if isinstance(st, DiskStore) and st.read_only():
        held = st.owned_by(req.container_id, req.ifname)
        if held:
            log.warning("host-local: store %s is read-only: %s stays reserved for %s until a GC frees it",
                        st.dir, ", ".join(map(str, held)), req.container_id)
        return
    with st.lock():
        st.release_by_owner(req.container_id, req.ifname)


def check(req: Request, store: Store | None = None) -> None:
    cfg = parse_config(req)
    st = _store(cfg, store)
    found = False
    if st.exists():
        with st.lock():
            found = bool(st.owned_by(req.container_id, req.ifname))
    if not found:
        raise _internal(f"host-local: failed to find address added by container {req.container_id}")


def valid_attachments(config: dict[str, Any]) -> list[Owner] | None:
    """The GC key's (containerID, ifname) pairs; None when the key is absent (= free nothing)."""
    key = next((k for k in GC_KEYS if k in config), None)
    if key is None:
        return None
    value = config[key]
    if value is None:
        return []
    out: list[Owner] = []
    for i, item in enumerate(expect_list(value, key)):
        obj = expect_obj(item, f"{key}[{i}]")
        out.append((expect_str(obj.get("containerID"), f"{key}[{i}].containerID"),
                    expect_str(obj.get("ifname"), f"{key}[{i}].ifname")))
    return out


def gc_targets(reservations: dict[IPAddress, Owner], valid: list[Owner]) -> list[IPAddress]:
    """Reservations not held by a valid attachment; a legacy id-only file is valid if its id appears at all."""
    pairs = set(valid)
    ids = {cid for cid, _ in valid}
    stale = [ip for ip, (cid, ifname) in reservations.items()
             if not ((cid, ifname) in pairs or (ifname == "" and cid in ids))]
    return sorted(stale, key=lambda ip: (ip.version, ip))


def gc(req: Request, store: Store | None = None) -> None:
    cfg = parse_config(req)
    valid = valid_attachments(req.config)
    st = _store(cfg, store)
    if valid is None or req.dry_run or not st.exists():
        return
    errors: list[str] = []
    with st.lock():
        for ip in gc_targets(st.all_reservations(), valid):
            try:
                st.release(ip)
            except CNIError as err:  # keep going, report at the end
                errors.append(f"{ip}: {err.msg} {err.details}".strip())
    if errors:
        raise _internal("host-local GC could not release: " + "; ".join(errors))


def status(req: Request, store: Store | None = None) -> None:
    """CNI error 50 when a range set has no free address (counted, never enumerated)."""
    cfg = parse_config(req)
    reservations = _store(cfg, store).all_reservations()
    for index, rs in enumerate(cfg.sets):
        used = 0
        for ip in reservations:
            r = rs.range_for(ip)
            if r is not None and ip != r.gateway:
                used += 1
        if used >= rs.capacity():
            raise CNIError(ERR_NOT_AVAILABLE, f"no IP addresses available in range set {index}: {rs}",
                           f"{used} of {rs.capacity()} addresses reserved")


# ---------------------------------------------------------------------------------------------- dry run


def _say(req: Request, key: str, **fields: object) -> str:
    """One explanation line of the dry-run script, in the request's language."""
    from cniplug import i18n

    return i18n.say(key, req.lang, **fields)


def _script_head(req: Request, cfg: Config, st: DiskStore) -> list[str]:
    who = (_say(req, "hl_who", cid=shlex.quote(req.container_id), ifname=shlex.quote(req.ifname))[2:]
           if req.container_id else "")
    return [
        "#!/bin/bash",
        "set -e",
        _say(req, "hl_head", verb=req.command, net=shlex.quote(cfg.network), who=who),
        _say(req, "hl_store", dir=shlex.quote(st.dir)),
        _say(req, "hl_same"),
    ]


def _lock_lines(req: Request, st: DiskStore) -> list[str]:
    return [
        _say(req, "hl_lock"),
        f"exec 9>{shlex.quote(st.lock_path())}",
        "flock 9",
    ]


def _add_script(req: Request, cfg: Config, st: DiskStore) -> list[str]:
    allocs = plan(req, cfg, st)
    lines = [
        "umask 022",
        _say(req, "hl_mkdir"),
        f"mkdir -p -m 0755 {shlex.quote(st.dir)}",
        *_lock_lines(req, st),
        _say(req, "hl_noclobber"),
        "set -o noclobber",
    ]
    for a in allocs:
        rs = cfg.sets[a.set_index]
        lines += [
            _say(req, "hl_reserve", set=a.set_index, rs=rs, ip=a.ip, addr=a.to_result()["address"],
                 gw=a.range.gateway),
            f"printf '%s\\r\\n%s' {shlex.quote(req.container_id.strip())} {shlex.quote(req.ifname)}"
            f" > {shlex.quote(st.ip_path(a.ip))}",
            _say(req, "hl_cursor", set=a.set_index, ip=a.ip),
            f"printf '%s' {shlex.quote(str(a.ip))} >| {shlex.quote(st.last_reserved_path(a.set_index))}",
        ]
    lines.append(_say(req, "hl_result", json=json.dumps(build_result(cfg, allocs), sort_keys=True)))
    return lines


def _release_script(req: Request, st: DiskStore, ips: list[IPAddress], why_key: str) -> list[str]:
    why = _say(req, why_key)[2:]
    if not st.exists():
        return [_say(req, "hl_no_store", dir=shlex.quote(st.dir))]
    if not ips:
        return [_say(req, "hl_nothing", why=why)]
    return [*_lock_lines(req, st), _say(req, "hl_release", why=why)] + [
        f"rm -f -- {shlex.quote(st.ip_path(ip))}" for ip in ips]


def dry_run_script(req: Request) -> str:
    """The bash script doing what this request would do to the on-disk store (ADD, DEL, GC), its
    explanations in req.lang (en, zh)."""
    cfg = parse_config(req)
    st = DiskStore(cfg.data_dir, cfg.network)
    lines = _script_head(req, cfg, st)
    if req.command == "ADD":
        lines += _add_script(req, cfg, st)
    elif req.command == "DEL":
        targets = release_targets(st.all_reservations(), req.container_id, req.ifname)
        lines += _release_script(req, st, targets, "hl_why_del")
    elif req.command == "GC":
        valid = valid_attachments(req.config)
        if valid is None:
            lines.append(_say(req, "hl_no_gc_key"))
        else:
            targets = gc_targets(st.all_reservations(), valid)
            lines += _release_script(req, st, targets, "hl_why_gc")
    else:
        lines.append(_say(req, "hl_read_only", verb=req.command))
    return "\n".join(lines) + "\n"


__all__ = [
    "Allocation", "Config", "MemoryStore", "Range", "RangeSet", "add", "allocate", "candidates", "check",
    "delete", "dry_run_script", "gc", "parse_config", "status",
]
