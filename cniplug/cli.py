"""The `cniplug` command for people: --version, install, demo, tutorial."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import secrets
import subprocess
import sys
from importlib import import_module
from pathlib import Path
from typing import Any

from cniplug import __version__, fastpath, rundir
from cniplug.plugins import PLUGINS as PLUGINS  # the registry (cli.PLUGINS for callers)
from cniplug.spec import CNIError

WRAPPER = """#!{python} -IS
# cniplug plugin {name}: installed by `cniplug install`. A runtime may exec this with only CNI_*
# variables set, so the interpreter is absolute and the import path is fixed here (-IS: no site
# hooks to load on every call). It hands the call to `cniplug helper` when one runs, else runs it.
import sys
sys.path[:0] = {paths!r}
from cniplug.fastpath import main
main({name!r}, {module!r}, {auto!r})
"""
AUTO_IDLE = 600  # s: how long an auto-started helper waits for a call before it exits


def plugin_argv(name: str) -> list[str]:
    """How to exec a plugin from this checkout or install without `cniplug install` (tests, demo)."""
    return [sys.executable, "-m", "cniplug", "plugin", name]


class UsageError(Exception):
    """A bad command line: `cniplug` prints the message on one line and exits 2."""


def plugin_module(name: str) -> str:
    """The module of a plugin type; UsageError naming the known types for any other name."""
    if name not in PLUGINS:
        raise UsageError(f"unknown plugin {name!r}; known: {', '.join(PLUGINS)}")
    return PLUGINS[name]


def plugin_handlers(name: str) -> tuple[dict[str, Any], str]:
    """The verb handlers and the about text of a plugin type (what its main() runs); UsageError if unknown."""
    module = import_module(plugin_module(name))
    return module.HANDLERS, module.ABOUT


def run_plugin(name: str, args: list[str]) -> None:
    """`cniplug plugin NAME ARGS...`: run the plugin as its installed executable would (skel parses ARGS)."""
    module = plugin_module(name)
    sys.argv = [name, *args]
    import_module(module).main()


def import_paths() -> list[str]:
    """Directories holding cniplug and its dependencies, for wrappers run with `python -I`."""
    paths = []
    for mod in ("cniplug", "jinja2", "markupsafe", "prometheus_client"):
        origin = Path(import_module(mod).__file__ or "").resolve()
        # A package (.../name/__init__.py) lives two levels up, a single module one.
        top = origin.parent.parent if origin.name == "__init__.py" else origin.parent
        if str(top) not in paths:
            paths.append(str(top))
    return paths


def install(bin_dir: str, auto_helper: bool = True, idle: int = AUTO_IDLE, metrics: str = "") -> int:
    """Write one executable per plugin type into bin_dir (made 0755 if missing); 0. OSError if it cannot.

    With `auto_helper` the executables of this install share a helper socket of their own,
    /run/cniplug/helper-3-<install id>.sock, and the first call that finds no helper there starts one
    that exits after `idle` seconds without a call (fastpath.main, autostart.py). A new install gets a new
    id, so no call after it reaches a helper still running the code of the one before. Without it, the
    executables use the shared socket of a helper started by hand (fastpath.SOCKET) and start none.
    `metrics`: the loopback HOST:PORT where an auto-started helper serves Prometheus metrics ("": none).
    """
    os.makedirs(bin_dir, mode=0o755, exist_ok=True)
    paths = import_paths()
    auto = None
    if auto_helper:
        install_id = f"{__version__}-{secrets.token_hex(4)}"
        auto = {"socket": f"{rundir.RUN_DIR}/helper-3-{install_id}.sock", "idle": idle, "paths": paths}
        if metrics:
            auto["metrics"] = metrics
    for name, module in PLUGINS.items():
        path = Path(bin_dir) / name
        tmp = path.with_name(f".{name}.tmp{os.getpid()}")
        tmp.write_text(WRAPPER.format(python=sys.executable, name=name, paths=paths, module=module, auto=auto))
        tmp.chmod(0o755)
        tmp.replace(path)  # atomic: a runtime never execs a half-written file ("text file busy" too)
        print(f"installed {path}")
    forget_helpers(bin_dir, keep=str(auto["socket"]) if auto else "")
    compile_templates()
    return 0


def compile_templates() -> None:
    """Compile the templates into the bytecode cache now, so that no plugin call pays for it (~35 ms)."""
    from cniplug import render

    if os.geteuid() == 0:
        print(f"compiled {render.compile_all()} templates into {rundir.RUN_DIR}/jinja")


def forget_helpers(bin_dir: str, keep: str) -> None:
    """Remove the lock and log files of auto-started helpers of earlier installs into `bin_dir` that no
    longer run, except those of socket `keep`. A running helper holds its lock: its files stay. The lock
    file names the executable that started its helper (autostart.py); files of other bin dirs' installs,
    or that name none, are not ours to remove."""
    import fcntl

    try:
        names = os.listdir(rundir.RUN_DIR)
    except OSError:
        return
    ours = os.path.realpath(bin_dir)
    for name in names:
        if not (name.startswith("helper-3-") and name.endswith(".sock.lock")):
            continue
        lock = os.path.join(rundir.RUN_DIR, name)
        if lock == keep + ".lock":
            continue
        try:
            fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            started_by = os.read(fd, 4096).decode(errors="replace")
            if started_by and os.path.realpath(os.path.dirname(started_by)) == ours:
                for stale in (lock, lock[:-len(".lock")] + ".log"):
                    if os.path.exists(stale):
                        os.unlink(stale)
        except OSError:
            pass  # held: that helper still runs
        finally:
            os.close(fd)


def positive_seconds(text: str) -> int:
    """argparse type of --helper-idle: a whole number of seconds, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 1 second")
    return value


