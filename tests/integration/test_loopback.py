"""cniplug-loopback run as a runtime runs it, in a real namespace."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest

from tests.conftest import run_plugin, sh

pytestmark = pytest.mark.root
CONF = {"cniVersion": "1.0.0", "name": "tclonet", "type": "cniplug-loopback"}


def lo_flags(netns: str) -> list[str]:
    name = os.path.basename(netns)
    return list(json.loads(sh("ip", "-n", name, "-j", "link", "show", "dev", "lo"))[0]["flags"])


def test_add_brings_lo_up_and_del_twice_succeeds(make_netns: Callable[[str], str]) -> None:
    netns = make_netns("lo-a")
    assert "UP" not in lo_flags(netns)
    add = run_plugin("cniplug-loopback", "ADD", CONF, netns=netns, ifname="lo")
    assert add.rc == 0, add.stdout + add.stderr
    assert "UP" in lo_flags(netns)
    result = add.json
    assert result["cniVersion"] == "1.0.0"
    assert result["interfaces"] == [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": netns}]
    assert {ip["address"] for ip in result["ips"]} == {"127.0.0.1/8", "::1/128"}
    check = run_plugin("cniplug-loopback", "CHECK", {**CONF, "prevResult": result}, netns=netns, ifname="lo")
    assert check.rc == 0 and check.stdout == "", check.stdout
    for _ in range(2):
        dele = run_plugin("cniplug-loopback", "DEL", CONF, netns=netns, ifname="lo")
        assert dele.rc == 0 and dele.stdout == "", dele.stdout
    assert "UP" not in lo_flags(netns)
    check = run_plugin("cniplug-loopback", "CHECK", {**CONF, "prevResult": result}, netns=netns, ifname="lo")
    assert check.rc == 1 and "not up" in check.json["msg"]


def test_result_in_0_3_1_shape(make_netns: Callable[[str], str]) -> None:
    netns = make_netns("lo-b")
    add = run_plugin("cniplug-loopback", "ADD", {**CONF, "cniVersion": "0.3.1"}, netns=netns, ifname="lo")
    assert add.rc == 0
    assert {ip["version"] for ip in add.json["ips"]} == {"4", "6"}


def test_prev_result_is_passed_through(make_netns: Callable[[str], str]) -> None:
    netns = make_netns("lo-c")
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.9.9.9/24"}], "routes": [], "dns": {}}
    add = run_plugin("cniplug-loopback", "ADD", {**CONF, "prevResult": prev}, netns=netns, ifname="lo")
    assert add.rc == 0
    assert add.json["ips"] == [{"address": "10.9.9.9/24"}]


def test_del_without_netns_or_with_vanished_netns_succeeds(make_netns: Callable[[str], str]) -> None:
    assert run_plugin("cniplug-loopback", "DEL", CONF, netns="", ifname="lo").rc == 0
    netns = make_netns("lo-d")
    sh("ip", "netns", "delete", os.path.basename(netns))
    assert run_plugin("cniplug-loopback", "DEL", CONF, netns=netns, ifname="lo").rc == 0


@pytest.mark.parametrize("env,stdin,code", [
    ({"CNI_COMMAND": "ADD"}, b"{not json", 6),
    ({"CNI_COMMAND": "ADD", "CNI_IFNAME": ""}, None, 4),
    ({"CNI_COMMAND": "BOGUS"}, None, 4),
    ({"CNI_COMMAND": "ADD"}, json.dumps({**CONF, "cniVersion": "9.9.9"}).encode(), 1),
    ({"CNI_COMMAND": "ADD", "CNI_NETNS": "/run/netns/tclo-does-not-exist"}, None, 4),
    ({"CNI_COMMAND": "ADD", "CNI_NETNS": "/etc/hostname"}, None, 4),
])
def test_bad_input_gets_code_and_changes_nothing(make_netns: Callable[[str], str], env: dict[str, str],
                                                 stdin: bytes | None, code: int) -> None:
    netns = make_netns("lo-e")
    kwargs = {"netns": env.pop("CNI_NETNS", netns), "ifname": env.pop("CNI_IFNAME", "lo")}
    out = run_plugin("cniplug-loopback", env["CNI_COMMAND"], stdin if stdin is not None else CONF, **kwargs)
    assert out.rc == 1
    body = out.json
    assert body["code"] == code and body["msg"]
    assert "Traceback" not in out.stdout
    assert "UP" not in lo_flags(netns)
