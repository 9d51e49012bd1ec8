"""The `cniplug` command for people: --version, install, demo, tutorial."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import import_module
from pathlib import Path
from typing import Any

from cniplug import __version__, fastpath, runner
from cniplug.spec import CNIError

# Plugin type (the `type` in a network config) -> its module: HANDLERS (verb -> function), ABOUT, main().
PLUGINS = {
    "cniplug-bridge": "cniplug.plugins.bridge",
    "cniplug-ptp": "cniplug.plugins.ptp",
    "cniplug-loopback": "cniplug.plugins.loopback",
    "cniplug-host-local": "cniplug.plugins.host_local",
    "cniplug-static": "cniplug.plugins.static",
}

WRAPPER = """#!{python} -IS
# cniplug plugin {name}: installed by `cniplug install`. A runtime may exec this with only CNI_*
# variables set, so the interpreter is absolute and the import path is fixed here (-IS: no site
# hooks to load on every call). It hands the call to `cniplug helper` when one runs, else runs it.
import sys
sys.path[:0] = {paths!r}
from cniplug.fastpath import main
main({name!r}, {module!r})
"""


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
    for mod in ("cniplug", "jinja2", "markupsafe"):
        origin = Path(import_module(mod).__file__ or "").resolve()
        # A package (.../name/__init__.py) lives two levels up, a single module one.
        top = origin.parent.parent if origin.name == "__init__.py" else origin.parent
        if str(top) not in paths:
            paths.append(str(top))
    return paths


def install(bin_dir: str) -> int:
    """Write one executable per plugin type into bin_dir (made 0755 if missing); 0. OSError if it cannot."""
    os.makedirs(bin_dir, mode=0o755, exist_ok=True)
    paths = import_paths()
    for name, module in PLUGINS.items():
        path = Path(bin_dir) / name
        tmp = path.with_name(f".{name}.tmp{os.getpid()}")
        tmp.write_text(WRAPPER.format(python=sys.executable, name=name, paths=paths, module=module))
        tmp.chmod(0o755)
        tmp.replace(path)  # atomic: a runtime never execs a half-written file ("text file busy" too)
        print(f"installed {path}")
    return 0


def demo(subnet: str, keep: bool) -> int:
    """The README's main job: attach a throwaway namespace to a bridge network, show it, clean up.

    Returns 0 when the ping and CHECK pass, else 1. Raises CNIError when `ip` or `ping` cannot be run
    (runner.which: PATH, then the system directories), before anything is created.
    """
    if os.geteuid() != 0:
        print("cniplug demo: needs root (it creates a network namespace and a bridge)", file=sys.stderr)
        return 1
    ip, ping = runner.which("ip"), runner.which("ping")
    tag = f"cnidemo{os.getpid() % 100000}"
    netns, bridge = tag, f"{tag}br"[:15]
    data_dir = tempfile.mkdtemp(prefix="cniplug-demo-")
    try:
        return _demo(subnet, keep, ip, ping, netns, bridge, data_dir)
    finally:
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)


def _demo(subnet: str, keep: bool, ip: str, ping: str, netns: str, bridge: str, data_dir: str) -> int:
    tag = netns
    config = {
        "cniVersion": "1.1.0", "name": tag, "type": "cniplug-bridge", "bridge": bridge,
        "isGateway": True, "isDefaultGateway": True, "ipMasq": True,
        "ipam": {"type": "cniplug-host-local", "dataDir": data_dir, "ranges": [[{"subnet": subnet}]]},
    }
    env = {"CNI_CONTAINERID": tag, "CNI_NETNS": f"/run/netns/{netns}", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/usr/lib/cni", "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    raw = json.dumps(config).encode()

    def call(command: str, *extra: str, prev: object = None) -> subprocess.CompletedProcess[bytes]:
        stdin = json.dumps({**config, "prevResult": prev}).encode() if prev else raw
        return subprocess.run(plugin_argv("cniplug-bridge") + list(extra), input=stdin,
                              env={**env, "CNI_COMMAND": command}, capture_output=True)

    def show(title: str, argv: list[str]) -> int:
        print(f"\n== {title}\n$ {' '.join(argv)}")
        proc = subprocess.run(argv, capture_output=True, text=True)
        print((proc.stdout + proc.stderr).rstrip())
        return proc.returncode

    bridge_existed = os.path.exists(f"/sys/class/net/{bridge}")
    result: dict[str, Any] | None = None
    added = subprocess.run([ip, "netns", "add", netns], capture_output=True, text=True)
    if added.returncode != 0:
        print(f"cniplug demo: {ip} netns add {netns} failed: {added.stderr.strip()}", file=sys.stderr)
        return 1
    ok = False
    try:
        print(f"== network config (stdin of the plugin)\n{json.dumps(config, indent=2)}")
        print("\n== cniplug-bridge ADD --dry-run: the script the plugin is about to run")
        print(call("ADD", "--dry-run").stdout.decode().rstrip())
        proc = call("ADD")
        print(f"\n== ADD result (exit {proc.returncode})\n{proc.stdout.decode().rstrip()}")
        sys.stderr.write(proc.stderr.decode())
        if proc.returncode != 0:
            return 1
        result = json.loads(proc.stdout)
        gateway = str(result["ips"][0]["gateway"]) if result else ""
        show("container addresses", [ip, "-n", netns, "-br", "addr"])
        show("container routes", [ip, "-n", netns, "route"])
        rc = show(f"ping the gateway {gateway} from the container",
                  [ip, "netns", "exec", netns, ping, "-c", "2", "-W", "1", gateway])
        proc = call("CHECK", prev=result)
        print(f"\n== CHECK (prevResult = the ADD result): exit {proc.returncode} {proc.stdout.decode().strip()}")
        ok = rc == 0 and proc.returncode == 0
    finally:
        if not keep:
            proc = call("DEL", prev=result if ok else None)
            print(f"\n== DEL: exit {proc.returncode} {proc.stdout.decode().strip()}")
            subprocess.run([ip, "netns", "delete", netns], check=False)
            if not bridge_existed:
                subprocess.run([ip, "link", "delete", bridge], check=False, capture_output=True)
                from cniplug.plugins.bridge import lock_path

                Path(lock_path(bridge)).unlink(missing_ok=True)
            print("cleaned up: namespace, bridge, NAT chain and IPAM reservations removed")
    print("\ndemo " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


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
    p = sub.add_parser("demo", parents=[common],
                       help="attach a throwaway namespace to a bridge network, show it, clean up")
    p.add_argument("--subnet", default="10.244.250.0/24", type=ipv4_network)
    p.add_argument("--keep", action="store_true", help="leave the namespace and network in place")
    p = sub.add_parser("helper", parents=[common], help="run the warm helper the installed plugins hand their calls to")
    p.add_argument("--socket", default=fastpath.SOCKET)
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
    p = sub.add_parser("show", parents=[common],
                       help="the live topology: namespaces, bridges, veth pairs, routes, NAT, IPAM")
    p.add_argument("--prefix", default="", help="only namespaces and links named P..., and what they connect to")
    p.add_argument("--netns", default=None, help="only this namespace ('host', NAME, pid:PID) and what it connects to")
    p.add_argument("--data-dir", default="/var/lib/cni/networks", help="host-local's store (its dataDir)")
    p.add_argument("--svg", default="", metavar="FILE", help="also draw the topology into FILE as SVG")
    p.add_argument("--lang", choices=fastpath.LANGS, default=env_lang if env_lang in fastpath.LANGS else "en")
    sub.add_parser("plugin", help="run a plugin as its installed executable does: cniplug plugin NAME [--dry-run ...]",
                   add_help=False)
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
        return install(args.bin_dir)
    if args.cmd == "demo":
        return demo(args.subnet, args.keep)
    if args.cmd == "helper":
        import cniplug.helper as helper

        return helper.main(args.socket)
    if args.cmd == "show":
        import cniplug.lab.show as show

        return show.main(args.prefix, args.netns, args.data_dir, args.svg, args.lang)
    import cniplug.lab.tutorial as tutorial

    return tutorial.main(args.example, args.lang, args.prefix, args.subnet, args.run, args.step, tuple(args.breaks),
                         args.clean)


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
