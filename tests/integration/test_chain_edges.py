"""Edge cases of the chained plugins (portmap, firewall, bandwidth, tuning) and `cniplug net`, found by using them
as a runtime or an operator would: inputs and host states the other tests do not cover.

Every name starts with `qa1`: host namespaces `qa1-h<k>` (a private "node": its routes, iptables and sysctls belong
to the test alone), containers `qa1-c<k><n>`, networks `qa1net<k>`, bridges `qa1br<k>`, addresses 10.226.<k>.0/24.
Plugins run as a runtime runs them (env + stdin) inside the host namespace; namespaces, files and libcni cache
entries are removed afterwards, also on failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tcr_netstate import in_host, run_in_host

from cniplug.net import container_id_of
from tests.conftest import install_wrappers

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path("/var/lib/cni/results")
COUNTERS = re.compile(r"\[\d+:\d+\]")


@pytest.fixture
def host(make_netns: Callable[..., str]) -> Callable[[int], str]:
    """host(k) -> the name of a fresh private host namespace qa1-h<k> (lo up, nothing else: no default route)."""
    def make(k: int) -> str:
        name = Path(make_netns(f"qa1-h{k}", prefix="")).name
        in_host(name, "ip", "link", "set", "lo", "up")
        return name
    return make


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_wrappers(tmp_path_factory.mktemp("qa1bin"))


@pytest.fixture
def netconf(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """netconf(k, *plugins, version=...) writes conflist qa1net<k> into tmp_path/net.d; its libcni cache files
    are removed afterwards."""
    names: list[str] = []

    def write(k: int, *plugins: dict[str, Any], version: str = "1.0.0") -> str:
        name = f"qa1net{k}"
        names.append(name)
        (tmp_path / "net.d").mkdir(exist_ok=True)
        (tmp_path / "net.d" / f"{k:02d}-{name}.conflist").write_text(
            json.dumps({"cniVersion": version, "name": name, "plugins": list(plugins)}))
        return name

    yield write
    for name in names:
        for path in RESULTS.glob(f"{name}-*"):
            path.unlink(missing_ok=True)


def net(host: str, tmp_path: Path, bin_dir: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`cniplug net ARGV` inside the host namespace."""
    environ = {"PATH": os.environ.get("PATH", ""), "NETCONFPATH": str(tmp_path / "net.d"),
               "CNI_PATH": f"{bin_dir}:/usr/lib/cni", "CNIPLUG_NO_HELPER": "1", "PYTHONPATH": str(REPO), **env}
    return subprocess.run(["ip", "netns", "exec", host, sys.executable, "-m", "cniplug", "net", *argv],
                          capture_output=True, text=True, env=environ, timeout=120)


# ---- portmap: a container address the host has no route to


def prev_result(netns: str, address: str) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "interfaces": [{"name": "qa1x0", "mac": "02:00:00:00:e2:01"},
                                                  {"name": "eth0", "sandbox": netns}],
            "ips": [{"address": address, "interface": 1}]}


def test_portmap_add_when_the_host_has_no_route_to_the_container(host: Callable[[int], str],
                                                                 make_netns: Callable[..., str]) -> None:
    """`ip route get` of the container's address fails ("Network is unreachable") on a node without a default
    route when the interface plugin routes it some other way (or not yet): the reference goes on without
    route_localnet; ours failed with 999 "cannot read state"."""
    h = host(1)
    netns = make_netns("qa1-c10", prefix="")
    conf = {"cniVersion": "1.0.0", "name": "qa1net1", "type": "cniplug-portmap", "capabilities": {"portMappings": True},
            "runtimeConfig": {"portMappings": [{"hostPort": 18081, "containerPort": 80, "protocol": "tcp"}]},
            "prevResult": prev_result(netns, "10.226.1.5/24")}
    r = run_in_host(h, "cniplug-portmap", "ADD", conf, netns, "qa1c10")
    assert r.rc == 0, r.stdout + r.stderr
    assert r.json["ips"] == conf["prevResult"]["ips"]
    assert "--to-destination 10.226.1.5:80" in in_host(h, "iptables-save", "-t", "nat")
    d = run_in_host(h, "cniplug-portmap", "DEL", conf, netns, "qa1c10")
    assert d.rc == 0, d.stdout + d.stderr
    assert "10.226.1.5" not in in_host(h, "iptables-save", "-t", "nat")


