"""Read-only probes of the host and container state. They run before rendering; nothing here changes anything."""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import socket
import struct
from collections.abc import Iterator
from typing import Any

from cniplug import runner
from cniplug.spec import ERR_INTERNAL, ERR_INVALID_ENV, ERR_TRY_AGAIN_LATER, CNIError

NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3)
CLONE_NEWNET = 0x40000000
_NAMED_NS = re.compile(r"^/(?:var/)?run/netns/([^/]+)$")


def check_netns(path: str) -> None:
    """CNI_NETNS must be a network namespace, and not the one the plugin runs in."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise CNIError(ERR_INVALID_ENV, f"failed to open netns {path!r}", err.strerror or str(err)) from None
    try:
        try:
            kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError:
            kind = -1
        if kind != CLONE_NEWNET:
            raise CNIError(ERR_INVALID_ENV, f"CNI_NETNS {path!r} is not a network namespace")
        mine = os.stat("/proc/self/ns/net")
        theirs = os.fstat(fd)
        if (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino):
            raise CNIError(ERR_INVALID_ENV, f"CNI_NETNS {path!r} is the plugin's own network namespace")
    finally:
        os.close(fd)


def netns_alive(path: str) -> bool:
    """For DEL: is there still a namespace to clean up inside?"""
    if not path:
        return False
    try:
        check_netns(path)
    except CNIError:
        return False
    return True


def ns_ip(netns: str) -> list[str]:
    """Command prefix for `ip` inside a netns: `ip -n NAME` for named ones, else nsenter with the path."""
    named = _NAMED_NS.match(netns)
    return ["ip", "-n", named.group(1)] if named else ["nsenter", f"--net={netns}", "ip"]


def ns_exec(netns: str) -> list[str]:
    return ["nsenter", f"--net={netns}"]


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def is_bridge(name: str) -> bool:
    return os.path.isdir(f"/sys/class/net/{name}/bridge")


IFF_UP = 0x1
IFF_PROMISC = 0x100


def _link_attr(name: str, attr: str) -> str:
    """/sys/class/net/<name>/<attr> of a host link, "" if the link or attribute is not there."""
    try:
        with open(f"/sys/class/net/{name}/{attr}") as f:
            return f.read().strip()
    except OSError:
        return ""


def _link_int(name: str, attr: str, base: int = 10, missing: int = -1) -> int:
    try:
        return int(_link_attr(name, attr), base)
    except ValueError:
        return missing


def link_flags(name: str) -> int:
    return _link_int(name, "flags", 16, missing=0)


def ifindex_of(name: str) -> int:
    return _link_int(name, "ifindex")


def addr_assign_type(name: str) -> int:
    """0 random, 3 set by user space (a pinned MAC); -1 when unknown."""
    return _link_int(name, "addr_assign_type")


def master_of(name: str) -> str:
    try:
        return os.path.basename(os.readlink(f"/sys/class/net/{name}/master"))
    except OSError:
        return ""


def mac_of(name: str) -> str:
    return _link_attr(name, "address")


def has_ipv6() -> bool:
    """Is IPv6 there at all (/proc/sys/net/ipv6 exists unless the kernel runs with ipv6.disable=1)?"""
    return os.path.isdir("/proc/sys/net/ipv6")


def sysctl(key: str) -> str | None:
    """Value of a host sysctl ('net.ipv4.ip_forward', or with slashes 'net/ipv4/conf/eth0.1/forwarding'),
    None if it does not exist."""
    try:
        with open("/proc/sys/" + (key if "/" in key else key.replace(".", "/"))) as f:
            return f.read().strip()
    except OSError:
        return None


def ip_json(prefix: list[str], *args: str) -> list[dict[str, Any]]:
    """`ip -j ARGS` through the runner seam -> the parsed list; [] when `ip` says the device (or what was
    asked for) is not there ("Cannot find device", "does not exist").

    Raises CNIError (probe_error: 11 for the xtables lock, else 999, naming the command and its stderr)
    when ip could not look (a namespace that cannot be entered, an argument error, ...), and 999 for
    output that is not JSON: "could not look" must never read as "nothing there".
    """
    result = runner.execute([*prefix, "-j", *args])
    if result.rc != 0:
        if "Cannot find device" in result.stderr or "does not exist" in result.stderr:
            return []
        raise probe_error(result)
    if not result.stdout.strip():
        return []
    try:
        data = json.loads(result.stdout)
    except ValueError:
        raise CNIError(ERR_INTERNAL, f"cannot parse output of {' '.join(result.argv)}") from None
    return data if isinstance(data, list) else []


# ---- bandwidth (tc qdiscs, veth peers, ifb links) -----------------------------------------------------

def veth_peer_ifindex(prefix: list[str], ifname: str) -> int:
    """ifindex of the other end of veth `ifname` in the namespace `prefix` runs `ip` in (ns_ip); -1 when
    `ifname` is not there or is not a veth. `ip -d -j link show dev IF` names the peer as link_index, as
    the reference's ip.GetVethPeerIfindex reads it. Raises CNIError (ip_json) when ip could not look."""
    links = ip_json(prefix, "-d", "link", "show", "dev", ifname)
    if not links or (links[0].get("linkinfo") or {}).get("info_kind") != "veth":
        return -1
    index = links[0].get("link_index")
    return index if isinstance(index, int) else -1


