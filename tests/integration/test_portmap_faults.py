"""Fault injection at every step of cniplug-portmap's ADD (the test_faults.py pattern): a failed ADD leaves the host
exactly as it was, and the error names the failed command with its stderr.

The container is attached with cniplug-bridge (dual stack, ipMasq) in a private host namespace `tpm-fh<k>`;
portmap is chained through prevResult with tcp, udp and sctp mappings, one with a hostIP, snat on, and the
bridge's route_localnet off, so every kind of step is there (shared chains, their jumps, the container's chain,
entry rules, the sysctl). Scenario "shared" first maps a port for another container, so the shared chains exist
and only this container's steps run. Two ways to fail step k:

* per step, in-process: a driver swaps `common.RUNNER_FACTORY` for a runner that executes every command
  (one step per command, no batching) except step k;
* per invocation, out of process: wrappers first in PATH (tcr_netstate.FakePath) fail the k-th mutating
  invocation (an `iptables-restore` carries several steps; `sysctl -w` steps run no process, procsys.py).

State compared: tcr_netstate.snapshot (links, addresses, routes, iptables-save, ip6tables-save, forwarding)
plus the bridge's route_localnet and the nft tables ip/ip6 cni_hostport. Both backends (iptables, nftables) are run.
Names: `tpm` prefix, 10.231.20.0/24, fd10:231:20::/64.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tcr_netstate import (
    REPO,
    FakePath,
    diff,
    host_argv,
    in_host,
    plugin_env,
    remove_lock_files,
    run_in_host,
    setup_host,
    snapshot,
)

from cniplug import script
from cniplug.plugins.portmap import LOCK_PATH

pytestmark = pytest.mark.root

DRIVER = r"""
import io, json, sys
from cniplug import runner, skel
from cniplug.plugins import common, portmap

spec = json.load(open(sys.argv[1]))
made = []

class FaultyRunner(runner.RecordingRunner):
    def call(self, argv, stdin=None):
        self.calls.append(argv)
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            result = runner.Completed(argv=argv, rc=1, stderr=f"tpm-injected: step {self.fail_at} refused")
        else:
            result = runner.execute(argv, stdin)
        self.records.append(result)
        return result

def factory():
    r = FaultyRunner(fail_at=spec["fail_at"])
    made.append(r)
    return r

common.RUNNER_FACTORY = factory
out = io.StringIO()
rc = skel.run(portmap.HANDLERS, "tpm", argv=[], environ=spec["env"], stdin=io.BytesIO(spec["stdin"].encode()),
              stdout=out)
json.dump({"rc": rc, "stdout": out.getvalue(), "calls": [r.calls for r in made],
           "rcs": [[c.rc for c in r.records] for r in made]}, sys.stdout)
