"""host-local's store on a full or read-only filesystem (issue #12): ADD fails clearly and leaves nothing, DEL
still succeeds.

Root only: the store is a small tmpfs mounted on this test's tmp_path (size 16 KiB, so a filler file makes it
full) and unmounted afterwards. Names start with `tcsf`, addresses are in 10.250.214.0/26.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import run_plugin

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mounts a tmpfs, creates namespaces")]

NET = "tcsfnet"
SUBNET = "10.250.214.0/26"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "store"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k,mode=0755", "tcsf", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path) -> None:
    """Write a filler file until the filesystem says it is full (ENOSPC)."""
    fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            os.write(fd, b"x" * 512)
    except OSError as err:
        assert err.errno == errno.ENOSPC, err
    finally:
        os.close(fd)


def remount(mnt: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mnt)], check=True)


def config(mnt: Path, plugin: str = "cniplug-host-local") -> dict[str, object]:
    base: dict[str, object] = {"cniVersion": "1.0.0", "name": NET,
                               "ipam": {"type": "cniplug-host-local", "dataDir": str(mnt), "subnet": SUBNET}}
    if plugin == "cniplug-bridge":
        base.update(type=plugin, bridge="tcsfbr0", isGateway=True)
    else:
        base["type"] = "tcsf"
    return base


def files(mnt: Path) -> dict[str, bytes]:
    return {str(p.relative_to(mnt)): p.read_bytes() for p in mnt.rglob("*") if p.is_file()}


def ipam(command: str, mnt: Path, cid: str) -> tuple[int, dict[str, object]]:
    run = run_plugin("cniplug-host-local", command, config(mnt), netns="/run/netns/tcsf-none", container_id=cid)
    assert "Traceback" not in run.stdout + run.stderr, run.stderr
    return run.rc, json.loads(run.stdout) if run.stdout.strip() else {}


def test_add_on_a_full_store_fails_clearly_and_reserves_nothing(store: Path) -> None:
    assert ipam("ADD", store, "tcsf-a")[0] == 0  # the network directory, lock and one reservation exist
    fill(store)
    before = files(store)
    rc, err = ipam("ADD", store, "tcsf-b")
    assert rc == 1 and err["code"] == 999, err
    assert "No space left on device" in f"{err['msg']} {err.get('details', '')}", err
    assert files(store) == before, "a failed ADD left a (half-written) file"
    # DEL still succeeds on the full disk, and really frees the address
    rc, out = ipam("DEL", store, "tcsf-a")
    assert rc == 0, out
    assert not [name for name in files(store) if name.startswith(f"{NET}/10.")]


def test_add_on_a_read_only_store_fails_and_del_still_succeeds(store: Path) -> None:
    rc, result = ipam("ADD", store, "tcsf-c")
    assert rc == 0, result
    remount(store, "ro")
    try:
        before = files(store)
        rc, err = ipam("ADD", store, "tcsf-d")
        assert rc == 1 and "Read-only file system" in f"{err['msg']} {err.get('details', '')}", err
        assert files(store) == before
        rc, out = ipam("DEL", store, "tcsf-c")
        assert rc == 0 and out == {}, out
        assert files(store) == before  # nothing could be freed: a later GC does it
    finally:
        remount(store, "rw")


def test_bridge_add_on_a_full_store_leaves_no_link(store: Path, make_netns: Callable[[str], str],
                                                   cleanup_links: list[str]) -> None:
    cleanup_links.append("tcsfbr0")
    netns = make_netns("sf-c")
    (store / NET).mkdir()
    fill(store)
    run = run_plugin("cniplug-bridge", "ADD", config(store, "cniplug-bridge"), netns=netns, container_id="tcsf-e")
    assert run.rc == 1 and "No space left on device" in run.stdout, run.stdout
    # Only what could be ours (other suites may add veths on the host meanwhile): the bridge, and a veth pair,
    # whose container end would be in our namespace.
    assert not os.path.exists("/sys/class/net/tcsfbr0"), "the bridge was created"
    links = json.loads(subprocess.run(["ip", "-n", Path(netns).name, "-j", "link"], capture_output=True,
                                      text=True).stdout)
    assert [link["ifname"] for link in links] == ["lo"], "an interface stayed in the container"
