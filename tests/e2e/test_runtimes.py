"""End to end with real container runtimes: podman (Debian 12's 4.3, CNI backend) and containerd's CRI plugin
(Debian 12's 1.6) run containers on network config lists made of cniplug plugins, publish a port through the
portmap plugin, and must leave nothing of ours behind once the container (pod) is removed.

Isolation from the machine's own runtimes (nothing under /etc is written; their config files there are not read):
- podman: CONTAINERS_CONF, CONTAINERS_STORAGE_CONF and CONTAINERS_REGISTRIES_CONF name files in a private
  temporary directory, which set the CNI network backend, the network config dir, the CNI bin dir, graph
  root, run root, tmp dir, volume and static dirs, file locks and the events log.
- containerd: its own config, root, state dir, gRPC/ttrpc sockets, opt dir and runc root in a private
  temporary directory; driven over the CRI gRPC API with stubs generated at test time from the CRI
  api.proto that contrib/fetch-cri-proto.sh takes from Debian's containerd source (there is no crictl in
  Debian). CRI_PROTO overrides where that file is.
- CNI: a private bin dir made by `cniplug install --bin-dir` (with the portmap plugin, PORTMAP_TYPE below)
  and, for containerd's own loopback network (type "loopback", added by the CRI plugin to every pod), a copy
  of the installed cniplug-loopback named `loopback`. IPAM keeps its reservations in a private dataDir.
  Every test runs with two installs (CniBin): standalone, and the default one whose first call starts a
  helper that serves the later calls; that helper is ended by pid afterwards.
- Images: there is no registry here. The image is built locally: one layer with Debian's static busybox and
  /www/index.html, imported with `podman import` (a rootfs tar) and `ctr images import` (a docker-archive
  tar, also the CRI sandbox image: its default command sleeps).

What the runtimes themselves leave outside the temporary directory, and is removed here when it was not
there before: libcni's result cache (/var/lib/cni/results/<network>-<id>-eth0), podman's network namespace
(/run/netns/netns-<uuid>) and runc state (/run/runc), podman's blob-info cache (/var/lib/containers/cache),
containerd's shim socket dir (/run/containerd/s, fixed in containerd 1.6), the cgroups both create
(libpod_parent, k8s.io), and the chains the portmap plugin shares between all containers.

Two settings work around this machine, not cniplug: root here lacks CAP_SYS_RESOURCE (capability bounding set),
so podman's default RLIMIT_NOFILE/NPROC for containers (raised above ours) and containerd's oom_score_adj of
-998 for sandboxes cannot be set; the containers get lower limits (podman `default_ulimits`, containerd
`restrict_oom_score_adj`). And crun 1.8 refuses this machine's hybrid cgroup v1/v2 layout, so podman uses runc.

Names: networks te2net<N>, bridges te2br<N>, subnets 10.237.<N>.0/28, temporary dirs /tmp/te2-*, image
localhost/te2-busybox:1, podman container te2c<N>, pod te2pod<N>.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from cniplug.plugins.bridge import lock_path

pytestmark = pytest.mark.root

# The plugin that publishes ports (`-p`, hostPort): cniplug's own, installed by `cniplug install`, so every
# list here is made of cniplug plugins only. "portmap" (the reference, copied from /usr/lib/cni) runs the same
# tests with it.
PORTMAP_TYPE = "cniplug-portmap"

REPO = Path(__file__).resolve().parents[2]
REFERENCE_DIR = Path("/usr/lib/cni")
LIBCNI_CACHE = Path("/var/lib/cni/results")
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static: one static executable, runs in an empty rootfs
IMAGE = "localhost/te2-busybox:1"
PAGE = "te2 hello from a container\n"
IPAM_KEEP = {"lock"}  # files in a host-local network dir that are not reservations (plus last_reserved_ip.*)
TIMEOUT = 90  # seconds for one runtime command or RPC; nothing here may hang
# Chains the portmap plugin shares between all containers and never removes (reference naming).
SHARED_CHAINS = {"nat": ["CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"]}
# Host paths the runtimes create outside their configured dirs (see the module docstring); each is removed
# afterwards if it did not exist before this module and is then empty (files: only those named here).
RUNTIME_DIRS = [Path("/run/runc"), Path("/run/crun"), Path("/run/containerd/s"), Path("/run/containerd/runc"),
                Path("/run/containerd"), Path("/var/lib/containers/cache"), Path("/var/lib/containers")]
RUNTIME_FILES = [Path("/var/lib/containers/cache/blob-info-cache-v1.boltdb")]
CGROUP_PARENTS = ("libpod_parent", "k8s.io")


def missing(what: str) -> None:
    """Fail in CI (CNIPLUG_REQUIRE_ROOT_TESTS set), skip elsewhere."""
    if os.environ.get("CNIPLUG_REQUIRE_ROOT_TESTS"):
        pytest.fail(what, pytrace=False)
    pytest.skip(what)


def run(argv: list[str], *, env: dict[str, str] | None = None, check: bool = True,
        timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run argv, killed after `timeout` s. Output goes through files, not pipes: a runtime's daemonized
    child (conmon, a shim) that kept a pipe open would make waiting for its end hang past the timeout."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            rc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                timeout=timeout).returncode
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{shlex.join(argv)} did not finish in {timeout:.0f} s") from exc
        out.seek(0)
        err.seek(0)
        proc = subprocess.CompletedProcess(argv, rc, out.read().decode(errors="replace"),
                                           err.read().decode(errors="replace"))
    if check and proc.returncode != 0:
        raise AssertionError(f"{shlex.join(argv)} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


def sha512hex(text: str) -> str:
    return hashlib.sha512(text.encode()).hexdigest()


def subnet(n: int) -> str:
    return f"10.237.{n}.0/28"


def free_port() -> int:
    """A TCP port nothing listens on now, for the host side of a port mapping."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(url: str, deadline: float = 20.0) -> str:
    """GET url (no proxy), retried until the server answers or `deadline` seconds passed."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    end = time.monotonic() + deadline
    while True:
        try:
            with opener.open(url, timeout=3) as response:
                return str(response.read().decode())
        except OSError as err:
            if time.monotonic() > end:
                raise AssertionError(f"GET {url} failed for {deadline:.0f} s: {err}") from err
            time.sleep(0.2)


# ---- image --------------------------------------------------------------------------------------------

def _tar(members: list[tuple[str, str, bytes | str, int]]) -> bytes:
    """members: (name, "dir" | "file" | "symlink", content or link target, mode) -> an uncompressed tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data, mode in members:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = str(data)
                tar.addfile(info)
            else:
                assert isinstance(data, bytes)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def rootfs_tar() -> bytes:
    """The image's only layer: busybox (as /bin/busybox and /bin/sh) and the page httpd serves from /www."""
    return _tar([("bin", "dir", b"", 0o755), ("bin/busybox", "file", BUSYBOX.read_bytes(), 0o755),
                 ("bin/sh", "symlink", "busybox", 0o777), ("www", "dir", b"", 0o755),
                 ("www/index.html", "file", PAGE.encode(), 0o644)])


