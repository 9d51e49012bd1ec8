"""host-local: config validation, allocation semantics (cni-notes section 5), verbs and dry run."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cniplug.ipam import host_local as hl
from cniplug.ipam.store import DiskStore, MemoryStore
from cniplug.skel import Request, parse_request
from cniplug.spec import ERR_INTERNAL, ERR_INVALID_CONFIG, ERR_INVALID_ENV, ERR_NOT_AVAILABLE, CNIError

V4_29 = [[{"subnet": "10.250.200.0/29"}]]


def make_req(ipam: dict[str, Any], command: str = "ADD", cid: str = "c1", ifname: str = "eth0", args: str = "",
             extra: dict[str, Any] | None = None, dry_run: bool = False) -> Request:
    config = {"cniVersion": "1.1.0", "name": "tcnihl", "ipam": {"type": "host-local", **ipam}, **(extra or {})}
    env = {"CNI_COMMAND": command, "CNI_PATH": "/usr/lib/cni", "CNI_ARGS": args}
    if command not in ("GC", "STATUS"):
        env.update(CNI_CONTAINERID=cid, CNI_NETNS="/run/netns/x", CNI_IFNAME=ifname)
    return parse_request(env, json.dumps(config).encode(), dry_run=dry_run)


def ips(result: dict[str, Any]) -> list[str]:
    return [entry["address"] for entry in result["ips"]]


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def add_n(store: MemoryStore, ipam: dict[str, Any], n: int) -> list[str]:
    return [ips(hl.add(make_req(ipam, cid=f"c{i}"), store))[0] for i in range(n)]


def error_of(fn: Any, *args: Any) -> CNIError:
    with pytest.raises(CNIError) as err:
        fn(*args)
    return err.value


# ---------------------------------------------------------------------------------------------- validation

BAD_CONFIGS = [
    ({"ranges": [[{"subnet": "10.0.0.0/33"}]]}, 'ipam.ranges[0][0].subnet "10.0.0.0/33" is not a valid CIDR'),
    ({"ranges": [[{"subnet": "10.0.0.0"}]]}, 'ipam.ranges[0][0].subnet "10.0.0.0" is not a valid CIDR'),
    ({"ranges": [[{"subnet": "10.0.0.0/255.255.255.0"}]]}, '"10.0.0.0/255.255.255.0" is not a valid CIDR'),
    ({"ranges": [[{"subnet": "10.0.0.5/24"}]]}, 'ipam.ranges[0][0].subnet "10.0.0.5/24" has host bits set'),
    ({"ranges": [[{"subnet": "10.0.0.0/31"}]]}, 'ipam.ranges[0][0].subnet "10.0.0.0/31" is too small'),
    ({"ranges": [[{"subnet": "10.0.0.0/32"}]]}, '"10.0.0.0/32" is too small'),
    ({"ranges": [[{"subnet": "fd00::/127"}]]}, '"fd00::/127" is too small'),
    ({"ranges": [[{"subnet": "fd00::/128"}]]}, '"fd00::/128" is too small'),
    ({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.5"}]]},
     'ipam.ranges[0][0].rangeStart "10.0.1.5" is not in subnet 10.0.0.0/24'),
    ({"ranges": [[{"subnet": "10.0.0.0/24", "rangeEnd": "10.0.1.5"}]]},
     'ipam.ranges[0][0].rangeEnd "10.0.1.5" is not in subnet 10.0.0.0/24'),
    ({"ranges": [[{"subnet": "10.0.0.0/24", "gateway": "10.9.0.1"}]]},
     'ipam.ranges[0][0].gateway "10.9.0.1" is not in subnet 10.0.0.0/24'),
    ({"ranges": [[{"subnet": "10.0.0.0/24", "gateway": "fd00::1"}]]},
     'ipam.ranges[0][0].gateway "fd00::1" is not in subnet 10.0.0.0/24'),
    ({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.9", "rangeEnd": "10.0.0.5"}]]},
     'ipam.ranges[0][0].rangeStart "10.0.0.9" is after ipam.ranges[0][0].rangeEnd "10.0.0.5"'),
    ({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "ten"}]]},
     'ipam.ranges[0][0].rangeStart "ten" is not a valid IP address'),
    ({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.0"}]]}, "is the network address"),
    ({"ranges": [[{"subnet": "10.0.0.0/24", "rangeEnd": "10.0.0.255"}]]}, "is the broadcast address"),
    ({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]},
     'ipam.ranges[0][1].subnet "fd00::/64" mixes address families'),
    ({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/25"}]]},
     "range set 0 (ipam.ranges[0]) overlaps with 1 (ipam.ranges[1])"),
    ({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.200"}]]},
     'ipam.ranges[0][1] "10.0.0.200-10.0.0.254" overlaps with ipam.ranges[0][0] "10.0.0.1-10.0.0.254"'),
    ({"subnet": "10.0.0.0/24", "ranges": [[{"subnet": "10.0.0.0/24"}]]},
     "range set 0 (ipam) overlaps with 1 (ipam.ranges[0])"),
    ({"subnet": "bogus"}, 'ipam.subnet "bogus" is not a valid CIDR'),
    ({}, "no IP ranges specified"),
    ({"ranges": []}, "no IP ranges specified"),
    ({"ranges": "10.0.0.0/24"}, 'ipam.ranges must be a list, got "10.0.0.0/24"'),
    ({"ranges": [{"subnet": "10.0.0.0/24"}]}, "ipam.ranges[0] must be a list"),
    ({"ranges": [[]]}, "ipam.ranges[0] is an empty range set"),
    ({"ranges": [["10.0.0.0/24"]]}, 'ipam.ranges[0][0] must be an object, got "10.0.0.0/24"'),
    ({"ranges": [[{"subnet": 5}]]}, "ipam.ranges[0][0].subnet must be a string, got 5"),
    ({"ranges": [[{}]]}, "ipam.ranges[0][0].subnet is required"),
    ({"ranges": V4_29, "routes": [{"dst": "nope"}]}, 'ipam.routes[0].dst "nope" is not a valid CIDR'),
    ({"ranges": V4_29, "routes": {"dst": "0.0.0.0/0"}}, "ipam.routes must be a list"),
    ({"ranges": V4_29, "routes": [{"dst": "0.0.0.0/0", "gw": "fd00::1"}]}, "not the same address family"),
    ({"ranges": V4_29, "dataDir": 7}, "ipam.dataDir must be a string, got 7"),
    ({"ranges": V4_29, "dataDir": "/tmp/a\nb"}, "ipam.dataDir"),
    ({"ranges": V4_29, "resolvConf": "/nonexistent/resolv.conf"},
     'ipam.resolvConf "/nonexistent/resolv.conf" cannot be read'),
]


@pytest.mark.parametrize(("ipam", "message"), BAD_CONFIGS)
def test_invalid_config(ipam: dict[str, Any], message: str) -> None:
    err = error_of(hl.add, make_req(ipam), MemoryStore())
    assert err.code == ERR_INVALID_CONFIG
    assert message in err.msg


def test_missing_ipam_section() -> None:
    req = parse_request({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0",
                         "CNI_PATH": "/p"}, b'{"cniVersion":"1.1.0","name":"tcnihl"}')
    err = error_of(hl.add, req, MemoryStore())
    assert err.code == ERR_INVALID_CONFIG and "ipam" in err.msg


def test_runtime_ip_ranges_are_prepended_and_validated() -> None:
    store = MemoryStore()
    extra = {"runtimeConfig": {"ipRanges": [[{"subnet": "10.250.201.0/24"}]]}}
    result = hl.add(make_req({"ranges": V4_29}, extra=extra), store)
    assert ips(result) == ["10.250.201.2/24", "10.250.200.2/29"]
    assert store.last == {0: ip("10.250.201.2"), 1: ip("10.250.200.2")}
    bad = {"runtimeConfig": {"ipRanges": [[{"subnet": "10.250.201.1/24"}]]}}
    err = error_of(hl.add, make_req({"ranges": V4_29}, extra=bad), MemoryStore())
    assert err.code == ERR_INVALID_CONFIG
    assert 'runtimeConfig.ipRanges[0][0].subnet "10.250.201.1/24" has host bits set' in err.msg


def test_legacy_range_is_set_zero() -> None:
    ipam = {"subnet": "10.250.202.0/24", "rangeStart": "10.250.202.10", "gateway": "10.250.202.254",
            "ranges": V4_29}
    result = hl.add(make_req(ipam), MemoryStore())
    assert result["ips"] == [{"address": "10.250.202.10/24", "gateway": "10.250.202.254"},
                             {"address": "10.250.200.2/29", "gateway": "10.250.200.1"}]


def test_cni_args_keys() -> None:
    err = error_of(hl.add, make_req({"ranges": V4_29}, args="K8S_POD_NAME=x"), MemoryStore())
    assert err.code == ERR_INVALID_ENV
    result = hl.add(make_req({"ranges": V4_29}, args="IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.250.200.4"),
                    MemoryStore())
    assert ips(result) == ["10.250.200.4/29"]
    result = hl.add(make_req({"ranges": V4_29}, args="MAC=0a:00:00:00:00:01;GATEWAY=10.250.200.1"), MemoryStore())
    assert ips(result) == ["10.250.200.2/29"]
    err = error_of(hl.add, make_req({"ranges": V4_29}, args="IP=10.250.200.x"), MemoryStore())
    assert err.code == ERR_INVALID_ENV and 'CNI_ARGS IP "10.250.200.x"' in err.msg
    err = error_of(hl.add, make_req({"ranges": V4_29}, extra={"args": {"cni": {"ips": ["nope"]}}}), MemoryStore())
    assert err.code == ERR_INVALID_CONFIG and 'args.cni.ips[0] "nope" is not a valid IP address' in err.msg


# ---------------------------------------------------------------------------------------------- allocation


def test_allocation_order_skips_gateway_and_broadcast() -> None:
    store = MemoryStore()
    got = add_n(store, {"ranges": V4_29}, 5)
    assert got == [f"10.250.200.{i}/29" for i in range(2, 7)]
    err = error_of(hl.add, make_req({"ranges": V4_29}, cid="c9"), store)
    assert err.code == ERR_INTERNAL
    assert err.msg == ("failed to allocate for range 0: "
                       "no IP addresses available in range set: 10.250.200.1-10.250.200.6")
    assert ip("10.250.200.1") not in store.reservations
    assert store.lock_count == 6


def test_moved_gateway_makes_dot_one_allocatable() -> None:
    store = MemoryStore()
    got = add_n(store, {"ranges": [[{"subnet": "10.250.200.0/29", "gateway": "10.250.200.6"}]]}, 5)
    assert got == [f"10.250.200.{i}/29" for i in range(1, 6)]


def test_round_robin_does_not_reuse_until_wrap() -> None:
    store = MemoryStore()
    ipam = {"ranges": V4_29}
    add_n(store, ipam, 3)  # .2 .3 .4
    hl.delete(make_req(ipam, command="DEL", cid="c0"), store)
    assert ips(hl.add(make_req(ipam, cid="n1"), store)) == ["10.250.200.5/29"]
    assert ips(hl.add(make_req(ipam, cid="n2"), store)) == ["10.250.200.6/29"]
    assert ips(hl.add(make_req(ipam, cid="n3"), store)) == ["10.250.200.2/29"]  # wrapped


def test_round_robin_starts_from_stored_cursor() -> None:
    store = MemoryStore()
    store.last[0] = ip("10.250.200.4")
    assert add_n(store, {"ranges": V4_29}, 1) == ["10.250.200.5/29"]
    store = MemoryStore()
    store.last[0] = ip("10.9.9.9")  # outside the set (e.g. ranges re-ordered): restart at rangeStart
    assert add_n(store, {"ranges": V4_29}, 1) == ["10.250.200.2/29"]
    store = MemoryStore()
    store.last[0] = ip("10.250.200.6")  # at the range end: wrap
    assert add_n(store, {"ranges": V4_29}, 1) == ["10.250.200.2/29"]


def test_cursor_itself_is_tried_last() -> None:
    store = MemoryStore()
    store.last[0] = ip("10.250.200.4")
    for i in (2, 3, 5, 6):
        store.reservations[ip(f"10.250.200.{i}")] = (f"x{i}", "eth0")
    assert add_n(store, {"ranges": V4_29}, 1) == ["10.250.200.4/29"]


def test_range_start_and_end() -> None:
    store = MemoryStore()
    ipam = {"ranges": [[{"subnet": "10.250.200.0/24", "rangeStart": "10.250.200.100", "rangeEnd": "10.250.200.101"}]]}
    assert add_n(store, ipam, 2) == ["10.250.200.100/24", "10.250.200.101/24"]
    err = error_of(hl.add, make_req(ipam, cid="c7"), store)
    assert "no IP addresses available in range set: 10.250.200.100-10.250.200.101" in err.msg


def test_ipv6_last_address_is_allocatable() -> None:
    store = MemoryStore()
    ipam = {"ranges": [[{"subnet": "fd10:250:200::/126"}]]}
    assert add_n(store, ipam, 2) == ["fd10:250:200::2/126", "fd10:250:200::3/126"]
    err = error_of(hl.add, make_req(ipam, cid="c7"), store)
    assert "no IP addresses available in range set: fd10:250:200::1-fd10:250:200::3" in err.msg


def test_ipv6_huge_range_near_the_end() -> None:
    store = MemoryStore()
    ipam = {"ranges": [[{"subnet": "fd10:250:200::/64", "rangeStart": "fd10:250:200::ffff:ffff:ffff:fffe"}]]}
    assert add_n(store, ipam, 2) == ["fd10:250:200:0:ffff:ffff:ffff:fffe/64", "fd10:250:200:0:ffff:ffff:ffff:ffff/64"]


def test_multiple_ranges_in_one_set() -> None:
    store = MemoryStore()
    ipam = {"ranges": [[{"subnet": "10.250.200.0/30"}, {"subnet": "10.250.200.4/30"}]]}
    assert add_n(store, ipam, 2) == ["10.250.200.2/30", "10.250.200.6/30"]
    err = error_of(hl.add, make_req(ipam, cid="c7"), store)
    assert err.msg.endswith(
        "no IP addresses available in range set: 10.250.200.1-10.250.200.2,10.250.200.5-10.250.200.6")


def test_dual_stack_result_shape(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# comment\n; other\nnameserver 10.0.0.53\nnameserver fd00::53\ndomain example.org\n"
                      "search a.example b.example\noptions ndots:5 edns0\nbogus\n")
    ipam = {"ranges": [[{"subnet": "10.250.200.0/24"}], [{"subnet": "fd10:250:200::/64"}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.99.1.2/16", "gw": "10.250.200.254", "priority": 10}],
            "resolvConf": str(resolv)}
    result = hl.add(make_req(ipam), MemoryStore())
    assert result == {
        "cniVersion": "1.1.0",
        "ips": [{"address": "10.250.200.2/24", "gateway": "10.250.200.1"},
                {"address": "fd10:250:200::2/64", "gateway": "fd10:250:200::1"}],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.99.0.0/16", "gw": "10.250.200.254", "priority": 10}],
        "dns": {"nameservers": ["10.0.0.53", "fd00::53"], "domain": "example.org",
                "search": ["a.example", "b.example"], "options": ["ndots:5", "edns0"]},
    }
    assert "dns" not in hl.add(make_req({"ranges": V4_29}), MemoryStore())


def test_requested_ip_via_cni_args_moves_cursor() -> None:
    store = MemoryStore()
    assert ips(hl.add(make_req({"ranges": V4_29}, args="IP=10.250.200.5"), store)) == ["10.250.200.5/29"]
    assert store.last[0] == ip("10.250.200.5")
    assert ips(hl.add(make_req({"ranges": V4_29}, cid="c2"), store)) == ["10.250.200.6/29"]


def test_requested_ips_from_args_and_runtime_config_combined() -> None:
    store = MemoryStore()
    ipam = {"ranges": [[{"subnet": "10.250.200.0/24"}], [{"subnet": "fd10:250:200::/64"}]]}
    extra = {"args": {"cni": {"ips": ["fd10:250:200::99/64"]}}, "runtimeConfig": {"ips": ["10.250.200.77"]}}
    assert ips(hl.add(make_req(ipam, extra=extra), store)) == ["10.250.200.77/24", "fd10:250:200::99/64"]


def test_requested_gateway_refused() -> None:
    err = error_of(hl.add, make_req({"ranges": V4_29}, args="IP=10.250.200.1"), MemoryStore())
    assert err.code == ERR_INTERNAL and "requested ip 10.250.200.1 is subnet's gateway" in err.msg


def test_requested_ip_taken() -> None:
    store = MemoryStore()
    hl.add(make_req({"ranges": V4_29}, args="IP=10.250.200.3"), store)
    err = error_of(hl.add, make_req({"ranges": V4_29}, cid="c2", args="IP=10.250.200.3"), store)
    assert err.code == ERR_INTERNAL
    assert "requested IP address 10.250.200.3 is not available in range set 10.250.200.1-10.250.200.6" in err.msg


def test_unmatched_requested_ip_releases_this_call_only() -> None:
    store = MemoryStore()
    ipam = {"ranges": [[{"subnet": "10.250.200.0/24"}], [{"subnet": "fd10:250:200::/64"}]]}
    hl.add(make_req(ipam, ifname="eth1"), store)  # earlier attachment of the same container stays
    before = dict(store.reservations)
    err = error_of(hl.add, make_req(ipam, args="IP=10.9.9.9"), store)
    assert err.code == ERR_INTERNAL and err.msg == "failed to allocate all requested IPs: 10.9.9.9"
    assert store.reservations == before


def test_failure_in_second_set_releases_first() -> None:
    store = MemoryStore()
    ipam = {"ranges": [[{"subnet": "10.250.200.0/24"}], [{"subnet": "fd10:250:200::/126"}]]}
    store.reservations[ip("fd10:250:200::2")] = ("x", "eth0")
    store.reservations[ip("fd10:250:200::3")] = ("y", "eth0")
    err = error_of(hl.add, make_req(ipam), store)
    assert err.msg.startswith("failed to allocate for range 1: no IP addresses available")
    assert ip("10.250.200.2") not in store.reservations


def test_duplicate_allocation_refused_per_ifname() -> None:
    store = MemoryStore()
    hl.add(make_req({"ranges": V4_29}), store)
    err = error_of(hl.add, make_req({"ranges": V4_29}), store)
    assert err.code == ERR_INTERNAL
    assert "10.250.200.2 has been allocated to c1, duplicate allocation is not allowed" in err.msg
    assert ips(hl.add(make_req({"ranges": V4_29}, ifname="eth1"), store)) == ["10.250.200.3/29"]


def test_candidates_cover_set_once() -> None:
    rs = hl.parse_range_set([{"subnet": "10.0.0.0/29"}, {"subnet": "10.0.1.0/30"}], "x")
    walk = [str(a) for a, _ in hl.candidates(rs, ip("10.0.0.3"))]
    assert walk == ["10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.1.2", "10.0.0.2", "10.0.0.3"]


# ---------------------------------------------------------------------------------------------- other verbs


def test_delete_releases_owner_only() -> None:
    store = MemoryStore()
    ipam = {"ranges": [[{"subnet": "10.250.200.0/24"}], [{"subnet": "fd10:250:200::/64"}]]}
    hl.add(make_req(ipam), store)
    hl.add(make_req(ipam, ifname="eth1"), store)
    hl.delete(make_req(ipam, command="DEL"), store)
    assert sorted(store.reservations.values()) == [("c1", "eth1"), ("c1", "eth1")]
    hl.delete(make_req(ipam, command="DEL", cid="unknown"), store)
    hl.delete(make_req(ipam, command="DEL"), store)
    assert len(store.reservations) == 2


def test_delete_missing_dir_not_created(tmp_path: Path) -> None:
    req = make_req({"ranges": V4_29, "dataDir": str(tmp_path / "data")}, command="DEL")
    hl.delete(req)
    assert not (tmp_path / "data").exists()


def test_check() -> None:
    store = MemoryStore()
    hl.add(make_req({"ranges": V4_29}), store)
    hl.check(make_req({"ranges": V4_29}, command="CHECK"), store)
    err = error_of(hl.check, make_req({"ranges": V4_29}, command="CHECK", cid="c2"), store)
    assert err.code == ERR_INTERNAL and "c2" in err.msg
    store.reservations[ip("10.250.200.6")] = ("legacy", "")
    hl.check(make_req({"ranges": V4_29}, command="CHECK", cid="legacy"), store)


def gc_store() -> MemoryStore:
    store = MemoryStore()
    store.reservations = {ip("10.250.200.2"): ("c1", "eth0"), ip("10.250.200.3"): ("c1", "eth1"),
                          ip("10.250.200.4"): ("c2", "eth0"), ip("10.250.200.5"): ("c1", ""),
                          ip("10.250.200.6"): ("c3", "")}
    return store


@pytest.mark.parametrize("key", ["cni.dev/valid-attachments", "cni.dev/attachments"])
def test_gc_keeps_valid_attachments(key: str) -> None:
    store = gc_store()
    hl.gc(make_req({"ranges": V4_29}, command="GC", extra={key: [{"containerID": "c1", "ifname": "eth0"}]}), store)
    # c1/eth1 and c2 freed; legacy c1 kept (id appears), legacy c3 freed
    assert sorted(str(a) for a in store.reservations) == ["10.250.200.2", "10.250.200.5"]


def test_gc_valid_attachments_wins_over_legacy_key() -> None:
    store = gc_store()
    extra = {"cni.dev/valid-attachments": [{"containerID": "c2", "ifname": "eth0"}], "cni.dev/attachments": []}
    hl.gc(make_req({"ranges": V4_29}, command="GC", extra=extra), store)
    assert [str(a) for a in store.reservations] == ["10.250.200.4"]


@pytest.mark.parametrize("value", [None, []])
def test_gc_null_or_empty_frees_everything(value: Any) -> None:
    store = gc_store()
    hl.gc(make_req({"ranges": V4_29}, command="GC", extra={"cni.dev/valid-attachments": value}), store)
    assert store.reservations == {}


def test_gc_absent_key_frees_nothing() -> None:
    store = gc_store()
    hl.gc(make_req({"ranges": V4_29}, command="GC"), store)
    assert len(store.reservations) == 5


def test_gc_bad_attachments() -> None:
    err = error_of(hl.gc, make_req({"ranges": V4_29}, command="GC",
                                    extra={"cni.dev/valid-attachments": [{"containerID": 1}]}), gc_store())
    assert err.code == ERR_INVALID_CONFIG and "cni.dev/valid-attachments[0].containerID" in err.msg


def test_status() -> None:
    store = MemoryStore()
    ipam = {"ranges": V4_29}
    hl.status(make_req(ipam, command="STATUS"), store)
    add_n(store, ipam, 5)
    err = error_of(hl.status, make_req(ipam, command="STATUS"), store)
    assert err.code == ERR_NOT_AVAILABLE and "10.250.200.1-10.250.200.6" in err.msg
    store.reservations.pop(ip("10.250.200.4"))
    store.reservations[ip("10.250.200.1")] = ("odd", "eth0")  # a reserved gateway does not count
    hl.status(make_req(ipam, command="STATUS"), store)


def test_status_huge_v6_range_is_counted_not_walked() -> None:
    ipam = {"ranges": [[{"subnet": "fd10:250:200::/64"}]]}
    hl.status(make_req(ipam, command="STATUS"), MemoryStore())


# ---------------------------------------------------------------------------------------------- dry run


def snapshot_dir(path: Path) -> dict[str, tuple[bytes, int]]:
    if not path.exists():
        return {}
    return {p.name: (p.read_bytes(), p.stat().st_mode) for p in sorted(path.iterdir())}


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    ipam = {"ranges": [[{"subnet": "10.250.200.0/24"}], [{"subnet": "fd10:250:200::/64"}]],
            "dataDir": str(tmp_path)}
    planned = hl.add(make_req(ipam, dry_run=True))
    assert list(tmp_path.iterdir()) == []
    real = hl.add(make_req(ipam))
    assert planned == real
    before = snapshot_dir(tmp_path / "tcnihl")
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "tcnihl").iterdir()}
    planned2 = hl.add(make_req(ipam, cid="c2", dry_run=True))
    assert ips(planned2) == ["10.250.200.3/24", "fd10:250:200::3/64"]
    hl.delete(make_req(ipam, command="DEL", dry_run=True))
    hl.gc(make_req(ipam, command="GC", extra={"cni.dev/valid-attachments": []}, dry_run=True))
    hl.dry_run_script(make_req(ipam, cid="c3"))
    assert snapshot_dir(tmp_path / "tcnihl") == before
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "tcnihl").iterdir()} == stamps


def test_dry_run_script_quotes_and_shape(tmp_path: Path) -> None:
    data = tmp_path / "my data;$(touch pwned)"
    ipam = {"ranges": V4_29, "dataDir": str(data)}
    script = hl.dry_run_script(make_req(ipam))
    lines = script.splitlines()
    assert lines[:2] == ["#!/bin/bash", "set -e"]
    net = f"{data}/tcnihl"
    assert f"mkdir -p -m 0755 '{net}'" in lines
    assert f"exec 9>'{net}/lock'" in lines
    assert "flock 9" in lines and "set -o noclobber" in lines
    assert f"printf '%s\\r\\n%s' c1 eth0 > '{net}/10.250.200.2'" in lines
    assert f"printf '%s' 10.250.200.2 >| '{net}/last_reserved_ip.0'" in lines
    assert not data.exists()


@pytest.mark.skipif(shutil.which("flock") is None, reason="flock(1) not installed")
def test_dry_run_script_matches_plugin(tmp_path: Path) -> None:
    """Running the printed script gives byte-identical store files to a real ADD; the DEL script undoes it."""
    ipam_a = {"ranges": [[{"subnet": "10.250.200.0/24"}], [{"subnet": "fd10:250:200::/64"}]],
              "dataDir": str(tmp_path / "script dir")}
    ipam_b = dict(ipam_a, dataDir=str(tmp_path / "plugin"))
    for cid in ("c1", "c2"):
        subprocess.run(["bash", "-c", hl.dry_run_script(make_req(ipam_a, cid=cid))], check=True,
                       env={**os.environ, "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        hl.add(make_req(ipam_b, cid=cid))
    a, b = snapshot_dir(tmp_path / "script dir" / "tcnihl"), snapshot_dir(tmp_path / "plugin" / "tcnihl")
    lock_a, lock_b = a.pop("lock"), b.pop("lock")
    assert a == b
    assert lock_a[0] == lock_b[0] == b""
    # The script cannot clobber an existing reservation (noclobber = O_EXCL).
    stale = hl.dry_run_script(make_req(ipam_a, cid="c3"))
    hl.add(make_req(ipam_a, cid="c9"))
    assert subprocess.run(["bash", "-c", stale], capture_output=True).returncode != 0
    assert (tmp_path / "script dir" / "tcnihl" / "10.250.200.4").read_bytes() == b"c9\r\neth0"
    subprocess.run(["bash", "-c", hl.dry_run_script(make_req(ipam_a, command="DEL", cid="c1"))], check=True)
    assert DiskStore(str(tmp_path / "script dir"), "tcnihl").owned_by("c1", "eth0") == []
    assert DiskStore(str(tmp_path / "script dir"), "tcnihl").owned_by("c2", "eth0") != []


def test_dry_run_script_del_and_gc(tmp_path: Path) -> None:
    ipam = {"ranges": V4_29, "dataDir": str(tmp_path)}
    assert "does not exist: nothing to release" in hl.dry_run_script(make_req(ipam, command="DEL"))
    hl.add(make_req(ipam))
    hl.add(make_req(ipam, cid="c2"))
    script = hl.dry_run_script(make_req(ipam, command="GC",
                                        extra={"cni.dev/valid-attachments": [{"containerID": "c2", "ifname": "eth0"}]}))
    assert f"rm -f -- {tmp_path}/tcnihl/10.250.200.2" in script.splitlines()
    assert "10.250.200.3" not in script
    assert "GC frees nothing" in hl.dry_run_script(make_req(ipam, command="GC"))


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=3),
       last_offset=st.integers(min_value=-1, max_value=200))
def test_candidates_property(sizes: list[int], last_offset: int) -> None:
    """Whatever the cursor, the walk visits every non-gateway address of the set exactly once."""
    # Ranges are consecutive /29../27 blocks of 10.250.200.0/24 (sizes index the prefix).
    ranges: list[dict[str, str]] = []
    base = 0
    for size in sizes:
        prefix = 29 - size
        base = (base + (1 << (32 - prefix)) - 1) // (1 << (32 - prefix)) * (1 << (32 - prefix))
        ranges.append({"subnet": f"10.250.200.{base}/{prefix}"})
        base += 1 << (32 - prefix)
    if base > 256:
        return
    rs = hl.parse_range_set(ranges, "x")
    last = None if last_offset < 0 else ipaddress.IPv4Address(int(ip("10.250.200.0")) + last_offset % 256)
    walk = [a for a, _ in hl.candidates(rs, last)]
    expected = {ipaddress.IPv4Address(v) for r in rs.ranges for v in range(int(r.start), int(r.end) + 1)
                if v != int(r.gateway)}
    assert len(walk) == len(expected) == rs.capacity()
    assert set(walk) == expected
    if last is not None and rs.contains(last) and last in expected:
        assert walk[-1] == last
