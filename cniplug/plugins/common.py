"""Pieces every interface plugin shares: render + run (or print for --dry-run), names, MACs, MTU."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import re
import shlex
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from cniplug import render, script, skel
from cniplug.runner import Runner
from cniplug.skel import Request
from cniplug.spec import ERR_INTERNAL, ERR_INVALID_CONFIG, ERR_NOT_AVAILABLE, ERR_TRY_AGAIN_LATER, CNIError

log = logging.getLogger("cniplug")

# Tests swap this for a RecordingRunner.
RUNNER_FACTORY = Runner


def perform(req: Request, template: str, best_effort: bool = False, **context: Any) -> str | None:
    """Render the template; with --dry-run return the script text, else run it (rollback on failure)."""
    context.setdefault("lang", req.lang)
    body = render.render(template, **context)
    parsed = script.parse(body)
    parsed.header = script.header(req.lang)
    if req.dry_run:
        return parsed.text
    try:
        RUNNER_FACTORY().run(parsed, best_effort=best_effort)
    except CNIError:
        log.info("%s %s: the script failed and its completed steps were rolled back", req.command, req.container_id)
        skel.record_script(parsed.text, rolled_back=True)
        raise
    # With logFile set, the script that really ran (its veth names, MACs) is in the call's record (issue #11).
    skel.record_script(parsed.text)
    return None


def dry_run_file(lang: str, path: str, body: str, dir_mode: str, keep_existing: bool) -> str:
    """The step that writes `body` to `path` (mode 0600; its directory made with `dir_mode`) as the
    plugin does in Python after its script, for a --dry-run script: run by bash, the script then leaves
    the same files. `keep_existing`: an existing file is left as it is, else it is replaced atomically
    (a temporary name, then mv). One plain command (`sh -c` with the values as its arguments, quoted),
    explained in `lang`."""
    from cniplug import i18n

    q = shlex.quote
    if keep_existing:
        code = 'umask 077 && mkdir -p -m "$3" "${2%/*}" && { [ -e "$2" ] || printf %b "$1" > "$2"; }'
    else:
        code = 'umask 077 && mkdir -p -m "$3" "${2%/*}" && printf %b "$1" > "$2.tmp" && mv -f "$2.tmp" "$2"'
    escaped = body.replace("\\", "\\\\").replace("\n", "\\n")  # printf %b: one line in the script
    return (i18n.say("dry_run_file", lang, path=path) + "\n"
            + f"sh -c {q(code)} cniplug {q(escaped)} {q(path)} {q(dir_mode)}\n")


def host_veth_name() -> str:
    """Like the reference: 'veth' + 8 random hex chars (12 chars, under the 15-byte limit)."""
    return "veth" + os.urandom(4).hex()


IPV6_MIN_MTU = 1280  # below it the kernel takes IPv6 off a link, /proc/sys/net/ipv6/conf/DEV included


def first_other_host(address: str) -> str:
    """The first host address of ADDRESS's subnet that is not ADDRESS itself (the gateway a plugin picks when
    IPAM gave none), "" when there is none (a /32 or /128). `hosts()` is a list, not an iterator, for those."""
    iface = ipaddress.ip_interface(address)
    for host in iter(iface.network.hosts()):
        if host != iface.ip:
            return str(host)
    return ""


def conf_key(family: int, dev: str, name: str) -> str:
    """The sysctl key of a per-interface setting: `net.ipv4.conf.DEV.NAME`, or with slashes when DEV has a dot
    (a VLAN `eth0.100`), which sysctl would otherwise read as a separator."""
    parts = ("net", f"ipv{family}", "conf", dev, name)
    return "/".join(parts) if "." in dev else ".".join(parts)


def random_mac() -> str:
    """A random unicast, locally administered MAC."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def chain_name(network: str, container_id: str, prefix: str = "CNI-", length: int = 24) -> str:
    """Per-container chain name, the same as the reference: CNI- + sha512(name + id)[:24]."""
    return prefix + hashlib.sha512((network + container_id).encode()).hexdigest()[:length]


def masq_comment(network: str, container_id: str) -> str:
    return f'name: "{network}" id: "{container_id}"'


def get_bool(config: dict[str, Any], key: str, default: bool = False) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise CNIError(ERR_INVALID_CONFIG, f"field {key!r} must be true or false, got {value!r}")
    return value


