"""cniplug-bandwidth: rate-limit a container's traffic with tc, chained after cniplug-bridge or cniplug-ptp.

Config keys and behaviour follow the reference bandwidth plugin 1.1.1 (cni-notes 3.8 and 4.3), checked by
running /usr/lib/cni/bandwidth on this machine:

* `ingressRate`, `ingressBurst` (traffic into the container), `egressRate`, `egressBurst` (out of it), in
  bits per second and bits, at the top level of the config or, when none of the four keys is there, in
  `runtimeConfig.bandwidth` (the `bandwidth` capability). The reference reads the capability only then: a
  config with any top-level key ignores runtimeConfig (observed). Keys match case-insensitively, as Go's
  encoding/json matches them.
* Into the container: a tbf qdisc (root, handle 1:) on the host end of the veth. Out of the container: an
  ifb link named `bwp` + the first 12 hex digits of SHA-512(network name + container id), MTU of the host
  veth, txqueuelen 0, with a root tbf; an ingress qdisc (ffff:) on the host veth whose u32 match-all filter
  redirects every packet to the ifb. tbf parameters as the reference computes them: rate/8 bytes per
  second, burst/8 bytes, latency 25 ms (limit = rate * 25 ms + burst).
* The host veth is the peer of CNI_IFNAME that prevResult lists without a sandbox.

Differences from the reference, on purpose: config errors are code 7 naming the field and value (the
reference answers 999); DEL also removes the qdiscs on the host veth (the reference leaves them, they die
with the veth); the ifb carries the alias `cniplug-bandwidth:<network>:<container id>` so that GC can tell
this network's ifbs apart; the filter has one mirred action (the reference's has a second one that never
runs); GC and STATUS are implemented (1.1.1 has neither); a config the reference turns into a kernel error
(a rate under 8 bit/s, a limit over 4 GiB) is refused up front, and a burst the bucket cannot hold
(burst/rate over 274 s, which the reference lets overflow) is capped at the largest one, saying so in the
script. CHECK compares the tbf's rate exactly and its burst and latency within tc's rounding (close_to).
Measured on this machine: the same config gives the same qdiscs, filter and ifb through either plugin
(tests/integration/test_bandwidth.py), and 3.8 Mbit/s through a 4 Mbit/s shaped link.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from cniplug import facts, skel
from cniplug.plugins import common
from cniplug.skel import Request
from cniplug.spec import ERR_INTERNAL, ERR_INVALID_CONFIG, CNIError

KEYS = ("ingressRate", "ingressBurst", "egressRate", "egressBurst")
IFB_PREFIX = "bwp"
ALIAS_PREFIX = "cniplug-bandwidth"
LATENCY_US = 25_000  # the reference's tbf latency, 25 ms
UINT32 = 2**32
UINT64 = 2**64
# The kernel's tbf keeps its bucket in psched ticks of 64 ns (PSCHED_SHIFT 6, /proc/net/psched 000003e8
# 00000040): tc and the reference turn microseconds into ticks with this factor, into a 32-bit field.
TICKS_PER_US = 1000 / 64


@dataclass(frozen=True)
class Tbf:
    """One direction's token bucket, in the units tc and the kernel take: bytes per second and bytes."""

    rate: int  # bytes per second (the config's bit/s divided by 8, as the reference)
    burst: int  # bytes (the config's bits divided by 8)
    asked: int = 0  # bits: the burst the config asked for, when more than the bucket holds (burst is capped)

    @property
    def tc_rate(self) -> str:
        return f"{self.rate}bps"  # tc's `bps` is bytes per second

    @property
    def limit(self) -> int:
        """Queue limit in bytes: rate * latency + burst (what tc and the reference compute)."""
        return int(self.rate * LATENCY_US / 1_000_000) + self.burst


@dataclass(frozen=True)
class Limits:
    ingress: Tbf | None
    egress: Tbf | None
    source: str  # where they came from: "" (top level) or "runtimeConfig.bandwidth."

    @property
    def empty(self) -> bool:
        return self.ingress is None and self.egress is None


