"""`cniplug node`: the node agent. Every --interval seconds (and at once on start) it reads the cluster
from its source, reads this node's facts, renders the reconcile script (cniplug/node/reconcile.py) and
runs it with the runner (rollback on a failed step). `--dry-run` prints the script of the current
reconcile and changes nothing (the etcd source then only reads: no lease is taken or renewed).
`--uninstall` takes back everything the agent keeps and gives the node's pod CIDR back;
`--cleanup-on-exit` does the same when the agent is stopped with SIGTERM or SIGINT.

Sources: `etcd` (cniplug/node/etcd.py) and `kubernetes` (cniplug/node/kubernetes.py). A source is any
object with the model.Source methods; SOURCES maps a --source name to the function that makes it from
the command line's arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from cniplug import i18n, runner
from cniplug.node import reconcile
from cniplug.node.etcd import DEFAULT_PREFIX, EtcdSource
from cniplug.node.model import NodeInfo, Source, SourceError
from cniplug.spec import CNIError

log = logging.getLogger("cniplug")


def say(key: str, lang: str, **fields: object) -> str:
    """The agent's message `key` (i18n.MESSAGES["nd_" + key]) in `lang`."""
    return i18n.text(f"nd_{key}", lang, **fields)


def printable(text: str) -> str:
    """An error text as one safe line (control characters and line breaks become spaces), at most 300 chars."""
    return "".join(c if c.isprintable() else " " for c in text)[:300]


def default_address() -> str:
    """This node's address: the source address of its route towards the outside (`ip -j route get
    1.0.0.1`, which sends nothing); "" when the node has no default route."""
    done = runner.execute(["ip", "-j", "-4", "route", "get", "1.0.0.1"])
    try:
        return str(json.loads(done.stdout)[0].get("prefsrc", "")) if done.rc == 0 else ""
    except (ValueError, IndexError, AttributeError):
        return ""


def etcd_source(args: argparse.Namespace) -> EtcdSource:
    return EtcdSource(args.name, args.address, args.etcd_endpoints, args.cluster_cidr, args.pod_prefix_len,
                      args.lease_ttl, args.etcd_prefix, read_only=args.dry_run)


def kubernetes_source(args: argparse.Namespace) -> Any:
    from cniplug.node.kubernetes import KubernetesSource

    return KubernetesSource(args.kubeconfig)


SOURCES: dict[str, Callable[[argparse.Namespace], Any]] = {"etcd": etcd_source, "kubernetes": kubernetes_source}