def docker_archive(ref: str) -> bytes:
    """A docker-archive tar of the rootfs layer, tagged `ref`; its default command sleeps (a pause image)."""
    layer = rootfs_tar()
    layer_id = hashlib.sha256(layer).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["/bin/busybox", "sleep", "2147483647"]},
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [ref], "Layers": [f"{layer_id}/layer.tar"]}])
    return _tar([(config_name, "file", config, 0o644), (layer_id, "dir", b"", 0o755),
                 (f"{layer_id}/layer.tar", "file", layer, 0o644), ("manifest.json", "file", manifest.encode(), 0o644)])


# ---- CNI side: bin dir, config lists, what an attachment leaves -----------------------------------------

class CniBin:
    """A CNI bin dir made by `cniplug install --bin-dir`, and how its plugins run under the runtimes:
    "standalone" (`--no-auto-helper`, and CNIPLUG_NO_HELPER=1 in the runtime's environment, which libcni
    passes on to every plugin, so no helper another process started serves them) or "auto-helper" (the
    default install: the first call starts a helper for this install, the calls after it go through it)."""

    def __init__(self, path: Path, mode: str) -> None:
        self.path, self.mode = path, mode
        self.env = {"CNIPLUG_NO_HELPER": "1"} if mode == "standalone" else {}
        self.socket = ""
        if mode == "auto-helper":
            text = (path / "cniplug-bridge").read_text()  # the socket the installed executables name
            start = text.index("'socket': '") + len("'socket': '")
            self.socket = text[start:text.index("'", start)]

    def helper(self) -> dict[str, Any]:
        """The auto-started helper's record (pid, calls, watch, ...), {} when none serves this install."""
        try:
            record = json.loads(Path(self.socket + ".json").read_text()) if self.socket else {}
        except (OSError, ValueError):
            return {}
        return record if str(record.get("watch", "")).startswith(str(self.path)) else {}

    def assert_served(self) -> None:
        """In auto-helper mode: a helper for this install runs and has served calls of the runtime."""
        if self.mode != "auto-helper":
            return
        record = self.helper()
        assert record and int(record.get("calls", 0)) > 0 and ours(int(record["pid"]), "cniplug"), (
            f"no helper served this install's calls: {record}")

    def end_helper(self) -> None:
        """End the helper this install started (by its pid, after checking it is that helper), remove its files."""
        record = self.helper()
        pid = int(record.get("pid", 0)) if record else 0
        if pid and ours(pid, "cniplug"):
            os.kill(pid, signal.SIGTERM)
            end = time.monotonic() + 10
            while ours(pid, "cniplug") and time.monotonic() < end:
                time.sleep(0.1)
            kill_pid(pid, "cniplug")
        for suffix in ("", ".json", ".lock", ".log") if self.socket else ():
            Path(self.socket + suffix).unlink(missing_ok=True)


