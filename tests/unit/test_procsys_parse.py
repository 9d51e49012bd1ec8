"""Which commands procsys carries out in-process, and which it leaves to the real sysctl (no root)."""

from __future__ import annotations

import pytest

from cniplug import procsys


@pytest.mark.parametrize(("argv", "expected"), [
    (["sysctl", "-w", "net.ipv4.ip_forward=1"], ("", [("net.ipv4.ip_forward", "1")])),
    (["sysctl", "-w", "net.ipv4.conf.veth-1.arp_notify=1", "net.ipv6.conf.veth-1.accept_dad=0"],
     ("", [("net.ipv4.conf.veth-1.arp_notify", "1"), ("net.ipv6.conf.veth-1.accept_dad", "0")])),
    (["nsenter", "--net=/run/netns/c1", "sysctl", "-w", "net.ipv4.conf.eth0.arp_notify=1"],
     ("/run/netns/c1", [("net.ipv4.conf.eth0.arp_notify", "1")])),
])
def test_plain_sysctl_writes_are_carried_out_here(argv: list[str], expected: object) -> None:
    assert procsys.parse(argv) == expected


@pytest.mark.parametrize("argv", [
    ["sysctl", "net.ipv4.ip_forward"],                        # a read
    ["sysctl", "-w"],                                         # nothing to write
    ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],          # other options
    ["sysctl", "-w", "net/ipv4/conf/eth0.100/arp_notify=1"],  # slashes: procps swaps dots and slashes
    ["sysctl", "-w", "net.ipv4.ping_group_range=0 1000"],     # a value with a space
    ["sysctl", "-w", "net.ipv4.ip_forward"],                  # no value
    ["sysctl", "-w", "net.ipv4.ip_forward=1", "-p"],
    ["nsenter", "--net=", "sysctl", "-w", "net.ipv4.ip_forward=1"],
    ["nsenter", "--net=/run/netns/c1", "--mount=/x", "sysctl", "-w", "a.b=1"],
    ["nsenter", "--net=/run/netns/c1", "ip", "link"],
    ["ip", "netns", "exec", "c1", "sysctl", "-w", "a.b=1"],
])
def test_anything_else_runs_the_real_command(argv: list[str]) -> None:
    assert procsys.parse(argv) is None and procsys.carry_out(argv) is None
