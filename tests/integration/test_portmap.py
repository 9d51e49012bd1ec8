"""cniplug-portmap in real namespaces, chained after cniplug-bridge through prevResult.

The "host" is a private namespace `tpm-h<k>` (its iptables, sysctls and addresses belong to the test alone);
containers are namespaces `tpm-c<k><n>` attached with cniplug-bridge to bridge `tpmbr<k>`, network `tpmnet<k>`,
10.231.<k>.0/24 and fd10:231:<k>::/64; an "outside" namespace `tpm-o<k>` hangs off the host by a veth
(10.231.<100+k>.0/30). Servers are python3 in `ip netns exec`, bounded by `timeout`.

The kernel here has no SCTP (socket(IPPROTO_SCTP) fails), so sctp is compared with the reference as iptables
state only; tcp and udp are tested end to end.

The bridge runs with hairpinMode, as Kubernetes configures it for portmap: with br_netfilter loaded (it is
here: net.bridge.bridge-nf-call-iptables=1) a container's packet to its own host port is DNATed at the bridge
layer and must leave by the port it came in on; without hairpin mode the bridge drops it (measured; the
reference portmap behaves the same).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tcr_netstate import in_host, plugin_env, remove_lock_files, run_in_host

from cniplug.cli import plugin_argv
from cniplug.plugins.common import chain_name
from cniplug.plugins.portmap import LOCK_PATH, dn_chain
from cniplug.runner import SYSTEM_PATH

pytestmark = pytest.mark.root

REFERENCE = "/usr/lib/cni/portmap"

SERVER = r"""
import socket, sys, threading, time
tcp_port, udp_port, family = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
af = socket.AF_INET6 if family == "6" else socket.AF_INET
any_addr = "::" if family == "6" else "0.0.0.0"
t = socket.socket(af, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((any_addr, tcp_port)); t.listen(16)
u = socket.socket(af, socket.SOCK_DGRAM)
u.bind((any_addr, udp_port))
def udp():
    while True:
        data, peer = u.recvfrom(100)
        u.sendto(b"tpm-udp " + peer[0].encode(), peer)
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
while True:
    c, peer = t.accept()
    c.sendall(b"tpm-tcp " + peer[0].encode()); c.close()
"""

CLIENT = r"""
import socket, sys
addr, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
af = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(af, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.settimeout(3)
if proto == "tcp":
    s.connect((addr, port)); print(s.recv(100).decode())
else:
    s.sendto(b"ping", (addr, port)); print(s.recvfrom(100)[0].decode())
"""


@dataclass
class Site:
    """One host namespace with a bridge network, its containers and an outside namespace."""

    k: int
    host: str
    data_dir: Path
    make_netns: Callable[..., str]
    containers: dict[str, str] = field(default_factory=dict)  # container id -> netns path
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # container id -> bridge ADD result
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def net(self) -> str:
        return f"tpmnet{self.k}"

    @property
    def gateway(self) -> str:
        return f"10.231.{self.k}.1"

    def bridge_config(self) -> dict[str, Any]:
        return {"cniVersion": "1.0.0", "name": self.net, "type": "cniplug-bridge", "bridge": f"tpmbr{self.k}",
                "isGateway": True, "ipMasq": True, "hairpinMode": True,
                "ipam": {"type": "cniplug-host-local", "dataDir": str(self.data_dir),
                         "ranges": [[{"subnet": f"10.231.{self.k}.0/24"}], [{"subnet": f"fd10:231:{self.k}::/64"}]],
                         "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}}

    def attach(self, cid: str) -> str:
        netns = self.make_netns(f"tpm-c{self.k}{len(self.containers)}", prefix="")
        r = run_in_host(self.host, "cniplug-bridge", "ADD", self.bridge_config(), netns, cid)
        assert r.rc == 0, r.stdout + r.stderr
        self.containers[cid] = netns
        self.results[cid] = r.json
        subprocess.run(["ip", "netns", "exec", Path(netns).name, "ip", "link", "set", "lo", "up"], check=True)
        return netns

    def portmap_config(self, cid: str, mappings: list[dict[str, Any]], plugin: str = "cniplug-portmap",
                       **extra: Any) -> dict[str, Any]:
        conf = {"cniVersion": "1.0.0", "name": self.net, "type": plugin, "capabilities": {"portMappings": True},
                "runtimeConfig": {"portMappings": mappings}, **extra}
        if cid in self.results:
            conf["prevResult"] = self.results[cid]
        return conf

    def portmap(self, command: str, cid: str, mappings: list[dict[str, Any]], plugin: str = "cniplug-portmap",
                netns: str | None = None, **extra: Any) -> Any:
        conf = self.portmap_config(cid, mappings, plugin, **extra)
        if plugin != "cniplug-portmap":
            proc = subprocess.run(["ip", "netns", "exec", self.host, REFERENCE], input=json.dumps(conf).encode(),
                                  capture_output=True, timeout=60,
                                  env={"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_IFNAME": "eth0",
                                       "CNI_NETNS": self.containers.get(cid, "") if netns is None else netns,
                                       "CNI_PATH": "/usr/lib/cni", "PATH": SYSTEM_PATH})
            from conftest import PluginRun

            return PluginRun(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
        return run_in_host(self.host, plugin, command, conf, self.containers.get(cid, "") if netns is None else netns,
                           cid)

    def serve(self, cid: str, tcp: int, udp: int, family: int = 4) -> None:
        ns = Path(self.containers[cid]).name
        proc = subprocess.Popen(["ip", "netns", "exec", ns, "timeout", "60", sys.executable, "-c", SERVER,
                                 str(tcp), str(udp), str(family)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.servers.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready", proc.stderr.read() if proc.stderr else ""

    def ask(self, ns: str, addr: str, port: int, proto: str) -> str:
        """From namespace `ns` (a name), connect to addr:port; the server's answer ('' on failure)."""
        proc = subprocess.run(["ip", "netns", "exec", ns, "timeout", "10", sys.executable, "-c", CLIENT, addr,
                               str(port), proto], capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def nat(self) -> list[str]:
        """iptables-save and ip6tables-save of the nat table, counters and comments of the tools removed."""
        out = []
        for tool in ("iptables-save", "ip6tables-save"):
            for line in in_host(self.host, tool, "-t", "nat").splitlines():
                if not line.startswith("#"):
                    out.append(f"{tool[:-5]} " + re.sub(r"\[\d+:\d+\]", "[0:0]", line))
        return out


@pytest.fixture
def site(make_netns: Callable[..., str], tmp_path: Path) -> Iterator[Callable[[int], Site]]:
    made: list[Site] = []

    def make(k: int) -> Site:
        host = Path(make_netns(f"tpm-h{k}", prefix="")).name
        in_host(host, "ip", "link", "set", "lo", "up")
        s = Site(k, host, tmp_path / f"ipam{k}", make_netns)
        made.append(s)
        return s

    yield make
    for s in made:
        for p in s.servers:
            p.kill()
            p.wait()
    remove_lock_files([f"tpmbr{s.k}" for s in made])
    Path(LOCK_PATH).unlink(missing_ok=True)


def outside(s: Site) -> str:
    """A namespace `tpm-o<k>` behind a veth from the host: 10.231.<100+k>.2 -> host 10.231.<100+k>.1."""
    ns = Path(s.make_netns(f"tpm-o{s.k}", prefix="")).name
    net = f"10.231.{100 + s.k}"
    in_host(s.host, "ip", "link", "add", f"tpmo{s.k}", "type", "veth", "peer", "name", "eth0", "netns", ns)
    in_host(s.host, "ip", "addr", "add", f"{net}.1/30", "dev", f"tpmo{s.k}")
    in_host(s.host, "ip", "link", "set", f"tpmo{s.k}", "up")
    for argv in (["ip", "addr", "add", f"{net}.2/30", "dev", "eth0"], ["ip", "link", "set", "eth0", "up"],
                 ["ip", "link", "set", "lo", "up"], ["ip", "route", "add", "default", "via", f"{net}.1"]):
        subprocess.run(["ip", "netns", "exec", ns, *argv], check=True)
    return ns


def wait_not_tentative(host: str, dev: str) -> None:
    """Until DAD has finished on dev's IPv6 addresses: a tentative address is not yet LOCAL to the addrtype
    match, so the first connection to it would miss CNI-HOSTPORT-DNAT (measured)."""
    deadline = time.monotonic() + 10
    while in_host(host, "ip", "-6", "addr", "show", "dev", dev, "tentative").strip():
        assert time.monotonic() < deadline, f"{dev} stays tentative"
        time.sleep(0.05)


MAPPINGS = [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 18053, "containerPort": 53, "protocol": "udp"}]


def test_tcp_and_udp_through_the_host_port(site: Callable[[int], Site]) -> None:
    """From the host (bridge address and 127.0.0.1), another container, the container itself (hairpin), the
    outside, and IPv6 from the host; then DEL takes away every rule it made and the ports stop answering."""
    s = site(1)
    s.attach("tpmc1")
    other = s.attach("tpmc2")
    out = outside(s)
    before = s.nat()
    r = s.portmap("ADD", "tpmc1", MAPPINGS)
    assert r.rc == 0, r.stdout + r.stderr
    assert r.json == s.results["tpmc1"], "portmap must pass prevResult through unchanged"
    assert in_host(s.host, "cat", "/proc/sys/net/ipv4/conf/tpmbr1/route_localnet").strip() == "1"
    s.serve("tpmc1", 80, 53)
    me = Path(s.containers["tpmc1"]).name
    ip6 = s.results["tpmc1"]["ips"][1]["address"].split("/")[0]
    cases = [
        ("host via the bridge address", s.host, s.gateway),
        ("host via localhost", s.host, "127.0.0.1"),
        ("another container", Path(other).name, s.gateway),
        ("the container itself (hairpin)", me, s.gateway),
        ("the outside", out, f"10.231.{100 + s.k}.1"),
    ]
    failures = []
    for label, ns, addr in cases:
        for proto, port in (("tcp", 18080), ("udp", 18053)):
            answer = s.ask(ns, addr, port, proto)
            if not answer.startswith(f"tpm-{proto} "):
                failures.append(f"{label} {proto} {addr}:{port}: {answer!r}")
            elif label.endswith("(hairpin)") and answer.split()[1] == s.results["tpmc1"]["ips"][0]["address"][:-3]:
                failures.append(f"hairpin {proto} not masqueraded: the server saw {answer}")
    assert not failures, failures
    # IPv6: the server listens on :: too (a second one, v6 only sockets on other ports are not needed: dual stack)
    s.serve("tpmc1", 81, 54, family=6)
    r6 = s.portmap("DEL", "tpmc1", MAPPINGS)
    assert r6.rc == 0
    v6 = [{"hostPort": 18081, "containerPort": 81, "protocol": "tcp"},
          {"hostPort": 18054, "containerPort": 54, "protocol": "udp"}]
    assert s.portmap("ADD", "tpmc1", v6).rc == 0
    gw6 = s.results["tpmc1"]["ips"][1]["gateway"]
    wait_not_tentative(s.host, f"tpmbr{s.k}")
    assert s.ask(s.host, gw6, 18081, "tcp").startswith("tpm-tcp "), "IPv6 tcp from the host"
    assert s.ask(s.host, gw6, 18054, "udp").startswith("tpm-udp "), "IPv6 udp from the host"
    assert s.ask(Path(other).name, gw6, 18081, "tcp").startswith("tpm-tcp "), "IPv6 tcp from another container"
    assert ip6
    # DEL: none of this container's rules or chain is left (the shared CNI-HOSTPORT-* chains stay, as the
    # reference leaves them); again, and with no netns and no prevResult: still rc 0.
    del_conf = s.portmap_config("tpmc1", v6)
    del del_conf["prevResult"]
    r = run_in_host(s.host, "cniplug-portmap", "DEL", del_conf, "", "tpmc1")
    assert r.rc == 0, r.stdout + r.stderr
    after = s.nat()
    chain = dn_chain(s.net, "tpmc1")
    assert not [x for x in after if chain in x]
    shared = [x for x in after if "CNI-HOSTPORT-" in x]
    assert [x for x in after if x not in shared] == before
    assert s.ask(s.host, s.gateway, 18080, "tcp") == ""
    assert run_in_host(s.host, "cniplug-portmap", "DEL", del_conf, "", "tpmc1").rc == 0
    assert s.nat() == after


def test_host_port_of_another_container_is_refused(site: Callable[[int], Site]) -> None:
    """A second container asking for a host port (same protocol, overlapping hostIP) gets an error naming the
    port and the first container; nothing changes. Another protocol or another hostIP is fine."""
    s = site(2)
    s.attach("tpmc1")
    s.attach("tpmc2")
    assert s.portmap("ADD", "tpmc1", [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp",
                                        "hostIP": s.gateway}]).rc == 0
    state = s.nat()
    for mapping in ({"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"},
                    {"hostPort": 18080, "containerPort": 8080, "protocol": "TCP", "hostIP": s.gateway}):
        r = s.portmap("ADD", "tpmc2", [{"hostPort": 19000, "containerPort": 90}, mapping])
        assert r.rc == 1, r.stdout
        err = r.json
        assert err["code"] == 999 and "18080/tcp" in err["msg"] and "tpmc1" in err["msg"], err
        assert s.nat() == state, "a refused ADD changed iptables"
    r = s.portmap("ADD", "tpmc2", [{"hostPort": 18080, "containerPort": 80}], backend="nftables")
    assert r.rc == 1 and "18080/tcp" in r.json["msg"] and "tpmc1" in r.json["msg"], r.stdout
    # udp on the same port, and tcp on another host address, do not overlap.
    ok = [{"hostPort": 18080, "containerPort": 80, "protocol": "udp"},
          {"hostPort": 18080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}]
    r = s.portmap("ADD", "tpmc2", ok)
    assert r.rc == 0, r.stdout
    # The same container again (a runtime retrying ADD) is not a conflict with itself.
    assert s.portmap("ADD", "tpmc2", ok).rc == 0
    for cid, mappings in (("tpmc1", []), ("tpmc2", ok)):
        assert s.portmap("DEL", cid, mappings).rc == 0
    assert not [x for x in s.nat() if "CNI-DN-" in x]


def normalised(lines: list[str], site: Site) -> list[str]:
    """The CNI part of the nat tables, the site's number and its network's chain hash made neutral."""
    out = []
    for line in lines:
        if "CNI-" not in line:
            continue
        line = line.replace(dn_chain(site.net, "tpmc1"), "CNI-DN-<hash>").replace(site.net, "tpmnet<k>")
        line = line.replace(chain_name(site.net, "tpmc1"), "CNI-<hash>")
        line = re.sub(r"10\.231\.\d+\.", "10.231.<k>.", line).replace(f"fd10:231:{site.k}:", "fd10:231:<k>:")
        out.append(line)
    return sorted(out)


@pytest.mark.skipif(not Path(REFERENCE).exists(), reason="reference portmap not installed")
def test_kernel_state_matches_the_reference_and_each_deletes_the_others(site: Callable[[int], Site]) -> None:
    """Same config and chain (bridge -> portmap, dual stack, tcp/udp/sctp, a hostIP, snat) with ours in one host
    namespace and the reference in another: the same iptables-save of the CNI chains. Then each plugin's DEL
    removes what the other's ADD made."""
    mappings = [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 18053, "containerPort": 53, "protocol": "udp"},
                {"hostPort": 19000, "containerPort": 90, "protocol": "sctp", "hostIP": "10.231.3.1"},
                {"hostPort": 19001, "containerPort": 91, "protocol": "tcp", "hostIP": "fd10:231:3::1"}]
    ours, ref = site(3), site(4)
    for s in (ours, ref):
        s.attach("tpmc1")
    ref_mappings = json.loads(json.dumps(mappings).replace("10.231.3.1", "10.231.4.1").replace(":3::", ":4::"))
    assert ours.portmap("ADD", "tpmc1", mappings).rc == 0
    r = ref.portmap("ADD", "tpmc1", ref_mappings, plugin="portmap")
    assert r.rc == 0, r.stdout + r.stderr
    assert normalised(ours.nat(), ours) == normalised(ref.nat(), ref)
    assert in_host(ref.host, "cat", "/proc/sys/net/ipv4/conf/tpmbr4/route_localnet").strip() == "1"
    # A port the reference mapped is taken for ours too (a node that switched keeps its containers' ports).
    ref.attach("tpmc2")
    state = ref.nat()
    r = ref.portmap("ADD", "tpmc2", [{"hostPort": 18053, "containerPort": 53, "protocol": "udp"}])
    assert r.rc == 1 and "18053/udp" in r.json["msg"] and "tpmc1" in r.json["msg"], r.stdout
    assert ref.nat() == state
    # Our DEL (no runtimeConfig needed) on the reference's state; the reference's DEL on ours.
    assert ref.portmap("DEL", "tpmc1", []).rc == 0
    assert not [x for x in ref.nat() if "CNI-DN-" in x]
    r = ours.portmap("DEL", "tpmc1", mappings, plugin="portmap")
    assert r.rc == 0, r.stdout + r.stderr
    assert not [x for x in ours.nat() if "CNI-DN-" in x]