def plugins_answer(bin_dir: str) -> str:
    """"" when the installed cniplug-bridge in `bin_dir` answers VERSION, else why not (one line). Run in
    pid 1's mount and network namespaces (nsenter) when this process is not in them, as the runtime will
    run it (a DaemonSet pod): that call also starts the install's helper on the host (autostart.py), so
    the first pod is served warm. The agent writes the config list only after this (issue #14 item 5)."""
    import os

    from cniplug.autostart import same_namespaces_as_init

    exe = os.path.join(bin_dir, "cniplug-bridge")
    argv = [exe] if same_namespaces_as_init() is not False else ["nsenter", "--target", "1", "--mount", "--net",
                                                                   "--", exe]
    import subprocess

    try:
        done = subprocess.run(argv, input=b"", capture_output=True, timeout=60,
                              env={"CNI_COMMAND": "VERSION", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as err:
        return printable(f"{exe}: {err}")
    try:
        if done.returncode == 0 and "supportedVersions" in json.loads(done.stdout):
            return ""
    except (ValueError, TypeError):
        pass
    said = (done.stderr or done.stdout).decode(errors="replace").strip()
    return printable(f"{exe} VERSION exited {done.returncode}: {said}")


def ready(conf_path: str, network: str) -> bool:
    """`cniplug node --ready` (the DaemonSet's readiness probe): the agent's config list is in place."""
    try:
        with open(conf_path) as f:
            return bool(json.load(f).get("name") == network)
    except (OSError, ValueError, AttributeError):
        return False


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `cniplug node` (cli.py builds its parser with these)."""
    import socket

    p.add_argument("action", nargs="?", choices=("run", "demo"), default="run",
                   help="run: the agent (default); demo: simulated nodes with etcd, options --nodes, --prefix, --lang")
    p.add_argument("--name", default=socket.gethostname().split(".")[0].lower(),
                   help="this node's name (default: the host name)")
    p.add_argument("--address", default="", help="this node's address, the other nodes' next hop "
                   "(default: the source address of the default route)")
    p.add_argument("--source", choices=tuple(SOURCES), default="etcd", help="where the cluster state comes from")
    p.add_argument("--etcd-endpoints", default="http://127.0.0.1:2379", help="etcd client URLs, comma-separated")
    p.add_argument("--etcd-prefix", default=DEFAULT_PREFIX, help=f"etcd key prefix (default {DEFAULT_PREFIX})")
    p.add_argument("--cluster-cidr", default="10.244.0.0/16", help="the pods' network; each node takes a subnet of it")
    p.add_argument("--pod-prefix-len", type=int, default=24, help="length of each node's pod subnet (default 24)")
    p.add_argument("--lease-ttl", type=int, default=30,
                   help="seconds a node's subnet outlives its last renewal (default 30)")
    p.add_argument("--interval", type=float, default=10.0,
                   help="seconds between reconciles (default 10; at most a third of --lease-ttl is used)")
    p.add_argument("--once", action="store_true", help="reconcile once and exit")
    p.add_argument("--dry-run", action="store_true", help="print the script of the current reconcile, change nothing")
    p.add_argument("--uninstall", action="store_true",
                   help="remove the agent's routes, nat chain and config list, give the pod CIDR back, exit")
    p.add_argument("--cleanup-on-exit", action="store_true", help="on SIGTERM/SIGINT do what --uninstall does")
    p.add_argument("--cni-conf-dir", default="/etc/cni/net.d", help="where this node's config list goes")
    p.add_argument("--network", default="cniplug-pods", help="the config list's network name")
    p.add_argument("--bridge", default="cni0", help="the bridge cniplug-bridge makes on this node")
    p.add_argument("--route-proto", type=int, default=reconcile.ROUTE_PROTO,
                   help=f"protocol number marking the agent's routes (default {reconcile.ROUTE_PROTO})")
    p.add_argument("--kubeconfig", default="", help="--source kubernetes: a kubeconfig file (default: the pod's "
                   "service account, else ~/.kube/config)")
    p.add_argument("--bin-dir", default="", help="write the config list only once the cniplug plugins installed "
                   "here answer (and their helper runs); default: at once")
    p.add_argument("--ready", action="store_true", help="exit 0 when this node's config list is in place, else 1")
    p.add_argument("--lang", choices=("en", "zh"), default="en")
    # the demo's own options
    p.add_argument("--nodes", type=int, default=3, help="demo: how many simulated nodes (2-9)")
    p.add_argument("--prefix", default="cnnode", help="demo: start of every name it creates (2-6 characters)")


def settings_of(args: argparse.Namespace) -> reconcile.Settings:
    """Validated Settings from the command line; ValueError naming the option and value otherwise."""
    import ipaddress
    import re

    try:
        net = ipaddress.ip_network(args.cluster_cidr)
    except ValueError as err:
        raise ValueError(f"--cluster-cidr {args.cluster_cidr!r}: {err}") from None
    if net.version != 4:
        raise ValueError(f"--cluster-cidr {args.cluster_cidr!r} is not IPv4")
    if not 5 <= args.route_proto <= 255:
        raise ValueError(f"--route-proto {args.route_proto}: 5-255 (0-4 are the kernel's and iproute2's own)")
    if not re.match(r"^[A-Za-z0-9_.-]{1,100}$", args.network):
        raise ValueError(f"--network {args.network!r}: letters, digits, '_', '.', '-'")
    if not re.match(r"^[A-Za-z0-9_.-]{1,15}$", args.bridge) or args.bridge in (".", ".."):
        raise ValueError(f"--bridge {args.bridge!r}: an interface name (1-15 letters, digits, '_', '.', '-')")
    if not args.cni_conf_dir.startswith("/"):
        raise ValueError(f"--cni-conf-dir {args.cni_conf_dir!r}: an absolute path")
    if args.interval <= 0:
        raise ValueError(f"--interval {args.interval}: more than 0 seconds")
    return reconcile.Settings(cluster_cidr=str(net), conf_dir=args.cni_conf_dir, network=args.network,
                              bridge=args.bridge, route_proto=args.route_proto, lang=args.lang)


def me_of(nodes: list[NodeInfo], name: str, address: str) -> NodeInfo:
    """This node in the list, or a NodeInfo without pod CIDR when the source does not list it yet."""
    return next((n for n in nodes if n.name == name), NodeInfo(name, (), address))


def reconcile_once(source: Source, settings: reconcile.Settings, name: str, address: str,
                   dry_run: bool = False) -> tuple[str, int]:
    """One round: (the script, how many steps ran; 0 on --dry-run). Raises SourceError, CNIError."""
    facts = reconcile.probe(settings)
    if isinstance(source, EtcdSource) and not source.preferred:
        source.preferred = reconcile.subnet_of_conflist(facts.conflist)
    nodes = source.nodes()
    text = reconcile.plan(me_of(nodes, name, address), nodes, facts, settings)
    if dry_run:
        return text, 0
    return text, reconcile.apply(text)


def uninstall(source: Source, settings: reconcile.Settings) -> int:
    """Take back what the agent keeps (tolerant steps) and release the pod CIDR. Returns the steps run."""
    text = reconcile.uninstall_plan(reconcile.probe(settings), settings)
    count = reconcile.apply(text, best_effort=True)
    release = getattr(source, "release", None)
    if release is not None:
        release()
    return count


def main(args: argparse.Namespace) -> int:
    """`cniplug node [run]`: 0 on a clean stop, 1 when --once/--dry-run failed. Raises ValueError on bad
    options (cli turns it into a usage error)."""
    settings = settings_of(args)
    if args.ready:
        return 0 if ready(settings.conf_path, settings.network) else 1
    if not args.address and not args.uninstall:
        args.address = default_address()
    lang = args.lang
    try:
        source = SOURCES[args.source](args)
    except SourceError as err:  # no configuration, unreachable store: one line, no traceback
        print(f"cniplug node: {printable(str(err))}", file=sys.stderr)
        return 1
    if args.uninstall or args.dry_run:
        try:
            if args.uninstall:
                print(say("uninstalled", lang, steps=uninstall(source, settings)))
            else:
                sys.stdout.write(reconcile_once(source, settings, args.name, args.address, dry_run=True)[0])
        except SourceError as err:
            print(f"cniplug node: {printable(str(err))}", file=sys.stderr)
            return 1
        finally:
            source.close()
        return 0
    stop = threading.Event()
    old = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    ttl = getattr(source, "ttl", 0)
    period = min(args.interval, ttl / 3) if ttl else args.interval
    code = 0
    serving, waiting = not args.bin_dir, ""
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                if not serving:
                    why = plugins_answer(args.bin_dir)
                    serving = not why
                    if why and why != waiting:  # said once, and again only when the reason changes
                        print(say("waiting", lang, bin_dir=args.bin_dir, why=why), file=sys.stderr, flush=True)
                    waiting = why
                round_settings = settings if serving else dataclasses.replace(settings, write_conf=False)
                text, count = reconcile_once(source, round_settings, args.name, args.address)
                if count:
                    print(say("applied", lang, steps=count, ms=round((time.monotonic() - started) * 1000)), flush=True)
            except (SourceError, CNIError, OSError, ValueError) as err:  # a bad round must not end the agent
                print(say("failed", lang, error=printable(str(err))), file=sys.stderr, flush=True)
                if args.once:
                    code = 1
            if args.once:
                break
            stop.wait(max(0.05, period - (time.monotonic() - started)))
        if stop.is_set() and args.cleanup_on_exit:
            print(say("uninstalled", lang, steps=uninstall(source, settings)), flush=True)
    finally:
        source.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return code
