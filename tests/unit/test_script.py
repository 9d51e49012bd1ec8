"""The script directive parser, the renderer's quoting and the runner's rollback."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cniplug import render, script
from cniplug.runner import Completed, RecordingRunner
from cniplug.spec import CNIError

BODY = """# Create the bridge
ip link add cni0 type bridge
#undo ip link delete cni0
ip link set cni0 up
# a step with two undo lines
iptables -w -t nat -N CNI-x
#undo iptables -w -t nat -F CNI-x
#undo iptables -w -t nat -X CNI-x
ip link set lo down || true
iptables -w -t nat -A X -m comment --comment 'name: "n" id: "c;1"' -j ACCEPT
"""


def test_parse_steps_undo_notes_tolerance() -> None:
    s = script.parse(BODY)
    assert [st.argv[:3] for st in s.steps] == [["ip", "link", "add"], ["ip", "link", "set"],
                                              ["iptables", "-w", "-t"], ["ip", "link", "set"],
                                              ["iptables", "-w", "-t"]]
    assert s.steps[0].undo == [["ip", "link", "delete", "cni0"]]
    assert s.steps[0].note == "Create the bridge"
    assert s.steps[1].undo == []
    assert len(s.steps[2].undo) == 2
    assert s.steps[3].tolerant and s.steps[3].argv == ["ip", "link", "set", "lo", "down"]
    assert s.steps[4].argv[-3] == 'name: "n" id: "c;1"'
    assert s.text.startswith("#!/bin/bash\n") and "set -e\n" in s.text


@pytest.mark.parametrize("line", ["ip link; rm -rf /", "ip link | cat", "ip link > /tmp/x", "a && b",
                                  "$(id)", "echo `id`"])
def test_shell_operators_are_refused(line: str) -> None:
    with pytest.raises(CNIError):
        script.parse(line + "\n")


def test_undo_without_step_is_refused() -> None:
    with pytest.raises(CNIError):
        script.parse("#undo ip link delete x\n")


@pytest.mark.parametrize("fail_at", range(1, 6))
def test_rollback_undoes_completed_steps_in_reverse(fail_at: int) -> None:
    s = script.parse(BODY)
    r = RecordingRunner(fail_at=fail_at)
    if fail_at == 4:  # the tolerant step: its failure is ignored and nothing is rolled back
        r.run(s)
        assert len(r.calls) == 5
        return
    with pytest.raises(CNIError) as e:
        r.run(s)
    failed = s.steps[fail_at - 1]
    assert " ".join(failed.argv) in e.value.msg and "injected failure" in e.value.details
    undos = r.calls[fail_at:]
    expected = [u for st in reversed(s.steps[: fail_at - 1]) for u in st.undo]
    assert undos == expected


def test_best_effort_runs_everything_and_never_raises() -> None:
    s = script.parse(BODY)
    r = RecordingRunner(fail_at=1)
    r.run(s, best_effort=True)
    assert len(r.calls) == len(s.steps)


@pytest.mark.parametrize("value", ["x; rm -rf /", "$(id)", "`id`", "a b", "-rf", "'q'", "a|b"])
def test_render_quotes_every_value(value: str) -> None:
    env = render.environment()
    text = env.from_string("ip link add {{ v }} type bridge\n").render(v=value)
    argv = script.parse(text).steps[0].argv
    assert argv == ["ip", "link", "add", value, "type", "bridge"]


@pytest.mark.parametrize("value", ["a\nreboot", "a\rb", "a\0b"])
def test_render_refuses_newlines(value: str) -> None:
    with pytest.raises(CNIError) as e:
        render.environment().from_string("# {{ v }}\nip link\n").render(v=value)
    assert e.value.code == 7


def test_explanations_cannot_break_out_of_comments() -> None:
    with pytest.raises(CNIError) as e:
        render.environment().from_string("{{ say('bridge_add', name=n) }}\n").render(n="x\nreboot")
    assert e.value.code == 7


BATCH_BODY = """ip link add cni0 type bridge
#undo ip link delete cni0
ip link set cni0 up
ip -n ns1 addr add 10.0.0.2/24 dev eth0
#undo ip -n ns1 addr del 10.0.0.2/24 dev eth0
ip -n ns1 link set eth0 up
sysctl -w net.ipv4.ip_forward=1
#undo sysctl -w net.ipv4.ip_forward=0
iptables -w -t nat -N CNI-x
#undo iptables -w -t nat -X CNI-x
iptables -w -t nat -A CNI-x -m comment --comment 'name: "n" id: "c"' -j ACCEPT
#undo iptables -w -t nat -D CNI-x -m comment --comment 'name: "n" id: "c"' -j ACCEPT
"""


class BatchRecorder(RecordingRunner):
    """Records batches; `fail` maps a batch's argv[0] to (exit code, stderr) to fake a kernel failure."""

    def __init__(self, fail: dict[str, tuple[int, str]] | None = None) -> None:
        super().__init__(batch=True)
        self.fail = fail or {}
        self.stdins: list[str | None] = []

    def call(self, argv: list[str], stdin: str | None = None) -> Completed:
        self.calls.append(argv)
        self.stdins.append(stdin)
        for key, (rc, err) in self.fail.items():
            if " ".join(argv).startswith(key):
                return Completed(argv, rc, "", err)
        return Completed(argv, 0)


