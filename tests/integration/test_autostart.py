"""Fast by default (issue #14 item 1): after `cniplug install` the first call that finds no helper starts
one, which serves the calls that follow, exits when idle or when the install is replaced, and is
never needed for a correct answer."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

RUN = Path("/run/cniplug")
VERSION_ENV = {"CNI_COMMAND": "VERSION", "CNIPLUG_HELPER_STATS": "1"}


def socket_of(bin_dir: Path) -> str:
    """The helper socket an installed executable names (from the wrapper `cniplug install` wrote)."""
    text = (bin_dir / "cniplug-bridge").read_text()
    start = text.index("'socket': '") + len("'socket': '")
    return text[start:text.index("'", start)]


def info(sock: str) -> dict[str, object] | None:
    try:
        return json.loads(Path(sock + ".json").read_text())
    except (OSError, ValueError):
        return None


def wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def alive(pid: int) -> bool:
    """Running, not a zombie (a detached helper's parent is the machine's init, which may reap it late)."""
    from cniplug.helper import alive as running

    return running(pid)


INSTALLED: dict[Path, set[str]] = {}  # bin dir -> the helper sockets its installs named (for clean-up)


def install(bin_dir: Path, *extra: str) -> None:
    subprocess.run([sys.executable, "-m", "cniplug", "install", "--bin-dir", str(bin_dir), *extra], check=True,
                   capture_output=True)
    if "--no-auto-helper" not in extra:
        INSTALLED.setdefault(bin_dir, set()).add(socket_of(bin_dir))


def call(bin_dir: Path, env: dict[str, str] = VERSION_ENV,
         prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, str(bin_dir / "cniplug-bridge")], input="", text=True, capture_output=True,
                          env=env, timeout=60)


def served_by_helper(proc: subprocess.CompletedProcess[str]) -> bool:
    # The helper's child appends its CPU line to stderr when the environment asks for it (bench's hook).
    return proc.returncode == 0 and "cniplug-helper-stats" in proc.stderr


@pytest.fixture
def bin_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh install dir; afterwards every helper its installs started is ended by pid, files removed."""
    path = tmp_path / "bin"
    yield path
    for sock in INSTALLED.pop(path, set()):
        record = info(sock)
        if record and isinstance(record.get("pid"), int) and str(record.get("watch", "")).startswith(str(path)):
            pid = int(record["pid"])  # type: ignore[call-overload]
            if alive(pid):
                os.kill(pid, signal.SIGTERM)
                wait(lambda pid=pid: not alive(pid), 10, f"helper {pid} ends")  # type: ignore[misc]
        for suffix in ("", ".json", ".lock", ".log"):
            if os.path.exists(sock + suffix):
                os.unlink(sock + suffix)


def test_first_call_starts_a_helper_that_serves_the_next_and_exits_when_idle(bin_dir: Path) -> None:
    install(bin_dir, "--helper-idle", "3")
    sock = socket_of(bin_dir)
    assert not os.path.exists(sock)
    first = call(bin_dir)
    assert first.returncode == 0 and json.loads(first.stdout)["supportedVersions"]
    assert not served_by_helper(first), "the first call has no helper yet: it runs standalone"
    assert "started a helper" in first.stderr
    wait(lambda: os.path.exists(sock), 10, "the helper listens")
    second = call(bin_dir)
    assert second.stdout == first.stdout
    assert served_by_helper(second), second.stderr
    wait(lambda: (info(sock) or {}).get("calls") == 1, 5, "the helper counts the call")  # its loop records it
    record = info(sock)
    assert record and record["idle_exit"] == 3
    status = subprocess.run([sys.executable, "-m", "cniplug", "helper", "--status"], capture_output=True, text=True)
    assert f"{sock}: serving, pid {record['pid']}" in status.stdout and status.returncode == 0
    pid = int(record["pid"])  # type: ignore[call-overload]
    wait(lambda: not alive(pid), 15, "the helper exits after 3 s without a call")
    assert not os.path.exists(sock) and not os.path.exists(sock + ".json")
    assert "exits: no call for 3 s; 1 calls served" in Path(sock + ".log").read_text()
    third = call(bin_dir)  # and the next call starts a new one
    assert third.returncode == 0 and not served_by_helper(third)
    wait(lambda: os.path.exists(sock), 10, "a new helper listens")


def test_a_killed_helper_is_replaced_and_no_call_fails(bin_dir: Path) -> None:
    install(bin_dir, "--helper-idle", "60")
    sock = socket_of(bin_dir)
    call(bin_dir)
    wait(lambda: info(sock) is not None, 10, "the helper listens")
    pid = int(info(sock)["pid"])  # type: ignore[index,call-overload]
    os.kill(pid, signal.SIGKILL)
    wait(lambda: not alive(pid), 10, "the helper is gone")
    after = call(bin_dir)  # the socket file is still there, nobody listens: standalone, and a new helper
    assert after.returncode == 0 and json.loads(after.stdout)["supportedVersions"]
    wait(lambda: (info(sock) or {}).get("pid") not in (None, pid), 10, "a new helper is started")
    new = int(info(sock)["pid"])  # type: ignore[index,call-overload]
    assert alive(new) and served_by_helper(call(bin_dir))


def test_after_a_new_install_no_call_reaches_the_old_helper(bin_dir: Path) -> None:
    install(bin_dir, "--helper-idle", "60")
    old_sock = socket_of(bin_dir)
    call(bin_dir)
    wait(lambda: info(old_sock) is not None, 10, "the first install's helper listens")
    old_pid = int(info(old_sock)["pid"])  # type: ignore[index,call-overload]
    install(bin_dir, "--helper-idle", "60")  # the upgrade
    new_sock = socket_of(bin_dir)
    assert new_sock != old_sock
    wait(lambda: not alive(old_pid), 10, "the old helper sees its executable replaced and exits")
    assert not os.path.exists(old_sock)
    assert "was replaced (a new install)" in Path(old_sock + ".log").read_text()
    first = call(bin_dir)
    assert first.returncode == 0 and not served_by_helper(first)
    wait(lambda: info(new_sock) is not None, 10, "the new install's helper listens")
    assert served_by_helper(call(bin_dir))
    assert info(new_sock)["pid"] != old_pid  # type: ignore[index]


