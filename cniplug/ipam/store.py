"""host-local reservation stores: the reference on-disk layout, and an in-memory twin for tests.

Disk layout (shared with the reference Go plugin, so a node can switch between the two):

    <dataDir>/<network>/            mode 0755, created on demand
        <ip>                        "<containerID>\\r\\n<ifname>", no newline, 0644, O_CREAT|O_EXCL
        last_reserved_ip.<N>        last address reserved from range set N, no newline
        lock                        empty, 0750; flock(LOCK_EX) for the whole store

Files written by pre-0.7 plugins hold only "<containerID>" ("legacy"); they are reported with ifname "".
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from cniplug.spec import ERR_INTERNAL, ERR_INVALID_CONFIG, CNIError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Owner = tuple[str, str]

LINE_BREAK = "\r\n"
LAST_RESERVED_PREFIX = "last_reserved_ip."
LOCK_NAME = "lock"
DIR_MODE = 0o755
FILE_MODE = 0o644
LOCK_MODE = 0o750


def owner_content(container_id: str, ifname: str) -> str:
    return container_id.strip() + LINE_BREAK + ifname


def parse_owner(content: str) -> Owner:
    """File content -> (id, ifname); a legacy id-only file gives (id, "")."""
    text = content.strip()
    if LINE_BREAK in text:
        cid, ifname = text.split(LINE_BREAK, 1)
        return cid, ifname
    return text, ""


def matches(owner: Owner, container_id: str, ifname: str) -> bool:
    return owner == (container_id.strip(), ifname)


def matches_legacy(owner: Owner, container_id: str) -> bool:
    return owner == (container_id.strip(), "")


def ip_from_name(name: str) -> IPAddress | None:
    """A directory entry name -> its IP, or None for lock, last_reserved_ip.N and strangers."""
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return None
    return ip if str(ip) == name else None


class Store(Protocol):
    def exists(self) -> bool: ...
    def lock(self) -> AbstractContextManager[None]: ...
    def reserve(self, ip: IPAddress, container_id: str, ifname: str, set_index: int) -> bool: ...
    def last_reserved(self, set_index: int) -> IPAddress | None: ...
    def release(self, ip: IPAddress) -> None: ...
    def release_by_owner(self, container_id: str, ifname: str) -> list[IPAddress]: ...
    def owned_by(self, container_id: str, ifname: str) -> list[IPAddress]: ...
    def all_reservations(self) -> dict[IPAddress, Owner]: ...


def owner_ips(reservations: dict[IPAddress, Owner], container_id: str, ifname: str) -> list[IPAddress]:
    """IPs held by (id, ifname) or by a legacy id-only file of the same id (reference GetByID)."""
    return sorted(
        (ip for ip, owner in reservations.items()
         if matches(owner, container_id, ifname) or matches_legacy(owner, container_id)),
        key=lambda ip: (ip.version, ip),
    )


def release_targets(reservations: dict[IPAddress, Owner], container_id: str, ifname: str) -> list[IPAddress]:
    """Exact (id, ifname) matches; only when there are none, legacy id-only files (reference ReleaseByID)."""
    exact = [ip for ip, owner in reservations.items() if matches(owner, container_id, ifname)]
    if not exact:
        exact = [ip for ip, owner in reservations.items() if matches_legacy(owner, container_id)]
    return sorted(exact, key=lambda ip: (ip.version, ip))


class MemoryStore:
    """Same behaviour as DiskStore, kept in dicts (unit tests, dry-run planning)."""

    def __init__(self) -> None:
        self.reservations: dict[IPAddress, Owner] = {}
        self.last: dict[int, IPAddress] = {}
        self.lock_count = 0

    def exists(self) -> bool:
        return True

    @contextmanager
    def lock(self) -> Iterator[None]:
        self.lock_count += 1
        yield

    def reserve(self, ip: IPAddress, container_id: str, ifname: str, set_index: int) -> bool:
        if ip in self.reservations:
            return False
        self.reservations[ip] = parse_owner(owner_content(container_id, ifname))
        self.last[set_index] = ip
        return True

    def last_reserved(self, set_index: int) -> IPAddress | None:
        return self.last.get(set_index)

    def release(self, ip: IPAddress) -> None:
        self.reservations.pop(ip, None)

    def release_by_owner(self, container_id: str, ifname: str) -> list[IPAddress]:
        ips = release_targets(self.reservations, container_id, ifname)
        for ip in ips:
            self.release(ip)
        return ips

    def owned_by(self, container_id: str, ifname: str) -> list[IPAddress]:
        return owner_ips(self.reservations, container_id, ifname)

    def all_reservations(self) -> dict[IPAddress, Owner]:
        return dict(self.reservations)


def snapshot(store: Store, set_count: int) -> MemoryStore:
    """An in-memory copy of `store` (reservations + cursors of `set_count` sets): plan without writing."""
    mem = MemoryStore()
    mem.reservations = store.all_reservations()
    for index in range(set_count):
        last = store.last_reserved(index)
        if last is not None:
            mem.last[index] = last
    return mem


def check_network_name(network: str) -> str:
    """The network name becomes a directory name: it must stay one path component inside dataDir."""
    if not network or network in (".", "..") or "/" in network or "\0" in network:
        raise CNIError(ERR_INVALID_CONFIG, f"network name {network!r} cannot be used as a directory name",
                       "it must be a single path component (no '/', not '.' or '..')")
    return network


class DiskStore:
    """The reference host-local store under <data_dir>/<network>/."""

    def __init__(self, data_dir: str, network: str) -> None:
        self.data_dir = data_dir
        self.network = check_network_name(network)
        self.dir = os.path.join(data_dir, network)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def ip_path(self, ip: IPAddress) -> str:
        return self.path(str(ip))

    def last_reserved_path(self, set_index: int) -> str:
        return self.path(f"{LAST_RESERVED_PREFIX}{set_index}")

    def lock_path(self) -> str:
        return self.path(LOCK_NAME)

    def exists(self) -> bool:
        return os.path.isdir(self.dir)

    def read_only(self) -> bool:
        """True when the store's filesystem is mounted read-only (statvfs ST_RDONLY)."""
        try:
            return bool(os.statvfs(self.dir).f_flag & os.ST_RDONLY)
        except OSError:
            return False

    def ensure_dir(self) -> None:
        try:
            os.makedirs(self.dir, mode=DIR_MODE, exist_ok=True)
        except OSError as err:
            raise CNIError(ERR_INTERNAL, f"cannot create host-local store {self.dir}", str(err)) from None

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive flock on <dir>/lock, the same lock the Go plugin takes (creates dir and lock file)."""
        self.ensure_dir()
        try:
            fd = os.open(self.lock_path(), os.O_RDONLY | os.O_CREAT, LOCK_MODE)
        except OSError as err:
            raise CNIError(ERR_INTERNAL, f"cannot open lock file {self.lock_path()}", str(err)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the only descriptor drops the flock

    def reserve(self, ip: IPAddress, container_id: str, ifname: str, set_index: int) -> bool:
        """Atomically claim `ip` (O_EXCL); False when someone holds it. Updates last_reserved_ip.<set_index>."""
        self.ensure_dir()
        path = self.ip_path(ip)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            return False
        except OSError as err:
            raise CNIError(ERR_INTERNAL, f"cannot reserve {ip} in {self.dir}", str(err)) from None
        try:
            try:
                _write_all(fd, owner_content(container_id, ifname).encode())
            finally:
                os.close(fd)
        except OSError as err:  # e.g. ENOSPC: no half-written reservation stays behind
            _unlink(path)
            raise CNIError(ERR_INTERNAL, f"cannot write reservation {path}", str(err)) from None
        self._write_last_reserved(ip, set_index)
        return True

    def _write_last_reserved(self, ip: IPAddress, set_index: int) -> None:
        """Replace last_reserved_ip.<N> atomically (a temporary file renamed over it), so a full disk
        leaves the old cursor, never a truncated one."""
        path = self.last_reserved_path(set_index)
        tmp = f"{path}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            try:
                _write_all(fd, str(ip).encode())
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as err:
            # Like the reference this fails the reservation; undo the IP file so the caller has nothing to free.
            _unlink(tmp)
            _unlink(self.ip_path(ip))
            raise CNIError(ERR_INTERNAL, f"cannot write {path}", str(err)) from None

    def last_reserved(self, set_index: int) -> IPAddress | None:
        try:
            with open(self.last_reserved_path(set_index), encoding="utf-8") as f:
                text = f.read().strip()
        except (OSError, UnicodeDecodeError):
            return None
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            return None

    def release(self, ip: IPAddress) -> None:
        _unlink(self.ip_path(ip))

    def release_by_owner(self, container_id: str, ifname: str) -> list[IPAddress]:
        ips = release_targets(self._reservations_of(container_id), container_id, ifname)
        for ip in ips:
            self.release(ip)
        return ips

    def owned_by(self, container_id: str, ifname: str) -> list[IPAddress]:
        return owner_ips(self._reservations_of(container_id), container_id, ifname)

    def all_reservations(self) -> dict[IPAddress, Owner]:
        """Every reservation file; a missing directory means no reservations (and is not created)."""
        out: dict[IPAddress, Owner] = {}
        for name, owner in sorted(self._scan()):
            ip = ip_from_name(name)
            if ip is not None:
                out[ip] = owner
        return out

    def _reservations_of(self, container_id: str) -> dict[IPAddress, Owner]:
        """The reservations whose owner has this id. Every file is read (the reference does so on each ADD
        too), but only the matches are parsed as addresses: that keeps ADD cheap on a full network."""
        cid = container_id.strip()
        out: dict[IPAddress, Owner] = {}
        for name, owner in self._scan():
            if owner[0] == cid:
                ip = ip_from_name(name)
                if ip is not None:
                    out[ip] = owner
        return out

    def _scan(self) -> list[tuple[str, Owner]]:
        """(entry name, owner) for every entry but the lock and cursor files."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        except OSError as err:
            raise CNIError(ERR_INTERNAL, f"cannot list host-local store {self.dir}", str(err)) from None
        out = []
        for name in names:
            if name == "lock" or name.startswith("last_reserved_ip"):
                continue
            content = _read_text(self.path(name))
            if content is not None:
                out.append((name, parse_owner(content)))
        return out


def _write_all(fd: int, data: bytes) -> None:
    """os.write until everything is written: a short write (a nearly full disk) is not success.
    Raises OSError (ENOSPC, EIO, ...) as the kernel reports it."""
    while data:
        data = data[os.write(fd, data):]


def _read_text(path: str) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # vanished
        return None
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError:  # a directory: not a reservation
        return None
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        if err.errno != errno.ENOENT:
            raise CNIError(ERR_INTERNAL, f"cannot remove {path}", str(err)) from None
