"""Partial batches against the real kernel (issue #16): line k of an `ip -batch` or `iptables-restore` fails.

A wrapper `ip` / `iptables-restore` / `ip6tables-restore` first in the plugin's PATH (nsenter finds the
wrapper `ip` through PATH too) counts batch invocations. For batch b it rewrites line k of the input into
a line the real tool refuses and hands the whole input to the real tool, which therefore really runs lines
1..k-1 and stops at k:

* ip, named:    `link set dev tpbnosuch0 up`: the kernel refuses, ip prints `Command failed -:k`;
* ip, nameless: `route add ... table tpbnosuch`: an argument error; ip exits naming no line;
* restore, refused: `-A TPB-NOSUCH -j ACCEPT`: "line N failed" (atomic: nothing applied);
* restore, parse:   `-A <chain> -j TPBNOSUCHTARGET`: "Error occurred at line: N".

For every batch of the ADD and every line k of it, the host namespace and the container namespace must be
as before (links with details and MAC assignment, addresses, routes, iptables, forwarding and the bridge's
accept_ra sysctls, IPAM reservations), the error must carry the real tool's message, and name line k's step
when the tool names it.

Scenarios: bridge creating its bridge; bridge on an existing bridge made by hand whose MAC was never set
(so the ADD ends with the MAC pin); ptp with a /proc/PID/ns/net path (`nsenter --net=... ip -batch -`).
Everything is named `tpb` (namespaces tcp-tpb-*, bridges tpbbr*, networks tpbnet*), addresses from
10.249.0.0/16 and fd10:249::/32; the plugin's host is a private namespace (see tcr_netstate).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tcr_netstate import REPO, diff, leftovers, remove_lock_files, run_in_host, setup_host, snapshot

from cniplug.runner import SYSTEM_PATH

pytestmark = pytest.mark.root

WRAPPER = r"""#!/bin/bash
# tpb batch wrapper: logs every batch; rewrites line $line of batch $fail into $bad, then runs the real tool.
d={dir}
real={real}
batch=0
case "{name}" in *-restore) batch=1 ;; esac
for a in "$@"; do [ "$a" = -batch ] && batch=1; done
[ $batch = 1 ] || exec "$real" "$@"
exec 8>>"$d/lock"
flock 8
n=$(( $(cat "$d/count" 2>/dev/null || echo 0) + 1 ))
echo $n > "$d/count"
exec 8>&-
cat > "$d/batch.$n"
printf '%s\n' "{name} $*" > "$d/argv.$n"
read -r fail line bad < "$d/fault"
if [ "$n" = "$fail" ]; then
  awk -v k="$line" -v bad="$bad" 'NR == k {{ print bad; next }} {{ print }}' "$d/batch.$n" > "$d/input.$n"
  exec "$real" "$@" < "$d/input.$n"
fi
exec "$real" "$@" < "$d/batch.$n"
"""

NAMED = "link set dev tpbnosuch0 up"
NAMELESS = "route add 10.249.255.0/24 dev lo table tpbnosuch"
NAMES_NO_LINE = ("nameless", "parse")  # ip's argument error; restore names COMMIT for an unknown target
MODES: dict[str, list[tuple[str, str]]] = {  # tool -> (mode, what the real tool then says)
    "ip": [("named", 'Cannot find device "tpbnosuch0"'), ("nameless", '"table" value is invalid')],
    "restore": [("refused", "failed"), ("parse", "Error occurred at line")],
}


class BatchFaults:
    """The wrapper directory: `arm(b, line, bad)` makes line `line` of batch `b` read `bad`."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        for name in ("ip", "iptables-restore", "ip6tables-restore"):
            real = shutil.which(name, path=SYSTEM_PATH)
            assert real, f"{name} not installed"
            (directory / name).write_text(WRAPPER.format(dir=shlex.quote(str(directory)), real=shlex.quote(real),
                                                         name=name))
            (directory / name).chmod(0o755)
        self.arm(0, 0, "")

    def arm(self, batch: int, line: int, bad: str) -> None:
        for f in self.dir.glob("[bcai]*.*"):
            f.unlink()
        (self.dir / "count").unlink(missing_ok=True)
        (self.dir / "fault").write_text(f"{batch} {line} {bad}\n")

    def batches(self) -> list[tuple[list[str], list[str]]]:
        """(argv, input lines) of every batch of the last run, in order."""
        count = int((self.dir / "count").read_text()) if (self.dir / "count").exists() else 0
        return [(shlex.split((self.dir / f"argv.{n}").read_text()),
                 (self.dir / f"batch.{n}").read_text().splitlines()) for n in range(1, count + 1)]


