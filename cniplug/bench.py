"""`cniplug bench`: our plugins against the reference Go plugins (/usr/lib/cni), side by side, in one run.

Both sides get equivalent configs (cniVersion 1.0.0, ipMasq, isGateway, host-local IPAM with its own dataDir) on
their own bridge, network name and subnet. Every measured call is exec'd as a runtime execs it: ours through the
wrappers `cniplug install` writes, the reference binaries directly. Rounds alternate which side goes first, and
every measured ADD gets a fresh namespace and container id (created before the clock starts). The clock covers
the plugin process only: Popen to wait4.

Names carry a slot S (0-f), so that two benches on one machine neither collide nor clean up each other's
objects: namespaces and container ids `cnbS-o-<n>` (ours) / `cnbS-r-<n>` (reference), bridges `cnbSbr-o` /
`cnbSbr-r`, networks `cnbSnet-bo`, `cnbSnet-br` (bridge), `cnbSnet-po`, `cnbSnet-pr` (ptp), subnets inside
10.251.16*S.0/20. The slot is the first one whose lock (/run/cniplug/bench-S.lock) this run can take.
Everything is removed at the end, also on Ctrl-C, SIGTERM or an exception.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import IO, Any

from cniplug import __version__
from cniplug.facts import iptables_words
from cniplug.fastpath import STATS_ENV
from cniplug.plugins.bridge import lock_path
from cniplug.plugins.common import chain_name
from cniplug.plugins.portmap import dn_chain

REFERENCE_DIR = "/usr/lib/cni"
CNI_VERSION = "1.0.0"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TOOLS = ("ip", "iptables", "iptables-save", "ip6tables", "ip6tables-save")  # run_quiet's, looked up on PATH
PREFIX = "cnb0"  # every namespace, link and network name this creates starts with it (claim_slot sets it)
NET_PREFIX = "cnb0net-"
SLOTS = 16
POOL = 4  # workers for untimed work (populating a bridge, cleaning up)
TIMEOUT = 120.0  # seconds for one untimed command
# Peak RSS is read by GNU time, a small parent: a child's ru_maxrss starts at its parent's RSS at fork (the kernel
# keeps the forking process's high-water mark across exec), so measured from this Python process it would read
# this process's RSS whenever the plugin's own peak is smaller (the reference's is).
GNU_TIME = "/usr/bin/time"

# (kind, side) -> (network name, subnet); each /22 holds 1021 containers.
LAYOUT: dict[tuple[str, str], tuple[str, str]] = {}


def layout(slot: int) -> dict[tuple[str, str], tuple[str, str]]:
    """The networks of slot `slot`: four /22 in 10.251.16*slot.0/20."""
    base = 16 * slot
    return {("bridge", "o"): (f"cnb{slot:x}net-bo", f"10.251.{base}.0/22"),
            ("bridge", "r"): (f"cnb{slot:x}net-br", f"10.251.{base + 4}.0/22"),
            ("ptp", "o"): (f"cnb{slot:x}net-po", f"10.251.{base + 8}.0/22"),
            ("ptp", "r"): (f"cnb{slot:x}net-pr", f"10.251.{base + 12}.0/22")}


def claim_slot() -> int | None:
    """Take the first free slot (a flock held until this process exits) and name everything after it;
    None when all SLOTS are taken. Sets PREFIX, NET_PREFIX and LAYOUT."""
    global PREFIX, NET_PREFIX, LAYOUT
    from cniplug import rundir

    directory = rundir.ensure()
    for slot in range(SLOTS):
        fd = os.open(os.path.join(directory, f"bench-{slot:x}.lock"), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _SLOT_FDS.append(fd)  # kept open: the lock lasts as long as this run
        PREFIX, NET_PREFIX, LAYOUT = f"cnb{slot:x}", f"cnb{slot:x}net-", layout(slot)
        return slot
    return None


_SLOT_FDS: list[int] = []
LAYOUT.update(layout(0))
SIDES = ("o", "r")
SIDE_NAME = {"o": "ours", "r": "reference"}


# ---------------------------------------------------------------------------------------------- processes


@dataclass
class Sample:
    """One plugin process: wall time, CPU time and peak RSS as wait4 reports them for the plugin pid."""

    wall: float  # seconds, Popen to wait4
    cpu: float  # seconds, user + sys of the plugin and every descendant it reaped
    maxrss_kb: int  # wait4's ru_maxrss: at least this process's RSS at fork, see GNU_TIME
    rc: int
    stdout: bytes
    stderr: bytes
    helper_rss_kb: int = 0  # through the helper: the peak RSS its child reported for this call
    served: float = 0.0  # through the helper: seconds from its child's accept() to the answer (0: not known)

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def why(self) -> str:
        text = (self.stdout + b" " + self.stderr).decode(errors="replace").strip()
        return f"exit {self.rc}: {text[:400]}"


class Pending:
    """A started plugin process; stdin/stdout/stderr are files, so waiting on the pid alone cannot deadlock."""

    def __init__(self, argv: list[str], env: dict[str, str], stdin: bytes) -> None:
        self._files: list[IO[bytes]] = [tempfile.TemporaryFile() for _ in range(3)]
        fin, fout, ferr = self._files
        fin.write(stdin)
        fin.flush()
        fin.seek(0)
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdin=fin, stdout=fout, stderr=ferr, env=env)

    def wait(self) -> Sample:
        _, status, usage = os.wait4(self.proc.pid, 0)
        wall = time.perf_counter() - self.t0
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        _, fout, ferr = self._files
        fout.seek(0)
        ferr.seek(0)
        err = ferr.read()
        cpu, helper_rss, served = usage.ru_utime + usage.ru_stime, 0, 0.0
        # Through the helper the call runs in the helper's child, which reports its CPU (its own and its
        # commands'), peak RSS and the time from accept to its answer in one stderr line (helper.stats).
        m = re.search(rb"^cniplug-helper-stats cpu_ms=([0-9.]+) maxrss_kb=([0-9]+)(?: serve_ms=([0-9.]+))?\n",
                      err, re.M)
        if m:
            cpu += float(m.group(1)) / 1000
            helper_rss = int(m.group(2))
            served = float(m.group(3)) / 1000 if m.group(3) else 0.0
            err = err[:m.start()] + err[m.end():]
        sample = Sample(wall, cpu, usage.ru_maxrss, self.proc.returncode, fout.read(), err, helper_rss, served)
        for f in self._files:
            f.close()
        return sample


def run_quiet(*argv: str) -> subprocess.CompletedProcess[str]:
    """An untimed helper command (ip, iptables); its failure is the caller's business."""
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=TIMEOUT, check=False)


