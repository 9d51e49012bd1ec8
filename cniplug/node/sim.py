"""Simulated nodes for the cluster demo and the integration tests: no VMs, only namespaces.

    {P}-ul   the underlay: bridge {P}br at 10.239.200.1/24 (UNDERLAY), the nodes' default gateway,
             etcd listening on 10.239.200.1:PORT; forwards to the outside stand-in
    {P}-out  the outside stand-in at 10.239.250.2/24 (OUTSIDE): it has a route back to the underlay
             only, not to any pod CIDR, so a pod reaches it only masqueraded to its node's address
    {P}-nI   node I: eth0 10.239.200.(10+I) on the underlay bridge; a process of its own ("holder")
             keeps a mount namespace with tmpfs on /run and /var/lib/cni, so each node has its own
             /run/netns (its pods), IPAM store, libcni cache, /run/cni/net.d (its config list) and
             xtables lock. Commands "on the node" run with `nsenter -t HOLDER -m -n`.

Pods are network namespaces made inside a node's mount namespace and attached with `cniplug net add`
from the config list the node's agent wrote (so the agent's list is what a runtime would use), through
small wrapper scripts in WORK/bin that exec `python -m cniplug plugin NAME`. Everything is stopped by
PID and removed in down(): pods vanish with their node's mount namespace, links and chains with the
network namespaces.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

UNDERLAY = "10.239.200.0/24"
OUTSIDE = "10.239.250.0/24"
CLUSTER = "10.239.0.0/17"
NETWORK = "cniplug-pods"
CONF_DIR = "/run/cni/net.d"
PLUGINS = ("cniplug-bridge", "cniplug-loopback", "cniplug-host-local")
# A TCP server that prints the address of every peer that connects (one line each), and a client
# that connects and prints the address it connected from.
SERVER = ("import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); "
          "s.bind(('0.0.0.0',int(sys.argv[1]))); s.listen(8); print('ready',flush=True)\n"
          "while True:\n c,a=s.accept(); print(a[0],flush=True); c.close()")
CLIENT = ("import socket,sys; s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=5); "
          "print(s.getsockname()[0]); s.close()")


@dataclass
class Node:
    index: int
    name: str  # the node's name in the cluster (n1, n2, ...)
    netns: str
    address: str
    holder: subprocess.Popen[str] | None = None
    agent: subprocess.Popen[str] | None = None
    pods: dict[str, str] = field(default_factory=dict)  # pod netns name -> its address


class Cluster:
    """A simulated cluster (see the module text). prefix: 2-6 characters starting every name made on
    the host. port: etcd's client port inside {P}-ul. ttl, interval: the agents' --lease-ttl/--interval."""

    def __init__(self, prefix: str, port: int = 23790, ttl: int = 4, interval: float = 1.0,
                 cluster_cidr: str = CLUSTER, echo: Callable[[str], None] | None = None) -> None:
        self.prefix, self.port, self.ttl, self.interval, self.cluster_cidr = prefix, port, ttl, interval, cluster_cidr
        self.ul, self.out, self.bridge = f"{prefix}-ul", f"{prefix}-out", f"{prefix}br"
        net = ipaddress.ip_network(UNDERLAY)
        self.gateway = str(net.network_address + 1)
        self.outside_ip = str(ipaddress.ip_network(OUTSIDE).network_address + 2)
        self.endpoint = f"http://{self.gateway}:{port}"
        self.work = tempfile.mkdtemp(prefix=f"{prefix}-cluster-")
        self.nodes: dict[int, Node] = {}
        self.procs: list[subprocess.Popen[str]] = []  # everything started, stopped by PID in down()
        self.netns: list[str] = []  # network namespaces made on the host, deleted in down()
        self.etcd: subprocess.Popen[str] | None = None
        self.echo = echo or (lambda _text: None)

    # ---- plumbing ----------------------------------------------------------------------------------
    def sh(self, *argv: str, check: bool = True, env: dict[str, str] | None = None,
           timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command; RuntimeError naming it when it fails and `check`."""
        proc = subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {(proc.stderr or proc.stdout).strip()}")
        return proc

    def start(self, argv: list[str], log: str, stdout_pipe: bool = False) -> subprocess.Popen[str]:
        """Start a long-running process (its output to WORK/log, or a pipe); remembered for down()."""
        if stdout_pipe:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        else:
            with open(os.path.join(self.work, log), "a") as out:
                proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        text=True, start_new_session=True)
        self.procs.append(proc)
        return proc

    def netns_add(self, name: str) -> None:
        self.sh("ip", "netns", "add", name)
        self.netns.append(name)

    def on_node(self, index: int) -> list[str]:
        """The argv prefix that runs a command on node `index` (its network and mount namespaces)."""
        holder = self.nodes[index].holder
        assert holder is not None
        return ["nsenter", "-t", str(holder.pid), "-m", "-n"]

    def node_sh(self, index: int, *argv: str, check: bool = True, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
        return self.sh(*self.on_node(index), *argv, check=check, env=env)

    def pod_prefix(self, index: int, pod: str) -> list[str]:
        return [*self.on_node(index), "ip", "netns", "exec", pod]

    def etcdctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.sh("ip", "netns", "exec", self.ul, "etcdctl", f"--endpoints={self.endpoint}", *args, check=False)

    # ---- building ------------------------------------------------------------------------------------
    def up(self) -> None:
        """The underlay, the outside stand-in and etcd."""
        ul = ["ip", "-n", self.ul]
        self.netns_add(self.ul)
        self.sh(*ul, "link", "set", "lo", "up")
        self.sh(*ul, "link", "add", self.bridge, "type", "bridge")
        self.sh(*ul, "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        self.sh(*ul, "link", "set", self.bridge, "up")
        self.sh("ip", "netns", "exec", self.ul, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.netns_add(self.out)
        wan = f"{self.prefix}wan"
        self.sh(*ul, "link", "add", wan, "type", "veth", "peer", "name", "eth0", "netns", self.out)
        self.sh(*ul, "addr", "add", f"{ipaddress.ip_network(OUTSIDE).network_address + 1}/24", "dev", wan)
        self.sh(*ul, "link", "set", wan, "up")
        out = ["ip", "-n", self.out]
        self.sh(*out, "addr", "add", f"{self.outside_ip}/24", "dev", "eth0")
        self.sh(*out, "link", "set", "eth0", "up")
        self.sh(*out, "link", "set", "lo", "up")
        self.sh(*out, "route", "add", UNDERLAY, "via", str(ipaddress.ip_network(OUTSIDE).network_address + 1))
        os.makedirs(os.path.join(self.work, "bin"))
        for name in PLUGINS:
            path = os.path.join(self.work, "bin", name)
            with open(path, "w") as f:
                f.write(f'#!/bin/sh\nexec {sys.executable} -m cniplug plugin {name} "$@"\n')
            os.chmod(path, 0o755)
        self.start_etcd()

    def start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self.port + 1}"
        self.etcd = self.start(["ip", "netns", "exec", self.ul, "etcd", "--name", self.prefix,
                                "--data-dir", os.path.join(self.work, "etcd"),
                                "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
                                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                                "--initial-cluster", f"{self.prefix}={peer}"], "etcd.log")
        self.wait(lambda: self.etcdctl("endpoint", "health").returncode == 0, 20, "etcd did not become healthy")

    def add_node(self, index: int) -> Node:
        """Node `index` (1-9): namespace, underlay port, address, its own /run and /var/lib/cni."""
        name = f"{self.prefix}-n{index}"
        node = Node(index, f"n{index}", name, str(ipaddress.ip_network(UNDERLAY).network_address + 10 + index))
        self.netns_add(name)
        port = f"{self.prefix}n{index}"
        self.sh("ip", "-n", self.ul, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", name)
        self.sh("ip", "-n", self.ul, "link", "set", port, "master", self.bridge, "up")
        self.sh("ip", "-n", name, "link", "set", "lo", "up")
        self.sh("ip", "-n", name, "addr", "add", f"{node.address}/24", "dev", "eth0")
        self.sh("ip", "-n", name, "link", "set", "eth0", "up")
        self.sh("ip", "-n", name, "route", "add", "default", "via", self.gateway)
        os.makedirs("/var/lib/cni", exist_ok=True)  # the mount point (libcni makes it on any CNI host)
        holder = self.start(["ip", "netns", "exec", name, "unshare", "-m", "--propagation", "private", "sh", "-c",
                             "mount -t tmpfs cniplug-node /run && mount -t tmpfs cniplug-node /var/lib/cni && "
                             "echo ready && exec sleep infinity"], "", stdout_pipe=True)
        assert holder.stdout is not None
        line = holder.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"node {name}: could not make its mount namespace: {line}")
        node.holder = holder
        self.nodes[index] = node
        return node

    def start_agent(self, index: int, *extra: str) -> subprocess.Popen[str]:
        """Run `cniplug node` on node `index` (its output in WORK/agent-nI.log)."""
        node = self.nodes[index]
        node.agent = self.start([*self.on_node(index), sys.executable, "-m", "cniplug", "node",
                                 "--name", node.name, "--address", node.address, "--etcd-endpoints", self.endpoint,
                                 "--cluster-cidr", self.cluster_cidr, "--lease-ttl", str(self.ttl),
                                 "--interval", str(self.interval), "--cni-conf-dir", CONF_DIR, *extra],
                                f"agent-{node.name}.log")
        return node.agent

    def stop_agent(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Stop node `index`'s agent with `sig` (SIGKILL: it renews nothing more, as a node that died)."""
        agent = self.nodes[index].agent
        if agent is not None and agent.poll() is None:
            agent.send_signal(sig)
            agent.wait(timeout=20)
        self.nodes[index].agent = None

    def agent_log(self, index: int) -> str:
        try:
            with open(os.path.join(self.work, f"agent-{self.nodes[index].name}.log")) as f:
                return f.read()
        except OSError:
            return ""

    def conflist(self, index: int) -> str | None:
        proc = self.node_sh(index, "cat", f"{CONF_DIR}/10-cniplug.conflist", check=False)
        return proc.stdout if proc.returncode == 0 else None

    def add_pod(self, index: int, letter: str) -> str:
        """Pod {P}-nI{letter} on node `index`, attached with the node's config list; its address."""
        pod = f"{self.prefix}-n{index}{letter}"
        self.node_sh(index, "ip", "netns", "add", pod)
        env = {**os.environ, "NETCONFPATH": CONF_DIR, "CNI_PATH": os.path.join(self.work, "bin")}
        proc = self.node_sh(index, sys.executable, "-m", "cniplug", "net", "add", NETWORK, f"/run/netns/{pod}", env=env)
        result = json.loads(proc.stdout)
        address = str(next(ip["address"].split("/")[0] for ip in result["ips"]))
        self.nodes[index].pods[pod] = address
        return address

    def serve(self, index: int, pod: str, port: int = 8080) -> subprocess.Popen[str]:
        """A TCP server in `pod` printing each peer's address; started and ready."""
        proc = self.start([*self.pod_prefix(index, pod), sys.executable, "-c", SERVER, str(port)], "", stdout_pipe=True)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"server in {pod} did not start")
        return proc

    def serve_outside(self, port: int = 8080) -> subprocess.Popen[str]:
        proc = self.start(["ip", "netns", "exec", self.out, sys.executable, "-c", SERVER, str(port)], "",
                          stdout_pipe=True)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("server in the outside stand-in did not start")
        return proc

    def connect(self, index: int, pod: str, address: str, port: int = 8080) -> subprocess.CompletedProcess[str]:
        return self.sh(*self.pod_prefix(index, pod), sys.executable, "-c", CLIENT, address, str(port), check=False)

    def ping(self, index: int, pod: str, address: str) -> tuple[bool, str]:
        """One ping from `pod`: (answered, 'ttl=N' or the error)."""
        proc = self.sh(*self.pod_prefix(index, pod), "ping", "-c", "1", "-W", "2", address, check=False)
        m = re.search(r"ttl=(\d+)", proc.stdout)
        return proc.returncode == 0, m.group(0) if m else (proc.stdout + proc.stderr).strip().splitlines()[-1:][0]

    def agent_routes(self, index: int) -> dict[str, str]:
        """The agent's routes on node `index`: pod CIDR -> next hop."""
        proc = self.node_sh(index, "ip", "-j", "route", "show", "proto", "222")
        return {r["dst"]: r.get("gateway", "") for r in json.loads(proc.stdout or "[]")}

    def cidr_of(self, index: int) -> str:
        """The pod CIDR node `index` holds in etcd ("" if none)."""
        proc = self.etcdctl("get", "/cniplug/network/subnets/", "--prefix", "-w", "json")
        from cniplug.node.etcd import parse_records

        recs = parse_records("/cniplug/network", proc.stdout) if proc.returncode == 0 else []
        return next((r.cidr for r in recs if r.node == self.nodes[index].name), "")

    def wait(self, cond: Callable[[], bool], timeout: float, what: str) -> float:
        """Poll `cond` every 0.1 s; seconds it took. RuntimeError(`what`) after `timeout`."""
        started = time.monotonic()
        while not cond():
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{what} (after {timeout} s)")
            time.sleep(0.1)
        return time.monotonic() - started

    # ---- tearing down --------------------------------------------------------------------------------
    def down(self) -> None:
        """Stop every process started (by PID, SIGTERM then SIGKILL), delete the namespaces made, remove
        WORK; wait until the kernel has let the namespaces go. Never raises for something already gone."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        for name in reversed(self.netns):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and set(self.netns) & set(netns_names()):
            time.sleep(0.1)
        shutil.rmtree(self.work, ignore_errors=True)


def netns_names() -> list[str]:
    """The names of the network namespaces under /run/netns (`ip -j netns list`)."""
    proc = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True)
    try:
        return [n["name"] for n in json.loads(proc.stdout or "[]")]
    except ValueError:
        return []