def test_net_dry_run_of_a_portmap_list_on_a_node_without_default_route(
        host: Callable[[int], str], make_netns: Callable[..., str], netconf: Callable[..., str], tmp_path: Path,
        bin_dir: Path) -> None:
    """`cniplug net add --dry-run` of bridge + portmap: the bridge does not exist yet, so the container's address
    is unreachable on a node without a default route; the dry run must still print the script."""
    h = host(2)
    netns = make_netns("qa1-c20", prefix="")
    name = netconf(2, {"type": "cniplug-bridge", "bridge": "qa1br2", "isGateway": True,
                       "ipam": {"type": "cniplug-host-local", "subnet": "10.226.2.0/24",
                                "dataDir": str(tmp_path / "ipam")}},
                   {"type": "cniplug-portmap", "capabilities": {"portMappings": True}})
    caps = json.dumps({"portMappings": [{"hostPort": 18082, "containerPort": 80, "protocol": "tcp"}]})
    dry = net(h, tmp_path, bin_dir, "add", name, netns, "--dry-run", CAP_ARGS=caps)
    assert dry.returncode == 0, dry.stderr
    assert "--to-destination 10.226.2.2:80" in dry.stdout
    assert not (RESULTS / f"{name}-{container_id_of(netns)}-eth0").exists()


# ---- tuning in `cniplug net add --dry-run` of a whole list