# ---------------------------------------------------------------------------------------------- statistics


def p90(values: list[float]) -> float:
    """Nearest-rank 90th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


@dataclass(frozen=True)
class Target:
    kind: str  # "ratio": median of per-pair ratios <= limit; "max"/"median": ours, absolute, in the row's unit
    limit: float

    def text(self, unit: str) -> str:
        if self.kind == "ratio":
            return f"ratio <= {self.limit:.1f}"
        return f"{self.kind} <= {self.limit:g} {unit}"


@dataclass
class Row:
    name: str
    unit: str
    ours: list[float]
    ref: list[float] | None  # paired with ours, same length; None for ours-only rows
    target: Target | None = None

    def ratios(self) -> list[float]:
        return [o / r for o, r in zip(self.ours, self.ref or [], strict=False) if r > 0]

    def ratio_pairs(self) -> float | None:
        ratios = self.ratios()
        return statistics.median(ratios) if ratios else None

    def ratio_medians(self) -> float | None:
        if not self.ours or not self.ref or statistics.median(self.ref) <= 0:
            return None
        return statistics.median(self.ours) / statistics.median(self.ref)

    def judged(self) -> float | None:
        if self.target is None or not self.ours:
            return None
        if self.target.kind == "ratio":
            return self.ratio_pairs()
        return max(self.ours) if self.target.kind == "max" else statistics.median(self.ours)

    def met(self) -> bool | None:
        value = self.judged()
        if value is None or self.target is None:
            return None
        return value <= self.target.limit

    def as_json(self) -> dict[str, Any]:
        def side(values: list[float] | None) -> dict[str, Any] | None:
            if not values:
                return None
            return {"median": statistics.median(values), "p90": p90(values), "max": max(values), "samples": values}

        return {"name": self.name, "unit": self.unit, "ours": side(self.ours), "reference": side(self.ref),
                "ratio_median_of_pairs": self.ratio_pairs(), "ratio_of_medians": self.ratio_medians(),
                "target": None if self.target is None else self.target.text(self.unit), "met": self.met()}


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: list[Row]) -> str:
    head = ("metric", "n", "ours med", "ours p90", "ref med", "ref p90", "ratio pairs", "ratio meds", "target", "")
    lines = [head]
    for row in rows:
        o, r = row.ours, row.ref or []
        met = row.met()
        verdict = "" if met is None else ("met" if met else "NOT met")
        target = "-" if row.target is None else row.target.text(row.unit)
        lines.append((f"{row.name} [{row.unit}]", str(len(o)),
                      fmt(statistics.median(o) if o else None), fmt(p90(o) if o else None),
                      fmt(statistics.median(r) if r else None), fmt(p90(r) if r else None),
                      fmt(row.ratio_pairs(), 2), fmt(row.ratio_medians(), 2), target, verdict))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for k, line in enumerate(lines):
        cells = [cell.ljust(widths[i]) if i in (0, 8, 9) else cell.rjust(widths[i]) for i, cell in enumerate(line)]
        out.append("  ".join(cells).rstrip())
        if k == 0:
            out.append("-" * len(out[0]))
    return "\n".join(out)


NOTES = """\
ratio pairs = median over rounds of ours/reference measured back to back (which side goes first alternates);
ratio meds = median(ours) / median(reference). Ratio targets are judged on ratio pairs, peak RSS on ours' max,
dry-run on ours' median. Times are the plugin process only (Popen to wait4), namespaces made before the clock.
CPU = ru_utime + ru_stime from wait4 on the plugin pid: the plugin and every child it reaped (ours: the python
wrapper and its ip/iptables/... children; reference: the Go binary, host-local and iptables).
peak RSS = GNU time's %M for one extra, untimed ADD per round and side (fresh namespace, same config): ru_maxrss
of the plugin as time's wait4 reaps it, i.e. the largest single process among the plugin and the children it
reaped (a max over the tree, not a sum); for ours that is the python process (ip/iptables use less). Not taken
from the timed ADDs: a child's ru_maxrss starts at its parent's RSS at fork, which would be this bench's.
N parallel = N ADDs on the bridge network started at once, each with its own namespace: wall until the last exits.
dry-run = `cniplug-bridge --dry-run` ADD, the whole process (interpreter start, imports, probes, render)."""


# ---------------------------------------------------------------------------------------------- the bench


@dataclass(frozen=True)
class Network:
    side: str  # "o" ours, "r" reference
    kind: str  # "bridge" or "ptp"
    argv: tuple[str, ...]
    cni_path: str
    config: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.config["name"])


@dataclass
class Live:
    """A container that may hold a reservation, a veth and a NAT chain: DEL it before leaving."""

    net: Network
    netns: str  # namespace name (under /run/netns)
    prev: dict[str, Any] | None = None  # the ADD result, passed as prevResult to DEL as libcni does


@dataclass
class Options:
    rounds: int
    populations: list[int]
    parallel: int
    parallel_rounds: int
    json_path: str | None
    helper: bool = False
    auto: bool = False  # install as a node gets it: the first call starts the helper the others use
    only: str = ""  # "portmap": only the portmap rows


def make_networks(bin_dir: Path, data_dir: Path) -> dict[tuple[str, str], Network]:
    nets = {}
    for (kind, side), (name, subnet) in LAYOUT.items():
        ours = side == "o"
        plugin = f"cniplug-{kind}" if ours else kind
        config: dict[str, Any] = {
            "cniVersion": CNI_VERSION, "name": name, "type": plugin, "ipMasq": True,
            "ipam": {"type": "cniplug-host-local" if ours else "host-local", "ranges": [[{"subnet": subnet}]],
                     "dataDir": str(data_dir / name)},
        }
        if kind == "bridge":
            config.update(bridge=f"{PREFIX}br-{side}", isGateway=True)
        argv = (str(bin_dir / plugin),) if ours else (f"{REFERENCE_DIR}/{kind}",)
        nets[kind, side] = Network(side, kind, argv, str(bin_dir) if ours else REFERENCE_DIR, config)
    return nets


class Bench:
    def __init__(self, opts: Options, tmp: Path) -> None:
        self.opts = opts
        self.tmp = tmp
        self.bin_dir = tmp / "bin"
        self.nets = make_networks(self.bin_dir, tmp / "data")
        self.lock = threading.Lock()
        self.counter = dict.fromkeys(SIDES, 0)
        self.live: dict[str, Live] = {}  # container id -> what DEL needs
        self.namespaces: set[str] = set()
        self.used_ids: dict[str, list[str]] = {net.name: [] for net in self.nets.values()}
        self.population: dict[str, list[str]] = {net.name: [] for net in self.nets.values()}
        self.failures: list[str] = []
        self.started = time.monotonic()
        self.helper_socket = ""
        self.helper_proc: subprocess.Popen[bytes] | None = None
        self.portmap_chains_before = portmap_shared_present()

    # -------------------------------------------------------------------------------- plumbing

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {text}", file=sys.stderr, flush=True)

    def fail(self, text: str) -> None:
        with self.lock:
            self.failures.append(text)
        self.say(f"FAILED {text}")

    def install(self) -> None:
        import cniplug

        top = str(Path(cniplug.__file__ or "").resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [top, os.environ.get("PYTHONPATH")]))}
        mode = [] if self.opts.auto else ["--no-auto-helper"]
        subprocess.run([sys.executable, "-m", "cniplug", "install", "--bin-dir", str(self.bin_dir), *mode], env=env,
                       check=True, capture_output=True, timeout=TIMEOUT)

    def new_container(self, net: Network) -> str:
        """A fresh namespace; its name is the container id too. Untimed."""
        with self.lock:
            self.counter[net.side] += 1
            cid = f"{PREFIX}-{net.side}-{self.counter[net.side]}"
            self.namespaces.add(cid)
            self.used_ids[net.name].append(cid)
        proc = run_quiet("ip", "netns", "add", cid)
        if proc.returncode != 0:
            raise RuntimeError(f"ip netns add {cid}: {proc.stderr.strip()}")
        return cid

    def drop_namespace(self, cid: str) -> None:
        run_quiet("ip", "netns", "delete", cid)
        with self.lock:
            self.namespaces.discard(cid)

    def env(self, net: Network, command: str, cid: str, netns: str) -> dict[str, str]:
        env = {"PATH": PATH, "CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": f"/run/netns/{netns}",
               "CNI_IFNAME": "eth0", "CNI_PATH": net.cni_path}
        if self.helper_socket:  # the reference ignores them
            env["CNIPLUG_HELPER_SOCKET"] = self.helper_socket
        if self.helper_socket or self.opts.auto:
            env[STATS_ENV] = "1"
        return env

    def auto_socket(self) -> str:
        """--auto: the helper socket our installed wrappers name (cli.install)."""
        text = (self.bin_dir / "cniplug-bridge").read_text()
        found = re.search(r"'socket': '([^']+)'", text)
        if not found:
            raise RuntimeError("the installed wrapper names no helper socket")
        return found.group(1)

    def first_calls(self) -> list[Row]:
        """--auto: the very first bridge ADD and DEL after install (no helper yet: it starts one), paired with
        the reference's; then wait until that helper listens, for the steady-state rows that follow."""
        cids = {side: self.new_container(self.nets["bridge", side]) for side in SIDES}
        add = {side: self.add(self.nets["bridge", side], cids[side]) for side in SIDES}
        sock = self.auto_socket()
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        else:
            self.fail("no helper was started by the first call")
        dele = {side: self.delete(cids[side]) for side in SIDES if add[side].ok}
        rows = [Row("first ADD after install", "ms", [add["o"].wall * 1000], [add["r"].wall * 1000],
                    Target("ratio", 3.0))]
        if "o" in dele and "r" in dele:
            rows.append(Row("first DEL after install", "ms", [dele["o"].wall * 1000], [dele["r"].wall * 1000], None))
        return rows

    def stop_auto_helper(self) -> None:
        """End the helper our install's first call started (its pid from its status record), if it runs, and
        remove the lock and log files it leaves in /run/cniplug (cli.forget_helpers: only our bin dir's)."""
        from cniplug import cli

        try:
            self.end_auto_helper()
        finally:
            cli.forget_helpers(str(self.bin_dir), keep="")

    def end_auto_helper(self) -> None:
        try:
            info = json.loads(Path(self.auto_socket() + ".json").read_text())
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError, RuntimeError):
            return
        if str(info.get("watch", "")).startswith(str(self.bin_dir)):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            from cniplug.helper import alive

            for _ in range(100):
                if not alive(pid):
                    break
                time.sleep(0.05)

    def start_helper(self) -> None:
        """--helper: run `cniplug helper` on a private socket; our wrappers hand their calls to it."""
        import cniplug

        top = str(Path(cniplug.__file__ or "").resolve().parent.parent)
        self.helper_socket = str(self.tmp / "helper.sock")
        self.helper_proc = subprocess.Popen([sys.executable, "-m", "cniplug", "helper", "--socket", self.helper_socket],
                                            env={**os.environ, "PYTHONPATH": top}, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.exists(self.helper_socket):
                return
            time.sleep(0.05)
        raise RuntimeError("cniplug helper did not start")

    def start(self, net: Network, cid: str) -> Pending:
        with self.lock:
            self.live[cid] = Live(net, cid)  # before the exec: an interrupted ADD is DEL'd too
        return Pending(list(net.argv), self.env(net, "ADD", cid, cid), json.dumps(net.config).encode())

    def finish_add(self, cid: str, sample: Sample) -> Sample:
        if sample.ok:
            try:
                self.live[cid].prev = json.loads(sample.stdout)
            except ValueError:
                self.fail(f"ADD {cid}: stdout is not JSON: {sample.stdout[:200]!r}")
        else:
            self.fail(f"ADD {cid} ({self.live[cid].net.name}): {sample.why()}")
        return sample

    def add(self, net: Network, cid: str) -> Sample:
        return self.finish_add(cid, self.start(net, cid).wait())

    def delete(self, cid: str, *, quiet: bool = False) -> Sample:
        """DEL with prevResult (as libcni does), then remove the namespace (untimed)."""
        entry = self.live[cid]
        config = dict(entry.net.config)
        if entry.prev is not None:
            config["prevResult"] = entry.prev
        sample = Pending(list(entry.net.argv), self.env(entry.net, "DEL", cid, entry.netns),
                         json.dumps(config).encode()).wait()
        if sample.ok:
            with self.lock:
                del self.live[cid]
            self.drop_namespace(cid)
        elif not quiet:
            self.fail(f"DEL {cid} ({entry.net.name}): {sample.why()}")
        return sample

    def pool(self, jobs: Iterable[Callable[[], object]]) -> None:
        with ThreadPoolExecutor(max_workers=POOL) as ex:
            for future in [ex.submit(job) for job in jobs]:
                future.result()

    # -------------------------------------------------------------------------------- measurements

    def populate(self, kind: str, count: int) -> None:
        def one(net: Network) -> None:
            cid = self.new_container(net)
            if self.add(net, cid).ok:
                with self.lock:
                    self.population[net.name].append(cid)

        jobs: list[Callable[[], object]] = []
        for side in SIDES:
            net = self.nets[kind, side]
            missing = count - len(self.population[net.name])
            jobs += [partial(one, net) for _ in range(max(0, missing))]
        if jobs:
            self.say(f"{kind}: populating both bridges to {count} containers (untimed, {len(jobs)} ADDs)")
            self.pool(jobs)

    def depopulate(self, kind: str) -> None:
        cids = [cid for side in SIDES for cid in self.population[self.nets[kind, side].name]]
        if cids:
            self.say(f"{kind}: removing {len(cids)} populating containers (untimed)")
            self.pool([partial(self.delete, cid) for cid in cids])
        for side in SIDES:
            self.population[self.nets[kind, side].name].clear()

    def paired(self, kind: str, label: str) -> tuple[list[tuple[Sample, Sample]], list[tuple[Sample, Sample]]]:
        """`rounds` rounds: each side ADDs into a fresh namespace, then each side DELs it; the order alternates."""
        adds: list[tuple[Sample, Sample]] = []
        dels: list[tuple[Sample, Sample]] = []
        for i in range(self.opts.rounds):
            order = SIDES if i % 2 == 0 else SIDES[::-1]
            cids = {side: self.new_container(self.nets[kind, side]) for side in order}
            add = {side: self.add(self.nets[kind, side], cids[side]) for side in order}
            dele = {side: self.delete(cids[side]) for side in order if add[side].ok}
            if add["o"].ok and add["r"].ok:
                adds.append((add["o"], add["r"]))
                if dele["o"].ok and dele["r"].ok:
                    dels.append((dele["o"], dele["r"]))
            self.say(f"{label} round {i + 1}/{self.opts.rounds}: ADD ours {add['o'].wall * 1000:.0f} ms, "
                     f"ref {add['r'].wall * 1000:.0f} ms; DEL ours "
                     f"{dele['o'].wall * 1000 if 'o' in dele else math.nan:.0f} ms, "
                     f"ref {dele['r'].wall * 1000 if 'r' in dele else math.nan:.0f} ms")
        return adds, dels

    def parallel(self, side: str) -> float:
        """`parallel` ADDs on this side's bridge network started at once: wall until the last one exits."""
        net = self.nets["bridge", side]
        n = self.opts.parallel
        cids: list[str] = []
        self.pool([lambda: cids.append(self.new_container(net)) for _ in range(n)])
        t0 = time.perf_counter()
        pending = [(cid, self.start(net, cid)) for cid in cids]
        samples = [(cid, p.wait()) for cid, p in pending]
        wall = time.perf_counter() - t0
        for cid, sample in samples:
            self.finish_add(cid, sample)
        bad = sum(not s.ok for _, s in samples)
        self.say(f"{n} parallel ADDs, {SIDE_NAME[side]}: {wall:.2f} s" + (f", {bad} FAILED" if bad else ""))
        self.pool([partial(self.delete, cid) for cid, _ in samples])
        return wall

    def rss(self, kind: str) -> tuple[list[float], list[float]]:
        """Peak RSS in MB of `rounds` untimed ADDs per side, each exec'd under GNU time (see GNU_TIME)."""
        out: tuple[list[float], list[float]] = ([], [])
        use_time = os.access(GNU_TIME, os.X_OK)
        if not use_time:
            self.say(f"{GNU_TIME} not found: peak RSS from wait4, an upper bound (includes this process's RSS)")
        for i in range(self.opts.rounds):
            got: dict[str, float] = {}
            for side in SIDES if i % 2 == 0 else SIDES[::-1]:
                net = self.nets[kind, side]
                cid = self.new_container(net)
                report = self.tmp / f"rss-{cid}"
                argv = [GNU_TIME, "-f", "%M", "-o", str(report), *net.argv] if use_time else list(net.argv)
                with self.lock:
                    self.live[cid] = Live(net, cid)
                sample = self.finish_add(cid, Pending(argv, self.env(net, "ADD", cid, cid),
                                                      json.dumps(net.config).encode()).wait())
                if sample.ok:
                    lines = report.read_text().split() if use_time else [str(sample.maxrss_kb)]
                    got[side] = max(int(lines[-1]), sample.helper_rss_kb) / 1024
                self.delete(cid)
            if len(got) == 2:
                out[0].append(got["o"])
                out[1].append(got["r"])
        self.say(f"{kind} peak RSS: ours {max(out[0], default=math.nan):.1f} MB, "
                 f"reference {max(out[1], default=math.nan):.1f} MB")
        return out

    def dry_run(self) -> list[float]:
        net = self.nets["bridge", "o"]
        cid = self.new_container(net)
        walls = []
        try:
            for _ in range(self.opts.rounds):
                sample = Pending([*net.argv, "--dry-run"], self.env(net, "ADD", cid, cid),
                                 json.dumps(net.config).encode()).wait()
                if sample.ok and sample.stdout.strip():
                    walls.append(sample.wall * 1000)
                else:
                    self.fail(f"dry-run ADD: {sample.why()}")
        finally:
            self.drop_namespace(cid)
        self.say(f"dry-run: median {statistics.median(walls) if walls else math.nan:.1f} ms")
        return walls

    # -------------------------------------------------------------------------------- portmap (chained)

    def portmap_config(self, net: Network, prev: dict[str, Any]) -> dict[str, Any]:
        """portmap chained after the side's bridge network: one tcp and one udp host port, snat on. The host
        ports differ per side and slot (both sides share the host's CNI-HOSTPORT-DNAT, and ours refuses a port
        another container has)."""
        port = 20000 + 200 * int(PREFIX[3:], 16) + (0 if net.side == "o" else 100)
        plugin = "cniplug-portmap" if net.side == "o" else "portmap"
        return {"cniVersion": CNI_VERSION, "name": net.name, "type": plugin, "snat": True,
                "capabilities": {"portMappings": True},
                "runtimeConfig": {"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"},
                                                   {"hostPort": port + 1, "containerPort": 53, "protocol": "udp"}]},
                "prevResult": prev}

    def portmap_call(self, net: Network, command: str, cid: str, prev: dict[str, Any]) -> Sample:
        argv = [str(self.bin_dir / "cniplug-portmap")] if net.side == "o" else [f"{REFERENCE_DIR}/portmap"]
        sample = Pending(argv, self.env(net, command, cid, cid),
                         json.dumps(self.portmap_config(net, prev)).encode()).wait()
        if not sample.ok:
            self.fail(f"portmap {command} {cid} ({net.name}): {sample.why()}")
        return sample

    def portmap_paired(self) -> tuple[list[tuple[Sample, Sample]], list[tuple[Sample, Sample]]]:
        """`rounds` rounds: each side attaches a fresh container to its bridge (untimed), then the timed
        portmap ADD and DEL (with prevResult and runtimeConfig, as libcni sends both), then the bridge DEL."""
        adds: list[tuple[Sample, Sample]] = []
        dels: list[tuple[Sample, Sample]] = []
        for i in range(self.opts.rounds):
            order = SIDES if i % 2 == 0 else SIDES[::-1]
            nets = {side: self.nets["bridge", side] for side in order}
            cids = {side: self.new_container(nets[side]) for side in order}
            prev = {side: self.live[cids[side]].prev for side in order if self.add(nets[side], cids[side]).ok}
            add = {side: self.portmap_call(nets[side], "ADD", cids[side], prev[side] or {}) for side in prev}
            dele = {side: self.portmap_call(nets[side], "DEL", cids[side], prev[side] or {}) for side in add}
            for side in order:
                if cids[side] in self.live:
                    self.delete(cids[side])
            if all(side in add and add[side].ok for side in SIDES):
                adds.append((add["o"], add["r"]))
                if all(dele[side].ok for side in SIDES):
                    dels.append((dele["o"], dele["r"]))
            if len(add) == 2 and len(dele) == 2:
                self.say(f"portmap round {i + 1}/{self.opts.rounds}: ADD ours {add['o'].wall * 1000:.0f} ms, "
                         f"ref {add['r'].wall * 1000:.0f} ms; DEL ours {dele['o'].wall * 1000:.0f} ms, "
                         f"ref {dele['r'].wall * 1000:.0f} ms")
        return adds, dels

    def portmap_rows(self) -> list[Row]:
        adds, dels = self.portmap_paired()
        ms = ([o.wall * 1000 for o, _ in adds], [r.wall * 1000 for _, r in adds])
        ms_del = ([o.wall * 1000 for o, _ in dels], [r.wall * 1000 for _, r in dels])
        return [Row("portmap ADD", "ms", *ms, self.target("ADD")),
                Row("portmap DEL", "ms", *ms_del, self.target("DEL"))]

    @staticmethod
    def split(pairs: list[tuple[Sample, Sample]], label: str) -> list[Row]:
        """Through a helper: where our ADD's wall time went, from what the helper's child reports. "in the
        helper's child" is accept to answer (the plugin's own work and its commands); "client + socket" is
        the rest (the executable's interpreter start, connecting, sending, reading). [] standalone."""
        served = [o for o, _ in pairs if o.served > 0]
        if not served:
            return []
        return [Row(f"{label}: in the helper's child", "ms", [o.served * 1000 for o in served], None, None),
                Row(f"{label}: client + socket", "ms", [(o.wall - o.served) * 1000 for o in served], None, None)]

    def target(self, what: str, population: int = 0) -> Target | None:
        """Issue #14's targets (ours/reference): through a helper (--helper, --auto) ADD <= 0.8, and <= 0.6
        with 200 containers on the bridge, DEL, parallel ADDs and CPU per ADD <= 0.8; without one, ADD <= 2.0
        and nothing else. Rows they do not name (ADD @50, ...) follow the rule for their verb."""
        if not (self.opts.helper or self.opts.auto):
            return Target("ratio", 2.0) if what == "ADD" else None
        return Target("ratio", 0.6 if what == "ADD" and population >= 200 else 0.8)

    def run(self) -> list[Row]:
        self.say(f"installing our wrappers into {self.bin_dir}")
        self.install()
        if self.opts.helper:
            self.start_helper()
        if self.opts.only == "portmap":
            return self.portmap_rows()
        rows: list[Row] = self.first_calls() if self.opts.auto else []
        cpu_rows: list[Row] = []
        rss: dict[str, tuple[list[float], list[float]]] = {}

        def ms(pairs: list[tuple[Sample, Sample]], attr: str = "wall") -> tuple[list[float], list[float]]:
            return ([getattr(o, attr) * 1000 for o, _ in pairs], [getattr(r, attr) * 1000 for _, r in pairs])

        dry: list[float] = []
        split_rows: list[Row] = []
        par: tuple[list[float], list[float]] = ([], [])
        for k, population in enumerate(self.opts.populations):
            self.populate("bridge", population)
            adds, dels = self.paired("bridge", f"bridge @{population}")
            rows.append(Row(f"bridge ADD @{population}", "ms", *ms(adds), self.target("ADD", population)))
            rows.append(Row(f"bridge DEL @{population}", "ms", *ms(dels), self.target("DEL")))
            cpu_rows.append(Row(f"CPU/ADD bridge @{population}", "ms", *ms(adds, "cpu"), self.target("CPU")))
            if k == 0:
                split_rows = self.split(adds, f"bridge ADD @{population}")
                dry = self.dry_run()
                rss["bridge"] = self.rss("bridge")
                for i in range(self.opts.parallel_rounds):
                    for side in SIDES if i % 2 == 0 else SIDES[::-1]:
                        par[SIDES.index(side)].append(self.parallel(side))
        self.depopulate("bridge")
        adds, dels = self.paired("ptp", "ptp")
        rss["ptp"] = self.rss("ptp")
        rows.append(Row("ptp ADD", "ms", *ms(adds), self.target("ADD")))
        rows.append(Row("ptp DEL", "ms", *ms(dels), self.target("DEL")))
        cpu_rows.append(Row("CPU/ADD ptp", "ms", *ms(adds, "cpu"), self.target("CPU")))
        rows += cpu_rows + split_rows + self.split(adds, "ptp ADD")
        for kind, (ours, ref) in rss.items():
            rows.append(Row(f"peak RSS {kind} ADD", "MB", ours, ref, Target("max", 40.0)))
        rows.append(Row(f"{self.opts.parallel} parallel ADD wall", "s", par[0], par[1], self.target("parallel")))
        rows.append(Row("dry-run bridge ADD (ours)", "ms", dry, None, Target("median", 50.0)))
        rows += self.portmap_rows()
        return rows

    # -------------------------------------------------------------------------------- cleanup

    def cleanup(self) -> list[str]:
        """DEL every container still alive, then remove namespaces, bridges and NAT chains; return leftovers."""
        if self.opts.auto:
            self.stop_auto_helper()
        if self.helper_proc is not None:  # our own DELs then run standalone
            self.helper_proc.terminate()
            self.helper_proc.wait(timeout=TIMEOUT)
            self.helper_proc = None
            self.helper_socket = ""
        if self.live:
            self.say(f"cleanup: DEL {len(self.live)} containers")
            self.pool([partial(self.delete, cid, quiet=True) for cid in list(self.live)])
        for name in sorted(self.namespaces | set(our_namespaces())):
            run_quiet("ip", "netns", "delete", name)
        for link in sorted({f"{PREFIX}br-{side}" for side in SIDES} | set(our_links())):
            if Path(f"/sys/class/net/{link}").exists():
                run_quiet("ip", "link", "delete", link)
        Path(lock_path(f"{PREFIX}br-o")).unlink(missing_ok=True)  # our plugin's lock for our bridge
        remove_chains(self.chains())
        if not self.portmap_chains_before:
            remove_portmap_shared()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return leftovers(self.chains())

    def chains(self) -> set[str]:
        return ({chain_name(net, cid) for net, cids in self.used_ids.items() for cid in cids}
                | {dn_chain(net, cid) for net, cids in self.used_ids.items() for cid in cids})