def get_int(config: dict[str, Any], key: str, low: int, high: int, default: int = 0) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not (low <= value <= high or value == default):
        raise CNIError(ERR_INVALID_CONFIG, f"field {key!r} must be an integer in {low}..{high}, got {value!r}")
    return value


def get_mtu(config: dict[str, Any]) -> int:
    """config['mtu'] -> the MTU in bytes, 0 for the kernel default.

    Absent or 0 means unset, as in the reference plugins (their `mtu` is an int whose zero value is
    "not set", and config generators write 0). Anything else must be 68..65535, what Linux accepts;
    otherwise CNIError 7 naming the field and value.
    """
    value = config.get("mtu", 0)
    if value == 0 and not isinstance(value, bool):
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 68 <= value <= 65535:
        raise CNIError(ERR_INVALID_CONFIG, f"field 'mtu' must be an integer in 68..65535 (or 0 for unset), "
                       f"got {value!r}", "omit 'mtu' or set 0 for the kernel default")
    return value


def network_of(cidr: str) -> str:
    return str(ipaddress.ip_interface(cidr).network)


def host_cidr(cidr: str) -> str:
    """'10.1.1.2/24' -> '10.1.1.2/32' (what iptables -s matches and prints)."""
    addr = ipaddress.ip_interface(cidr).ip
    return f"{addr}/{addr.max_prefixlen}"


def check_mac(value: str, field: str) -> str:
    parts = value.split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts):
        raise CNIError(ERR_INVALID_CONFIG, f"invalid MAC address in {field}: {value!r}")
    if int(parts[0], 16) & 1:
        raise CNIError(ERR_INVALID_CONFIG, f"MAC address in {field} is multicast: {value!r}")
    if all(int(p, 16) == 0 for p in parts):  # the kernel refuses it for a link (EADDRNOTAVAIL)
        raise CNIError(ERR_INVALID_CONFIG, f"MAC address in {field} is all zeros: {value!r}")
    return value.lower()


# ---- shared by the interface plugins (bridge, ptp) -------------------------------------------------

def mac_from_request(req: Request) -> str:
    """Container MAC: runtimeConfig.mac > args.cni.mac > CNI_ARGS MAC= (as the reference bridge)."""
    args = req.config.get("args")
    cni_args = args.get("cni") if isinstance(args, dict) else None
    for value, field in (
        (req.runtime_config("mac"), "runtimeConfig.mac"),
        (cni_args.get("mac") if isinstance(cni_args, dict) else None, "args.cni.mac"),
        (req.known_args(("IP", "MAC", "GATEWAY")).get("MAC"), "CNI_ARGS MAC"),
    ):
        if value:
            if not isinstance(value, str):
                raise CNIError(ERR_INVALID_CONFIG, f"{field} must be a string, got {value!r}")
            return check_mac(value, field)
    return ""


