"""Helpers for the reliability tests (test_faults, test_concurrency, test_soak, test_files).

Everything here is named `tcr`: host namespaces `tcp-r-h*`, container namespaces `tcp-r-*` (via make_netns),
bridges `tcrbr<N>`, networks `tcrnet<N>`; addresses from 10.250.140.0/22 and fd10:250:140::/48.

The plugin's "host" is a private network namespace (`ip netns exec tcp-r-h...`): the same kernel code as the
real host, but its full state (links, addresses, routes, iptables, forwarding sysctls) belongs to the test
alone, so it can be compared before/after as a whole even while other suites run on the machine, and
deleting the namespace removes whatever a failed run left behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from conftest import PluginRun

from cniplug.cli import plugin_argv
from cniplug.plugins.bridge import lock_path
from cniplug.runner import SYSTEM_PATH

REPO = Path(__file__).resolve().parents[2]
LOCK_DIR = Path("/run/cniplug")
IP = shutil.which("ip", path=SYSTEM_PATH) or "/usr/sbin/ip"  # absolute: a fake `ip` first in PATH must not see it


# ---------------------------------------------------------------------------------------------- host namespace


def setup_host(name: str) -> None:
    """A fresh 'host': lo up, forwarding off (so the plugin's forwarding steps and their undo run), DAD off
    (no tentative addresses to make snapshots flaky), and the nat tables present (iptables-nft creates a table
    on first use and never removes it, which would otherwise show up as a difference)."""
    script = (
        "set -e; ip link set lo up; sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0"
        " net.ipv6.conf.default.accept_dad=0;"
        " for t in iptables ip6tables; do $t -w -t nat -N TCR-INIT; $t -w -t nat -X TCR-INIT; done"
    )
    proc = subprocess.run(["ip", "netns", "exec", name, "bash", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def plugin_env(command: str, netns: str, container_id: str, ifname: str = "eth0", path_prefix: str = "",
               extra: dict[str, str] | None = None) -> dict[str, str]:
    path = os.environ.get("PATH", SYSTEM_PATH)
    env = {
        "PATH": f"{path_prefix}:{path}" if path_prefix else path,
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_PATH": "/usr/lib/cni",
        "CNI_ARGS": "",
        "PYTHONPATH": str(REPO),
    }
    env.update(extra or {})
    return env


def host_argv(host: str, plugin: str) -> list[str]:
    """Exec the plugin inside the host namespace (`ip netns exec` execs, it does not fork: same PID); for a
    host with a helper (HelperHost), the installed executable in the helper's namespaces."""
    if host in HELPER_HOSTS:
        return HELPER_HOSTS[host].argv(plugin)
    return [IP, "netns", "exec", host, *plugin_argv(plugin)]


def run_in_host(host: str, plugin: str, command: str, config: dict[str, Any], netns: str, container_id: str,
                ifname: str = "eth0", path_prefix: str = "", timeout: float = 120) -> PluginRun:
    """Run the plugin in the host namespace as a runtime does. Through a HelperHost's helper, every call must
    have been served by the helper (its stats line on stderr), never by a silent standalone fallback."""
    env = plugin_env(command, netns, container_id, ifname, path_prefix)
    helper = HELPER_HOSTS.get(host)
    if helper is not None:
        env.update(helper.env)
    proc = subprocess.run(host_argv(host, plugin), input=json.dumps(config).encode(), env=env,
                          capture_output=True, timeout=timeout)
    run = PluginRun(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    if helper is not None:
        helper.assert_served(run.stderr)
    return run


def in_host(host: str, *argv: str) -> str:
    proc = subprocess.run([IP, "netns", "exec", host, *argv], capture_output=True, text=True)
    assert proc.returncode == 0, f"{argv} in {host}: {proc.stderr}"
    return proc.stdout


# ---------------------------------------------------------------------------------------------- state snapshot

SEP = "@@tcr@@"
_COUNTERS = re.compile(r"\[\d+:\d+\]")
# Counters and timers that move on their own (`ip -d` shows the bridge's and its ports' STP timers).
_VOLATILE = ("valid_life_time", "preferred_life_time", "expires", "hello_timer", "tcn_timer",
             "topology_change_timer", "gc_timer", "hold_timer", "message_age_timer", "forward_delay_timer")


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _ip_prefix(netns: str) -> str:
    m = re.match(r"^/(?:var/)?run/netns/([^/]+)$", netns)
    return f"ip -n {m.group(1)}" if m else f"nsenter --net={netns} ip"


def snapshot(host: str, containers: list[str], data_dir: Path | None = None, bridge: str = "") -> dict[str, Any]:
    """The whole network state of the host namespace and the container namespaces, plus the IPAM store.

    One `bash` in the host namespace prints everything (fast: a snapshot costs ~30 ms). Links with `-d`
    (kind, bridge and port settings, the bridge id that carries its MAC) and, from /sys, how each host
    link's MAC was assigned (addr_assign_type: 3 once set, e.g. by a MAC pin, which ip does not show).
    """
    parts = [
        "ip -d -j link show",
        "for f in /sys/class/net/*/addr_assign_type; do echo \"${f#/sys/class/net/} $(cat $f)\"; done",
        "ip -j addr show", "ip -j -4 route show table all", "ip -j -6 route show table all",
        "iptables-save", "ip6tables-save",
        "cat /proc/sys/net/ipv4/ip_forward", "cat /proc/sys/net/ipv6/conf/all/forwarding",
        f"cat /proc/sys/net/ipv6/conf/{bridge or 'tcr-none'}/accept_ra 2>/dev/null || echo absent",
        # the nftables tables the plugins make (masquerade backend, macspoofchk); not iptables-nft's own
        "nft list table inet cni_plugins_masquerade 2>/dev/null; nft list table bridge nat 2>/dev/null; true",
    ]
    for c in containers:
        ip = _ip_prefix(c)
        parts += [f"{ip} -d -j link show", f"{ip} -j addr show", f"{ip} -j -4 route show table all",
                  f"{ip} -j -6 route show table all"]
    script = f"; echo {SEP}; ".join(parts)
    out = in_host(host, "bash", "-c", script)
    chunks = out.split(SEP + "\n")
    assert len(chunks) == len(parts), out
    names = ["link", "mac_assign", "addr", "route4", "route6", "iptables", "ip6tables", "ip_forward", "forwarding6",
             "bridge_accept_ra", "nft"]
    for i, _ in enumerate(containers):
        names += [f"c{i}.link", f"c{i}.addr", f"c{i}.route4", f"c{i}.route6"]
    state: dict[str, Any] = {}
    for name, chunk in zip(names, chunks, strict=True):
        if name.endswith(("link", "addr", "route4", "route6")):
            state[name] = _strip(json.loads(chunk)) if chunk.strip() else []
        elif name in ("mac_assign", "nft"):
            state[name] = chunk.splitlines()
        elif name in ("iptables", "ip6tables"):
            state[name] = [_COUNTERS.sub("[0:0]", line) for line in chunk.splitlines() if not line.startswith("#")]
        else:
            state[name] = chunk.strip()
    if data_dir is not None:
        state["ipam"] = store_listing(data_dir)
    return state


def store_listing(data_dir: Path) -> dict[str, str]:
    """Every file and directory under data_dir: path -> mode + content."""
    out: dict[str, str] = {}
    if not data_dir.exists():
        return out
    for p in sorted(data_dir.rglob("*")):
        rel = str(p.relative_to(data_dir))
        mode = oct(p.stat().st_mode & 0o7777)
        out[rel] = f"dir {mode}" if p.is_dir() else f"file {mode} {p.read_bytes()!r}"
    return out


def reservations(data_dir: Path) -> dict[str, str]:
    """Only the IP files (what host-local holds for containers); not the lock or the round-robin cursor."""
    return {k: v for k, v in store_listing(data_dir).items()
            if not v.startswith("dir") and not k.endswith("/lock") and "/last_reserved_ip." not in k}


def cursor_only(key: str) -> bool:
    """Store entries a failed ADD may legitimately leave: the directory, its lock and the round-robin cursor
    (IPAM ADD then IPAM DEL advances last_reserved_ip.N, exactly as the reference host-local does)."""
    parts = key.split("/")
    return len(parts) == 1 or parts[-1] == "lock" or parts[-1].startswith("last_reserved_ip.")


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Human-readable differences; the IPAM directory/lock/cursor are reported separately (see cursor_only)."""
    out = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if key == "ipam":
            a, b = a or {}, b or {}
            for k in sorted(set(a) | set(b)):
                if a.get(k) != b.get(k) and not cursor_only(k):
                    out.append(f"ipam {k}: {a.get(k)} -> {b.get(k)}")
            continue
        if a != b:
            if isinstance(a, list) and isinstance(b, list):
                gone = [x for x in a if x not in b]
                new = [x for x in b if x not in a]
                out.append(f"{key}: removed {json.dumps(gone)[:600]} added {json.dumps(new)[:600]}")
            else:
                out.append(f"{key}: {str(a)[:300]} -> {str(b)[:300]}")
    return out


def leftovers(host: str, containers: list[str], data_dir: Path, bridge: str) -> list[str]:
    """What an attachment leaves when it has not been cleaned up: veths, CNI chains, reservations, container
    interfaces other than lo."""
    out = []
    links = json.loads(in_host(host, "ip", "-j", "link", "show"))
    veths = [link["ifname"] for link in links if link["ifname"].startswith("veth")]
    if veths:
        out.append(f"host veths {veths}")
    if bridge:
        ports = [link["ifname"] for link in links if link.get("master") == bridge]
        if ports:
            out.append(f"ports on {bridge}: {ports}")
    for tool in ("iptables-save", "ip6tables-save"):
        chains = sorted({w for line in in_host(host, tool).splitlines() for w in line.split() if
                         w.lstrip(":").startswith("CNI-")})
        if chains:
            out.append(f"{tool}: {chains}")
    listing = in_host(host, "bash", "-c", "nft list table inet cni_plugins_masquerade 2>/dev/null; "
                      "nft list table bridge nat 2>/dev/null; true")
    nft_rules = [line.strip() for line in listing.splitlines()
                 if "masquerade comment" in line or "macspoofchk-" in line or "chain cni-br-iface-" in line]
    if nft_rules:
        out.append(f"nft: {nft_rules}")
    held = reservations(data_dir)
    if held:
        out.append(f"reservations {sorted(held)}")
    for c in containers:
        proc = subprocess.run(_ip_prefix(c).split() + ["-j", "link", "show"], capture_output=True, text=True)
        names = [link["ifname"] for link in json.loads(proc.stdout or "[]")] if proc.returncode == 0 else []
        if [n for n in names if n != "lo"]:
            out.append(f"container {c} links {names}")
    return out


# ---------------------------------------------------------------------------------------------- fake PATH

WRAPPED = ("ip", "iptables", "ip6tables", "iptables-restore", "ip6tables-restore", "sysctl", "nsenter", "tc")
WRAPPED += ("nft",)  # the nftables backends (masquerade, macspoofchk, portmap): `nft -j ... list` probes

WRAPPER = r"""#!/bin/bash
# tcr fault wrapper: counts mutating invocations, fails (or sleeps on) the chosen one, else runs the real command.
d={dir}
real={real}
name={name}
probe=0
case "$name" in
  ip|nsenter|tc|nft) for a in "$@"; do [ "$a" = -j ] && probe=1; done ;;
  iptables|ip6tables) for a in "$@"; do case "$a" in -S|-L|--list|--list-rules) probe=1 ;; esac; done ;;
  sysctl) probe=1; for a in "$@"; do case "$a" in -w|*=*) probe=0 ;; esac; done ;;