def ipv4_network(text: str) -> str:
    """argparse type of --subnet: an IPv4 network of /29 or larger (demo, tutorial); "" is the default."""
    if not text:
        return text
    try:
        net = ipaddress.ip_network(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if net.version != 4 or net.prefixlen > 29:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 network of /29 or larger")
    return text


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="on an error, show the Python traceback too")
    top = argparse.ArgumentParser(prog="cniplug", description=__doc__, parents=[common])
    top.add_argument("--version", action="version", version=f"cniplug {__version__}")
    sub = top.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("install", parents=[common], help="put executables for every plugin type into a CNI bin dir")
    p.add_argument("--bin-dir", default="/opt/cni/bin")
    p.add_argument("--no-auto-helper", action="store_true",
                   help="never start a helper from a plugin call (use one started by hand, else run standalone)")
    p.add_argument("--helper-idle", type=positive_seconds, default=AUTO_IDLE, metavar="SECONDS",
                   help=f"an auto-started helper exits after this long without a call (default {AUTO_IDLE})")
    p.add_argument("--helper-metrics", default="", metavar="HOST:PORT",
                   help="an auto-started helper serves Prometheus metrics there (a loopback address)")
    p.add_argument("--self-contained", action="store_true",
                   help="install a runtime with its own Python (PyInstaller) into --runtime-dir, for hosts without one")
    p.add_argument("--runtime-dir", default=None,
                   help="where --self-contained puts its runtimes (default /opt/cniplug)")
    p.add_argument("--bundle", default="", help="with --self-contained: a runtime built by `cniplug bundle` "
                   "(default: this one when it is self-contained, else build one now)")
    p.add_argument("--rollback", action="store_true", help="with --self-contained: go back to the previous runtime")
    p.add_argument("--uninstall", action="store_true",
                   help="remove the plugin executables cniplug installed in --bin-dir, their helpers, --runtime-dir")
    p.add_argument("--compile-templates", action="store_true",
                   help="only compile the templates into /run/cniplug/jinja (every install does; e.g. after a reboot)")
    p = sub.add_parser("bundle", parents=[common], help="build the self-contained runtime (needs PyInstaller)")
    p.add_argument("--out", default="dist", help="directory to build it in (default: dist)")
    p = sub.add_parser("demo", parents=[common],
                       help="attach a throwaway namespace to a bridge network, show it, clean up")
    p.add_argument("--subnet", default="10.244.250.0/24", type=ipv4_network)
    p.add_argument("--keep", action="store_true", help="leave the namespace and network in place")
    p.add_argument("--prefix", default="cnidemo", help="start of every name the demo creates (up to 7 characters)")
    p.add_argument("--outside", default="198.18.0.0/24", type=ipv4_network,
                   help="the stand-in for the Internet: a namespace at its first address")
    p.add_argument("--lang", choices=fastpath.LANGS, default="en")
    p = sub.add_parser("helper", parents=[common], help="run the warm helper the installed plugins hand their calls to")
    p.add_argument("--socket", default=fastpath.SOCKET)
    p.add_argument("--status", action="store_true", help="show the helpers running here and exit (3: none serves)")
    p.add_argument("--idle-exit", type=int, default=0, metavar="SECONDS",
                   help="exit after this long without a call (default 0: never)")
    p.add_argument("--lock-fd", type=int, default=-1, help=argparse.SUPPRESS)  # autostart.py
    p.add_argument("--watch", default="", help=argparse.SUPPRESS)  # autostart.py: exit when this file is replaced
    p.add_argument("--metrics", default="", metavar="HOST:PORT",
                   help="serve Prometheus metrics on this loopback address, e.g. 127.0.0.1:9217")
    sub.add_parser("bench", help="benchmark against the reference plugins (see cniplug bench --help)", add_help=False)
    p = sub.add_parser("tutorial", parents=[common],
                       help="print (or --run) the tutorial's scripts, rendered from the plugin macros")
    p.add_argument("example", type=int, choices=(1, 2, 3), nargs="?", default=1)
    env_lang = os.environ.get("CNIPLUG_LANG", "")
    p.add_argument("--lang", choices=fastpath.LANGS, default=env_lang if env_lang in fastpath.LANGS else "en")
    p.add_argument("--prefix", default="", help="prefix for every name the script creates")
    p.add_argument("--subnet", default="", type=ipv4_network, help="replace the tutorial's 10.x.y.0/24 base subnet")
    p.add_argument("--run", action="store_true",
                   help="run it as a lab in throwaway namespaces: show what each step changed, clean up")
    p.add_argument("--step", action="store_true", help="with --run: pause before each step (Enter, or q to stop)")
    p.add_argument("--break", dest="breaks", action="append", default=[],
                   choices=("forwarding", "masquerade", "route", "gateway"),
                   help="with --run: leave that step out and show which ping fails and why")
    p.add_argument("--clean", action="store_true", help="undo what a killed --run with this --prefix left")
    p.add_argument("--outside", default="198.18.0.0/24", type=ipv4_network,
                   help="with --run: the stand-in for the tutorial's 8.8.8.8, a namespace at its first address")
    p = sub.add_parser("show", parents=[common],
                       help="the live topology: namespaces, bridges, veth pairs, routes, NAT, IPAM")
    p.add_argument("--prefix", default="", help="only namespaces and links named P..., and what they connect to")
    p.add_argument("--netns", default=None, help="only this namespace ('host', NAME, pid:PID) and what it connects to")
    p.add_argument("--data-dir", default="/var/lib/cni/networks", help="host-local's store (its dataDir)")
    p.add_argument("--svg", default="", metavar="FILE", help="also draw the topology into FILE as SVG")
    p.add_argument("--lang", choices=fastpath.LANGS, default=env_lang if env_lang in fastpath.LANGS else "en")
    p = sub.add_parser("net", parents=[common],
                       help="run a whole network config list as libcni/cnitool do: cniplug net VERB NETWORK [NETNS]",
                       description="Run the network config list NETWORK as libcni and cnitool do. Environment: "
                       "NETCONFPATH (default /etc/cni/net.d), CNI_PATH (plugin directories, colon-separated), "
                       "CAP_ARGS (JSON object of capability arguments), CNI_IFNAME (default eth0), CNI_ARGS "
                       "(K=V;K=V). Results are cached in /var/lib/cni/results as libcni caches them.")
    p.add_argument("verb", choices=("add", "check", "del", "gc", "status"))
    p.add_argument("network", help="the list's name, looked up in $NETCONFPATH (default /etc/cni/net.d)")
    p.add_argument("netns", nargs="?", default="",
                   help="the container's network namespace path (add, check, del; for gc the one attachment to keep)")
    p.add_argument("--dry-run", action="store_true", help="print the bash script for the whole list, change nothing")
    p.add_argument("--lang", choices=fastpath.LANGS, default=env_lang if env_lang in fastpath.LANGS else "en")
    sub.add_parser("plugin", help="run a plugin as its installed executable does: cniplug plugin NAME [--dry-run ...]",
                   add_help=False)
    p = sub.add_parser("node", parents=[common], help="the node agent: routes to every node's pods (host-gw), "
                       "no NAT between pods, this node's config list; `cniplug node demo`: simulated nodes with etcd")
    from cniplug.node.agent import add_arguments as node_arguments

    node_arguments(p)
    return top


