"""End to end through libcni's reference runtime `cnitool` (built by contrib/build-cnitool.sh).

cnitool reads the network list from NETCONFPATH, finds plugins in CNI_PATH, passes capability arguments
from CAP_ARGS (JSON) and keeps libcni's result cache in /var/lib/cni/results (cnitool 1.1.2 has no flag or
variable to move it, so every network here is named `tcenet<N>` and its cache file is removed afterwards).
The container id is cnitool's own: "cnitool-" + the first 10 bytes of sha512(netns path), in hex.

Every test uses its own N: bridge `tcebr<N>`, network `tcenet<N>`, subnet 10.250.120.0/22 + 16*N (/28),
namespaces `tcp-e2e-...`, and a private IPAM dataDir. Whatever a test leaves (interfaces, iptables rules
and chains, libcni cache, bridges) is removed by the `e2e` fixture even when the test fails.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cniplug.plugins.bridge import lock_path

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
REFERENCE_DIR = Path("/usr/lib/cni")
REFERENCE_PLUGINS = ("portmap", "tuning", "bandwidth", "firewall", "host-local", "bridge", "loopback")
LIBCNI_CACHE = Path("/var/lib/cni/results")
SUBNET_BASE = ipaddress.ip_network("10.250.120.0/22")
IPAM_KEEP = {"lock"}  # files in a host-local network dir that are not reservations (plus last_reserved_ip.*)


def cnitool_path() -> Path:
    raw = os.environ.get("CNITOOL_CACHE") or ".cache/cnitool/cnitool"
    path = Path(raw)
    return path if path.is_absolute() else REPO / path


def missing(what: str) -> None:
    """Fail in CI (CNIPLUG_REQUIRE_ROOT_TESTS set), skip elsewhere."""
    if os.environ.get("CNIPLUG_REQUIRE_ROOT_TESTS"):
        pytest.fail(what, pytrace=False)
    pytest.skip(what)


def sha512hex(text: str) -> str:
    return hashlib.sha512(text.encode()).hexdigest()


def cnitool_container_id(netns: str) -> str:
    """cnitool derives the container id from the absolute netns path."""
    return "cnitool-" + hashlib.sha512(os.path.abspath(netns).encode()).digest()[:10].hex()


def subnet(n: int) -> str:
    return str(list(SUBNET_BASE.subnets(new_prefix=28))[n])


def run(argv: list[str], *, env: dict[str, str] | None = None, input: bytes | None = None,
        check: bool = False) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, env=env, input=input.decode() if input is not None else None,
                          capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"{shlex.join(argv)} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


# Chains the reference portmap and firewall share between all containers and never remove.
SHARED_CHAINS = {"nat": ["CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"],
                 "filter": ["CNI-FORWARD", "CNI-ADMIN"]}


def _chains(tool: str, table: str) -> list[str]:
    out = subprocess.run([tool, "-w", "-t", table, "-S"], capture_output=True, text=True).stdout
    return out.splitlines()


@pytest.fixture(scope="module", autouse=True)
def remove_shared_chains_this_module_created() -> Iterator[None]:
    """The chains above exist after our chains ran portmap/firewall; remove them if they did not before."""
    before = {(tool, table, chain) for tool in ("iptables", "ip6tables") for table, chains in SHARED_CHAINS.items()
              for chain in chains if f"-N {chain}" in _chains(tool, table)}
    yield
    for tool in ("iptables", "ip6tables"):
        for table, chains in SHARED_CHAINS.items():
            ours = [c for c in chains if (tool, table, c) not in before and f"-N {c}" in _chains(tool, table)]
            for line in _chains(tool, table):
                words = shlex.split(line)
                if words[:1] == ["-A"] and words[-2:-1] == ["-j"] and words[-1] in ours:
                    subprocess.run([tool, "-w", "-t", table, "-D", *words[1:]], capture_output=True)
            for verb in ("-F", "-X"):
                for chain in ours:
                    subprocess.run([tool, "-w", "-t", table, verb, chain], capture_output=True)


@pytest.fixture(scope="module")
def cnitool() -> Path:
    path = cnitool_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        missing(f"cnitool not found at {path}: run contrib/build-cnitool.sh (or contrib/setup.sh) first; "
                "CNITOOL_CACHE overrides the path")
    return path


@pytest.fixture(scope="module")
def cni_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CNI bin dir: `cniplug install`ed executables plus the reference plugins for chains."""
    bin_dir = tmp_path_factory.mktemp("e2e") / "bin"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run([sys.executable, "-m", "cniplug", "install", "--bin-dir", str(bin_dir), "--no-auto-helper"], env=env,
        check=True)  # standalone: the helper that would start has its own tests (test_autostart.py)
    absent = [p for p in REFERENCE_PLUGINS if not (REFERENCE_DIR / p).is_file()]
    if absent:
        missing(f"reference plugins {absent} not in {REFERENCE_DIR}: apt-get install containernetworking-plugins")
    for plugin in REFERENCE_PLUGINS:
        (bin_dir / plugin).symlink_to(REFERENCE_DIR / plugin)
    return bin_dir