@pytest.fixture(scope="module", params=["standalone", "auto-helper"])
def cni_bin(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CniBin]:
    """`cniplug install`ed plugins, PORTMAP_TYPE, and `loopback` (a copy of cniplug-loopback) for containerd;
    once per mode (see CniBin)."""
    if not BUSYBOX.is_file():
        missing(f"{BUSYBOX} not found: apt-get install busybox-static (contrib/setup.sh does)")
    bin_dir = tmp_path_factory.mktemp("te2bin") / "bin"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    extra = ["--no-auto-helper"] if request.param == "standalone" else ["--helper-idle", "60"]
    run([sys.executable, "-m", "cniplug", "install", "--bin-dir", str(bin_dir), *extra], env=env)
    if PORTMAP_TYPE == "portmap":
        if not (REFERENCE_DIR / "portmap").is_file():
            missing(f"{REFERENCE_DIR}/portmap not found: apt-get install containernetworking-plugins")
        shutil.copy2(REFERENCE_DIR / "portmap", bin_dir / "portmap")
    assert (bin_dir / PORTMAP_TYPE).is_file(), f"{PORTMAP_TYPE} is not in {bin_dir}"
    shutil.copy2(bin_dir / "cniplug-loopback", bin_dir / "loopback")
    cni = CniBin(bin_dir, request.param)
    try:
        yield cni
    finally:
        cni.end_helper()


def conflist(n: int, ipam_dir: Path, *, portmap: bool) -> dict[str, Any]:
    """Network te2net<n> on bridge te2br<n>: cniplug-bridge + cniplug-host-local, then either PORTMAP_TYPE
    (port mappings) or cniplug-loopback (nothing but cniplug)."""
    bridge: dict[str, Any] = {
        "type": "cniplug-bridge", "bridge": f"te2br{n}", "isGateway": True, "ipMasq": True, "hairpinMode": True,
        "ipam": {"type": "cniplug-host-local", "dataDir": str(ipam_dir), "ranges": [[{"subnet": subnet(n)}]],
                 "routes": [{"dst": "0.0.0.0/0"}]}}
    second: dict[str, Any] = ({"type": PORTMAP_TYPE, "capabilities": {"portMappings": True}, "snat": True}
                              if portmap else {"type": "cniplug-loopback"})
    return {"cniVersion": "1.0.0", "name": f"te2net{n}", "plugins": [bridge, second]}


def iptables_save(tool: str) -> dict[str, list[str]]:
    """table -> lines of `<tool>-save` (chain declarations and rules)."""
    tables: dict[str, list[str]] = {}
    current = ""
    for line in run([f"{tool}-save"], check=False).stdout.splitlines():
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
                    run([tool, "-w", "-t", table, "-D", *shlex.split(line)[1:]], check=False)
            for line in lines:
                chain = line[1:].split()[0] if line.startswith(":") else ""
                if chain and any(n in chain for n in needles):
                    run([tool, "-w", "-t", table, "-F", chain], check=False)
                    run([tool, "-w", "-t", table, "-X", chain], check=False)


class Attachment:
    """One container's attachment to network te2net<n>, as the runtime made it (container id = CNI_CONTAINERID)."""

    def __init__(self, n: int, container_id: str, ipam_dir: Path) -> None:
        self.n, self.container_id, self.ipam_dir = n, container_id, ipam_dir
        self.net, self.bridge = f"te2net{n}", f"te2br{n}"
        self.ip = ""  # the container's address, once known

    @property
    def cache_file(self) -> Path:
        return LIBCNI_CACHE / f"{self.net}-{self.container_id}-eth0"

    def needles(self) -> list[str]:
        """Strings that identify this attachment's iptables state: the container id in rule comments and the
        per-container chains (reference naming: CNI-<sha512(net+id)[:24]>, CNI-DN-<[:21]>)."""
        h = sha512hex(self.net + self.container_id)
        return [self.container_id, "CNI-" + h[:24], "CNI-DN-" + h[:21]]

    def state(self) -> list[str]:
        """Everything of this attachment on the host: libcni cache, bridge ports, iptables lines naming it or
        its address, IPAM reservations. Non-empty while the container runs, empty after removal."""
        found = []
        if self.cache_file.exists():
            found.append(f"libcni cache {self.cache_file}")
        ports = json.loads(run(["ip", "-j", "link", "show", "master", self.bridge], check=False).stdout or "[]")
        found += [f"port {p['ifname']} on {self.bridge}" for p in ports]
        tokens = {f"{self.ip}/32", f"{self.ip}:80"} if self.ip else set()
        needles = self.needles()
        for tool in ("iptables", "ip6tables"):
            for table, lines in iptables_save(tool).items():
                for line in lines:
                    words = set(line.replace('"', " ").split())
                    if any(n in line for n in needles) or tokens & words:
                        found.append(f"{tool} -t {table}: {line}")
        net_dir = self.ipam_dir / self.net
        if net_dir.is_dir():
            found += [f"IPAM file {p}" for p in sorted(net_dir.iterdir())
                      if p.name not in IPAM_KEEP and not p.name.startswith("last_reserved_ip")]
        return found

    def purge(self) -> None:
        """Remove whatever state() finds (cleanup after a failure), and the bridge."""
        self.cache_file.unlink(missing_ok=True)
        purge_iptables(self.needles())
        for line in self.state():
            if line.startswith("port "):
                run(["ip", "link", "delete", line.split()[1]], check=False)
        run(["ip", "link", "delete", self.bridge], check=False)
        Path(lock_path(self.bridge)).unlink(missing_ok=True)