def test_check_and_gc(site: Callable[[int], Site]) -> None:
    """CHECK passes after ADD and names what is missing after a rule is deleted by hand; GC removes the chains
    of this network's attachments that are not valid any more, and keeps the valid ones."""
    s = site(5)
    for cid in ("tpmc1", "tpmc2"):
        s.attach(cid)
    m1 = [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]
    m2 = [{"hostPort": 18081, "containerPort": 80, "protocol": "tcp"}]
    assert s.portmap("ADD", "tpmc1", m1).rc == 0
    assert s.portmap("ADD", "tpmc2", m2).rc == 0
    r = s.portmap("CHECK", "tpmc1", m1)
    assert r.rc == 0, r.stdout
    chain = dn_chain(s.net, "tpmc1")
    dest = s.results["tpmc1"]["ips"][0]["address"].split("/")[0]
    in_host(s.host, "iptables", "-w", "-t", "nat", "-D", chain, "-p", "tcp", "--dport", "18080", "-j", "DNAT",
            "--to-destination", f"{dest}:80")
    r = s.portmap("CHECK", "tpmc1", m1)
    assert r.rc == 1 and "18080/tcp" in r.json["msg"], r.stdout
    gc = {"cniVersion": "1.1.0", "name": s.net, "type": "cniplug-portmap",
          "cni.dev/valid-attachments": [{"containerID": "tpmc2", "ifname": "eth0"}]}
    r = run_in_host(s.host, "cniplug-portmap", "GC", gc, "", "")
    assert r.rc == 0, r.stdout + r.stderr
    state = s.nat()
    assert not [x for x in state if chain in x]
    assert [x for x in state if dn_chain(s.net, "tpmc2") in x]
    assert s.portmap("DEL", "tpmc2", m2).rc == 0