def iptables_save(tool: str) -> dict[str, list[str]]:
    """table -> lines of `<tool>-save` (chain declarations and rules)."""
    out = run([f"{tool}-save"]).stdout
    tables: dict[str, list[str]] = {}
    current = ""
    for line in out.splitlines():
        if line.startswith("*"):
            current = line[1:]
            tables[current] = []
        elif line.startswith((":", "-A")) and current:
            tables[current].append(line)
    return tables


def purge_iptables(needles: list[str]) -> None:
    """Delete every rule mentioning a needle, then every chain whose name contains one."""
    for tool in ("iptables", "ip6tables"):
        for table, lines in iptables_save(tool).items():
            for line in lines:
                if line.startswith("-A") and any(n in line for n in needles):
                    run([tool, "-w", "-t", table, "-D", *shlex.split(line)[1:]])
            for line in lines:
                chain = line[1:].split()[0] if line.startswith(":") else ""
                if chain and any(n in chain for n in needles):
                    run([tool, "-w", "-t", table, "-F", chain])
                    run([tool, "-w", "-t", table, "-X", chain])


def link_exists(name: str, netns: str = "") -> bool:
    prefix = ["ip", "-n", netns] if netns else ["ip"]
    return run([*prefix, "link", "show", "dev", name]).returncode == 0


@dataclass
class Attachment:
    net: str
    netns: str  # /run/netns/<name>
    ifname: str = "eth0"
    cap_args: dict[str, Any] | None = None
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def ns_name(self) -> str:
        return os.path.basename(self.netns)

    @property
    def container_id(self) -> str:
        return cnitool_container_id(self.netns)

    @property
    def cache_file(self) -> Path:
        return LIBCNI_CACHE / f"{self.net}-{self.container_id}-{self.ifname}"

    def needles(self) -> list[str]:
        """Strings that identify this attachment's iptables state (reference chain naming + rule comments)."""
        h = sha512hex(self.net + self.container_id)
        return [self.container_id, "CNI-" + h[:24], "CNI-DN-" + h[:21]]


