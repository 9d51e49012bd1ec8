"""No Python on the host (issue #14 item 4): the self-contained runtime built by `cniplug bundle`
(PyInstaller) is installed with links that switch atomically, works where every Python is hidden,
upgrades, rolls back and uninstalls."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import sh

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
SUBNET = "10.238.40.0/24"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runtime, built once for this module (~10-30 s)."""
    out = tmp_path_factory.mktemp("tsc-bundle")
    proc = subprocess.run([sys.executable, "-m", "cniplug", "bundle", "--out", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    exe = out / "cniplug" / "cniplug"
    assert exe.is_file() and os.access(exe, os.X_OK)
    return exe


def install(bundle: Path, bin_dir: Path, runtime: Path, *extra: str) -> str:
    proc = subprocess.run([str(bundle), "install", "--bin-dir", str(bin_dir), "--runtime-dir", str(runtime), *extra],
                          capture_output=True, text=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def conf(data_dir: Path) -> dict[str, object]:
    return {"cniVersion": "1.0.0", "name": "tsc-net", "type": "cniplug-bridge", "bridge": "tscbr0",
            "isGateway": True, "ipMasq": True,
            "ipam": {"type": "cniplug-host-local", "subnet": SUBNET, "dataDir": str(data_dir)}}


HIDE_PYTHON = r"""
set -eu
# Hide every Python: the interpreters, their libraries, the virtualenv and this checkout.
for f in /usr/bin/python3* /usr/local/bin/python3* /usr/lib/x86_64-linux-gnu/libpython3* /usr/lib/*/libpython3*; do
  [ -e "$f" ] && [ ! -d "$f" ] && mount --bind /dev/null "$f"
done
for d in /usr/lib/python3* /usr/local/lib/python3* "$VENV" "$REPO"; do
  [ -d "$d" ] && mount -t tmpfs -o size=1m tmpfs "$d"
done
if command -v python3 >/dev/null && python3 -c 'import sys' 2>/dev/null; then echo "python still runs" >&2; exit 99; fi
[ -z "$(ls -A /usr/lib/python3.11 2>/dev/null)" ] || { echo "stdlib still visible" >&2; exit 98; }
run() { env -i CNI_COMMAND="$1" CNI_CONTAINERID=tsc-c1 CNI_NETNS="$NETNS" CNI_IFNAME=eth0 CNI_PATH="$BIN" \
          "$BIN/cniplug-bridge" < "$2"; }
echo "== VERSION"; env -i CNI_COMMAND=VERSION "$BIN/cniplug-bridge" < /dev/null
added=$(run ADD "$CONF") || { echo "ADD failed: $added"; exit 1; }; echo "== ADD"; echo "$added"
jq --argjson r "$added" '. + {prevResult: $r}' "$CONF" > "$CONF.check"
echo "== CHECK"; run CHECK "$CONF.check"
echo "== DEL"; run DEL "$CONF.check"
"""


def test_add_check_del_with_every_python_hidden(bundle: Path, tmp_path: Path,
                                                make_netns: Callable[[str], str], cleanup_links: list[str]) -> None:
    bin_dir, runtime = tmp_path / "bin", tmp_path / "rt"
    install(bundle, bin_dir, runtime, "--no-auto-helper")
    cleanup_links.append("tscbr0")
    netns = make_netns("sc1")
    config = tmp_path / "conf.json"
    config.write_text(json.dumps(conf(tmp_path / "ipam")))
    script = tmp_path / "hide.sh"
    script.write_text(HIDE_PYTHON)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "BIN": str(bin_dir), "CONF": str(config),
           "NETNS": netns, "VENV": str(Path(sys.prefix)), "REPO": str(REPO)}
    try:
        proc = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", str(script)], capture_output=True,
                              text=True, env=env, timeout=120)
    finally:  # whatever happened in there: DEL (idempotent) with the checkout's plugin
        subprocess.run([sys.executable, "-m", "cniplug", "plugin", "cniplug-bridge"], input=config.read_text(),
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "CNI_COMMAND": "DEL", "CNI_CONTAINERID": "tsc-c1", "CNI_NETNS": "",
                            "CNI_IFNAME": "eth0", "CNI_PATH": str(bin_dir)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sections = dict(part.split("\n", 1) for part in proc.stdout.split("== ")[1:])
    assert "1.1.0" in json.loads(sections["VERSION"])["supportedVersions"]
    added = json.loads(sections["ADD"])
    assert added["ips"][0]["address"].startswith("10.238.40.")
    assert sections["CHECK"].strip() == "" and sections["DEL"].strip() == ""
    assert not Path("/sys/class/net/tscbr0/brif").exists() or not os.listdir("/sys/class/net/tscbr0/brif")
    assert "tsc-c1" not in sh("iptables-save", "-t", "nat")


def test_upgrade_rollback_and_uninstall_switch_links(bundle: Path, tmp_path: Path) -> None:
    bin_dir, runtime = tmp_path / "bin", tmp_path / "rt"
    install(bundle, bin_dir, runtime, "--no-auto-helper")
    first = os.readlink(runtime / "current")
    (bin_dir / "someone-elses-plugin").write_text("#!/bin/sh\n")
    install(bundle, bin_dir, runtime, "--no-auto-helper")  # the upgrade
    second = os.readlink(runtime / "current")
    assert second != first and os.readlink(runtime / "previous") == first
    assert os.readlink(bin_dir / "cniplug-ptp") == str(runtime.resolve() / "current" / "cniplug")
    install(bundle, bin_dir, runtime, "--no-auto-helper")  # a third: the first is pruned, two kept
    third = os.readlink(runtime / "current")
    assert sorted(p.name for p in runtime.iterdir() if not p.is_symlink()) == sorted([second, third])
    proc = subprocess.run([str(runtime / "current" / "cniplug"), "install", "--runtime-dir", str(runtime),
                           "--rollback"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(runtime / "current") == second and os.readlink(runtime / "previous") == third
    version = subprocess.run([str(bin_dir / "cniplug-bridge")], input="", capture_output=True, text=True,
                             env={"CNI_COMMAND": "VERSION"})
    assert version.returncode == 0 and json.loads(version.stdout)["supportedVersions"]
    proc = subprocess.run([str(bundle), "install", "--bin-dir", str(bin_dir), "--runtime-dir", str(runtime),
                           "--uninstall"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in bin_dir.iterdir()) == ["someone-elses-plugin"]
    assert not runtime.exists()


def test_a_call_during_an_install_runs_a_whole_executable(bundle: Path, tmp_path: Path) -> None:
    bin_dir, runtime = tmp_path / "bin", tmp_path / "rt"
    install(bundle, bin_dir, runtime, "--no-auto-helper")
    stop = threading.Event()
    failures: list[str] = []
    calls = 0

    def caller() -> None:
        nonlocal calls
        while not stop.is_set():
            proc = subprocess.run([str(bin_dir / "cniplug-bridge")], input="", capture_output=True, text=True,
                                  env={"CNI_COMMAND": "VERSION", "CNIPLUG_NO_HELPER": "1"})
            calls += 1
            if proc.returncode != 0 or "supportedVersions" not in proc.stdout:
                failures.append(f"rc {proc.returncode}: {proc.stdout} {proc.stderr}")

    threads = [threading.Thread(target=caller) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(6):
            install(bundle, bin_dir, runtime, "--no-auto-helper")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert calls >= 6 and not failures, failures[:3]
    # Directories left for calls that were still running go at the next install.
    install(bundle, bin_dir, runtime, "--no-auto-helper")
    assert len([d for d in runtime.iterdir() if not d.is_symlink()]) == 2, sorted(runtime.iterdir())


def test_the_install_compiles_the_runtimes_own_templates(bundle: Path, tmp_path: Path) -> None:
    from tests.integration.test_autostart import cache_files

    bin_dir, runtime = tmp_path / "bin", tmp_path / "rt"
    install(bundle, bin_dir, runtime, "--no-auto-helper")
    root = runtime.resolve() / os.readlink(runtime / "current") / "_internal" / "cniplug" / "templates"
    names = ["bridge/add.sh.j2", "ptp/del.sh.j2", "macros.sh.j2"]
    assert all(f.is_file() for f in cache_files(root, names)), cache_files(root, names)


def test_a_call_outlasting_two_installs_keeps_its_runtime(bundle: Path, tmp_path: Path) -> None:
    """The call reads its stdin only after it started from the runtime `current` named then; two installs
    later that runtime is neither current nor previous, but it must still be there until the call ends."""
    bin_dir, runtime = tmp_path / "bin", tmp_path / "rt"
    install(bundle, bin_dir, runtime, "--no-auto-helper")
    first = os.readlink(runtime / "current")
    call = subprocess.Popen([str(bin_dir / "cniplug-bridge")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={"CNI_COMMAND": "VERSION", "CNIPLUG_NO_HELPER": "1"})
    try:
        deadline = time.monotonic() + 10
        while not os.readlink(f"/proc/{call.pid}/exe").startswith(str(runtime.resolve())):
            assert time.monotonic() < deadline, "the call did not start from the runtime"
            time.sleep(0.01)
        for _ in range(2):
            install(bundle, bin_dir, runtime, "--no-auto-helper")
        assert (runtime / first).is_dir(), "the runtime of a running call was removed"
        out, err = call.communicate("", timeout=30)
    finally:
        if call.poll() is None:
            call.kill()
            call.wait()
    assert call.returncode == 0 and "supportedVersions" in out, err
    install(bundle, bin_dir, runtime, "--no-auto-helper")
    assert not (runtime / first).exists(), "a runtime no call uses any more was kept"


@pytest.fixture
def helper_pids() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def test_the_runtime_starts_its_own_helper(bundle: Path, tmp_path: Path, helper_pids: list[int]) -> None:
    bin_dir, runtime = tmp_path / "bin", tmp_path / "rt"
    install(bundle, bin_dir, runtime, "--helper-idle", "30")
    conf_text = next(runtime.glob("*/install.conf")).read_text()
    sock = conf_text.split("socket=")[1].split("\n")[0]
    env = {"CNI_COMMAND": "VERSION", "CNIPLUG_HELPER_STATS": "1"}
    first = subprocess.run([str(bin_dir / "cniplug-ptp")], input="", capture_output=True, text=True, env=env)
    assert first.returncode == 0 and "started a helper" in first.stderr
    for _ in range(100):
        if Path(sock + ".json").exists():
            break
        time.sleep(0.1)
    info = json.loads(Path(sock + ".json").read_text())
    helper_pids.append(int(info["pid"]))
    assert Path(f"/proc/{info['pid']}/exe").resolve().name == "cniplug"  # the runtime's, not a Python
    second = subprocess.run([str(bin_dir / "cniplug-ptp")], input="", capture_output=True, text=True, env=env)
    assert second.returncode == 0 and "cniplug-helper-stats" in second.stderr
    proc = subprocess.run([str(bundle), "install", "--bin-dir", str(bin_dir), "--runtime-dir", str(runtime),
                           "--uninstall"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    from cniplug.helper import alive

    for _ in range(100):
        if not alive(int(info["pid"])):
            break
        time.sleep(0.1)
    assert not alive(int(info["pid"])), "uninstall ends the helper its executables started"
    for suffix in (".lock", ".log"):
        Path(sock + suffix).unlink(missing_ok=True)