def test_dry_run_script_run_with_bash_gives_the_plugins_state(site: Callable[[int], Site]) -> None:
    """The --dry-run script, run by bash in one host namespace, leaves the same nat tables and route_localnet as
    the plugin's ADD in another (design: the script is the truth)."""
    mappings = [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 18053, "containerPort": 53, "protocol": "udp", "hostIP": "fd10:231:{k}::1"}]
    by_plugin, by_bash = site(6), site(7)
    for s in (by_plugin, by_bash):
        s.attach("tpmc1")
    r = by_plugin.portmap("ADD", "tpmc1", json.loads(json.dumps(mappings).replace("{k}", "6")))
    assert r.rc == 0, r.stdout + r.stderr
    conf = by_bash.portmap_config("tpmc1", json.loads(json.dumps(mappings).replace("{k}", "7")))
    dry = subprocess.run(["ip", "netns", "exec", by_bash.host, *plugin_argv("cniplug-portmap"), "--dry-run"],
                         input=json.dumps(conf).encode(), capture_output=True, timeout=60,
                         env={**plugin_env("ADD", by_bash.containers["tpmc1"], "tpmc1")})
    assert dry.returncode == 0 and dry.stdout.startswith(b"#!/bin/bash"), dry.stdout + dry.stderr
    assert not [x for x in by_bash.nat() if "CNI-DN-" in x], "--dry-run changed something"
    ran = subprocess.run(["ip", "netns", "exec", by_bash.host, "bash"], input=dry.stdout, capture_output=True)
    assert ran.returncode == 0, ran.stderr
    assert normalised(by_plugin.nat(), by_plugin) == normalised(by_bash.nat(), by_bash)
    for s in (by_plugin, by_bash):
        assert in_host(s.host, "cat", f"/proc/sys/net/ipv4/conf/tpmbr{s.k}/route_localnet").strip() == "1"


