"""Our host-local and the reference /usr/lib/cni/host-local share one dataDir without stepping on each other.

Root only (the reference binary is run as a runtime would run it: env + stdin). Network names start with
`tcnihl`, subnets are inside 10.250.200.0/24 and fd10:250:200::/64; everything lives under tmp_path.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from cniplug.ipam import host_local
from cniplug.ipam.store import DiskStore
from cniplug.skel import parse_request
from cniplug.spec import CNIError

REFERENCE = "/usr/lib/cni/host-local"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (runs the reference host-local as a runtime does)"),
    pytest.mark.skipif(not os.access(REFERENCE, os.X_OK), reason=f"{REFERENCE} not installed"),
]


class Pair:
    """One network config, driven either through the reference binary or through our module."""

    def __init__(self, data_dir: Path, name: str, ranges: list[Any]) -> None:
        self.data_dir = data_dir
        self.name = name
        self.config = {"cniVersion": "1.0.0", "name": name,
                       "ipam": {"type": "host-local", "dataDir": str(data_dir), "ranges": ranges,
                                "routes": [{"dst": "0.0.0.0/0"}]}}
        self.raw = json.dumps(self.config).encode()

    def env(self, command: str, cid: str, ifname: str, args: str = "") -> dict[str, str]:
        return {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": "/run/netns/tcnihl-none",
                "CNI_IFNAME": ifname, "CNI_PATH": "/usr/lib/cni", "CNI_ARGS": args, "PATH": "/usr/sbin:/usr/bin"}

    def ref(self, command: str, cid: str, ifname: str = "eth0", args: str = "") -> dict[str, Any]:
        proc = subprocess.run([REFERENCE], input=self.raw, env=self.env(command, cid, ifname, args),
                              capture_output=True, timeout=30)
        out: dict[str, Any] = json.loads(proc.stdout) if proc.stdout.strip() else {}
        if proc.returncode != 0:
            raise CNIError(int(out.get("code", 999)), str(out.get("msg", proc.stderr.decode())))
        return out

    def ours(self, command: str, cid: str, ifname: str = "eth0", args: str = "") -> dict[str, Any]:
        req = parse_request(self.env(command, cid, ifname, args), self.raw)
        if command == "ADD":
            return host_local.add(req)
        {"DEL": host_local.delete, "CHECK": host_local.check}[command](req)
        return {}

    def add(self, side: str, cid: str, ifname: str = "eth0", args: str = "") -> list[str]:
        result = (self.ref if side == "ref" else self.ours)("ADD", cid, ifname, args)
        return [entry["address"] for entry in result["ips"]]

    def store(self) -> DiskStore:
        return DiskStore(str(self.data_dir), self.name)


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    return Pair(tmp_path / "networks", "tcnihl-interop",
                [[{"subnet": "10.250.200.0/28"}], [{"subnet": "fd10:250:200::/124"}]])


def test_alternating_adds_share_cursor_and_never_collide(pair: Pair) -> None:
    got = [pair.add("ref" if i % 2 == 0 else "ours", f"c{i}") for i in range(8)]
    assert [g[0] for g in got] == [f"10.250.200.{i}/28" for i in range(2, 10)]
    assert [g[1] for g in got] == [f"fd10:250:200::{i:x}/124" for i in range(2, 10)]
    net = pair.data_dir / pair.name
    for i in range(8):
        assert (net / f"10.250.200.{i + 2}").read_bytes() == f"c{i}\r\neth0".encode()
        assert (net / f"fd10:250:200::{i + 2:x}").read_bytes() == f"c{i}\r\neth0".encode()
    assert (net / "last_reserved_ip.0").read_bytes() == b"10.250.200.9"
    assert (net / "last_reserved_ip.1").read_bytes() == b"fd10:250:200::9"


def test_del_by_the_other_side_releases(pair: Pair) -> None:
    pair.add("ref", "r1")
    pair.add("ours", "o1")
    pair.ours("DEL", "r1")
    pair.ref("DEL", "o1")
    assert pair.store().all_reservations() == {}
    # The freed .2/.3 are not reused before the cursor wraps, whoever allocates next.
    assert pair.add("ref", "r2")[0] == "10.250.200.4/28"
    assert pair.add("ours", "o2")[0] == "10.250.200.5/28"
    pair.ours("DEL", "unknown-id")
    pair.ref("DEL", "unknown-id")


def test_duplicate_check_and_requested_ip_across_sides(pair: Pair) -> None:
    pair.add("ref", "r1")
    with pytest.raises(CNIError, match="duplicate allocation is not allowed"):
        pair.add("ours", "r1")
    with pytest.raises(CNIError, match="duplicate allocation is not allowed"):
        pair.ref("ADD", "r1")
    pair.ours("CHECK", "r1")
    pair.add("ours", "o1")
    pair.ref("CHECK", "o1")
    with pytest.raises(CNIError, match="not available"):
        pair.add("ours", "o2", args="IP=10.250.200.2")
    with pytest.raises(CNIError, match="not available"):
        pair.ref("ADD", "r2", args="IP=10.250.200.3")
    assert pair.add("ref", "r3", args="IP=10.250.200.12")[0] == "10.250.200.12/28"
    assert pair.add("ours", "o3")[0] == "10.250.200.13/28"  # our round robin follows the reference's cursor


def test_exhaustion_seen_by_both(pair: Pair) -> None:
    for i in range(13):  # .2 - .14
        pair.add("ref" if i % 3 else "ours", f"c{i}")
    with pytest.raises(CNIError, match="no IP addresses available in range set: 10.250.200.1-10.250.200.14"):
        pair.add("ours", "late")
    with pytest.raises(CNIError, match="no IP addresses available in range set"):
        pair.ref("ADD", "late")
    # Our failed ADD released what it took in no set, and left the reference's files alone.
    assert len(pair.store().all_reservations()) == 26
    pair.ref("DEL", "c5")
    assert pair.add("ours", "late")[0] == "10.250.200.7/28"


def test_concurrent_adds_from_both_sides_are_unique(tmp_path: Path) -> None:
    pair = Pair(tmp_path / "networks", "tcnihl-race", [[{"subnet": "10.250.200.64/26"}]])
    errors: list[BaseException] = []
    ours_got: list[str] = []

    def run_ours() -> None:
        try:
            for i in range(15):
                ours_got.extend(pair.add("ours", f"o{i}"))
        except BaseException as err:  # surfaced in the main thread below
            errors.append(err)

    thread = threading.Thread(target=run_ours)
    procs = [subprocess.Popen([REFERENCE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env=pair.env("ADD", f"r{i}", "eth0")) for i in range(15)]
    thread.start()
    ref_got = []
    for proc in procs:
        out, _ = proc.communicate(pair.raw, timeout=60)
        assert proc.returncode == 0, out
        ref_got.extend(entry["address"] for entry in json.loads(out)["ips"])
    thread.join(timeout=60)
    assert not errors
    allocated = ref_got + ours_got
    assert len(allocated) == 30 and len(set(allocated)) == 30
    owners = pair.store().all_reservations()
    assert {str(ip) for ip in owners} == {a.split("/")[0] for a in allocated}
    assert all(ipaddress.ip_address(a.split("/")[0]) in ipaddress.ip_network("10.250.200.64/26") for a in allocated)
