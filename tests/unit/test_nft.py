"""cniplug/nft.py (backend choice, names, probes) and the `#undo ... @handle` directive, without root."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import pytest

from cniplug import nft, runner, script
from cniplug.plugins.bridge import parse_vlan_trunk, vid_ranges
from cniplug.spec import CNIError


@pytest.mark.parametrize(("tools", "value", "want"), [
    ({"iptables", "nft"}, None, "iptables"),
    ({"nft"}, None, "nftables"),
    (set(), None, "iptables"),  # neither: iptables, whose absence STATUS and ADD then report
    ({"iptables", "nft"}, "nftables", "nftables"),
    ({"nft"}, "iptables", "iptables"),  # asked for explicitly: no second guessing
])
def test_backend_choice_follows_the_reference(monkeypatch: pytest.MonkeyPatch, tools: set[str], value: str | None,
                                              want: str) -> None:
    monkeypatch.setattr(nft, "installed", lambda tool: tool in tools)
    assert nft.masq_backend({} if value is None else {"ipMasqBackend": value}) == want


@pytest.mark.parametrize("value", ["nft", "NFTABLES", "", 1, True, ["nftables"], {"x": 1}])
def test_bad_backend_is_refused_naming_the_field(value: object) -> None:
    with pytest.raises(CNIError) as e:
        nft.masq_backend({"ipMasqBackend": value})
    assert e.value.code == 7 and "ipMasqBackend" in e.value.msg and repr(value) in e.value.msg


def test_masq_comment_is_the_references() -> None:
    def h(text: str) -> str:
        return hashlib.sha512(text.encode()).hexdigest()[:16]

    assert nft.masq_comment("net1", "eth0", "abc") == f"{h('net1')}-{h('eth0:abc')}, net: net1, if: eth0, id: abc"
    long = nft.masq_comment("n" * 100, "eth0", "c" * 64)
    assert len(long) == 128 and long.startswith(nft.masq_instance_prefix("n" * 100, "eth0", "c" * 64))


def fake_nft(monkeypatch: pytest.MonkeyPatch, rc: int, stdout: str, stderr: str = "") -> None:
    monkeypatch.setattr(nft, "installed", lambda tool: True)
    monkeypatch.setattr(runner, "execute", lambda argv, stdin=None: runner.Completed(argv, rc, stdout, stderr))


def test_missing_table_is_empty_but_a_failed_probe_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nft(monkeypatch, 1, "", "Error: No such file or directory\nlist table inet x\n")
    assert nft.table("inet", "x") == []
    fake_nft(monkeypatch, 1, "", "Error: Operation not permitted\n")
    with pytest.raises(CNIError) as e:
        nft.table("inet", "x")
    assert e.value.code == 999 and "nft -j list table inet x" in e.value.msg
    fake_nft(monkeypatch, 0, "not json")
    with pytest.raises(CNIError):
        nft.table("inet", "x")


def test_teardown_and_gc_find_rules_by_comment(monkeypatch: pytest.MonkeyPatch) -> None:
    mine = nft.masq_comment("net1", "eth0", "c1")
    other_if = nft.masq_comment("net1", "eth1", "c1")
    other_net = nft.masq_comment("net2", "eth0", "c1")
    rules = [{"rule": {"chain": "masq_checks", "handle": h, "comment": c}}
             for h, c in ((4, mine), (5, other_if), (6, other_net), (7, mine))]
    fake_nft(monkeypatch, 0, json.dumps({"nftables": [{"metainfo": {}}, *rules]}))
    assert nft.masq_teardown("net1", "eth0", "c1") == [4, 7]
    assert nft.masq_stale("net1", {("c1", "eth0")}) == [5]
    assert nft.masq_stale("net1", set()) == [4, 5, 7]


def test_with_handle_takes_the_handle_nft_echoed() -> None:
    out = 'add rule inet t c ip saddr 10.0.0.2 masquerade comment "x" # handle 17\n# new generation 9 by process 1\n'
    assert runner.with_handle(["nft", "delete", "rule", "inet", "t", "c", "handle", "@handle"], out) == \
        ["nft", "delete", "rule", "inet", "t", "c", "handle", "17"]
    assert runner.with_handle(["nft", "delete", "rule", "handle", "@handle"], "") == []


@dataclass
class EchoRunner(runner.RecordingRunner):
    """Prints `# handle N` for each `--echo` step (N counts up); fails the call number fail_at."""

    outputs: list[str] = field(default_factory=list)

    def call(self, argv: list[str], stdin: str | None = None) -> runner.Completed:
        self.calls.append(argv)
        rc = 1 if self.fail_at is not None and len(self.calls) == self.fail_at else 0
        out = f"add rule ... # handle {len(self.calls) + 40}\n" if "--echo" in argv else ""
        result = runner.Completed(argv, rc, out, "injected" if rc else "")
        self.records.append(result)
        return result


def test_rollback_deletes_the_rule_by_the_handle_it_printed() -> None:
    body = ("# a\nnft --echo --handle add rule inet t c ip saddr 10.0.0.2 masquerade\n"
            "#undo nft delete rule inet t c handle @handle\n"
            "# b\nnft --echo --handle add rule inet t c ip6 saddr fd00::2 masquerade\n"
            "#undo nft delete rule inet t c handle @handle\n"
            "# c\nip link set x up\n")
    r = EchoRunner(fail_at=3)
    with pytest.raises(CNIError):
        r.run(script.parse(body))
    assert r.calls[3:] == [["nft", "delete", "rule", "inet", "t", "c", "handle", "42"],
                           ["nft", "delete", "rule", "inet", "t", "c", "handle", "41"]]


@pytest.mark.parametrize(("value", "want"), [
    (None, None), ([], []), ([{}], []),
    ([{"id": 5}, {"minID": 10, "maxID": 12}, {"id": 11}], [5, 10, 11, 12]),
    ([{"id": 4094}, {"minID": 1, "maxID": 1}], [1, 4094]),
    ([{"minID": 3, "maxID": 3, "id": 9}], [3, 9]),
])
def test_vlan_trunk(value: object, want: list[int] | None) -> None:
    assert parse_vlan_trunk(value) == want


@pytest.mark.parametrize("value", [
    {"id": 5}, "5", [5], [{"id": 0}], [{"id": 4095}], [{"id": True}], [{"id": "5"}], [{"id": 2.0}],
    [{"minID": 5}], [{"maxID": 5}], [{"minID": 6, "maxID": 5}], [{"minID": 0, "maxID": 5}],
])
def test_bad_vlan_trunk_is_refused(value: object) -> None:
    with pytest.raises(CNIError) as e:
        parse_vlan_trunk(value)
    assert e.value.code == 7 and "vlanTrunk" in e.value.msg


def test_vid_ranges() -> None:
    assert vid_ranges([]) == []
    assert vid_ranges([2, 3, 4, 7, 9, 10]) == [(2, 4), (7, 7), (9, 10)]
