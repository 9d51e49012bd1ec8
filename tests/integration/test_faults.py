"""Fault injection at every step of ADD, against the real kernel: a failed ADD leaves the host exactly as it was.

Two ways to fail step k, for bridge (built-in host-local; reference host-local delegated; onto an existing
bridge), ptp and loopback:

* per step, in-process: a driver process (inside the test's host namespace) swaps
  `cniplug.plugins.common.RUNNER_FACTORY` for a RecordingRunner subclass that really executes every command
  through `runner.execute` (one step per command, no batching) except step k, which it fails. Every step of
  the script is injected.
* per command invocation, out of process: the plugin runs as a runtime runs it, with a directory of wrappers
  (`ip`, `iptables`, `ip6tables`, `*-restore`, `sysctl`, `nsenter`) first in PATH. They count the mutating
  invocations (an `ip -batch -` or `iptables-restore` carries several steps) and fail the k-th. `sysctl -w`
  steps are writes under /proc/sys in the plugin's process (procsys.py): only the per-step way fails those.

After each failed ADD the full state of the host namespace and of the container namespace (`ip -j link/addr/
route`, `iptables-save`/`ip6tables-save` with counters zeroed, forwarding sysctls, the bridge's accept_ra)
and the IPAM store are compared with the state before the ADD. The error JSON must name the failed command
and carry its stderr. Finally the plugin is SIGKILLed while it waits inside invocation k, and a DEL must clean
up completely.

The plugin's host is a private namespace (see tcr_netstate); names and addresses use the `tcr` prefix and
10.250.140.0/24, fd10:250:140::/48.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tcr_netstate import (
    HELPER_HOSTS,
    REPO,
    FakePath,
    HelperHost,
    diff,
    host_argv,
    leftovers,
    plugin_env,
    remove_lock_files,
    remove_nft_lock,
    run_in_host,
    setup_host,
    snapshot,
)

from cniplug import script

pytestmark = pytest.mark.root

DRIVER = r"""
import importlib, io, json, sys
from cniplug import runner, skel
from cniplug.plugins import common

spec = json.load(open(sys.argv[1]))
made = []

class FaultyRunner(runner.RecordingRunner):
    # Really executes every command (runner.execute), except that call number fail_at fails.
    def call(self, argv, stdin=None):
        self.calls.append(argv)
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            result = runner.Completed(argv=argv, rc=1, stderr=f"tcr-injected: step {self.fail_at} refused")
        else:
            result = runner.execute(argv, stdin)
        self.records.append(result)
        return result

def factory():
    r = FaultyRunner(fail_at=spec["fail_at"])
    made.append(r)
    return r

common.RUNNER_FACTORY = factory
handlers = importlib.import_module(spec["module"]).HANDLERS
out = io.StringIO()
rc = skel.run(handlers, "tcr", argv=[], environ=spec["env"], stdin=io.BytesIO(spec["stdin"].encode()), stdout=out)
json.dump({"rc": rc, "stdout": out.getvalue(), "calls": [r.calls for r in made],
           "rcs": [[c.rc for c in r.records] for r in made]}, sys.stdout)
