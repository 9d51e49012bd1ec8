"""Tests aimed at hand-made mutants of the core (issue #16): each one fails when its mutant is applied.

Mutant -> the test here (or elsewhere) that kills it:

* a failed ip batch line counted as done (runner.run_group returns `line`, not `line - 1`)
  -> test_failed_batch_line_is_not_undone (also test_script.test_ip_batch_failure_rolls_back_exactly...)
* the batch word pattern `_IP_BATCHABLE` widened (spaces, tabs, quotes, backslash, #) -> test_words_ip_batch_*
* an xtables-lock failure mapped to 999 instead of 11 -> test_xtables_lock_is_try_again_later
  (and test_probes for the probes)
* masquerade teardown ignoring a chain without its jump -> test_teardown_finds_a_chain_without_its_jump
* `say()` refusing/sanitising only "\\n" -> test_line_breaks.test_say_refuses_control_characters_and_line_breaks
  and test_say_refuses_more_than_newline here
* interface-name length counted in characters, not bytes -> test_ifname_length_is_in_bytes
* `ipam_transaction` releasing only on CNIError -> test_ipam_transaction_releases_on_any_exception
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from cniplug import facts, i18n, ipam, script
from cniplug.plugins import common
from cniplug.runner import Completed, RecordingRunner, batch_key
from cniplug.skel import Request, check_ifname, parse_request
from cniplug.spec import CNIError


class Fails(RecordingRunner):
    """Batches like the real runner; every command whose argv starts with `prefix` fails with `stderr`."""

    def __init__(self, prefix: list[str], stderr: str) -> None:
        super().__init__(batch=True)
        self.prefix, self.stderr = prefix, stderr

    def call(self, argv: list[str], stdin: str | None = None) -> Completed:
        self.calls.append(argv)
        rc = 1 if argv[: len(self.prefix)] == self.prefix else 0
        return Completed(argv, rc, "", self.stderr if rc else "")


def test_failed_batch_line_is_not_undone() -> None:
    body = ("ip link add a type dummy\n#undo ip link delete a\n"
            "ip link add b type dummy\n#undo ip link delete b\n"
            "ip link add c type dummy\n#undo ip link delete c\n")
    r = Fails(["ip", "-batch"], "RTNETLINK answers: File exists\nCommand failed -:2\n")
    with pytest.raises(CNIError) as e:
        r.run(script.parse(body))
    assert e.value.msg == "step 2 failed: ip link add b type dummy"
    assert r.calls[1:] == [["ip", "link", "delete", "a"]]  # b failed: not undone; c never ran


@pytest.mark.parametrize("word", ["a b", "a\tb", "a'b", 'a"b', "a\\b", "a#b", "a;b", ""],
                         ids=["space", "tab", "quote", "dquote", "backslash", "hash", "semicolon", "empty"])
def test_words_ip_batch_would_read_differently_are_never_batched(word: str) -> None:
    step = script.Step(argv=["ip", "link", "set", "dev", word, "up"], line="")
    assert batch_key(step) is None


@pytest.mark.parametrize("word", ["eth0", "10.1.2.3/24", "fd00::1/64", "02:42:ac:11:00:02", "vlan@eth0", "a+b,c=d_e-f"])
def test_words_ip_batch_reads_as_they_are_are_batched(word: str) -> None:
    step = script.Step(argv=["ip", "-n", "ns1", "link", "set", "dev", word, "up"], line="")
    assert batch_key(step) == ("ip", "ip", "-n", "ns1")


def test_xtables_lock_is_try_again_later() -> None:
    body = "iptables -w -t nat -N CNI-x\n#undo iptables -w -t nat -X CNI-x\n"
    r = Fails(["iptables"], "Another app is currently holding the xtables lock. Stopped waiting after 5s.\n")
    with pytest.raises(CNIError) as e:
        r.run(script.parse(body))
    assert e.value.code == 11
    other = Fails(["iptables"], "iptables: Chain already exists.\n")
    with pytest.raises(CNIError) as e:
        other.run(script.parse(body))
    assert e.value.code == 999


def request(config: dict[str, Any]) -> Request:
    env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "tpbc1", "CNI_NETNS": "", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/opt/cni/bin"}
    return parse_request(env, json.dumps({"cniVersion": "1.0.0", "name": "tpbnet", "type": "x", **config}).encode())


def test_teardown_finds_a_chain_without_its_jump(monkeypatch: pytest.MonkeyPatch) -> None:
    """A chain whose POSTROUTING jump is already gone (an interrupted DEL) must still be removed."""
    req = request({})
    chain = common.chain_name(req.name, req.container_id)
    tables = {(4, "POSTROUTING"): ["-P POSTROUTING ACCEPT"], (4, chain): [f"-N {chain}"],
              (6, "POSTROUTING"): ["-P POSTROUTING ACCEPT"]}
    monkeypatch.setattr(facts, "iptables_rules", lambda family, table, c: tables.get((family, c), []))
    assert common.masq_teardown(req) == [{"tool": "iptables", "chain": chain, "jumps": []}]


def test_say_refuses_more_than_newline() -> None:
    for c in ("\r", "\x0b", "\u2028", "\x85", "\x1b"):
        with pytest.raises(CNIError):
            i18n.say("bridge_add", name=f"x{c}y")


def test_ifname_length_is_in_bytes() -> None:
    assert check_ifname("e" * 15) == "e" * 15
    with pytest.raises(CNIError):
        check_ifname("é" * 8)  # 8 characters, 16 bytes: the kernel's IFNAMSIZ counts bytes


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt(), CNIError(999, "x")],
                         ids=["RuntimeError", "KeyboardInterrupt", "CNIError"])
def test_ipam_transaction_releases_on_any_exception(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    verbs: list[str] = []

    def run(req: Request, verb: str) -> dict[str, Any] | None:
        verbs.append(verb)
        return {"ips": [{"address": "10.249.9.2/24"}]} if verb == "ADD" else None

    monkeypatch.setattr(ipam, "run", run)
    with pytest.raises(type(exc)), common.ipam_transaction(request({})):
        raise exc
    assert verbs == ["ADD", "DEL"]


# ---- survivors of a mutmut run on runner.py (contrib/mutation.sh), killed here

class Batches(RecordingRunner):
    """Batches like the real runner, records stdin; commands starting with a key of `fail` fail."""

    def __init__(self, fail: dict[str, str] | None = None) -> None:
        super().__init__(batch=True)
        self.fail = fail or {}
        self.stdins: list[str | None] = []

    def call(self, argv: list[str], stdin: str | None = None) -> Completed:
        self.calls.append(argv)
        self.stdins.append(stdin)
        err = next((e for key, e in self.fail.items() if " ".join(argv).startswith(key)), None)
        return Completed(argv, 1 if err is not None else 0, "", err or "")


def test_nsenter_ip_steps_batch_per_namespace_and_other_commands_do_not() -> None:
    body = ("nsenter --net=/proc/7/ns/net ip addr add 10.249.9.2/24 dev eth0\n"
            "nsenter --net=/proc/7/ns/net ip link set eth0 up\n"
            "nsenter --net=/proc/8/ns/net ip link set eth0 up\n"
            "nsenter --net=/proc/8/ns/net sysctl -w net.ipv4.conf.eth0.arp_notify=1\n"
            "nsenter --net=/proc/8/ns/net ping 10.249.9.1\n"
            "nsenter --net=/proc/8/ns/net ping 10.249.9.1\n"
            "ip -6 route show\n"
            "ip netns add tpbx\n"
            "ip link set lo up\n")
    r = Batches()
    r.run(script.parse(body))
    assert r.calls == [["nsenter", "--net=/proc/7/ns/net", "ip", "-batch", "-"],
                       ["nsenter", "--net=/proc/8/ns/net", "ip", "link", "set", "eth0", "up"],
                       ["nsenter", "--net=/proc/8/ns/net", "sysctl", "-w", "net.ipv4.conf.eth0.arp_notify=1"],
                       ["nsenter", "--net=/proc/8/ns/net", "ping", "10.249.9.1"],
                       ["nsenter", "--net=/proc/8/ns/net", "ping", "10.249.9.1"],
                       ["ip", "-6", "route", "show"], ["ip", "netns", "add", "tpbx"], ["ip", "link", "set", "lo", "up"]]
    assert r.stdins[0] == "addr add 10.249.9.2/24 dev eth0\nlink set eth0 up\n"


def test_iptables_and_ip6tables_restore_separately_and_keep_negation_plain() -> None:
    body = ("iptables -w -t nat -N CNI-x\n"
            "iptables -w -t nat -A CNI-x ! -d 224.0.0.0/4 -j MASQUERADE\n"
            "ip6tables -w -t nat -N CNI-x\n"
            "ip6tables -w -t nat -A CNI-x ! -d ff00::/8 -j MASQUERADE\n"
            "iptables -w -t filter -N CNI-y\n"
            "iptables -t nat -N CNI-z\n")
    r = Batches()
    r.run(script.parse(body))
    assert [c[0] for c in r.calls] == ["iptables-restore", "ip6tables-restore", "iptables", "iptables"]
    assert r.stdins[0] == "*nat\n-N CNI-x\n-A CNI-x ! -d 224.0.0.0/4 -j MASQUERADE\nCOMMIT\n"
    assert r.stdins[1] == "*nat\n-N CNI-x\n-A CNI-x ! -d ff00::/8 -j MASQUERADE\nCOMMIT\n"


def test_ip_batch_failing_at_line_one_undoes_nothing_of_it() -> None:
    body = "ip link add a type dummy\n#undo ip link delete a\nip link add b type dummy\n#undo ip link delete b\n"
    r = Batches({"ip -batch": "RTNETLINK answers: File exists\nCommand failed -:1\n"})
    with pytest.raises(CNIError) as e:
        r.run(script.parse(body))
    assert e.value.msg == "step 1 failed: ip link add a type dummy"
    assert r.calls == [["ip", "-batch", "-"]]


def test_best_effort_ip6tables_restore_failure_redoes_every_step() -> None:
    body = ("ip6tables -w -t nat -D POSTROUTING -s fd10::2/128 -j CNI-x || true\n"
            "ip6tables -w -t nat -F CNI-x || true\nip6tables -w -t nat -X CNI-x || true\n")
    r = Batches({"ip6tables-restore": "ip6tables-restore: line 2 failed\n"})
    r.run(script.parse(body), best_effort=True)
    assert r.calls[1:] == [s.argv for s in script.parse(body).steps]


def test_rollback_goes_on_after_a_failed_undo(caplog: pytest.LogCaptureFixture) -> None:
    body = ("ip link add a type dummy\n#undo ip link delete a\n"
            "sysctl -w net.ipv4.ip_forward=1\n#undo sysctl -w net.ipv4.ip_forward=0\n"
            "ip link add b type dummy\n")
    r = Batches({"ip link add b": "RTNETLINK answers: File exists\n", "sysctl -w net.ipv4.ip_forward=0": "denied"})
    with pytest.raises(CNIError):
        r.run(script.parse(body))
    assert r.calls[-2:] == [["sysctl", "-w", "net.ipv4.ip_forward=0"], ["ip", "link", "delete", "a"]]
    assert [rec.getMessage() for rec in caplog.records if rec.levelname == "WARNING"] == [
        "rollback step ['sysctl', '-w', 'net.ipv4.ip_forward=0'] failed: denied"]