def ours(pid: int, needle: str) -> bool:
    """Whether process `pid` is alive and its command line contains `needle` (guards against pid reuse)."""
    try:
        return needle in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False


def read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def kill_pid(pid: int, needle: str) -> None:
    """SIGKILL `pid` if it is still the process we started (its command line contains `needle`)."""
    if pid and ours(pid, needle):
        os.kill(pid, signal.SIGKILL)


def shim_pids(needle: str) -> list[int]:
    """Pids of containerd shims whose command line contains `needle`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and ours(int(proc.name), "containerd-shim") and ours(int(proc.name), needle):
            pids.append(int(proc.name))
    return pids


def netns_of(pid: int) -> list[str]:
    """The /run/netns entries that are the network namespace of process `pid` (same nsfs inode)."""
    try:
        inode = os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return []
    found = []
    for entry in Path("/run/netns").glob("*") if Path("/run/netns").is_dir() else []:
        try:
            if entry.stat().st_ino == inode:
                found.append(str(entry))
        except OSError:
            pass
    return found


def unmount_under(root: Path) -> None:
    """Unmount everything mounted at or below `root`, deepest first (what a runtime left after a failure)."""
    prefix = str(root).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point.startswith(prefix):
            points.append(point)
    for point in sorted(set(points), key=len, reverse=True):
        if run(["umount", point], check=False).returncode != 0:
            run(["umount", "-l", point], check=False)


def private_dir(tag: str) -> Path:
    """A short-named private temporary dir (unix socket paths under it must stay below 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix=f"te2-{tag}-", dir="/tmp"))


def remove_tree(root: Path) -> None:
    unmount_under(root)
    shutil.rmtree(root, ignore_errors=True)


# ---- host state the runtimes share -----------------------------------------------------------------------

def _chains(tool: str, table: str) -> list[str]:
    return run([tool, "-w", "-t", table, "-S"], check=False).stdout.splitlines()


@pytest.fixture(scope="module", autouse=True)
def remove_what_runtimes_leave() -> Iterator[None]:
    """Shared portmap chains, runtime dirs and cgroup parents that did not exist before this module are removed
    after it (if they are empty by then: what another process still uses stays)."""
    chains_before = {(tool, table, chain) for tool in ("iptables", "ip6tables")
                     for table, chains in SHARED_CHAINS.items() for chain in chains
                     if f"-N {chain}" in _chains(tool, table)}
    dirs_before = {p for p in RUNTIME_DIRS if p.exists()}
    files_before = {p for p in RUNTIME_FILES if p.exists()}
    cgroups_before = {p for name in CGROUP_PARENTS for p in Path("/sys/fs/cgroup").glob(f"*/{name}")}
    yield
    for tool in ("iptables", "ip6tables"):
        for table, chains in SHARED_CHAINS.items():
            new = [c for c in chains if (tool, table, c) not in chains_before and f"-N {c}" in _chains(tool, table)]
            if any(line.startswith("-A CNI-HOSTPORT-DNAT ") for line in _chains(tool, table)):
                continue  # some container's port mapping still uses them
            for line in _chains(tool, table):
                words = shlex.split(line)
                if words[:1] == ["-A"] and words[-2:-1] == ["-j"] and words[-1] in new:
                    run([tool, "-w", "-t", table, "-D", *words[1:]], check=False)
            for verb in ("-F", "-X"):
                for chain in new:
                    run([tool, "-w", "-t", table, verb, chain], check=False)
    for path in RUNTIME_FILES:
        if path not in files_before:
            path.unlink(missing_ok=True)
    for path in RUNTIME_DIRS:
        if path not in dirs_before and path.is_dir():
            try:
                path.rmdir()
            except OSError:
                pass
    for parent_name in CGROUP_PARENTS:
        for parent in Path("/sys/fs/cgroup").glob(f"*/{parent_name}"):
            if parent in cgroups_before:
                continue
            for child in sorted((p for p in parent.rglob("*") if p.is_dir()), key=lambda p: len(str(p)),
                                reverse=True):
                try:
                    child.rmdir()
                except OSError:
                    pass
            try:
                parent.rmdir()
            except OSError:
                pass


