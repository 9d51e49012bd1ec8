"""Soak: N ADD/DEL cycles in a row (N from CNIPLUG_SOAK_CYCLES, default 500); everything returns to where it was.

Counted before, every 100 cycles, and after: links, addresses and routes (host and container namespaces),
iptables rules (iptables-save + ip6tables-save lines), IPAM files, and the files under /run/cniplug and
/var/lib/cni that belong to this test. The plugin's host is a private namespace (see tcr_netstate); names
`tcr`, addresses 10.250.143.0/26 and fd10:250:140:20::/64.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tcr_netstate import in_host, remove_lock_files, run_in_host, setup_host

pytestmark = pytest.mark.root

CYCLES = int(os.environ.get("CNIPLUG_SOAK_CYCLES", "500"))


def files_under(root: str, marker: str = "") -> int:
    n = 0
    for _dirpath, dirnames, filenames in os.walk(root):
        n += sum(1 for name in filenames + dirnames if marker in name)
    return n


def counts(host: str, netns: str, data: Path) -> dict[str, int]:
    c = Path(netns).name

    def n(*argv: str) -> int:
        out = in_host(*argv)
        return len(json.loads(out)) if out.strip() else 0

    def naddrs(*argv: str) -> int:
        return sum(len(link.get("addr_info", [])) for link in json.loads(in_host(*argv)))

    return {
        "host links": n(host, "ip", "-j", "link", "show"),
        "host addrs": naddrs(host, "ip", "-j", "addr", "show"),
        "host routes": n(host, "ip", "-j", "-4", "route", "show", "table", "all")
        + n(host, "ip", "-j", "-6", "route", "show", "table", "all"),
        "container links": n(host, "ip", "-n", c, "-j", "link", "show"),
        "container addrs": naddrs(host, "ip", "-n", c, "-j", "addr", "show"),
        "container routes": n(host, "ip", "-n", c, "-j", "-4", "route", "show", "table", "all")
        + n(host, "ip", "-n", c, "-j", "-6", "route", "show", "table", "all"),
        "iptables lines": sum(1 for tool in ("iptables-save", "ip6tables-save")
                              for line in in_host(host, tool).splitlines() if not line.startswith("#")),
        "ipam files": files_under(str(data)),
        "/run/cniplug tcr files": files_under("/run/cniplug", "tcr"),
        "/var/lib/cni tcr files": files_under("/var/lib/cni", "tcr"),
    }


def test_soak_add_del_cycles(make_netns: Callable[[str], str], tmp_path: Path) -> None:
    host = Path(make_netns("r-hsoak")).name
    setup_host(host)
    netns = make_netns("r-csoak")
    data = tmp_path / "ipam"
    config: dict[str, Any] = {
        "cniVersion": "1.0.0", "name": "tcrnet20", "type": "cniplug-bridge", "bridge": "tcrbr20",
        "isGateway": True, "ipMasq": True,
        "ipam": {"type": "cniplug-host-local", "dataDir": str(data),
                 "ranges": [[{"subnet": "10.250.143.0/26"}], [{"subnet": "fd10:250:140:20::/64"}]],
                 "routes": [{"dst": "0.0.0.0/0"}]}}
    try:
        # Warm-up cycle: the bridge, forwarding, the store's lock and cursor are created once and stay (by design).
        assert run_in_host(host, "cniplug-bridge", "ADD", config, netns, "tcrs-warm").rc == 0
        assert run_in_host(host, "cniplug-bridge", "DEL", config, netns, "tcrs-warm").rc == 0
        time.sleep(0.5)
        start = counts(host, netns, data)
        print(f"\n[soak] start: {start}")
        leaks: list[str] = []
        t0 = time.monotonic()
        for i in range(1, CYCLES + 1):
            cid = f"tcrs{i}"
            add = run_in_host(host, "cniplug-bridge", "ADD", config, netns, cid)
            assert add.rc == 0, f"cycle {i} ADD: {add.stdout} {add.stderr[-500:]}"
            dele = run_in_host(host, "cniplug-bridge", "DEL", config, netns, cid)
            assert dele.rc == 0, f"cycle {i} DEL: {dele.stdout} {dele.stderr[-500:]}"
            if i == 1:
                one = time.monotonic() - t0
                print(f"[soak] one ADD+DEL cycle takes {one:.2f}s: {CYCLES} cycles ~ {one * CYCLES:.0f}s")
            if i % 100 == 0 or i == CYCLES:
                now = counts(host, netns, data)
                grown = {k: (start[k], v) for k, v in now.items() if v != start[k]}
                print(f"[soak] after {i} cycles ({time.monotonic() - t0:.0f}s): "
                      f"{'no change' if not grown else grown}")
                if i == CYCLES:
                    leaks = [f"{k}: {a} -> {b}" for k, (a, b) in grown.items()]
        total = time.monotonic() - t0
        print(f"[soak] {CYCLES} cycles in {total:.0f}s ({total / CYCLES:.2f}s a cycle), {len(leaks)} leaks {leaks}")
        assert not leaks
    finally:
        remove_lock_files(["tcrbr20"])
