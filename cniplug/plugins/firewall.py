"""cniplug-firewall: a chained plugin that lets a container's traffic through the host's FORWARD chain,
the way the reference `firewall` plugin's iptables backend does it (cni-notes 3.9, observed state 4.3).

Per family the container has addresses for (prevResult `ips`), table filter:

    FORWARD     -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD          (inserted first)
    CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN  (inserted first)
    CNI-FORWARD -d <ip>/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT          (per address)
    CNI-FORWARD -s <ip>/32 -j ACCEPT                                                     (per address)

CNI-ADMIN (`iptablesAdminChainName`) is the administrator's: the plugin creates it and never writes into it.
`ingressPolicy: same-bridge` adds the reference's CNI-ISOLATION-STAGE-1/2 chains, which drop traffic between
bridges that both use that policy. Shared chains and jumps stay on DEL (other containers use them); DEL
removes only the container's two rules per address.

The reference's rules carry no container id, so GC needs to know whose rules are whose: after a successful
ADD the plugin records the attachment's addresses in RECORD_DIR (Python bookkeeping, like IPAM's store);
DEL and GC remove the record with a script step.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from cniplug import facts, rundir, skel
from cniplug.plugins import chained, common
from cniplug.skel import Request, check_ifname
from cniplug.spec import ERR_INTERNAL, ERR_INVALID_CONFIG, ERR_UNSUPPORTED_FIELD, CNIError

FORWARD_CHAIN = "CNI-FORWARD"
DEFAULT_ADMIN_CHAIN = "CNI-ADMIN"
STAGE1 = "CNI-ISOLATION-STAGE-1"
STAGE2 = "CNI-ISOLATION-STAGE-2"
FORWARD_COMMENT = "CNI firewall plugin rules"
ADMIN_COMMENT = "CNI firewall plugin admin overrides"
POLICIES = ("open", "same-bridge")
RECORD_SUBDIR = "firewall"
LOCK_TIMEOUT = 120.0
# iptables chain names: at most 28 characters (XT_EXTENSION_MAXNAMELEN - 1 = 28), not a target's name.
_CHAIN_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,27}$")
_RESERVED = {"ACCEPT", "DROP", "RETURN", "QUEUE", "REJECT", "LOG", "INPUT", "OUTPUT", "FORWARD", "PREROUTING",
             "POSTROUTING", "MASQUERADE", "DNAT", "SNAT", "MARK", FORWARD_CHAIN, STAGE1, STAGE2}


def parse_config(req: Request) -> dict[str, Any]:
    """Config -> {"admin": chain name, "policy": "open"|"same-bridge"}; keys matched case-insensitively.

    Errors: code 2 for `backend: "firewalld"` (no D-Bus client here; the iptables backend is the one
    implemented), 7 for any other bad value, each naming the field and value.
    """
    chained.require_version(req, (0, 4, 0), "cniplug-firewall")
    c = req.config
    backend = chained.get(c, "backend", "")
    if backend == "firewalld":
        raise CNIError(ERR_UNSUPPORTED_FIELD, "field 'backend': \"firewalld\" is not supported",
                       'cniplug-firewall implements the iptables backend only: set "backend": "iptables"')
    if backend not in ("", None, "iptables"):
        raise CNIError(ERR_INVALID_CONFIG, f"field 'backend' must be \"iptables\", got {backend!r}")
    admin = chained.get(c, "iptablesAdminChainName")
    admin = DEFAULT_ADMIN_CHAIN if admin in (None, "") else admin  # not `or`: false, 0, [] are refused below
    if not isinstance(admin, str) or not _CHAIN_RE.match(admin) or admin in _RESERVED:
        raise CNIError(ERR_INVALID_CONFIG, f"field 'iptablesAdminChainName': invalid chain name {admin!r}",
                       "1-28 characters of A-Z a-z 0-9 _ . + -, not a built-in chain, target or CNI chain")
    policy = chained.get(c, "ingressPolicy")
    policy = "open" if policy in (None, "") else policy
    if policy not in POLICIES:
        raise CNIError(ERR_INVALID_CONFIG if policy != "isolated" else ERR_UNSUPPORTED_FIELD,
                       f"field 'ingressPolicy': unknown ingress policy {policy!r}",
                       "supported: \"open\" (default), \"same-bridge\"")
    zone = chained.get(c, "firewalldZone", "")
    if zone is not None and not isinstance(zone, str):
        raise CNIError(ERR_INVALID_CONFIG, f"field 'firewalldZone' must be a string, got {zone!r}")
    return {"admin": admin, "policy": policy}


def addresses(prev: dict[str, Any] | None) -> dict[int, list[str]]:
    """prevResult ips -> {4: ['10.1.2.3/32', ...], 6: ['fd00::3/128', ...]} (as iptables -S prints them)."""
    out: dict[int, list[str]] = {}
    for ip in (prev or {}).get("ips", []):
        cidr = common.host_cidr(ip["address"])
        family = ipaddress.ip_interface(cidr).version
        if cidr not in out.setdefault(family, []):
            out[family].append(cidr)
    return out


def ip_rules(cidr: str) -> list[list[str]]:
    """The container's two rules in CNI-FORWARD (argv after `-A CNI-FORWARD`), in the reference's order."""
    return [["-d", cidr, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
            ["-s", cidr, "-j", "ACCEPT"]]


def isolation_comment(policy: str) -> str:
    return f"{FORWARD_COMMENT} (ingressPolicy: {policy})"


def _rules(lines: list[str], chain: str) -> list[list[str]]:
    """`iptables -S` lines -> the argv of each `-A CHAIN` rule (after `-A CHAIN`)."""
    out = []
    for line in lines:
        if line.startswith(f"-A {chain} "):
            out.append(facts.iptables_words(line)[2:])
    return out


def _chain_exists(lines: list[str], chain: str) -> bool:
    return f"-N {chain}" in lines or any(line.startswith(f"-P {chain} ") for line in lines)


def bridge_of(prev: dict[str, Any]) -> str:
    """same-bridge: the bridge is prevResult.interfaces[0] (as the reference reads it)."""
    interfaces = prev.get("interfaces") or []
    name = interfaces[0].get("name") if interfaces else None
    if not isinstance(name, str) or not name:
        raise CNIError(ERR_INVALID_CONFIG, "ingressPolicy same-bridge: prevResult.interfaces[0] names no bridge")
    return check_ifname(name, "prevResult.interfaces[0].name")


def plan_add(cfg: dict[str, Any], prev: dict[str, Any]) -> list[dict[str, Any]]:
    """Per family: what is missing of the shared chains and jumps, the container's rules and the isolation
    rules (facts: `iptables -S` of FORWARD, CNI-FORWARD, the admin chain and the isolation chains)."""
    admin = cfg["admin"]
    bridge = bridge_of(prev) if cfg["policy"] == "same-bridge" else ""
    families = []
    for family, cidrs in sorted(addresses(prev).items()):
        forward = facts.iptables_rules(family, "filter", "FORWARD")
        cni = facts.iptables_rules(family, "filter", FORWARD_CHAIN)
        admin_lines = facts.iptables_rules(family, "filter", admin)
        forward_jump = ["-m", "comment", "--comment", FORWARD_COMMENT, "-j", FORWARD_CHAIN]
        admin_jump = ["-m", "comment", "--comment", ADMIN_COMMENT, "-j", admin]
        have = _rules(cni, FORWARD_CHAIN)
        rules = [r for cidr in cidrs for r in ip_rules(cidr) if r not in have]
        f: dict[str, Any] = {
            "tool": "iptables" if family == 4 else "ip6tables",
            "new_forward_chain": not _chain_exists(cni, FORWARD_CHAIN),
            "new_admin_chain": not _chain_exists(admin_lines, admin),
            "admin": admin,
            "forward_jump": forward_jump if forward_jump not in _rules(forward, "FORWARD") else None,
            "admin_jump": admin_jump if admin_jump not in have else None,
            "rules": rules,
            "isolation": plan_isolation(family, bridge, cfg["policy"], forward) if bridge else None,
        }
        families.append(f)
    return families


def plan_isolation(family: int, bridge: str, policy: str, forward: list[str]) -> dict[str, Any]:
    """The reference's isolation chains for one bridge: what is missing of them."""
    comment = ["-m", "comment", "--comment", isolation_comment(policy)]
    s1 = facts.iptables_rules(family, "filter", STAGE1)
    s2 = facts.iptables_rules(family, "filter", STAGE2)
    s1_rules, s2_rules = _rules(s1, STAGE1), _rules(s2, STAGE2)
    want1 = ["-i", bridge, "!", "-o", bridge, *comment, "-j", STAGE2]
    want2 = ["-o", bridge, *comment, "-j", "DROP"]
    ret = [*comment, "-j", "RETURN"]
    jump = [*comment, "-j", STAGE1]
    return {
        "bridge": bridge,
        "new_stage1": not _chain_exists(s1, STAGE1), "new_stage2": not _chain_exists(s2, STAGE2),
        "stage1": want1 if want1 not in s1_rules else None, "stage2": want2 if want2 not in s2_rules else None,
        "return1": ret if ret not in s1_rules else None, "return2": ret if ret not in s2_rules else None,
        "jump": jump if jump not in _rules(forward, "FORWARD") else None,
    }


