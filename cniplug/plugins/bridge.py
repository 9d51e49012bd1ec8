"""cniplug-bridge: the tutorial's example 2 as a CNI plugin (veth into a Linux bridge, gateway, NAT).

Config keys and defaults follow the reference bridge plugin (cni-notes 3.1); the keys the Debian 1.1.1
reference lacks (ipMasqBackend, vlanTrunk, portIsolation, disableContainerInterface) follow
containernetworking/plugins v1.9.1 (plugins/main/bridge/bridge.go), read, not copied.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cniplug import facts, ipam, nft, rundir, skel
from cniplug.plugins import common
from cniplug.skel import Request, check_ifname
from cniplug.spec import (
    ERR_INTERNAL,
    ERR_INVALID_CONFIG,
    ERR_NOT_AVAILABLE_LIMITED,
    CNIError,
)


def lock_path(bridge: str) -> str:
    """The lock file of one bridge in /run/cniplug (GC removes those of bridges that are gone)."""
    return f"{rundir.RUN_DIR}/bridge-{bridge}.lock"


@dataclass
class BridgeConfig:
    bridge: str
    is_gateway: bool
    is_default_gateway: bool
    force_address: bool
    ip_masq: bool
    mtu: int
    hairpin: bool
    promisc: bool
    vlan: int
    enable_dad: bool
    masq_backend: str = "iptables"
    macspoofchk: bool = False
    port_isolation: bool = False
    vlan_trunk: list[int] | None = None  # None: key absent; [] (present, no VLAN) still turns on vlan_filtering
    disable_container_interface: bool = False
    preserve_default_vlan: bool = False

    @property
    def vlan_gateway(self) -> str:
        """Name of the gateway interface of `vlan` with isGateway: "<bridge>.<vlan>" (reference), else ""."""
        return f"{self.bridge}.{self.vlan}" if self.vlan and self.is_gateway else ""


def parse_vlan_trunk(value: Any) -> list[int] | None:
    """config['vlanTrunk'] -> the sorted VLAN ids (None when absent or null).

    Each entry is {"id": N} and/or {"minID": A, "maxID": B} (A <= B), ids 1..4094; both minID and maxID or
    neither (reference collectVlanTrunk, v1.9.1). CNIError 7 naming the field and value otherwise.
    """
    if value is None:
        return None
    if not isinstance(value, list):
        raise CNIError(ERR_INVALID_CONFIG, f"field 'vlanTrunk' must be a list, got {value!r}")
    vids: set[int] = set()
    for entry in value:
        if not isinstance(entry, dict):
            raise CNIError(ERR_INVALID_CONFIG, f"field 'vlanTrunk': entry {entry!r} must be an object")
        for key in ("id", "minID", "maxID"):
            v = entry.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 4094):
                raise CNIError(ERR_INVALID_CONFIG, f"field 'vlanTrunk': {key} must be an integer in 1..4094, got {v!r}")
        low, high = entry.get("minID"), entry.get("maxID")
        if (low is None) != (high is None):
            raise CNIError(ERR_INVALID_CONFIG, f"field 'vlanTrunk': minID and maxID go together, got {entry!r}")
        if low is not None and high is not None:
            if high < low:
                raise CNIError(ERR_INVALID_CONFIG, f"field 'vlanTrunk': minID {low} is greater than maxID {high}")
            vids.update(range(low, high + 1))
        if entry.get("id") is not None:
            vids.add(entry["id"])
    return sorted(vids)


def vid_ranges(vids: list[int]) -> list[tuple[int, int]]:
    """[2, 3, 4, 7] -> [(2, 4), (7, 7)]: consecutive ids as one `bridge vlan add ... vid A-B`."""
    out: list[tuple[int, int]] = []
    for v in vids:
        if out and out[-1][1] == v - 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out


def parse_config(req: Request) -> BridgeConfig:
    c = req.config
    name = c.get("bridge", "cni0")
    if not isinstance(name, str):
        raise CNIError(ERR_INVALID_CONFIG, f"field 'bridge' must be a string, got {name!r}")
    check_ifname(name, "bridge")
    is_default = common.get_bool(c, "isDefaultGateway")
    cfg = BridgeConfig(
        bridge=name,
        is_gateway=common.get_bool(c, "isGateway") or is_default,
        is_default_gateway=is_default,
        force_address=common.get_bool(c, "forceAddress"),
        ip_masq=common.get_bool(c, "ipMasq"),
        mtu=common.get_mtu(c),
        hairpin=common.get_bool(c, "hairpinMode"),
        promisc=common.get_bool(c, "promiscMode"),
        vlan=common.get_int(c, "vlan", 0, 4094),
        enable_dad=common.get_bool(c, "enabledad"),
    )
    if cfg.hairpin and cfg.promisc:
        raise CNIError(ERR_INVALID_CONFIG, "cannot set hairpinMode and promiscMode at the same time")
    cfg.masq_backend = nft.masq_backend(c)
    cfg.macspoofchk = common.get_bool(c, "macspoofchk")
    cfg.port_isolation = common.get_bool(c, "portIsolation")
    cfg.vlan_trunk = parse_vlan_trunk(c.get("vlanTrunk"))
    cfg.disable_container_interface = common.get_bool(c, "disableContainerInterface")
    cfg.preserve_default_vlan = common.get_bool(c, "preserveDefaultVlan")
    if cfg.disable_container_interface and ipam.ipam_type(req):
        raise CNIError(ERR_INVALID_CONFIG, "cannot use IPAM when disableContainerInterface is set",
                       "the container interface stays down without addresses (reference bridge)")
    if cfg.vlan_gateway:
        check_ifname(cfg.vlan_gateway, "bridge + '.' + vlan (the VLAN gateway interface)")
    ipam.ipam_type(req)
    return cfg


LOCK_TIMEOUT = 120.0


@contextmanager
def bridge_lock(name: str) -> Iterator[Callable[[], None]]:
    """Serialise plugin runs on one bridge; yields a function that releases the lock early.

    CNIError 999 when the lock file cannot be opened (not root), 11 when it stays busy (below).

    The lock covers the probes and every change to what containers share (the bridge itself, its
    state and gateway address, forwarding): creating the bridge, its gateway and a rollback of those
    stay consistent. An ADD that changes none of that releases it after its probes (see add), so
    ADDs on a ready bridge run in parallel. Waiting longer than LOCK_TIMEOUT is "try again later" (11).
    """
    path = lock_path(name)
    held: list[int] = []

    def release() -> None:
        if held:
            os.close(held.pop())

    try:
        while not held:
            try:
                rundir.ensure()
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as err:  # e.g. not root
                raise CNIError(ERR_INTERNAL, f"cannot open the lock of bridge {name!r}: {err}",
                               "cniplug-bridge runs as root") from None
            held.append(fd)
            common.flock_with_timeout(fd, LOCK_TIMEOUT, f"bridge {name!r} is busy")
            if not same_file(fd, path):  # GC unlinked it between our open and flock: lock the new one
                release()
        yield release
    finally:
        release()


def same_file(fd: int, path: str) -> bool:
    """Is `path` still the file open on `fd`? False when it was unlinked (or replaced) meanwhile."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def remove_stale_locks() -> list[str]:
    """GC: unlink the lock files of bridges that no longer exist; returns the bridge names removed.

    Without racing an ADD: a lock is unlinked only while this holds its flock (taken non-blocking: a
    busy lock is skipped) and after re-checking, under it, that the bridge is absent; bridge_lock
    notices it locked an unlinked file and retries on a fresh one. Issue #12, item 7.
    """
    import fcntl

    removed: list[str] = []
    try:
        entries = os.listdir(rundir.RUN_DIR)
    except FileNotFoundError:
        return removed
    for entry in sorted(entries):
        if not (entry.startswith("bridge-") and entry.endswith(".lock")):
            continue
        name = entry[len("bridge-"):-len(".lock")]
        path = lock_path(name)
        if facts.link_exists(name):
            continue
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not facts.link_exists(name) and same_file(fd, path):
                os.unlink(path)
                removed.append(name)
        except BlockingIOError:
            pass  # an ADD holds it: the bridge is being made
        finally:
            os.close(fd)
    return removed


