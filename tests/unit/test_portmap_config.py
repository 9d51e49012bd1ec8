"""cniplug-portmap without root: config parsing, address choice, rule planning, conflict detection (facts faked)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cniplug import facts, nft
from cniplug.plugins import portmap
from cniplug.skel import Request, parse_request
from cniplug.spec import ERR_INTERNAL, ERR_INVALID_CONFIG, CNIError

PREV = {"cniVersion": "1.0.0",
        "interfaces": [{"name": "tpmbr0"}, {"name": "vethx"}, {"name": "eth0", "sandbox": "/run/netns/x"},
                       {"name": "net1", "sandbox": "/run/netns/x"}],
        "ips": [{"address": "10.231.0.9/24", "interface": 3}, {"address": "10.231.0.2/24", "interface": 2},
                {"address": "10.231.0.3/24", "interface": 2}, {"address": "fd10:231::2/64", "interface": 2}]}


def make_req(extra: dict[str, Any] | None = None, mappings: Any = None, command: str = "ADD",
             prev: dict[str, Any] | None = PREV) -> Request:
    config: dict[str, Any] = {"cniVersion": "1.0.0", "name": "tpmnet", "type": "cniplug-portmap", **(extra or {})}
    if mappings is not None:
        config["runtimeConfig"] = {"portMappings": mappings}
    if prev is not None:
        config["prevResult"] = prev
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "tpmc1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/usr/lib/cni"}
    return parse_request(env, json.dumps(config).encode())


def test_keys_are_matched_case_insensitively() -> None:
    req = make_req({"SNAT": False, "markmasqbit": 5, "ConditionsV4": ["-s", "10.0.0.0/8"]},
                   mappings=[{"HostPort": 8080, "containerport": 80, "Protocol": "UDP", "HOSTIP": "0.0.0.0"}])
    cfg = portmap.parse_config(req)
    assert (cfg.snat, cfg.mark_bit, cfg.conditions[4], cfg.conditions[6]) == (False, 5, ["-s", "10.0.0.0/8"], [])
    assert cfg.mappings == [portmap.Mapping(8080, 80, "udp", "")]
    assert cfg.mark == "0x20/0x20"


def test_defaults_as_the_reference() -> None:
    cfg = portmap.parse_config(make_req(mappings=[{"hostPort": 1, "containerPort": 65535}]))
    assert (cfg.snat, cfg.mark_bit, cfg.external_chain, cfg.mark) == (True, 13, "", "0x2000/0x2000")
    assert cfg.mappings[0].protocol == "tcp"


@pytest.mark.parametrize(("mappings", "named"), [
    ([{"hostPort": 0, "containerPort": 80}], "runtimeConfig.portMappings[0].hostPort"),
    ([{"hostPort": 80, "containerPort": 70000}], "70000"),
    ([{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}], "icmp"),
    ([{"hostPort": 80, "containerPort": 80, "hostIP": "::g"}], "::g"),
    ([{"hostPort": 80, "containerPort": 80}, {"hostPort": 80, "containerPort": 81, "hostIP": "::1"}], "twice"),
])
def test_bad_mappings_name_field_and_value(mappings: list[dict[str, Any]], named: str) -> None:
    with pytest.raises(CNIError) as err:
        portmap.parse_config(make_req(mappings=mappings))
    assert err.value.code == ERR_INVALID_CONFIG and named in err.value.msg + err.value.details


def test_same_port_other_protocol_or_other_address_is_allowed() -> None:
    cfg = portmap.parse_config(make_req(mappings=[
        {"hostPort": 80, "containerPort": 80, "protocol": "tcp", "hostIP": "10.0.0.1"},
        {"hostPort": 80, "containerPort": 80, "protocol": "udp"},
        {"hostPort": 80, "containerPort": 80, "protocol": "tcp", "hostIP": "10.0.0.2"}]))
    assert len(cfg.mappings) == 3


def test_container_ips_first_of_each_family_on_ifname() -> None:
    ips = portmap.container_ips(make_req(), PREV)
    assert {f: str(ip) for f, ip in ips.items()} == {4: "10.231.0.2/24", 6: "fd10:231::2/64"}


def test_chain_name_is_the_reference_one() -> None:
    # Observed with the reference portmap 1.1.1 (cni-notes 4.3): network dg-chain, container dgx1.
    assert portmap.dn_chain("dg-chain", "dgx1") == "CNI-DN-8b4a1aea4005e3146b474"


def test_entry_rules_split_at_15_ports_per_protocol() -> None:
    cfg = portmap.parse_config(make_req(mappings=[{"hostPort": 9000 + i, "containerPort": 80} for i in range(16)]
                                        + [{"hostPort": 53, "containerPort": 53, "protocol": "udp"}]))
    rules = portmap.entry_rules(cfg, "CNI-DN-x", "c", 4)
    assert [(r[1], len(r[9].split(","))) for r in rules] == [("tcp", 15), ("tcp", 1), ("udp", 1)]


def test_hostip_of_the_other_family_skips_the_mapping() -> None:
    req = make_req(mappings=[{"hostPort": 80, "containerPort": 80, "hostIP": "fd10:231::1"}])
    cfg = portmap.parse_config(req)
    ips = portmap.container_ips(req, PREV)
    assert portmap.rules_for(cfg, "CNI-DN-x", 4, ips[4]) == []
    assert [r["note"] for r in portmap.rules_for(cfg, "CNI-DN-x", 6, ips[6])] == ["pm_hairpin", "pm_dnat"]


OTHER = 'dnat name: "tpmnet" id: "tpmc0"'
DNAT_LINES = [f'-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "{OTHER.replace(chr(34), chr(92) + chr(34))}" '
              '-m multiport --dports 8080,8081 -j CNI-DN-other']
OTHER_CHAIN = ["-N CNI-DN-other",
               "-A CNI-DN-other -d 10.0.0.1/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.231.0.5:80",
               "-A CNI-DN-other -p tcp -m tcp --dport 8081 -j DNAT --to-destination 10.231.0.5:81"]


@pytest.mark.parametrize(("mapping", "conflict"), [
    ({"hostPort": 8080, "containerPort": 80}, True),  # unspecified hostIP overlaps 10.0.0.1
    ({"hostPort": 8080, "containerPort": 80, "hostIP": "10.0.0.1"}, True),
    ({"hostPort": 8080, "containerPort": 80, "hostIP": "10.0.0.2"}, False),
    ({"hostPort": 8081, "containerPort": 80, "hostIP": "10.0.0.2"}, True),  # the other's 8081 has no hostIP
    ({"hostPort": 8080, "containerPort": 80, "protocol": "udp"}, False),
    ({"hostPort": 8082, "containerPort": 80}, False),
])
def test_conflicts(monkeypatch: pytest.MonkeyPatch, mapping: dict[str, Any], conflict: bool) -> None:
    monkeypatch.setattr(facts, "iptables_rules", lambda family, table, chain: OTHER_CHAIN if chain == "CNI-DN-other"
                        else [])
    cfg = portmap.parse_config(make_req(mappings=[mapping]))
    found = portmap.find_conflicts(cfg, 4, portmap.dn_chain("tpmnet", "tpmc1"), DNAT_LINES)
    assert bool(found) == conflict, found
    if conflict:
        assert "container tpmc0 (network tpmnet, chain CNI-DN-other)" in found[0]
    # The container's own chain is never a conflict (a repeated ADD).
    assert portmap.find_conflicts(cfg, 4, "CNI-DN-other", DNAT_LINES) == []


def test_add_refuses_a_taken_port_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from cniplug.plugins import common

    tables = {"CNI-HOSTPORT-DNAT": ["-N CNI-HOSTPORT-DNAT", *DNAT_LINES], "CNI-DN-other": OTHER_CHAIN}
    monkeypatch.setattr(facts, "iptables_rules", lambda family, table, chain: tables.get(chain, []))
    monkeypatch.setattr(facts, "has_ipv6", lambda: False)
    monkeypatch.setattr(nft, "table", lambda family, name: [])
    monkeypatch.setattr(portmap, "portmap_lock", lambda: _nolock())
    monkeypatch.setattr(common, "RUNNER_FACTORY", _no_runner)
    with pytest.raises(CNIError) as err:
        portmap.add(make_req(mappings=[{"hostPort": 8081, "containerPort": 80}]))
    assert err.value.code == ERR_INTERNAL and "*:8081/tcp" in err.value.msg and "tpmc0" in err.value.msg


def _no_runner() -> Any:
    raise AssertionError("nothing may run")


class _nolock:
    def __enter__(self) -> Any:
        return lambda: None

    def __exit__(self, *exc: object) -> None:
        return None


def test_add_without_mappings_passes_prev_result_through(monkeypatch: pytest.MonkeyPatch) -> None:
    from cniplug.plugins import common

    monkeypatch.setattr(common, "RUNNER_FACTORY", lambda: type("R", (), {"run": lambda self, s, best_effort=False:
                                                                        None})())
    out = portmap.add(make_req(mappings=[]))
    assert out == portmap.skel.Request.prev_result(make_req())


def test_add_needs_prev_result() -> None:
    with pytest.raises(CNIError) as err:
        portmap.add(make_req(mappings=[{"hostPort": 80, "containerPort": 80}], prev=None))
    assert err.value.code == ERR_INVALID_CONFIG and "prevResult" in err.value.msg


@pytest.mark.parametrize("conditions", [["-j", "ACCEPT"], ["--goto", "X"], "-s 1.2.3.4", [""], [" -s"]])
def test_conditions_are_matches_only(conditions: Any) -> None:
    with pytest.raises(CNIError) as err:
        portmap.parse_config(make_req({"conditionsV4": conditions}))
    assert err.value.code == ERR_INVALID_CONFIG and "conditionsV4" in err.value.msg


@pytest.mark.parametrize(("installed", "backend"), [({"iptables", "nft"}, "iptables"), ({"nft"}, "nftables"),
                                                    ({"iptables"}, "iptables"), (set(), "iptables")])
def test_backend_is_nftables_only_without_iptables(monkeypatch: pytest.MonkeyPatch, installed: set[str],
                                                   backend: str) -> None:
    monkeypatch.setattr(nft, "installed", lambda tool: tool in installed)
    assert portmap.parse_config(make_req()).backend == backend
    assert portmap.parse_config(make_req({"backend": "iptables"})).backend == "iptables"


def test_nft_mapping_reads_the_reference_rule_json() -> None:
    rule = {"chain": "hostip_hostports", "comment": "c1", "expr": [
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "10.0.0.1"}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 53}},
        {"dnat": {"addr": "10.231.0.2", "port": 53}}]}
    assert portmap.nft_mapping(rule) == ("udp", 53, "10.0.0.1")
    assert portmap.nft_mapping({"expr": [{"masquerade": None}]}) is None


def test_route_localnet_on_the_host_interface_of_prev_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ip route get` finding an interface that is not prevResult's (the default route, when a --dry-run of a
    list runs before the veth exists) gives way to prevResult's first host interface."""
    import ipaddress

    monkeypatch.setattr(facts, "ip_json", lambda prefix, *args: [{"dst": "10.231.0.2", "dev": "eth9"}])
    monkeypatch.setattr(facts, "sysctl", lambda key: "0" if key == "net.ipv4.conf.tpmbr0.route_localnet" else None)
    plan = portmap.route_localnet_plan(ipaddress.ip_interface("10.231.0.2/24"), PREV)
    assert plan is not None and plan["dev"] == "tpmbr0" and plan["old"] == {"net.ipv4.conf.tpmbr0.route_localnet": "0"}
    monkeypatch.setattr(facts, "ip_json", lambda prefix, *args: [{"dst": "10.231.0.2", "dev": "vethx"}])
    assert portmap.route_localnet_plan(ipaddress.ip_interface("10.231.0.2/24"), PREV) is None  # vethx: no sysctl
    plan = portmap.route_localnet_plan(ipaddress.ip_interface("10.231.0.2/24"), PREV, dry_run=True)
    assert plan is not None and plan["settings"] == [("net.ipv4.conf.vethx.route_localnet", 1)]