def routes_with_gateways(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Routes as the container gets them: a route without `gw` goes via the first gateway of its family."""
    gateways: dict[int, str] = {}
    for ip in result.get("ips", []):
        if ip.get("gateway"):
            gateways.setdefault(ipaddress.ip_interface(ip["address"]).version, ip["gateway"])
    out = []
    for r in result.get("routes", []):
        try:
            family = ipaddress.ip_network(r["dst"], strict=False).version
        except (ValueError, TypeError):
            raise CNIError(ERR_INVALID_CONFIG, f"invalid route dst {r.get('dst')!r}") from None
        gw = r.get("gw") or gateways.get(family, "")
        route: dict[str, Any] = {"dst": str(ipaddress.ip_network(r["dst"], strict=False)), "gw": gw}
        if r.get("priority"):
            route["metric"] = r["priority"]
        if r.get("table"):
            route["table"] = r["table"]
        out.append(route)
    return out


def masq_plan(req: Request, ips: list[dict[str, Any]]) -> dict[str, Any]:
    """Context for the masq_add macro: one chain per container, rules per address and family."""
    families: dict[int, list[tuple[str, str]]] = {}
    for ip in ips:
        family = ipaddress.ip_interface(ip["address"]).version
        families.setdefault(family, []).append((network_of(ip["address"]), host_cidr(ip["address"])))
    return {"chain": chain_name(req.name, req.container_id), "comment": masq_comment(req.name, req.container_id),
            "families": families}


def masq_teardown(req: Request) -> list[dict[str, Any]]:
    """Probe iptables/ip6tables for this container's chain and the POSTROUTING rules jumping to it.

    Found from the kernel, not from the container's addresses, so DEL cleans up even when the
    namespace is gone (the reference leaks the chain then).
    """
    from cniplug import facts, nft

    chain = chain_name(req.name, req.container_id)
    out = []
    for family, tool in ((4, "iptables"), (6, "ip6tables")):
        if not nft.installed(tool):  # nothing can have been made with it (the nftables backend, issue #13)
            continue
        jumps = [facts.iptables_words(line)[2:] for line in facts.iptables_rules(family, "nat", "POSTROUTING")
                 if line.startswith("-A POSTROUTING ") and line.endswith(f"-j {chain}")]
        # A jump means the chain exists; only without one is the chain itself looked up.
        if jumps or f"-N {chain}" in facts.iptables_rules(family, "nat", chain):
            out.append({"tool": tool, "chain": chain, "jumps": jumps})
    return out


@contextmanager
def maybe_lock(req: Request, lock: Callable[[str], AbstractContextManager[Callable[[], None]]],
               name: str) -> Iterator[Callable[[], None]]:
    """Take the plugin's lock, except for --dry-run, which changes nothing. Yields the lock's early release."""
    if req.dry_run:
        yield lambda: None
        return
    with lock(name) as release:
        yield release


@contextmanager
def ipam_transaction(req: Request) -> Iterator[dict[str, Any] | None]:
    """IPAM ADD; if anything after it fails, IPAM DEL so that no address leaks (cni-notes mistake 3)."""
    from cniplug import ipam

    result = ipam.run(req, "ADD")
    try:
        yield result
    except BaseException:
        if result is not None and not req.dry_run:
            try:
                ipam.run(req, "DEL")
            except CNIError as err:
                log.warning("IPAM DEL after a failed ADD failed too: %s", err.msg)
        raise


def attachments(req: Request) -> set[tuple[str, str]] | None:
    """GC: (containerID, ifname) of cni.dev/valid-attachments (or the older cni.dev/attachments), ifname ""
    when an entry has none; None when the key is absent (then GC removes nothing). CNIError 7 naming the
    key for a malformed one (spec 1.1.0, GC)."""
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        if key in req.config:
            value = req.config[key] or []
            if not isinstance(value, list):
                raise CNIError(ERR_INVALID_CONFIG, f"field {key!r} must be a list, got {value!r}")
            out = set()
            for entry in value:
                if not isinstance(entry, dict) or not isinstance(entry.get("containerID"), str):
                    raise CNIError(ERR_INVALID_CONFIG, f"field {key!r}: entry {entry!r} has no containerID")
                out.add((entry["containerID"], str(entry.get("ifname", ""))))
            return out
    return None


def _attachment_ids(req: Request) -> set[str] | None:
    """Container ids of the valid attachments (attachments()); None = key absent."""
    found = attachments(req)
    return None if found is None else {cid for cid, _ in found}


_COMMENT = re.compile(r'^name: "(?P<name>[^"]*)" id: "(?P<id>[^"]*)"$')


def gc_masq(req: Request) -> str | None:
    """GC: remove the NAT chains of this network's containers that are not valid attachments.

    Our chains carry the comment `name: "<net>" id: "<id>"`, so they can be told apart by network.
    """
    from cniplug import facts, nft

    valid = _attachment_ids(req)
    stale: dict[str, dict[str, Any]] = {}
    if valid is not None:
        for family, tool in ((4, "iptables"), (6, "ip6tables")):
            if not nft.installed(tool):
                continue
            lines = facts.iptables_rules(family, "nat", "POSTROUTING")
            for line in lines:
                if not line.startswith("-A POSTROUTING "):
                    continue
                words = facts.iptables_words(line)
                if "--comment" not in words or words[-2] != "-j" or not words[-1].startswith("CNI-"):
                    continue
                m = _COMMENT.match(words[words.index("--comment") + 1])
                if not m or m["name"] != req.name or m["id"] in valid:
                    continue
                chain = words[-1]
                entry = stale.setdefault(f"{tool} {chain}", {"tool": tool, "chain": chain, "jumps": []})
                entry["jumps"].append(words[2:])
    pairs = _attachment_pairs(req)
    nft_handles = nft.masq_stale(req.name, pairs) if pairs is not None else []
    return perform(req, "masq_gc.sh.j2", best_effort=True, masq=list(stale.values()), network=req.name,
                   nft_masq={"family": nft.MASQ_FAMILY, "name": nft.MASQ_TABLE, "chain": nft.MASQ_CHAIN,
                             "handles": nft_handles})


def _attachment_pairs(req: Request) -> set[tuple[str, str]] | None:
    """(containerID, ifname) of cni.dev/valid-attachments (or cni.dev/attachments); None = key absent.
    The nftables masquerade rules name the interface too (reference gcIPMasqNFTables); an entry without
    ifname keeps nothing of its container's nftables rules. Entries are validated by _attachment_ids."""
    if _attachment_ids(req) is None:
        return None
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        if key in req.config:
            return {(e["containerID"], e["ifname"]) for e in req.config[key] or []
                    if isinstance(e.get("ifname"), str)}
    return None


def nft_masq_teardown(req: Request) -> dict[str, Any] | None:
    """DEL: this attachment's nftables masquerade rules (their handles), whatever backend the config names
    now: like the reference, DEL removes what either backend made. None when there are none."""
    from cniplug import nft

    handles = nft.masq_teardown(req.name, req.ifname, req.container_id)
    if not handles:
        return None
    return {"family": nft.MASQ_FAMILY, "name": nft.MASQ_TABLE, "chain": nft.MASQ_CHAIN, "handles": handles}


def nft_masq_plan(req: Request, ips: list[dict[str, Any]]) -> dict[str, Any]:
    """ADD with ipMasqBackend nftables: context for the nft_masq_add macro (cniplug/nft.py, masq_plan)."""
    from cniplug import nft

    return nft.masq_plan(req.name, req.ifname, req.container_id, [ip["address"] for ip in ips])


def check_attachment(req: Request, prev: dict[str, Any], bridge: str = "") -> None:
    """CHECK: the container interface, its addresses and routes, and the host veth still match prevResult."""
    from cniplug import facts

    interfaces = prev.get("interfaces") or []
    index = next((i for i, itf in enumerate(interfaces)
                  if itf.get("name") == req.ifname and itf.get("sandbox") == req.netns), None)
    if index is None:
        raise CNIError(ERR_INTERNAL, f"prevResult has no interface {req.ifname!r} in sandbox {req.netns!r}")
    ip = facts.ns_ip(req.netns)
    links = facts.ip_json(ip, "-d", "addr", "show", "dev", req.ifname)
    if not links:
        raise CNIError(ERR_INTERNAL, f"interface {req.ifname!r} not found in {req.netns}")
    link = links[0]
    kind = (link.get("linkinfo") or {}).get("info_kind")
    if kind != "veth":
        raise CNIError(ERR_INTERNAL, f"interface {req.ifname!r} is a {kind!r}, expected a veth")
    want_mac = interfaces[index].get("mac")
    if want_mac and link.get("address", "").lower() != want_mac.lower():
        raise CNIError(ERR_INTERNAL, f"interface {req.ifname} MAC {link.get('address')} does not match "
                       f"prevResult MAC {want_mac}")
    have = {f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])}
    for entry in prev.get("ips", []):
        if entry.get("interface", index) == index and entry["address"] not in have:
            raise CNIError(ERR_INTERNAL, f"address {entry['address']} missing on {req.ifname} in {req.netns}")
    routes = facts.ip_json(ip, "route", "show") + facts.ip_json(ip, "-6", "route", "show")
    present = {(_norm_dst(r.get("dst", "")), r.get("gateway", "")) for r in routes}
    for r in routes_with_gateways(prev):
        dst = _norm_dst(r["dst"])
        if (dst, r["gw"]) not in present and not (not r["gw"] and any(d == dst for d, _ in present)):
            raise CNIError(ERR_INTERNAL, f"route {r['dst']} via {r['gw'] or '-'} missing in {req.netns}")
    # Our host end is the container link's veth peer; later plugins may add host interfaces of their
    # own (bandwidth's ifb), which are theirs to check.
    peer = link.get("link_index")
    mine = [itf.get("name", "") for itf in interfaces if not itf.get("sandbox") and itf.get("name") != bridge
            and facts.ifindex_of(itf.get("name", "")) == peer]
    if not mine:
        raise CNIError(ERR_INTERNAL, f"the host end of {req.ifname} (ifindex {peer}) is not in prevResult "
                       "or no longer exists")
    if bridge and facts.master_of(mine[0]) != bridge:
        raise CNIError(ERR_INTERNAL, f"host interface {mine[0]!r} is not attached to bridge {bridge!r}")


