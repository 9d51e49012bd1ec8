"""Fault injection at every step of a bandwidth ADD (the test_faults.py pattern): a failed ADD leaves the host
exactly as it was, and a DEL after a SIGKILL mid-ADD leaves nothing of bandwidth's.

The host is a private namespace (`tbw-fh*`) where cniplug-ptp has attached a container (`tbw-fc*`,
10.234.100.0/22); bandwidth is then chained after it with ptp's result as prevResult, shaping both
directions (so every kind of step is there: tbf on the veth, the ifb, its alias, up, its tbf, the ingress
qdisc, the redirect filter). State compared before/after: tcr_netstate.snapshot (links with -d, so the ifb
and each link's qdisc kind; addresses, routes, iptables, sysctls) plus `tc -j qdisc show` of every link and
`tc -j filter show` under every ingress qdisc.

* per step, in-process: test_faults' driver swaps the runner for one that really runs every command but
  fails step k; the error must name step k's command and carry its stderr, every rollback command succeed;
* per invocation, out of process: wrappers first in PATH (tcr_netstate.FakePath, which wraps `tc` too) fail
  the k-th mutating invocation (an `ip -batch -` carries several steps);
* SIGKILL while invocation k hangs, then DEL, then DEL again: no ifb, no qdisc of bandwidth's left.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tcr_netstate import REPO, FakePath, diff, host_argv, in_host, plugin_env, run_in_host, snapshot
from test_faults import DRIVER, Tally, error_of

from cniplug import script

pytestmark = pytest.mark.root

SHAPED = {"ingressRate": 4_000_000, "ingressBurst": 80_000, "egressRate": 3_000_000, "egressBurst": 80_000}


def tc_state(host: str) -> dict[str, Any]:
    """Every qdisc of the host namespace, and the filters under each ingress qdisc."""
    qdiscs = json.loads(in_host(host, "tc", "-j", "qdisc", "show") or "[]")
    filters = {q["dev"]: json.loads(in_host(host, "tc", "-j", "filter", "show", "dev", q["dev"], "parent", "ffff:")
                                    or "[]")
               for q in qdiscs if q.get("kind") == "ingress"}
    return {"qdiscs": qdiscs, "filters": filters}


def settle(*namespaces: str) -> None:
    """Wait until IPv6 DAD is over for the link-local addresses ptp's veth got (up to 5 s): the kernel finishes
    it on its own, and a snapshot taken meanwhile would show it as a difference."""
    deadline = time.monotonic() + 5
    for ns in namespaces:
        while "tentative" in in_host(ns, "ip", "-j", "addr", "show"):
            assert time.monotonic() < deadline, f"DAD not over in {ns}"
            time.sleep(0.05)


@dataclass
class Stage:
    host: str
    netns: str
    prev: dict[str, Any]
    cid: str = "tbwfc"
    config: dict[str, Any] = field(default_factory=dict)

    def snap(self) -> dict[str, Any]:
        state = snapshot(self.host, [self.netns])
        state["tc"] = tc_state(self.host)
        return state

    def run(self, command: str, path_prefix: str = "", config: dict[str, Any] | None = None) -> Any:
        return run_in_host(self.host, "cniplug-bandwidth", command, config or self.config, self.netns, self.cid,
                           "eth0", path_prefix)

    def left(self) -> list[str]:
        """bandwidth's own state still there: an ifb, or a qdisc other than the veth's default noqueue."""
        out = []
        links = json.loads(in_host(self.host, "ip", "-j", "-d", "link", "show"))
        ifbs = [link["ifname"] for link in links if (link.get("linkinfo") or {}).get("info_kind") == "ifb"]
        if ifbs:
            out.append(f"ifb links {ifbs}")
        veth = self.prev["interfaces"][0]["name"]
        kinds = [q["kind"] for q in json.loads(in_host(self.host, "tc", "-j", "qdisc", "show", "dev", veth))]
        if kinds != ["noqueue"]:
            out.append(f"qdiscs on {veth}: {kinds}")
        return out

    def drive(self, fail_at: int | None, tmp: Path) -> dict[str, Any]:
        env = plugin_env("ADD", self.netns, self.cid)
        spec = tmp / "spec.json"
        spec.write_text(json.dumps({"fail_at": fail_at, "module": "cniplug.plugins.bandwidth", "env": env,
                                    "stdin": json.dumps(self.config)}))
        proc = subprocess.run(["ip", "netns", "exec", self.host, sys.executable, "-c", DRIVER, str(spec)],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
        assert proc.returncode == 0, proc.stderr
        report: dict[str, Any] = json.loads(proc.stdout)
        return report


@pytest.fixture
def stage(make_netns: Callable[..., str], tmp_path: Path) -> Callable[[str], Stage]:
    count = [0]

    def make(tag: str) -> Stage:
        count[0] += 1
        n = count[0]
        host = Path(make_netns(f"tbw-fh{tag}", prefix="")).name
        in_host(host, "ip", "link", "set", "lo", "up")
        netns = make_netns(f"tbw-fc{tag}", prefix="")
        ptp = {"cniVersion": "1.0.0", "name": "tbwfnet", "type": "cniplug-ptp",
               "ipam": {"type": "cniplug-host-local", "dataDir": str(tmp_path / f"ipam-{tag}"),
                        "ranges": [[{"subnet": f"10.234.{100 + n % 4}.0/24"}]]}}
        r = run_in_host(host, "cniplug-ptp", "ADD", ptp, netns, "tbwfc")
        assert r.rc == 0, r.stdout + r.stderr
        settle(host, Path(netns).name)
        st = Stage(host, netns, r.json)
        st.config = {"cniVersion": "1.0.0", "name": "tbwfnet", "type": "cniplug-bandwidth", **SHAPED,
                     "prevResult": r.json}
        return st

    return make


def dry_run_steps(st: Stage) -> list[script.Step]:
    env = plugin_env("ADD", st.netns, st.cid)
    proc = subprocess.run(host_argv(st.host, "cniplug-bandwidth") + ["--dry-run"], input=json.dumps(st.config).encode(),
                          env=env, capture_output=True, timeout=60)
    text = proc.stdout.decode()
    assert proc.returncode == 0 and text.startswith(script.HEADER), text + proc.stderr.decode()
    return script.parse(text[len(script.HEADER):]).steps


def test_fail_every_step_in_process(stage: Callable[[str], Stage], tmp_path: Path) -> None:
    st = stage("s")
    steps = dry_run_steps(st)
    assert [s.argv[0] for s in steps] == ["tc", "ip", "ip", "ip", "tc", "tc", "tc"], [s.line for s in steps]
    tally = Tally("bandwidth per-step (in-process RecordingRunner)")
    for k in range(1, len(steps) + 1):
        before = st.snap()
        rep = st.drive(k, tmp_path)
        after = st.snap()
        tally.cases += 1
        calls = rep["calls"][0] if rep["calls"] else []
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
            if any(rc != 0 for rc in rep["rcs"][0][k:]):
                tally.problems.append(f"step {k}: a rollback command failed: {calls[k:]} {rep['rcs'][0][k:]}")
        if "Traceback" in rep["stdout"]:
            tally.problems.append(f"step {k}: traceback on stdout")
        for d in diff(before, after):
            tally.leaks.append(f"step {k} ({shlex.join(steps[k - 1].argv)}): {d}")
    rep = st.drive(None, tmp_path)
    assert rep["rc"] == 0, rep["stdout"]
    assert len(rep["calls"][0]) == len(steps), "the run executed other steps than the dry run showed"
    assert st.run("DEL").rc == 0
    assert not st.left()
    tally.report(f"({len(steps)} steps injected)")


def count_invocations(stage: Callable[[str], Stage], fake: FakePath) -> int:
    st = stage("n")
    fake.reset()
    r = st.run("ADD", path_prefix=str(fake.dir))
    assert r.rc == 0, r.stdout + r.stderr
    return fake.count


def test_fail_every_invocation(stage: Callable[[str], Stage], tmp_path: Path) -> None:
    fake = FakePath(tmp_path / "bin")
    total = count_invocations(stage, fake)
    assert total >= 5, total  # tc, ip -batch (add, alias, up), tc, tc, tc
    st = stage("i")
    tally = Tally("bandwidth per-invocation (fake PATH, plugin process)")
    for k in range(1, total + 1):
        before = st.snap()
        fake.reset(fail_at=k)
        r = st.run("ADD", path_prefix=str(fake.dir))
        after = st.snap()
        tally.cases += 1
        err = error_of(r.stdout)
        want = " ".join(shlex.split(fake.read("failed_argv")))
        if r.rc != 1 or err.get("code") != 999:
            tally.problems.append(f"invocation {k}: rc {r.rc} stdout {r.stdout!r}")
        elif not err.get("msg", "").endswith(f"failed: {want}"):
            tally.problems.append(f"invocation {k}: msg {err.get('msg')!r} does not name {want!r}")
        elif f"tcr-fault: injected failure of invocation {k}" not in err.get("details", ""):
            tally.problems.append(f"invocation {k}: details {err.get('details')!r} lack the stderr")
        for d in diff(before, after):
            tally.leaks.append(f"invocation {k} ({fake.read('failed_argv').strip()}): {d}")
    tally.report(f"({total} invocations injected)")


def test_sigkill_mid_add_then_del_cleans_up(stage: Callable[[str], Stage], tmp_path: Path) -> None:
    fake = FakePath(tmp_path / "bin")
    total = count_invocations(stage, fake)
    tally = Tally("bandwidth SIGKILL before invocation k, then DEL")
    for k in range(1, total + 1):
        st = stage(f"k{k}")
        fake.reset(fail_at=k, mode="sleep")
        env = plugin_env("ADD", st.netns, st.cid, "eth0", str(fake.dir))
        stdin = tmp_path / "stdin.json"
        stdin.write_text(json.dumps(st.config))
        with stdin.open("rb") as f:
            proc = subprocess.Popen(host_argv(st.host, "cniplug-bandwidth"), stdin=f, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 60
        while not (fake.dir / "sleeping").exists():
            assert proc.poll() is None, f"invocation {k}: plugin ended before it"
            assert time.monotonic() < deadline, f"invocation {k} never reached"
            time.sleep(0.01)
        wrapper, parent = (int(x) for x in fake.read("sleeping").split())
        assert parent == proc.pid, "the hanging command is not the plugin's child"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        os.kill(wrapper, signal.SIGKILL)
        tally.cases += 1
        # DEL as a runtime may send it after a crash: without prevResult, then again.
        no_prev = {k2: v for k2, v in st.config.items() if k2 != "prevResult"}
        for attempt in (1, 2):
            d = st.run("DEL", config=no_prev)
            if d.rc != 0:
                tally.problems.append(f"invocation {k}: DEL #{attempt} failed: {d.stdout} {d.stderr[-500:]}")
        tally.leaks += [f"invocation {k} ({fake.read('failed_argv').strip()}): {x}" for x in st.left()]
    tally.report(f"({total} kill points)")