# ---- records: whose rules are whose, for GC -------------------------------------------------------------

def record_path(network: str, container_id: str, ifname: str) -> str:
    """/run/cniplug/firewall/fw-<sha256(network, id, ifname)[:32]>.json (names need no escaping)."""
    digest = hashlib.sha256(f"{network}\0{container_id}\0{ifname}".encode()).hexdigest()[:32]
    return f"{rundir.RUN_DIR}/{RECORD_SUBDIR}/fw-{digest}.json"


def read_records() -> list[tuple[str, dict[str, Any]]]:
    """Every record as (path, {"network", "containerID", "ifname", "ips": [cidr, ...]}); unreadable or
    malformed files are skipped (they hold no rule of ours that could be named safely)."""
    out: list[tuple[str, dict[str, Any]]] = []
    directory = f"{rundir.RUN_DIR}/{RECORD_SUBDIR}"
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return out
    for name in names:
        if not (name.startswith("fw-") and name.endswith(".json")):
            continue
        path = f"{directory}/{name}"
        try:
            with open(path) as f:
                data = json.load(f)
            ips = [common.host_cidr(ip) for ip in data["ips"]]
            if not all(isinstance(data[k], str) for k in ("network", "containerID", "ifname")):
                continue
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            continue
        out.append((path, {**data, "ips": ips}))
    return out