esac
exec 8>>"$d/lock"
flock 8
if [ $probe = 1 ]; then
  printf 'P\t%s %s\n' "$name" "$*" >> "$d/log"
  exec 8>&-
else
  n=$(( $(cat "$d/count" 2>/dev/null || echo 0) + 1 ))
  echo $n > "$d/count"
  printf 'M%s\t%s %s\n' "$n" "$name" "$*" >> "$d/log"
  exec 8>&-
  if [ "$(cat "$d/mode" 2>/dev/null)" = deny ]; then
    echo "tcr-fault: mutating command refused" >&2
    exit 1
  fi
  if [ "$n" = "$(cat "$d/fail_at" 2>/dev/null)" ]; then
    batch=0
    case "$name" in *-restore) batch=1 ;; esac
    for a in "$@"; do [ "$a" = -batch ] && batch=1; done
    [ $batch = 1 ] && cat > "$d/failed_stdin"
    (printf '%s' "$name"; printf ' %q' "$@"; echo) > "$d/failed_argv"  # %q: words with blanks (nft) stay whole
    if [ "$(cat "$d/mode" 2>/dev/null)" = sleep ]; then
      echo "$$ $PPID" > "$d/sleeping.tmp"; mv "$d/sleeping.tmp" "$d/sleeping"
      exec sleep 120
    fi
    echo "tcr-fault: injected failure of invocation $n ($name)" >&2
    exit 1
  fi