def test_two_containers_racing_for_one_port(site: Callable[[int], Site], tmp_path: Path) -> None:
    """Two ADDs for the same host port started at once: exactly one gets it, the other is refused (the portmap
    lock covers the conflict check and the change). `*-restore` is slowed down by 0.5 s through wrappers first in
    PATH, so that without the lock both would pass the check before either changes anything (seen: both rc 0)."""
    s = site(8)
    for cid in ("tpmc1", "tpmc2", "tpmc3"):
        s.attach(cid)
    # The shared chains exist already (else the loser's `-N CNI-HOSTPORT-DNAT` would fail even without a lock).
    assert s.portmap("ADD", "tpmc3", [{"hostPort": 17070, "containerPort": 70}]).rc == 0
    slow = tmp_path / "slow"
    slow.mkdir()
    for tool in ("iptables-restore", "ip6tables-restore"):
        real = shutil.which(tool, path=SYSTEM_PATH)
        (slow / tool).write_text(f"#!/bin/sh\nsleep 0.5\nexec {real} \"$@\"\n")
        (slow / tool).chmod(0o755)
    procs = []
    for cid in ("tpmc1", "tpmc2"):
        conf = s.portmap_config(cid, [{"hostPort": 18080, "containerPort": 80}])
        procs.append(subprocess.Popen(["ip", "netns", "exec", s.host, *plugin_argv("cniplug-portmap")],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      env=plugin_env("ADD", s.containers[cid], cid, path_prefix=str(slow))))
        assert procs[-1].stdin is not None
        procs[-1].stdin.write(json.dumps(conf).encode())
        procs[-1].stdin.close()
    rcs = sorted(p.wait(timeout=60) for p in procs)
    assert rcs == [0, 1]
    assert len([x for x in s.nat() if x.startswith("iptables -A CNI-HOSTPORT-DNAT") and "18080" in x]) == 1
    for cid in ("tpmc1", "tpmc2", "tpmc3"):
        assert s.portmap("DEL", cid, []).rc == 0


