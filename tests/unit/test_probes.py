"""Issue #16 item 5: a probe that could not look is an error, not "nothing there".

`runner.execute` (the one seam) is faked with the answers iptables and ip give; the texts are the ones
measured on Debian 12 (iptables-nft 1.8.9, iproute2 6.1) and legacy iptables.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pytest

from cniplug import facts, runner, skel
from cniplug.plugins import bridge
from cniplug.runner import Completed
from cniplug.spec import CNIError

LOCK = "Another app is currently holding the xtables lock. Stopped waiting after 5s.\n"
NFT_MISSING = "iptables v1.8.9 (nf_tables): chain `CNI-x' in table `nat' is incompatible, use 'nft' tool.\n"
Answer = tuple[int, str, str]  # rc, stdout, stderr


def fake_execute(monkeypatch: pytest.MonkeyPatch, answer: Callable[[list[str]], Answer]) -> list[list[str]]:
    calls: list[list[str]] = []

    def execute(argv: list[str], stdin: str | None = None) -> Completed:
        calls.append(argv)
        rc, out, err = answer(argv)
        return Completed(argv, rc, out, err)

    monkeypatch.setattr(runner, "execute", execute)
    return calls


@pytest.mark.parametrize("stderr", ["iptables: No chain/target/match by that name.\n",
                                    "iptables v1.8.9 (nf_tables): table 'nat' does not exist\n"],
                         ids=["no-chain", "no-table"])
def test_missing_chain_is_nothing_there(monkeypatch: pytest.MonkeyPatch, stderr: str) -> None:
    fake_execute(monkeypatch, lambda argv: (1, "", stderr))
    assert facts.iptables_rules(4, "nat", "CNI-x") == []


def test_nft_incompatible_is_missing_only_when_the_table_has_no_such_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    table = "-P POSTROUTING ACCEPT\n-N CNI-other\n"
    calls = fake_execute(monkeypatch, lambda argv: (1, "", NFT_MISSING) if "CNI-x" in argv else (0, table, ""))
    assert facts.iptables_rules(6, "nat", "CNI-x") == []
    assert calls[-1] == ["ip6tables", "-w", "-t", "nat", "-S"]
    table += "-N CNI-x\n"  # the chain is there: really incompatible, so iptables could not read it
    with pytest.raises(CNIError) as e:
        facts.iptables_rules(6, "nat", "CNI-x")
    assert e.value.code == 999 and "is incompatible" in e.value.details


@pytest.mark.parametrize(("rc", "stderr", "code"), [
    (4, LOCK, 11),
    (4, "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)\n",
     999),
    (2, "iptables v1.8.9 (nf_tables): unknown option \"-S\"\n", 999),
    (1, "iptables: Memory allocation problem.\n", 999),
], ids=["lock", "permission", "usage", "memory"])
def test_could_not_look_raises_naming_command_and_stderr(monkeypatch: pytest.MonkeyPatch, rc: int, stderr: str,
                                                         code: int) -> None:
    fake_execute(monkeypatch, lambda argv: (rc, "", stderr))
    with pytest.raises(CNIError) as e:
        facts.iptables_rules(4, "nat", "POSTROUTING")
    assert e.value.code == code
    assert "iptables -w -t nat -S POSTROUTING" in e.value.msg and stderr.strip() in e.value.details


def test_iptables_not_installed_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(runner, "SYSTEM_PATH", "/nonexistent")
    with pytest.raises(CNIError) as e:
        facts.iptables_rules(4, "nat", "POSTROUTING")
    assert "iptables" in e.value.msg


@pytest.mark.parametrize("stderr", ['Cannot find device "eth0"\n', 'Device "eth0" does not exist.\n'],
                         ids=["cannot-find", "does-not-exist"])
def test_ip_json_missing_device_is_empty(monkeypatch: pytest.MonkeyPatch, stderr: str) -> None:
    fake_execute(monkeypatch, lambda argv: (1, "", stderr))
    assert facts.ip_json(["ip", "-n", "x"], "addr", "show", "dev", "eth0") == []


def test_ip_json_could_not_look_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    err = "nsenter: cannot open /proc/1234/ns/net: Permission denied\n"
    fake_execute(monkeypatch, lambda argv: (1, "", err))
    with pytest.raises(CNIError) as e:
        facts.ip_json(["nsenter", "--net=/proc/1234/ns/net", "ip"], "route", "show")
    assert e.value.code == 999 and "nsenter --net=/proc/1234/ns/net ip -j route show" in e.value.msg
    assert "Permission denied" in e.value.details


CONFIG = {"cniVersion": "1.0.0", "name": "tpbnet", "type": "cniplug-bridge", "bridge": "tpbbr0", "ipMasq": True,
          "ipam": {"type": "cniplug-static", "addresses": [{"address": "10.249.9.2/24"}]}}


def call(command: str, extra: dict[str, str] | None = None,
         config: dict[str, object] | None = None) -> dict[str, object]:
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "tpbc1", "CNI_NETNS": "", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/nonexistent", **(extra or {})}
    out = io.StringIO()
    rc = skel.run(bridge.HANDLERS, "tpb", argv=["--dry-run"], environ=env,
                  stdin=io.BytesIO(json.dumps(config or CONFIG).encode()), stdout=out)
    return {"rc": rc, "body": json.loads(out.getvalue()) if rc else out.getvalue()}


def test_del_fails_when_the_nat_probe_cannot_look(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_execute(monkeypatch, lambda argv: (4, "", LOCK))
    got = call("DEL")
    assert got["rc"] == 1 and got["body"]["code"] == 11  # type: ignore[index]


def test_del_of_a_missing_chain_is_success(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_execute(monkeypatch, lambda argv: (0, "-P POSTROUTING ACCEPT\n", "") if "POSTROUTING" in argv
                 else (1, "", "Error: No such file or directory\n") if argv[0] == "nft"
                 else (1, "", "iptables: No chain/target/match by that name.\n"))
    got = call("DEL")
    assert got["rc"] == 0 and "-X" not in str(got["body"])


def test_check_reports_the_probe_error_not_a_missing_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.249.9.2/24"}]}
    fake_execute(monkeypatch, lambda argv: (4, "", LOCK))
    monkeypatch.setattr("cniplug.plugins.common.check_attachment", lambda req, prev, bridge="": None)
    monkeypatch.setattr(facts, "check_netns", lambda path: None)
    monkeypatch.setattr(facts, "is_bridge", lambda name: True)
    got = call("CHECK", {"CNI_NETNS": "/run/netns/tpb-none"}, config={**CONFIG, "prevResult": prev})
    assert got["rc"] == 1
    assert got["body"]["code"] == 11 and "missing" not in got["body"]["msg"]  # type: ignore[index]