class E2E:
    """cnitool in a private NETCONFPATH/CNI_PATH; remembers what it touched so the fixture can clean up."""

    def __init__(self, tool: Path, bin_dir: Path, root: Path, make_netns: Callable[[str], str]) -> None:
        self.tool, self.bin_dir, self.make_netns = tool, bin_dir, make_netns
        self.netd = root / "net.d"
        self.ipam_dir = root / "ipam"
        self.netd.mkdir()
        self.ipam_dir.mkdir()
        self.attachments: list[Attachment] = []
        self.bridges: list[str] = []

    def env(self, cap_args: dict[str, Any] | None = None, ifname: str = "eth0") -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CNI_PATH": str(self.bin_dir),
               "NETCONFPATH": str(self.netd), "CNI_IFNAME": ifname}
        if cap_args is not None:
            env["CAP_ARGS"] = json.dumps(cap_args)
        return env

    def write_conflist(self, conflist: dict[str, Any]) -> str:
        name = conflist["name"]
        assert name.startswith("tcenet"), name
        (self.netd / f"{name}.conflist").write_text(json.dumps(conflist, indent=1))
        for plugin in conflist["plugins"]:
            if plugin.get("bridge"):
                self.bridges.append(plugin["bridge"])
        return name

    def attach(self, net: str, tag: str, cap_args: dict[str, Any] | None = None) -> Attachment:
        att = Attachment(net, self.make_netns(f"e2e-{tag}"), cap_args=cap_args)
        self.attachments.append(att)
        return att

    def cnitool(self, verb: str, att: Attachment) -> subprocess.CompletedProcess[str]:
        return run([str(self.tool), verb, att.net, att.netns], env=self.env(att.cap_args, att.ifname))

    def add(self, att: Attachment) -> dict[str, Any]:
        proc = self.cnitool("add", att)
        assert proc.returncode == 0, f"cnitool add {att.net} failed:\n{proc.stdout}{proc.stderr}"
        att.result = json.loads(proc.stdout)
        assert att.cache_file.is_file(), f"libcni did not cache the ADD result in {att.cache_file}"
        return att.result

    def check(self, att: Attachment) -> None:
        proc = self.cnitool("check", att)
        assert proc.returncode == 0, f"cnitool check {att.net} failed (exit {proc.returncode}):\n{proc.stderr}"
        assert proc.stdout == ""

    def check_up_to_portmap(self, att: Attachment) -> None:
        """CHECK a chain whose LAST plugin is the reference portmap. portmap 1.1.1's CHECK looks for the IPv4
        DNAT rules in ip6tables too and fails whenever ip6tables works (containernetworking/plugins#819, fixed
        after 1.1.1). libcni checks the plugins in order and stops at the first failure, so that exact error
        still proves every plugin before portmap passed CHECK."""
        proc = self.cnitool("check", att)
        if proc.returncode == 0:
            return
        # IPv4-only: "could not check ipv6 dnat: chain CNI-DN-<h> not found in iptables table nat";
        # dual-stack: "could not check ipv6 dnat: rule [[... --to-destination <IPv4>:<port>]] in chain CNI-DN-<h> ..."
        known = proc.stderr.startswith("could not check ipv6 dnat: ") and f" {att.needles()[2]} " in proc.stderr
        assert known, f"cnitool check {att.net} failed (exit {proc.returncode}):\n{proc.stderr}"

    def delete(self, att: Attachment) -> None:
        proc = self.cnitool("del", att)
        assert proc.returncode == 0, f"cnitool del {att.net} failed (exit {proc.returncode}):\n{proc.stderr}"
        assert proc.stdout == ""

    def container_addrs(self, att: Attachment) -> list[str]:
        out = run(["ip", "-n", att.ns_name, "-j", "addr", "show", "dev", att.ifname], check=True).stdout
        return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(out) for a in link.get("addr_info", [])
                if a.get("scope") == "global"]

    def host_links(self, att: Attachment) -> list[str]:
        """Host-side interfaces the ADD result names (not the bridge, not in the sandbox)."""
        return [i["name"] for i in att.result.get("interfaces", [])
                if not i.get("sandbox") and i["name"] not in self.bridges]

    def leftovers(self, att: Attachment, bridge: str = "") -> list[str]:
        """Everything of `att` that DEL should have removed and didn't."""
        left = []
        if att.cache_file.exists():
            left.append(f"libcni cache {att.cache_file}")
        if link_exists(att.ifname, att.ns_name):
            left.append(f"{att.ifname} still in {att.ns_name}")
        for link in self.host_links(att):
            if link_exists(link):
                left.append(f"host link {link}")
        if bridge and link_exists(bridge):
            ports = json.loads(run(["ip", "-j", "link", "show", "master", bridge]).stdout or "[]")
            left += [f"port {p['ifname']} on {bridge}" for p in ports]
        ips = {ipaddress.ip_interface(ip["address"]).ip for ip in att.result.get("ips", [])}
        ip_tokens = {f"{ip}/{ip.max_prefixlen}" for ip in ips}
        needles = att.needles()
        for tool in ("iptables", "ip6tables"):
            for table, lines in iptables_save(tool).items():
                for line in lines:
                    if any(n in line for n in needles) or ip_tokens & set(line.split()):
                        left.append(f"{tool} -t {table}: {line}")
        net_dir = self.ipam_dir / att.net
        if net_dir.is_dir():
            left += [f"IPAM file {p}" for p in sorted(net_dir.iterdir())
                     if p.name not in IPAM_KEEP and not p.name.startswith("last_reserved_ip")]
        return left

    def cleanup(self) -> None:
        for att in reversed(self.attachments):
            if att.cache_file.exists() or link_exists(att.ifname, att.ns_name):
                self.cnitool("del", att)
            att.cache_file.unlink(missing_ok=True)
            purge_iptables(att.needles())
            for link in self.host_links(att):
                run(["ip", "link", "delete", link])
        for bridge in self.bridges:
            run(["ip", "link", "delete", bridge])
            Path(lock_path(bridge)).unlink(missing_ok=True)