# ---- podman -------------------------------------------------------------------------------------------

class Podman:
    """podman with every path of its own in a private dir; remembers its containers for cleanup."""

    def __init__(self, root: Path, cni: CniBin) -> None:
        self.root, self.cni = root, cni
        bin_dir = cni.path
        self.netd, self.ipam_dir = root / "net.d", root / "ipam"
        self.graph, self.runroot, self.tmp = root / "graph", root / "run", root / "tmp"
        for d in (self.netd, self.ipam_dir, self.graph, self.runroot, self.tmp):
            d.mkdir()
        conf, storage = root / "containers.conf", root / "storage.conf"
        conf.write_text(f"""[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{self.tmp}/events.log"
tmp_dir = "{self.tmp}"
lock_type = "file"
image_copy_tmp_dir = "{self.tmp}"
static_dir = "{self.graph}/libpod"
volume_path = "{self.graph}/volumes"
[network]
network_backend = "cni"
cni_plugin_dirs = ["{bin_dir}"]
network_config_dir = "{self.netd}"
default_network = "te2none"
""")
        storage.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{self.graph}"\nrunroot = "{self.runroot}"\n')
        registries = root / "registries.conf"  # none: the image is local
        registries.write_text("unqualified-search-registries = []\n")
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage),
                    "CONTAINERS_REGISTRIES_CONF": str(registries), **cni.env}
        self.attachments: list[Attachment] = []
        self.networks: list[int] = []
        self.containers: list[str] = []
        self.netns: list[str] = []

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["podman", "--root", str(self.graph), "--runroot", str(self.runroot), *args], env=self.env,
                   check=check)

    def add_network(self, n: int, *, portmap: bool) -> str:
        net = conflist(n, self.ipam_dir, portmap=portmap)
        self.networks.append(n)
        (self.netd / f"{net['name']}.conflist").write_text(json.dumps(net, indent=1))
        return str(net["name"])

    def start(self, n: int, net: str, publish: str = "") -> Attachment:
        """podman run -d a busybox httpd on `net` (publish: a `-p` value); -> its attachment, address known."""
        argv = ["run", "-d", "--name", f"te2c{n}", "--network", net, *(["-p", publish] if publish else []),
                IMAGE, "/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"]
        proc = self(*argv, check=False)
        ids = re.findall(r"^[0-9a-f]{64}$", proc.stdout, re.M)
        cid = ids[-1] if ids else self(*["ps", "-a", "-q", "--no-trunc", "--filter", f"name=te2c{n}"],
                                        check=False).stdout.strip()
        if cid:
            self.containers.append(cid)
        att = Attachment(n, cid, self.ipam_dir)
        self.attachments.append(att)
        assert proc.returncode == 0, f"podman {shlex.join(argv)} failed (exit {proc.returncode}):\n{proc.stderr}"
        info = json.loads(self("inspect", cid).stdout)[0]
        self.netns.append(info["NetworkSettings"]["SandboxKey"])
        att.ip = info["NetworkSettings"]["Networks"][net]["IPAddress"]
        return att

    def cleanup(self) -> None:
        """Remove every container (podman first, then by hand: netns, processes by pid, runc state), then the
        attachments' host state and the private dir. All containers in this private root are ours, also those
        a failed or timed-out `podman run` did not name."""
        listed = self("ps", "-a", "-q", "--no-trunc", check=False).stdout.split()
        ids = list(dict.fromkeys(self.containers + listed))
        if ids:
            self("rm", "-f", "-t", "0", *ids, check=False)
        bundles = self.runroot / "vfs-containers"
        ids += [d.name for d in bundles.iterdir() if d.name not in ids] if bundles.is_dir() else []
        for cid in ids:
            userdata = bundles / cid / "userdata"
            init = read_pid(userdata / "pidfile")
            if init and ours(init, "/bin/busybox"):
                self.netns += netns_of(init)
            kill_pid(read_pid(userdata / "conmon.pid"), cid)
            kill_pid(init, "/bin/busybox")
            if Path("/run/runc", cid).exists():
                run(["runc", "--root", "/run/runc", "delete", "--force", cid], check=False)
        for path in self.netns:
            if path and os.path.exists(path):
                run(["umount", path], check=False)
                Path(path).unlink(missing_ok=True)
        for cid in ids:
            for n in self.networks:
                if not any(a.container_id == cid and a.n == n for a in self.attachments):
                    self.attachments.append(Attachment(n, cid, self.ipam_dir))
        for att in self.attachments:
            att.purge()
        remove_tree(self.root)


