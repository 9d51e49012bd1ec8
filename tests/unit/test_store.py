"""DiskStore keeps the reference host-local on-disk layout byte for byte."""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cniplug.ipam.store import DiskStore, MemoryStore, Store
from cniplug.spec import ERR_INVALID_CONFIG, CNIError

V4 = ipaddress.ip_address("10.250.200.2")
V6 = ipaddress.ip_address("fd10:250:200:0:0:0:0:2")


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_reserve_writes_reference_layout(tmp_path: Path) -> None:
    store = DiskStore(str(tmp_path), "tcnihl0")
    assert not (tmp_path / "tcnihl0").exists()
    with store.lock():
        assert store.reserve(V4, "abc", "eth0", 0)
        assert store.reserve(V6, "abc", "eth0", 1)
    net = tmp_path / "tcnihl0"
    assert (net / "10.250.200.2").read_bytes() == b"abc\r\neth0"
    assert (net / "fd10:250:200::2").read_bytes() == b"abc\r\neth0"  # compressed, like Go's net.IP.String()
    assert (net / "last_reserved_ip.0").read_bytes() == b"10.250.200.2"
    assert (net / "last_reserved_ip.1").read_bytes() == b"fd10:250:200::2"
    assert (net / "lock").read_bytes() == b""
    assert mode(net) == 0o755
    assert mode(net / "10.250.200.2") == 0o644
    assert mode(net / "last_reserved_ip.0") == 0o644
    assert mode(net / "lock") == 0o750
    assert sorted(os.listdir(net)) == sorted(
        ["10.250.200.2", "fd10:250:200::2", "last_reserved_ip.0", "last_reserved_ip.1", "lock"])


def test_reserve_is_exclusive_and_keeps_first_owner(tmp_path: Path) -> None:
    store = DiskStore(str(tmp_path), "tcnihl0")
    assert store.reserve(V4, "abc", "eth0", 0)
    assert not store.reserve(V4, "other", "eth1", 0)
    assert (tmp_path / "tcnihl0" / "10.250.200.2").read_bytes() == b"abc\r\neth0"


def test_listing_ignores_other_files_and_reads_legacy(tmp_path: Path) -> None:
    store = DiskStore(str(tmp_path), "tcnihl0")
    store.reserve(V4, "abc", "eth0", 0)
    net = tmp_path / "tcnihl0"
    (net / "10.250.200.9").write_bytes(b"legacy\n")
    (net / "README").write_text("abc\r\neth0")
    (net / "010.250.200.10").write_text("abc\r\neth0")  # not a canonical IP name
    with store.lock():
        pass
    assert store.all_reservations() == {
        V4: ("abc", "eth0"), ipaddress.ip_address("10.250.200.9"): ("legacy", "")}
    assert store.last_reserved(0) == V4
    assert store.last_reserved(3) is None


def test_release_by_owner_exact_then_legacy(tmp_path: Path) -> None:
    store = DiskStore(str(tmp_path), "tcnihl0")
    store.reserve(V4, "abc", "eth0", 0)
    store.reserve(V6, "abc", "eth1", 1)
    (tmp_path / "tcnihl0" / "10.250.200.9").write_bytes(b"abc")
    assert store.owned_by("abc", "eth0") == [V4, ipaddress.ip_address("10.250.200.9")]
    assert store.release_by_owner("abc", "eth0") == [V4]  # exact matches win, legacy stays
    assert store.release_by_owner("abc", "eth0") == [ipaddress.ip_address("10.250.200.9")]
    assert store.release_by_owner("abc", "eth0") == []
    assert list(store.all_reservations()) == [V6]


def test_release_missing_is_fine_and_missing_dir_not_created(tmp_path: Path) -> None:
    store = DiskStore(str(tmp_path), "tcnihl0")
    store.release(V4)
    assert store.all_reservations() == {}
    assert store.release_by_owner("x", "eth0") == []
    assert not store.exists()
    assert not (tmp_path / "tcnihl0").exists()


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x", "x\0y"])
def test_network_name_cannot_escape(tmp_path: Path, name: str) -> None:
    with pytest.raises(CNIError) as err:
        DiskStore(str(tmp_path), name)
    assert err.value.code == ERR_INVALID_CONFIG


def test_lock_is_exclusive_flock(tmp_path: Path) -> None:
    import fcntl

    store = DiskStore(str(tmp_path), "tcnihl0")
    with store.lock():
        fd = os.open(tmp_path / "tcnihl0" / "lock", os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(tmp_path / "tcnihl0" / "lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released after the context
    finally:
        os.close(fd)


@pytest.mark.parametrize("kind", ["disk", "memory"])
def test_memory_and_disk_behave_alike(tmp_path: Path, kind: str) -> None:
    store: Store = DiskStore(str(tmp_path), "tcnihl0") if kind == "disk" else MemoryStore()
    assert store.reserve(V4, " abc ", "eth0", 2)
    assert not store.reserve(V4, "abc", "eth0", 2)
    assert store.all_reservations() == {V4: ("abc", "eth0")}
    assert store.last_reserved(2) == V4
    assert store.owned_by("abc", "eth0") == [V4]
    assert store.owned_by("abc", "eth1") == []
    store.release(V4)
    assert store.all_reservations() == {}


@pytest.mark.parametrize("fail_on", ["reservation", "cursor"])
def test_a_short_write_then_enospc_leaves_no_half_written_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               fail_on: str) -> None:
    """A nearly full disk: the kernel writes part of the data, then says ENOSPC. Nothing may stay."""
    import errno

    from cniplug.ipam import store as store_module

    real_write = os.write
    writes: list[int] = []

    first_failing = 1 if fail_on == "reservation" else 2  # the reservation file is written first

    def short_write(fd: int, data: bytes) -> int:
        writes.append(fd)
        if len(writes) < first_failing:
            return real_write(fd, data)
        if len(writes) == first_failing:
            return real_write(fd, data[:1])  # the disk took one byte
        raise OSError(errno.ENOSPC, "No space left on device")

    st = DiskStore(str(tmp_path), "net")
    monkeypatch.setattr(store_module.os, "write", short_write)
    with pytest.raises(CNIError) as e:
        st.reserve(V4, "c1", "eth0", 0)
    assert "No space left" in e.value.details
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "net")) == [], "a half-written reservation or cursor stayed"
