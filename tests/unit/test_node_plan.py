"""plan() of the node agent: (me, nodes, facts, settings) -> the reconcile script. Pure, no root."""

from __future__ import annotations

import json
import subprocess

import pytest

from cniplug.node import reconcile
from cniplug.node.model import NodeInfo
from cniplug.node.reconcile import CHAIN, Facts, Route, Settings, decide, plan, steps_of
from cniplug.spec import CNIError

S = Settings(cluster_cidr="10.239.0.0/17", conf_dir="/run/tnd-conf")
ME = NodeInfo("n1", ("10.239.1.0/24",), "10.239.200.11")
N2 = NodeInfo("n2", ("10.239.2.0/24",), "10.239.200.12")
N3 = NodeInfo("n3", ("10.239.3.0/24",), "10.239.200.13")
LINK = Route("10.239.200.0/24", "", "kernel", "link")


def synced_facts(me: NodeInfo, nodes: list[NodeInfo], settings: Settings = S) -> Facts:
    """The facts of a node on which the plan's steps have run (what `ip -j` and `iptables -S` then show)."""
    routes = [LINK] + [Route(c, n.address, str(settings.route_proto)) for n in nodes if n.name != me.name
                       for c in n.pod_cidrs]
    nat = ["-P POSTROUTING ACCEPT", f"-N {settings.chain}",
           f'-A POSTROUTING -m comment --comment "{reconcile.JUMP_COMMENT}" -j {settings.chain}',
           f'-A {settings.chain} -s {settings.cluster_cidr} -d {settings.cluster_cidr} -m comment --comment '
           f'"{reconcile.RULE_COMMENT}" -j ACCEPT']
    return Facts(tuple(routes), tuple(nat), reconcile.conflist_text(me, settings), "1")


def lines(text: str) -> list[str]:
    return [s.line for s in steps_of(text)]


def test_fresh_node_gets_routes_nat_forwarding_and_its_config_list() -> None:
    text = plan(ME, [ME, N2, N3], Facts((LINK,), ("-P POSTROUTING ACCEPT",), None, "0"), S)
    got = lines(text)
    assert got[0] == "sysctl -w net.ipv4.ip_forward=1"
    assert "ip route add 10.239.2.0/24 via 10.239.200.12 proto 222" in got
    assert "ip route add 10.239.3.0/24 via 10.239.200.13 proto 222" in got
    assert f"iptables -w -t nat -N {CHAIN}" in got
    assert any(line.startswith("iptables -w -t nat -I POSTROUTING 1 ") and line.endswith(f"-j {CHAIN}")
               for line in got)
    assert any(f"-A {CHAIN} -s 10.239.0.0/17 -d 10.239.0.0/17 " in line and line.endswith("-j ACCEPT")
               for line in got)
    assert got[-1].startswith("sh -c ") and got[-1].endswith("/run/tnd-conf/10-cniplug.conflist")
    assert all(s.note for s in steps_of(text)), "every step is explained"
    # No route to this node's own pod CIDR.
    assert not any("10.239.1.0/24 via" in line for line in got)


def test_second_reconcile_changes_nothing() -> None:
    nodes = [ME, N2, N3]
    text = plan(ME, nodes, synced_facts(ME, nodes), S)
    assert lines(text) == []
    assert "Nothing to change" in text


def test_node_that_left_loses_its_route_and_only_the_agents_routes_are_touched() -> None:
    facts = synced_facts(ME, [ME, N2, N3])
    foreign = Route("10.239.9.0/24", "10.239.200.99", "static")  # someone else's: never touched
    facts = Facts(facts.routes + (foreign,), facts.nat, facts.conflist, "1")
    got = lines(plan(ME, [ME, N2], facts, S))
    assert got == ["ip route del 10.239.3.0/24 via 10.239.200.13 proto 222"]


