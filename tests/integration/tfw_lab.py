"""Helpers for the firewall and tuning tests: a network namespace that plays the host (a "node"), containers
attached to it by a bridge plugin run inside it, and an "outside" namespace routed beyond it.

Names: namespaces `tfw-*` (firewall) and `ttn-*` (tuning), bridges `tfwbr*`/`ttnbr*`, networks `tfwnet*`/
`ttnnet*`; addresses in 10.232.0.0/16. Everything lives inside the node namespace, so the machine's own
FORWARD policy, chains and links are never touched; deleting the namespaces removes whatever a failed run
left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from conftest import PluginRun

from cniplug.cli import plugin_argv
from cniplug.runner import SYSTEM_PATH

REPO = Path(__file__).resolve().parents[2]


def ns(netns: str) -> str:
    return Path(netns).name


def in_ns(name: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, f"{argv} in {name}: {proc.stderr}"
    return proc


def setup_node(name: str, forward_policy: str = "ACCEPT") -> None:
    """lo up, IPv4 forwarding on, DAD off, FORWARD policy as given (in this namespace only)."""
    script = ("set -e; ip link set lo up; sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.default.accept_dad=0;"
              f" iptables -w -P FORWARD {forward_policy}; ip6tables -w -P FORWARD {forward_policy}")
    in_ns(name, "bash", "-c", script)


def add_outside(node: str, outside: str, node_cidr: str, out_cidr: str, routes: list[str], dev: str) -> None:
    """A veth from the node to the `outside` namespace: node end `dev`, outside end `dev`+'o' (names < 15 chars);
    the outside routes `routes` back via the node."""
    gw = node_cidr.split("/")[0]
    in_ns(node, "ip", "link", "add", dev, "type", "veth", "peer", "name", dev + "o", "netns", f"/run/netns/{outside}")
    in_ns(node, "ip", "addr", "add", node_cidr, "dev", dev)
    in_ns(node, "ip", "link", "set", dev, "up")
    in_ns(outside, "ip", "link", "set", "lo", "up")
    in_ns(outside, "ip", "addr", "add", out_cidr, "dev", dev + "o")
    in_ns(outside, "ip", "link", "set", dev + "o", "up")
    for r in routes:
        in_ns(outside, "ip", "route", "add", r, "via", gw)


def run(node: str, plugin: str, command: str, config: dict[str, Any], netns: str, cid: str,
        ifname: str = "eth0", args: str = "") -> PluginRun:
    """Run a plugin inside the node namespace as a runtime does: ours by type name, or a reference binary
    given by absolute path."""
    argv = plugin_argv(plugin) if plugin.startswith("cniplug-") else [plugin]
    env = {"PATH": os.environ.get("PATH", SYSTEM_PATH), "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
           "CNI_NETNS": netns, "CNI_IFNAME": ifname, "CNI_PATH": "/usr/lib/cni", "CNI_ARGS": args,
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run(["ip", "netns", "exec", node, *argv], input=json.dumps(config).encode(), env=env,
                          capture_output=True, timeout=120)
    return PluginRun(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def pings(netns: str, addr: str) -> bool:
    """One ping, 1 s timeout: does a reply come back?"""
    return in_ns(ns(netns), "ping", "-c", "1", "-W", "1", addr, check=False).returncode == 0


def filter_rules(node: str, family: int = 4) -> list[str]:
    """`iptables-save -t filter` of the node without comments and counters."""
    tool = "iptables-save" if family == 4 else "ip6tables-save"
    out = in_ns(node, tool, "-t", "filter", check=False).stdout
    return [line.split(" [")[0] if line.startswith(":") else line for line in out.splitlines()
            if not line.startswith("#")]
