"""`cniplug tutorial N`: the tutorial's three scripts, rendered from the macros the plugins use.

Printed, a script is the tutorial's example as written: every command that changes something is the
tutorial's own line, in the tutorial's order, with its clean-up lines and its observation steps (plus the
modern equivalent of a tool current distributions lack), `#undo` lines and an explanation per step.

`--run` is a lab: the same steps in throwaway namespaces whose names carry a prefix, with the stand-ins a
machine without the tutorial's uplink needs (announced in the script). After each step it shows what the
step changed in the kernel (cniplug.lab.kernel), runs the observation steps and shows their output,
explains each ping's TTL and draws the topology as it grows. `--step` pauses before each step, `--break`
leaves a step out to show what fails without it. Ctrl-C or SIGTERM at any moment undoes everything; a
journal in /run/cniplug lets `--clean` undo what a killed run left.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from markupsafe import Markup

from cniplug import facts, i18n, render, rundir, runner, script
from cniplug.lab import kernel
from cniplug.lab import outside as outside_net
from cniplug.skel import check_ifname
from cniplug.spec import CNIError

RUN_PREFIX = "cnit-"
DEFAULT_SUBNETS = {1: "192.168.1.0/24", 2: "10.1.1.0/24", 3: "10.0.1.0/24"}
OUTSIDE = outside_net.DEFAULT  # the stand-in "internet" lives in a namespace of ours (lab/outside.py)
JOURNAL_DIR = rundir.RUN_DIR
SYS_NET = "/sys/class/net"
# --break NAME: which steps it leaves out; why the ping that needs them fails is i18n's "break_NAME".
BREAKS: dict[str, Callable[[list[str]], bool]] = {
    "forwarding": lambda argv: "net.ipv4.ip_forward=1" in argv,
    "masquerade": lambda argv: "MASQUERADE" in argv,
    "route": lambda argv: "default" in argv and "route" in argv,
    "gateway": lambda argv: argv[:3] == ["ip", "addr", "add"] and argv[-1].endswith("br0"),
}


def _host(net: ipaddress.IPv4Network | ipaddress.IPv6Network, n: int) -> str:
    return f"{net.network_address + n}/{net.prefixlen}"


def context(example: int, prefix: str = "", subnet: str = "", lab: bool = False, lang: str = "en",
            outside: str = OUTSIDE) -> dict[str, Any]:
    """Template variables of example 1-3: names (with `prefix`), addresses (from `subnet`, a /29 or larger
    IPv4 network; default the tutorial's). `lab` adds the stand-ins a --run needs. Raises CNIError 7 for a
    bad subnet or a prefix that makes an interface name invalid."""
    try:
        net = ipaddress.ip_network(subnet or DEFAULT_SUBNETS[example])
    except ValueError as err:
        raise CNIError(7, f"--subnet {subnet!r} is not a network", str(err)) from None
    if net.version != 4 or net.prefixlen > 29:
        raise CNIError(7, f"--subnet {subnet!r} must be an IPv4 network of /29 or larger")
    p = prefix
    ctx: dict[str, Any]
    if example == 1:
        ctx = {"ns1": p + "ns1", "ns2": p + "ns2", "veth0": p + "veth0", "veth1": p + "veth1",
               "addr1": _host(net, 1), "addr2": _host(net, 2)}
        links = ["veth0", "veth1"]
    elif example == 2:
        out = ipaddress.ip_network(outside)
        ctx = {"container_ns": p + "container-ns", "br": p + "br0", "veth_cont": p + "veth-cont",
               "veth_host": p + "veth-host", "subnet": str(net), "gateway": str(net.network_address + 1),
               "gateway_cidr": _host(net, 1), "container_cidr": _host(net, 2),
               "uplink": p + "veth-out" if lab else "eth0", "internet": str(out.network_address + 1) if lab
               else "8.8.8.8", "outside_ns": p + "outside", "out_peer": p + "veth-wan",
               "out_host_cidr": _host(out, out.num_addresses - 2), "outside_cidr": _host(out, 1),
               "ip_forward_old": facts.sysctl("net.ipv4.ip_forward") or "0"}
        links = ["br", "veth_cont", "veth_host", "out_peer"] + (["uplink"] if lab else [])
        host, container = ("主机", "容器网络空间") if lang == "zh" else ("host", "container namespace")
        ctx["topology"] = [Markup(line) for line in (
            "+", f"| {host} ({ctx['br']}:{ctx['gateway']})", "|   |", f"|   {ctx['veth_host']}", "|     (veth pair)",
            f"|   {ctx['veth_cont']}", "|   |", f"| {container} ({ctx['veth_cont']}:{_host(net, 2).split('/')[0]})")]
    else:
        try:  # example 3's second subnet: the block right after --subnet
            net2 = ipaddress.ip_network((int(net.network_address) + net.num_addresses, net.prefixlen))
        except ValueError:
            raise CNIError(7, f"--subnet {subnet!r}: example 3 needs the next block of the same size as its "
                           f"second subnet, and there is none") from None
        ctx = {"router": p + "router", "client1": p + "client1", "client2": p + "client2",
               "veth_r1": p + "veth-r1", "veth_c1": p + "veth-c1", "veth_r2": p + "veth-r2", "veth_c2": p + "veth-c2",
               "router1_cidr": _host(net, 1), "router2_cidr": _host(net2, 1), "router1": str(net.network_address + 1),
               "router2": str(net2.network_address + 1), "client1_cidr": _host(net, 100 % (net.num_addresses - 1)),
               "client2_cidr": _host(net2, 100 % (net2.num_addresses - 1))}
        links = ["veth_r1", "veth_c1", "veth_r2", "veth_c2"]
        c1, c2 = ctx["client1_cidr"].split("/")[0], ctx["client2_cidr"].split("/")[0]
        width = len(f"{ctx['client1']} ({c1}) <--[veth]--> ")
        ctx["topology"] = [Markup(line) for line in (
            f"{ctx['client1']} ({c1}) <--[veth]--> {ctx['router']} ({ctx['router1']})", " " * width + "|",
            f"{ctx['client2']} ({c2}) <--[veth]--> {ctx['router']} ({ctx['router2']})")]
    for key in links:
        check_ifname(ctx[key], "--prefix")
    ctx["lab"] = lab
    return ctx


def render_example(example: int, lang: str = "en", prefix: str = "", subnet: str = "",
                   lab: bool = False, outside: str = OUTSIDE) -> script.Script:
    """The script of example N: as written (lab False), or as --run runs it (stand-ins, -w)."""
    ctx = context(example, prefix, subnet, lab, lang, outside)
    body = render.render(f"tutorial/example{example}.sh.j2", lang=lang, **ctx)
    parsed = script.parse(body)
    head = (i18n.say("tut_lab_header", lang, n=example, prefix=prefix) if lab
            else i18n.say("tut_header", lang, n=example))
    parsed.header = f"#!/bin/bash\n{head}\n\n"
    return parsed


def subnets_of(example: int, subnet: str, outside: str = OUTSIDE) -> list[str]:
    net = ipaddress.ip_network(subnet or DEFAULT_SUBNETS[example])
    nets = [str(net)]
    if example == 2:
        nets.append(outside)
    if example == 3:
        nets.append(str(ipaddress.ip_network((int(net.network_address) + net.num_addresses, net.prefixlen))))
    return nets


def ttl_meaning(output: str, lang: str) -> str:
    """One sentence about the TTL of a ping's replies ("" when there is none)."""
    m = re.search(r"ttl=(\d+)", output)
    if not m:
        return ""
    ttl = int(m.group(1))
    hops = 64 - ttl
    return i18n.text("ttl_direct" if hops == 0 else "ttl_routed", lang, ttl=ttl, hops=hops)


class Journal:
    """/run/cniplug/tutorial-<prefix>.journal: one JSON line per undo command of a completed step, so that
    `cniplug tutorial --clean --prefix P` can undo what a killed run did. Removed when a run ends cleanly."""

    def __init__(self, prefix: str) -> None:
        self.path = Path(JOURNAL_DIR) / f"tutorial-{prefix}.journal"

    def start(self) -> None:
        rundir.ensure()  # /run/cniplug, 0700: the journal holds commands that --clean runs as root
        self.path.write_text("")

    def record(self, undo: list[list[str]]) -> None:
        with self.path.open("a") as f:
            for argv in undo:
                f.write(json.dumps(argv) + "\n")
                f.flush()

    def entries(self) -> list[list[str]]:
        try:
            return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        except (OSError, ValueError):
            return []

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived during a run."""


def _interrupt(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def say(out: TextIO, text: str) -> None:
    """print() that never raises: a closed terminal or pipe must not stop the clean-up."""
    try:
        print(text, file=out, flush=True)
    except (OSError, ValueError):
        pass


def where_is(link: str, prefix: str) -> str:
    """The lab namespace a link was moved into, "" if none has it."""
    for ns in kernel.lab_namespaces(prefix):
        if os.path.exists(f"/run/netns/{ns}") and runner.execute(["ip", "-n", ns, "link", "show", link]).rc == 0:
            return ns
    return ""


def undo_all(undo: list[list[str]], out: TextIO, prefix: str, lang: str = "en") -> None:
    """Run undo commands in reverse and say what really happened to each."""
    for argv in reversed(undo):
        result = runner.execute(argv)
        if result.rc == 0:
            say(out, f"  {' '.join(argv)}  -> {i18n.text('lab_ok', lang)}")
            continue
        why = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.rc}"
        if argv[:3] == ["ip", "link", "delete"] and "Cannot find device" in why:
            ns = where_is(argv[3], prefix)
            why = (i18n.text("lab_moved", lang, link=argv[3], ns=ns) if ns
                   else i18n.text("lab_gone_with_peer", lang, link=argv[3]))
        say(out, f"  {' '.join(argv)}  -> " + i18n.text("lab_not_done", lang, why=why))


def wait_gone(prefix: str, timeout: float = 10.0) -> list[str]:
    """Wait until none of the lab's namespaces and host links (lab_names) is left (the kernel removes a deleted
    namespace's veth peers asynchronously). Returns what is still there after `timeout` seconds."""
    namespaces, links = lab_names(prefix)
    deadline = time.monotonic() + timeout
    while True:
        left = [f"netns {n}" for n in sorted(namespaces) if os.path.exists(f"/run/netns/{n}")]
        left += [f"link {n}" for n in sorted(links) if os.path.exists(f"{SYS_NET}/{n}")]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


NAMESPACE_KEYS = ("ns1", "ns2", "container_ns", "outside_ns", "router", "client1", "client2")
LINK_KEYS = ("veth0", "veth1", "br", "veth_cont", "veth_host", "uplink", "out_peer", "veth_r1", "veth_c1", "veth_r2",
             "veth_c2")


def lab_names(prefix: str) -> tuple[set[str], set[str]]:
    """(namespaces, links) that a --run of any example with this prefix creates: the only names --clean and the
    final check look at, never anything else that happens to start with the prefix."""
    namespaces: set[str] = set()
    links: set[str] = set()
    for example in (1, 2, 3):
        ctx = context(example, prefix, lab=True)
        namespaces |= {ctx[k] for k in NAMESPACE_KEYS if k in ctx}
        links |= {ctx[k] for k in LINK_KEYS if k in ctx}
    return namespaces, links


def clean(prefix: str, out: TextIO = sys.stdout) -> int:
    """Undo what a killed run with this prefix left: its journal, then the lab's own namespaces and links
    (lab_names) that are still there. Nothing else is touched."""
    journal = Journal(prefix)
    entries = journal.entries()
    say(out, f"# undoing {len(entries)} recorded step(s) of an earlier run with prefix {prefix!r}")
    undo_all(entries, out, prefix)
    namespaces, links = lab_names(prefix)
    for ns in sorted(namespaces):
        if os.path.exists(f"/run/netns/{ns}"):
            result = runner.execute(["ip", "netns", "delete", ns])
            say(out, f"  ip netns delete {ns}  -> {'ok' if result.rc == 0 else result.stderr.strip()}")
    wait_gone(prefix, timeout=2)  # veths of the deleted namespaces go by themselves
    for link in sorted(links):
        if os.path.exists(f"{SYS_NET}/{link}"):
            result = runner.execute(["ip", "link", "delete", link])
            say(out, f"  ip link delete {link}  -> {'ok' if result.rc == 0 else result.stderr.strip()}")
    journal.remove()
    left = wait_gone(prefix)
    say(out, "nothing left" if not left else f"still there: {', '.join(left)}")
    return 0 if not left else 1


def show_topology(out: TextIO, state: kernel.State, shown: list[str], lang: str = "en") -> list[str]:
    """Print the topology when it differs from the last one shown (and joins something); returns it."""
    picture = kernel.topology(state)
    if picture != shown and any("<==" in line or "--port of-->" in line for line in picture):
        print("    " + i18n.text("lab_topology_now", lang), file=out)
        print("\n".join("      " + line for line in picture), file=out)
        return picture
    return shown


def run(parsed: script.Script, prefix: str, subnets: list[str], lang: str = "en", out: TextIO = sys.stdout,
        step_mode: bool = False, breaks: tuple[str, ...] = ()) -> bool:
    """Run every step as a lab; undo everything at the end, at the first failure, or on SIGINT/SIGTERM.

    Returns True when every step that ran succeeded (with `breaks`: when a ping failed, as expected).
    """
    journal = Journal(prefix)
    journal.start()
    done_undo: list[list[str]] = []
    ok = True
    failed_pings: list[str] = []
    old = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    total = len(parsed.steps)
    try:
        before = kernel.snapshot(prefix, subnets)
        shown_topology: list[str] = []
        for i, step in enumerate(parsed.steps, 1):
            if step.note:
                shown_topology = show_topology(out, before, shown_topology, lang)
                print("\n" + "\n".join(f"# {line}" for line in step.note.splitlines()), file=out)
            left_out = [name for name in breaks if BREAKS[name](step.argv)]
            if left_out:
                print(f"[{i}/{total}] {' '.join(step.argv)}  -> LEFT OUT (--break {left_out[0]})", file=out)
                if step.argv[:3] == ["ip", "netns", "exec"] and "net.ipv4.ip_forward=1" in step.argv:
                    # A new namespace starts with the host's IPv4 settings (devconf_inherit_init_net=0):
                    # leaving the step out is not enough where the host forwards, so switch it off.
                    off = [w.replace("ip_forward=1", "ip_forward=0") for w in step.argv]
                    runner.execute(off)
                    print(f"    instead: {' '.join(off)} (a new namespace inherits the host's "
                          f"ip_forward={facts.sysctl('net.ipv4.ip_forward')})", file=out)
                elif "net.ipv4.ip_forward=1" in step.argv and facts.sysctl("net.ipv4.ip_forward") == "1":
                    print("    (this host forwards already, ip_forward=1: leaving the step out changes nothing "
                          "here, and the lab does not switch the host's forwarding off)", file=out)
                continue
            if step_mode and not sys.stdin.isatty() and i == 1:
                print("# --step needs a terminal on stdin: running without pauses", file=out)
            if step_mode and sys.stdin.isatty():
                try:
                    answer = input(f"[{i}/{total}] {' '.join(step.argv)}   Enter: run it, q: stop and clean up > ")
                except EOFError:  # Ctrl-D: as q
                    answer = "q"
                if answer.strip().lower() == "q":
                    raise Interrupted("q")
            # A signal between running a step and recording its undo would lose the undo: hold them here.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            try:
                result = runner.execute(step.argv)
            except CNIError as err:  # the tool is not installed
                result = runner.Completed(argv=step.argv, rc=127, stderr=err.msg)
            if step.undo and result.rc == 0:
                done_undo.extend(step.undo)
                journal.record(step.undo)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
            is_ping = "ping" in step.argv
            if result.rc != 0 and re.search(r'exec of "[^"]+" failed: No such file', result.stderr):
                result.rc = 127  # `ip netns exec` could not find the tool: the same as the shell's 127
            status = i18n.text("lab_ok", lang) if result.rc == 0 else i18n.text("lab_failed", lang, rc=result.rc)
            if step.tolerant and result.rc != 0:
                status = i18n.text("lab_nothing_to_do", lang)
            elif step.observe and result.rc == 127:
                status = i18n.text("lab_not_installed", lang)
            print(f"[{i}/{total}] {' '.join(step.argv)}  -> {status}", file=out)
            if (step.observe and result.rc != 127) or (is_ping and result.stdout):
                text = result.stdout.rstrip() or result.stderr.rstrip()
                print("\n".join("    | " + line for line in text.splitlines()), file=out)
            if is_ping:
                meaning = ttl_meaning(result.stdout, lang)
                if meaning:
                    print(f"    {meaning}", file=out)
            if result.rc != 0 and not step.tolerant:
                if step.observe:
                    continue
                if is_ping and breaks:
                    failed_pings.append(" ".join(step.argv))
                    for name in breaks:
                        print(f"    expected with --break {name}: {i18n.text('break_' + name, lang)}", file=out)
                    continue
                print(f"        {result.stderr.strip()}", file=out)
                ok = False
                break
            if not step.observe and not is_ping:
                after = kernel.snapshot(prefix, subnets)
                for line in kernel.changes(before, after):
                    print(f"    {line}", file=out)
                before = after
        show_topology(out, before, shown_topology, lang)
        from cniplug.lab import show

        print("\n# The whole topology before the clean-up (cniplug show --prefix " + prefix + "):", file=out)
        try:
            print(show.render_text(show.collect(prefix=prefix), lang).rstrip(), file=out)
        except CNIError as err:  # showing is a bonus: never a reason to stop before the clean-up
            print(f"(cannot show it: {err.msg})", file=out)
    except (Interrupted, KeyboardInterrupt, OSError) as exc:  # OSError: e.g. the output pipe closed
        say(out, f"\n# interrupted ({type(exc).__name__}: {exc}): undoing everything done so far")
        ok = False
    finally:
        for sig in old:
            signal.signal(sig, signal.SIG_IGN)  # the clean-up itself is not interrupted
        say(out, "\n" + i18n.text("lab_clean_up", lang))
        undo_all(done_undo, out, prefix, lang)
        left = wait_gone(prefix)
        if not left:
            journal.remove()
        say(out, i18n.text("lab_all_gone", lang) if not left else
            i18n.text("lab_still_there", lang, names=", ".join(left)))
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if breaks:
        say(out, f"\n# with --break {', '.join(breaks)}: " + (
            f"{len(failed_pings)} ping(s) failed, as expected" if failed_pings
            else "no ping failed (see above why: the step left out was not needed here)"))
        return ok and not left  # a ping that fails is the lesson; any other step that fails is not
    return ok and not left


def missing_tools(parsed: script.Script) -> list[str]:
    """The commands of the steps and undo lines that cannot be found (runner.which), but for observation
    steps: a lab without brctl or ethtool shows their modern equivalent instead."""
    missing: list[str] = []
    argvs = [step.argv for step in parsed.steps if not step.observe]
    for argv in argvs + [undo for step in parsed.steps for undo in step.undo]:
        try:
            runner.which(argv[0])
        except CNIError:
            if argv[0] not in missing:
                missing.append(argv[0])
    return missing


def main(example: int, lang: str, prefix: str, subnet: str, do_run: bool, step_mode: bool = False,
         breaks: tuple[str, ...] = (), do_clean: bool = False, outside: str = OUTSIDE) -> int:
    """`cniplug tutorial`: print example N, or --run it as a lab, or --clean a killed run's leftovers.
    Returns the exit code: 0 passed, 1 failed or not root, 2 bad input."""
    try:
        if do_run or do_clean:
            prefix = prefix or RUN_PREFIX
            if os.geteuid() != 0:
                print(f"cniplug tutorial {'--clean' if do_clean else '--run'} needs root (it creates and removes "
                      f"namespaces)", file=sys.stderr)
                return 1
        if do_clean:
            return clean(prefix)
        if do_run:
            ctx = context(example, prefix, subnet, lab=True, outside=outside)
            taken = [v for v in ctx.values() if isinstance(v, str) and v.startswith(prefix)
                     and (os.path.exists(f"/run/netns/{v}") or os.path.exists(f"/sys/class/net/{v}"))]
            if taken:
                print(f"refusing to run: {', '.join(taken)} already exist(s); `cniplug tutorial --clean "
                      f"--prefix {prefix}` removes what an earlier run left, or choose another --prefix",
                      file=sys.stderr)
                return 1
            if example == 2:  # the only example that puts networks on the host: a bridge and the uplink stand-in
                outside_net.check_pair(subnet or DEFAULT_SUBNETS[2], outside, mine=prefix)
        parsed = render_example(example, lang, prefix, subnet, lab=do_run, outside=outside)
        if (breaks or step_mode) and not do_run:
            raise CNIError(7, "--break and --step need --run")
        for name in breaks:
            if not any(BREAKS[name](step.argv) for step in parsed.steps):
                raise CNIError(7, f"example {example} has no step that --break {name} could leave out",
                               "forwarding: examples 2 and 3; masquerade and gateway: example 2; route: 2 and 3")
    except CNIError as err:
        print(f"cniplug tutorial: {err.msg}" + (f" ({err.details})" if err.details else ""), file=sys.stderr)
        return 2
    if not do_run:
        sys.stdout.write(parsed.text)
        return 0
    missing = missing_tools(parsed)
    if missing:
        print(f"cniplug tutorial: command not found: {', '.join(missing)} (install iproute2, iptables, procps, "
              f"iputils-ping)", file=sys.stderr)
        return 1
    print(parsed.header.rstrip())
    ok = run(parsed, prefix, subnets_of(example, subnet, outside), lang, step_mode=step_mode, breaks=breaks)
    print("\n" + i18n.text("tut_passed" if ok else "tut_failed", lang, n=example))
    return 0 if ok else 1