@pytest.fixture
def podman(cni_bin: CniBin) -> Iterator[Podman]:
    if shutil.which("podman") is None:
        missing("podman not found: apt-get install podman (contrib/setup.sh does)")
    pm = Podman(private_dir("podman"), cni_bin)
    try:
        backend = pm("info", "--format", "{{.Host.NetworkBackend}}").stdout.strip()
        assert backend == "cni", f"podman uses the {backend!r} network backend, not cni"
        (pm.root / "rootfs.tar").write_bytes(rootfs_tar())
        pm("import", str(pm.root / "rootfs.tar"), IMAGE)
        yield pm
    finally:
        pm.cleanup()


def test_podman_publishes_port_through_portmap(podman: Podman) -> None:
    """`podman run -p HOSTPORT:80` on cniplug-bridge + PORTMAP_TYPE: the host fetches the container's page on
    127.0.0.1:HOSTPORT; `podman rm` then leaves no link, chain, rule, IPAM reservation, cache or netns."""
    net = podman.add_network(1, portmap=True)
    port = free_port()
    att = podman.start(1, net, publish=f"{port}:80")
    assert ipaddress.ip_address(att.ip) in ipaddress.ip_network(subnet(1)), att.ip
    assert fetch(f"http://127.0.0.1:{port}/") == PAGE
    present = att.state()
    for what in (f"libcni cache {att.cache_file}", "IPAM file", f" on {att.bridge}", "-j DNAT"):
        assert any(what in line for line in present), f"no {what!r} while the container runs: {present}"

    podman("rm", "-f", "-t", "0", att.container_id)
    left = att.state()
    assert not left, "left behind:\n" + "\n".join(left)
    assert not os.path.exists(podman.netns[-1]), f"podman left its netns {podman.netns[-1]}"
    assert podman("ps", "-a", "-q").stdout.strip() == ""
    podman.cni.assert_served()


def test_podman_without_port_mapping(podman: Podman) -> None:
    """cniplug-bridge + cniplug-loopback only: the host reaches httpd at the container's address on the bridge;
    lo is up in the container; removal leaves nothing of the attachment."""
    net = podman.add_network(2, portmap=False)
    att = podman.start(2, net)
    assert ipaddress.ip_address(att.ip) in ipaddress.ip_network(subnet(2)), att.ip
    assert fetch(f"http://{att.ip}:80/") == PAGE
    netns = podman.netns[-1]
    lo = json.loads(run(["nsenter", f"--net={netns}", "ip", "-j", "link", "show", "dev", "lo"]).stdout)
    assert "UP" in lo[0]["flags"]
    present = att.state()
    for what in (f"libcni cache {att.cache_file}", "IPAM file", f" on {att.bridge}"):
        assert any(what in line for line in present), f"no {what!r} while the container runs: {present}"

    podman("rm", "-f", "-t", "0", att.container_id)
    left = att.state()
    assert not left, "left behind:\n" + "\n".join(left)
    assert not os.path.exists(netns), f"podman left its netns {netns}"
    podman.cni.assert_served()


# ---- containerd CRI -------------------------------------------------------------------------------------

def cri_proto_path() -> Path:
    raw = os.environ.get("CRI_PROTO") or ".cache/cri/api.proto"
    path = Path(raw)
    return path if path.is_absolute() else REPO / path


