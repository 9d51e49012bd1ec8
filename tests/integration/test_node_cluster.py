"""The node agent on simulated nodes with a real etcd (cniplug/node/sim.py): pods on different nodes talk
without NAT, pods reach the outside masqueraded, joins, leaves (lease expiry), restarts and routes deleted
by hand converge within the bounds below, and nothing is left afterwards.

Convergence bounds stated here (agents reconcile every INTERVAL s, leases live TTL s):
  join, restart, restored route: JOIN_S; leave by lease expiry: TTL + LEAVE_EXTRA_S; uninstall: JOIN_S.
Everything is named tnd..., in 10.239.0.0/16; etcd listens inside the tnd-ul namespace on port 23794.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from cniplug import runner
from cniplug.node import reconcile, sim
from cniplug.node.etcd import EtcdSource

pytestmark = pytest.mark.root

PREFIX = "tnd"
PORT = 23794
TTL = 3
INTERVAL = 0.5
JOIN_S = 6.0
LEAVE_EXTRA_S = 4.0
MEASURED: dict[str, float] = {}


def host_state() -> tuple[list[str], list[str], list[str]]:
    """What the host shows of us: netns and links named tnd..., nat chains of the agent."""
    netns = [n for n in sim.netns_names() if n.startswith(PREFIX)]
    raw = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout)
    links = [link["ifname"] for link in raw if link["ifname"].startswith(PREFIX)]
    nat = subprocess.run(["iptables", "-w", "-t", "nat", "-S"], capture_output=True, text=True).stdout
    return netns, links, [line for line in nat.splitlines() if reconcile.CHAIN in line]


@pytest.fixture(scope="module")
def cluster() -> Iterator[sim.Cluster]:
    before = host_state()
    assert not before[0] and not before[1], f"left from an earlier run: {before}"
    c = sim.Cluster(PREFIX, port=PORT, ttl=TTL, interval=INTERVAL)
    try:
        c.up()
        for i in (1, 2, 3):
            c.add_node(i)
            c.start_agent(i)
        c.wait(lambda: converged(c, [1, 2, 3]), 30, "agents did not converge")
        for i in (1, 2, 3):
            for letter in "ab":
                c.add_pod(i, letter)
        yield c
    finally:
        etcd, work = c.etcd, c.work
        c.down()
        assert etcd is not None and etcd.poll() is not None, "etcd still runs"
        assert all(p.poll() is not None for p in c.procs), "a process of the cluster still runs"
        assert not os.path.exists(work)
        assert host_state() == ([], [], before[2]), "something was left on the host"
        print("\nMEASURED (s):", json.dumps({k: round(v, 2) for k, v in MEASURED.items()}))


def converged(c: sim.Cluster, nodes: list[int]) -> bool:
    want = {i: c.cidr_of(i) for i in nodes}
    return all(want.values()) and all(
        c.agent_routes(i) == {want[j]: c.nodes[j].address for j in nodes if j != i} for i in nodes)


def pod(c: sim.Cluster, i: int, letter: str) -> tuple[str, str]:
    name = f"{PREFIX}-n{i}{letter}"
    return name, c.nodes[i].pods[name]


def test_tcp_between_pods_on_different_nodes_keeps_the_senders_address(cluster: sim.Cluster) -> None:
    target, target_ip = pod(cluster, 1, "a")
    server = cluster.serve(1, target, 8081)
    assert server.stdout is not None
    for i in (2, 3):
        src, src_ip = pod(cluster, i, "b")
        done = cluster.connect(i, src, target_ip, 8081)
        assert done.returncode == 0, done.stderr
        assert server.stdout.readline().strip() == src_ip
    ok, ttl = cluster.ping(2, pod(cluster, 2, "a")[0], pod(cluster, 3, "a")[1])
    assert ok and ttl == "ttl=62"  # two routers: the sender's node and the receiver's


def test_pod_reaches_the_outside_masqueraded_to_its_node(cluster: sim.Cluster) -> None:
    server = cluster.serve_outside(8082)
    assert server.stdout is not None
    src, _ = pod(cluster, 3, "a")
    done = cluster.connect(3, src, cluster.outside_ip, 8082)
    assert done.returncode == 0, done.stderr
    assert server.stdout.readline().strip() == cluster.nodes[3].address


def dry_run(c: sim.Cluster, i: int) -> str:
    node = c.nodes[i]
    return c.node_sh(i, sys.executable, "-m", "cniplug", "node", "--dry-run", "--name", node.name,
                     "--address", node.address, "--etcd-endpoints", c.endpoint, "--cluster-cidr", c.cluster_cidr,
                     "--cni-conf-dir", sim.CONF_DIR).stdout


def test_a_converged_node_has_nothing_to_change(cluster: sim.Cluster) -> None:
    for i in (1, 2, 3):
        text = dry_run(cluster, i)
        assert reconcile.steps_of(text) == [], text
        assert "Nothing to change" in text


def test_route_deleted_by_hand_is_restored(cluster: sim.Cluster) -> None:
    lost = cluster.cidr_of(2)
    cluster.node_sh(1, "ip", "route", "del", lost)
    MEASURED["route restored"] = cluster.wait(lambda: lost in cluster.agent_routes(1), JOIN_S, "route not restored")


def test_dry_run_script_run_by_bash_gives_what_the_agent_keeps(cluster: sim.Cluster) -> None:
    cluster.stop_agent(1, signal.SIGTERM)
    try:
        cluster.node_sh(1, "ip", "route", "del", cluster.cidr_of(3))
        cluster.node_sh(1, "iptables", "-w", "-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment",
                        reconcile.JUMP_COMMENT, "-j", reconcile.CHAIN)
        cluster.node_sh(1, "rm", f"{sim.CONF_DIR}/10-cniplug.conflist")
        text = dry_run(cluster, 1)
        assert len(reconcile.steps_of(text)) == 3, text
        done = subprocess.run([*cluster.on_node(1), "bash"], input=text, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert reconcile.steps_of(dry_run(cluster, 1)) == []
        assert converged(cluster, [1, 2, 3])
    finally:
        cluster.start_agent(1)


def test_agent_restart_keeps_its_subnet_and_converges(cluster: sim.Cluster) -> None:
    cidr = cluster.cidr_of(2)
    cluster.stop_agent(2)  # SIGKILL
    for dst in cluster.agent_routes(2):
        cluster.node_sh(2, "ip", "route", "del", dst)
    started = time.monotonic()
    cluster.start_agent(2)
    cluster.wait(lambda: converged(cluster, [1, 2, 3]), JOIN_S, "no convergence after restart")
    MEASURED["agent restart"] = time.monotonic() - started
    assert cluster.cidr_of(2) == cidr
    src, _ = pod(cluster, 2, "a")
    assert cluster.ping(2, src, pod(cluster, 1, "b")[1])[0]


def test_node_joins_then_leaves_by_lease_expiry(cluster: sim.Cluster) -> None:
    cluster.add_node(4)
    started = time.monotonic()
    cluster.start_agent(4)
    cluster.wait(lambda: converged(cluster, [1, 2, 3, 4]), JOIN_S + 5, "node 4 did not join")
    MEASURED["join"] = time.monotonic() - started
    _, addr = cluster.nodes[4], cluster.add_pod(4, "a")
    assert cluster.ping(1, pod(cluster, 1, "a")[0], addr)[0]
    gone = cluster.cidr_of(4)
    cluster.stop_agent(4)  # SIGKILL: no more renewals
    started = time.monotonic()
    cluster.wait(lambda: all(gone not in cluster.agent_routes(i) for i in (1, 2, 3)), TTL + LEAVE_EXTRA_S,
                 "node 4's routes did not vanish")
    MEASURED["leave (lease expiry)"] = time.monotonic() - started
    assert converged(cluster, [1, 2, 3])


def test_uninstall_takes_back_everything_and_releases_the_subnet(cluster: sim.Cluster) -> None:
    cidr = cluster.cidr_of(3)
    cluster.stop_agent(3, signal.SIGTERM)
    node = cluster.nodes[3]
    out = cluster.node_sh(3, sys.executable, "-m", "cniplug", "node", "--uninstall", "--name", node.name,
                          "--address", node.address, "--etcd-endpoints", cluster.endpoint,
                          "--cluster-cidr", cluster.cluster_cidr, "--cni-conf-dir", sim.CONF_DIR).stdout
    assert "uninstalled" in out
    assert cluster.agent_routes(3) == {}
    assert reconcile.CHAIN not in cluster.node_sh(3, "iptables", "-w", "-t", "nat", "-S").stdout
    assert cluster.conflist(3) is None
    assert cluster.cidr_of(3) == ""
    MEASURED["uninstall seen by others"] = cluster.wait(
        lambda: all(cidr not in cluster.agent_routes(i) for i in (1, 2)), JOIN_S, "others kept the route")


def test_cleanup_on_exit_takes_back_everything_on_sigterm(cluster: sim.Cluster) -> None:
    cluster.start_agent(3, "--cleanup-on-exit")
    cluster.wait(lambda: converged(cluster, [1, 2, 3]), JOIN_S, "node 3 did not come back")
    cidr = cluster.cidr_of(3)
    assert cluster.conflist(3) is not None
    cluster.stop_agent(3, signal.SIGTERM)
    assert "node agent uninstalled" in cluster.agent_log(3)
    assert cluster.agent_routes(3) == {} and cluster.conflist(3) is None and cluster.cidr_of(3) == ""
    assert reconcile.CHAIN not in cluster.node_sh(3, "iptables", "-w", "-t", "nat", "-S").stdout
    cluster.wait(lambda: all(cidr not in cluster.agent_routes(i) for i in (1, 2)), JOIN_S, "others kept the route")


def test_concurrent_allocation_on_real_etcd_is_race_free(cluster: sim.Cluster) -> None:
    def in_ul(argv: list[str], stdin: str | None) -> runner.Completed:
        return runner.execute(["ip", "netns", "exec", cluster.ul, *argv], stdin)

    got: dict[str, str] = {}
    errors: list[BaseException] = []
    sources = [EtcdSource(f"race{i}", f"10.239.200.{100 + i}", cluster.endpoint, cluster.cluster_cidr, 24, 60,
                          prefix="/tnd/race", run=in_ul) for i in range(8)]
    gate = threading.Barrier(len(sources))

    def take(src: EtcdSource) -> None:
        try:
            gate.wait()
            src.nodes()
            got[src.name] = src.cidr
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=take, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not errors, errors
        assert len(got) == 8 and len(set(got.values())) == 8, got
        assert {n.name: n.pod_cidrs[0] for n in sources[0].nodes()} == got
    finally:
        for s in sources:
            s.release()