def test_an_ipv4_mapped_host_ip_is_ipv4_as_in_the_reference() -> None:
    """hostIP "::ffff:10.231.0.1" is 10.231.0.1 for the reference (Go's To4()): its rules go to iptables with
    -d 10.231.0.1. Ours put them in ip6tables with -d ::ffff:10.231.0.1, where no IPv4 packet ever matches, and
    the conflict check did not see it as the same address as 10.231.0.1."""
    req = make_req(mappings=[{"hostPort": 80, "containerPort": 80, "hostIP": "::ffff:10.231.0.1"}])
    cfg = portmap.parse_config(req)
    assert cfg.mappings == [portmap.Mapping(80, 80, "tcp", "10.231.0.1")]
    ips = portmap.container_ips(req, PREV)
    assert portmap.rules_for(cfg, "CNI-DN-x", 6, ips[6]) == []
    assert portmap.rules_for(cfg, "CNI-DN-x", 4, ips[4])[-1]["rule"][:2] == ["-d", "10.231.0.1"]
    with pytest.raises(CNIError, match="mapped twice"):
        portmap.parse_config(make_req(mappings=[{"hostPort": 80, "containerPort": 80, "hostIP": "10.231.0.1"},
                                                {"hostPort": 80, "containerPort": 81, "hostIP": "::ffff:10.231.0.1"}]))


def test_a_scoped_host_ip_is_refused_up_front() -> None:
    """Python's ipaddress accepts "fe80::1%eth0"; iptables does not: the ADD failed half-way with 999 and
    ip6tables-restore's message. It is refused before anything runs, naming the field and value."""
    with pytest.raises(CNIError) as err:
        portmap.parse_config(make_req(mappings=[{"hostPort": 80, "containerPort": 80, "hostIP": "fe80::1%eth0"}]))
    assert err.value.code == ERR_INVALID_CONFIG
    assert "runtimeConfig.portMappings[0].hostIP" in err.value.msg and "fe80::1%eth0" in err.value.msg