def test_concurrent_first_calls_start_one_helper(bin_dir: Path) -> None:
    install(bin_dir, "--helper-idle", "60")
    sock = socket_of(bin_dir)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: call(bin_dir), range(8)))
    assert all(r.returncode == 0 for r in results)
    wait(lambda: info(sock) is not None, 10, "a helper listens")
    time.sleep(2)  # any second helper would have started by now
    started = [r for r in results if "started a helper" in r.stderr]
    assert len(started) == 1, [r.stderr for r in results]
    helpers = {}  # pid -> parent pid, of every process serving this socket
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and sock.encode() in (entry / "cmdline").read_bytes():
                helpers[entry.name] = (entry / "stat").read_text().split()[3]
        except OSError:
            continue
    parents = [pid for pid, ppid in helpers.items() if ppid not in helpers]
    assert len(parents) == 1, helpers  # one helper (its pool children are its own children)


def test_no_auto_helper_starts_none(bin_dir: Path) -> None:
    install(bin_dir, "--no-auto-helper")
    wrapper = (bin_dir / "cniplug-bridge").read_text()
    assert "None)" in wrapper
    before = set(os.listdir(RUN))
    for _ in range(2):
        proc = call(bin_dir, {"CNI_COMMAND": "VERSION", "CNIPLUG_HELPER_SOCKET": "/run/cniplug/tas-none.sock"})
        assert proc.returncode == 0 and "started a helper" not in proc.stderr
        proc = call(bin_dir, {"CNI_COMMAND": "VERSION", "CNIPLUG_NO_HELPER": "1"})
        assert proc.returncode == 0 and "started a helper" not in proc.stderr
    assert not {n for n in set(os.listdir(RUN)) - before if n.startswith("helper-")}


def test_a_helper_started_from_another_namespace_serves_nobody_and_leaves(bin_dir: Path) -> None:
    """From a private mount namespace (as `ip netns exec` makes): where pid 1 can be inspected no helper
    starts; where it cannot (sandboxes), the one started declines the host's calls (they still succeed,
    standalone) and, serving none, exits after its idle time although calls keep coming."""
    install(bin_dir, "--helper-idle", "3")
    sock = socket_of(bin_dir)
    first = call(bin_dir, {"CNI_COMMAND": "VERSION"}, prefix=("unshare", "-m", "--propagation", "private"))
    assert first.returncode == 0
    try:
        wait(lambda: info(sock) is not None, 3, "a helper from the private mount namespace")
    except AssertionError:  # pid 1 could be inspected: none was started
        assert "started a helper" not in first.stderr
        return
    foreign = int(info(sock)["pid"])  # type: ignore[index,call-overload]
    end = time.monotonic() + 15
    while alive(foreign) and time.monotonic() < end:
        proc = call(bin_dir)
        assert proc.returncode == 0 and json.loads(proc.stdout)["supportedVersions"]
        if alive(foreign) and info(sock) and info(sock)["pid"] == foreign:  # type: ignore[index]
            assert not served_by_helper(proc), "a host call served by a helper in another mount namespace"
        time.sleep(0.5)
    assert not alive(foreign), "a helper that declines every call stayed beyond its idle time"
    assert "0 calls served" in Path(sock + ".log").read_text()
    call(bin_dir)  # now a host call starts a helper of the host's own
    wait(lambda: (info(sock) or {}).get("pid") not in (None, foreign), 10, "a host helper")
    assert served_by_helper(call(bin_dir))


def cache_files(template_root: Path, names: list[str]) -> list[Path]:
    """The bytecode cache files jinja2 keeps for these templates under `template_root`."""
    from cniplug import render

    cache = render.environment().bytecode_cache
    assert cache is not None
    return [RUN / "jinja" / f"__jinja2_{cache.get_cache_key(n, str(template_root / n))}.cache" for n in names]


def test_install_compiles_every_template_so_no_call_has_to(tmp_path: Path) -> None:
    from cniplug import render

    root = render.templates_dir()
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.j2"))
    files = cache_files(root, names)
    for f in files:
        f.unlink(missing_ok=True)
    install(tmp_path / "bin", "--no-auto-helper")
    assert len(names) > 20 and [f for f in files if not f.is_file()] == []


def test_an_install_forgets_only_its_own_bin_dirs_exited_helpers(bin_dir: Path, tmp_path: Path) -> None:
    """The lock and log files of a helper that has exited go at the next install into the same bin dir;
    an install into another one (another runtime on the node, a test beside this one) leaves them."""
    install(bin_dir, "--helper-idle", "1")
    sock = socket_of(bin_dir)
    call(bin_dir)
    wait(lambda: info(sock) is not None, 10, "the helper listens")
    pid = int(info(sock)["pid"])  # type: ignore[index,call-overload]
    wait(lambda: not alive(pid), 15, "the helper exits after 1 s without a call")
    files = [sock + ".lock", sock + ".log"]
    assert all(os.path.exists(f) for f in files)
    install(tmp_path / "other-bin", "--no-auto-helper")
    assert all(os.path.exists(f) for f in files), "an install into another bin dir removed them"
    install(bin_dir, "--no-auto-helper")
    assert not any(os.path.exists(f) for f in files), "the next install into its own bin dir kept them"