def record_body(req: Request, prev: dict[str, Any]) -> str:
    """The record's JSON: {"network", "containerID", "ifname", "ips": [cidr, ...]}."""
    ips = [cidr for cidrs in addresses(prev).values() for cidr in cidrs]
    return json.dumps({"network": req.name, "containerID": req.container_id, "ifname": req.ifname, "ips": ips})


def write_record(req: Request, prev: dict[str, Any]) -> None:
    """After a successful ADD: the attachment's addresses, for a later GC (mode 0600, written atomically)."""
    path = record_path(req.name, req.container_id, req.ifname)
    rundir.ensure(RECORD_SUBDIR)
    body = record_body(req, prev)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, body.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def plan_removal(cidrs_by_family: dict[int, list[str]], keep: set[str]) -> list[dict[str, Any]]:
    """DEL/GC: the container rules that are present for these addresses, except addresses in `keep` (held
    by another recorded attachment: an address reused before GC ran must keep its rules)."""
    out = []
    for family, cidrs in sorted(cidrs_by_family.items()):
        present = _rules(facts.iptables_rules(family, "filter", FORWARD_CHAIN), FORWARD_CHAIN)
        rules = [r for cidr in cidrs if cidr not in keep for r in ip_rules(cidr) if r in present]
        if rules:
            out.append({"tool": "iptables" if family == 4 else "ip6tables", "rules": rules})
    return out


def lock_path() -> str:
    return f"{rundir.RUN_DIR}/firewall.lock"