def link_name(ifindex: int) -> str:
    """Name of the host link with this ifindex (from /sys/class/net), "" if there is none."""
    try:
        names = os.listdir("/sys/class/net")
    except OSError:
        return ""
    return next((name for name in names if ifindex_of(name) == ifindex), "")


def link_mtu(name: str) -> int:
    """MTU of a host link in bytes (/sys/class/net/<name>/mtu), -1 if the link is not there."""
    return _link_int(name, "mtu")


def tc_json(*args: str) -> list[dict[str, Any]]:
    """`tc -j ARGS` (e.g. "qdisc", "show", "dev", "veth1") on the host -> the parsed list; [] when the device
    is not there. Raises CNIError (probe_error) when tc could not look, 999 for output that is not JSON."""
    result = runner.execute(["tc", "-j", *args])
    if result.rc != 0:
        if "Cannot find device" in result.stderr or "does not exist" in result.stderr:
            return []
        raise probe_error(result)
    try:
        data = json.loads(result.stdout) if result.stdout.strip() else []
    except ValueError:
        raise CNIError(ERR_INTERNAL, f"cannot parse output of {' '.join(result.argv)}") from None
    return data if isinstance(data, list) else []


def probe_error(result: runner.Completed) -> CNIError:
    """A probe that could not look: 11 (try again later) when the xtables lock was busy, else 999."""
    code = ERR_TRY_AGAIN_LATER if "xtables lock" in result.stderr else ERR_INTERNAL
    return CNIError(code, f"cannot read state: {' '.join(result.argv)} failed",
                    f"exit {result.rc}: {result.stderr.strip()}")


def addresses(prefix: list[str], dev: str) -> list[str]:
    """Global addresses on dev as CIDRs: `ip -j addr show dev DEV`, or for a host link the same list
    read over rtnetlink without starting a process (every ADD on an existing bridge asks)."""
    if prefix == ["ip"]:
        found = host_addresses(dev)
        if found is not None:
            return found
    out = []
    for link in ip_json(prefix, "addr", "show", "dev", dev):
        for a in link.get("addr_info", []):
            if a.get("scope") == "global":
                out.append(f"{a['local']}/{a['prefixlen']}")
    return out


# What iptables says when the chain (or its whole table) is not there: legacy and iptables-nft >= 1.8.10
# "No chain/target/match by that name"; a missing table "Table does not exist" / "table 'x' does not exist".
_NO_CHAIN = ("No chain/target/match by that name", "does not exist")


def iptables_rules(family: int, table: str, chain: str) -> list[str]:
    """`iptables -S CHAIN` (ip6tables for family 6) lines of one chain; [] if the chain does not exist.

    One chain, not the whole table: with 200 containers listing nat takes ~14 ms, POSTROUTING ~5 ms.
    iptables-nft 1.8.9 (Debian 12) answers a missing chain with "chain `X' in table `T' is incompatible"
    (measured): only then is the whole table listed to tell a missing chain from a really incompatible one.
    Raises CNIError when iptables could not look (not installed, the xtables lock -> 11, anything else ->
    999, naming the command and its stderr): DEL and CHECK must not take that for "no chain".
    """
    tool = "iptables" if family == 4 else "ip6tables"
    result = runner.execute([tool, "-w", "-t", table, "-S", chain])
    if result.rc == 0:
        return result.stdout.splitlines()
    if any(text in result.stderr for text in _NO_CHAIN):
        return []
    if result.rc == 1 and "is incompatible" in result.stderr:
        whole = runner.execute([tool, "-w", "-t", table, "-S"])
        if whole.rc == 0 and not any(line.split()[:2] in (["-N", chain], ["-P", chain])
                                     for line in whole.stdout.splitlines()):
            return []
    raise probe_error(result)


