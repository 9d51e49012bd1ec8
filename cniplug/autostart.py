"""Start the warm helper on demand: what makes an installed plugin fast from its second call on.

An executable written by `cniplug install` names its own helper socket (`/run/cniplug/helper-3-<install
id>.sock`; every install gets a new id). When a call finds no helper there, the executable runs the call
itself, and then, through `start`, leaves a helper behind for the calls that follow:

- one at a time: the decision is taken under an flock on `<socket>.lock`, and the helper inherits the
  locked file and holds it as long as it lives, so concurrent first calls start one helper, not many;
- detached (its own session, stdio on /dev/null and its log file), with a bare environment: every call
  it serves brings the caller's environment;
- only from the namespaces of pid 1: a helper serves callers in its own namespaces only (helper.py),
  so one started from `ip netns exec` or a container would serve nobody else (and where pid 1 cannot
  be inspected, such a helper serves no call and exits when idle: declined calls do not count);
- it exits after `idle` seconds without a call, and as soon as the executable that started it has been
  replaced (a new `cniplug install`): after an upgrade no call reaches old code, since the new
  executables name a new socket anyway.

Nothing here is needed for a correct answer: any failure to start a helper is ignored (the call has
already been answered).
"""

from __future__ import annotations

import fcntl
import os
import sys
import time

LOG_SUFFIX = ".log"
LOCK_SUFFIX = ".lock"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # the helper's own; calls bring theirs


def same_namespaces_as_init() -> bool | None:
    """True when this process shares pid 1's network and mount namespaces and root directory, False
    when it does not, None when pid 1 cannot be inspected (a sandbox without CAP_SYS_PTRACE: then a
    helper is started anyway; one in the wrong namespaces declines every call, serves none and so
    exits after its idle time)."""
    try:
        for path in ("ns/net", "ns/mnt", "root"):
            mine, init = os.stat(f"/proc/self/{path}"), os.stat(f"/proc/1/{path}")
            if (mine.st_dev, mine.st_ino) != (init.st_dev, init.st_ino):
                return False
    except PermissionError:
        return None
    except OSError:
        return False
    return True


def start(socket_path: str, idle: int, paths: list[str], watch: str, metrics: str = "") -> int:
    """Start a detached `cniplug helper` serving `socket_path` unless one runs or is starting.

    `idle`: seconds without a call after which it exits; `paths`: the import path the executable uses
    (the helper runs the same code); `watch`: the executable's path, whose replacement makes the helper
    exit; `metrics`: where it serves Prometheus metrics ("" none). Returns the new helper's pid, or 0
    when none was started (one holds the lock, not root, another
    namespace than pid 1's, or the start failed). Writes one line on stderr when it starts one.
    """
    if os.geteuid() != 0 or same_namespaces_as_init() is False:
        return 0
    from cniplug import rundir

    try:
        rundir.ensure()
        lock = os.open(socket_path + LOCK_SUFFIX, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError:
        return 0
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(lock, 0)
        os.write(lock, os.fsencode(watch))  # whose helper this was: a later install into its bin dir cleans up
    except OSError:  # a helper holds it: running, or starting right now
        os.close(lock)
        return 0
    try:
        return spawn(socket_path, idle, paths, watch, lock, metrics)
    except OSError:
        return 0
    finally:
        os.close(lock)  # the helper keeps its own copy, and with it the lock


def spawn(socket_path: str, idle: int, paths: list[str], watch: str, lock: int, metrics: str = "") -> int:
    """Double-fork a helper into its own session; its pid. The helper inherits the locked fd `lock`."""
    options = ["helper", "--socket", socket_path, "--idle-exit", str(idle), "--lock-fd", str(lock), "--watch", watch]
    if metrics:
        options += ["--metrics", metrics]
    if getattr(sys, "frozen", False):  # the self-contained runtime (bundle.py): its executable is `cniplug`
        argv = [sys.executable, *options]
    else:
        code = f"import sys; sys.path[:0] = {paths!r}; from cniplug.cli import main; main()"
        argv = [sys.executable, "-IS", "-c", code, *options]
    log = os.open(socket_path + LOG_SUFFIX, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW,
                  0o600)
    pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:  # intermediate: new session, fork the helper, exit so that it is nobody's child
        try:
            os.setsid()
            helper = os.fork()
            if helper == 0:
                null = os.open("/dev/null", os.O_RDWR)
                os.dup2(null, 0)
                os.dup2(log, 1)
                os.dup2(log, 2)
                os.set_inheritable(lock, True)
                os.chdir("/")
                os.umask(0o022)
                os.execve(sys.executable, argv, {"PATH": PATH})
            os.write(pid_w, helper.to_bytes(4, "big"))
        finally:
            os._exit(0)
    os.close(pid_w)
    os.close(log)
    data = os.read(pid_r, 4)
    os.close(pid_r)
    os.waitpid(child, 0)
    pid = int.from_bytes(data, "big") if len(data) == 4 else 0
    if pid:
        print(f"cniplug: started a helper (pid {pid}) on {socket_path} for the calls that follow; it exits after "
              f"{idle} s without a call (`cniplug helper --status`)", file=sys.stderr)
    return pid


def wait_for(socket_path: str, timeout: float = 10.0) -> bool:
    """True once something listens on `socket_path` (tests, `cniplug install --start-helper`)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if os.path.exists(socket_path):
            return True
        time.sleep(0.05)
    return False
