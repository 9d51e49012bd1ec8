"""cniplug-tuning: a chained plugin that changes the container interface's sysctls and link attributes,
compatible with the reference `tuning` plugin (cni-notes 3.7, observed state 4.3).

Keys (matched case-insensitively, as Go's encoding/json does): `sysctl` (map of net.* sysctls, `IFNAME`
in a key becomes CNI_IFNAME), `mac`, `mtu`, `promisc`, `allmulti`, `txQLen`, `dataDir` (/run/cni/tuning).
The MAC may also come from CNI_ARGS `MAC=`, then runtimeConfig `mac` (capability), then `args.cni.mac`,
each overriding the one before; `args.cni.{sysctl,mtu,promisc,allmulti,txQLen}` override the config.

ADD writes the sysctls inside the container namespace and, when any link attribute is configured, first
saves the link's original values of those attributes to `<dataDir>/<containerID>_<ifname>.json` in the
reference's format (`{"mac": ..., "promisc": ..., "mtu": ..., "allmulti": ..., "txQLen": ...}`, only the
configured keys, indented one space), so either plugin's DEL restores them. DEL restores the link from that
file and removes it; sysctls are not restored (the reference does not either: the namespace dies with
the container). The allowlist file of the reference's newer versions (ALLOWLIST, one regular expression a
line, searched in the sysctl key) is honoured when present; 1.1.1 has none.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

from cniplug import facts, skel
from cniplug.plugins import chained, common
from cniplug.skel import Request
from cniplug.spec import ERR_INTERNAL, ERR_INVALID_CONFIG, CNIError

DEFAULT_DATA_DIR = "/run/cni/tuning"
ALLOWLIST = "/etc/cni/tuning/allowlist.conf"
LINK_KEYS = ("mac", "promisc", "mtu", "allmulti", "txQLen")  # the backup file's keys, in its order
_SYSCTL_PART = re.compile(r"^[A-Za-z0-9_.:@+-]+$")


def sysctl_path(key: str, ifname: str) -> str:
    """A sysctl key -> its path below /proc/sys, refusing anything outside /proc/sys/net with code 7.

    As the reference (cni-notes 2.5, 3.7): `IFNAME` is replaced by CNI_IFNAME; a key whose first separator
    is '/' is a path as is (for interface names with dots, e.g. VLANs), otherwise dots separate. Refused:
    a first component other than `net`, empty, '.' or '..' components, and characters outside
    [A-Za-z0-9_.:@+-] in a component (the kernel's sysctl names and interface names use no others here).
    """
    name = key.replace("IFNAME", ifname)
    slash, dot = name.find("/"), name.find(".")
    parts = name.split("/") if slash != -1 and (dot == -1 or slash < dot) else name.split(".")
    if (len(parts) < 2 or parts[0] != "net" or any(p in ("", ".", "..") or not _SYSCTL_PART.match(p)
                                                    for p in parts)):
        raise CNIError(ERR_INVALID_CONFIG, f"field 'sysctl': invalid net sysctl key {key!r}",
                       "only keys under net. (/proc/sys/net) are allowed, without '..' or empty parts")
    return "/".join(parts)


def allowlist() -> list[str] | None:
    """The lines of ALLOWLIST (regular expressions), None when the file is absent (everything allowed)."""
    try:
        with open(ALLOWLIST) as f:
            return [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        return None
    except OSError as err:
        raise CNIError(ERR_INTERNAL, f"cannot read {ALLOWLIST}", str(err)) from None


def check_allowed(key: str, patterns: list[str] | None) -> None:
    if patterns is None:
        return
    for pattern in patterns:
        try:
            if re.search(pattern, key):
                return
        except re.error as err:
            raise CNIError(ERR_INTERNAL, f"{ALLOWLIST}: bad regular expression {pattern!r}", str(err)) from None
    raise CNIError(ERR_INVALID_CONFIG, f"field 'sysctl': key {key!r} is not allowed by {ALLOWLIST}")


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise CNIError(ERR_INVALID_CONFIG, f"field {field!r} must be true or false, got {value!r}")
    return value


def _int(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CNIError(ERR_INVALID_CONFIG, f"field {field!r} must be an integer in {low}..{high}, got {value!r}")
    return value


def _mac(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise CNIError(ERR_INVALID_CONFIG, f"field {field!r} must be a MAC address string, got {value!r}")
    return common.check_mac(value, field)


def _sysctls(value: Any, field: str, ifname: str) -> dict[str, tuple[str, str]]:
    """{key: value} -> {key: (path below /proc/sys, value)}; values are strings (Go map[string]string)."""
    if not isinstance(value, dict):
        raise CNIError(ERR_INVALID_CONFIG, f"field {field!r} must be an object of strings, got {value!r}")
    out = {}
    patterns = allowlist()
    for key, val in value.items():
        if not isinstance(val, str) or any(c in val for c in "\0\n\r"):
            raise CNIError(ERR_INVALID_CONFIG, f"field {field!r}: value of {key!r} must be a one-line string, "
                           f"got {val!r}")
        path = sysctl_path(key, ifname)
        check_allowed(key, patterns)
        out[key] = (path, val)
    return out


def parse_config(req: Request) -> dict[str, Any]:
    """Config + runtimeConfig + args.cni + CNI_ARGS -> {"sysctl": {key: (path, value)}, "link": {key: value
    for the configured LINK_KEYS}, "data_dir": str}. CNIError 7 naming the field and value for bad input,
    4 for an unknown CNI_ARGS key without IgnoreUnknown."""
    c = req.config
    link: dict[str, Any] = {}
    ifname = req.ifname or "IFNAME"  # GC and STATUS have no CNI_IFNAME: the keys are still checked
    raw_sysctl = chained.get(c, "sysctl")  # null is "not set"; false, 0, [] are refused (not `or {}`)
    sysctl = _sysctls({} if raw_sysctl is None else raw_sysctl, "sysctl", ifname)
    for key, field in (("mac", "mac"), ("mtu", "mtu"), ("promisc", "promisc"), ("allmulti", "allmulti"),
                       ("txQLen", "txQLen")):
        value = chained.get(c, field)
        if value is not None and not (key == "mac" and value == ""):  # "" is unset, as the reference reads it
            link[key] = value
    mac = req.known_args(("MAC",)).get("MAC")
    if mac:
        link["mac"] = _mac(mac, "CNI_ARGS MAC")
    rt_mac = req.runtime_config("mac")
    if rt_mac:
        link["mac"] = _mac(rt_mac, "runtimeConfig.mac")
    args = chained.get(c, "args")
    cni_args = chained.get(args, "cni") if isinstance(args, dict) else None
    if cni_args is not None:
        if not isinstance(cni_args, dict):
            raise CNIError(ERR_INVALID_CONFIG, f"field 'args.cni' must be an object, got {cni_args!r}")
        for key in ("mac", "mtu", "promisc", "allmulti", "txQLen"):
            value = chained.get(cni_args, key)
            if value is not None and not (key == "mac" and value == ""):
                link[key] = value
        if chained.get(cni_args, "sysctl") is not None:
            sysctl.update(_sysctls(chained.get(cni_args, "sysctl"), "args.cni.sysctl", ifname))
    if "mac" in link:
        link["mac"] = _mac(link["mac"], "mac")
    if "mtu" in link:
        link["mtu"] = _int(link["mtu"], "mtu", 68, 65535)
    if "txQLen" in link:
        link["txQLen"] = _int(link["txQLen"], "txQLen", 0, 2**32 - 1)
    for key in ("promisc", "allmulti"):
        if key in link:
            link[key] = _bool(link[key], key)
    if link.get("promisc") is False:
        del link["promisc"]  # as the reference: promisc false means "leave it" (nothing saved or set)
    data_dir = chained.absolute_dir(c, "dataDir", DEFAULT_DATA_DIR)
    return {"sysctl": sysctl, "link": link, "data_dir": data_dir}


def backup_path(data_dir: str, req: Request) -> str:
    """<dataDir>/<containerID>_<ifname>.json, the reference's name (both parts validated by skel)."""
    return f"{data_dir}/{req.container_id}_{req.ifname}.json"


def link_state(req: Request) -> dict[str, Any]:
    """The container link's current values of LINK_KEYS (`ip -j -d link show dev IFNAME` in the netns);
    CNIError 999 naming the link when it is not there."""
    links = facts.ip_json(facts.ns_ip(req.netns), "-d", "link", "show", "dev", req.ifname)
    if not links:
        raise CNIError(ERR_INTERNAL, f"interface {req.ifname!r} not found in {req.netns}",
                       "cniplug-tuning changes the interface an earlier plugin created")
    link = links[0]
    flags = link.get("flags", [])
    return {"mac": str(link.get("address", "")).lower(), "mtu": int(link.get("mtu", 0)),
            "promisc": "PROMISC" in flags, "allmulti": "ALLMULTI" in flags, "txQLen": int(link.get("txqlen", 0))}


def dry_run_link_state(req: Request, prev: dict[str, Any]) -> dict[str, Any]:
    """--dry-run of a whole list (`cniplug net add --dry-run`), where CNI_IFNAME does not exist yet because the
    plugin before only printed its script: the values a new veth end has (txqueuelen 1000, neither promisc nor
    allmulti), with the MAC and MTU that prevResult gives it (MTU 1500 when it gives none)."""
    mine = [i for i in prev.get("interfaces", []) if i.get("name") == req.ifname and i.get("sandbox")]
    itf = mine[0] if mine else {}
    mtu = itf.get("mtu")
    return {"mac": str(itf.get("mac") or "").lower(),
            "mtu": mtu if isinstance(mtu, int) and not isinstance(mtu, bool) and mtu > 0 else 1500,
            "promisc": False, "allmulti": False, "txQLen": 1000}


def link_steps(ifname: str, target: dict[str, Any], old: dict[str, Any]) -> list[dict[str, Any]]:
    """`ip link set` words per attribute, with the words that restore the old value (rollback)."""
    words: dict[str, Callable[[Any], list[str]]] = {
        "mac": lambda v: ["address", str(v)],
        "mtu": lambda v: ["mtu", str(v)],
        "promisc": lambda v: ["promisc", "on" if v else "off"],
        "allmulti": lambda v: ["allmulticast", "on" if v else "off"],
        "txQLen": lambda v: ["txqueuelen", str(v)],
    }
    out = []
    for key in LINK_KEYS:  # the reference's order: MAC first, then the rest
        if key in target:
            step: dict[str, Any] = {"key": key, "set": words[key](target[key])}
            step["undo"] = words[key](old[key]) if key in old else None
            out.append(step)
    return out


def add(req: Request) -> dict[str, Any] | str | None:
    cfg = parse_config(req)
    prev = chained.require_prev(req)
    if not req.dry_run:
        facts.check_netns(req.netns)
    assumed = False
    try:
        current = link_state(req)
    except CNIError as err:
        listed = any(i.get("name") == req.ifname and i.get("sandbox") for i in prev.get("interfaces", []))
        if not req.dry_run or err.code != ERR_INTERNAL or not listed:  # assumed only where the plugin before made it
            raise
        current, assumed = dry_run_link_state(req, prev), True
    old_sysctls = facts.ns_sysctls(req.netns, [path for path, _ in cfg["sysctl"].values()]) \
        if cfg["sysctl"] else {}
    # A dry run before the interface exists cannot read its own keys (net/*/conf/IFNAME/...): not an error then.
    missing = [key for key, (path, _) in cfg["sysctl"].items() if old_sysctls.get(path) is None
               and not (assumed and f"/{req.ifname}/" in f"/{path}/")]
    if missing:
        raise CNIError(ERR_INVALID_CONFIG, f"field 'sysctl': {missing[0]!r} does not exist in the container "
                       "namespace", f"no file /proc/sys/{cfg['sysctl'][missing[0]][0]}")
    settings = [(path, value) for path, value in cfg["sysctl"].values()]
    link = cfg["link"]
    path = backup_path(cfg["data_dir"], req)
    saved = {key: current[key] for key in LINK_KEYS if key in link}
    text = None
    wrote = False
    if link and not req.dry_run and not os.path.exists(path):
        write_backup(cfg["data_dir"], path, saved)
        wrote = True
    try:
        text = common.perform(
            req, "tuning/add.sh.j2", exec=facts.ns_exec(req.netns), ip=facts.ns_ip(req.netns), ifname=req.ifname,
            settings=settings, old_sysctls={p: old_sysctls[p] for p, _ in settings if old_sysctls.get(p) is not None},
            assumed=assumed,
            steps=link_steps(req.ifname, link, current), backup={"path": path, "json": backup_text(saved)}
            if link else None)
    except BaseException:
        if wrote:
            try:
                os.unlink(path)
            except OSError:
                pass
        raise
    if "mac" in link:
        for itf in prev.get("interfaces", []):
            if itf.get("name") == req.ifname and itf.get("sandbox", req.netns) == req.netns:
                itf["mac"] = link["mac"]
    if text is not None:
        req.dry_result = prev  # what the next plugin of a list gets (cniplug net --dry-run)
        if link:
            text += common.dry_run_file(req.lang, path, backup_text(saved), "0600", keep_existing=True)
        return text
    return prev


def backup_text(saved: dict[str, Any]) -> str:
    """The reference's backup format: Go's json.MarshalIndent with a one-space indent, keys in LINK_KEYS order."""
    return json.dumps({k: saved[k] for k in LINK_KEYS if k in saved}, indent=1)


def write_backup(data_dir: str, path: str, saved: dict[str, Any]) -> None:
    """Save the original link values (dir and file 0600, as the reference's: an odd directory mode, kept
    so both plugins leave the same thing). An existing backup is kept: it holds the values from before the
    first ADD, which a retried ADD must not overwrite with the values it set."""
    try:
        os.makedirs(data_dir, mode=0o600, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    except OSError as err:
        raise CNIError(ERR_INTERNAL, f"failed to create backup file {path}", str(err)) from None
    try:
        os.write(fd, backup_text(saved).encode())
    finally:
        os.close(fd)


def read_backup(path: str) -> dict[str, Any]:
    """The backup's values that are well-formed (a file on disk is input too: anything else is ignored)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, Any] = {}
    checks: dict[str, Callable[[Any], Any]] = {
              "mac": lambda v: _mac(v, "backup mac"), "mtu": lambda v: _int(v, "backup mtu", 68, 65535),
              "promisc": lambda v: _bool(v, "backup promisc"), "allmulti": lambda v: _bool(v, "backup allmulti"),
              "txQLen": lambda v: _int(v, "backup txQLen", 0, 2**32 - 1)}
    for key in LINK_KEYS:
        if key in data:
            try:
                out[key] = checks[key](data[key])
            except CNIError:
                continue
    return out


def delete(req: Request) -> str | None:
    """Restore the link from the backup and remove it; best effort (a gone namespace or link is fine)."""
    cfg = parse_config(req)
    path = backup_path(cfg["data_dir"], req)
    exists = os.path.exists(path)
    saved = read_backup(path) if exists else {}
    alive = facts.netns_alive(req.netns)
    return common.perform(req, "tuning/del.sh.j2", best_effort=True, alive=alive, exists=exists,
                          ip=facts.ns_ip(req.netns) if alive else [], ifname=req.ifname, path=path,
                          steps=link_steps(req.ifname, saved, {}) if alive else [])


def check(req: Request) -> None:
    """CHECK: every configured sysctl (IFNAME substituted: the 1.1.1 reference forgets to) and link
    attribute has the configured value."""
    cfg = parse_config(req)
    chained.require_prev(req)
    facts.check_netns(req.netns)
    values = facts.ns_sysctls(req.netns, [p for p, _ in cfg["sysctl"].values()]) if cfg["sysctl"] else {}
    for key, (path, want) in cfg["sysctl"].items():
        have = values.get(path)
        if have is None or have.split() != want.split():
            raise CNIError(ERR_INTERNAL, f"sysctl {key}: configured {want!r}, current value {have!r}")
    current = link_state(req)
    for key, want in cfg["link"].items():
        if current[key] != want:
            raise CNIError(ERR_INTERNAL, f"{req.ifname} {key}: configured {want!r}, current value {current[key]!r}")


def gc(req: Request) -> str | None:
    """GC removes nothing, on purpose: a backup file is named `<containerID>_<ifname>.json` without the
    network (the reference's name, kept for compatibility), and libcni calls GC once per network with only
    that network's valid attachments. The backup of another network's live container sharing the dataDir
    would look stale, and deleting it would lose the values its DEL must restore. A backup outlives its
    container only by a few bytes; the container's DEL removes it. Config errors are still refused."""
    parse_config(req)
    chained.attachment_ids(req)
    return common.perform(req, "tuning/gc.sh.j2", best_effort=True)


def status(req: Request) -> None:
    """STATUS: `ip` and `nsenter` must be installed (50 otherwise)."""
    parse_config(req)
    common.require_commands(("ip", "nsenter", "sysctl"), "install iproute2, util-linux, procps")


HANDLERS = {"ADD": add, "DEL": delete, "CHECK": check, "GC": gc, "STATUS": status}


ABOUT = "cniplug tuning plugin"


def main() -> None:
    skel.main(HANDLERS, ABOUT)