fi
if [ "$name" = nsenter ]; then
  # the command nsenter starts must not be counted a second time
  export PATH={clean_path}
fi
exec "$real" "$@"
"""


class FakePath:
    """A directory of wrappers put first in the plugin's PATH (runner.which resolves through PATH first).

    mode "fail": invocation fail_at fails; "sleep": it hangs (to SIGKILL the plugin there); "deny": every
    mutating invocation fails (hostile-input tests: nothing may change even if validation let a case through).
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        clean = os.environ.get("PATH", "") + ":" + SYSTEM_PATH
        for name in WRAPPED:
            real = shutil.which(name, path=SYSTEM_PATH)
            assert real, f"{name} not installed"
            path = directory / name
            path.write_text(WRAPPER.format(dir=_q(str(directory)), real=_q(real), name=name, clean_path=_q(clean)))
            path.chmod(0o755)
        self.reset()

    def reset(self, fail_at: int = 0, mode: str = "fail") -> None:
        for f in ("count", "log", "failed_stdin", "failed_argv", "sleeping"):
            (self.dir / f).unlink(missing_ok=True)
        (self.dir / "fail_at").write_text(str(fail_at))
        (self.dir / "mode").write_text(mode)

    @property
    def count(self) -> int:
        p = self.dir / "count"
        return int(p.read_text()) if p.exists() else 0

    def log(self) -> list[tuple[str, str]]:
        p = self.dir / "log"
        if not p.exists():
            return []
        return [tuple(line.split("\t", 1)) for line in p.read_text().splitlines()]  # type: ignore[misc]

    def read(self, name: str) -> str:
        p = self.dir / name
        return p.read_text() if p.exists() else ""