def changes_shared_state(context: dict[str, Any]) -> bool:
    """Does this ADD change anything other containers on the bridge depend on?"""
    bridge = context["bridge"]
    vlan_gw = context["vlan_gw"]
    return bool(bridge["create"] or not bridge["up"] or bridge["promisc"] or bridge["accept_ra_set"]
                or bridge["pin_mac"] or context["forwarding"] or any(not g["present"] for g in context["gateways"])
                or (vlan_gw and (vlan_gw["create"] or not vlan_gw["up"])))


def gateway_of(ip: dict[str, Any], cfg: BridgeConfig) -> str:
    if ip.get("gateway"):
        return str(ip["gateway"])
    if not cfg.is_gateway:
        return ""
    gw = common.first_other_host(ip["address"])
    if not gw:
        raise CNIError(ERR_INVALID_CONFIG, f"isGateway: the subnet of {ip['address']} has no address for the gateway",
                       "give the address a shorter prefix, or the IPAM a gateway")
    return gw


def plan_add(req: Request, cfg: BridgeConfig, ipam_result: dict[str, Any] | None,
             host_veth: str, mac: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Facts + config -> (template context, result). Probes are read-only."""
    ips = [dict(ip) for ip in (ipam_result or {}).get("ips", [])]
    if ipam_result is not None and not ips:
        raise CNIError(ERR_INTERNAL, "IPAM returned no IP addresses")
    routes = list((ipam_result or {}).get("routes", []))
    for ip in ips:
        gw = gateway_of(ip, cfg)
        if gw:
            ip["gateway"] = gw
        ip["interface"] = 2
    if cfg.is_default_gateway:
        for family, dst in ((4, "0.0.0.0/0"), (6, "::/0")):
            gws = [ip["gateway"] for ip in ips if ipaddress.ip_interface(ip["address"]).version == family
                   and ip.get("gateway")]
            has_default = any(r.get("dst") == dst and r.get("gw") for r in routes)
            if gws and not has_default:
                routes = [r for r in routes if r.get("dst") != dst] + [{"dst": dst, "gw": gws[0]}]
    result: dict[str, Any] = {"cniVersion": "1.1.0", "ips": ips, "routes": routes}
    if ipam_result and ipam_result.get("dns"):
        result["dns"] = ipam_result["dns"]
    if isinstance(req.config.get("dns"), dict) and req.config["dns"]:
        result["dns"] = req.config["dns"]

    exists = facts.link_exists(cfg.bridge)
    ipv6 = facts.has_ipv6() and not 0 < cfg.mtu < common.IPV6_MIN_MTU
    accept_ra_old = facts.sysctl(common.conf_key(6, cfg.bridge, "accept_ra")) if exists else None
    bridge_up = exists and bool(facts.link_flags(cfg.bridge) & facts.IFF_UP)
    # With vlan, the gateway addresses go on the VLAN's gateway interface <bridge>.<vlan>, not on the bridge.
    vlan_gw = None
    gw_link = cfg.bridge
    if cfg.vlan_gateway and ips:
        gw_link = cfg.vlan_gateway
        gw_exists = facts.link_exists(gw_link)
        vlan_gw = {"name": gw_link, "create": not gw_exists, "vlan": cfg.vlan, "mtu": cfg.mtu,
                   "vlan_del_default": not cfg.preserve_default_vlan,
                   # its bridge port: named after the interface (the reference picks a random veth name)
                   "host": "veth" + hashlib.sha512(gw_link.encode()).hexdigest()[:8],
                   "up": gw_exists and bool(facts.link_flags(gw_link) & facts.IFF_UP)}
    gw_link_exists = exists if gw_link == cfg.bridge else not vlan_gw or not vlan_gw["create"]
    bridge_addrs = facts.addresses(["ip"], gw_link) if gw_link_exists and cfg.is_gateway else []
    families = {ipaddress.ip_interface(ip["address"]).version for ip in ips}

    gateways: list[dict[str, Any]] = []
    forwarding = None
    if cfg.is_gateway:
        for ip in ips:
            iface = ipaddress.ip_interface(ip["address"])
            cidr = f"{ip['gateway']}/{iface.network.prefixlen}"
            present = cidr in bridge_addrs
            conflicting = [a for a in bridge_addrs if a != cidr and ipaddress.ip_interface(a).version == iface.version
                           and (iface.version == 4 or ipaddress.ip_interface(a).network.overlaps(iface.network))]
            if conflicting and not present and not cfg.force_address:
                raise CNIError(ERR_INVALID_CONFIG, f"{'bridge' if gw_link == cfg.bridge else 'interface'} {gw_link!r} "
                               "already has an IP address different "
                               f"from {cidr}: {', '.join(conflicting)}", "set forceAddress to replace it")
            if any(g["cidr"] == cidr for g in gateways):
                continue
            gateways.append({"cidr": cidr, "present": present, "remove": [] if present else conflicting})
        forwarding = common.forwarding_plan(families)

    sysctls: list[tuple[str, Any]] = []
    if 4 in families:
        sysctls.append((common.conf_key(4, req.ifname, "arp_notify"), 1))
    if 6 in families:
        sysctls.append((common.conf_key(6, req.ifname, "disable_ipv6"), 0))
    if ips and ipv6:
        # As the reference: DAD off unless asked for, also on IPv4-only networks (the link-local address
        # would otherwise see its own probes reflected by a hairpin port and go dadfailed).
        if cfg.enable_dad:
            sysctls += [(common.conf_key(6, req.ifname, "enhanced_dad"), 1),
                         (common.conf_key(6, req.ifname, "accept_dad"), 1)]
        else:
            sysctls.append((common.conf_key(6, req.ifname, "accept_dad"), 0))
    trunk = cfg.vlan_trunk or []
    context = {
        "bridge": {"name": cfg.bridge, "create": not exists, "mtu": cfg.mtu,
                   "vlan_filtering": bool(cfg.vlan) or cfg.vlan_trunk is not None,
                   "mac": common.random_mac() if not exists else "", "promisc": cfg.promisc and not (
                       exists and facts.link_flags(cfg.bridge) & facts.IFF_PROMISC),
                   "accept_ra_set": ipv6 and accept_ra_old != "0" and (accept_ra_old is not None or not exists),
                   "accept_ra_old": accept_ra_old,
                   "accept_ra_key": common.conf_key(6, cfg.bridge, "accept_ra"),
                   "up": bridge_up,
                   # A bridge whose MAC was never set takes its lowest port's: pin it, as the reference does.
                   "pin_mac": facts.mac_of(cfg.bridge) if exists and cfg.is_gateway and not vlan_gw
                   and facts.addr_assign_type(cfg.bridge) != 3 else ""},
        "veth": {"host": host_veth, "peer": req.ifname, "netns": req.netns, "mtu": cfg.mtu, "mac": mac,
                 "hairpin": cfg.hairpin, "vlan": cfg.vlan, "accept_ra": ipv6, "isolated": cfg.port_isolation,
                 # reference setupVeth: the port leaves VLAN 1 when it gets a vlan or trunk VLANs ...
                 "vlan_del_default": bool(cfg.vlan or trunk) and not cfg.preserve_default_vlan,
                 "trunk": vid_ranges(trunk),
                 # ... and a trunk without vlan keeps VLAN 1 as its untagged (native) VLAN
                 "native": bool(trunk) and not cfg.vlan},
        "spoof": nft.spoof_plan(req.container_id, req.ifname, host_veth, mac) if cfg.macspoofchk else None,
        "container": {"ip": facts.ns_ip(req.netns), "exec": facts.ns_exec(req.netns), "sysctls": sysctls,
                      "addrs": [ip["address"] for ip in ips], "up": not cfg.disable_container_interface,
                      "ifname": req.ifname,
                      "broadcast": [ip["address"] for ip in ips if ":" not in ip["address"]],
                      "routes": common.routes_with_gateways(result)},
        "gateways": gateways,
        "gw_link": gw_link,
        "vlan_gw": vlan_gw,
        "forwarding": forwarding,
        "masq": common.masq_plan(req, ips) if cfg.ip_masq and ips and cfg.masq_backend == "iptables" else None,
        "nft_masq": common.nft_masq_plan(req, ips) if cfg.ip_masq and ips and cfg.masq_backend == "nftables"
        else None,
        "ipam_note": {"type": ipam.ipam_type(req), "addrs": ", ".join(ip["address"] for ip in ips)} if ips else None,
    }
    return context, result


def add(req: Request) -> dict[str, Any] | str | None:
    cfg = parse_config(req)
    mac = common.mac_from_request(req)
    if not req.dry_run:
        facts.check_netns(req.netns)
    # Refuse before IPAM reserves anything.
    if facts.link_exists(cfg.bridge) and not facts.is_bridge(cfg.bridge):
        raise CNIError(ERR_INVALID_CONFIG, f"field 'bridge': {cfg.bridge!r} already exists but is not a bridge")
    with common.maybe_lock(req, bridge_lock, cfg.bridge) as release, common.ipam_transaction(req) as ipam_result:
        host_veth = common.host_veth_name()
        mac = mac or common.random_mac()

        def release_unless_shared(context: dict[str, Any]) -> None:
            if not changes_shared_state(context):
                release()  # only this container's veth, addresses and NAT rules from here on

        text, context, result = common.perform_with_nft(
            req, "bridge/add.sh.j2", lambda: plan_add(req, cfg, ipam_result, host_veth, mac),
            before=release_unless_shared)
        if text is not None:
            # The result as far as it is known unprinted: the bridge's MAC when it exists or is made with a
            # fixed one; the host veth's MAC is the kernel's choice, so it is left out.
            bridge_mac = context["bridge"]["mac"] or (facts.mac_of(cfg.bridge) if not context["bridge"]["create"]
                                                      else "")
            req.dry_result = {**result, "interfaces": interfaces(req, cfg, host_veth, mac, bridge_mac, "",
                                                                 bool(context["vlan_gw"]))}
            return text
    result["interfaces"] = interfaces(req, cfg, host_veth, mac, facts.mac_of(cfg.bridge), facts.mac_of(host_veth),
                                      bool(context["vlan_gw"]))
    return result


def interfaces(req: Request, cfg: BridgeConfig, host_veth: str, mac: str, bridge_mac: str,
               veth_mac: str, vlan_gw: bool = False) -> list[dict[str, Any]]:
    """The result's interfaces: bridge, host veth, container end (index 2, with the mtu when set), and with
    `vlan_gw` the VLAN's gateway interface last (reference); a MAC that is "" (unknown in a --dry-run) is
    left out."""
    out: list[dict[str, Any]] = [
        {"name": cfg.bridge, "mac": bridge_mac},
        {"name": host_veth, "mac": veth_mac},
        {"name": req.ifname, "mac": mac, "sandbox": req.netns},
    ]
    for entry in out:
        if not entry["mac"]:
            del entry["mac"]
    if cfg.mtu:
        out[2]["mtu"] = cfg.mtu
    if vlan_gw:
        out.append({"name": cfg.vlan_gateway, "mac": facts.mac_of(cfg.vlan_gateway)})
        if not out[-1]["mac"]:  # a --dry-run before it exists
            del out[-1]["mac"]
    return out


def delete(req: Request) -> str | None:
    cfg = parse_config(req)
    ipam.validate(req)  # IPAM DEL comes after the teardown: a bad ipam config must be refused before it
    # No bridge lock: DEL removes only this container's interface, NAT chain and address.
    alive = facts.netns_alive(req.netns)
    text = common.perform(
        req, "bridge/del.sh.j2", best_effort=True, alive=alive, ifname=req.ifname,
        container_ip=facts.ns_ip(req.netns) if alive else [],
        masq=common.masq_teardown(req) if cfg.ip_masq else [],
        nft_masq=common.nft_masq_teardown(req) if cfg.ip_masq else None,
        spoof=nft.spoof_teardown(req.container_id, req.ifname) if cfg.macspoofchk else None,
    )
    if text is None:
        ipam.run(req, "DEL")
    return text


def check(req: Request) -> None:
    cfg = parse_config(req)
    common.check_veth(req, cfg.ip_masq, bridge=cfg.bridge, backend=cfg.masq_backend)


def gc(req: Request) -> str | None:
    """GC: NAT chains and IPAM (common.gc), then the lock files of bridges that are gone (not in the
    --dry-run script: like IPAM, it is bookkeeping done in Python, not a command)."""
    parse_config(req)
    text = common.gc(req)
    if text is None:
        removed = remove_stale_locks()
        if removed:
            common.log.info("GC removed the lock files of gone bridges %s", ", ".join(removed))
    return text


def status(req: Request) -> None:
    """Can ADD be served now? 50 from IPAM (e.g. no address left), or when a tool is missing; 51 when
    the bridge exists but is down: ADD could work, but the containers already on it are cut off."""
    cfg = parse_config(req)
    common.check_tools(cfg.ip_masq, cfg.masq_backend, nft_needed=cfg.macspoofchk)
    if facts.link_exists(cfg.bridge) and not facts.link_flags(cfg.bridge) & facts.IFF_UP:
        raise CNIError(ERR_NOT_AVAILABLE_LIMITED, f"bridge {cfg.bridge!r} is down",
                       "containers attached to it have no connectivity")
    ipam.run(req, "STATUS")


HANDLERS = {"ADD": add, "DEL": delete, "CHECK": check, "GC": gc, "STATUS": status}


ABOUT = "cniplug bridge plugin"


def main() -> None:
    skel.main(HANDLERS, ABOUT)
