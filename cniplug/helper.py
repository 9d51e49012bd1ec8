"""`cniplug helper`: a warm process that runs plugin calls for the installed executables.

Starting a plugin costs an interpreter plus the import of jinja2 and our modules (~100 ms); the helper pays that
once. Each call arrives on a root-only unix socket (peer must be uid 0) and is taken by one of POOL
children forked in advance, which runs it with the caller's environment and stdin, exactly as the
standalone process would, sends back exit code, stdout and stderr, and exits; the helper forks the
next one. The plugins never depend on it (fastpath.py falls back).
"""

from __future__ import annotations

import ctypes
import gc
import io
import json
import logging
import os
import resource
import select
import signal
import socket
import struct
import sys
import tempfile
import time
from importlib import import_module

from cniplug import __version__, fastpath, rundir

# Everything a call imports, so that no child pays for an import (cli pulls in argparse: ~4 ms): every
# plugin type's module (cli.PLUGINS) and these.
PRELOAD = ("cniplug.cli", "cniplug.ipam.delegate")
POOL = 4  # children waiting in accept() at any time
DECLINED = 1 << 31  # set in the pid a child reports when it declined its call (pids are < 2**22)
LIBC = ctypes.CDLL(None, use_errno=True)


def preload() -> None:
    """Import every plugin and compile every plugin template once, before the children are forked."""
    from cniplug import cli, render

    for name in (*PRELOAD, *cli.PLUGINS.values()):
        import_module(name)
    root = render.templates_dir()
    for path in sorted(root.rglob("*.sh.j2")):
        if path.relative_to(root).parts[0] != "tutorial":
            render.environment().get_template(path.relative_to(root).as_posix())
    try:
        warm_up()
    except Exception as exc:  # only an optimisation: serve anyway
        print(f"cniplug helper: warm-up skipped: {type(exc).__name__}: {exc}", file=sys.stderr)


def warm_up() -> None:
    """Run a --dry-run ADD and DEL of bridge and ptp once, so that what the first call of any process
    fills lazily (regex and Jinja caches, ...) is already filled in the helper and shared with every
    child. Dry runs change nothing: probes only read, and IPAM plans without reserving."""
    from cniplug import cli, skel

    with tempfile.TemporaryDirectory(prefix="cniplug-warm-up-") as tmp:
        for plugin in ("cniplug-bridge", "cniplug-ptp"):
            config = {"cniVersion": "1.0.0", "name": "cniplug-warm-up", "type": plugin, "bridge": "cniplugwarm0",
                      "isGateway": True, "ipMasq": True,
                      "ipam": {"type": "cniplug-host-local", "subnet": "192.0.2.0/24", "dataDir": tmp}}
            for verb in ("ADD", "DEL"):
                env = {"CNI_COMMAND": verb, "CNI_CONTAINERID": "warm-up", "CNI_NETNS": "/proc/self/ns/net",
                       "CNI_IFNAME": "eth0", "CNI_PATH": "/nonexistent"}
                handlers, about = cli.plugin_handlers(plugin)
                skel.run(handlers, about, argv=["--dry-run"], environ=env,
                         stdin=io.BytesIO(json.dumps(config).encode()), stdout=io.StringIO())


NAMESPACES = ("net", "mnt", "user")


def foreign_context(pid: int) -> str:
    """Why a call from process `pid` (the peer, from SO_PEERCRED) must not run here, "" when it may.

    Only environment, argv and stdin travel over the socket; everything else a call depends on comes
    from the process that runs it. A call from another network, mount or user namespace or another root
    directory (`ip netns exec`, a runtime in a container sharing /run) would run in the helper's, so it
    is declined and the client runs it itself. A pid we cannot look at (0: in a pid namespace the helper
    cannot see) is declined too.
    """
    if pid <= 0:
        return "caller not visible from the helper's pid namespace"
    try:
        for kind in NAMESPACES:
            mine, theirs = os.stat(f"/proc/self/ns/{kind}"), os.stat(f"/proc/{pid}/ns/{kind}")
            if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
                return f"caller is in another {kind} namespace"
        mine, theirs = os.stat("/"), os.stat(f"/proc/{pid}/root")
        if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
            return "caller has another root directory"
    except OSError as exc:
        return f"cannot inspect the caller: {exc.strerror}"
    return ""


