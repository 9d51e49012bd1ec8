"""Interface names with a dot (VLAN-style names such as `eth0.1`, `br.0`), which Linux allows and the reference
plugins handle: a sysctl key naming one must use sysctl's slash form, where the dots stay in the name.

Names start with `qa2` (namespaces `tcp-qa2*`, bridges `qa2d*`), addresses from 10.227.0.0/16.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_plugin

pytestmark = pytest.mark.root


def bridge_conf(bridge: str, subnet: str, data_dir: Path) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "qa2dotnet", "type": "cniplug-bridge", "bridge": bridge,
            "isGateway": True, "ipam": {"type": "cniplug-host-local", "subnet": subnet, "dataDir": str(data_dir)}}


def ns_read(netns: str, path: str) -> str:
    return subprocess.run(["ip", "netns", "exec", Path(netns).name, "cat", path], capture_output=True,
                          text=True).stdout.strip()


def test_bridge_with_dotted_container_ifname(make_netns: Callable[[str], str], cleanup_links: list[str],
                                             tmp_path: Path) -> None:
    netns = make_netns("qa2dot1")
    cleanup_links.append("qa2d1")
    conf = bridge_conf("qa2d1", "10.227.31.0/24", tmp_path)
    add = run_plugin("cniplug-bridge", "ADD", conf, netns=netns, container_id="qa2dot1", ifname="eth0.1")
    assert add.rc == 0, add.stdout + add.stderr
    assert ns_read(netns, "/proc/sys/net/ipv4/conf/eth0.1/arp_notify") == "1"
    delete = run_plugin("cniplug-bridge", "DEL", conf, netns=netns, container_id="qa2dot1", ifname="eth0.1")
    assert delete.rc == 0, delete.stdout + delete.stderr


def test_bridge_with_dotted_bridge_name(make_netns: Callable[[str], str], cleanup_links: list[str],
                                        tmp_path: Path) -> None:
    netns = make_netns("qa2dot2")
    cleanup_links.append("qa2d.2")
    conf = bridge_conf("qa2d.2", "10.227.32.0/24", tmp_path)
    for n in (1, 2):  # the second ADD finds the bridge there and reads its accept_ra
        add = run_plugin("cniplug-bridge", "ADD", conf, netns=netns, container_id=f"qa2dot2{n}", ifname=f"eth{n}")
        assert add.rc == 0, add.stdout + add.stderr
    assert Path("/proc/sys/net/ipv6/conf/qa2d.2/accept_ra").read_text().strip() == "0"
    for n in (1, 2):
        delete = run_plugin("cniplug-bridge", "DEL", conf, netns=netns, container_id=f"qa2dot2{n}", ifname=f"eth{n}")
        assert delete.rc == 0, delete.stdout + delete.stderr