def iptables_words(line: str) -> list[str]:
    """An `iptables -S` / `iptables-save` line -> its words; [] for a line cut short (an open quote).

    iptables (xtables_save_string) puts a word that is not all letters, digits, '_' and '-' in double quotes,
    with a backslash before each ", \\ and ' in it; shlex would keep the backslash before ' (a portmap
    conditionsV4 comment "don't" came back as don\\'t, and DEL missed its rule). Every reader of iptables'
    rules goes through here."""
    words: list[str] = []
    chars: list[str] = []
    started = quoted = escaped = False
    for ch in line:
        if escaped:
            chars.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = started = True
        elif ch == '"':
            quoted, started = not quoted, True
        elif ch.isspace() and not quoted:
            if started:
                words.append("".join(chars))
            chars, started = [], False
        else:
            chars.append(ch)
            started = True
    if quoted or escaped:
        return []
    if started:
        words.append("".join(chars))
    return words


# rtnetlink, just enough to list addresses (linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h).
_NLMSG = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid
_IFADDRMSG = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, ifindex
_RTA = struct.Struct("=HH")  # rtattr: length, type
NLMSG_ERROR, NLMSG_DONE, RTM_NEWADDR, RTM_GETADDR = 2, 3, 20, 22
NLM_F_REQUEST_DUMP = 0x301
IFA_ADDRESS, IFA_LOCAL = 1, 2


def host_addresses(dev: str) -> list[str] | None:
    """Global (scope universe) addresses of a host link, in the kernel's order as `ip` shows them; [] if the
    link is not there, None if netlink cannot be used (the caller then runs `ip`)."""
    index = ifindex_of(dev)
    if index < 0:
        return []
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE) as sock:
            sock.send(_NLMSG.pack(_NLMSG.size + _IFADDRMSG.size, RTM_GETADDR, NLM_F_REQUEST_DUMP, 1, 0)
                      + _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0))
            out: list[str] = []
            while True:
                data = sock.recv(1 << 16)
                if not data:
                    return None
                for kind, body in _messages(data):
                    if kind == NLMSG_DONE:
                        return out
                    if kind == NLMSG_ERROR:
                        return None
                    if kind == RTM_NEWADDR and len(body) >= _IFADDRMSG.size:
                        _family, prefixlen, _flags, scope, ifindex = _IFADDRMSG.unpack_from(body)
                        attrs = dict(_attributes(body[_IFADDRMSG.size:]))
                        raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)  # the peer's for point-to-point
                        if ifindex == index and scope == 0 and raw is not None and len(raw) in (4, 16):
                            out.append(f"{ipaddress.ip_address(raw)}/{prefixlen}")
    except OSError:
        return None


def _messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size:
            return
        yield kind, data[offset + _NLMSG.size:offset + length]
        offset += (length + 3) & ~3


def _attributes(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + _RTA.size <= len(data):
        length, kind = _RTA.unpack_from(data, offset)
        if length < _RTA.size:
            return
        yield kind, data[offset + _RTA.size:offset + length]
        offset += (length + 3) & ~3


def ns_sysctls(netns: str, keys: list[str]) -> dict[str, str | None]:
    """Values of per-namespace sysctls inside `netns`: {key: value or None when the file is missing}.

    keys are paths below /proc/sys ('net/ipv4/conf/eth0/arp_filter'). Read without starting a process,
    by a thread that entered the namespace (procsys.in_netns). Raises CNIError 4 when the namespace
    cannot be entered.
    """
    from cniplug import procsys

    def read() -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for key in keys:
            try:
                with open("/proc/sys/" + key) as f:
                    out[key] = f.read().strip()
            except OSError:
                out[key] = None
        return out

    try:
        return procsys.in_netns(netns, read)
    except OSError as err:
        raise CNIError(ERR_INVALID_ENV, f"cannot enter netns {netns!r}", err.strerror or str(err)) from None