@pytest.fixture(scope="module")
def cri(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    """(messages, services) of the CRI runtime.v1 API, generated with grpc_tools from the cached api.proto
    (its gogoproto options only steer Go code generation and are dropped)."""
    proto = cri_proto_path()
    if not proto.is_file():
        missing(f"CRI api.proto not found at {proto}: run contrib/fetch-cri-proto.sh (or contrib/setup.sh)")
    try:
        importlib.import_module("grpc")
        protoc = importlib.import_module("grpc_tools.protoc")
    except ImportError:
        missing("grpcio/grpcio-tools not installed: pip install -e '.[e2e]' (contrib/setup.sh does)")
    out = tmp_path_factory.mktemp("te2cri")
    text = "\n".join(line for line in proto.read_text().splitlines() if "gogoproto" not in line)
    (out / "te2_cri_v1.proto").write_text(text + "\n")
    include = str(Path(importlib.import_module("grpc_tools").__file__ or "").parent / "_proto")
    rc = protoc.main(["protoc", f"-I{out}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}",
                      str(out / "te2_cri_v1.proto")])
    assert rc == 0, f"grpc_tools.protoc failed on {proto}"
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("te2_cri_v1_pb2"), importlib.import_module("te2_cri_v1_pb2_grpc")
    finally:
        sys.path.remove(str(out))


class Containerd:
    """containerd with its own config, root, state, sockets and runc root; the CRI plugin's CNI conf_dir and
    bin_dir are ours. Started by the fixture, ended by PID."""

    def __init__(self, root: Path, cni: CniBin, cri: tuple[ModuleType, ModuleType]) -> None:
        self.root, self.cni, self.pb, self.rpc = root, cni, cri[0], cri[1]
        bin_dir = cni.path
        self.netd, self.ipam_dir, self.logs = root / "net.d", root / "ipam", root / "logs"
        self.state_dir, self.runc_root = root / "state", root / "runc"
        for d in (self.netd, self.ipam_dir, self.logs):
            d.mkdir()
        self.sock = root / "c.sock"
        self.config = root / "config.toml"
        cri_key = 'plugins."io.containerd.grpc.v1.cri"'
        self.config.write_text(f"""version = 2
root = "{root}/root"
state = "{self.state_dir}"
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
[{cri_key}]
  sandbox_image = "{IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [{cri_key}.cni]
    bin_dir = "{bin_dir}"
    conf_dir = "{self.netd}"
    max_conf_num = 1
  [{cri_key}.containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [{cri_key}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri_key}.containerd.runtimes.runc.options]
        Root = "{self.runc_root}"
""")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "containerd.log"
        self.attachments: list[Attachment] = []
        self.networks: list[int] = []
        self.pods: list[str] = []
        self.channel: Any = None
        self.runtime: Any = None

    def add_network(self, n: int, *, portmap: bool) -> str:
        net = conflist(n, self.ipam_dir, portmap=portmap)
        self.networks.append(n)
        (self.netd / f"10-{net['name']}.conflist").write_text(json.dumps(net, indent=1))
        return str(net["name"])

    def start(self) -> None:
        """Start containerd; wait (30 s at most) until CRI reports the runtime and the network ready."""
        grpc = importlib.import_module("grpc")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(["containerd", "--config", str(self.config)], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, **self.cni.env})
        self.channel = grpc.insecure_channel(f"unix://{self.sock}")
        self.runtime = self.rpc.RuntimeServiceStub(self.channel)
        end = time.monotonic() + 30
        last = ""
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                break
            try:
                status = self.runtime.Status(self.pb.StatusRequest(), timeout=2)
                conds = {c.type: (c.status, c.reason, c.message) for c in status.status.conditions}
                if all(conds.get(k, (False,))[0] for k in ("RuntimeReady", "NetworkReady")):
                    return
                last = str(conds)
            except grpc.RpcError as err:
                last = str(err.details())
            time.sleep(0.2)
        raise AssertionError(f"containerd's CRI not ready after 30 s ({last}); log:\n{self.tail()}")

    def tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def import_image(self) -> None:
        archive = self.root / "image.tar"
        archive.write_bytes(docker_archive(IMAGE))
        run(["ctr", "--address", str(self.sock), "--namespace", "k8s.io", "images", "import",
             "--snapshotter", "native", str(archive)])

    def sandbox_config(self, n: int, host_port: int = 0) -> Any:
        pb = self.pb
        ports = [pb.PortMapping(protocol=pb.TCP, container_port=80, host_port=host_port)] if host_port else []
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=f"te2pod{n}", namespace="te2", uid=f"te2uid{n}", attempt=0),
            hostname=f"te2pod{n}", log_directory=str(self.logs), port_mappings=ports,
            linux=pb.LinuxPodSandboxConfig())

    def run_pod(self, n: int, net: str, host_port: int = 0) -> tuple[Attachment, str]:
        """RunPodSandbox (+ hostPort) and a busybox httpd container in it -> (attachment, netns path)."""
        pb = self.pb
        config = self.sandbox_config(n, host_port)
        try:
            pod = self.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=TIMEOUT).pod_sandbox_id
        except Exception as err:
            raise AssertionError(f"RunPodSandbox failed: {err}\ncontainerd log:\n{self.tail()}") from err
        self.pods.append(pod)
        att = Attachment(n, pod, self.ipam_dir)
        self.attachments.append(att)
        status = self.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True),
                                               timeout=TIMEOUT)
        att.ip = status.status.network.ip
        spec = json.loads(status.info["info"])["runtimeSpec"]
        netns = next(ns["path"] for ns in spec["linux"]["namespaces"] if ns["type"] == "network")
        container = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="httpd"), image=pb.ImageSpec(image=IMAGE),
                                       command=["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"],
                                       log_path=f"httpd{n}.log", linux=pb.LinuxContainerConfig())
        cid = self.runtime.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=container,
                                                                     sandbox_config=config),
                                           timeout=TIMEOUT).container_id
        self.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=TIMEOUT)
        return att, netns

    def remove_pod(self, pod: str) -> None:
        pb = self.pb
        self.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=TIMEOUT)
        self.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=TIMEOUT)

    def cleanup(self) -> None:
        """Remove the pods through CRI, end containerd by PID, then whatever is left by hand: container and shim
        processes, runc state, shim sockets, mounts, the attachments' host state. All pods of this private
        containerd are ours, also those a failed or timed-out RunPodSandbox did not name."""
        pods = list(self.pods)
        if self.proc is not None and self.proc.poll() is None and self.runtime is not None:
            try:
                listed = self.runtime.ListPodSandbox(self.pb.ListPodSandboxRequest(), timeout=10).items
                pods += [p.id for p in listed if p.id not in pods]
            except Exception:  # noqa: BLE001 - cleanup goes on; what stays is removed by hand below
                pass
            for pod in pods:
                try:
                    self.remove_pod(pod)
                except Exception:  # noqa: BLE001 - as above
                    pass
        if self.channel is not None:
            self.channel.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        tasks = self.state_dir / "io.containerd.runtime.v2.task" / "k8s.io"
        bundles = list(tasks.iterdir()) if tasks.is_dir() else []
        for bundle in bundles:
            kill_pid(read_pid(bundle / "init.pid"), "")
            run(["runc", "--root", str(self.runc_root / "k8s.io"), "delete", "--force", bundle.name], check=False)
        if bundles:  # shims outlive a containerd that died; ours name its socket, a path in our private dir
            for pid in shim_pids(f"-address {self.sock} "):
                kill_pid(pid, str(self.sock))
            for bundle in bundles:
                address = (bundle / "address").read_text().strip() if (bundle / "address").exists() else ""
                socket_path = Path(address.removeprefix("unix://"))
                if socket_path.parent == Path("/run/containerd/s"):
                    socket_path.unlink(missing_ok=True)
        for pod in pods + [b.name for b in bundles]:
            for n in self.networks:
                if not any(a.container_id == pod and a.n == n for a in self.attachments):
                    self.attachments.append(Attachment(n, pod, self.ipam_dir))
        for att in self.attachments:
            att.purge()
        remove_tree(self.root)


