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
    subprocess.run([sys.executable, "-m", "cniplug", "install", "--bin-dir", str(tmp_path / "bin")], check=True,
                   capture_output=True)
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
