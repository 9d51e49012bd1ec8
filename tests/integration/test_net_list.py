"""`cniplug net` as root: whole lists on real namespaces, turns with libcni's `cnitool` on one attachment, a
reference plugin in a list, and the --dry-run script of a list run by bash against the real thing.

Every name starts with `tnt`: networks `tntnet<N>`, bridges `tntbr<N>`, namespaces `tnt-<tag>`, subnets
10.235.<N>.0/24, a private IPAM dataDir and NETCONFPATH. libcni's cache lives in /var/lib/cni/results (cnitool
has no way to move it): the files of our networks are removed afterwards, as are bridges, NAT chains and
namespaces, also when a test fails. Plugins are exec'd from a bin dir made by `cniplug install`, and the
reference plugins from /usr/lib/cni; CNIPLUG_NO_HELPER keeps a helper another checkout runs out of it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cniplug.net import container_id_of
from cniplug.plugins.bridge import lock_path
from cniplug.plugins.common import chain_name
from tests.conftest import install_wrappers

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path("/var/lib/cni/results")


def ipj(*argv: str) -> list[dict[str, Any]]:
    out = subprocess.run(["ip", "-j", *argv], capture_output=True, text=True, check=True).stdout
    return json.loads(out) if out.strip() else []


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_wrappers(tmp_path_factory.mktemp("tntbin"))


@pytest.fixture(scope="module")
def cnitool() -> Path:
    path = Path(os.environ.get("CNITOOL_CACHE") or REPO / ".cache/cnitool/cnitool")
    if not os.access(path, os.X_OK):
        subprocess.run(["bash", str(REPO / "contrib/build-cnitool.sh")], check=True)
    return path


@dataclass
class World:
    tmp: Path
    bin_dir: Path
    make_netns: Callable[..., str]
    networks: list[str] = field(default_factory=list)
    bridges: list[str] = field(default_factory=list)
    netnses: list[str] = field(default_factory=list)

    def conflist(self, n: int, *plugins: dict[str, Any], version: str = "1.0.0") -> str:
        name = f"tntnet{n}"
        self.networks.append(name)
        (self.tmp / "net.d").mkdir(exist_ok=True)
        (self.tmp / "net.d" / f"{n:02d}-{name}.conflist").write_text(
            json.dumps({"cniVersion": version, "name": name, "plugins": list(plugins)}))
        return name

    def bridge(self, n: int, **extra: Any) -> dict[str, Any]:
        self.bridges.append(f"tntbr{n}")
        return {"type": "cniplug-bridge", "bridge": f"tntbr{n}", "isGateway": True, "ipMasq": True,
                "ipam": self.ipam(n), **extra}

    def ipam(self, n: int) -> dict[str, Any]:
        return {"type": "cniplug-host-local", "subnet": f"10.235.{n}.0/24", "dataDir": str(self.tmp / "ipam")}

    def netns(self, tag: str) -> str:
        path = self.make_netns(f"tnt-{tag}", prefix="")
        self.netnses.append(path)
        return path

    def env(self, **extra: str) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", ""), "NETCONFPATH": str(self.tmp / "net.d"),
                "CNI_PATH": f"{self.bin_dir}:/usr/lib/cni", "CNIPLUG_NO_HELPER": "1", "PYTHONPATH": str(REPO),
                **extra}

    def net(self, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cniplug", "net", *argv], capture_output=True, text=True,
                              env=self.env(**env), timeout=120)

    def cache(self, network: str, netns: str) -> Path:
        return RESULTS / f"{network}-{container_id_of(netns)}-eth0"

    def reserved(self, network: str) -> dict[str, str]:
        store = self.tmp / "ipam" / network
        if not store.exists():
            return {}
        return {p.name: p.read_bytes().decode() for p in store.iterdir() if p.name[0].isdigit()}


@pytest.fixture
def world(tmp_path: Path, bin_dir: Path, make_netns: Callable[..., str]) -> Iterator[World]:
    w = World(tmp_path, bin_dir, make_netns)
    yield w
    for ns in w.netnses:  # the namespaces go first (make_netns): their veths, and the host ends, go with them
        subprocess.run(["ip", "netns", "delete", Path(ns).name], capture_output=True)
    for name in w.networks:
        for path in RESULTS.glob(f"{name}-*"):
            path.unlink(missing_ok=True)
        for ns in w.netnses:
            chain = chain_name(name, container_id_of(ns))
            for tool in ("iptables", "ip6tables"):
                rules = subprocess.run([tool, "-w", "-t", "nat", "-S", "POSTROUTING"], capture_output=True,
                                       text=True).stdout
                for line in rules.splitlines():
                    if line.endswith(f"-j {chain}"):
                        subprocess.run([tool, "-w", "-t", "nat", "-D", *shlex.split(line)[1:]],
                                       capture_output=True)
                subprocess.run([tool, "-w", "-t", "nat", "-F", chain], capture_output=True)
                subprocess.run([tool, "-w", "-t", "nat", "-X", chain], capture_output=True)
    for bridge in w.bridges:
        subprocess.run(["ip", "link", "delete", bridge], capture_output=True)
        Path(lock_path(bridge)).unlink(missing_ok=True)


def nat_lines(chain: str) -> list[str]:
    out = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True, check=True).stdout
    return sorted(re.sub(r"\[\d+:\d+\]", "", line) for line in out.splitlines() if chain in line)


def container_links(netns: str) -> list[str]:
    return sorted(link["ifname"] for link in ipj("-n", Path(netns).name, "link", "show"))


def gone(w: World, network: str, netns: str) -> None:
    """What DEL must leave: no eth0, no NAT chain, no reservation, no cache."""
    assert container_links(netns) == ["lo"]
    assert nat_lines(chain_name(network, container_id_of(netns))) == []
    assert container_id_of(netns) not in "".join(w.reserved(network).values())
    assert not w.cache(network, netns).exists()


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


# ---- a cniplug-only list through every verb


def test_add_check_del_gc_status_on_a_cniplug_only_list(world: World) -> None:
    network = world.conflist(1, world.bridge(1), {"type": "cniplug-loopback"}, version="1.1.0")
    a, b = world.netns("n1a"), world.netns("n1b")
    ra, rb = world.net("add", network, a), world.net("add", network, b)
    assert ra.returncode == 0 and rb.returncode == 0, (ra.stderr, rb.stderr)
    result = json.loads(ra.stdout)
    assert result["cniVersion"] == "1.1.0" and result["ips"][0]["address"] == "10.235.1.2/24"
    assert [i["name"] for i in result["interfaces"]][0::2] == ["tntbr1", "eth0"]
    assert all(i["mac"] for i in result["interfaces"]), result
    cached = json.loads(world.cache(network, a).read_text())
    assert (cached["kind"], cached["containerId"], cached["netns"], cached["result"]) == (
        "cniCacheV1", container_id_of(a), a, result)
    assert world.reserved(network) == {"10.235.1.2": f"{container_id_of(a)}\r\neth0",
                                       "10.235.1.3": f"{container_id_of(b)}\r\neth0"}
    assert "UP" in ipj("-n", "tnt-n1a", "link", "show", "lo")[0]["flags"], "the loopback plugin ran"

    assert (c := world.net("check", network, a)).returncode == 0, c.stderr
    assert (s := world.net("status", network)).returncode == 0, s.stderr
    subprocess.run(["ip", "link", "set", "tntbr1", "down"], check=True)
    line = one_line_error(world.net("status", network))
    assert line.startswith('cniplug net: plugin type="cniplug-bridge" failed (status): CNI error 51: '), line
    subprocess.run(["ip", "link", "set", "tntbr1", "up"], check=True)
    # GC keeping a: b is a stale attachment, deleted from its cache entry; then each plugin's GC
    assert (g := world.net("gc", network, a)).returncode == 0, g.stderr
    gone(world, network, b)
    assert world.cache(network, a).exists() and nat_lines(chain_name(network, container_id_of(a)))
    assert world.net("check", network, a).returncode == 0

    assert (d := world.net("del", network, a)).returncode == 0, d.stderr
    gone(world, network, a)
    assert world.net("del", network, a).returncode == 0, "DEL is idempotent"
    # CHECK with nothing there: one line naming the plugin, the verb and its CNI error
    line = one_line_error(world.net("check", network, a))
    assert line.startswith('cniplug net: plugin type="cniplug-bridge" failed (check): CNI error '), line


def test_bad_input_is_one_line_and_changes_nothing(world: World) -> None:
    network = world.conflist(6, world.bridge(6))
    a = world.netns("n6a")
    for env, expect in (({"CNI_IFNAME": "eth0/x"}, "CNI_IFNAME"), ({"CAP_ARGS": "[1]"}, "CAP_ARGS"),
                        ({"CNI_ARGS": "a"}, "CNI_ARGS"), ({"NETCONFPATH": str(world.tmp / "none")}, "no net")):
        assert expect in one_line_error(world.net("add", network, a, **env))
    assert expect in one_line_error(world.net("add", network, a, "--dry-run", **env))
    assert container_links(a) == ["lo"] and not world.cache(network, a).exists() and world.reserved(network) == {}
    assert not Path("/sys/class/net/tntbr6").exists()
    assert world.net("add", network).returncode == 2, "usage error without NETNS"


# ---- cnitool and cniplug net take turns on one attachment


def test_cnitool_and_cniplug_net_take_turns(world: World, cnitool: Path) -> None:
    network = world.conflist(2, world.bridge(2), {"type": "cniplug-loopback"})
    ns = world.netns("n2a")

    def tool(verb: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(cnitool), verb, network, ns], capture_output=True, text=True, env=world.env())

    # cnitool adds, cniplug net checks, cnitool deletes
    assert (r := tool("add")).returncode == 0, r.stderr
    assert json.loads(world.cache(network, ns).read_text())["kind"] == "cniCacheV1"
    assert (c := world.net("check", network, ns)).returncode == 0, c.stderr
    assert (d := tool("del")).returncode == 0, d.stderr
    gone(world, network, ns)
    # cniplug net adds, cnitool checks (reads our cache), cniplug net deletes
    assert (r2 := world.net("add", network, ns)).returncode == 0, r2.stderr
    assert (c2 := tool("check")).returncode == 0, c2.stderr
    assert (d2 := world.net("del", network, ns)).returncode == 0, d2.stderr
    gone(world, network, ns)
    # and across: one adds, the other deletes
    assert world.net("add", network, ns).returncode == 0
    assert tool("del").returncode == 0
    gone(world, network, ns)
    assert tool("add").returncode == 0
    assert world.net("del", network, ns).returncode == 0
    gone(world, network, ns)


# ---- a reference plugin in the list


def test_a_reference_plugin_in_the_list(world: World) -> None:
    tuning = {"type": "tuning", "sysctl": {"net.core.somaxconn": "512"}}
    network = world.conflist(3, world.bridge(3), tuning)
    ns = world.netns("n3a")
    r = world.net("add", network, ns)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ips"][0]["address"] == "10.235.3.2/24", "tuning passed bridge's result on"
    somaxconn = subprocess.run(["ip", "netns", "exec", "tnt-n3a", "cat", "/proc/sys/net/core/somaxconn"],
                               capture_output=True, text=True, check=True).stdout.strip()
    assert somaxconn == "512"
    assert (c := world.net("check", network, ns)).returncode == 0, c.stderr

    other = world.netns("n3b")
    dry = world.net("add", network, other, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    tuning_lines = [line for line in dry.stdout.splitlines() if "/usr/lib/cni/tuning" in line]
    assert tuning_lines and all(line.startswith("#") for line in tuning_lines), tuning_lines
    assert re.search(r"^# CNI_COMMAND=ADD CNI_CONTAINERID=cnitool-\S+ CNI_NETNS=/run/netns/tnt-n3b "
                     r".*/usr/lib/cni/tuning <<'EOF'$", dry.stdout, re.M), dry.stdout
    stdin = re.search(r"tuning <<'EOF'\n# (.*)\n# EOF", dry.stdout)
    assert stdin is not None
    prev = json.loads(stdin.group(1))["prevResult"]
    assert prev["ips"][0]["address"] == "10.235.3.3/24", "its prevResult is bridge's dry-run result"
    assert "not shown" in dry.stdout
    assert container_links(other) == ["lo"], "--dry-run changed nothing"

    assert (d := world.net("del", network, ns)).returncode == 0, d.stderr
    gone(world, network, ns)
    # a reference plugin's CNI error comes back with its code and message, on one line
    bad = world.conflist(4, world.bridge(4), {"type": "tuning", "sysctl": {"net.tnt.none": "1"}})
    line = one_line_error(world.net("add", bad, world.netns("n4a")))
    assert re.match(r'cniplug net: plugin type="tuning" failed \(add\): CNI error \d+: .*net/tnt/none', line), line


# ---- --dry-run of a list, run by bash, leaves what `cniplug net add` leaves


def attachment_state(w: World, network: str, netns: str, host_index: int) -> dict[str, Any]:
    """Links, addresses, routes and sysctls in the namespace; the host veth (from the cached result: its
    name is mapped to VETH), its bridge, addresses and routes; the NAT chain; the IPAM files; the cache."""
    ns = Path(netns).name
    cached = json.loads(w.cache(network, netns).read_text())
    veth = cached["result"]["interfaces"][host_index]["name"]

    def link(entry: dict[str, Any]) -> dict[str, Any]:
        return {"name": entry["ifname"], "mtu": entry["mtu"], "flags": sorted(entry["flags"]),
                "master": entry.get("master"),
                "addrs": sorted(f"{a['local']}/{a['prefixlen']} {a.get('broadcast', '')} {a['scope']}"
                                for a in entry.get("addr_info", []) if a["scope"] != "link")}

    def routes(*prefix: str) -> list[str]:
        return sorted(json.dumps({k: r.get(k) for k in ("dst", "gateway", "dev", "protocol", "scope", "prefsrc")},
                                 sort_keys=True) for r in ipj(*prefix, "route", "show"))

    sysctl = subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-n", "net.ipv4.conf.eth0.arp_notify",
                             "net.ipv6.conf.eth0.accept_dad"], capture_output=True, text=True).stdout.split()
    host_veth = link(ipj("addr", "show", "dev", veth)[0])
    state = {
        "container": [link(x) for x in ipj("-n", ns, "addr", "show")], "routes": routes("-n", ns),
        "sysctl": sysctl, "host_veth": host_veth, "host_routes": [],
        "accept_ra": Path(f"/proc/sys/net/ipv6/conf/{veth}/accept_ra").read_text(),
        "nat": nat_lines(chain_name(network, container_id_of(netns))),
        "ipam": w.reserved(network),
        "cache": {k: v for k, v in cached.items() if k != "result"},
        "result_ips": cached["result"]["ips"],
    }
    for dev in filter(None, (veth, host_veth["master"])):  # the host's routes through the attachment (IPv4)
        state["host_routes"] += sorted(
            json.dumps({k: r.get(k) for k in ("dst", "gateway", "protocol", "scope", "prefsrc")}, sort_keys=True)
            for r in ipj("-4", "route", "show", "dev", dev))
    if host_veth["master"]:
        state["bridge"] = link(ipj("addr", "show", "dev", host_veth["master"])[0])
    return json.loads(json.dumps(state).replace(veth, "VETH"))


@pytest.mark.parametrize("kind", ["bridge", "ptp"])
def test_dry_run_script_of_a_list_leaves_what_net_add_leaves(world: World, kind: str) -> None:
    n = 5 if kind == "bridge" else 7
    first = world.bridge(n) if kind == "bridge" else {"type": "cniplug-ptp", "ipMasq": True, "mtu": 1400,
                                                        "ipam": world.ipam(n)}
    network = world.conflist(n, first, {"type": "cniplug-loopback"})
    host_index = 1 if kind == "bridge" else 0
    ns = world.netns(f"n{n}a")
    store = world.tmp / "ipam" / network

    dry = world.net("add", network, ns, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("#!/bin/bash\n")
    # --dry-run changed nothing
    assert container_links(ns) == ["lo"] and world.reserved(network) == {} and not world.cache(network, ns).exists()
    assert not Path(f"/sys/class/net/tntbr{n}").exists()
    script = world.tmp / "add.sh"
    script.write_text(dry.stdout)
    ran = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    by_script = attachment_state(world, network, ns, host_index)
    assert by_script["ipam"] == {f"10.235.{n}.2": f"{container_id_of(ns)}\r\neth0"}
    assert by_script["nat"], "the script installed no NAT rules"
    assert (store / "last_reserved_ip.0").read_text() == f"10.235.{n}.2"
    # cniplug net del takes down what the script made, from the cache the script wrote
    assert (d := world.net("del", network, ns)).returncode == 0, d.stderr
    gone(world, network, ns)

    # The same world again, from scratch (same namespace path, so the same container id), by `cniplug net add`
    subprocess.run(["ip", "link", "delete", f"tntbr{n}"], capture_output=True)
    shutil.rmtree(store)
    ns = world.netns(f"n{n}a")
    assert (r := world.net("add", network, ns)).returncode == 0, r.stderr
    by_net = attachment_state(world, network, ns, host_index)
    assert (store / "last_reserved_ip.0").read_text() == f"10.235.{n}.2"
    assert by_script == by_net
    assert (d2 := world.net("del", network, ns)).returncode == 0, d2.stderr
    gone(world, network, ns)
