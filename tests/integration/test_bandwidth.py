"""cniplug-bandwidth against the real kernel: throughput through the shaped link, CHECK, DEL, GC, and the
kernel state compared with the reference bandwidth plugin (/usr/lib/cni/bandwidth 1.1.1) for the same config.

Each test gets a private "host" namespace (`tbw-h*`) and a container namespace (`tbw-c*`); cniplug-ptp makes
the veth (built-in host-local, 10.234.0.0/16 subnets), then bandwidth is chained after it with ptp's result
as prevResult, as a runtime runs the chain. Everything lives in those namespaces, so deleting them removes
whatever a failed test left; names use the `tbw` prefix.

Throughput method: a TCP flow (tests/integration/tbw_flow.py) from a sender paced at twice the configured
rate, for 5 s; the receiver samples the bytes it got every 50 ms and the rate is taken over seconds 1-5
(leaving out the connection start and the bucket's initial burst). The burst (80 kbit = 10 kB) is small next
to the window (4 s at 4 Mbit/s = 2 MB, so the burst is 0.5%) and above the 1500-byte MTU (a tbf drops a
packet larger than its bucket). An unshaped link would show the sender's 2x: the bound makes the test able
to fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import PluginRun
from tcr_netstate import IP, in_host, plugin_env, run_in_host

from cniplug.plugins import bandwidth
from cniplug.plugins.bandwidth import Tbf, close_to
from cniplug.plugins.bridge import lock_path

pytestmark = pytest.mark.root

FLOW = str(Path(__file__).with_name("tbw_flow.py"))
REFERENCE = "/usr/lib/cni/bandwidth"
INGRESS, EGRESS, BURST = 4_000_000, 3_000_000, 80_000  # bit/s, bit/s, bits


@dataclass
class Attachment:
    """A ptp attachment in a private host namespace, ready for bandwidth to be chained after it."""

    host: str
    netns: str
    cid: str
    net: str
    prev: dict[str, Any]
    slot: int

    @property
    def veth(self) -> str:
        return str(self.prev["interfaces"][0]["name"])

    @property
    def container_ip(self) -> str:
        return str(self.prev["ips"][0]["address"]).split("/")[0]

    @property
    def gateway(self) -> str:
        return str(self.prev["ips"][0]["gateway"])

    @property
    def ifb(self) -> str:
        return "bwp" + hashlib.sha512((self.net + self.cid).encode()).hexdigest()[:12]

    def config(self, prev: dict[str, Any] | None = None, **keys: Any) -> dict[str, Any]:
        conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": self.net, "type": "cniplug-bandwidth", **keys}
        if prev is not None:
            conf["prevResult"] = prev
        return conf

    def run(self, command: str, config: dict[str, Any], netns: str | None = None) -> PluginRun:
        return run_in_host(self.host, "cniplug-bandwidth", command, config, self.netns if netns is None else netns,
                           self.cid)

    def reference(self, command: str, config: dict[str, Any]) -> PluginRun:
        env = plugin_env(command, self.netns, self.cid)
        proc = subprocess.run([IP, "netns", "exec", self.host, REFERENCE], input=json.dumps(config).encode(),
                              env=env, capture_output=True, timeout=60)
        return PluginRun(proc.returncode, proc.stdout.decode(), proc.stderr.decode())

    def tc(self, *args: str) -> list[dict[str, Any]]:
        out = in_host(self.host, "tc", "-j", *args)
        return json.loads(out) if out.strip() else []

    def ifbs(self) -> list[str]:
        return [link["ifname"] for link in json.loads(in_host(self.host, "ip", "-j", "-d", "link", "show"))
                if (link.get("linkinfo") or {}).get("info_kind") == "ifb"]


SHAPED = {"ingressRate": INGRESS, "ingressBurst": BURST, "egressRate": EGRESS, "egressBurst": BURST}


@pytest.fixture
def attach(make_netns: Callable[..., str], tmp_path: Path) -> Iterator[Callable[[int], Attachment]]:
    def make(slot: int) -> Attachment:
        host = Path(make_netns(f"tbw-h{slot}", prefix="")).name
        in_host(host, "ip", "link", "set", "lo", "up")
        netns = make_netns(f"tbw-c{slot}", prefix="")
        net, cid = f"tbwnet{slot}", f"tbwc{slot}"
        ptp = {"cniVersion": "1.0.0", "name": net, "type": "cniplug-ptp",
               "ipam": {"type": "cniplug-host-local", "dataDir": str(tmp_path / f"ipam{slot}"),
                        "ranges": [[{"subnet": f"10.234.{slot}.0/24"}]]}}
        r = run_in_host(host, "cniplug-ptp", "ADD", ptp, netns, cid)
        assert r.rc == 0, r.stdout + r.stderr
        return Attachment(host, netns, cid, net, r.json, slot)

    yield make  # the namespaces go with make_netns; the ifb and qdiscs with them


def rate_of(samples: list[list[float]], start: float = 1.0, end: float = 5.0) -> float:
    """bit/s between `start` and `end` seconds after the connection, from the receiver's samples."""
    def at(t: float) -> float:
        return next(b for tt, b in samples if tt >= t)
    return (at(end) - at(start)) * 8 / (end - start)