def adopt_context(pid: int) -> str:
    """Take the caller's umask and working directory, as a standalone plugin would have them.
    Returns "" on success, else why not (then the call is declined)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            umask = next((line.split()[1] for line in f if line.startswith("Umask:")), "")
        os.chdir(f"/proc/{pid}/cwd")
    except OSError as exc:
        return f"cannot take the caller's umask and directory: {exc.strerror}"
    if not umask:
        return "caller's umask unknown"
    os.umask(int(umask, 8))
    return ""


def serve_one(conn: socket.socket, pid: int, reason: str, done_w: int = -1, accepted: float = 0.0) -> None:
    """In the forked child: run one plugin call from process `pid` and answer, or decline it with
    `reason` when it would not run exactly as in the caller (foreign_context). With `done_w` >= 0 (the
    helper keeps metrics), then write the call's record there (metrics.call_record). Never returns."""
    from cniplug import cli, skel

    began = time.monotonic()
    code = 1
    plugin, env, stdin = "", dict[str, str](), b""
    want_stats = False
    out = io.StringIO()
    err = io.StringIO()
    try:
        plugin, argv, env, stdin = fastpath.decode_request(fastpath.read_all(conn))
        if reason:
            conn.sendall(fastpath.encode_decline(reason))
            os._exit(0)
        want_stats = bool(env.get(fastpath.STATS_ENV))
        os.environ.clear()
        os.environ.update(env)
        sys.stderr = err
        logging.getLogger("cniplug").handlers.clear()
        handlers, about = cli.plugin_handlers(plugin)
        code = skel.run(handlers, about, argv=argv, environ=env, stdin=io.BytesIO(stdin), stdout=out)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except (cli.UsageError, ValueError) as exc:  # an unknown plugin name, a request that is not ours
        err.write(f"cniplug helper: {exc}\n")
        code = 2
    except BaseException as exc:  # report, never hang the caller
        err.write(f"cniplug helper: {type(exc).__name__}: {exc}\n")
        code = 1
    try:
        conn.sendall(fastpath.encode_answer(code, out.getvalue().encode(), err.getvalue().encode(),
                                               stats(accepted) if want_stats else b""))
        conn.close()  # the caller has its answer; what follows is the helper's business
        if done_w >= 0:
            from cniplug import metrics

            os.write(done_w, metrics.call_record(plugin, env, stdin, code, out.getvalue(), time.monotonic() - began))
    finally:
        os._exit(0)