@dataclass
class Scenario:
    name: str
    slot: int
    plugin: str
    foreign_bridge: bool = False  # an existing bridge made by hand: up, no address, MAC never set
    proc_netns: bool = False

    @property
    def bridge(self) -> str:
        return f"tpbbr{self.slot}" if self.plugin == "cniplug-bridge" else ""

    def config(self, data_dir: Path) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "cniVersion": "1.0.0", "name": f"tpbnet{self.slot}", "type": self.plugin, "ipMasq": True,
            "ipam": {"type": "cniplug-host-local", "dataDir": str(data_dir),
                     "ranges": [[{"subnet": f"10.249.{self.slot}.0/24"}], [{"subnet": f"fd10:249:{self.slot}::/64"}]],
                     "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}}
        if self.bridge:
            conf.update(bridge=self.bridge, isGateway=True)
        return conf


SCENARIOS = [
    Scenario("bridge-new", 1, "cniplug-bridge"),
    Scenario("bridge-foreign-unpinned", 2, "cniplug-bridge", foreign_bridge=True),
    Scenario("ptp-proc-netns", 3, "cniplug-ptp", proc_netns=True),
]


@dataclass
class Stage:
    scenario: Scenario
    host: str
    netns: str
    data_dir: Path
    config: dict[str, Any] = field(default_factory=dict)
    baseline: list[str] = field(default_factory=list)  # leftovers() before any ADD (a foreign bridge's port)

    def snap(self) -> dict[str, Any]:
        return snapshot(self.host, [self.netns], self.data_dir, self.scenario.bridge)

    def add(self, fake: BatchFaults, cid: str = "tpbc1") -> Any:
        return run_in_host(self.host, self.scenario.plugin, "ADD", self.config, self.netns, cid,
                           path_prefix=str(fake.dir))


def in_ns(host: str, script: str) -> None:
    subprocess.run(["ip", "netns", "exec", host, "bash", "-c", script], check=True, capture_output=True)


def settle(host: str, bridge: str) -> None:
    """Wait until the kernel has brought the bridge's carrier up and given it its IPv6 link-local address
    (asynchronous: the port's carrier, then addrconf), so that the "before" state is the steady one."""
    deadline = time.monotonic() + 10
    while True:
        out = subprocess.run(["ip", "-n", host, "-j", "addr", "show", "dev", bridge], capture_output=True,
                             text=True).stdout
        link = json.loads(out)[0] if out.strip() else {}
        if link.get("operstate") == "UP" and any(a.get("scope") == "link" for a in link.get("addr_info", [])):
            return
        assert time.monotonic() < deadline, f"bridge {bridge} never settled: {link}"
        time.sleep(0.05)


@pytest.fixture
def stage(make_netns: Callable[[str], str], tmp_path: Path) -> Iterator[Callable[[Scenario, str], Stage]]:
    sleepers: list[subprocess.Popen[bytes]] = []
    bridges: list[str] = []

    def make(sc: Scenario, tag: str) -> Stage:
        host = Path(make_netns(f"tpb-h{sc.slot}{tag}")).name
        setup_host(host)
        netns = make_netns(f"tpb-c{sc.slot}{tag}")
        if sc.proc_netns:
            sleeper = subprocess.Popen(["ip", "netns", "exec", Path(netns).name, "sleep", "3600"])
            sleepers.append(sleeper)
            netns = f"/proc/{sleeper.pid}/ns/net"
            deadline = time.monotonic() + 5  # until ip netns exec has entered the namespace
            while os.stat(netns).st_ino == os.stat("/proc/self/ns/net").st_ino:
                assert time.monotonic() < deadline, "sleeper never entered its namespace"
                time.sleep(0.01)
        if sc.bridge:
            bridges.append(sc.bridge)
        if sc.foreign_bridge:
            # with a port of its own, as a bridge in use has (a bridge whose only port leaves takes MAC 0 and
            # loses its carrier: kernel behaviour no undo could reverse)
            in_ns(host, f"ip link add {sc.bridge} type bridge && ip link add tpbp{sc.slot} type veth peer name "
                        f"tpbq{sc.slot} && ip link set tpbp{sc.slot} master {sc.bridge} && ip link set tpbp{sc.slot} "
                        f"up && ip link set tpbq{sc.slot} up && ip link set {sc.bridge} up")
            settle(host, sc.bridge)
        st = Stage(sc, host, netns, tmp_path / f"ipam-{tag}")
        st.config = sc.config(st.data_dir)
        st.baseline = leftovers(host, [netns], st.data_dir, sc.bridge)
        return st

    yield make
    for s in sleepers:
        s.kill()
        s.wait()
    remove_lock_files(bridges)


def bad_line(tool: str, mode: str, line: str) -> str:
    if mode == "named":
        return NAMED
    if mode == "nameless":
        return NAMELESS
    if mode == "refused":
        return "-A TPB-NOSUCH -j ACCEPT"
    return f"-A {line.split()[1]} -j TPBNOSUCHTARGET"  # parse: a rule whose target does not exist


def step_text(argv: list[str], line: str) -> str:
    """The script step a batch line came from, as the runner's error names it (ending with it: a batch that
    `nsenter --net=PATH ip` started reaches the wrapper as `ip -batch -`)."""
    if argv[0].endswith("-restore"):
        return " ".join([argv[0].removesuffix("-restore"), "-w", "-t", "nat", *shlex.split(line)])
    return " ".join(["ip", *argv[1: argv.index("-batch")], *line.split()])


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_every_line_of_every_batch_fails_and_nothing_stays(sc: Scenario, stage: Callable[[Scenario, str], Stage],
                                                           tmp_path: Path) -> None:
    fake = BatchFaults(tmp_path / "bin")
    probe = stage(sc, "r")  # a throwaway host: the batches of a successful ADD
    r = probe.add(fake)
    assert r.rc == 0, r.stdout + r.stderr
    batches = fake.batches()
    tools = {argv[0] for argv, _ in batches}
    assert {"ip", "iptables-restore", "ip6tables-restore"} <= tools, batches
    if sc.proc_netns:
        assert any(argv[0] == "nsenter" or "-n" not in argv for argv, _ in batches)
    st = stage(sc, "f")
    problems: list[str] = []
    cases = 0
    for b, (argv, lines) in enumerate(batches, start=1):
        restore = argv[0].endswith("-restore")
        rules = lines[1:-1] if restore else lines  # restore input: '*nat', rules, 'COMMIT'
        for k, line in enumerate(rules, start=1):
            for mode, says in MODES["restore" if restore else "ip"]:
                before = st.snap()
                fake.arm(b, k + 1 if restore else k, bad_line(argv[0], mode, line))
                r = st.add(fake)
                after = st.snap()
                cases += 1
                label = f"batch {b} ({' '.join(argv)}) line {k} ({line}) {mode}"
                ran = fake.batches()
                if len(ran) < b or ran[b - 1][0][0] != argv[0] or len(ran[b - 1][1]) != len(lines):
                    problems.append(f"{label}: the faulty batch never ran ({len(ran)} batches)")
                    continue
                this_line = ran[b - 1][1][k if restore else k - 1]  # names and addresses differ between runs
                try:
                    err = json.loads(r.stdout)
                except ValueError:
                    err = {}
                if r.rc != 1 or err.get("code") != 999:
                    problems.append(f"{label}: rc {r.rc} {r.stdout[:300]}")
                elif says not in err.get("details", ""):
                    problems.append(f"{label}: details lack the real error {says!r}: {err.get('details')!r}")
                elif mode not in NAMES_NO_LINE and not (
                        err["msg"].startswith("step ") and err["msg"].endswith(step_text(ran[b - 1][0], this_line))):
                    problems.append(f"{label}: msg {err['msg']!r} does not name line {k}")
                elif mode in NAMES_NO_LINE and not err["msg"].startswith("one of steps"):
                    problems.append(f"{label}: msg {err['msg']!r}")
                problems += [f"{label}: leak {d}" for d in diff(before, after)]
    print(f"\n[partial-batch] {sc.name}: {len(batches)} batches, {cases} cases, {len(problems)} problems")
    for p in problems:
        print("   ", p[:1200])
    assert not problems, problems[:5]
    assert leftovers(st.host, [st.netns], st.data_dir, sc.bridge) == st.baseline


PROBE = """
import json, sys
from cniplug import facts
chain = sys.argv[1]
print(json.dumps([facts.iptables_rules(4, "nat", chain), facts.iptables_rules(6, "nat", chain),
                  facts.iptables_rules(4, "nat", "TPB-NONE"), facts.iptables_rules(6, "nat", "TPB-NONE"),
                  facts.ip_json(["ip"], "addr", "show", "dev", "tpbnone0")]))
"""


def test_probes_tell_missing_from_present_on_this_kernel(make_netns: Callable[[str], str]) -> None:
    """The 'not there' texts facts relies on are the ones this machine's iptables and ip print."""
    host = Path(make_netns("tpb-probe")).name
    setup_host(host)
    in_ns(host, "iptables -w -t nat -N TPB-X && ip6tables -w -t nat -N TPB-X")
    proc = subprocess.run(["ip", "netns", "exec", host, sys.executable, "-c", PROBE, "TPB-X"], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [["-N TPB-X"], ["-N TPB-X"], [], [], []]