def flow(rx_ns: str, rx_addr: str, tx_ns: str, bits_per_s: int, port: int, seconds: float = 5.0) -> float:
    """Run one bounded flow tx_ns -> rx_addr (in rx_ns) and return the measured bit/s (see module doc)."""
    rx = subprocess.Popen([IP, "netns", "exec", rx_ns, sys.executable, FLOW, "recv", rx_addr, str(port),
                           str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert rx.stderr is not None
        assert rx.stderr.readline().strip() == "ready"
        subprocess.run([IP, "netns", "exec", tx_ns, sys.executable, FLOW, "send", rx_addr, str(port),
                        str(bits_per_s), str(seconds)], check=True, timeout=60)
        out, err = rx.communicate(timeout=60)
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    return rate_of(json.loads(out)["samples"], 1.0, seconds)


def test_throughput_each_direction_within_20_percent(attach: Callable[[int], Attachment]) -> None:
    a = attach(1)
    r = a.run("ADD", a.config(a.prev, **SHAPED))
    assert r.rc == 0, r.stdout + r.stderr
    cns = Path(a.netns).name
    into = flow(cns, a.container_ip, a.host, 2 * INGRESS, 5301)
    out = flow(a.host, a.gateway, cns, 2 * EGRESS, 5302)
    print(f"\n[bandwidth] into the container {into / 1e6:.3f} Mbit/s (configured {INGRESS / 1e6}), "
          f"out of it {out / 1e6:.3f} Mbit/s (configured {EGRESS / 1e6}); senders paced at 2x")
    assert 0.8 * INGRESS <= into <= 1.2 * INGRESS, into
    assert 0.8 * EGRESS <= out <= 1.2 * EGRESS, out
    # Without the plugin's state the same senders go at their own 2x pace: the measurement can tell.
    assert a.run("DEL", a.config(a.prev, **SHAPED)).rc == 0
    free = flow(cns, a.container_ip, a.host, 2 * INGRESS, 5303)
    print(f"[bandwidth] after DEL, into the container {free / 1e6:.3f} Mbit/s")
    assert free > 1.5 * INGRESS, free


def test_add_check_del_leave_nothing(attach: Callable[[int], Attachment]) -> None:
    a = attach(2)
    before = (a.tc("qdisc", "show"), a.ifbs())
    conf = a.config(a.prev, **SHAPED)
    r = a.run("ADD", conf)
    assert r.rc == 0, r.stdout + r.stderr
    result = r.json
    assert result["interfaces"][:2] == a.prev["interfaces"] and result["interfaces"][2]["name"] == a.ifb
    assert result["ips"] == a.prev["ips"]
    assert a.ifbs() == [a.ifb]
    check = a.config(result, **SHAPED)
    c = a.run("CHECK", check)
    assert c.rc == 0 and c.stdout == "", c.stdout + c.stderr
    # CHECK sees a changed bucket and a missing redirect.
    in_host(a.host, "tc", "qdisc", "change", "dev", a.veth, "root", "handle", "1:", "tbf", "rate", "1mbit",
            "burst", "10000", "latency", "25ms")
    c = a.run("CHECK", check)
    assert c.rc == 1 and "rate 125000" in c.json["msg"], c.stdout
    in_host(a.host, "tc", "qdisc", "del", "dev", a.veth, "ingress")
    c = a.run("CHECK", a.config(result, egressRate=EGRESS, egressBurst=BURST))
    assert c.rc == 1 and "redirects" in c.json["msg"], c.stdout
    in_host(a.host, "tc", "qdisc", "add", "dev", a.veth, "handle", "ffff:", "ingress")
    # DEL with prevResult, again, then without prevResult and without a namespace: all succeed, nothing left.
    for config, netns in ((check, None), (check, None), (a.config(**SHAPED), ""), (a.config(), "")):
        d = a.run("DEL", config, netns=netns)
        assert d.rc == 0 and d.stdout == "", d.stdout + d.stderr
    assert (a.tc("qdisc", "show"), a.ifbs()) == before
    kinds = [q["kind"] for q in a.tc("qdisc", "show", "dev", a.veth)]
    assert kinds == ["noqueue"], kinds


def test_del_without_prevresult_or_config_finds_the_ifb_by_container_id(attach: Callable[[int], Attachment]) -> None:
    a = attach(3)
    before = a.tc("qdisc", "show")
    assert a.run("ADD", a.config(a.prev, **SHAPED)).rc == 0
    d = a.run("DEL", a.config())  # no prevResult, no limits: the namespace is still there
    assert d.rc == 0, d.stdout + d.stderr
    assert a.ifbs() == [] and a.tc("qdisc", "show") == before


def test_runtime_config_capability_and_precedence(attach: Callable[[int], Attachment]) -> None:
    """runtimeConfig.bandwidth shapes when the config has none of the keys; a top-level key wins (reference)."""
    a = attach(4)
    rc = {"bandwidth": {"ingressRate": 8_000_000, "ingressBurst": BURST}}
    assert a.run("ADD", a.config(a.prev, runtimeConfig=rc)).rc == 0
    assert a.tc("qdisc", "show", "dev", a.veth)[0]["options"]["rate"] == 1_000_000
    assert a.run("DEL", a.config()).rc == 0
    assert a.run("ADD", a.config(a.prev, runtimeConfig=rc, ingressRate=INGRESS, ingressBurst=BURST)).rc == 0
    assert a.tc("qdisc", "show", "dev", a.veth)[0]["options"]["rate"] == INGRESS // 8


def test_gc_removes_stale_ifbs_only(attach: Callable[[int], Attachment]) -> None:
    """GC frees the ifb of an attachment that is no longer valid; a valid one and another network's stay. An
    ifb the reference made (no alias) is freed once no filter redirects to it."""
    a = attach(5)
    assert a.run("ADD", a.config(a.prev, **SHAPED)).rc == 0
    other = {**a.config(), "name": "tbwother"}  # another network's attachment, same host
    in_host(a.host, "ip", "link", "add", "bwp000000000001", "type", "ifb")
    in_host(a.host, "ip", "link", "set", "bwp000000000001", "alias", f"cniplug-bandwidth:tbwother:{a.cid}")
    in_host(a.host, "ip", "link", "add", "bwp000000000002", "type", "ifb")  # a reference-made orphan
    gc = {**a.config(), "cniVersion": "1.1.0", "cni.dev/valid-attachments": [{"containerID": a.cid, "ifname": "eth0"}]}
    assert a.run("GC", gc, netns="").rc == 0
    assert sorted(a.ifbs()) == sorted([a.ifb, "bwp000000000001"])
    gc["cni.dev/valid-attachments"] = []
    assert a.run("GC", gc, netns="").rc == 0
    assert a.ifbs() == ["bwp000000000001"]
    assert a.run("GC", {**other, "cniVersion": "1.1.0", "cni.dev/valid-attachments": []}, netns="").rc == 0
    assert a.ifbs() == []


# ---------------------------------------------------------------------------------------------- vs reference


def kernel_state(a: Attachment) -> dict[str, Any]:
    """What bandwidth leaves in the kernel, without the values that differ between any two runs (ifindex,
    MACs, the filter's handles, action indexes and reference counts)."""
    veth_qdiscs = a.tc("qdisc", "show", "dev", a.veth)
    ifb_qdiscs = a.tc("qdisc", "show", "dev", a.ifb) if a.ifb in a.ifbs() else []
    filters = []
    for f in a.tc("filter", "show", "dev", a.veth, "parent", "ffff:"):
        opts = f.get("options") or {}
        if "actions" in opts:
            first = opts["actions"][0]  # the reference's second mirred action never runs (see test below)
            filters.append({"protocol": f["protocol"], "pref": f["pref"], "kind": f["kind"],
                            "flowid": opts.get("flowid"), "match": opts.get("match"),
                            "action": {k: first.get(k) for k in ("kind", "mirred_action", "direction", "to_dev",
                                                                  "control_action")}})
    links = {link["ifname"]: link for link in json.loads(in_host(a.host, "ip", "-j", "-d", "link", "show"))}
    ifb = links.get(a.ifb)
    ifb_view = None if ifb is None else {k: ifb.get(k) for k in ("flags", "mtu", "qdisc", "txqlen", "operstate")}
    if ifb is not None:
        ifb_view["kind"] = ifb["linkinfo"]["info_kind"]
    for q in veth_qdiscs + ifb_qdiscs:
        q.pop("refcnt", None)
    return {"veth": veth_qdiscs, "ifb_link": ifb_view, "ifb": ifb_qdiscs, "filters": filters}


CONFIGS = {
    "both": SHAPED,
    "ingress-only": {"ingressRate": 1_000_000, "ingressBurst": 100_000},
    "egress-only": {"egressRate": 2_000_000, "egressBurst": 200_000},
    "odd-values": {"ingressRate": 1_000_007, "ingressBurst": 12_345, "egressRate": 123_456_789, "egressBurst": 999_999},
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_kernel_state_as_the_reference(name: str, attach: Callable[[int], Attachment]) -> None:
    """The same config through ours and through /usr/lib/cni/bandwidth, each in its own host namespace with the
    same network name and container id (so the same ifb name): the same qdiscs, filter and ifb link. Then each
    plugin's DEL on the other's state removes the ifb (the reference's DEL leaves the qdiscs on the veth)."""
    slot = 10 + list(CONFIGS).index(name) * 2
    ours, ref = attach(slot), attach(slot + 1)
    ref.cid, ref.net = ours.cid, ours.net  # same ifb name; the namespaces keep them apart
    keys = CONFIGS[name]
    r1 = ours.run("ADD", ours.config(ours.prev, **keys))
    r2 = ref.reference("ADD", {**ref.config(ref.prev, **keys), "type": "bandwidth"})
    assert r1.rc == 0 and r2.rc == 0, r1.stdout + r1.stderr + r2.stdout + r2.stderr
    ours_state, ref_state = kernel_state(ours), kernel_state(ref)
    print(f"\n[bandwidth vs reference] {name}: ours {json.dumps(ours_state)}\n  reference {json.dumps(ref_state)}")
    # tc prints burst and latency back from the kernel's bucket, rounded; the reference rounds once more
    # (bandwidth.close_to): within that, the same buckets, the configured ones.
    for side in ("veth", "ifb"):
        for q_ours, q_ref in zip(ours_state[side], ref_state[side], strict=True):
            if q_ours["kind"] == "tbf":
                want = Tbf(rate=q_ours["options"]["rate"], burst=q_ours["options"]["burst"])
                assert close_to(q_ref["options"], want), (q_ours, q_ref)
                q_ours["options"] = q_ref["options"] = "tbf, compared above"
    assert ours_state == ref_state
    # The result: prevResult's interfaces (each its own random veth name) and, with egress, the ifb appended.
    assert [i["name"] for i in r1.json["interfaces"]][2:] == [i["name"] for i in r2.json["interfaces"]][2:]
    assert r1.json["interfaces"][:2] == ours.prev["interfaces"] and r2.json["interfaces"][:2] == ref.prev["interfaces"]
    # Each DEL on what the other made.
    d1 = ours.reference("DEL", {**ours.config(), "type": "bandwidth"})
    d2 = ref.run("DEL", ref.config())
    assert d1.rc == 0 and d2.rc == 0, d1.stdout + d2.stdout
    assert ours.ifbs() == [] and ref.ifbs() == []
    assert [q["kind"] for q in ref.tc("qdisc", "show", "dev", ref.veth)] == ["noqueue"]


def test_reference_filter_has_a_second_action_that_never_runs(attach: Callable[[int], Attachment]) -> None:
    """Why kernel_state compares only the first action: the reference's u32 filter carries two mirred
    redirects (order 1 `stolen`, order 2 `pass`); the first steals every packet, so the second never sees one.
    Ours has the first only."""
    a = attach(30)
    assert a.reference("ADD", {**a.config(a.prev, **SHAPED), "type": "bandwidth"}).rc == 0
    actions = [f["options"]["actions"] for f in a.tc("filter", "show", "dev", a.veth, "parent", "ffff:")
               if "actions" in f.get("options", {})][0]
    assert [(x["order"], x["control_action"]["type"]) for x in actions] == [(1, "stolen"), (2, "pass")]


def test_dry_run_script_run_by_bash_gives_the_same_state(attach: Callable[[int], Attachment]) -> None:
    """The design's rule: --dry-run prints what the plugin runs. bash runs the printed ADD, then the plugin's DEL
    must clean it up, then the plugin's own ADD must give the same kernel state (and the same ifb alias)."""
    a = attach(31)
    before = kernel_state(a)
    conf = a.config(a.prev, **SHAPED)
    env = plugin_env("ADD", a.netns, a.cid)
    dry = subprocess.run([IP, "netns", "exec", a.host, sys.executable, "-m", "cniplug", "plugin", "cniplug-bandwidth",
                          "--dry-run"], input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert kernel_state(a) == before, "the dry run changed something"
    bash = subprocess.run([IP, "netns", "exec", a.host, "bash", "-c", dry.stdout.decode()], capture_output=True,
                          text=True, timeout=60)
    assert bash.returncode == 0, bash.stderr
    by_bash = kernel_state(a)
    alias_bash = in_host(a.host, "cat", f"/sys/class/net/{a.ifb}/ifalias")
    assert a.run("DEL", a.config()).rc == 0
    assert kernel_state(a) == before
    assert a.run("ADD", conf).rc == 0
    assert kernel_state(a) == by_bash
    alias = in_host(a.host, "cat", f"/sys/class/net/{a.ifb}/ifalias")
    assert alias == alias_bash == f"cniplug-bandwidth:{a.net}:{a.cid}\n"


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.1.0"])
def test_chained_after_bridge_at_each_version(version: str, make_netns: Callable[..., str], tmp_path: Path,
                                             request: pytest.FixtureRequest) -> None:
    """bridge -> bandwidth as a runtime runs the chain: ADD in order (each gets the previous result), CHECK of
    both with the final result (which lists the ifb: bridge's CHECK must ignore it), DEL in reverse order."""
    slot = 40 + ["0.3.1", "0.4.0", "1.1.0"].index(version)
    request.addfinalizer(lambda: Path(lock_path(f"tbwbr{slot}")).unlink(missing_ok=True))  # the bridge's lock file
    host = Path(make_netns(f"tbw-h{slot}", prefix="")).name
    in_host(host, "ip", "link", "set", "lo", "up")
    netns = make_netns(f"tbw-c{slot}", prefix="")
    bridge = {"cniVersion": version, "name": f"tbwnet{slot}", "type": "cniplug-bridge", "bridge": f"tbwbr{slot}",
              "isGateway": True, "ipam": {"type": "cniplug-host-local", "dataDir": str(tmp_path / "ipam"),
                                          "ranges": [[{"subnet": f"10.234.{slot}.0/24"}]]}}
    bw = {"cniVersion": version, "name": f"tbwnet{slot}", "type": "cniplug-bandwidth", **SHAPED}
    cid = f"tbwc{slot}"
    r = run_in_host(host, "cniplug-bridge", "ADD", bridge, netns, cid)
    assert r.rc == 0, r.stdout + r.stderr
    b = run_in_host(host, "cniplug-bandwidth", "ADD", {**bw, "prevResult": r.json}, netns, cid)
    assert b.rc == 0, b.stdout + b.stderr
    final = b.json
    assert final["cniVersion"] == version and len(final["interfaces"]) == 4  # bridge, veth, eth0, ifb
    ifb = final["interfaces"][3]["name"]
    assert ifb == "bwp" + hashlib.sha512(f"tbwnet{slot}{cid}".encode()).hexdigest()[:12]
    if version != "0.3.1":  # CHECK needs 0.4.0
        for plugin, conf in (("cniplug-bridge", bridge), ("cniplug-bandwidth", bw)):
            c = run_in_host(host, plugin, "CHECK", {**conf, "prevResult": final}, netns, cid)
            assert c.rc == 0, f"{plugin}: {c.stdout} {c.stderr}"
    veth = final["interfaces"][1]["name"]
    qdiscs = json.loads(in_host(host, "tc", "-j", "qdisc", "show", "dev", veth))
    assert [q["kind"] for q in qdiscs] == ["tbf", "ingress"], qdiscs
    for plugin, conf in (("cniplug-bandwidth", bw), ("cniplug-bridge", bridge)):
        d = run_in_host(host, plugin, "DEL", {**conf, "prevResult": final}, netns, cid)
        assert d.rc == 0, f"{plugin}: {d.stdout} {d.stderr}"
    links = json.loads(in_host(host, "ip", "-j", "-d", "link", "show"))
    assert [link["ifname"] for link in links if link["ifname"] not in ("lo", f"tbwbr{slot}")] == []


def test_net_dry_run_of_a_list_with_bandwidth(make_netns: Callable[..., str], tmp_path: Path) -> None:
    """`cniplug net --dry-run add` of contrib/cniplug-bandwidth.conflist (ptp, then bandwidth with the capability):
    bandwidth's part is rendered although ptp's veth does not exist yet (the host end is the interface ptp's
    dry-run result lists before eth0), and the list's result names the ifb."""
    netns = make_netns("tbw-n50", prefix="")
    conf = json.loads((Path(__file__).resolve().parents[2] / "contrib" / "cniplug-bandwidth.conflist").read_text())
    conf["name"] = "tbwnet50"
    conf["plugins"][0]["ipam"].update(dataDir=str(tmp_path / "ipam"), ranges=[[{"subnet": "10.234.50.0/24"}]])
    netd, bin_dir = tmp_path / "net.d", tmp_path / "bin"
    netd.mkdir()
    (netd / "tbw.conflist").write_text(json.dumps(conf))
    subprocess.run([sys.executable, "-m", "cniplug", "install", "--no-auto-helper", "--bin-dir", str(bin_dir)],
                   check=True, capture_output=True)
    cap = {"bandwidth": {"ingressRate": INGRESS, "ingressBurst": BURST, "egressRate": EGRESS, "egressBurst": BURST}}
    env = {**os.environ, "NETCONFPATH": str(netd), "CNI_PATH": f"{bin_dir}:/usr/lib/cni", "CAP_ARGS": json.dumps(cap)}
    proc = subprocess.run([sys.executable, "-m", "cniplug", "net", "--dry-run", "add", "tbwnet50", netns], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    veth = re.search(r"^ip link add (veth[0-9a-f]{8}) ", proc.stdout, re.M)
    assert veth, proc.stdout
    ifb = "bwp" + hashlib.sha512(("tbwnet50" + "cnitool-" + hashlib.sha512(netns.encode()).digest()[:10].hex())
                                 .encode()).hexdigest()[:12]
    tbf = f"tc qdisc add dev {veth.group(1)} root handle 1: tbf rate {INGRESS // 8}bps burst {BURST // 8}"
    assert tbf in proc.stdout
    assert f"action mirred egress redirect dev {ifb}\n" in proc.stdout
    assert f'{{"name":"{ifb}"}}' in proc.stdout.replace(" ", "")  # the cached result lists the ifb
    assert not (bin_dir.parent / "ipam").exists(), "the dry run wrote the IPAM store"


@pytest.mark.parametrize("burst", [2**32 - 1, 2**35 - 9], ids=["containerd", "cri-o"])
def test_the_burst_runtimes_send_for_an_annotation_gets_the_largest_bucket(
        burst: int, attach: Callable[[int], Attachment]) -> None:
    """kubernetes.io/ingress-bandwidth: 1M under containerd or CRI-O: the runtime's burst overflows the bucket at
    1 Mbit/s; ADD takes the largest one the kernel holds, CHECK agrees, DEL leaves nothing."""
    a = attach(6 if burst < 2**33 else 7)
    rc = {"bandwidth": {"ingressRate": 1_000_000, "ingressBurst": burst, "egressRate": 1_000_000, "egressBurst": burst}}
    added = a.run("ADD", a.config(a.prev, runtimeConfig=rc))
    assert added.rc == 0, added.stdout + added.stderr
    largest = bandwidth.largest_burst(125_000)
    for dev in (a.veth, a.ifb):
        options = a.tc("qdisc", "show", "dev", dev)[0]["options"]
        assert options["rate"] == 125_000 and abs(options["burst"] - largest) <= 2, options
    assert a.run("CHECK", a.config(added.json, runtimeConfig=rc)).rc == 0
    assert a.run("DEL", a.config(runtimeConfig=rc)).rc == 0
    assert a.ifbs() == [] and a.tc("qdisc", "show", "dev", a.veth)[0]["kind"] != "tbf"