def dispatch(argv: list[str]) -> int:
    """Run one `cniplug` command line; the exit code. Raises UsageError, CNIError, OSError on bad input."""
    if argv[:1] == ["plugin"]:
        usage = (f"usage: cniplug plugin NAME [--dry-run] [--lang en|zh] [--version] [--help]; "
                 f"NAME one of {', '.join(PLUGINS)}")
        if argv[1:] in (["-h"], ["--help"]):
            print(usage)
            return 0
        if len(argv) < 2 or argv[1].startswith("-"):
            raise UsageError(usage)
        run_plugin(argv[1], argv[2:])
        return 0
    if argv[:1] == ["bench"]:
        import cniplug.bench as bench

        return bench.main(argv[1:])
    args = parser().parse_args(argv)
    if args.cmd == "install":
        import cniplug.bundle as bundle

        given = [o for o, v in (("--runtime-dir", args.runtime_dir), ("--bundle", args.bundle)) if v]
        args.runtime_dir = args.runtime_dir or "/opt/cniplug"
        if given and not (args.self_contained or args.uninstall or args.rollback or bundle.frozen()):
            raise UsageError(f"{given[0]} is for the self-contained runtime: add --self-contained (or run the "
                             "bundle's own cniplug)")
        if args.compile_templates:
            if os.geteuid() != 0:  # the cache is root's (render.bytecode_cache): plugin calls run as root
                raise UsageError(f"--compile-templates: the cache {rundir.RUN_DIR}/jinja is root's; run it as root")
            compile_templates()
            return 0
        if args.uninstall:
            return bundle.uninstall(args.bin_dir, args.runtime_dir, PLUGINS)
        if args.rollback:
            return bundle.rollback(args.runtime_dir)
        if args.helper_metrics:
            import cniplug.metrics as metrics

            try:
                metrics.parse_address(args.helper_metrics)
            except ValueError as err:
                raise UsageError(str(err).replace("--metrics", "--helper-metrics")) from None
        if args.self_contained or bundle.frozen():
            return bundle.install(args.bin_dir, args.runtime_dir, PLUGINS, not args.no_auto_helper, args.helper_idle,
                                  args.bundle, args.helper_metrics)
        return install(args.bin_dir, not args.no_auto_helper, args.helper_idle, args.helper_metrics)
    if args.cmd == "bundle":
        import cniplug.bundle as bundle

        try:
            path = bundle.build(args.out)
        except RuntimeError as err:
            raise UsageError(str(err)) from None
        print(f"built {path}/{bundle.EXE}; install it with: {path}/{bundle.EXE} install --bin-dir DIR")
        return 0
    if args.cmd == "demo":
        import cniplug.lab.demo as demo

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,6}", args.prefix):  # ASCII: names are counted in bytes
            raise UsageError(f"--prefix {args.prefix!r}: 1-7 letters, digits or '-', not starting with '-'")
        return demo.main(args.subnet or "10.244.250.0/24", args.keep, args.prefix, args.lang, args.outside)
    if args.cmd == "helper":
        import cniplug.helper as helper

        if args.status:
            return helper.print_status()
        if args.idle_exit < 0:
            raise UsageError(f"--idle-exit {args.idle_exit}: must be 0 (never) or more seconds")
        if args.metrics:
            import cniplug.metrics as metrics

            try:
                metrics.parse_address(args.metrics)
            except ValueError as err:
                raise UsageError(str(err)) from None
        return helper.main(args.socket, args.idle_exit, args.lock_fd, args.watch, args.metrics)
    if args.cmd == "net":
        import cniplug.net as net

        if args.verb in ("add", "check", "del") and not args.netns:
            raise UsageError(net.say("net_need_netns", args.lang, verb=args.verb))
        return net.main(args.verb, args.network, args.netns, args.dry_run, args.lang)
    if args.cmd == "node":
        if args.action == "demo":
            import cniplug.node.demo as node_demo

            if not 2 <= args.nodes <= 9:
                raise UsageError(f"--nodes {args.nodes}: 2-9")
            if not 2 <= len(args.prefix) <= 6 or not args.prefix.isalnum() or not args.prefix.islower():
                raise UsageError(f"--prefix {args.prefix!r}: 2-6 lower-case letters or digits")
            return node_demo.main(args.nodes, args.prefix, args.lang)
        import cniplug.node.agent as agent

        try:
            return int(agent.main(args))
        except ValueError as err:
            raise UsageError(str(err)) from None
    if args.cmd == "show":
        import cniplug.lab.show as show

        return show.main(args.prefix, args.netns, args.data_dir, args.svg, args.lang)
    import cniplug.lab.tutorial as tutorial

    return tutorial.main(args.example, args.lang, args.prefix, args.subnet, args.run, args.step, tuple(args.breaks),
                         args.clean, args.outside)


def one_line(err: BaseException) -> str:
    """An error as the one line `cniplug` prints for it."""
    if isinstance(err, CNIError):
        return f"{err.msg} ({err.details})" if err.details else err.msg
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    return str(err) or type(err).__name__


def main(argv: list[str] | None = None) -> None:
    """`cniplug ...`: exits with the command's code; a bad command line exits 2, a missing tool, a file
    that cannot be written or a failed command 1, each with one line on stderr (the trace with --debug)."""
    argv = sys.argv[1:] if argv is None else argv
    name = "plugin" if argv[:1] == ["plugin"] else argv[0] if argv and not argv[0].startswith("-") else ""
    prog = f"cniplug {name}".strip()
    try:
        code = dispatch(argv)
    except UsageError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        sys.exit(2)
    except (CNIError, OSError, subprocess.SubprocessError) as err:
        if "--debug" in argv and name != "plugin":
            raise
        print(f"{prog}: {one_line(err)}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code)