@pytest.fixture
def containerd(cni_bin: CniBin, cri: tuple[ModuleType, ModuleType]) -> Iterator[Containerd]:
    for tool in ("containerd", "ctr", "containerd-shim-runc-v2", "runc"):
        if shutil.which(tool) is None:
            missing(f"{tool} not found: apt-get install containerd runc (contrib/setup.sh does)")
    ctd = Containerd(private_dir("ctd"), cni_bin, cri)
    try:
        yield ctd
    finally:
        ctd.cleanup()


def lo_is_up(netns: str) -> bool:
    lo = json.loads(run(["nsenter", f"--net={netns}", "ip", "-j", "link", "show", "dev", "lo"]).stdout)
    return "UP" in lo[0]["flags"]


def test_cri_pod_host_port_through_portmap(containerd: Containerd) -> None:
    """A CRI pod sandbox whose port_mappings set a hostPort, on cniplug-bridge + PORTMAP_TYPE: the host fetches
    the page of the pod's httpd on 127.0.0.1:hostPort; Stop+RemovePodSandbox then leave nothing of it."""
    net = containerd.add_network(3, portmap=True)
    containerd.start()
    containerd.import_image()
    port = free_port()
    att, netns = containerd.run_pod(3, net, host_port=port)
    assert ipaddress.ip_address(att.ip) in ipaddress.ip_network(subnet(3)), att.ip
    assert fetch(f"http://127.0.0.1:{port}/") == PAGE
    assert lo_is_up(netns)  # containerd's own loopback network, here cniplug-loopback named `loopback`
    present = att.state()
    for what in (f"libcni cache {att.cache_file}", "IPAM file", f" on {att.bridge}", "-j DNAT"):
        assert any(what in line for line in present), f"no {what!r} while the pod runs: {present}"

    containerd.remove_pod(att.container_id)
    left = att.state()
    assert not left, "left behind:\n" + "\n".join(left)
    assert not os.path.exists(netns), f"containerd left the pod's netns {netns}"
    containerd.cni.assert_served()
    pods = containerd.runtime.ListPodSandbox(containerd.pb.ListPodSandboxRequest(), timeout=TIMEOUT).items
    assert list(pods) == []
    containerd.cni.assert_served()


def test_cri_pod_without_port_mapping(containerd: Containerd) -> None:
    """A CRI pod on cniplug-bridge + cniplug-loopback only: the host reaches its httpd at the pod's address."""
    net = containerd.add_network(4, portmap=False)
    containerd.start()
    containerd.import_image()
    att, netns = containerd.run_pod(4, net)
    assert ipaddress.ip_address(att.ip) in ipaddress.ip_network(subnet(4)), att.ip
    assert fetch(f"http://{att.ip}:80/") == PAGE
    assert lo_is_up(netns)
    present = att.state()
    for what in (f"libcni cache {att.cache_file}", "IPAM file", f" on {att.bridge}"):
        assert any(what in line for line in present), f"no {what!r} while the pod runs: {present}"

    containerd.remove_pod(att.container_id)
    left = att.state()
    assert not left, "left behind:\n" + "\n".join(left)
    assert not os.path.exists(netns), f"containerd left the pod's netns {netns}"
    containerd.cni.assert_served()