def our_namespaces() -> list[str]:
    out = run_quiet("ip", "netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"{PREFIX}-")]


def our_links() -> list[str]:
    out = run_quiet("ip", "-j", "link", "show").stdout
    links = json.loads(out) if out.strip() else []
    return [str(link["ifname"]) for link in links if str(link.get("ifname", "")).startswith(PREFIX)]


def is_ours(words: list[str], chains: set[str]) -> bool:
    """A nat rule that belongs to one of our networks: jumps to a chain of ours or carries our comment."""
    if words[-2:-1] == ["-j"] and words[-1] in chains:
        return True
    if "--comment" in words:
        return f'name: "{NET_PREFIX}' in words[words.index("--comment") + 1]
    return False


def remove_chains(chains: set[str]) -> None:
    """Remove our NAT chains (known names, or named by our comments) and the POSTROUTING jumps to them."""
    for tool in ("iptables", "ip6tables"):
        lines = run_quiet(f"{tool}-save", "-t", "nat").stdout.splitlines()
        existing = {line[1:].split()[0] for line in lines if line.startswith(":")}
        doomed = chains & existing
        rules = [iptables_words(line) for line in lines if line.startswith("-A ")]
        for words in rules:
            if words[-2:-1] == ["-j"] and words[-1].startswith("CNI-") and is_ours(words, chains):
                doomed.add(words[-1])
        for words in rules:
            if words[1] in ("POSTROUTING", "CNI-HOSTPORT-DNAT") and is_ours(words, doomed):
                run_quiet(tool, "-w", "-t", "nat", "-D", *words[1:])
        for chain in sorted(doomed):
            run_quiet(tool, "-w", "-t", "nat", "-F", chain)
            run_quiet(tool, "-w", "-t", "nat", "-X", chain)


PORTMAP_SHARED = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK")


def portmap_shared_present() -> bool:
    """Does the host have portmap's shared chains already (another user of the host made them)?"""
    return any(f":{PORTMAP_SHARED[0]} " in run_quiet(f"{tool}-save", "-t", "nat").stdout
               for tool in ("iptables", "ip6tables"))


def remove_portmap_shared() -> None:
    """The shared CNI-HOSTPORT-* chains the bench's portmap ADDs made (both plugins leave them, by design), and
    their jumps; only while CNI-HOSTPORT-DNAT sends nothing anywhere (no other user appeared meanwhile)."""
    for tool in ("iptables", "ip6tables"):
        lines = run_quiet(f"{tool}-save", "-t", "nat").stdout.splitlines()
        if any(line.startswith(f"-A {PORTMAP_SHARED[0]} ") for line in lines):
            continue
        for line in lines:
            words = iptables_words(line) if line.startswith("-A ") else []
            if words and words[1] in ("PREROUTING", "OUTPUT", "POSTROUTING") and words[-1] in PORTMAP_SHARED:
                run_quiet(tool, "-w", "-t", "nat", "-D", *words[1:])
        for chain in PORTMAP_SHARED:
            run_quiet(tool, "-w", "-t", "nat", "-F", chain)
            run_quiet(tool, "-w", "-t", "nat", "-X", chain)


def leftovers(chains: set[str]) -> list[str]:
    found = [f"namespace {n}" for n in our_namespaces()] + [f"link {n}" for n in our_links()]
    for tool in ("iptables", "ip6tables"):
        for line in run_quiet(f"{tool}-save", "-t", "nat").stdout.splitlines():
            name = line[1:].split()[0] if line.startswith(":") else ""
            if name in chains or NET_PREFIX in line:
                found.append(f"{tool}: {line}")
    return found


# ---------------------------------------------------------------------------------------------- entry point


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="cniplug bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="measured ADD/DEL pairs per case (default 20)")
    parser.add_argument("--short", action="store_true",
                        help="CI mode: 3 rounds, populations 0 and 5, 5 parallel ADDs (numbers are not meaningful)")
    parser.add_argument("--json", metavar="FILE", help="also write every row and sample as JSON")
    parser.add_argument("--debug", action="store_true", help="on an error, show the Python traceback too")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--helper", action="store_true",
                      help="measure ours with a warm `cniplug helper` started by hand (the systemd unit's way)")
    mode.add_argument("--auto", action="store_true",
                      help="measure ours installed as by default: the first call (timed) starts the helper the "
                           "later ones use (default: installed with --no-auto-helper, every call standalone)")
    parser.add_argument("--only", choices=("portmap",), default="",
                        help="measure only these rows (portmap: its ADD and DEL, chained after the bridge)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.short:
        return Options(rounds=3, populations=[0, 5], parallel=5, parallel_rounds=1, json_path=args.json,
                       helper=args.helper, auto=args.auto, only=args.only)
    return Options(rounds=args.rounds, populations=[0, 50, 200], parallel=50, parallel_rounds=3,
                   json_path=args.json, helper=args.helper, auto=args.auto, only=args.only)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if os.geteuid() != 0:
        print("cniplug bench needs root (it creates namespaces, bridges and NAT rules)", file=sys.stderr)
        return 2
    tools = [tool for tool in TOOLS if shutil.which(tool) is None]
    if tools:
        print(f"cniplug bench: command not found on PATH: {', '.join(tools)}", file=sys.stderr)
        return 2
    needed = [f"{REFERENCE_DIR}/{kind}" for kind in ("bridge", "ptp", "host-local", "portmap")]
    missing = [path for path in needed if not os.access(path, os.X_OK)]
    if missing:
        print(f"cniplug bench needs the reference plugins: missing {', '.join(missing)}", file=sys.stderr)
        return 2
    if claim_slot() is None:
        print(f"cniplug bench: {SLOTS} benches are running already", file=sys.stderr)
        return 2
    stale = our_namespaces() + our_links()
    if stale:
        print(f"cniplug bench: leftovers of an earlier run, remove them first: {' '.join(stale)}", file=sys.stderr)
        return 2
    main_thread = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    bench = Bench(opts, Path(tempfile.mkdtemp(prefix="cniplug-bench-")))
    rows: list[Row] = []
    interrupted = False
    try:
        rows = bench.run()
    except KeyboardInterrupt:
        interrupted = True
        bench.say("interrupted: cleaning up")
    finally:
        if main_thread:  # a second SIGTERM must not cut the cleanup short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        left = bench.cleanup()
        if main_thread:
            signal.signal(signal.SIGTERM, old_term)
    if left:
        print("cniplug bench: could not remove:\n  " + "\n  ".join(left), file=sys.stderr)
    if interrupted:
        return 130
    pops = "/".join(map(str, opts.populations))
    print(f"cniplug {__version__} bench: {opts.rounds} rounds, bridge populations {pops}, {opts.parallel} parallel "
          f"x{opts.parallel_rounds}; {os.cpu_count()} CPUs, Linux {platform.release()}, Python "
          f"{platform.python_version()}")
    mode = ("with a warm cniplug helper started by hand" if opts.helper else
            "as installed by default: the first call starts a helper" if opts.auto else "standalone, no helper")
    print(f"ours: {bench.bin_dir}/cniplug-<kind> (installed wrappers, {mode}) + cniplug-host-local; reference: "
          f"{REFERENCE_DIR}/<kind> + host-local; cniVersion {CNI_VERSION}\n")
    print(table(rows))
    print("\n" + NOTES)
    if opts.helper or opts.auto:
        print("\nThrough a helper the call runs in a child of the helper, which reports its CPU (its own and its\n"
              "commands') and peak RSS back (cniplug-helper-stats): CPU = client + that child; peak RSS = the larger\n"
              "of the two processes. Not counted: the helper's fork of the child (under 1 ms of CPU).")
    if bench.failures:
        print(f"\n{len(bench.failures)} plugin calls FAILED (excluded from the numbers); first: {bench.failures[0]}")
    if opts.json_path:
        doc = {"version": __version__, "rounds": opts.rounds, "populations": opts.populations,
               "parallel": opts.parallel, "parallel_rounds": opts.parallel_rounds, "cpus": os.cpu_count(),
               "kernel": platform.release(), "rows": [row.as_json() for row in rows], "failures": bench.failures,
               "leftovers": left, "container_ids": bench.used_ids, "workdir": str(bench.tmp), "notes": NOTES}
        Path(opts.json_path).write_text(json.dumps(doc, indent=2) + "\n")
    bench.say("done")
    return 1 if bench.failures or left else 0


if __name__ == "__main__":
    sys.exit(main())
