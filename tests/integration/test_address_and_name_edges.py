"""Interface and bridge names the kernel accepts but sysctl's dotted keys cannot name (a dot, as in a VLAN
`eth.0`): the plugins must still set their sysctls (the reference does). Names start with `qa3`, addresses
come from 10.228.0.0/16 and fd28::/16."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_plugin, sh

from cniplug.plugins.common import chain_name

pytestmark = pytest.mark.root


def test_bridge_with_dots_in_bridge_and_interface_names(make_netns: Callable[..., str], cleanup_links: list[str],
                                                        cleanup_chains: list[str], tmp_path: Path) -> None:
    ns = make_netns("qa3-dots", prefix="")
    cleanup_links.append("qa3.br")
    cleanup_chains.append(chain_name("qa3dots", "qa3c1"))
    config = {"cniVersion": "1.0.0", "name": "qa3dots", "type": "cniplug-bridge", "bridge": "qa3.br",
              "isGateway": True, "ipMasq": True,
              "ipam": {"type": "cniplug-host-local", "dataDir": str(tmp_path),
                       "ranges": [[{"subnet": "10.228.10.0/24"}], [{"subnet": "fd28:10::/64"}]]}}
    add = run_plugin("cniplug-bridge", "ADD", config, netns=ns, container_id="qa3c1", ifname="eth.0")
    assert add.rc == 0, add
    conf = "/proc/sys/net/ipv4/conf/eth.0/arp_notify"
    assert sh("ip", "netns", "exec", "qa3-dots", "cat", conf).strip() == "1"
    assert sh("ip", "netns", "exec", "qa3-dots", "cat", "/proc/sys/net/ipv6/conf/eth.0/accept_dad").strip() == "0"
    assert Path("/proc/sys/net/ipv6/conf/qa3.br/accept_ra").read_text().strip() == "0"
    check = run_plugin("cniplug-bridge", "CHECK", dict(config, prevResult=add.json), netns=ns,
                       container_id="qa3c1", ifname="eth.0")
    assert check.rc == 0, check
    # A second ADD on the existing bridge reads its accept_ra (now 0) under the dotted name.
    ns2 = make_netns("qa3-dots2", prefix="")
    cleanup_chains.append(chain_name("qa3dots", "qa3c2"))
    add2 = run_plugin("cniplug-bridge", "ADD", config, netns=ns2, container_id="qa3c2", ifname="eth.0")
    assert add2.rc == 0, add2
    dry = run_plugin("cniplug-bridge", "ADD", config, netns=ns2, container_id="qa3c3", ifname="eth.1", dry_run=True)
    assert dry.rc == 0 and "qa3/br/accept_ra" not in dry.stdout and "qa3.br.accept_ra" not in dry.stdout, dry.stdout
    for cid, netns in (("qa3c1", ns), ("qa3c2", ns2)):
        d = run_plugin("cniplug-bridge", "DEL", config, netns=netns, container_id=cid, ifname="eth.0")
        assert d.rc == 0, d


@pytest.mark.parametrize("plugin", ["cniplug-bridge", "cniplug-ptp"])
@pytest.mark.parametrize("address", ["10.228.11.7/32", "fd28:11::7/128"])
def test_host_prefix_without_gateway_is_a_cni_error(plugin: str, address: str,
                                                    make_netns: Callable[..., str]) -> None:
    """A /32 or /128 static address with no gateway: no address is left for the gateway (was a TypeError
    traceback: ipaddress' hosts() of a /32 is a list, not an iterator)."""
    ns = make_netns("qa3-host", prefix="")
    config = {"cniVersion": "1.0.0", "name": "qa3host", "type": plugin, "bridge": "qa3hbr", "isGateway": True,
              "ipam": {"type": "cniplug-static", "addresses": [{"address": address}]}}
    r = run_plugin(plugin, "ADD", config, netns=ns, container_id="qa3c1", ifname="eth1", dry_run=True)
    assert r.rc == 1 and "Traceback" not in r.stderr, r
    assert r.json["code"] == 7 and address in r.json["msg"], r.json


@pytest.mark.parametrize("plugin", ["cniplug-bridge", "cniplug-ptp"])
def test_slash31_gateway_is_the_other_address(plugin: str, make_netns: Callable[..., str]) -> None:
    ns = make_netns("qa3-host", prefix="")
    config = {"cniVersion": "1.0.0", "name": "qa3host", "type": plugin, "bridge": "qa3hbr", "isGateway": True,
              "ipam": {"type": "cniplug-static", "addresses": [{"address": "10.228.11.6/31"}]}}
    r = run_plugin(plugin, "ADD", config, netns=ns, container_id="qa3c1", ifname="eth1", dry_run=True)
    assert r.rc == 0, r
    assert "ip addr add 10.228.11.7/" in r.stdout, r.stdout


@pytest.mark.parametrize("plugin", ["cniplug-bridge", "cniplug-ptp"])
@pytest.mark.parametrize("mtu", [68, 1200])
def test_ipv4_network_with_an_mtu_below_ipv6s_minimum(plugin: str, mtu: int, make_netns: Callable[..., str],
                                                      cleanup_links: list[str], cleanup_chains: list[str],
                                                      tmp_path: Path) -> None:
    """Below 1280 the kernel takes IPv6 off a link (its /proc/sys/net/ipv6/conf/DEV goes): the accept_ra and
    accept_dad steps must not be there (ADD failed on them; the reference attaches such a network)."""
    ns = make_netns("qa3-mtu", prefix="")
    cleanup_links.append("qa3mbr")
    cleanup_chains.append(chain_name("qa3mtu", "qa3c1"))
    config = {"cniVersion": "1.0.0", "name": "qa3mtu", "type": plugin, "bridge": "qa3mbr", "isGateway": True,
              "ipMasq": True, "mtu": mtu,
              "ipam": {"type": "cniplug-host-local", "dataDir": str(tmp_path), "subnet": "10.228.12.0/24"}}
    add = run_plugin(plugin, "ADD", config, netns=ns, container_id="qa3c1", ifname="eth0")
    assert add.rc == 0, add
    assert f"mtu {mtu} " in sh("ip", "netns", "exec", "qa3-mtu", "ip", "link", "show", "eth0")
    check = run_plugin(plugin, "CHECK", dict(config, prevResult=add.json), netns=ns, container_id="qa3c1")
    assert check.rc == 0, check
    d = run_plugin(plugin, "DEL", config, netns=ns, container_id="qa3c1")
    assert d.rc == 0, d
