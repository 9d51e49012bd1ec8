"""Read-only probes against the kernel: the rtnetlink address listing gives what `ip` gives.

Runs inside its own namespace `tcp-f-addr` (ip netns exec: /sys and netlink are that namespace's), with a
veth `tcfd0` carrying IPv4 primary and secondary addresses, a point-to-point address, IPv6 global
and link-local addresses and a host-scoped one, all from 10.250.160.0/24 and fd10:250:160::/64.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
SETUP = [
    "ip link add tcfd0 type veth peer name tcfd1",  # no dummy module on every kernel
    "ip link set tcfd0 up",
    "ip link set tcfd1 up",
    "ip addr add 10.250.160.1/24 dev tcfd0",
    "ip addr add 10.250.160.2/24 dev tcfd0",  # secondary
    "ip addr add 10.250.160.9 peer 10.250.160.10/32 dev tcfd0",
    "ip addr add 10.250.160.77/32 dev tcfd0 scope host",  # not global: not listed
    "ip -6 addr add fd10:250:160::1/64 dev tcfd0 nodad",
    "ip -6 addr add fe80::1234/64 dev tcfd0 nodad",  # link scope: not listed
]
PROBE = """
import json, subprocess, sys
from cniplug import facts
via_ip = facts.addresses(["ip", "-n", "tcp-f-addr"], "tcfd0")  # the ip path (prefix is not the host's)
print(json.dumps({"netlink": facts.host_addresses("tcfd0"), "ip": via_ip,
                  "missing": facts.host_addresses("tcfd-none"), "lo": facts.host_addresses("lo")}))
"""


def test_netlink_addresses_equal_ip_json(make_netns: Callable[[str], str]) -> None:
    name = os.path.basename(make_netns("f-addr"))
    for line in SETUP:
        subprocess.run(["ip", "netns", "exec", name, *line.split()], check=True, capture_output=True)
    proc = subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c", PROBE], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["netlink"] == got["ip"]
    assert sorted(got["netlink"]) == sorted(["10.250.160.1/24", "10.250.160.2/24", "10.250.160.9/32",
                                             "fd10:250:160::1/64"])
    assert got["missing"] == [] and got["lo"] == []