"""

MAPPINGS = [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 18053, "containerPort": 53, "protocol": "udp"},
            {"hostPort": 19000, "containerPort": 90, "protocol": "sctp", "hostIP": "10.231.20.1"}]


@dataclass
class Stage:
    host: str
    netns: str
    config: dict[str, Any]
    cid: str = "tpmf1"

    def snap(self) -> dict[str, Any]:
        state = snapshot(self.host, [self.netns])
        state["route_localnet"] = in_host(self.host, "cat", "/proc/sys/net/ipv4/conf/tpmbr20/route_localnet").strip()
        # iptables-save does not show nft's own tables: the nftables backend's (ip, ip6 cni_hostport). Not the
        # whole ruleset: iptables-nft adds base chains (nat PREROUTING, ...) on first use and never removes them.
        state["nft"] = in_host(self.host, "bash", "-c", "nft list table ip cni_hostport 2>&1; "
                               "nft list table ip6 cni_hostport 2>&1; true").splitlines()
        return state

    def run(self, command: str, path_prefix: str = "") -> Any:
        return run_in_host(self.host, "cniplug-portmap", command, self.config, self.netns, self.cid,
                           path_prefix=path_prefix)

    def drive(self, fail_at: int | None, tmp: Path) -> dict[str, Any]:
        spec = tmp / "spec.json"
        spec.write_text(json.dumps({"fail_at": fail_at, "env": plugin_env("ADD", self.netns, self.cid),
                                    "stdin": json.dumps(self.config)}))
        proc = subprocess.run(["ip", "netns", "exec", self.host, sys.executable, "-c", DRIVER, str(spec)],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        report: dict[str, Any] = json.loads(proc.stdout)
        return report


def bridge_config(data_dir: Path) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "tpmnet20", "type": "cniplug-bridge", "bridge": "tpmbr20",
            "isGateway": True, "ipMasq": True, "hairpinMode": True,
            "ipam": {"type": "cniplug-host-local", "dataDir": str(data_dir),
                     "ranges": [[{"subnet": "10.231.20.0/24"}], [{"subnet": "fd10:231:20::/64"}]]}}


def portmap_config(prev: dict[str, Any], mappings: list[dict[str, Any]], backend: str) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "tpmnet20", "type": "cniplug-portmap", "backend": backend,
            "capabilities": {"portMappings": True}, "runtimeConfig": {"portMappings": mappings}, "prevResult": prev}


@pytest.fixture(params=["iptables", "nftables"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def stage(make_netns: Callable[..., str], tmp_path: Path,
          backend: str) -> Iterator[Callable[[str, bool], Stage]]:
    def make(tag: str, shared: bool) -> Stage:
        host = Path(make_netns(f"tpm-fh{tag}", prefix="")).name
        setup_host(host)
        data = tmp_path / f"ipam-{tag}"
        prevs = {}
        for cid in ("tpmf0", "tpmf1"):
            netns = make_netns(f"tpm-fc{tag}{cid[-1]}", prefix="")
            r = run_in_host(host, "cniplug-bridge", "ADD", bridge_config(data), netns, cid)
            assert r.rc == 0, r.stdout + r.stderr
            prevs[cid] = (netns, r.json)
        if shared:  # another container already has a port: the shared chains and route_localnet exist
            netns, prev = prevs["tpmf0"]
            r = run_in_host(host, "cniplug-portmap", "ADD",
                            portmap_config(prev, [{"hostPort": 17070, "containerPort": 70}], backend), netns, "tpmf0")
            assert r.rc == 0, r.stdout + r.stderr
        else:
            in_host(host, "sysctl", "-qw", "net.ipv4.conf.tpmbr20.route_localnet=0")
        netns, prev = prevs["tpmf1"]
        return Stage(host, netns, portmap_config(prev, MAPPINGS, backend))

    yield make
    remove_lock_files(["tpmbr20"])
    Path(LOCK_PATH).unlink(missing_ok=True)


def dry_run_steps(st: Stage) -> list[script.Step]:
    env = plugin_env("ADD", st.netns, st.cid)
    proc = subprocess.run(host_argv(st.host, "cniplug-portmap") + ["--dry-run"], input=json.dumps(st.config).encode(),
                          env=env, capture_output=True, timeout=60)
    text = proc.stdout.decode()
    assert proc.returncode == 0 and text.startswith(script.HEADER), text + proc.stderr.decode()
    return script.parse(text[len(script.HEADER):]).steps


def error_of(stdout: str) -> dict[str, Any]:
    try:
        body = json.loads(stdout)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


@pytest.mark.parametrize("shared", [False, True], ids=["fresh", "shared"])
def test_fail_every_step_in_process(stage: Callable[[str, bool], Stage], tmp_path: Path, shared: bool,
                                    backend: str) -> None:
    st = stage("s", shared)
    steps = dry_run_steps(st)
    if backend == "iptables":
        assert len(steps) >= (8 if shared else 20), [s.line for s in steps]
    else:  # the sysctl (when route_localnet is off), then one atomic nft transaction
        assert [s.argv[0] for s in steps] == ["nft"] if shared else ["sysctl", "nft"], [s.line for s in steps]
    problems: list[str] = []
    for k in range(1, len(steps) + 1):
        before = st.snap()
        rep = st.drive(k, tmp_path)
        after = st.snap()
        calls = rep["calls"][0] if rep["calls"] else []
        err = error_of(rep["stdout"])
        if rep["rc"] != 1 or err.get("code") != 999:
            problems.append(f"step {k}: rc {rep['rc']} stdout {rep['stdout']!r}")
        elif err.get("msg") != f"step {k} failed: {' '.join(calls[k - 1])}":
            problems.append(f"step {k}: msg {err.get('msg')!r}")
        elif f"tpm-injected: step {k} refused" not in err.get("details", ""):
            problems.append(f"step {k}: details {err.get('details')!r} lack the stderr")
        elif any(rc != 0 for rc in rep["rcs"][0][k:]):
            problems.append(f"step {k}: a rollback command failed: {calls[k:]} {rep['rcs'][0][k:]}")
        problems += [f"step {k} ({shlex.join(steps[k - 1].argv)}): leak {d}" for d in diff(before, after)]
    # Without a fault the same runner runs exactly the dry run's steps; DEL then removes the container's part.
    rep = st.drive(None, tmp_path)
    assert rep["rc"] == 0, rep["stdout"]
    assert len(rep["calls"][0]) == len(steps)
    assert st.run("DEL").rc == 0
    print(f"\n[portmap faults] {backend} per step ({'shared' if shared else 'fresh'}): {len(steps)} steps injected, "
          f"{len(problems)} problems")
    assert not problems, problems


@pytest.mark.parametrize("shared", [False, True], ids=["fresh", "shared"])
def test_fail_every_invocation(stage: Callable[[str, bool], Stage], tmp_path: Path, shared: bool,
                               backend: str) -> None:
    fake = FakePath(tmp_path / "bin")
    counting = stage("n", shared)
    fake.reset()
    r = counting.run("ADD", path_prefix=str(fake.dir))
    assert r.rc == 0, r.stdout + r.stderr
    total = fake.count
    # The route_localnet sysctl is written in-process (procsys.py; the per-step way above fails it): on
    # nftables the one mutating process is the nft batch, on iptables one restore per family.
    assert total >= (2 if backend == "iptables" else 1)
    st = stage("i", shared)
    problems: list[str] = []
    for k in range(1, total + 1):
        before = st.snap()
        fake.reset(fail_at=k)
        r = st.run("ADD", path_prefix=str(fake.dir))
        after = st.snap()
        err = error_of(r.stdout)
        raw = fake.read("failed_argv").strip()
        want = " ".join(shlex.split(raw))
        if r.rc != 1 or err.get("code") != 999:
            problems.append(f"invocation {k}: rc {r.rc} stdout {r.stdout!r}")
        elif not err.get("msg", "").endswith((f"failed: {want}", f"failed: {raw}")):  # nft: one word with quotes
            problems.append(f"invocation {k}: msg {err.get('msg')!r} does not name {want!r}")
        elif f"tcr-fault: injected failure of invocation {k}" not in err.get("details", ""):
            problems.append(f"invocation {k}: details {err.get('details')!r} lack the stderr")
        problems += [f"invocation {k} ({fake.read('failed_argv').strip()}): leak {d}" for d in diff(before, after)]
    print(f"\n[portmap faults] {backend} per invocation ({'shared' if shared else 'fresh'}): {total} invocations "
          f"injected, "
          f"{len(problems)} problems")
    assert not problems, problems
