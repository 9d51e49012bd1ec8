"""`sysctl -w KEY=VALUE...` done without a process: the writes under /proc/sys that procps' sysctl makes.

Issue #14 item 2: a sysctl step is a write to a file, and spawning `sysctl` (and `nsenter` before it, for a
container's namespace) costs ~2-5 ms of a ~25 ms ADD. Scripts, `--dry-run` and rollback are unchanged: the
step still reads `sysctl -w ...` and runner.execute, the one seam, carries it out here with the effect,
output and exit status procps-ng 4.0 gives (measured on Debian 12):

  - KEY is a path under /proc/sys with dots for slashes; each KEY=VALUE is written in turn ("VALUE\\n",
    O_WRONLY|O_TRUNC), and `KEY = VALUE` is printed for each one that succeeded;
  - a KEY that does not exist: "sysctl: cannot stat /proc/sys/...: <error>"; a refused write:
    'sysctl: setting key "KEY": <error>'; the others are still written, and the exit status is 1.

A container's sysctls (`nsenter --net=PATH sysctl -w ...`) are written from a thread that entered that
network namespace (setns(2)); /proc/sys/net shows the namespace of the thread that opens it. The thread
ends with the call, so no other work ever runs in that namespace. Where entering costs more than
nsenter would (can_enter), nsenter runs.

Anything else (a KEY with a slash, where procps swaps dots and slashes; a VALUE with spaces or quotes;
other options) returns None, and the real command runs.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

CLONE_NEWNET = 0x40000000
DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)  # procps says "permission denied on key" for each
_WORD = re.compile(r"[A-Za-z0-9_.-]+=[A-Za-z0-9_.:-]+")


def parse(argv: list[str]) -> tuple[str, list[tuple[str, str]]] | None:
    """`sysctl -w K=V...` -> ("", [(K, V)...]); `nsenter --net=PATH sysctl -w K=V...` -> (PATH, ...);
    None for anything this module does not carry out itself."""
    netns = ""
    if argv[:1] == ["nsenter"] and len(argv) > 2 and argv[1].startswith("--net=") and len(argv[1]) > 6:
        netns, argv = argv[1][len("--net="):], argv[2:]
    if argv[:2] != ["sysctl", "-w"] or len(argv) < 3 or not all(_WORD.fullmatch(w) for w in argv[2:]):
        return None
    return netns, [(key, value) for key, _, value in (w.partition("=") for w in argv[2:])]


def write(settings: list[tuple[str, str]]) -> tuple[int, str, str]:
    """Write each setting under /proc/sys of this thread's network namespace -> (exit status, stdout,
    stderr) as procps' `sysctl -w` gives them."""
    rc, out, err = 0, [], []
    for key, value in settings:
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            rc = 1
            err.append(f"sysctl: cannot stat {path}: {exc.strerror}\n")
            continue
        except OSError as exc:
            rc = 1
            err.append(f'sysctl: permission denied on key "{key}"\n' if exc.errno in DENIED else
                       f'sysctl: setting key "{key}": {exc.strerror}\n')
            continue
        try:
            os.write(fd, value.encode() + b"\n")
            out.append(f"{key} = {value}\n")
        except OSError as exc:
            rc = 1
            err.append(f'sysctl: setting key "{key}": {exc.strerror}\n')
        finally:
            os.close(fd)
    return rc, "".join(out), "".join(err)


def _setns(fd: int) -> None:
    setns = getattr(os, "setns", None)  # Python 3.12+
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


T = TypeVar("T")


def in_netns(netns: str, work: Callable[[], T]) -> T:
    """work() run by a new thread that entered the network namespace `netns` (a path), and its result.

    setns(2) moves only the calling thread, and this one ends with work(), so nothing else ever runs in
    that namespace. Raises OSError when the namespace cannot be opened (its filename is `netns`) or
    entered (no filename); what work() raises is raised here.
    """
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    answer: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            _setns(fd)
            answer.append(work())
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    try:
        thread = threading.Thread(target=run, name="cniplug-in-netns")
        thread.start()
        thread.join()
    finally:
        os.close(fd)
    if failed:
        raise failed[0]
    return answer[0]


def write_in(netns: str, settings: list[tuple[str, str]]) -> tuple[int, str, str]:
    """write() inside the network namespace `netns` (a path); what nsenter says and exits with (1) when
    the namespace cannot be opened or entered."""
    try:
        return in_netns(netns, lambda: write(settings))
    except OSError as exc:
        if exc.filename == netns:
            return 1, "", f"nsenter: cannot open {netns}: {exc.strerror}\n"
        return 1, "", f"nsenter: reassociate to namespace 'ns/net' failed: {exc.strerror}\n"


def carry_out(argv: list[str]) -> tuple[int, str, str] | None:
    """Do `argv` here if it is a sysctl write this module handles -> (exit status, stdout, stderr),
    else None (run the command)."""
    parsed = parse(argv)
    if parsed is None:
        return None
    netns, settings = parsed
    if netns and not can_enter():
        return None
    return write_in(netns, settings) if netns else write(settings)


def can_enter() -> bool:
    """Entering a namespace here needs os.setns (Python 3.12+) or ctypes. Importing ctypes costs ~2 ms,
    more than the ~1.6 ms `nsenter sysctl` takes, so a one-call process (Python 3.11, no helper) runs
    nsenter; the helper imports ctypes once at its start (helper.py)."""
    return hasattr(os, "setns") or "ctypes" in sys.modules