def ifb_name(network: str, container_id: str) -> str:
    """The egress ifb's name, as the reference names it: 'bwp' + SHA-512(network + container id)[:12]."""
    return IFB_PREFIX + hashlib.sha512((network + container_id).encode()).hexdigest()[:12]


def ifb_alias(network: str, container_id: str) -> str:
    """The ifb's alias (IFLA_IFALIAS, at most 255 bytes) naming its attachment, "" if it would not fit.
    Network names and container ids have no ':' (skel.NAME_RE), so the alias splits back unambiguously."""
    alias = f"{ALIAS_PREFIX}:{network}:{container_id}"
    return alias if len(alias.encode()) <= 255 else ""


def fold_keys(obj: dict[str, Any], keys: tuple[str, ...], where: str) -> dict[str, Any]:
    """The entries of `obj` whose key equals one of `keys` ignoring case (Go's encoding/json matching),
    under the canonical spelling. Raises CNIError 7 when two spellings of one key are present."""
    found: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    canonical = {k.lower(): k for k in keys}
    for key, value in obj.items():
        name = canonical.get(key.lower())
        if name is None:
            continue
        if name in found:
            raise CNIError(ERR_INVALID_CONFIG, f"field {where}{key!r} given twice: {value!r}, and "
                           f"{found[name]!r} as {spelled[name]!r}",
                           "keys are matched ignoring case")
        found[name], spelled[name] = value, key
    return found


def _uint(values: dict[str, Any], key: str, where: str) -> int:
    value = values.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < UINT64:
        raise CNIError(ERR_INVALID_CONFIG, f"field {where}{key!r} must be an integer in 0..{UINT64 - 1}, "
                       f"got {value!r}", "rates in bits per second, bursts in bits")
    return value