def test_net_dry_run_of_a_list_with_tuning_runs_and_leaves_what_add_leaves(
        host: Callable[[int], str], make_netns: Callable[..., str], netconf: Callable[..., str], tmp_path: Path,
        bin_dir: Path) -> None:
    """The README's full example list (bridge + portmap + firewall + tuning + bandwidth) under `cniplug net add
    --dry-run`: tuning read CNI_IFNAME's values from the kernel also in a dry run, where the bridge has only
    printed its script, and failed with 999 "interface 'eth0' not found". Now the script is printed, and run by
    bash in the host namespace it tunes the link and saves the values the bridge gave it; `cniplug net del`
    restores them and leaves nothing."""
    h = host(3)
    netns = make_netns("qa1-c30", prefix="")
    tuning_dir = tmp_path / "tuning"
    name = netconf(3, {"type": "cniplug-bridge", "bridge": "qa1br3", "isGateway": True, "ipMasq": True,
                       "ipam": {"type": "cniplug-host-local", "subnet": "10.226.3.0/24",
                                "dataDir": str(tmp_path / "ipam")}},
                   {"type": "cniplug-portmap", "capabilities": {"portMappings": True}},
                   {"type": "cniplug-firewall"},
                   {"type": "cniplug-tuning", "capabilities": {"mac": True}, "mtu": 1400, "dataDir": str(tuning_dir),
                    "sysctl": {"net.core.somaxconn": "512", "net.ipv4.conf.IFNAME.arp_notify": "0"}},
                   {"type": "cniplug-bandwidth", "capabilities": {"bandwidth": True}})
    caps = json.dumps({"portMappings": [{"hostPort": 18083, "containerPort": 80, "protocol": "tcp"}],
                       "mac": "02:00:00:0a:e2:03",
                       "bandwidth": {"ingressRate": 8000000, "ingressBurst": 400000, "egressRate": 8000000,
                                     "egressBurst": 400000}})
    dry = net(h, tmp_path, bin_dir, "add", name, netns, "--dry-run", CAP_ARGS=caps)
    assert dry.returncode == 0, dry.stderr
    assert not tuning_dir.exists(), "--dry-run changed nothing"
    script = tmp_path / "add.sh"
    script.write_text(dry.stdout)
    ran = subprocess.run(["ip", "netns", "exec", h, "bash", str(script)], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    c = Path(netns).name
    eth0 = json.loads(in_host(c, "ip", "-j", "link", "show", "dev", "eth0"))[0]
    assert (eth0["address"], eth0["mtu"]) == ("02:00:00:0a:e2:03", 1400)
    assert in_host(c, "sysctl", "-n", "net.core.somaxconn", "net.ipv4.conf.eth0.arp_notify").split() == ["512", "0"]
    made = re.search(r"^ip link add veth\w+ type veth peer name eth0 address (\S+) netns ", dry.stdout, re.M)
    assert made, dry.stdout
    bridge_mac = made.group(1)
    backup = json.loads((tuning_dir / f"{container_id_of(netns)}_eth0.json").read_text())
    assert backup == {"mac": bridge_mac, "mtu": 1500}
    d = net(h, tmp_path, bin_dir, "del", name, netns)
    assert d.returncode == 0, d.stderr
    assert json.loads(in_host(c, "ip", "-j", "link", "show"))[0]["ifname"] == "lo"
    assert list(tuning_dir.iterdir()) == []
    assert "10.226.3" not in in_host(h, "iptables-save") and "bwp" not in in_host(h, "ip", "link", "show")


# ---- portmap: a repeated ADD that fails must leave the first ADD's forwarding in place


def nat_state(h: str) -> list[str]:
    """Both nat tables, counters and comments of the tools removed, in sorted order (a restored rule may
    come back at another position in its chain)."""
    out = []
    for tool in ("iptables-save", "ip6tables-save"):
        out += [tool + " " + COUNTERS.sub("", line) for line in in_host(h, tool, "-t", "nat").splitlines()
                if not line.startswith("#")]
    return sorted(out)


def test_portmap_repeated_add_that_fails_leaves_the_first_adds_rules(host: Callable[[int], str],
                                                                     make_netns: Callable[..., str]) -> None:
    """A runtime retries ADD for a container (another port list, a condition iptables refuses): the retry first
    removes the container's old chain and entry rules, as the reference does, but those steps had no #undo, so
    when a later step failed the container lost the forwarding its first ADD made, and CHECK failed."""
    h = host(4)
    netns = make_netns("qa1-c40", prefix="")
    conf = {"cniVersion": "1.0.0", "name": "qa1net4", "type": "cniplug-portmap", "capabilities": {"portMappings": True},
            "runtimeConfig": {"portMappings": [{"hostPort": 18084, "containerPort": 80, "protocol": "tcp"},
                                               {"hostPort": 18084, "containerPort": 53, "protocol": "udp"}]},
            "prevResult": prev_result(netns, "10.226.4.5/24")}
    first = run_in_host(h, "cniplug-portmap", "ADD", conf, netns, "qa1c40")
    assert first.rc == 0, first.stdout + first.stderr
    before = nat_state(h)
    retry = {**conf, "conditionsV4": ["--qa1-no-such-option"],
             "runtimeConfig": {"portMappings": [{"hostPort": 18085, "containerPort": 80, "protocol": "tcp"}]}}
    r = run_in_host(h, "cniplug-portmap", "ADD", retry, netns, "qa1c40")
    assert r.rc == 1 and "qa1-no-such-option" in r.json["details"], r.stdout + r.stderr
    assert nat_state(h) == before
    c = run_in_host(h, "cniplug-portmap", "CHECK", conf, netns, "qa1c40")
    assert c.rc == 0, c.stdout + c.stderr
    d = run_in_host(h, "cniplug-portmap", "DEL", conf, netns, "qa1c40")
    assert d.rc == 0 and "10.226.4.5" not in in_host(h, "iptables-save", "-t", "nat")


# ---- `cniplug net add --dry-run`: what a 1.0.0 result leaves out still reaches the next plugin's dry run


def test_net_dry_run_of_a_1_0_0_list_keeps_the_veth_mtu_for_tuning_and_bandwidth(
        host: Callable[[int], str], make_netns: Callable[..., str], netconf: Callable[..., str], tmp_path: Path,
        bin_dir: Path) -> None:
    """ptp with mtu 1400, then tuning (mtu 1300) and bandwidth (egress): ADD saves 1400 as the original MTU and
    gives the ifb the host veth's 1400. In a dry run the veth does not exist yet and a 1.0.0 result has no
    interface mtu (1.1.0 only), so the script saved 1500 and made a 1500 ifb: run by bash, then DEL, the container
    link came back with MTU 1500. The dry run of each plugin now sees the earlier one's full dry-run result."""
    h = host(5)
    netns = make_netns("qa1-c50", prefix="")
    tuning_dir = tmp_path / "tuning"
    name = netconf(5, {"type": "cniplug-ptp", "mtu": 1400,
                       "ipam": {"type": "cniplug-host-local", "subnet": "10.226.5.0/24",
                                "dataDir": str(tmp_path / "ipam")}},
                   {"type": "cniplug-tuning", "mtu": 1300, "dataDir": str(tuning_dir)},
                   {"type": "cniplug-bandwidth", "egressRate": 8000000, "egressBurst": 400000})
    dry = net(h, tmp_path, bin_dir, "add", name, netns, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    ran = subprocess.run(["ip", "netns", "exec", h, "bash", "-c", dry.stdout], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    ifb = [link for link in json.loads(in_host(h, "ip", "-j", "link", "show", "type", "ifb"))
           if link["ifname"].startswith("bwp")]
    assert [link["mtu"] for link in ifb] == [1400]
    assert json.loads((tuning_dir / f"{container_id_of(netns)}_eth0.json").read_text()) == {"mtu": 1400}
    d = net(h, tmp_path, bin_dir, "del", name, netns)
    assert d.returncode == 0, d.stderr
    assert "bwp" not in in_host(h, "ip", "link", "show") and list(tuning_dir.iterdir()) == []


# ---- portmap: conditions with quotes come back from `iptables -S` escaped


@pytest.mark.parametrize("verb", ["DEL", "GC"])
def test_portmap_del_and_gc_find_entry_rules_whose_condition_has_quotes(host: Callable[[int], str],
                                                                       make_netns: Callable[..., str],
                                                                       verb: str) -> None:
    """conditionsV4 ["-m", "comment", "--comment", "don't"]: iptables -S prints it as "don\\'t" (it escapes
    ", \\ and ' inside double quotes), which shlex reads back as don\\'t. DEL then deleted a rule that was not
    there (`|| true`), so the entry rule stayed, and with it the chain it jumps to (-X of a chain in use fails):
    a DEL that says it succeeded and leaks. GC the same."""
    h = host(6 if verb == "DEL" else 7)
    netns = make_netns(f"qa1-c{6 if verb == 'DEL' else 7}0", prefix="")
    conf = {"cniVersion": "1.1.0", "name": "qa1net6", "type": "cniplug-portmap", "capabilities": {"portMappings": True},
            "conditionsV4": ["-m", "comment", "--comment", 'don\'t "forward" \\ me'],
            "runtimeConfig": {"portMappings": [{"hostPort": 18086, "containerPort": 80, "protocol": "tcp"}]},
            "prevResult": prev_result(netns, "10.226.6.5/24")}
    before = nat_state(h)
    a = run_in_host(h, "cniplug-portmap", "ADD", conf, netns, "qa1c60")
    assert a.rc == 0, a.stdout + a.stderr
    assert nat_state(h) != before
    c = run_in_host(h, "cniplug-portmap", "CHECK", conf, netns, "qa1c60")
    assert c.rc == 0, c.stdout + c.stderr
    if verb == "DEL":
        d = run_in_host(h, "cniplug-portmap", "DEL", conf, netns, "qa1c60")
    else:
        gc = {k: v for k, v in conf.items() if k not in ("prevResult", "runtimeConfig")}
        d = run_in_host(h, "cniplug-portmap", "GC", {**gc, "cni.dev/valid-attachments": []}, "", "")
    assert d.rc == 0, d.stdout + d.stderr
    # the shared chains stay (as the reference leaves them); nothing of this container does
    assert [line for line in nat_state(h) if "CNI-DN-" in line or "10.226.6.5" in line] == []


# ---- bandwidth: DEL of what a runtime really sends


def test_bandwidth_del_with_the_burst_containerd_sends(host: Callable[[int], str],
                                                       make_netns: Callable[..., str]) -> None:
    """containerd (CRI) turns a pod's kubernetes.io/ingress-bandwidth annotation into the bandwidth capability with
    burst = math.MaxUint32 bits. With a rate of 1 Mbit/s that bucket overflows the kernel's tbf: the reference
    takes it anyway (its ADD shapes with an overflowed burst); ours gives it the largest bucket (test_bandwidth.py).
    Our DEL refused it (code 7), so the runtime could never remove the sandbox, not even after the reference's ADD
    on a node switching plugins. DEL now refuses only what the reference's DEL refuses."""
    h = host(8)
    netns = make_netns("qa1-c80", prefix="")
    in_host(h, "ip", "link", "add", "qa1v80", "type", "veth", "peer", "name", "eth0", "netns", netns)
    in_host(h, "ip", "link", "set", "qa1v80", "up")
    in_host(Path(netns).name, "ip", "link", "set", "eth0", "up")
    conf = {"cniVersion": "1.0.0", "name": "qa1net8", "type": "cniplug-bandwidth", "capabilities": {"bandwidth": True},
            "runtimeConfig": {"bandwidth": {"ingressRate": 1000000, "ingressBurst": 4294967295,
                                            "egressRate": 1000000, "egressBurst": 4294967295}},
            "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.226.8.2/24", "interface": 1}],
                           "interfaces": [{"name": "qa1v80"}, {"name": "eth0", "sandbox": netns}]}}
    add = run_in_host(h, "cniplug-bandwidth", "ADD", conf, netns, "qa1c80")
    assert add.rc == 0, add.stdout
    assert run_in_host(h, "cniplug-bandwidth", "DEL", conf, netns, "qa1c80").rc == 0
    env = {"PATH": os.environ.get("PATH", ""), "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "qa1c80", "CNI_NETNS": netns,
           "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
    ref = subprocess.run(["ip", "netns", "exec", h, "/usr/lib/cni/bandwidth"], input=json.dumps(conf).encode(),
                         capture_output=True, env=env)
    assert ref.returncode == 0, ref.stdout
    assert "bwp" in in_host(h, "ip", "link", "show")
    for _ in range(2):  # and again: DEL is idempotent
        d = run_in_host(h, "cniplug-bandwidth", "DEL", conf, netns, "qa1c80")
        assert d.rc == 0, d.stdout + d.stderr
    assert "bwp" not in in_host(h, "ip", "link", "show")
    assert "tbf" not in in_host(h, "tc", "qdisc", "show", "dev", "qa1v80")
    bad = {**conf, "runtimeConfig": {"bandwidth": {"ingressRate": 1000000}}}  # the reference's DEL refuses this too
    assert run_in_host(h, "cniplug-bandwidth", "DEL", bad, netns, "qa1c80").json["code"] == 7
