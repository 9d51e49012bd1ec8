"""`cniplug tutorial N`: the tutorial's three scripts, rendered from the macros the plugins use.

Printed, they are the tutorial's commands in the tutorial's order (plus `#undo` lines that say how to
take each step back). With --run they are executed in throwaway namespaces whose names carry a
prefix, every ping is checked, and everything is undone at the end.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import time
from typing import Any

from cniplug import facts, render, runner, script
from cniplug.skel import check_ifname
from cniplug.spec import CNIError

RUN_PREFIX = "cnit-"
DEFAULT_SUBNETS = {1: "192.168.1.0/24", 2: "10.1.1.0/24", 3: "10.0.1.0/24"}
OUTSIDE = "203.0.113.0/24"  # TEST-NET-3: the stand-in "internet" lives in a namespace of ours


def _host(net: ipaddress.IPv4Network | ipaddress.IPv6Network, n: int) -> str:
    return f"{net.network_address + n}/{net.prefixlen}"


def context(example: int, prefix: str = "", subnet: str = "") -> dict[str, Any]:
    try:
        net = ipaddress.ip_network(subnet or DEFAULT_SUBNETS[example])
    except ValueError as err:
        raise CNIError(7, f"--subnet {subnet!r} is not a network", str(err)) from None
    if net.version != 4 or net.prefixlen > 29:
        raise CNIError(7, f"--subnet {subnet!r} must be an IPv4 network of /29 or larger")
    p = prefix
    if example == 1:
        ctx: dict[str, Any] = {"ns1": p + "ns1", "ns2": p + "ns2", "veth0": p + "veth0", "veth1": p + "veth1",
                               "addr1": _host(net, 1), "addr2": _host(net, 2)}
        links = ["veth0", "veth1"]
    elif example == 2:
        out = ipaddress.ip_network(OUTSIDE)
        ctx = {"container_ns": p + "container-ns", "br": p + "br0", "veth_cont": p + "veth-cont",
               "veth_host": p + "veth-host", "subnet": str(net), "gateway": str(net.network_address + 1),
               "gateway_cidr": _host(net, 1), "container_cidr": _host(net, 2),
               "outside_ns": p + "outside", "out_dev": p + "veth-out", "out_peer": p + "veth-wan",
               "out_host_cidr": _host(out, 254), "outside_cidr": _host(out, 1),
               "outside": str(out.network_address + 1),
               "ip_forward_old": facts.sysctl("net.ipv4.ip_forward") or "0"}
        links = ["br", "veth_cont", "veth_host", "out_dev", "out_peer"]
    else:
        net2 = ipaddress.ip_network((int(net.network_address) + net.num_addresses, net.prefixlen))
        ctx = {"router": p + "router", "client1": p + "client1", "client2": p + "client2",
               "veth_r1": p + "veth-r1", "veth_c1": p + "veth-c1", "veth_r2": p + "veth-r2", "veth_c2": p + "veth-c2",
               "router1_cidr": _host(net, 1), "router2_cidr": _host(net2, 1), "router1": str(net.network_address + 1),
               "router2": str(net2.network_address + 1), "client1_cidr": _host(net, 100 % (net.num_addresses - 1)),
               "client2_cidr": _host(net2, 100 % (net2.num_addresses - 1))}
        links = ["veth_r1", "veth_c1", "veth_r2", "veth_c2"]
    for key in links:
        check_ifname(ctx[key], "--prefix")
    return ctx


def render_example(example: int, lang: str = "en", prefix: str = "", subnet: str = "") -> script.Script:
    body = render.render(f"tutorial/example{example}.sh.j2", lang=lang, **context(example, prefix, subnet))
    return script.parse(body)


def execute(argv: list[str]) -> runner.Completed:
    """runner.execute, with a command that cannot be found reported as a failed step (exit 127)."""
    try:
        return runner.execute(argv)
    except CNIError as err:
        return runner.Completed(argv=argv, rc=127, stderr=err.msg)


def missing_tools(parsed: script.Script) -> list[str]:
    """The commands of the script's steps and undo lines that cannot be found (runner.which)."""
    missing = []
    for argv in [step.argv for step in parsed.steps] + [undo for step in parsed.steps for undo in step.undo]:
        try:
            runner.which(argv[0])
        except CNIError:
            if argv[0] not in missing:
                missing.append(argv[0])
    return missing