"""

MODULES = {"cniplug-bridge": "cniplug.plugins.bridge", "cniplug-ptp": "cniplug.plugins.ptp",
           "cniplug-loopback": "cniplug.plugins.loopback"}


@dataclass
class Scenario:
    name: str
    slot: int
    plugin: str
    delegated: bool = False
    existing_bridge: bool = False
    proc_netns: bool = False  # CNI_NETNS=/proc/PID/ns/net: the `nsenter --net=... ip` path instead of `ip -n`
    # Another test's scenarios (issue #13's nftables ones): their own name prefix, subnets and config keys.
    prefix: str = "tcr"
    subnets: tuple[str, str] = ("", "")
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br{self.slot}" if self.plugin == "cniplug-bridge" else ""

    @property
    def ns_prefix(self) -> str:
        return "tcp-" if self.prefix == "tcr" else f"{self.prefix}-"

    def config(self, data_dir: Path, builtin: bool = False) -> dict[str, Any]:
        net = f"{self.prefix}net{self.slot}"
        if self.plugin == "cniplug-loopback":
            return {"cniVersion": "1.0.0", "name": net, "type": self.plugin}
        ipam = {"type": "host-local" if self.delegated and not builtin else "cniplug-host-local",
                "dataDir": str(data_dir),
                "ranges": [[{"subnet": self.subnets[0] or f"10.250.140.{32 * self.slot}/27"}],
                           [{"subnet": self.subnets[1] or f"fd10:250:140:{self.slot}::/64"}]],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}
        conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": net, "type": self.plugin, "ipMasq": True,
                                "ipam": ipam}
        if self.plugin == "cniplug-bridge":
            conf.update(bridge=self.bridge, isGateway=True)
        conf.update(self.extra)
        return conf


SCENARIOS = [
    Scenario("bridge-new", 1, "cniplug-bridge"),
    Scenario("bridge-existing", 2, "cniplug-bridge", existing_bridge=True),
    Scenario("bridge-delegated", 3, "cniplug-bridge", delegated=True),
    Scenario("ptp", 4, "cniplug-ptp", proc_netns=True),
    Scenario("loopback", 5, "cniplug-loopback"),
    # issue #13: the nftables masquerade backend and macspoofchk (nft steps, their #undo by name or @handle)
    Scenario("bridge-nft", 13, "cniplug-bridge", prefix="tnf", subnets=("10.236.113.0/27", "fd36:113::/64"),
             extra={"ipMasqBackend": "nftables", "macspoofchk": True, "portIsolation": True}),
    Scenario("bridge-nft-existing", 14, "cniplug-bridge", existing_bridge=True, prefix="tnf",
             subnets=("10.236.114.0/27", "fd36:114::/64"), extra={"ipMasqBackend": "nftables", "macspoofchk": True}),
    Scenario("ptp-nft", 15, "cniplug-ptp", proc_netns=True, prefix="tnf",
             subnets=("10.236.115.0/27", "fd36:115::/64"), extra={"ipMasqBackend": "nftables"}),
]
IDS = [s.name for s in SCENARIOS]


@dataclass
class Stage:
    """One host namespace + container namespace ready for `scenario`'s ADD of container `cid`."""

    scenario: Scenario
    host: str
    netns: str
    data_dir: Path
    cid: str = "tcrc1"
    config: dict[str, Any] = field(default_factory=dict)
    baseline: list[str] = field(default_factory=list)  # leftovers() of the attachments made before the test

    def left(self) -> list[str]:
        return [x for x in leftovers(self.host, [self.netns], self.data_dir, self.scenario.bridge)
                if x not in self.baseline]

    @property
    def ifname(self) -> str:
        return "lo" if self.scenario.plugin == "cniplug-loopback" else "eth0"

    def snap(self) -> dict[str, Any]:
        return snapshot(self.host, [self.netns], self.data_dir, self.scenario.bridge)

    def run(self, command: str, path_prefix: str = "", cid: str = "") -> Any:
        return run_in_host(self.host, self.scenario.plugin, command, self.config, self.netns, cid or self.cid,
                           self.ifname, path_prefix)

    def drive(self, fail_at: int | None, tmp: Path) -> dict[str, Any]:
        """Run ADD in-process (in a driver inside the host namespace) with step `fail_at` failing."""
        env = plugin_env("ADD", self.netns, self.cid, self.ifname)
        spec = tmp / "spec.json"
        spec.write_text(json.dumps({"fail_at": fail_at, "module": MODULES[self.scenario.plugin], "env": env,
                                    "stdin": json.dumps(self.config)}))
        proc = subprocess.run(["ip", "netns", "exec", self.host, sys.executable, "-c", DRIVER, str(spec)],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        report: dict[str, Any] = json.loads(proc.stdout)
        report["stderr"] = proc.stderr
        return report


@pytest.fixture(params=["standalone"])
def via(request: pytest.FixtureRequest) -> str:
    """How the plugin runs: "standalone" (`python -m cniplug plugin`), or "helper" (the installed executable
    handing every call to a `cniplug helper` in the host namespace; each call must be served by it)."""
    return str(request.param)


@pytest.fixture
def stage(make_netns: Callable[[str], str], tmp_path: Path, via: str) -> Iterator[Callable[[Scenario, str], Stage]]:
    sleepers: list[subprocess.Popen[bytes]] = []
    bridges: list[str] = []
    helpers: list[HelperHost] = []

    def make(sc: Scenario, tag: str) -> Stage:
        host = Path(make_netns(f"r-h{sc.slot}{tag}", prefix=sc.ns_prefix)).name
        setup_host(host)
        if via == "helper":
            helpers.append(HelperHost(host, tmp_path / f"bin-{tag}"))
        cns = make_netns(f"r-c{sc.slot}{tag}", prefix=sc.ns_prefix)
        netns = cns
        if sc.proc_netns:
            sleeper = subprocess.Popen(["ip", "netns", "exec", Path(cns).name, "sleep", "3600"])
            sleepers.append(sleeper)
            netns = f"/proc/{sleeper.pid}/ns/net"
            deadline = time.monotonic() + 5
            while os.stat(netns).st_ino == os.stat("/proc/self/ns/net").st_ino and time.monotonic() < deadline:
                time.sleep(0.01)
        data_dir = tmp_path / f"ipam-{tag}"
        st = Stage(sc, host, netns, data_dir)
        st.config = sc.config(data_dir)
        if sc.bridge:
            bridges.append(sc.bridge)
        if sc.existing_bridge:  # another container is already attached: the bridge and its gateway exist
            other = make_netns(f"r-c{sc.slot}{tag}0", prefix=sc.ns_prefix)
            r = run_in_host(host, sc.plugin, "ADD", st.config, other, f"{sc.prefix}c0", st.ifname)
            assert r.rc == 0, r.stdout + r.stderr
            time.sleep(0.2)
            st.baseline = leftovers(host, [netns], data_dir, sc.bridge)
        return st

    try:
        yield make
    finally:
        for s in sleepers:
            s.kill()
            s.wait()
        for h in helpers:
            print(f"\n[faults] helper in {h.host} served {h.served} calls")
            h.close()
        remove_lock_files(bridges)
        remove_nft_lock()


def count_steps(st: Stage) -> list[script.Step]:
    """The ADD script's steps, from --dry-run (delegated IPAM cannot be previewed: same config, built-in IPAM)."""
    config = st.scenario.config(st.data_dir.with_name(st.data_dir.name + "-dry"), builtin=True)
    env = plugin_env("ADD", st.netns, st.cid, st.ifname)
    proc = subprocess.run(host_argv(st.host, st.scenario.plugin) + ["--dry-run"], input=json.dumps(config).encode(),
                          env=env, capture_output=True, timeout=60)
    text = proc.stdout.decode()
    assert proc.returncode == 0 and text.startswith(script.HEADER), text + proc.stderr.decode()
    return script.parse(text[len(script.HEADER):]).steps


@dataclass
class Tally:
    label: str
    cases: int = 0
    leaks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def report(self, extra: str = "") -> None:
        print(f"\n[faults] {self.label}: {self.cases} cases, {len(self.leaks)} leaks, "
              f"{len(self.problems)} other problems {extra}")
        for line in self.leaks + self.problems:
            print("   ", line[:1500])
        assert not self.leaks and not self.problems, f"{self.label}: {len(self.leaks)} leaks, {self.problems[:3]}"


def error_of(stdout: str) -> dict[str, Any]:
    try:
        body = json.loads(stdout)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# ---------------------------------------------------------------------------------------------- per step


@pytest.mark.parametrize("sc", SCENARIOS, ids=IDS)
def test_fail_every_step_in_process(sc: Scenario, stage: Callable[[Scenario, str], Stage], tmp_path: Path) -> None:
    st = stage(sc, "s")
    steps = count_steps(st)
    tally = Tally(f"{sc.name} per-step (in-process RecordingRunner)")
    for k in range(1, len(steps) + 1):
        before = st.snap()
        rep = st.drive(k, tmp_path)
        after = st.snap()
        tally.cases += 1
        calls = rep["calls"][0] if rep["calls"] else []
        if steps[k - 1].tolerant:  # a `|| true` step: its failure is ignored, ADD goes on
            if rep["rc"] != 0:
                tally.problems.append(f"step {k} is tolerant but ADD failed: {rep['stdout']}")
            st.run("DEL")
            continue
        err = error_of(rep["stdout"])
        if rep["rc"] != 1 or err.get("code") != 999:
            tally.problems.append(f"step {k}: rc {rep['rc']} stdout {rep['stdout']!r}")
        elif len(calls) < k:
            tally.problems.append(f"step {k}: only {len(calls)} commands ran")
        else:
            want = f"step {k} failed: {' '.join(calls[k - 1])}"
            if err.get("msg") != want:
                tally.problems.append(f"step {k}: msg {err.get('msg')!r}, want {want!r}")
            if f"tcr-injected: step {k} refused" not in err.get("details", ""):
                tally.problems.append(f"step {k}: details {err.get('details')!r} lack the stderr")
            if any(rc != 0 for rc in rep["rcs"][0][k:]):  # the rollback commands
                tally.problems.append(f"step {k}: a rollback command failed: {calls[k:]} {rep['rcs'][0][k:]}")
        if "Traceback" in rep["stdout"]:
            tally.problems.append(f"step {k}: traceback on stdout")
        for d in diff(before, after):
            tally.leaks.append(f"step {k} ({shlex.join(steps[k - 1].argv)}): {d}")
    # Sanity: without a fault the same runner runs exactly the steps the dry run showed, and DEL cleans up.
    rep = st.drive(None, tmp_path)
    assert rep["rc"] == 0, rep["stdout"] + rep["stderr"]
    ran = len(rep["calls"][0]) if rep["calls"] else 0
    assert ran == len(steps), f"dry run shows {len(steps)} steps, the run executed {ran}"
    assert st.run("DEL").rc == 0
    assert not st.left()
    tally.report(f"({len(steps)} steps injected)")


# ---------------------------------------------------------------------------------------------- per invocation


def named_command(fake: FakePath) -> str:
    """The step the runner must name when this invocation fails: the command, or for an `ip -batch` or a
    restore the batch command itself (the wrapper's failure names no line, as ip's argument errors do)."""
    return " ".join(shlex.split(fake.read("failed_argv")))


def count_invocations(sc: Scenario, stage: Callable[[Scenario, str], Stage], fake: FakePath) -> int:
    """Mutating command invocations of a successful ADD, counted in a throwaway host namespace."""
    st = stage(sc, "n")
    fake.reset()
    r = st.run("ADD", path_prefix=str(fake.dir))
    assert r.rc == 0, r.stdout + r.stderr
    return fake.count


@pytest.mark.parametrize("via", ["standalone", "helper"], indirect=True)
@pytest.mark.parametrize("sc", SCENARIOS, ids=IDS)
def test_fail_every_invocation(sc: Scenario, stage: Callable[[Scenario, str], Stage], tmp_path: Path) -> None:
    fake = FakePath(tmp_path / "bin")
    total = count_invocations(sc, stage, fake)
    st = stage(sc, "i")
    tally = Tally(f"{sc.name} per-invocation (fake PATH, plugin process)")
    for k in range(1, total + 1):
        before = st.snap()
        fake.reset(fail_at=k)
        r = st.run("ADD", path_prefix=str(fake.dir))
        after = st.snap()
        tally.cases += 1
        err = error_of(r.stdout)
        if r.rc != 1 or err.get("code") != 999:
            tally.problems.append(f"invocation {k}: rc {r.rc} stdout {r.stdout!r}")
        else:
            want = named_command(fake)
            if not err.get("msg", "").endswith(f"failed: {want}"):
                tally.problems.append(f"invocation {k}: msg {err.get('msg')!r} does not name {want!r}")
            if f"tcr-fault: injected failure of invocation {k}" not in err.get("details", ""):
                tally.problems.append(f"invocation {k}: details {err.get('details')!r} lack the stderr")
        if "Traceback" in r.stdout:
            tally.problems.append(f"invocation {k}: traceback on stdout")
        for d in diff(before, after):
            tally.leaks.append(f"invocation {k} ({fake.read('failed_argv').strip()}): {d}")
    tally.report(f"({total} invocations injected)")


# ---------------------------------------------------------------------------------------------- SIGKILL mid-ADD

KILL_SCENARIOS = [s for s in SCENARIOS if s.name in ("bridge-new", "bridge-delegated", "ptp", "loopback",
                                                     "bridge-nft", "ptp-nft")]


@pytest.mark.parametrize("via", ["standalone", "helper"], indirect=True)
@pytest.mark.parametrize("sc", KILL_SCENARIOS, ids=[s.name for s in KILL_SCENARIOS])
def test_sigkill_mid_add_then_del_cleans_up(sc: Scenario, stage: Callable[[Scenario, str], Stage],
                                            tmp_path: Path, via: str) -> None:
    """Kill the plugin while invocation k hangs (steps before k are done, IPAM has reserved); DEL cleans up.

    Through a helper, the process doing the work is the helper's child: killing it is "the helper died
    during ADD", which the client must report (code 11) without running the ADD again."""
    fake = FakePath(tmp_path / "bin")
    total = count_invocations(sc, stage, fake)
    tally = Tally(f"{sc.name} SIGKILL before invocation k, then DEL")
    for k in range(1, total + 1):
        st = stage(sc, f"k{k}")  # a fresh host each time: the kill point is then exactly invocation k
        cid = f"tcrk{k}"
        fake.reset(fail_at=k, mode="sleep")
        env = plugin_env("ADD", st.netns, cid, st.ifname, str(fake.dir))
        if st.host in HELPER_HOSTS:
            env.update(HELPER_HOSTS[st.host].env)
        stdin = tmp_path / "stdin.json"
        stdin.write_text(json.dumps(st.config))
        with stdin.open("rb") as f:
            proc = subprocess.Popen(host_argv(st.host, sc.plugin), stdin=f, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 60
        while not (fake.dir / "sleeping").exists():
            assert proc.poll() is None, f"invocation {k}: plugin ended before it"
            assert time.monotonic() < deadline, f"invocation {k} never reached"
            time.sleep(0.01)
        wrapper, parent = (int(x) for x in fake.read("sleeping").split())
        if via == "helper":
            assert parent != proc.pid, "the call was not handed to the helper"
            os.kill(parent, signal.SIGKILL)  # the helper's child running this call
            out = proc.communicate(timeout=60)[0].decode()
            if error_of(out).get("code") != 11:
                tally.problems.append(f"invocation {k}: the client did not report the helper's death: {out!r}")
        else:
            assert parent == proc.pid, "the hanging command is not the plugin's child"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        os.kill(wrapper, signal.SIGKILL)
        tally.cases += 1
        for attempt in (1, 2):  # DEL, and DEL again (idempotent)
            d = run_in_host(st.host, sc.plugin, "DEL", st.config, st.netns, cid, st.ifname)
            if d.rc != 0:
                tally.problems.append(f"invocation {k}: DEL #{attempt} failed: {d.stdout} {d.stderr[-500:]}")
        left = st.left()
        if sc.plugin == "cniplug-loopback":  # loopback's DEL brings lo down again
            flags = json.loads(subprocess.run(["ip", "-n", Path(st.netns).name, "-j", "link", "show", "lo"],
                                              capture_output=True, text=True).stdout)[0]["flags"]
            left += ["lo still up"] if "UP" in flags else []
        tally.leaks += [f"invocation {k} ({fake.read('failed_argv').strip()}): {x}" for x in left]
    tally.report(f"({total} kill points)")


def test_snapshot_sees_every_kind_of_leak(make_netns: Callable[[str], str], tmp_path: Path) -> None:
    """The comparison itself: each kind of left-over state shows up as a difference."""
    host = Path(make_netns("r-h9leak")).name
    setup_host(host)
    cns = make_netns("r-c9leak")
    data = tmp_path / "ipam"
    (data / "tcrnet9").mkdir(parents=True)
    leaks = {
        "link": ["ip", "link", "add", "tcrleak0", "type", "bridge"],
        "addr": ["ip", "addr", "add", "10.250.143.250/32", "dev", "lo"],
        "route4": ["ip", "route", "add", "10.250.143.0/28", "dev", "lo"],
        "iptables": ["iptables", "-w", "-t", "nat", "-N", "CNI-tcrleak"],
        "ip6tables": ["ip6tables", "-w", "-t", "nat", "-N", "CNI-tcrleak"],
        "ip_forward": ["sysctl", "-qw", "net.ipv4.ip_forward=1"],
        "c0.link": ["ip", "-n", Path(cns).name, "link", "add", "tcrleak1", "type", "bridge"],
    }
    for key, argv in leaks.items():
        before = snapshot(host, [cns], data)
        subprocess.run(["ip", "netns", "exec", host, *argv], check=True)
        found = diff(before, snapshot(host, [cns], data))
        assert any(d.startswith(key + ":") for d in found), (key, found)
    # A MAC pinned to the value it had: only how it was assigned changes (ip shows no addr_assign_type).
    pin = "ip link set tcrleak0 address $(cat /sys/class/net/tcrleak0/address)"
    for key, argv in (("mac_assign", ["bash", "-c", pin]), ("link", ["ip", "link", "set", "tcrleak0", "address",
                                                                     "02:00:0a:fa:8f:01"])):
        before = snapshot(host, [cns], data)
        subprocess.run(["ip", "netns", "exec", host, *argv], check=True)
        found = diff(before, snapshot(host, [cns], data))
        assert key in [d.split(":")[0] for d in found], (key, found)
    before = snapshot(host, [cns], data)
    (data / "tcrnet9" / "10.250.143.2").write_text("c\r\neth0")
    assert diff(before, snapshot(host, [cns], data))
    print(f"\n[faults] the snapshot detects {len(leaks) + 3} kinds of leak")