def nft_rules_of(s: Site, cid: str) -> list[str]:
    """Lines of the nft portmap tables (both families) that carry this container id's comment."""
    out = []
    for fam in ("ip", "ip6"):
        proc = subprocess.run(["ip", "netns", "exec", s.host, "nft", "list", "table", fam, "cni_hostport"],
                              capture_output=True, text=True)
        out += [f"{fam}: {line.strip()}" for line in proc.stdout.splitlines() if f'comment "{cid}"' in line]
    return out


def test_nftables_backend(site: Callable[[int], Site]) -> None:
    """backend nftables: tcp and udp through the host port from the host (bridge address, localhost), another
    container, the container itself and the outside; iptables untouched; a second container's request for the
    port is refused; DEL (no prevResult, no netns) removes every rule of the container, twice."""
    s = site(9)
    s.attach("tpmc1")
    other = s.attach("tpmc2")
    out = outside(s)
    before = s.nat()
    r = s.portmap("ADD", "tpmc1", MAPPINGS, backend="nftables")
    assert r.rc == 0, r.stdout + r.stderr
    assert s.nat() == before, "the nftables backend changed iptables"
    assert len(nft_rules_of(s, "tpmc1")) == 2 + 2 + 1 + 2  # dnat v4, v6; masquerade v6; v4 hairpin + localhost
    s.serve("tpmc1", 80, 53)
    me = Path(s.containers["tpmc1"]).name
    failures = []
    for label, ns, addr in [("host", s.host, s.gateway), ("localhost", s.host, "127.0.0.1"),
                            ("another container", Path(other).name, s.gateway), ("hairpin", me, s.gateway),
                            ("outside", out, f"10.231.{100 + s.k}.1")]:
        for proto, port in (("tcp", 18080), ("udp", 18053)):
            if not s.ask(ns, addr, port, proto).startswith(f"tpm-{proto} "):
                failures.append(f"{label} {proto}")
    assert not failures, failures
    r = s.portmap("ADD", "tpmc2", [{"hostPort": 18080, "containerPort": 80}], backend="nftables")
    assert r.rc == 1 and "18080/tcp" in r.json["msg"] and "tpmc1" in r.json["msg"], r.stdout
    assert not nft_rules_of(s, "tpmc2")
    # The other backend sees the port taken too (a node that switched backends keeps its containers' ports).
    r = s.portmap("ADD", "tpmc2", [{"hostPort": 18053, "containerPort": 53, "protocol": "udp"}], backend="iptables")
    assert r.rc == 1 and "18053/udp" in r.json["msg"] and "tpmc1" in r.json["msg"], r.stdout
    assert s.nat() == before
    conf = s.portmap_config("tpmc1", [], backend="nftables")
    del conf["prevResult"]
    for _ in range(2):
        r = run_in_host(s.host, "cniplug-portmap", "DEL", conf, "", "tpmc1")
        assert r.rc == 0, r.stdout + r.stderr
        assert nft_rules_of(s, "tpmc1") == []
    assert s.ask(s.host, s.gateway, 18080, "tcp") == ""