SYS_NET = "/sys/class/net"


def wait_gone(names: list[str], timeout: float = 10.0) -> list[str]:
    """Wait until no link of these names is left in this namespace; the names still there after `timeout` s.

    The kernel removes the host end of a veth whose peer's namespace was deleted asynchronously, after
    `ip netns delete` has returned (issue #12, item 6): "done" is said only once they are gone.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = [name for name in names if os.path.exists(f"{SYS_NET}/{name}")]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def run(parsed: script.Script, out: Any = sys.stdout) -> bool:
    """Run every step, reporting as it goes; undo everything at the end (or at the first failure)."""
    done: list[script.Step] = []
    ok = True
    total = len(parsed.steps)
    for i, step in enumerate(parsed.steps, 1):
        if step.note:
            print(f"\n# {step.note}", file=out)
        result = execute(step.argv)
        status = "ok" if result.rc == 0 else f"FAILED (exit {result.rc})"
        print(f"[{i}/{total}] {' '.join(step.argv)}  -> {status}", file=out)
        if step.argv[-3:-1] == ["-c", "3"] or "ping" in step.argv:
            summary = [line for line in result.stdout.splitlines() if "packets transmitted" in line]
            print(f"        {summary[0] if summary else result.stdout.strip()}", file=out)
        if result.rc != 0:
            print(f"        {result.stderr.strip()}", file=out)
            ok = False
            break
        done.append(step)
    print("\n# Clean up: undo every step in reverse", file=out)
    for step in reversed(done):
        for undo in step.undo:
            result = execute(undo)
            gone = result.rc != 0
            print(f"  {' '.join(undo)}  -> {'already gone' if gone else 'ok'}", file=out)
    return ok


def main(example: int, lang: str, prefix: str, subnet: str, do_run: bool) -> int:
    """Print the example's script, or with do_run run it (root) and undo it; 0 if every ping passed and
    nothing is left, 1 if not (or not root, or a command is missing), 2 for a bad --prefix or --subnet."""
    ctx: dict[str, Any] = {}
    try:
        if do_run:
            prefix = prefix or RUN_PREFIX
            if os.geteuid() != 0:
                print("cniplug tutorial --run needs root (it creates namespaces)", file=sys.stderr)
                return 1
            ctx = context(example, prefix, subnet)
            taken = [v for v in ctx.values() if isinstance(v, str) and v.startswith(prefix)
                     and (os.path.exists(f"/run/netns/{v}") or os.path.exists(f"{SYS_NET}/{v}"))]
            if taken:
                print(f"refusing to run: {', '.join(taken)} already exist(s); choose another --prefix", file=sys.stderr)
                return 1
        parsed = render_example(example, lang, prefix, subnet)
    except CNIError as err:
        print(f"cniplug tutorial: {err.msg}" + (f" ({err.details})" if err.details else ""), file=sys.stderr)
        return 2
    if not do_run:
        sys.stdout.write(parsed.text)
        return 0
    missing = missing_tools(parsed)
    if missing:
        print(f"cniplug tutorial: command not found: {', '.join(missing)} (install iproute2, iptables, "
              f"procps, iputils-ping)", file=sys.stderr)
        return 1
    ok = run(parsed)
    left = wait_gone([v for v in ctx.values() if isinstance(v, str) and v.startswith(prefix)])
    if left:
        print(f"\nstill present after the clean-up: {', '.join(left)}")
        ok = False
    print(f"\ntutorial example {example}: {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1