def _norm_dst(dst: str) -> str:
    """`ip -j route` says 'default' and drops /32 and /128; prevResult says 0.0.0.0/0 and full CIDRs."""
    if dst == "default":
        return "default"
    try:
        net = ipaddress.ip_network(dst, strict=False)
    except ValueError:
        return dst
    return "default" if net.prefixlen == 0 else str(net)


def check_masq(req: Request, prev: dict[str, Any]) -> None:
    from cniplug import facts

    plan = masq_plan(req, prev.get("ips", []))
    for family, pairs in plan["families"].items():
        if f"-N {plan['chain']}" not in facts.iptables_rules(family, "nat", plan["chain"]):
            raise CNIError(ERR_INTERNAL, f"NAT chain {plan['chain']} missing (ipMasq)")
        lines = facts.iptables_rules(family, "nat", "POSTROUTING")
        for _subnet, source in pairs:
            if not any(line.startswith(f"-A POSTROUTING -s {source} ") and line.endswith(f"-j {plan['chain']}")
                       for line in lines):
                raise CNIError(ERR_INTERNAL, f"NAT rule for {source} -> {plan['chain']} missing in POSTROUTING")


def require_commands(tools: Iterable[str], hint: str) -> None:
    """STATUS: each command in `tools` must be on PATH; CNIError 50 (ERR_NOT_AVAILABLE) naming the first
    missing one, with `hint` (what to install) as details (spec 1.1.0 STATUS)."""
    from cniplug import runner

    for tool in tools:
        try:
            runner.which(tool)
        except CNIError:
            raise CNIError(ERR_NOT_AVAILABLE, f"command {tool!r} not found", hint) from None