def test_moved_node_gets_its_route_replaced() -> None:
    facts = synced_facts(ME, [ME, N2, N3])
    moved = NodeInfo("n3", ("10.239.3.0/24",), "10.239.200.23")
    assert lines(plan(ME, [ME, N2, moved], facts, S)) == [
        "ip route del 10.239.3.0/24 via 10.239.200.13 proto 222",
        "ip route add 10.239.3.0/24 via 10.239.200.23 proto 222"]


def test_route_deleted_by_hand_comes_back() -> None:
    facts = synced_facts(ME, [ME, N2, N3])
    facts = Facts(tuple(r for r in facts.routes if r.dst != "10.239.2.0/24"), facts.nat, facts.conflist, "1")
    assert lines(plan(ME, [ME, N2, N3], facts, S)) == ["ip route add 10.239.2.0/24 via 10.239.200.12 proto 222"]


def test_foreign_route_to_a_pod_cidr_is_left_alone_and_reported() -> None:
    facts = synced_facts(ME, [ME, N2])
    facts = Facts(facts.routes + (Route("10.239.3.0/24", "10.239.200.77", "static"),), facts.nat, facts.conflist, "1")
    text = plan(ME, [ME, N2, N3], facts, S)
    assert lines(text) == []
    assert "a route to it that the agent did not make is there" in text


@pytest.mark.parametrize(("node", "why"), [
    (NodeInfo("n4", ("10.239.4.0/24",), ""), "address is not known yet"),
    (NodeInfo("n4", ("10.239.1.128/25",), "10.239.200.14"), "overlaps this node's own pod CIDR"),
    (NodeInfo("n4", ("10.239.4.0/24",), "10.239.201.14"), "on no network this node is attached to"),
])
def test_nodes_the_agent_cannot_route_to_are_skipped_with_a_reason(node: NodeInfo, why: str) -> None:
    text = plan(ME, [ME, node], synced_facts(ME, [ME]), S)
    assert lines(text) == []
    assert why in text


def test_malformed_nodes_are_left_out_never_rendered() -> None:
    bad = [NodeInfo("n4\nrm -rf /", ("10.239.4.0/24",), "10.239.200.14"),
           NodeInfo("n5", ("10.239.5.0/24; reboot",), "10.239.200.15"),
           NodeInfo("n6", ("10.239.6.0/24",), "10.239.200.16 x")]
    text = plan(ME, [ME, N2, *bad], synced_facts(ME, [ME, N2]), S)
    assert lines(text) == []
    assert "3 node(s) left out" in text and "rm -rf" not in text and "reboot" not in text


def test_bad_own_name_is_a_cni_error() -> None:
    with pytest.raises(CNIError) as err:
        plan(NodeInfo("N1 x", (), ""), [], Facts(), S)
    assert err.value.code == 7


def test_node_without_pod_cidr_writes_no_config_list() -> None:
    me = NodeInfo("n1", (), "10.239.200.11")
    text = plan(me, [me, N2], Facts((LINK,), (), None, "1"), S)
    assert not any(line.startswith("sh -c") for line in lines(text))
    assert "not written until it has one" in text


def test_jump_behind_a_cni_chain_is_moved_ahead() -> None:
    facts = synced_facts(ME, [ME, N2])
    nat = list(facts.nat)
    jump = nat.pop(2)
    nat.insert(2, '-A POSTROUTING -s 10.239.1.5/32 -m comment --comment "name: x" -j CNI-abc')
    nat.insert(3, jump)
    got = lines(plan(ME, [ME, N2], Facts(facts.routes, tuple(nat), facts.conflist, "1"), S))
    assert got[0].startswith("iptables -w -t nat -D POSTROUTING -m comment")
    assert got[1].startswith("iptables -w -t nat -I POSTROUTING 1 -m comment")
    assert len(got) == 2