@pytest.fixture
def e2e(cnitool: Path, cni_bin: Path, tmp_path: Path, make_netns: Callable[[str], str]) -> Iterator[E2E]:
    env = E2E(cnitool, cni_bin, tmp_path, make_netns)
    yield env
    env.cleanup()


def subnet6(n: int) -> str:
    return f"fd10:250:120:{n:x}::/64"


def host_local(e2e: E2E, n: int, plugin: str = "cniplug-host-local", dual: bool = False) -> dict[str, Any]:
    """IPAM for subnet n; `dual` adds an IPv6 range set (fd10:250:120:<n>::/64)."""
    ranges = [[{"subnet": subnet(n)}]] + ([[{"subnet": subnet6(n)}]] if dual else [])
    return {"type": plugin, "dataDir": str(e2e.ipam_dir), "ranges": ranges}


def bridge_plugin(e2e: E2E, n: int, plugin: str = "cniplug-bridge", ipam: str = "cniplug-host-local",
                  dual: bool = False) -> dict[str, Any]:
    return {"type": plugin, "bridge": f"tcebr{n}", "isGateway": True, "ipMasq": True,
            "ipam": host_local(e2e, n, ipam, dual)}


def conflist(n: int, version: str, *plugins: dict[str, Any]) -> dict[str, Any]:
    return {"cniVersion": version, "name": f"tcenet{n}", "plugins": list(plugins)}


def assert_attached(e2e: E2E, att: Attachment, n: int, interface_index: int) -> str:
    """The result names an address in subnet n (and, if dual-stack, one in subnet6(n)) on the container
    interface, and the container has them. Returns the IPv4 address."""
    result = att.result
    have = e2e.container_addrs(att)
    container = result["interfaces"][interface_index]
    assert container["name"] == att.ifname and container["sandbox"] == att.netns, result
    v4 = ""
    for ip in result["ips"]:
        address = ipaddress.ip_interface(ip["address"])
        want = subnet(n) if address.version == 4 else subnet6(n)
        assert address.network == ipaddress.ip_network(want), result
        assert ip.get("interface") == interface_index, result
        assert ip["address"] in have, f"{ip['address']} not in the container: {have}"
        v4 = v4 or (str(address.ip) if address.version == 4 else "")
    assert v4 and len(result["ips"]) <= 2, result
    return v4


# ---------------------------------------------------------------------------------------------------
# bridge and ptp through cnitool


def test_bridge_add_check_del(e2e: E2E) -> None:
    n = 0
    net = e2e.write_conflist(conflist(n, "1.0.0", bridge_plugin(e2e, n)))
    att = e2e.attach(net, "bridge")
    e2e.add(att)
    assert att.result["cniVersion"] == "1.0.0"
    assert [i["name"] for i in att.result["interfaces"]][0] == f"tcebr{n}"
    addr = assert_attached(e2e, att, n, 2)
    gateway = att.result["ips"][0]["gateway"]
    assert (e2e.ipam_dir / net / addr).is_file()
    run(["ip", "netns", "exec", att.ns_name, "ping", "-c", "1", "-W", "2", gateway], check=True)
    nat = "\n".join(iptables_save("iptables")["nat"])
    assert att.needles()[1] in nat, f"no ipMasq chain {att.needles()[1]}:\n{nat}"
    e2e.check(att)
    e2e.delete(att)
    assert e2e.leftovers(att, f"tcebr{n}") == []
    e2e.delete(att)  # DEL is idempotent, also without a cache entry


def test_ptp_add_check_del(e2e: E2E) -> None:
    n = 1
    net = e2e.write_conflist(conflist(n, "1.0.0", {"type": "cniplug-ptp", "ipMasq": True,
                                                   "ipam": host_local(e2e, n)}))
    att = e2e.attach(net, "ptp")
    e2e.add(att)
    assert att.result["cniVersion"] == "1.0.0"
    addr = assert_attached(e2e, att, n, 1)
    host_veth = att.result["interfaces"][0]["name"]
    assert link_exists(host_veth)
    assert (e2e.ipam_dir / net / addr).is_file()
    run(["ip", "netns", "exec", att.ns_name, "ping", "-c", "1", "-W", "2", att.result["ips"][0]["gateway"]],
        check=True)
    e2e.check(att)
    e2e.delete(att)
    assert e2e.leftovers(att) == []