def stats(accepted: float = 0.0) -> bytes:
    """This call's CPU (this child and the commands it waited for), peak RSS and, when `accepted` (the
    time.monotonic() at accept) is given, the wall time from accept to the answer, for `cniplug bench`."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    served = f" serve_ms={(time.monotonic() - accepted) * 1000:.2f}" if accepted else ""
    return f"cpu_ms={cpu * 1000:.2f} maxrss_kb={max(me.ru_maxrss, kids.ru_maxrss)}{served}".encode()


def peer_cred(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the connected peer (SO_PEERCRED), as seen from the helper's namespaces."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return int(pid), int(uid)


def main(path: str = fastpath.SOCKET, idle_exit: int = 0, lock_fd: int = -1, watch: str = "",
         metrics_address: str = "") -> int:
    """`cniplug helper`: serve on the unix socket `path` until SIGTERM; 0. 1 when not root, 2 for a relative
    path; OSError when the socket cannot be made (`cniplug` prints it on one line).

    `idle_exit` > 0: exit after that many seconds without a call. `lock_fd` >= 0: an inherited fd holding
    the flock that makes this the only helper started for `path` (autostart.py); held until exit.
    `watch`: the executable that started it; exit as soon as that file is replaced (a new install).
    `metrics_address` ("127.0.0.1:PORT"): serve Prometheus metrics there (metrics.py); a port that cannot
    be bound is reported in the log and the helper serves without. While it serves, `path`.json says who
    it is and how busy (status()).
    """
    if os.geteuid() != 0:
        print("cniplug helper: must run as root", file=sys.stderr)
        return 1
    if not os.path.isabs(path):
        print(f"cniplug helper: --socket must be an absolute path, not {path!r}", file=sys.stderr)
        return 2
    if lock_fd >= 0:
        os.set_inheritable(lock_fd, False)  # not into the commands the calls run
    watched = file_id(watch)
    preload()
    if os.path.dirname(path) == rundir.RUN_DIR:
        rundir.ensure()
    else:  # a private path (tests): made 0700 if missing, an existing directory is left as it is
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    other = serving(path)
    if other:
        print(f"cniplug helper: helper {other} already serves {path}; stop it first", file=sys.stderr)
        return 1
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o077)
    try:
        server.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    server.listen(128)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    # SIGTERM/SIGINT only set a flag and wake the loop (through the wakeup fd): an exception raised from a
    # handler can land anywhere, e.g. in logging's at-fork hook during spawn(), which swallows it, and the
    # helper would go on serving (seen in CI: a helper that ignored its SIGTERM).
    wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    signal.set_wakeup_fd(wake_w)
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    gc.freeze()  # everything loaded so far stays out of collections, so children share those pages untouched
    started = time.time()
    info = {"pid": os.getpid(), "socket": path, "started": started, "idle_exit": idle_exit, "watch": watch,
            "version": __version__, "python": sys.executable, "code": os.path.dirname(os.path.dirname(__file__))}
    calls, declined, last_call, last_served = 0, 0, time.monotonic(), 0.0
    write_info(path, {**info, "calls": calls, "last_call": 0.0})
    print(f"cniplug helper listening on {path} (pid {os.getpid()}, cniplug {__version__}"
          + (f", exits after {idle_exit} s without a call" if idle_exit else "") + ")", file=sys.stderr, flush=True)
    taken_r, taken_w = os.pipe2(os.O_CLOEXEC)
    done_r, done_w = -1, -1
    counter = None
    if metrics_address:
        from cniplug import metrics

        try:
            counter = metrics.Metrics()
            done_r, done_w = os.pipe2(os.O_CLOEXEC)
        except ImportError as exc:
            print(f"cniplug helper: no metrics: {exc}", file=sys.stderr, flush=True)
    serving_metrics, said = False, False

    def serve_metrics() -> bool:
        """Start the metrics server; False while its port is taken (after an upgrade, by the helper of the
        install before, which exits within a second or two): the loop tries again every second."""
        nonlocal said
        assert counter is not None
        try:
            host, port = counter.serve(metrics_address)
        except (OSError, ValueError) as exc:
            if not said:
                print(f"cniplug helper: no metrics yet: {exc}; trying again every second", file=sys.stderr, flush=True)
                said = True
            return False
        info["metrics"] = f"http://{host}:{port}/metrics" if ":" not in host else f"http://[{host}]:{port}/metrics"
        write_info(path, {**info, "calls": calls, "declined": declined, "last_call": last_served})
        print(f"cniplug helper: metrics on {info['metrics']}", file=sys.stderr, flush=True)
        return True

    if counter is not None:
        serving_metrics = serve_metrics()
    pending = b""
    idle: set[int] = set()
    reason = ""
    try:
        while not reason:
            while len(idle) < POOL:
                idle.add(spawn(server, taken_r, taken_w, done_r, done_w))
            ready = select.select([taken_r, wake_r] + ([done_r] if done_r >= 0 else []), [], [], 1.0)[0]
            if wake_r in ready:
                os.read(wake_r, 4096)
            if stopping:
                reason = f"signal {signal.Signals(stopping[0]).name}"
                break
            if counter is not None and done_r in ready:
                pending += os.read(done_r, 65536)
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    counter.observe(line)
            if taken_r in ready:
                data = os.read(taken_r, 4096)  # 4-byte pids, each written atomically
                words = [int.from_bytes(data[i:i + 4], "big") for i in range(0, len(data) - 3, 4)]
                idle -= {w & ~DECLINED for w in words}
                served = sum(1 for w in words if not w & DECLINED)
                declined += len(words) - served
                if counter is not None and len(words) > served:
                    counter.declined(len(words) - served)
                if served:  # a declined call is no reason to stay, nor the last call --status shows
                    calls += served
                    last_call, last_served = time.monotonic(), time.time()
                write_info(path, {**info, "calls": calls, "declined": declined, "last_call": last_served})
            idle = {pid for pid in idle if alive(pid)}  # one killed while waiting is replaced
            if counter is not None and not serving_metrics:
                serving_metrics = serve_metrics()
            if idle_exit and time.monotonic() - last_call > idle_exit:
                reason = f"no call for {idle_exit} s"
            elif watch and file_id(watch) != watched:
                reason = f"{watch} was replaced (a new install)"
    finally:
        retire(server, path, idle)
    print(f"cniplug helper (pid {os.getpid()}) exits: {reason}; {calls} calls served", file=sys.stderr, flush=True)
    return 0


def retire(server: socket.socket, path: str, idle: set[int]) -> None:
    """Stop serving without dropping a caller: unlink the socket (new callers run standalone), let the
    waiting children take what is already queued, then wake the rest (a shut listening socket fails
    their accept(), and they exit) and close."""
    for name in (path, path + ".json"):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
    for _ in range(20):  # connections made before the unlink are still queued: give them to the children
        time.sleep(0.05)
        if not select.select([server], [], [], 0)[0]:
            break
    try:
        server.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    for pid in idle:  # children this helper started, still waiting for a call
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    server.close()


def file_id(path: str) -> tuple[int, int, float] | None:
    """(device, inode, mtime) of `path`, None when it is missing or `path` is ""."""
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime) if st else None


def serving(path: str) -> int:
    """The pid of the helper serving `path` now (its record names a live helper process and the socket
    is there), else 0."""
    try:
        with open(path + ".json") as f:
            pid = json.load(f).get("pid")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            helper_process = b"helper" in f.read()
    except (OSError, ValueError, AttributeError):
        return 0
    ok = isinstance(pid, int) and pid != os.getpid() and helper_process and alive(pid) and os.path.exists(path)
    return pid if ok else 0


def write_info(path: str, info: dict[str, object]) -> None:
    """Replace `path`.json with `info` atomically (read by `cniplug helper --status`)."""
    tmp = f"{path}.json.tmp{os.getpid()}"
    with open(tmp, "w", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW, 0o600)) as f:
        json.dump(info, f)
    os.replace(tmp, path + ".json")


def status(run_dir: str = rundir.RUN_DIR) -> list[dict[str, object]]:
    """The helpers serving under `run_dir`: one dict per `helper-*.sock.json` (pid, socket, started and
    last_call as Unix times, idle_exit in s, calls, version, watch) with "alive" (its pid runs and its
    socket exists). A record whose helper died without cleaning up shows alive False."""
    found = []
    try:
        names = sorted(os.listdir(run_dir))
    except FileNotFoundError:
        return []
    for name in names:
        if not (name.startswith("helper-") and name.endswith(".sock.json")):
            continue
        try:
            with open(os.path.join(run_dir, name)) as f:
                info = json.load(f)
        except (OSError, ValueError):
            continue
        numbers = ("pid", "started", "last_call", "calls")
        if not isinstance(info, dict) or not all(isinstance(info.get(k, 0), (int, float)) for k in numbers):
            continue  # not what a helper writes
        pid = info.get("pid")
        info["alive"] = isinstance(pid, int) and alive(pid) and os.path.exists(str(info.get("socket")))
        found.append(info)
    return found


def stop(pid: int, path: str, timeout: float = 10.0) -> bool:
    """End the helper `pid` serving `path` (SIGTERM: it retires as on idle exit) and wait for it; True
    when it is gone. Only a process whose command line names `path` is signalled."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if path.encode() not in f.read():
                return False
        os.kill(pid, signal.SIGTERM)
    except (OSError, ProcessLookupError):
        return True
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def print_status(run_dir: str = rundir.RUN_DIR) -> int:
    """`cniplug helper --status`: one paragraph per helper; 0 when at least one serves, else 3 (as
    `systemctl status` says 'not running')."""
    helpers = status(run_dir)
    if not helpers:
        print(f"no cniplug helper is running (no helper-*.sock.json in {run_dir})")
        return 3
    now = time.time()
    for h in helpers:
        last = float(str(h.get("last_call") or 0))
        print(f"{h.get('socket')}: {'serving' if h['alive'] else 'NOT RUNNING (stale record)'}, pid {h.get('pid')}, "
              f"cniplug {h.get('version')}, up {now - float(str(h.get('started', now))):.0f} s, {h.get('calls')} calls"
              + (f", last {now - last:.0f} s ago" if last else "")
              + (f", exits after {h.get('idle_exit')} s idle" if h.get("idle_exit") else ", no idle exit")
              + (f", serves the install of {h.get('watch')}" if h.get("watch") else ""))
    return 0 if any(h["alive"] for h in helpers) else 3