def test_chain_with_a_stale_rule_is_rewritten() -> None:
    facts = synced_facts(ME, [ME, N2])
    nat = [line.replace("10.239.0.0/17", "10.238.0.0/16") for line in facts.nat]
    got = lines(plan(ME, [ME, N2], Facts(facts.routes, tuple(nat), facts.conflist, "1"), S))
    assert got[0] == f"iptables -w -t nat -F {CHAIN}"
    assert "-s 10.239.0.0/17 -d 10.239.0.0/17" in got[1]


def test_changed_pod_cidr_rewrites_the_config_list_with_an_undo_to_the_old_one() -> None:
    facts = synced_facts(ME, [ME, N2])
    moved = NodeInfo("n1", ("10.239.7.0/24",), ME.address)
    steps = steps_of(plan(moved, [moved, N2], facts, S))
    assert len(steps) == 1 and "10.239.7.0/24" in steps[0].line
    assert "10.239.1.0/24" in " ".join(steps[0].undo[0])


def test_the_config_list_step_writes_the_exact_text_when_run_by_bash(tmp_path: object) -> None:
    settings = Settings(cluster_cidr="10.239.0.0/17", conf_dir=str(tmp_path))
    step = [s for s in steps_of(plan(ME, [ME], Facts((LINK,), (), None, "1"), settings)) if s.argv[0] == "sh"][0]
    subprocess.run(step.argv, check=True)
    written = (tmp_path / "10-cniplug.conflist").read_text()  # type: ignore[operator]
    assert written == reconcile.conflist_text(ME, settings)
    data = json.loads(written)
    assert [p["type"] for p in data["plugins"]] == ["cniplug-loopback", "cniplug-bridge"]
    assert data["plugins"][1]["ipam"]["ranges"] == [[{"subnet": "10.239.1.0/24"}]]
    assert reconcile.subnet_of_conflist(written) == "10.239.1.0/24"


def test_decide_is_pure_and_sorted() -> None:
    a = decide(ME, [N3, ME, N2], Facts((LINK,), (), None, "1"), S)
    b = decide(ME, [N2, N3, ME], Facts((LINK,), (), None, "1"), S)
    assert a == b and [r["dst"] for r in a.add] == ["10.239.2.0/24", "10.239.3.0/24"]


def test_uninstall_takes_back_routes_chain_and_config_list_only() -> None:
    facts = synced_facts(ME, [ME, N2, N3])
    facts = Facts(facts.routes + (Route("10.239.9.0/24", "10.239.200.99", "static"),), facts.nat, facts.conflist, "1")
    steps = steps_of(reconcile.uninstall_plan(facts, S))
    got = [s.line for s in steps]
    assert "ip route del 10.239.2.0/24 via 10.239.200.12 proto 222 || true" in got
    assert not any("10.239.9.0/24" in line for line in got)
    assert f"iptables -w -t nat -X {CHAIN} || true" in got
    assert got[-1] == "rm -f /run/tnd-conf/10-cniplug.conflist"
    assert all(s.note for s in steps)


def test_zh_script_explains_every_step_in_chinese() -> None:
    zh = Settings(cluster_cidr="10.239.0.0/17", conf_dir="/run/tnd-conf", lang="zh")
    steps = steps_of(plan(ME, [ME, N2], Facts((LINK,), (), None, "0"), zh))
    assert steps and all(any("\u4e00" <= c <= "\u9fff" for c in s.note) for s in steps)


def test_a_failed_step_rolls_back_the_completed_ones_in_reverse() -> None:
    from cniplug.runner import RecordingRunner

    text = plan(ME, [ME, N2, N3], Facts((LINK,), (), None, "0"), S)
    run = RecordingRunner(fail_at=4)  # the 4th command: the nat chain, after forwarding and two routes
    with pytest.raises(CNIError) as err:
        reconcile.apply(text, run)
    assert "step 4 failed" in err.value.msg
    assert [" ".join(c) for c in run.calls[4:]] == [
        "ip route del 10.239.3.0/24 via 10.239.200.13 proto 222",
        "ip route del 10.239.2.0/24 via 10.239.200.12 proto 222",
        "sysctl -w net.ipv4.ip_forward=0"]