# ---------------------------------------------------------------------------------------------------
# version matrix: cniplug-bridge at every spec version cnitool can drive


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_version_matrix(e2e: E2E, version: str) -> None:
    n = 2 + ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"].index(version)
    net = e2e.write_conflist(conflist(n, version, bridge_plugin(e2e, n)))
    att = e2e.attach(net, f"v{version.replace('.', '')}")
    proc = e2e.cnitool("add", att)
    if proc.returncode != 0 and f'unsupported CNI result version "{version}"' in proc.stderr:
        # Debian's libcni 1.1.2 speaks spec 1.0.0 and cannot parse a 1.1.0 result: the plugin answered in
        # the requested version, libcni refused the answer and cached nothing. DEL (which then gets no
        # prevResult) must still undo the plugin's ADD completely.
        assert version == "1.1.0", proc.stderr
        assert not att.cache_file.exists()
        assert link_exists(att.ifname, att.ns_name), "the plugin's ADD should have run"
        e2e.delete(att)
        assert e2e.leftovers(att, f"tcebr{n}") == []
        return
    assert proc.returncode == 0, f"cnitool add failed:\n{proc.stdout}{proc.stderr}"
    att.result = json.loads(proc.stdout)
    assert att.result["cniVersion"] == version
    assert_attached(e2e, att, n, 2)
    for ip in att.result["ips"]:
        if version.startswith("0."):
            assert ip["version"] == "4", att.result
        else:
            assert "version" not in ip, att.result
    proc = e2e.cnitool("check", att)
    if version in ("0.3.0", "0.3.1"):
        assert proc.returncode == 1
        assert f'configuration version "{version}" does not support the CHECK command' in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
    e2e.delete(att)
    assert e2e.leftovers(att, f"tcebr{n}") == []


# ---------------------------------------------------------------------------------------------------
# chains with the reference plugins (spec 1.0.0: what the Debian 1.1.1 binaries speak)