def _q(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def remove_nft_lock() -> None:
    """Unlink /run/cniplug/nft.lock (made by ADDs that use nftables) unless a plugin holds it: taken
    exclusively, without waiting, as the plugins' lock protocol asks (common.nft_lock)."""
    import fcntl

    from cniplug.plugins.common import nft_lock_path

    try:
        fd = os.open(nft_lock_path(), os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(nft_lock_path())
    except OSError:
        pass  # held by a running plugin, or already gone
    finally:
        os.close(fd)


def remove_lock_files(bridges: list[str]) -> None:
    for b in bridges:
        Path(lock_path(b)).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- through a helper

HELPER_HOSTS: dict[str, HelperHost] = {}


class HelperHost:
    """Plugin calls into host namespace `host` go through installed executables and a `cniplug helper`
    serving in that same network and mount namespace (the helper declines calls from any other).

    `ip netns exec` makes a new mount namespace on every call (it remounts /sys), so a sleeper started
    with it holds one, and the helper and every plugin call enter it with `nsenter -t PID --net --mount`.
    Registered in HELPER_HOSTS, so run_in_host and host_argv use it. `close` ends what it started.
    """

    def __init__(self, host: str, bin_dir: Path) -> None:
        import sys
        import time

        self.host = host
        self.bin_dir = bin_dir
        subprocess.run([sys.executable, "-m", "cniplug", "install", "--bin-dir", str(bin_dir), "--no-auto-helper"],
                       check=True,
                       capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        self.sleeper = subprocess.Popen([IP, "netns", "exec", host, "sleep", "infinity"])
        nsenter = shutil.which("nsenter", path=SYSTEM_PATH) or "/usr/bin/nsenter"  # absolute: not a fake one
        self.enter = [nsenter, "-t", str(self.sleeper.pid), "--net", "--mount"]
        deadline = time.monotonic() + 10
        while os.stat(f"/proc/{self.sleeper.pid}/ns/mnt").st_ino == os.stat("/proc/self/ns/mnt").st_ino:
            assert time.monotonic() < deadline, "ip netns exec did not enter its namespaces"
            time.sleep(0.01)
        self.socket = f"/run/cniplug/tcr-helper-{host}.sock"
        self.helper = subprocess.Popen([*self.enter, sys.executable, "-m", "cniplug", "helper", "--socket",
                                        self.socket], stderr=subprocess.DEVNULL,
                                       env={**os.environ, "PYTHONPATH": str(REPO)})
        while not os.path.exists(self.socket):
            assert self.helper.poll() is None and time.monotonic() < deadline, "the helper did not start"
            time.sleep(0.05)
        self.env = {"CNIPLUG_HELPER_SOCKET": self.socket, "CNIPLUG_HELPER_STATS": "1"}
        self.served = 0
        HELPER_HOSTS[host] = self

    def argv(self, plugin: str) -> list[str]:
        return [*self.enter, str(self.bin_dir / plugin)]

    def assert_served(self, stderr: str) -> None:
        assert "cniplug-helper-stats" in stderr, f"the helper did not serve this call: {stderr[-500:]}"
        self.served += 1

    def close(self) -> None:
        HELPER_HOSTS.pop(self.host, None)
        for proc in (self.helper, self.sleeper):
            proc.terminate()
            proc.wait(timeout=30)
        Path(self.socket).unlink(missing_ok=True)
