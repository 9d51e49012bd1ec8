"""static IPAM (cni-notes 3.4)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cniplug.ipam import static
from cniplug.skel import Request, parse_request
from cniplug.spec import ERR_INTERNAL, ERR_INVALID_CONFIG, ERR_INVALID_ENV, CNIError

ADDRS = [{"address": "10.250.210.5/24", "gateway": "10.250.210.1"}, {"address": "fd10:250:210::5/64"}]


def make_req(ipam: dict[str, Any], command: str = "ADD", args: str = "",
             extra: dict[str, Any] | None = None) -> Request:
    config = {"cniVersion": "1.1.0", "name": "tcnihl-static", "ipam": {"type": "static", **ipam}, **(extra or {})}
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/usr/lib/cni", "CNI_ARGS": args}
    return parse_request(env, json.dumps(config).encode())


def test_add_echoes_config() -> None:
    ipam = {"addresses": ADDRS,
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.250.210.254"}],
            "dns": {"nameservers": ["10.250.210.53"], "domain": "example.org", "search": ["example.org"],
                    "options": ["ndots:2"]}}
    assert static.add(make_req(ipam)) == {
        "cniVersion": "1.1.0",
        "ips": [{"address": "10.250.210.5/24", "gateway": "10.250.210.1"}, {"address": "fd10:250:210::5/64"}],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.250.210.254"}],
        "dns": {"nameservers": ["10.250.210.53"], "domain": "example.org", "search": ["example.org"],
                "options": ["ndots:2"]},
    }


def test_no_dns_key_when_empty() -> None:
    assert "dns" not in static.add(make_req({"addresses": ADDRS, "dns": {}}))


def test_cni_args_ip_appended_and_gateway_attached() -> None:
    req = make_req({"addresses": ADDRS[:1]}, args="IP=10.250.211.7/24, fd10:250:211::7/64;GATEWAY=10.250.211.1")
    assert static.add(req)["ips"] == [
        {"address": "10.250.210.5/24", "gateway": "10.250.210.1"},
        {"address": "10.250.211.7/24", "gateway": "10.250.211.1"},
        {"address": "fd10:250:211::7/64"},
    ]


def test_cni_args_gateway_overrides_configured_gateway() -> None:
    req = make_req({"addresses": ADDRS[:1]}, args="GATEWAY=10.250.210.254")
    assert static.add(req)["ips"] == [{"address": "10.250.210.5/24", "gateway": "10.250.210.254"}]


def test_args_and_runtime_config_replace() -> None:
    req = make_req({"addresses": ADDRS}, extra={"args": {"cni": {"ips": ["10.250.212.9/24"]}}})
    assert static.add(req)["ips"] == [{"address": "10.250.212.9/24"}]
    req = make_req({"addresses": ADDRS}, extra={"args": {"cni": {"ips": ["10.250.212.9/24"]}},
                                               "runtimeConfig": {"ips": ["10.250.213.9/24"]}})
    assert static.add(req)["ips"] == [{"address": "10.250.213.9/24"}]


@pytest.mark.parametrize(("ipam", "extra", "message"), [
    ({"addresses": [{"address": "10.250.210.5"}]}, {},
     'ipam.addresses[0].address "10.250.210.5" is not in CIDR notation'),
    ({"addresses": [{"address": "10.250.210.5/40"}]}, {}, '"10.250.210.5/40" is not in CIDR notation'),
    ({"addresses": [{"gateway": "10.250.210.1"}]}, {}, "ipam.addresses[0].address is required"),
    ({"addresses": [{"address": 5}]}, {}, "ipam.addresses[0].address must be a string, got 5"),
    ({"addresses": "10.250.210.5/24"}, {}, "ipam.addresses must be a list"),
    ({"addresses": [{"address": "10.250.210.5/24", "gateway": "gw"}]}, {},
     'ipam.addresses[0].gateway "gw" is not a valid IP address'),
    ({"addresses": [{"address": "10.250.210.5/24", "gateway": "fd00::1"}]}, {}, "not the same address family"),
    ({"addresses": ADDRS, "routes": [{"dst": "x"}]}, {}, 'ipam.routes[0].dst "x" is not a valid CIDR'),
    ({"addresses": ADDRS, "dns": {"nameservers": ["x"]}}, {}, 'ipam.dns.nameservers[0] "x" is not a valid IP'),
    ({"addresses": ADDRS, "dns": {"search": "a"}}, {}, "ipam.dns.search must be a list"),
    ({"addresses": ADDRS}, {"runtimeConfig": {"ips": ["10.1.1.1"]}},
     'runtimeConfig.ips[0] "10.1.1.1" is not in CIDR notation'),
    ({"addresses": ADDRS}, {"args": {"cni": {"ips": "10.1.1.1/24"}}}, "args.cni.ips must be a list"),
])
def test_invalid_config(ipam: dict[str, Any], extra: dict[str, Any], message: str) -> None:
    with pytest.raises(CNIError) as err:
        static.add(make_req(ipam, extra=extra))
    assert err.value.code == ERR_INVALID_CONFIG
    assert message in err.value.msg


def test_invalid_cni_args() -> None:
    with pytest.raises(CNIError) as err:
        static.add(make_req({"addresses": ADDRS}, args="IP=10.1.1.1"))
    assert err.value.code == ERR_INVALID_ENV and '"10.1.1.1"' in err.value.msg
    with pytest.raises(CNIError) as err:
        static.add(make_req({"addresses": ADDRS}, args="GATEWAY=nope"))
    assert err.value.code == ERR_INVALID_ENV and 'GATEWAY "nope"' in err.value.msg
    with pytest.raises(CNIError) as err:
        static.add(make_req({"addresses": ADDRS}, args="K8S_POD_NAME=x"))
    assert err.value.code == ERR_INVALID_ENV
    static.add(make_req({"addresses": ADDRS}, args="IgnoreUnknown=1;K8S_POD_NAME=x"))


def prev(ips: list[dict[str, str]]) -> dict[str, Any]:
    return {"prevResult": {"cniVersion": "1.1.0", "ips": ips, "routes": []}}


def test_check_matches_prev_result() -> None:
    ok = prev([{"address": "10.250.210.5/24", "gateway": "10.250.210.1"}, {"address": "fd10:250:210::5/64"}])
    static.check(make_req({"addresses": ADDRS}, command="CHECK", extra=ok))


@pytest.mark.parametrize(("ips", "message"), [
    ([{"address": "10.250.210.5/24", "gateway": "10.250.210.1"}], "fd10:250:210::5/64 not found"),
    ([{"address": "10.250.210.5/24", "gateway": "10.250.210.9"}, {"address": "fd10:250:210::5/64"}],
     "has gateway 10.250.210.9"),
    ([{"address": "10.250.210.5/24"}, {"address": "fd10:250:210::5/64"}], "has gateway None"),
])
def test_check_failures(ips: list[dict[str, str]], message: str) -> None:
    with pytest.raises(CNIError) as err:
        static.check(make_req({"addresses": ADDRS}, command="CHECK", extra=prev(ips)))
    assert err.value.code == ERR_INTERNAL and message in err.value.msg


def test_check_needs_prev_result() -> None:
    with pytest.raises(CNIError) as err:
        static.check(make_req({"addresses": ADDRS}, command="CHECK"))
    assert "prevResult" in err.value.msg


def test_stateless_verbs() -> None:
    static.delete(make_req({"addresses": ADDRS}, command="DEL"))
    static.gc(make_req({"addresses": ADDRS}, command="DEL"))
    static.status(make_req({"addresses": ADDRS}, command="DEL"))
    with pytest.raises(CNIError):
        static.delete(make_req({"addresses": [{"address": "bad"}]}, command="DEL"))