def check_tools(ip_masq: bool, backend: str = "iptables", nft_needed: bool = False) -> None:
    """STATUS: the commands ADD will run must be installed (code 50 otherwise): iptables for ipMasq with the
    iptables backend, nft for the nftables one or for `nft_needed` (macspoofchk)."""
    masq = (["iptables", "iptables-restore"] if backend == "iptables" else ["nft"]) if ip_masq else []
    require_commands(["ip", "sysctl", "nsenter"] + masq + (["nft"] if nft_needed else []),
                     "install iproute2/iptables/nftables")


def flock_with_timeout(fd: int, timeout: float, busy: str, shared: bool = False) -> None:
    """Blocking exclusive (or `shared`) flock; past `timeout` seconds a CNI "try again later" (11) instead."""
    import fcntl
    import signal

    def expire(signum: int, frame: object) -> None:
        raise CNIError(ERR_TRY_AGAIN_LATER, busy, f"lock not free after {timeout:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def forwarding_plan(families: Iterable[int]) -> dict[str, Any] | None:
    """Turn on IP forwarding for these families where it is off (never turned off again, except by rollback)."""
    from cniplug import facts

    old: dict[str, str] = {}
    for family in sorted(families):
        key = "net.ipv4.ip_forward" if family == 4 else "net.ipv6.conf.all.forwarding"
        value = facts.sysctl(key)
        if value is not None and value != "1":
            old[key] = value
    return {"settings": [(key, 1) for key in old], "old": old} if old else None


def check_nft_masq(req: Request, prev: dict[str, Any]) -> None:
    """CHECK with the nftables backend: a masquerade rule of this attachment for each of its addresses."""
    from cniplug import nft

    missing = nft.masq_present(req.name, req.ifname, req.container_id, [ip["address"] for ip in prev.get("ips", [])])
    if missing:
        raise CNIError(ERR_INTERNAL, f"nftables masquerade rule for {', '.join(missing)} missing in "
                       f"{nft.MASQ_FAMILY} {nft.MASQ_TABLE} {nft.MASQ_CHAIN} (ipMasq)")


def check_veth(req: Request, ip_masq: bool, bridge: str = "", backend: str = "iptables") -> None:
    """CHECK for the veth plugins: IPAM first, then the attachment against prevResult, then NAT."""
    from cniplug import facts, ipam

    prev = req.prev_result()  # a malformed prevResult is named as such, before anything else
    if prev is None:
        raise CNIError(ERR_INVALID_CONFIG, "Required prevResult missing", "CHECK needs the ADD result in prevResult")
    ipam.run(req, "CHECK")
    facts.check_netns(req.netns)
    if bridge and not facts.is_bridge(bridge):
        raise CNIError(ERR_INTERNAL, f"bridge {bridge!r} does not exist or is not a bridge")
    check_attachment(req, prev, bridge=bridge)
    if ip_masq:
        if backend == "nftables":
            check_nft_masq(req, prev)
        else:
            check_masq(req, prev)


def gc(req: Request) -> str | None:
    """GC for the veth plugins: NAT chains of attachments that are no longer valid, then IPAM."""
    from cniplug import ipam

    text = gc_masq(req)
    if text is not None:
        return text
    ipam.run(req, "GC")
    return None


# ---- nftables tables shared by every attachment (issue #13) ----------------------------------------------

NFT_LOCK_TIMEOUT = 120.0


def nft_lock_path() -> str:
    from cniplug import rundir

    return f"{rundir.RUN_DIR}/nft.lock"


def creates_nft_tables(context: dict[str, Any]) -> bool:
    """Does this ADD create an nftables table or base chain (which its rollback would delete, whoever's rules
    are in it by then)?"""
    masq, spoof = context.get("nft_masq"), context.get("spoof")
    return bool((masq and (masq["table"] or masq["chain"] or masq["postrouting"]))
                or (spoof and (spoof["table"] or spoof["base"])))


def perform_with_nft(req: Request, template: str, plan: Callable[[], tuple[dict[str, Any], dict[str, Any]]],
                     before: Callable[[dict[str, Any]], None] | None = None) -> tuple[str | None, dict[str, Any],
                                                                                        dict[str, Any]]:
    """plan() -> (context, result), then perform(template); -> (perform's text, context, result).

    An ADD that uses nftables holds /run/cniplug/nft.lock while it runs: shared, so such ADDs run in
    parallel, and exclusive (re-planned under it) when it creates a table or base chain. Its rollback deletes
    what it created; no other ADD can have put rules there meanwhile, nor see those tables half made.
    `before(context)` runs once the final plan is known (the bridge releases its own lock there).
    CNIError 999 when the lock cannot be opened, 11 when it stays busy for NFT_LOCK_TIMEOUT seconds.
    """
    context, result = plan()
    if req.dry_run or not (context.get("nft_masq") or context.get("spoof")):
        if before:
            before(context)
        return perform(req, template, **context), context, result
    exclusive = creates_nft_tables(context)
    fd = nft_lock(shared=not exclusive)
    try:
        context, result = plan()  # what is there now, under the lock
        if creates_nft_tables(context) and not exclusive:  # they went away meanwhile: become the creator
            os.close(fd)
            fd = nft_lock(shared=False)
            context, result = plan()
        if before:
            before(context)
        return perform(req, template, **context), context, result
    finally:
        os.close(fd)


def nft_lock(shared: bool) -> int:
    """Open and flock /run/cniplug/nft.lock; -> the fd (closing it releases the lock). Whoever removes the file
    does so while holding it exclusively, so a lock taken on a file unlinked meanwhile is taken again on the
    new one (as bridge_lock does). CNIError 999 when it cannot be opened, 11 when busy too long."""
    from cniplug import rundir

    path = nft_lock_path()
    while True:
        try:
            rundir.ensure()
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise CNIError(ERR_INTERNAL, f"cannot open the nftables lock: {err}", "cniplug runs as root") from None
        try:
            flock_with_timeout(fd, NFT_LOCK_TIMEOUT, "the nftables tables are busy", shared=shared)
            st, mine = os.stat(path), os.fstat(fd)
            if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