def direction(values: dict[str, Any], rate_key: str, burst_key: str, where: str, strict: bool = True) -> Tbf | None:
    """One direction's rate (bit/s) and burst (bits) -> Tbf, None when both are 0 (not shaped).

    Raises CNIError 7 naming the field and value, as the reference refuses them (but with code 7): a rate
    without a burst or the other way round; a burst of 4 GiB (2^32 - 1 bytes) or more. Beyond it, what the
    reference lets through to a kernel error: a rate under 8 bit/s (0 bytes/s); a limit (rate * 25 ms + burst)
    over 2^32 - 1 bytes. A burst/rate over the 32-bit tick counter of the bucket (about 274 s), which the
    reference lets overflow silently, is capped at the largest bucket (largest_burst; Tbf.asked keeps what
    was asked): containerd sends a burst of 2^32 - 1 bits for a pod's bandwidth annotation. The checks after
    the 4 GiB one only when `strict` (not for DEL, which must remove what the reference's ADD made).
    """
    rate, burst = _uint(values, rate_key, where), _uint(values, burst_key, where)
    if rate == 0 and burst == 0:
        return None
    if burst == 0:
        raise CNIError(ERR_INVALID_CONFIG, f"field {where}{rate_key!r} is {rate} but {where}{burst_key!r} is not "
                       "set: if rate is set, burst must also be set")
    if rate == 0:
        raise CNIError(ERR_INVALID_CONFIG, f"field {where}{burst_key!r} is {burst} but {where}{rate_key!r} is not "
                       "set: if burst is set, rate must also be set")
    tbf = Tbf(rate=rate // 8, burst=burst // 8)
    if tbf.burst >= UINT32 - 1:
        raise CNIError(ERR_INVALID_CONFIG, f"field {where}{burst_key!r} is {burst}: burst cannot be more than 4GB",
                       f"at most {(UINT32 - 2) * 8 + 7} bits")
    if not strict:
        return tbf
    if tbf.rate == 0:
        raise CNIError(ERR_INVALID_CONFIG, f"field {where}{rate_key!r} is {rate}: under 8 bit/s, "
                       "0 bytes per second for tc")
    if tbf.burst == 0:
        raise CNIError(ERR_INVALID_CONFIG, f"field {where}{burst_key!r} is {burst}: under 8 bits, "
                       "a bucket of 0 bytes")
    largest = largest_burst(tbf.rate)
    if tbf.burst > largest:
        # containerd (2^32 - 1 bits) and CRI-O (2^35 - 9 bits) send such bursts for a pod's bandwidth
        # annotation, meaning "as large as it gets". The reference hands the kernel an overflowed bucket;
        # we give it the largest one it holds, and the script says so.
        tbf = Tbf(rate=tbf.rate, burst=largest, asked=burst)
    if tbf.limit >= UINT32:
        raise CNIError(ERR_INVALID_CONFIG, f"field {where}{rate_key!r} is {rate}: rate * 25 ms + burst "
                       "overflows the tbf limit (4 GiB)")
    return tbf


def largest_burst(rate: int) -> int:
    """The largest bucket in bytes a tbf of `rate` bytes/s holds: its time, burst/rate, is kept in 64 ns ticks
    in 32 bits (about 274 s), and its queue limit, rate * 25 ms + burst, in 32 bits too."""
    ticks_us = math.floor((UINT32 - 1) / TICKS_PER_US) - 1  # the longest bucket, in whole microseconds
    by_time = ticks_us * rate // 1_000_000
    by_limit = UINT32 - 1 - int(rate * LATENCY_US / 1_000_000)
    return max(0, min(by_time, by_limit))


def parse_config(req: Request, strict: bool = True) -> Limits:
    """The request's shaping: top-level keys when any is present, else runtimeConfig.bandwidth (reference).
    Not `strict` (DEL): only what the reference refuses too (see direction)."""
    top = fold_keys(req.config, KEYS, "")
    where = ""
    if top:
        values = top
    else:
        capability = req.runtime_config("bandwidth")
        if capability is None:
            capability = {}
        if not isinstance(capability, dict):
            raise CNIError(ERR_INVALID_CONFIG, f"field 'runtimeConfig.bandwidth' must be an object, got {capability!r}")
        where = "runtimeConfig.bandwidth."
        values = fold_keys(capability, KEYS, where)
    return Limits(ingress=direction(values, "ingressRate", "ingressBurst", where, strict),
                  egress=direction(values, "egressRate", "egressBurst", where, strict), source=where)


def host_veth(req: Request, prev: dict[str, Any]) -> str:
    """The host end of CNI_IFNAME's veth: its peer (by ifindex), which prevResult must list without a
    sandbox (as the reference's getHostInterface). Raises CNIError 999 naming what was not found, 7 for a
    host interface name in prevResult that is not an interface name (checked before anything is looked up)."""
    listed = [str(itf.get("name", "")) for itf in prev.get("interfaces", []) if not itf.get("sandbox")]
    for i, name in enumerate(listed):
        # Each name is looked up under /sys/class/net: it must be an interface name, not a path.
        skel.check_ifname(name, f"prevResult host interface {i}")
    peer = facts.veth_peer_ifindex(facts.ns_ip(req.netns), req.ifname)
    if peer <= 0:
        raise CNIError(ERR_INTERNAL, f"container interface {req.ifname} has no veth peer", f"in {req.netns}")
    for name in listed:
        if facts.ifindex_of(name) == peer:
            return name
    raise CNIError(ERR_INTERNAL, f"no veth peer of container interface {req.ifname} (ifindex {peer}) found "
                   f"among the host interfaces of prevResult {listed}")


def dry_run_host_veth(req: Request, prev: dict[str, Any]) -> tuple[str, bool]:
    """--dry-run: (host veth, whether it is assumed). As ADD finds it when the container's veth exists; when
    it does not yet (`cniplug net --dry-run` of a whole list, where prevResult is the dry-run result of the
    plugin before), the host interface prevResult lists right before CNI_IFNAME's entry, where bridge and ptp
    put it. Raises the lookup's CNIError when prevResult has no such interface either."""
    try:
        return host_veth(req, prev), False
    except CNIError as err:
        if err.code != ERR_INTERNAL:
            raise
        interfaces = prev.get("interfaces", [])
        for i, itf in enumerate(interfaces):
            if i > 0 and itf.get("name") == req.ifname and itf.get("sandbox") and not interfaces[i - 1].get("sandbox"):
                return str(interfaces[i - 1].get("name", "")), True
        raise


def require_prev(req: Request) -> dict[str, Any]:
    prev = req.prev_result()
    if prev is None:
        raise CNIError(ERR_INVALID_CONFIG, "must be called as chained plugin: field 'prevResult' is missing",
                       "chain cniplug-bandwidth after cniplug-bridge or cniplug-ptp")
    return prev


def add(req: Request) -> dict[str, Any] | str | None:
    limits = parse_config(req)
    prev = require_prev(req)
    if limits.empty:
        return prev if not req.dry_run else None
    if not req.dry_run:
        facts.check_netns(req.netns)
    veth, assumed = (dry_run_host_veth(req, prev) if req.dry_run else (host_veth(req, prev), False))
    context: dict[str, Any] = {"veth": veth, "ingress": limits.ingress, "egress": None, "source": limits.source,
                               "assumed": assumed, "ifname": req.ifname}
    ifb = ifb_name(req.name, req.container_id)
    if limits.egress is not None:
        context["egress"] = limits.egress
        mtu = facts.link_mtu(veth)
        if mtu <= 0:  # a dry run of a whole list: the veth is not there yet; the container end has its MTU
            mine = [i for i in prev.get("interfaces", []) if i.get("name") == req.ifname and i.get("sandbox")]
            mtu = mine[0].get("mtu", 0) if mine else 0
            mtu = mtu if isinstance(mtu, int) and not isinstance(mtu, bool) and 68 <= mtu <= 65535 else 0
        context["ifb"] = {"name": ifb, "mtu": mtu, "alias": ifb_alias(req.name, req.container_id)}
    text = common.perform(req, "bandwidth/add.sh.j2", **context)
    if text is not None:
        # For `cniplug net --dry-run`: the result ADD would give, the next plugin's prevResult (no MAC yet).
        req.dry_result = {**prev, "interfaces": [*prev.get("interfaces", []), {"name": ifb}]} if limits.egress else prev
        return text
    result = dict(prev)
    if limits.egress is not None:
        result["interfaces"] = [*prev.get("interfaces", []), {"name": ifb, "mac": facts.mac_of(ifb)}]
    return result


def teardown(req: Request) -> dict[str, Any]:
    """What DEL removes, read from the kernel (prevResult not needed): the qdiscs bandwidth puts on the host
    end of CNI_IFNAME's veth (found through the namespace while it lives) and the ifb named from the
    container id."""
    veth = ""
    if facts.netns_alive(req.netns):
        peer = facts.veth_peer_ifindex(facts.ns_ip(req.netns), req.ifname)
        veth = facts.link_name(peer) if peer > 0 else ""
    root = ingress = False
    if veth:
        for q in facts.tc_json("qdisc", "show", "dev", veth):
            root = root or (q.get("root") is True and q.get("kind") == "tbf" and q.get("handle") == "1:")
            ingress = ingress or q.get("kind") == "ingress"
    ifb = ifb_name(req.name, req.container_id)
    return {"veth": veth, "root": root, "ingress": ingress, "ifb": ifb if facts.link_exists(ifb) else ""}


def delete(req: Request) -> str | None:
    parse_config(req, strict=False)
    return common.perform(req, "bandwidth/del.sh.j2", best_effort=True, **teardown(req))


def close_to(got: Any, want: Tbf) -> bool:
    """Does a tbf as `tc -j qdisc show` prints its options ({"rate": B/s, "burst": B, "lat": us}) carry `want`?

    The rate is exact. tc prints the burst and latency back from the kernel's bucket, kept in 64 ns ticks from
    a whole number of microseconds, so they come back rounded: 10000 bytes at 375000 B/s reads 9999. The
    reference rounds its bucket time once more (its latency reads 25001 us where tc's reads 25000, measured):
    accepted are a burst within 2 us of the rate (plus 2 bytes) and a latency within 2 us.
    """
    if not isinstance(got, dict):
        return False
    burst, lat = got.get("burst"), got.get("lat")
    return (got.get("rate") == want.rate and isinstance(burst, int) and isinstance(lat, int)
            and abs(burst - want.burst) <= want.rate * 2 / 1_000_000 + 2 and abs(lat - LATENCY_US) <= 2)


def check_tbf(dev: str, want: Tbf, what: str) -> None:
    """CHECK: the root qdisc of `dev` is a tbf with this rate, burst and 25 ms latency (CNIError 999 if not)."""
    roots = [q for q in facts.tc_json("qdisc", "show", "dev", dev) if q.get("root") is True]
    if not roots or roots[0].get("kind") != "tbf":
        raise CNIError(ERR_INTERNAL, f"{what}: no tbf qdisc at the root of {dev}",
                       f"found {[q.get('kind') for q in roots]}")
    options = roots[0].get("options", {})
    if not close_to(options, want):
        raise CNIError(ERR_INTERNAL, f"{what}: tbf on {dev} has rate {options.get('rate')} B/s, burst "
                       f"{options.get('burst')} B, latency {options.get('lat')} us; want {want.rate}, {want.burst}, "
                       f"{LATENCY_US}")


def check(req: Request) -> None:
    limits = parse_config(req)
    prev = require_prev(req)
    if limits.empty:
        return
    facts.check_netns(req.netns)
    veth = host_veth(req, prev)
    if limits.ingress is not None:
        check_tbf(veth, limits.ingress, "ingress")
    if limits.egress is not None:
        ifb = ifb_name(req.name, req.container_id)
        if not facts.link_exists(ifb):
            raise CNIError(ERR_INTERNAL, f"egress: ifb link {ifb} does not exist")
        check_tbf(ifb, limits.egress, "egress")
        targets = [a.get("to_dev") for f in facts.tc_json("filter", "show", "dev", veth, "parent", "ffff:")
                   for a in (f.get("options") or {}).get("actions", []) if a.get("kind") == "mirred"]
        if ifb not in targets:
            raise CNIError(ERR_INTERNAL, f"egress: no filter on {veth} redirects its traffic to {ifb}")


def gc(req: Request) -> str | None:
    """GC: delete the ifbs of this network's attachments that are not in cni.dev/valid-attachments.

    Ours carry the alias `cniplug-bandwidth:<network>:<id>`. An ifb the reference made (no alias) cannot be
    tied to a network: it is removed only when it is an orphan, no filter of any host link redirecting to it
    (its veth is gone). Without the valid-attachments key nothing is freed (cni-notes 1.5.6).
    """
    parse_config(req)
    valid = common._attachment_ids(req)
    if valid is None:
        return None
    ifbs = [link for link in facts.ip_json(["ip"], "-d", "link", "show", "type", "ifb")
            if str(link.get("ifname", "")).startswith(IFB_PREFIX) and len(link.get("ifname", "")) == 15]
    redirected: set[str] = set()
    if any(not link.get("ifalias") for link in ifbs):
        for q in facts.tc_json("qdisc", "show"):
            if q.get("kind") == "ingress" and q.get("dev"):
                for f in facts.tc_json("filter", "show", "dev", q["dev"], "parent", "ffff:"):
                    redirected.update(a.get("to_dev", "") for a in (f.get("options") or {}).get("actions", []))
    stale = []
    keep = {ifb_name(req.name, cid) for cid in valid}
    for link in ifbs:
        name = link["ifname"]
        alias = str(link.get("ifalias") or "")
        if alias:
            parts = alias.split(":", 2)
            if len(parts) == 3 and parts[0] == ALIAS_PREFIX and parts[1] == req.name and parts[2] not in valid:
                stale.append(name)
        elif name not in keep and name not in redirected:
            stale.append(name)
    return common.perform(req, "bandwidth/gc.sh.j2", best_effort=True, stale=stale)


def status(req: Request) -> None:
    """STATUS: the commands ADD runs must be installed (50 otherwise)."""
    parse_config(req)
    common.require_commands(("ip", "tc", "nsenter"), "install iproute2")


HANDLERS = {"ADD": add, "DEL": delete, "CHECK": check, "GC": gc, "STATUS": status}


ABOUT = "cniplug bandwidth plugin"


def main() -> None:
    skel.main(HANDLERS, ABOUT)