def spawn(server: socket.socket, taken_r: int, taken_w: int, done_r: int = -1, done_w: int = -1) -> int:
    """Fork a child that waits in accept() for one call, so that a call does not wait for a fork (~2 ms).

    It tells the helper it was taken (its pid on `taken_w`, with DECLINED set when it will decline the
    call), and the helper forks the next one.
    """
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    try:
        # While waiting, die with the helper: a socket whose only listeners are orphans would take
        # connections nobody serves, where a closed one makes the plugins run standalone.
        set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
        gc.disable()  # a child lives for one call: collecting would only copy the helper's pages
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the child waits for its own commands
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.set_wakeup_fd(-1)  # the helper's wakeup pipe is its own
        os.close(taken_r)
        if done_r >= 0:
            os.close(done_r)
        while True:
            conn, _ = server.accept()
            accepted = time.monotonic()
            peer, uid = peer_cred(conn)
            if uid == 0:
                break
            conn.close()
        set_parent_death_signal(0)  # a call that has started finishes, even if the helper goes away
        server.close()
        reason = foreign_context(peer) or adopt_context(peer)
        os.write(taken_w, (os.getpid() | (DECLINED if reason else 0)).to_bytes(4, "big"))
        os.close(taken_w)
        serve_one(conn, peer, reason, done_w, accepted)
    finally:
        os._exit(1)


def set_parent_death_signal(sig: int) -> None:
    """prctl(PR_SET_PDEATHSIG, sig): the kernel sends sig to this process when its parent exits."""
    if LIBC.prctl(1, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def alive(pid: int) -> bool:
    """True while process `pid` runs. A zombie (exited, not yet reaped: an auto-started helper's parent is
    whatever init the machine has, and some reap late) counts as ended."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"
