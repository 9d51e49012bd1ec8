"""Fault injection for the chained plugins (cniplug-firewall, cniplug-tuning), as tests/integration/
test_faults.py does it for the interface plugins: every step of ADD fails once (in-process runner, no
batching) and every mutating command invocation fails once (wrappers first in PATH, the plugin as a
process); after each failed ADD the host namespace, the container namespace, the container's sysctls and
the plugins' files must be exactly as before, and the error must name the failed command and its stderr.

The "host" is a namespace `tfw-fh*` (its own filter table: the machine's FORWARD is never touched); a
cniplug-bridge ADD in it makes the attachment whose prevResult the chained plugin reads. Addresses
10.232.20.0/24.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tcr_netstate import REPO, FakePath, diff, in_host, plugin_env, run_in_host, snapshot
from test_faults import DRIVER, Tally, error_of

from cniplug import script
from cniplug.plugins import firewall
from cniplug.plugins.bridge import lock_path

pytestmark = pytest.mark.root

MODULES = {"cniplug-firewall": "cniplug.plugins.firewall", "cniplug-tuning": "cniplug.plugins.tuning"}
SYSCTL_PATHS = ("net/core/somaxconn", "net/ipv4/conf/eth0/arp_filter")


@dataclass
class Stage:
    plugin: str
    host: str
    netns: str
    tmp: Path
    cid: str = "tfwf1"
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.tmp / "data"

    def snap(self) -> dict[str, Any]:
        state = snapshot(self.host, [self.netns], self.data)
        state["c0.sysctl"] = in_host(self.host, "ip", "netns", "exec", Path(self.netns).name, "cat",
                                     *(f"/proc/sys/{p}" for p in SYSCTL_PATHS)).split()
        record = Path(firewall.record_path(self.config["name"], self.cid, "eth0"))
        state["record"] = record.read_text() if record.exists() else None
        return state

    def run(self, command: str, path_prefix: str = "") -> Any:
        return run_in_host(self.host, self.plugin, command, self.config, self.netns, self.cid, "eth0", path_prefix)

    def drive(self, fail_at: int | None) -> dict[str, Any]:
        env = plugin_env("ADD", self.netns, self.cid)
        spec = self.tmp / "spec.json"
        spec.write_text(json.dumps({"fail_at": fail_at, "module": MODULES[self.plugin], "env": env,
                                    "stdin": json.dumps(self.config)}))
        proc = subprocess.run(["ip", "netns", "exec", self.host, sys.executable, "-c", DRIVER, str(spec)],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        report: dict[str, Any] = json.loads(proc.stdout)
        return report


def chained_config(plugin: str, prev: dict[str, Any], data: Path) -> dict[str, Any]:
    conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": "tfwfnet", "type": plugin, "prevResult": prev}
    if plugin == "cniplug-firewall":
        conf["ingressPolicy"] = "same-bridge"
    else:
        conf.update(dataDir=str(data / "tuning"), mac="02:00:00:0a:e8:20", mtu=1300, promisc=True, allmulti=True,
                    txQLen=500, sysctl={"net.core.somaxconn": "512", "net.ipv4.conf.IFNAME.arp_filter": "1"})
    return conf


@pytest.fixture
def stage(make_netns: Callable[..., str], tmp_path: Path) -> Iterator[Callable[[str, str], Stage]]:
    made: list[Stage] = []

    def make(plugin: str, tag: str) -> Stage:
        host = Path(make_netns(f"tfw-fh{tag}", prefix="")).name
        netns = make_netns(f"tfw-fc{tag}", prefix="")
        # A fresh host: lo up, forwarding on, and the filter tables already there (iptables-nft creates a
        # table on first use and never removes it, which would otherwise show up as a difference).
        in_host(host, "bash", "-c", "set -e; ip link set lo up; sysctl -qw net.ipv4.ip_forward=1"
                " net.ipv6.conf.default.accept_dad=0;"
                " for t in iptables ip6tables; do $t -w -t filter -N TFW-INIT; $t -w -t filter -X TFW-INIT; done")
        st = Stage(plugin, host, netns, tmp_path / tag)
        st.data.mkdir(parents=True)
        bridge = {"cniVersion": "1.0.0", "name": "tfwfnet", "type": "cniplug-bridge", "bridge": "tfwfbr0",
                  "isGateway": True, "ipam": {"type": "cniplug-host-local", "dataDir": str(st.tmp / "ipam"),
                                              "ranges": [[{"subnet": "10.232.20.0/24"}],
                                                         [{"subnet": "fd10:232:20::/64"}]]}}
        r = run_in_host(host, "cniplug-bridge", "ADD", bridge, netns, st.cid)
        assert r.rc == 0, r.stdout + r.stderr
        st.config = chained_config(plugin, r.json, st.data)
        made.append(st)
        settle(st)
        return st

    yield make
    for st in made:
        Path(firewall.record_path(st.config["name"], st.cid, "eth0")).unlink(missing_ok=True)
    Path(lock_path("tfwfbr0")).unlink(missing_ok=True)


def settle(st: Stage, timeout: float = 10.0) -> None:
    """Wait until the kernel has finished what the bridge ADD started (IPv6 link-local addresses and their
    routes appear some time after the links come up): two snapshots 0.3 s apart are equal."""
    deadline = time.monotonic() + timeout
    last = st.snap()
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = st.snap()
        if now == last:
            return
        last = now
    raise AssertionError(f"the host did not settle: {diff(last, st.snap())}")


def steps_of(st: Stage) -> list[script.Step]:
    env = plugin_env("ADD", st.netns, st.cid)
    proc = subprocess.run(["ip", "netns", "exec", st.host, sys.executable, "-m", "cniplug", "plugin", st.plugin,
                           "--dry-run"], input=json.dumps(st.config).encode(), env=env, capture_output=True,
                          timeout=60)
    text = proc.stdout.decode()
    assert proc.returncode == 0 and text.startswith(script.HEADER), text + proc.stderr.decode()
    # The last `sh -c ... cniplug` step writes the record/backup file the plugin writes in Python
    # (common.dry_run_file): in the dry-run script only, not a step the runner runs.
    return [s for s in script.parse(text[len(script.HEADER):]).steps if s.argv[:2] != ["sh", "-c"]]


PLUGINS = ["cniplug-firewall", "cniplug-tuning"]


@pytest.mark.parametrize("plugin", PLUGINS)
def test_fail_every_step_in_process(plugin: str, stage: Callable[[str, str], Stage]) -> None:
    st = stage(plugin, "s")
    steps = steps_of(st)
    assert len(steps) >= 6, [s.line for s in steps]
    tally = Tally(f"{plugin} per-step (in-process RecordingRunner)")
    for k in range(1, len(steps) + 1):
        before = st.snap()
        rep = st.drive(k)
        after = st.snap()
        tally.cases += 1
        calls = rep["calls"][0] if rep["calls"] else []
        err = error_of(rep["stdout"])
        if rep["rc"] != 1 or err.get("code") != 999:
            tally.problems.append(f"step {k}: rc {rep['rc']} stdout {rep['stdout']!r}")
        else:
            want = f"step {k} failed: {' '.join(calls[k - 1])}"
            if err.get("msg") != want:
                tally.problems.append(f"step {k}: msg {err.get('msg')!r}, want {want!r}")
            if f"tcr-injected: step {k} refused" not in err.get("details", ""):
                tally.problems.append(f"step {k}: details {err.get('details')!r} lack the stderr")
            if any(rc != 0 for rc in rep["rcs"][0][k:]):
                tally.problems.append(f"step {k}: a rollback command failed: {calls[k:]} {rep['rcs'][0][k:]}")
        for d in diff(before, after):
            tally.leaks.append(f"step {k} ({shlex.join(steps[k - 1].argv)}): {d}")
    rep = st.drive(None)
    assert rep["rc"] == 0, rep["stdout"]
    assert len(rep["calls"][0]) == len(steps), "the run executed exactly the dry run's steps"
    assert st.run("DEL").rc == 0
    tally.report(f"({len(steps)} steps injected)")


@pytest.mark.parametrize("plugin", PLUGINS)
def test_fail_every_invocation(plugin: str, stage: Callable[[str, str], Stage], tmp_path: Path) -> None:
    fake = FakePath(tmp_path / "bin")
    probe = stage(plugin, "n")
    fake.reset()
    r = probe.run("ADD", path_prefix=str(fake.dir))
    assert r.rc == 0, r.stdout + r.stderr
    total = fake.count
    assert total >= 1
    st = stage(plugin, "i")
    tally = Tally(f"{plugin} per-invocation (fake PATH, plugin process)")
    for k in range(1, total + 1):
        before = st.snap()
        fake.reset(fail_at=k)
        r = st.run("ADD", path_prefix=str(fake.dir))
        after = st.snap()
        tally.cases += 1
        err = error_of(r.stdout)
        want = " ".join(shlex.split(fake.read("failed_argv")))
        if r.rc != 1 or err.get("code") != 999 or not err.get("msg", "").endswith(f"failed: {want}"):
            tally.problems.append(f"invocation {k}: rc {r.rc} stdout {r.stdout!r}, want it to name {want!r}")
        elif f"tcr-fault: injected failure of invocation {k}" not in err.get("details", ""):
            tally.problems.append(f"invocation {k}: details {err.get('details')!r} lack the stderr")
        for d in diff(before, after):
            tally.leaks.append(f"invocation {k} ({fake.read('failed_argv').strip()}): {d}")
    tally.report(f"({total} invocations injected)")