def test_chain_bridge_tuning_bandwidth_firewall_portmap(e2e: E2E) -> None:
    n = 10
    net = e2e.write_conflist(conflist(
        n, "1.0.0", bridge_plugin(e2e, n, dual=True),
        {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_filter": "1"}},
        {"type": "bandwidth", "capabilities": {"bandwidth": True}},
        {"type": "firewall", "backend": "iptables"},
        # last: its CHECK is broken in 1.1.1 (see E2E.check_up_to_portmap); everything before it is checked
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
    ))
    cap_args = {
        "portMappings": [{"hostPort": 30120, "containerPort": 80, "protocol": "tcp"}],
        "bandwidth": {"ingressRate": 8000000, "ingressBurst": 80000, "egressRate": 8000000, "egressBurst": 80000},
    }
    att = e2e.attach(net, "chain-full", cap_args)
    e2e.add(att)
    addr = assert_attached(e2e, att, n, 2)
    nat = "\n".join(iptables_save("iptables")["nat"])
    dn_chain = att.needles()[2]
    assert f":{dn_chain}" in nat, f"portmap chain {dn_chain} missing:\n{nat}"
    assert f"--to-destination {addr}:80" in nat, nat
    sysctl = run(["ip", "netns", "exec", att.ns_name, "sysctl", "-n", "net.ipv4.conf.eth0.arp_filter"], check=True)
    assert sysctl.stdout.strip() == "1"
    host_veth = e2e.host_links(att)[0]
    assert "tbf" in run(["tc", "qdisc", "show", "dev", host_veth], check=True).stdout
    ifbs = [i["name"] for i in att.result["interfaces"] if i["name"].startswith("bwp")]
    assert ifbs, f"bandwidth did not report its ifb device: {att.result}"
    assert link_exists(ifbs[0])
    forward = "\n".join(iptables_save("iptables")["filter"])
    assert f"{addr}/32" in forward, f"firewall rules for {addr} missing:\n{forward}"
    try:  # a CHECK failure is reported after DEL and the leftover check have run too
        e2e.check_up_to_portmap(att)
        check_error = None
    except AssertionError as exc:
        check_error = exc
    e2e.delete(att)
    assert e2e.leftovers(att, f"tcebr{n}") == []
    if check_error:
        raise check_error


@pytest.mark.parametrize(("n", "name", "kwargs"), [(11, "chain-refbr", {"plugin": "bridge"}),
                                                     (12, "chain-refhl", {"ipam": "host-local"})],
                         ids=["reference-bridge+cniplug-host-local", "cniplug-bridge+reference-host-local"])
def test_chain_mixing_reference_and_cniplug(e2e: E2E, n: int, name: str, kwargs: dict[str, str]) -> None:
    net = e2e.write_conflist(conflist(n, "1.0.0", bridge_plugin(e2e, n, **kwargs)))
    att = e2e.attach(net, name)
    e2e.add(att)
    addr = assert_attached(e2e, att, n, 2)
    assert (e2e.ipam_dir / net / addr).read_text().splitlines()[0] == att.container_id
    e2e.check(att)
    e2e.delete(att)
    assert e2e.leftovers(att, f"tcebr{n}") == []


# ---------------------------------------------------------------------------------------------------
# the contrib/ example network configs, renamed into this test's names


@pytest.mark.parametrize("example", ["cniplug-bridge", "cniplug-ptp", "cniplug-loopback"])
def test_contrib_example(e2e: E2E, example: str) -> None:
    n = 20 + ["cniplug-bridge", "cniplug-ptp", "cniplug-loopback"].index(example)
    conf = json.loads((REPO / "contrib" / f"{example}.conflist").read_text())
    assert conf["cniVersion"] == "1.0.0" and conf["name"] == example
    for plugin in conf["plugins"]:
        assert (e2e.bin_dir / plugin["type"]).exists(), plugin["type"]
        if "bridge" in plugin:
            plugin["bridge"] = f"tcebr{n}"
        if "ipam" in plugin:
            plugin["ipam"].update(host_local(e2e, n, plugin["ipam"]["type"]))
            plugin["ipam"].pop("subnet", None)
    conf["name"] = f"tcenet{n}"
    net = e2e.write_conflist(conf)
    att = e2e.attach(net, f"ex-{example.removeprefix('cniplug-')}",
                     {"portMappings": [{"hostPort": 30121 + n, "containerPort": 8080, "protocol": "tcp"}]})
    e2e.add(att)
    if example == "cniplug-loopback":
        state = json.loads(run(["ip", "-n", att.ns_name, "-j", "link", "show", "lo"], check=True).stdout)
        assert "UP" in state[0]["flags"]
    else:
        assert_attached(e2e, att, n, 2 if example == "cniplug-bridge" else 1)
    assert conf["plugins"][-1]["type"] == "portmap" or all(p["type"] != "portmap" for p in conf["plugins"])
    e2e.check_up_to_portmap(att)
    e2e.delete(att)
    assert e2e.leftovers(att, f"tcebr{n}" if example == "cniplug-bridge" else "") == []


# ---------------------------------------------------------------------------------------------------
# installed executables run with nothing but CNI_* in the environment


def test_installed_plugin_with_only_cni_env(e2e: E2E) -> None:
    n = 30
    conf = {"cniVersion": "1.0.0", "name": f"tcenet{n}", **bridge_plugin(e2e, n)}
    e2e.bridges.append(f"tcebr{n}")
    att = e2e.attach(f"tcenet{n}", "envi")
    plugin = str(e2e.bin_dir / "cniplug-bridge")

    def call(command: str, config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        env = [f"CNI_COMMAND={command}", f"CNI_CONTAINERID={att.container_id}", f"CNI_NETNS={att.netns}",
               "CNI_IFNAME=eth0", f"CNI_PATH={e2e.bin_dir}"]
        return run(["env", "-i", *env, plugin], input=json.dumps(config).encode())

    try:
        proc = call("ADD", conf)
        assert proc.returncode == 0, f"ADD with env -i failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
        att.result = json.loads(proc.stdout)
        addr = assert_attached(e2e, att, n, 2)
        assert (e2e.ipam_dir / att.net / addr).is_file()
        proc = call("CHECK", {**conf, "prevResult": att.result})
        assert proc.returncode == 0, f"CHECK with env -i failed:\n{proc.stdout}{proc.stderr}"
        proc = call("DEL", {**conf, "prevResult": att.result})
        assert proc.returncode == 0, f"DEL with env -i failed:\n{proc.stdout}{proc.stderr}"
        assert e2e.leftovers(att, f"tcebr{n}") == []
    finally:
        call("DEL", conf)

