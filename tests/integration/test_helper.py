"""The warm helper: installed plugins hand their calls to it, with the same results; never required."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import sh

pytestmark = pytest.mark.root


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "cniplug", "install", "--bin-dir", str(tmp_path / "bin"), "--no-auto-helper"],
                   check=True, capture_output=True)
    return tmp_path / "bin"


@pytest.fixture
def helper() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    path = f"/run/cniplug/test-helper-{os.getpid()}.sock"
    proc = subprocess.Popen([sys.executable, "-m", "cniplug", "helper", "--socket", path], stderr=subprocess.PIPE)
    for _ in range(100):
        if os.path.exists(path):
            break
        time.sleep(0.05)
    yield path, proc
    proc.terminate()
    proc.wait(timeout=10)
    if os.path.exists(path):
        os.unlink(path)


def call(bin_dir: Path, command: str, conf: dict[str, Any], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # Only CNI_* and our socket override: as bare as a runtime makes it.
    return subprocess.run([str(bin_dir / "cniplug-bridge")], input=json.dumps(conf), text=True, capture_output=True,
                          env={"CNI_COMMAND": command, "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", **env})


def test_calls_through_the_helper_match_standalone(installed: Path, helper: tuple[str, Any], tmp_path: Path,
                                                   make_netns: Callable[[str], str],
                                                   cleanup_links: list[str]) -> None:
    path, proc = helper
    cleanup_links.append("tchbr0")
    conf = {"cniVersion": "1.0.0", "name": "tch-net", "type": "cniplug-bridge", "bridge": "tchbr0",
            "isGateway": True, "ipMasq": True,
            "ipam": {"type": "cniplug-host-local", "dataDir": str(tmp_path / "ipam"), "subnet": "10.250.180.0/24"}}
    results = {}
    for mode, extra in (("helper", {"CNIPLUG_HELPER_SOCKET": path}), ("standalone", {"CNIPLUG_NO_HELPER": "1"})):
        netns = make_netns(f"h-{mode[:3]}")
        env = {"CNI_CONTAINERID": f"tch-{mode}", "CNI_NETNS": netns, **extra}
        add = call(installed, "ADD", conf, env)
        assert add.returncode == 0, add.stdout + add.stderr
        results[mode] = json.loads(add.stdout)
        check = call(installed, "CHECK", {**conf, "prevResult": results[mode]}, env)
        assert check.returncode == 0 and check.stdout == "", check.stdout
        ping = subprocess.run(["ip", "netns", "exec", os.path.basename(netns), "ping", "-c1", "-W2", "10.250.180.1"])
        assert ping.returncode == 0
        for _ in range(2):
            dele = call(installed, "DEL", conf, env)
            assert dele.returncode == 0 and dele.stdout == ""
    shape = {mode: (len(r["interfaces"]), [ip["interface"] for ip in r["ips"]], r["cniVersion"])
             for mode, r in results.items()}
    assert shape["helper"] == shape["standalone"]
    assert "tch-" not in sh("iptables-save", "-t", "nat")
    # errors come back the same way
    bad = call(installed, "ADD", {**conf, "mtu": 70000}, {"CNI_CONTAINERID": "x", "CNI_NETNS": "/run/netns/x",
                                                          "CNIPLUG_HELPER_SOCKET": path})
    assert bad.returncode == 1 and json.loads(bad.stdout)["code"] == 7
    assert proc.poll() is None, "the helper died"


def test_socket_anyone_can_write_is_ignored(installed: Path, helper: tuple[str, Any]) -> None:
    path, proc = helper
    os.chmod(path, 0o666)
    out = subprocess.run([str(installed / "cniplug-bridge")], input='{"cniVersion":"1.0.0"}', text=True,
                         capture_output=True, env={"CNI_COMMAND": "VERSION", "CNIPLUG_HELPER_SOCKET": path})
    assert out.returncode == 0 and "supportedVersions" in out.stdout  # answered standalone


def test_without_helper_the_plugin_runs_standalone(installed: Path) -> None:
    out = subprocess.run([str(installed / "cniplug-bridge")], input='{"cniVersion":"1.0.0"}', text=True,
                         capture_output=True,
                         env={"CNI_COMMAND": "VERSION", "CNIPLUG_HELPER_SOCKET": "/run/cniplug/none.sock"})
    assert out.returncode == 0 and json.loads(out.stdout)["supportedVersions"][-1] == "1.1.0"


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def test_a_killed_helper_takes_its_waiting_children_along(installed: Path, helper: tuple[str, Any]) -> None:
    """The children waiting for calls die with the helper, so its socket refuses connections and the plugins
    run standalone, instead of connecting to orphans that serve a few calls and then none."""
    from cniplug.helper import POOL

    path, proc = helper
    deadline = time.monotonic() + 10
    while len(children_of(proc.pid)) < POOL and time.monotonic() < deadline:
        time.sleep(0.05)
    waiting = children_of(proc.pid)
    assert len(waiting) == POOL
    proc.kill()
    proc.wait(timeout=10)
    while any(Path(f"/proc/{pid}").exists() for pid in waiting) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [pid for pid in waiting if Path(f"/proc/{pid}").exists()]
    for pid in survivors:  # the helper's children, started by this test: end them before failing
        os.kill(pid, signal.SIGKILL)
    assert not survivors
    for _ in range(POOL + 1):  # more calls than there were children: every one is answered
        out = subprocess.run([str(installed / "cniplug-bridge")], input='{"cniVersion":"1.0.0"}', text=True,
                             capture_output=True, timeout=60,
                             env={"CNI_COMMAND": "VERSION", "CNIPLUG_HELPER_SOCKET": path})
        assert out.returncode == 0 and "supportedVersions" in out.stdout


def served(proc: subprocess.CompletedProcess[str]) -> bool:
    """Did the helper run this call? It reports its stats only for calls it ran (CNIPLUG_HELPER_STATS set)."""
    return "cniplug-helper-stats" in proc.stderr


def test_a_call_from_another_network_namespace_runs_in_that_namespace(
        installed: Path, helper: tuple[str, Any], tmp_path: Path, make_netns: Callable[[str], str]) -> None:
    """Only env, argv and stdin cross the socket: a call from a simulated node (`ip netns exec node ...`) must
    not create its bridge in the helper's (the host's) namespace. The helper declines; the client runs it."""
    path, _ = helper
    node = Path(make_netns("h-node")).name
    container = make_netns("h-nodec")
    conf = {"cniVersion": "1.0.0", "name": "tch-nsnet", "type": "cniplug-bridge", "bridge": "tchnsbr0",
            "isGateway": True,
            "ipam": {"type": "cniplug-host-local", "dataDir": str(tmp_path / "ipam"), "subnet": "10.250.181.0/24"}}
    env = {"CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", "CNI_CONTAINERID": "tch-ns1", "CNI_NETNS": container,
           "CNIPLUG_HELPER_SOCKET": path, "CNIPLUG_HELPER_STATS": "1"}
    try:
        for command in ("ADD", "DEL"):
            proc = subprocess.run(["ip", "netns", "exec", node, str(installed / "cniplug-bridge")],
                                  input=json.dumps(conf), text=True, capture_output=True, timeout=60,
                                  env={**env, "CNI_COMMAND": command})
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert not served(proc), "the helper ran a call from another network namespace"
            if command == "ADD":
                assert not Path("/sys/class/net/tchnsbr0").exists(), "the bridge was created on the host"
                assert json.loads(sh("ip", "-n", node, "-j", "link", "show", "tchnsbr0"))[0]["ifname"] == "tchnsbr0"
    finally:
        from cniplug.plugins.bridge import lock_path

        subprocess.run(["ip", "link", "delete", "tchnsbr0"], capture_output=True)  # only if the bug put it here
        Path(lock_path("tchnsbr0")).unlink(missing_ok=True)


def test_the_helper_serves_its_own_namespaces_and_declines_another_mount_namespace(
        installed: Path, helper: tuple[str, Any]) -> None:
    path, _ = helper
    env = {"CNI_COMMAND": "VERSION", "CNIPLUG_HELPER_SOCKET": path, "CNIPLUG_HELPER_STATS": "1"}
    here = subprocess.run([str(installed / "cniplug-bridge")], input='{"cniVersion":"0.4.0"}', text=True,
                          capture_output=True, env=env, timeout=60)
    assert here.returncode == 0 and json.loads(here.stdout)["cniVersion"] == "0.4.0"
    assert served(here), "a call from the helper's own namespaces was not served: " + here.stderr
    other = subprocess.run(["unshare", "--mount", str(installed / "cniplug-bridge")], input='{"cniVersion":"0.4.0"}',
                           text=True, capture_output=True, env=env, timeout=60)
    assert other.returncode == 0 and json.loads(other.stdout)["cniVersion"] == "0.4.0", other.stdout + other.stderr
    assert not served(other), "the helper ran a call from another mount namespace"


def test_the_helper_applies_the_callers_umask_and_working_directory(installed: Path, helper: tuple[str, Any],
                                                                    tmp_path: Path) -> None:
    """A relative dataDir lands in the caller's directory and files get the caller's umask, as standalone."""
    path, _ = helper
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    conf = {"cniVersion": "1.0.0", "name": "tch-umask", "type": "tch",
            "ipam": {"type": "cniplug-host-local", "dataDir": "tch-rel", "subnet": "10.250.182.0/24"}}
    env = {"CNI_COMMAND": "ADD", "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", "CNI_CONTAINERID": "tch-u1",
           "CNI_NETNS": "/run/netns/tch-none", "CNIPLUG_HELPER_SOCKET": path, "CNIPLUG_HELPER_STATS": "1"}
    proc = subprocess.run([str(installed / "cniplug-host-local")], input=json.dumps(conf), text=True,
                          capture_output=True, env=env, cwd=cwd, timeout=60, preexec_fn=lambda: os.umask(0o077))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert served(proc), proc.stderr
    reservation = cwd / "tch-rel" / "tch-umask" / "10.250.182.2"
    assert reservation.is_file(), sorted(str(p) for p in tmp_path.rglob("*"))
    assert reservation.stat().st_mode & 0o777 == 0o600, oct(reservation.stat().st_mode)


@pytest.mark.parametrize("verb", ["ADD", "DEL"])
def test_helper_that_dies_mid_call(installed: Path, tmp_path: Path, verb: str) -> None:
    """A helper that takes the call and goes away without answering: ADD is not run a second time (its half-done
    work is the runtime's DEL's business) and says so with code 11 in the caller's version; DEL runs here."""
    import socket
    import threading

    path = str(tmp_path / "dying.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o600)
    server.listen(1)

    def take_and_die() -> None:
        conn, _ = server.accept()
        while conn.recv(65536):
            pass
        conn.close()

    thread = threading.Thread(target=take_and_die, daemon=True)
    thread.start()
    data = tmp_path / "ipam"
    conf = {"cniVersion": "0.4.0", "name": "tch-dies", "type": "tch",
            "ipam": {"type": "cniplug-host-local", "dataDir": str(data), "subnet": "10.250.183.0/24"}}
    env = {"CNI_COMMAND": verb, "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", "CNI_CONTAINERID": "tch-d1",
           "CNI_NETNS": "/run/netns/tch-none", "CNIPLUG_HELPER_SOCKET": path}
    try:
        proc = subprocess.run([str(installed / "cniplug-host-local")], input=json.dumps(conf), text=True,
                              capture_output=True, env=env, timeout=60)
    finally:
        thread.join(timeout=10)
        server.close()
    if verb == "ADD":
        assert proc.returncode == 1, proc.stdout
        body = json.loads(proc.stdout)
        assert (body["code"], body["cniVersion"]) == (11, "0.4.0"), body
        assert "died" in body["msg"]
        assert not data.exists(), "the ADD was run a second time after the helper died"
    else:
        assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr


@pytest.mark.parametrize("closed", ["pipe", "fd"])
def test_an_answer_to_a_closed_stdout_is_an_exit_status_not_a_traceback(installed: Path, helper: tuple[str, Any],
                                                                        closed: str) -> None:
    path, _ = helper
    env = {"CNI_COMMAND": "VERSION", "CNIPLUG_HELPER_SOCKET": path, "CNIPLUG_HELPER_STATS": "1"}
    read, write = os.pipe()
    os.close(read)  # the reader is gone: writing gets EPIPE
    try:
        argv = [str(installed / "cniplug-bridge")] if closed == "pipe" else \
            ["bash", "-c", 'exec "$0" >&-', str(installed / "cniplug-bridge")]
        proc = subprocess.run(argv, input="{}", stdout=write, stderr=subprocess.PIPE, text=True, env=env, timeout=30)
    finally:
        os.close(write)
    assert served(proc), proc.stderr
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_a_standalone_call_with_stdout_closed_exits_1_without_a_traceback(installed: Path, tmp_path: Path,
                                                                          make_netns: Callable[[str], str]) -> None:
    log = tmp_path / "calls.log"
    conf = {"cniVersion": "1.0.0", "name": "qa2lo", "type": "cniplug-loopback", "logFile": str(log)}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "qa2c", "CNI_NETNS": make_netns("qa2so"), "CNI_IFNAME": "lo",
           "CNI_PATH": "/usr/lib/cni", "CNIPLUG_NO_HELPER": "1"}
    proc = subprocess.run(["bash", "-c", 'exec "$0" >&-', str(installed / "cniplug-loopback")], input=json.dumps(conf),
                          capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    record = json.loads(log.read_text().splitlines()[-1])
    assert record["outcome"] == "ok", record  # the call itself went well; only its answer was lost


def test_a_second_helper_on_a_served_socket_refuses_instead_of_taking_it(installed: Path,
                                                                        helper: tuple[str, Any]) -> None:
    """A helper started by hand on the socket a running one serves (the systemd unit's, say) would unlink it
    and bind its own: the first one would serve no one, and once the second exits, no one would."""
    path, first = helper
    second = subprocess.run([sys.executable, "-m", "cniplug", "helper", "--socket", path], capture_output=True,
                            text=True, timeout=30)
    assert second.returncode == 1 and "already" in second.stderr and str(first.pid) in second.stderr, second.stderr
    proc = subprocess.run([str(installed / "cniplug-bridge")], input="", text=True,
                          capture_output=True, env={"CNI_COMMAND": "VERSION", "CNIPLUG_HELPER_SOCKET": path,
                                                    "CNIPLUG_HELPER_STATS": "1"})
    assert served(proc), proc.stderr  # the first one still serves its socket


def test_a_declined_call_is_not_shown_as_the_last_call(installed: Path, helper: tuple[str, Any],
                                                       make_netns: Callable[[str], str]) -> None:
    """`cniplug helper --status` says when the helper last served a call, which is what its idle exit counts
    from; a call it declined (from another network namespace) neither keeps it nor is its last call."""
    path, _ = helper
    node = Path(make_netns("qa2-decl")).name
    proc = subprocess.run(["ip", "netns", "exec", node, str(installed / "cniplug-bridge")], input="", text=True,
                          capture_output=True, timeout=30,
                          env={"CNI_COMMAND": "VERSION", "CNIPLUG_HELPER_SOCKET": path, "CNIPLUG_HELPER_STATS": "1"})
    assert proc.returncode == 0 and not served(proc), proc.stderr
    for _ in range(50):  # the helper writes its record after the child told it
        info = json.loads(Path(path + ".json").read_text())
        if info.get("declined"):
            break
        time.sleep(0.05)
    assert info["declined"] == 1 and info["calls"] == 0 and not info["last_call"], info