def test_batches_group_ip_per_namespace_and_iptables_per_table() -> None:
    r = BatchRecorder()
    r.run(script.parse(BATCH_BODY))
    assert r.calls == [["ip", "-batch", "-"], ["ip", "-n", "ns1", "-batch", "-"],
                       ["sysctl", "-w", "net.ipv4.ip_forward=1"], ["iptables-restore", "-w", "--noflush"]]
    assert r.stdins[0] == "link add cni0 type bridge\nlink set cni0 up\n"
    assert r.stdins[3] == ('*nat\n-N CNI-x\n-A CNI-x -m comment --comment "name: \\"n\\" id: \\"c\\"" -j ACCEPT\n'
                           "COMMIT\n")


def test_ip_batch_failure_rolls_back_exactly_the_lines_before_it() -> None:
    r = BatchRecorder({"ip -n ns1 -batch": (1, "Error: x\nCommand failed -:2\n")})
    with pytest.raises(CNIError) as e:
        r.run(script.parse(BATCH_BODY))
    assert "ip -n ns1 link set eth0 up" in e.value.msg
    # line 1 of the namespace batch (the address) completed: its undo runs, then the bridge's
    assert r.calls[2:] == [["ip", "-n", "ns1", "addr", "del", "10.0.0.2/24", "dev", "eth0"],
                           ["ip", "link", "delete", "cni0"]]


@pytest.mark.parametrize("stderr", ['Error: argument "nosuch" is wrong: "table" value is invalid\n',
                                    "Command failed -:9\n", ""], ids=["argument-error", "line-9-of-2", "silent"])
def test_ip_batch_failure_naming_no_line_undoes_every_line(stderr: str) -> None:
    """ip exits on an argument error without `Command failed -:N` (or names a line it was not sent): any
    line may have run, so every line of the batch is undone, and the error names the batch."""
    r = BatchRecorder({"ip -n ns1 -batch": (1, stderr)})
    with pytest.raises(CNIError) as e:
        r.run(script.parse(BATCH_BODY))
    assert e.value.msg == "one of steps 3-4 failed: ip -n ns1 -batch -"
    assert r.calls[2:] == [["ip", "-n", "ns1", "addr", "del", "10.0.0.2/24", "dev", "eth0"],
                           ["ip", "link", "delete", "cni0"]]


def test_best_effort_redoes_every_line_of_an_ip_batch_naming_no_line() -> None:
    r = BatchRecorder({"ip -n ns1 -batch": (1, "Error: argument is wrong\n")})
    r.run(script.parse("ip -n ns1 link delete eth0 || true\nip -n ns1 link delete eth1 || true\n"),
          best_effort=True)
    assert r.calls[1:] == [["ip", "-n", "ns1", "link", "delete", "eth0"], ["ip", "-n", "ns1", "link", "delete", "eth1"]]