@contextmanager
def firewall_lock(_name: str) -> Iterator[Callable[[], None]]:
    """Serialise ADD/DEL/GC of this plugin on the host: probes and changes of the shared chains stay
    consistent (two ADDs would otherwise both find CNI-FORWARD missing and both create it). 11 past
    LOCK_TIMEOUT, 999 when the lock cannot be opened (not root)."""
    try:
        rundir.ensure()
        fd = os.open(lock_path(), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise CNIError(ERR_INTERNAL, f"cannot open the firewall lock: {err}", "cniplug-firewall runs as root") from None
    try:
        common.flock_with_timeout(fd, LOCK_TIMEOUT, "another cniplug-firewall call holds the lock")
        yield lambda: None
    finally:
        os.close(fd)


# ---- verbs ------------------------------------------------------------------------------------------------

def add(req: Request) -> dict[str, Any] | str | None:
    cfg = parse_config(req)
    prev = chained.require_prev(req)
    with common.maybe_lock(req, firewall_lock, "firewall"):
        families = plan_add(cfg, prev)
        path = record_path(req.name, req.container_id, req.ifname)
        text = common.perform(req, "firewall/add.sh.j2", families=families, policy=cfg["policy"], record=path)
        if text is not None:
            return text + common.dry_run_file(req.lang, path, record_body(req, prev), "0700", keep_existing=False)
        write_record(req, prev)
    return prev


def delete(req: Request) -> str | None:
    """Remove the container's rules: the addresses of prevResult and of its record (DEL may come without
    prevResult); shared chains and jumps stay. Best effort: anything already gone is fine."""
    parse_config(req)
    prev = req.prev_result()
    mine = record_path(req.name, req.container_id, req.ifname)
    with common.maybe_lock(req, firewall_lock, "firewall"):
        records = read_records()
        cidrs = addresses(prev)
        for path, rec in records:
            if path == mine:
                for cidr in rec["ips"]:
                    family = ipaddress.ip_interface(cidr).version
                    if cidr not in cidrs.setdefault(family, []):
                        cidrs[family].append(cidr)
        keep = {cidr for path, rec in records if path != mine for cidr in rec["ips"]}
        removal = plan_removal(cidrs, keep)
        return common.perform(req, "firewall/del.sh.j2", best_effort=True, removal=removal,
                              records=[mine] if any(p == mine for p, _ in records) else [], gc=False)


def gc(req: Request) -> str | None:
    """GC (spec 1.1.0): the rules of this network's recorded attachments that are not in
    cni.dev/valid-attachments; without that key nothing is removed."""
    parse_config(req)
    valid = chained.attachment_ids(req)
    if valid is None:
        return common.perform(req, "firewall/del.sh.j2", best_effort=True, removal=[], records=[], gc=True)
    with common.maybe_lock(req, firewall_lock, "firewall"):
        records = read_records()
        stale: list[tuple[str, dict[str, Any]]] = []
        keep: set[str] = set()
        for path, rec in records:
            # Another network's records are not ours to judge; an entry without ifname covers every ifname.
            alive = (rec["network"] != req.name or (rec["containerID"], rec["ifname"]) in valid
                     or (rec["containerID"], "") in valid)
            if alive:
                keep.update(rec["ips"])
            else:
                stale.append((path, rec))
        cidrs: dict[int, list[str]] = {}
        for _, rec in stale:
            for cidr in rec["ips"]:
                cidrs.setdefault(ipaddress.ip_interface(cidr).version, []).append(cidr)
        removal = plan_removal(cidrs, keep)
        return common.perform(req, "firewall/del.sh.j2", best_effort=True, removal=removal,
                              records=[p for p, _ in stale], gc=True)


def check(req: Request) -> None:
    """CHECK: the chains, the jumps and the container's rules (and the isolation rules) are all there."""
    cfg = parse_config(req)
    prev = chained.require_prev(req)
    for f in plan_add(cfg, prev):
        missing = []
        if f["new_forward_chain"] or f["new_admin_chain"]:
            missing.append(f"chain {FORWARD_CHAIN if f['new_forward_chain'] else f['admin']}")
        for key, chain in (("forward_jump", "FORWARD"), ("admin_jump", FORWARD_CHAIN)):
            if f[key]:
                missing.append(f"rule [-A {chain} {shlex.join(f[key])}]")
        missing += [f"rule [-A {FORWARD_CHAIN} {shlex.join(r)}]" for r in f["rules"]]
        iso = f["isolation"]
        if iso:
            for key, chain in (("stage1", STAGE1), ("return1", STAGE1), ("stage2", STAGE2), ("return2", STAGE2),
                               ("jump", "FORWARD")):
                if iso[key]:
                    missing.append(f"rule [-A {chain} {shlex.join(iso[key])}]")
        if missing:
            raise CNIError(ERR_INTERNAL, f"{f['tool']}: expected {missing[0]} not found",
                           "; ".join(missing[1:]))


def status(req: Request) -> None:
    """STATUS: iptables and iptables-restore must be installed (50 otherwise)."""
    parse_config(req)
    common.require_commands(("iptables", "iptables-restore", "ip6tables", "ip6tables-restore"), "install iptables")


HANDLERS = {"ADD": add, "DEL": delete, "CHECK": check, "GC": gc, "STATUS": status}


ABOUT = "cniplug firewall plugin"


def main() -> None:
    skel.main(HANDLERS, ABOUT)
