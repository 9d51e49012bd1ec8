"""`cniplug node demo`: a pod network across simulated nodes, host-gw routing kept by `cniplug node`.

From the tutorial's example 3 (a router joining two subnets) to a cluster: N nodes (network namespaces,
each with its own /run and /var/lib/cni, cniplug/node/sim.py) on one underlay bridge, one etcd, the
agent on each node, two pods per node attached with the config list the agent wrote. It shows the subnet
leases in etcd, the routes on each node, pings across nodes with their TTL, the address a receiving pod
sees (its sender's: no NAT between pods), a pod reaching the outside stand-in masqueraded, the topology
of one node (`cniplug show`), a route deleted by hand coming back, and a node that stops: its lease
expires and its routes vanish from the others. Then everything is removed, also on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from cniplug import i18n
from cniplug.lab.demo import SafeOutput
from cniplug.node import sim

TTL = 4  # s: the demo's lease TTL (short, to watch a node leave)
INTERVAL = 1.0  # s: the agents' reconcile interval


def say(key: str, lang: str, **fields: object) -> str:
    """The demo's message `key` (i18n.MESSAGES["nd_demo_" + key]) in `lang`."""
    return i18n.text(f"nd_demo_{key}", lang, **fields)


def heading(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(count: int = 3, prefix: str = "cnnode", lang: str = "en") -> int:
    """Run the demo with `count` nodes; 0 when every check passed, 1 otherwise. Needs root, etcd, etcdctl."""
    if os.geteuid() != 0:
        print("cniplug node demo: needs root (it creates network namespaces)", file=sys.stderr)
        return 1
    for tool in ("etcd", "etcdctl", "ip", "iptables", "nsenter", "unshare", "ping"):
        if not any(os.access(os.path.join(d, tool), os.X_OK) for d in
                   (os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin:/sbin:/bin").split(":") if d):
            print(f"cniplug node demo: {tool} not found (apt-get install etcd-server etcd-client)", file=sys.stderr)
            return 1
    sys.stdout = SafeOutput(sys.stdout)  # a closed pipe (`| head`) must not stop the clean-up
    old = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    cluster = sim.Cluster(prefix, ttl=TTL, interval=INTERVAL)
    try:
        return Demo(cluster, count, lang).run()
    except KeyboardInterrupt:
        print("\n" + say("interrupted", lang), flush=True)
        return 1
    except RuntimeError as err:
        print(say("failed", lang, error=str(err)[:500]), file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the clean-up
        heading(say("cleanup", lang))
        cluster.down()
        left = [n for n in cluster.netns if n in sim.netns_names()]
        print(say("cleaned", lang, names=", ".join(cluster.netns)) if not left else
              say("left", lang, names=", ".join(left)), flush=True)
        for sig, handler in old.items():
            signal.signal(sig, handler)


class Demo:
    def __init__(self, cluster: sim.Cluster, count: int, lang: str) -> None:
        self.c, self.count, self.lang = cluster, count, lang
        self.ok = True

    def t(self, key: str, **fields: object) -> str:
        return say(key, self.lang, **fields)

    def show(self, index: int | None, *argv: str) -> str:
        """Run a read-only command on node `index` (None: where etcd runs) and print it as typed."""
        if index is None:
            proc = self.c.etcdctl(*argv)
            shown = f"[{self.c.ul}]$ etcdctl {' '.join(argv)}"
        else:
            proc = self.c.node_sh(index, *argv, check=False)
            words = ["cniplug", *argv[3:]] if list(argv[:2]) == [sys.executable, "-m"] else list(argv)
            shown = f"[n{index}]$ {' '.join(words)}"
        print(shown)
        text = "\n".join(line.rstrip() for line in (proc.stdout + proc.stderr).rstrip().splitlines())
        if text:
            print(text)
        return proc.stdout

    def check(self, good: bool, text: str) -> None:
        self.ok = self.ok and good
        print(f"{'ok ' if good else 'FAIL'} {text}", flush=True)

    def holds(self, index: int) -> Callable[[], bool]:
        """A check: node `index` holds a pod CIDR in etcd."""
        return lambda: bool(self.c.cidr_of(index))

    def converged(self, nodes: list[int]) -> bool:
        """Every node in `nodes` has a route to every other one's pod CIDR, via that node."""
        want = {i: self.c.cidr_of(i) for i in nodes}
        if not all(want.values()):
            return False
        return all(self.c.agent_routes(i) == {want[j]: self.c.nodes[j].address for j in nodes if j != i}
                   for i in nodes)

    def run(self) -> int:
        c, n = self.c, list(range(1, self.count + 1))
        heading(self.t("build", count=self.count))
        c.up()
        print(self.t("underlay", ul=c.ul, bridge=c.bridge, gateway=c.gateway, endpoint=c.endpoint,
                     out=c.out, outside=c.outside_ip))
        for i in n:
            node = c.add_node(i)
            print(self.t("node", name=node.name, netns=node.netns, address=node.address))
        heading(self.t("agents", ttl=TTL, interval=INTERVAL))
        started = time.monotonic()
        for i in n:  # one after the other, so n1 takes the first subnet, n2 the second... (a readable story)
            c.start_agent(i)
            c.wait(self.holds(i), 20, f"n{i} took no pod CIDR")
        took = c.wait(lambda: self.converged(n), 30, "the agents did not converge")
        print(self.t("converged", seconds=f"{time.monotonic() - started:.1f}"))
        del took
        self.show(None, "get", "/cniplug/network/subnets/", "--prefix")
        heading(self.t("conflist", path=f"{sim.CONF_DIR}/10-cniplug.conflist"))
        self.show(1, "cat", f"{sim.CONF_DIR}/10-cniplug.conflist")
        heading(self.t("pods"))
        for i in n:
            for letter in "ab":
                addr = c.add_pod(i, letter)
                print(self.t("pod", pod=f"{c.prefix}-n{i}{letter}", node=f"n{i}", address=addr))
        heading(self.t("routes"))
        for i in n:
            self.show(i, "ip", "route", "show", "proto", "222")
            self.show(i, "ip", "route", "get", c.nodes[n[i % len(n)]].pods[f"{c.prefix}-n{n[i % len(n)]}a"])
        heading(self.t("dry_run"))
        self.show(1, sys.executable, "-m", "cniplug", "node", "--dry-run", "--name", "n1", "--address",
                  c.nodes[1].address, "--etcd-endpoints", c.endpoint, "--cluster-cidr", c.cluster_cidr,
                  "--cni-conf-dir", sim.CONF_DIR, "--lang", self.lang)
        heading(self.t("pings"))
        for i in n:
            j = n[i % len(n)]
            src, dst = f"{c.prefix}-n{i}a", f"{c.prefix}-n{j}b"
            good, ttl = c.ping(i, src, c.nodes[j].pods[dst])
            self.check(good and ttl == "ttl=62", self.t("ping", src=src, srcip=c.nodes[i].pods[src], dst=dst,
                                                           dstip=c.nodes[j].pods[dst], ttl=ttl))
        print(self.t("ttl_why"))
        heading(self.t("tcp"))
        target = f"{c.prefix}-n1a"
        server = c.serve(1, target)
        assert server.stdout is not None
        for i in n[1:]:
            src = f"{c.prefix}-n{i}a"
            c.connect(i, src, c.nodes[1].pods[target])
            seen = server.stdout.readline().strip()
            self.check(seen == c.nodes[i].pods[src], self.t("tcp_seen", src=src, srcip=c.nodes[i].pods[src],
                                                             dst=target, seen=seen))
        heading(self.t("outside", out=c.out, outside=c.outside_ip))
        outside = c.serve_outside()
        assert outside.stdout is not None
        src = f"{c.prefix}-n2b"
        c.connect(2, src, c.outside_ip)
        seen = outside.stdout.readline().strip()
        self.check(seen == c.nodes[2].address, self.t("outside_seen", src=src, srcip=c.nodes[2].pods[src], seen=seen,
                                                       node="n2"))
        self.show(2, "iptables", "-t", "nat", "-S", "POSTROUTING")
        self.show(2, "iptables", "-t", "nat", "-S", "CNIPLUG-POSTRTG")
        heading(self.t("topology"))
        self.show(1, sys.executable, "-m", "cniplug", "show", "--netns", "host", "--lang", self.lang)
        heading(self.t("heal"))
        lost = c.cidr_of(2)
        self.show(1, "ip", "route", "del", lost)
        took = c.wait(lambda: lost in c.agent_routes(1), 15, "the deleted route did not come back")
        self.check(True, self.t("healed", dst=lost, seconds=f"{took:.1f}"))
        last = n[-1]
        heading(self.t("stop", node=f"n{last}", ttl=TTL))
        gone = c.cidr_of(last)
        c.stop_agent(last)
        started = time.monotonic()
        c.wait(lambda: all(gone not in c.agent_routes(i) for i in n[:-1]), TTL + 15, "the routes did not vanish")
        self.check(True, self.t("vanished", node=f"n{last}", cidr=gone, seconds=f"{time.monotonic() - started:.1f}"))
        for i in n[:-1]:
            self.show(i, "ip", "route", "show", "proto", "222")
        self.show(None, "get", "/cniplug/network/subnets/", "--prefix", "--keys-only")
        good, ttl = c.ping(1, f"{c.prefix}-n1a", c.nodes[last].pods[f"{c.prefix}-n{last}a"])
        self.check(not good, self.t("unreachable", node=f"n{last}", result=ttl))
        print("\n" + self.t("done" if self.ok else "not_done"), flush=True)
        return 0 if self.ok else 1