def test_restore_failure_is_atomic_and_rolls_back_earlier_steps() -> None:
    r = BatchRecorder({"iptables-restore": (1, "iptables-restore: line 2 failed: Chain already exists.\n")})
    with pytest.raises(CNIError) as e:
        r.run(script.parse(BATCH_BODY))
    assert "-N CNI-x" in e.value.msg
    assert ["iptables", "-w", "-t", "nat", "-X", "CNI-x"] not in r.calls  # restore applied nothing
    assert r.calls[-1] == ["ip", "link", "delete", "cni0"]


@pytest.mark.parametrize(("line", "named"), [(2, "step 6 failed: iptables -w -t nat -N CNI-x"),
                                             (3, "step 7 failed: iptables -w -t nat -A CNI-x -m comment"),
                                             (4, "one of steps 6-7 failed: iptables-restore -w --noflush")],
                         ids=["rule-1", "rule-2", "commit"])
def test_restore_parse_error_names_its_rule_or_the_batch(line: int, named: str) -> None:
    """Measured (iptables-nft 1.8.9): a rule it cannot parse is named by its line; a rule whose target chain
    does not exist by the COMMIT line (4 here), which is no rule: then the batch is named."""
    err = (f"iptables-restore v1.8.9 (nf_tables): Chain 'NOSUCH' does not exist\nError occurred at line: {line}\n"
           "Try `iptables-restore -h' or 'iptables-restore --help' for more information.\n")
    r = BatchRecorder({"iptables-restore": (2, err)})
    with pytest.raises(CNIError) as e:
        r.run(script.parse(BATCH_BODY))
    assert e.value.msg.startswith(named)
    assert r.calls[-1] == ["ip", "link", "delete", "cni0"]  # restore applied nothing: no -X of the chain


def test_lock_timeout_is_try_again_later(tmp_path: pytest.TempPathFactory) -> None:
    import fcntl
    import os

    from cniplug.plugins.common import flock_with_timeout

    path = os.path.join(str(tmp_path), "lock")
    holder = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    pid = os.fork()
    if pid == 0:  # a second process: flock locks are per open file, so contend from another one
        fd = os.open(path, os.O_RDWR)
        try:
            flock_with_timeout(fd, 0.2, "busy")
        except CNIError as err:
            os._exit(err.code)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    os.close(holder)
    assert os.WEXITSTATUS(status) == 11


DEL_BODY = """ip -n ns1 link delete eth0 || true
iptables -w -t nat -D POSTROUTING -s 10.0.0.2/32 -j CNI-x || true
iptables -w -t nat -F CNI-x || true
iptables -w -t nat -X CNI-x || true
"""


def test_best_effort_batches_and_redoes_a_failed_batch_step_by_step() -> None:
    r = BatchRecorder({"iptables-restore": (1, "iptables-restore: line 2 failed\n")})
    r.run(script.parse(DEL_BODY), best_effort=True)
    assert r.calls[1] == ["iptables-restore", "-w", "--noflush"]
    assert r.stdins[1] == "*nat\n-D POSTROUTING -s 10.0.0.2/32 -j CNI-x\n-F CNI-x\n-X CNI-x\nCOMMIT\n"
    # restore is atomic: after its failure every one of its steps runs on its own, failures ignored
    assert r.calls[2:] == [step.argv for step in script.parse(DEL_BODY).steps[1:]]


def test_tolerant_steps_are_not_batched_outside_best_effort() -> None:
    r = BatchRecorder()
    r.run(script.parse(DEL_BODY))
    assert len(r.calls) == 4


PLAIN = st.text(alphabet="abcAZ019_@%+=:,./-", min_size=1, max_size=8)
QUOTED = st.text(st.characters(blacklist_characters="'\n\r\x00", blacklist_categories=("Cs",)), max_size=12).map(
    lambda t: f"'{t}'")
WORDS = st.lists(st.lists(st.one_of(PLAIN, QUOTED), min_size=1, max_size=3).map("".join), min_size=1, max_size=8)


@given(WORDS, st.sampled_from([" ", "  ", "\t", " \t "]))
@settings(max_examples=500, deadline=None)
def test_lines_of_plain_and_single_quoted_words_split_exactly_as_shlex(words: list[str], blank: str) -> None:
    line = blank.join(words)  # plain words and '...' only: never shell syntax, so never refused
    assert script.split(line) == shlex.split(line, comments=True)
