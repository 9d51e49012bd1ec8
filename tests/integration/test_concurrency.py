"""Many plugin processes at once on one network: the per-bridge flock (/run/cniplug) and host-local's flock keep
every attachment whole and every address unique; DELs at once leave nothing.

The plugin's host is a private namespace (see tcr_netstate). Names `tcr`, addresses 10.250.141.0/24,
10.250.142.0/24 and fd10:250:140:10::/64, fd10:250:140:11::/64.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import random
import subprocess
import time
from collections.abc import Callable
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Any

import pytest
from conftest import PluginRun
from tcr_netstate import IP, in_host, leftovers, remove_lock_files, reservations, run_in_host, setup_host

from cniplug.plugins.bridge import lock_path
from cniplug.plugins.common import chain_name

pytestmark = pytest.mark.root

N_BRIDGE = 50
N_PTP = 20


def bridge_config(data_dir: Path) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "tcrnet10", "type": "cniplug-bridge", "bridge": "tcrbr10",
            "isGateway": True, "ipMasq": True,
            "ipam": {"type": "cniplug-host-local", "dataDir": str(data_dir),
                     "ranges": [[{"subnet": "10.250.141.0/24"}], [{"subnet": "fd10:250:140:10::/64"}]],
                     "routes": [{"dst": "0.0.0.0/0"}]}}


def ptp_config(data_dir: Path) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "tcrnet11", "type": "cniplug-ptp", "ipMasq": True,
            "ipam": {"type": "cniplug-host-local", "dataDir": str(data_dir),
                     "ranges": [[{"subnet": "10.250.142.0/24"}], [{"subnet": "fd10:250:140:11::/64"}]]}}


Job = tuple[str, str, str]  # (command, container id, netns)


def at_once(host: str, plugin: str, config: dict[str, Any], jobs: list[Job]) -> tuple[list[PluginRun], float]:
    """Start every job at the same time (one thread per plugin process); returns results in job order."""
    def one(job: Job) -> PluginRun:
        command, cid, netns = job
        return run_in_host(host, plugin, command, config, netns, cid, timeout=300)

    t0 = time.monotonic()
    with ThreadPool(len(jobs)) as pool:
        results = pool.map(one, jobs)
    return results, time.monotonic() - t0


def pings(gateways: list[tuple[str, str]]) -> list[str]:
    """(netns, address) pairs that do NOT answer one ping within 2 s, all pinged at once."""
    def one(pair: tuple[str, str]) -> str:
        netns, addr = pair
        ok = subprocess.run([IP, "netns", "exec", Path(netns).name, "ping", "-c1", "-W2", addr],
                            capture_output=True).returncode == 0
        return "" if ok else f"{netns} -> {addr}"

    with ThreadPool(len(gateways)) as pool:
        return [x for x in pool.map(one, gateways) if x]


def v4(result: dict[str, Any]) -> dict[str, Any]:
    return next(ip for ip in result["ips"] if ipaddress.ip_interface(ip["address"]).version == 4)


def bridge_ports(host: str, bridge: str) -> list[str]:
    return sorted(link["ifname"] for link in json.loads(in_host(host, "ip", "-j", "link", "show"))
                  if link.get("master") == bridge)


def nat_chains(host: str) -> set[str]:
    return {line[1:].split()[0] for tool in ("iptables-save", "ip6tables-save")
            for line in in_host(host, tool, "-t", "nat").splitlines() if line.startswith(":CNI-")}


def failures(results: list[PluginRun], jobs: list[Job]) -> list[str]:
    return [f"{job}: {r.stdout} {r.stderr[-300:]}" for job, r in zip(jobs, results, strict=True) if r.rc != 0]


@pytest.fixture
def hostns(make_netns: Callable[[str], str]) -> Callable[[str], str]:
    def make(tag: str) -> str:
        host = Path(make_netns(f"r-h{tag}")).name
        setup_host(host)
        return host

    return make


def test_50_bridge_adds_at_once_then_50_dels_then_a_mix(hostns: Callable[[str], str],
                                                        make_netns: Callable[[str], str], tmp_path: Path) -> None:
    host = hostns("cc")
    data = tmp_path / "ipam"
    config = bridge_config(data)
    try:
        nss = [make_netns(f"r-cc{i}") for i in range(N_BRIDGE + N_BRIDGE // 2)]
        jobs = [("ADD", f"tcrcc{i}", nss[i]) for i in range(N_BRIDGE)]
        results, t_add = at_once(host, "cniplug-bridge", config, jobs)
        assert not failures(results, jobs), failures(results, jobs)
        addrs = [v4(r.json)["address"] for r in results]
        assert len(set(addrs)) == N_BRIDGE, sorted(addrs)
        assert len(bridge_ports(host, "tcrbr10")) == N_BRIDGE
        assert nat_chains(host) == {chain_name("tcrnet10", cid) for _, cid, _ in jobs}
        assert len(reservations(data)) == 2 * N_BRIDGE
        t0 = time.monotonic()
        lost = pings([(ns, v4(r.json)["gateway"]) for (_, _, ns), r in zip(jobs, results, strict=True)])
        t_ping = time.monotonic() - t0
        assert not lost, lost

        dels = [("DEL", cid, ns) for _, cid, ns in jobs]
        results, t_del = at_once(host, "cniplug-bridge", config, dels)
        assert not failures(results, dels), failures(results, dels)
        assert not leftovers(host, nss[:N_BRIDGE], data, "tcrbr10")

        # A mix: half the containers come up, then they go while the other half comes up, all at once.
        half = N_BRIDGE // 2
        first = [("ADD", f"tcrcm{i}", nss[i]) for i in range(half)]
        results, _ = at_once(host, "cniplug-bridge", config, first)
        assert not failures(results, first), failures(results, first)
        second = [("ADD", f"tcrcm{i}", nss[i]) for i in range(half, N_BRIDGE + half)]
        mix = [("DEL", cid, ns) for _, cid, ns in first] + second
        random.Random(7).shuffle(mix)
        results, t_mix = at_once(host, "cniplug-bridge", config, mix)
        assert not failures(results, mix), failures(results, mix)
        added = [r.json for job, r in zip(mix, results, strict=True) if job[0] == "ADD"]
        assert len({v4(r)["address"] for r in added}) == len(second)
        assert len(bridge_ports(host, "tcrbr10")) == len(second)
        assert nat_chains(host) == {chain_name("tcrnet10", cid) for _, cid, _ in second}
        held = {v.split(" ", 2)[2] for v in reservations(data).values()}
        assert held == {repr(f"{cid}\r\neth0".encode()) for _, cid, _ in second}
        gw = v4(added[0])["gateway"]
        assert not pings([(ns, gw) for _, _, ns in second])
        last = [("DEL", cid, ns) for _, cid, ns in second]
        results, _ = at_once(host, "cniplug-bridge", config, last)
        assert not failures(results, last), failures(results, last)
        assert not leftovers(host, nss, data, "tcrbr10")
        print(f"\n[concurrency] bridge: {N_BRIDGE} ADDs at once {t_add:.1f}s, {N_BRIDGE} pings {t_ping:.1f}s, "
              f"{N_BRIDGE} DELs at once {t_del:.1f}s, mix of {half} DEL + {len(second)} ADD {t_mix:.1f}s")
    finally:
        remove_lock_files(["tcrbr10"])


def test_20_ptp_adds_at_once_then_20_dels(hostns: Callable[[str], str], make_netns: Callable[[str], str],
                                          tmp_path: Path) -> None:
    host = hostns("cp")
    data = tmp_path / "ipam"
    config = ptp_config(data)
    nss = [make_netns(f"r-cp{i}") for i in range(N_PTP)]
    jobs = [("ADD", f"tcrcp{i}", nss[i]) for i in range(N_PTP)]
    results, t_add = at_once(host, "cniplug-ptp", config, jobs)
    assert not failures(results, jobs), failures(results, jobs)
    addrs = [v4(r.json)["address"] for r in results]
    assert len(set(addrs)) == N_PTP
    assert nat_chains(host) == {chain_name("tcrnet11", cid) for _, cid, _ in jobs}
    lost = pings([(ns, v4(r.json)["gateway"]) for (_, _, ns), r in zip(jobs, results, strict=True)])
    assert not lost, lost
    dels = [("DEL", cid, ns) for _, cid, ns in jobs]
    results, t_del = at_once(host, "cniplug-ptp", config, dels)
    assert not failures(results, dels), failures(results, dels)
    assert not leftovers(host, nss, data, "")
    print(f"\n[concurrency] ptp: {N_PTP} ADDs at once {t_add:.1f}s, {N_PTP} DELs at once {t_del:.1f}s")


def test_bridge_lock_is_held_only_while_shared_state_changes(hostns: Callable[[str], str],
                                                            make_netns: Callable[[str], str], tmp_path: Path) -> None:
    """The first ADD creates the bridge and its gateway: it keeps the lock while its commands run. An ADD on the
    ready bridge releases it after its probes, so ADDs on one bridge run in parallel; DEL never takes it.

    Seen from a fake `ip` first in PATH, which tries the lock (flock -n) when the plugin starts its host batch.
    Names tcrbr12 / tcrnet12, addresses 10.250.139.0/24.
    """
    host = hostns("cl")
    lock = lock_path("tcrbr12")
    log = tmp_path / "lock.log"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ip").write_text(
        "#!/bin/bash\n"
        f'if [ "$1" = -batch ]; then flock -n {lock} true && echo free >> {log} || echo held >> {log}; fi\n'
        f'exec {IP} "$@"\n')
    (fake / "ip").chmod(0o755)
    config = {"cniVersion": "1.0.0", "name": "tcrnet12", "type": "cniplug-bridge", "bridge": "tcrbr12",
              "isGateway": True, "ipMasq": True,
              "ipam": {"type": "cniplug-host-local", "dataDir": str(tmp_path / "ipam"), "subnet": "10.250.139.0/24"}}
    nss = [make_netns(f"r-cl{i}") for i in range(2)]
    try:
        seen = []
        for i, ns in enumerate(nss):
            add = run_in_host(host, "cniplug-bridge", "ADD", config, ns, f"tcrcl{i}", path_prefix=str(fake))
            assert add.rc == 0, add.stdout + add.stderr
            seen.append(set(log.read_text().split()))
            log.unlink()
        assert seen == [{"held"}, {"free"}]
        with open(lock, "a") as held:  # someone holds the bridge lock: DEL must not wait for it
            fcntl.flock(held, fcntl.LOCK_EX)
            t0 = time.monotonic()
            for i, ns in enumerate(nss):
                dele = run_in_host(host, "cniplug-bridge", "DEL", config, ns, f"tcrcl{i}", timeout=30)
                assert dele.rc == 0, dele.stdout + dele.stderr
            assert time.monotonic() - t0 < 30
        assert not leftovers(host, nss, tmp_path / "ipam", "tcrbr12")
    finally:
        remove_lock_files(["tcrbr12"])
