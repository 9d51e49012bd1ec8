"""Env/config validation, error codes, VERSION, CNI_ARGS, runtimeConfig, version conversion."""

from __future__ import annotations

import io
import json
import os
from typing import Any

import pytest

from cniplug import skel
from cniplug.spec import CNIError, from_current, to_current

CONF = {"cniVersion": "1.0.0", "name": "net1", "type": "cniplug-loopback"}
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0",
       "CNI_PATH": "/opt/cni/bin"}


def invoke(env: dict[str, str], stdin: bytes, handlers: dict[str, Any] | None = None,
           argv: list[str] | None = None) -> tuple[int, str]:
    out = io.StringIO()
    calls: list[skel.Request] = []

    def record(req: skel.Request) -> None:
        calls.append(req)

    handlers = handlers if handlers is not None else {v: record for v in ("ADD", "DEL", "CHECK", "GC", "STATUS")}
    rc = skel.run(handlers, "test", argv=argv or [], environ=env, stdin=io.BytesIO(stdin), stdout=out)
    return rc, out.getvalue()


def error(env: dict[str, str], stdin: bytes) -> dict[str, Any]:
    rc, out = invoke(env, stdin)
    assert rc == 1, out
    body = json.loads(out)
    assert set(body) <= {"cniVersion", "code", "msg", "details"}
    return body


def test_version_lists_supported_versions_and_echoes_request() -> None:
    rc, out = invoke({"CNI_COMMAND": "VERSION"}, b'{"cniVersion":"0.4.0"}')
    assert rc == 0
    assert json.loads(out) == {"cniVersion": "0.4.0",
                               "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}


def test_version_needs_nothing_but_the_command() -> None:
    rc, out = invoke({"CNI_COMMAND": "VERSION"}, b"")
    assert rc == 0 and json.loads(out)["cniVersion"] == "1.1.0"


@pytest.mark.parametrize("drop,code", [("CNI_CONTAINERID", 4), ("CNI_NETNS", 4), ("CNI_IFNAME", 4),
                                       ("CNI_PATH", 4)])
def test_missing_env_on_add(drop: str, code: int) -> None:
    env = {k: v for k, v in ENV.items() if k != drop}
    body = error(env, json.dumps(CONF).encode())
    assert body["code"] == code
    assert drop in body["msg"] + body.get("details", "")


def test_missing_container_id_on_del_is_code_3() -> None:
    env = {k: v for k, v in ENV.items() if k != "CNI_CONTAINERID"} | {"CNI_COMMAND": "DEL"}
    assert error(env, json.dumps(CONF).encode())["code"] == 3


def test_del_does_not_need_netns() -> None:
    rc, out = invoke({**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}, json.dumps(CONF).encode())
    assert rc == 0 and out == ""


def test_unknown_verb() -> None:
    body = error({**ENV, "CNI_COMMAND": "FOO"}, json.dumps(CONF).encode())
    assert body["code"] == 4 and "FOO" in body["msg"]


def test_malformed_stdin_is_code_6() -> None:
    assert error(ENV, b"{not json")["code"] == 6
    assert error(ENV, b"[1,2]")["code"] == 6


def test_oversized_stdin_is_code_5() -> None:
    assert error(ENV, b" " * (skel.MAX_STDIN + 10))["code"] == 5


@pytest.mark.parametrize("version", ["0.2.0", "2.0.0", "1.0", "abc"])
def test_unsupported_version_is_code_1(version: str) -> None:
    body = error(ENV, json.dumps({**CONF, "cniVersion": version}).encode())
    assert body["code"] == 1 and version in body["details"]


def test_missing_cni_version_means_0_1_0_which_is_unsupported() -> None:
    conf = {k: v for k, v in CONF.items() if k != "cniVersion"}
    assert error(ENV, json.dumps(conf).encode())["code"] == 1


def test_check_needs_0_4_0_and_gc_status_need_1_1_0() -> None:
    assert error({**ENV, "CNI_COMMAND": "CHECK"}, json.dumps({**CONF, "cniVersion": "0.3.1"}).encode())["code"] == 1
    for verb in ("GC", "STATUS"):
        assert error({**ENV, "CNI_COMMAND": verb}, json.dumps(CONF).encode())["code"] == 1
        rc, _ = invoke({**ENV, "CNI_COMMAND": verb}, json.dumps({**CONF, "cniVersion": "1.1.0"}).encode())
        assert rc == 0


@pytest.mark.parametrize("name", ["", "-x", "a/b", "../x", "a b", "a;b"])
def test_bad_network_name_is_code_7(name: str) -> None:
    body = error(ENV, json.dumps({**CONF, "name": name}).encode())
    assert body["code"] == 7


@pytest.mark.parametrize("cid", ["-rf", "a;b", "$(id)", "`id`", "a b", "a/b"])
def test_bad_container_id_is_code_4(cid: str) -> None:
    body = error({**ENV, "CNI_CONTAINERID": cid}, json.dumps(CONF).encode())
    assert body["code"] == 4 and "CNI_CONTAINERID" in body["msg"]


@pytest.mark.parametrize("ifname", ["a" * 16, "a/b", "a b", "a\nb", ".", "..", "a:b"])
def test_bad_ifname_is_code_4(ifname: str) -> None:
    body = error({**ENV, "CNI_IFNAME": ifname}, json.dumps(CONF).encode())
    assert body["code"] == 4 and "CNI_IFNAME" in body["msg"]


def test_relative_netns_is_rejected() -> None:
    assert error({**ENV, "CNI_NETNS": "run/netns/x"}, json.dumps(CONF).encode())["code"] == 4


def test_error_in_handler_becomes_cni_error_not_traceback() -> None:
    def boom(req: skel.Request) -> None:
        raise RuntimeError("kaput")

    rc, out = invoke(ENV, json.dumps(CONF).encode(), handlers={"ADD": boom})
    assert rc == 1
    body = json.loads(out)
    assert body["code"] == 999 and "RuntimeError" in body["msg"]


def test_error_json_carries_request_version() -> None:
    def fail(req: skel.Request) -> None:
        raise CNIError(11, "later")

    rc, out = invoke(ENV, json.dumps({**CONF, "cniVersion": "0.4.0"}).encode(), handlers={"ADD": fail})
    assert json.loads(out) == {"cniVersion": "0.4.0", "code": 11, "msg": "later"}


def test_cni_args_parsing_and_ignore_unknown() -> None:
    assert skel.parse_cni_args("IP=10.1.1.5;MAC=02:00:00:00:00:01") == {"IP": "10.1.1.5",
                                                                       "MAC": "02:00:00:00:00:01"}
    assert skel.parse_cni_args("") == {}
    # As the reference's types.LoadArgs: every pair, an empty one too, needs exactly one '='.
    for bad in ("IP", "IgnoreUnknown=1;;", "IP=10.1.1.5;", ";IP=10.1.1.5", "A=b=c"):
        with pytest.raises(CNIError) as e:
            skel.parse_cni_args(bad)
        assert e.value.code == 4 and bad in e.value.msg
    req = skel.parse_request({**ENV, "CNI_ARGS": "K8S_POD_NAME=x;IP=10.0.0.2"}, json.dumps(CONF).encode())
    with pytest.raises(CNIError) as e:
        req.known_args(("IP",))
    assert "K8S_POD_NAME" in e.value.msg
    req = skel.parse_request({**ENV, "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.0.0.2"},
                             json.dumps(CONF).encode())
    assert req.known_args(("IP",)) == {"IP": "10.0.0.2"}


def test_runtime_config_keys_match_case_insensitively() -> None:
    conf = {**CONF, "runtimeConfig": {"HostPort": 1, "portMappings": [2]}}
    req = skel.parse_request(ENV, json.dumps(conf).encode())
    assert req.runtime_config("hostPort") == 1
    assert req.runtime_config("PortMappings") == [2]
    assert req.runtime_config("mac") is None


RESULT_1 = {
    "cniVersion": "1.1.0",
    "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/run/netns/x", "mtu": 1400}],
    "ips": [{"address": "10.1.1.2/24", "gateway": "10.1.1.1", "interface": 0},
            {"address": "fd00::2/64", "interface": 0}],
    "routes": [{"dst": "0.0.0.0/0", "priority": 5}],
    "dns": {"nameservers": ["10.1.1.1"]},
}


def test_convert_to_0_4_adds_version_and_drops_1_1_fields() -> None:
    out = from_current(RESULT_1, "0.4.0")
    assert out["cniVersion"] == "0.4.0"
    assert [ip["version"] for ip in out["ips"]] == ["4", "6"]
    assert "mtu" not in out["interfaces"][0]
    assert out["routes"] == [{"dst": "0.0.0.0/0"}]


def test_convert_to_1_0_has_no_version_key_and_no_1_1_fields() -> None:
    out = from_current(RESULT_1, "1.0.0")
    assert all("version" not in ip for ip in out["ips"])
    assert "mtu" not in out["interfaces"][0] and out["routes"] == [{"dst": "0.0.0.0/0"}]


def test_round_trip_through_0_3_keeps_addresses() -> None:
    back = to_current(from_current(RESULT_1, "0.3.1"))
    assert [ip["address"] for ip in back["ips"]] == ["10.1.1.2/24", "fd00::2/64"]
    assert all("version" not in ip for ip in back["ips"])


def test_old_ip4_shape_is_refused() -> None:
    with pytest.raises(CNIError) as e:
        to_current({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24"}})
    assert e.value.code == 1


def test_bad_prev_result_is_reported() -> None:
    conf = {**CONF, "prevResult": {"ips": [{"address": "nonsense"}]}}
    with pytest.raises(CNIError) as e:
        skel.parse_request(ENV, json.dumps(conf).encode())
    assert "prevResult" in e.value.msg and e.value.code == 7


def test_no_command_prints_about_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = invoke({}, b"")
    assert rc == 0 and out == ""
    assert "CNI protocol versions supported" in capsys.readouterr().err


@pytest.mark.parametrize("version", ["0.3.1", "1.0.0", "0.4.0"])
@pytest.mark.parametrize(("env", "conf", "code"), [
    pytest.param({"CNI_IFNAME": "a" * 16}, {}, 4, id="bad-ifname"),
    pytest.param({"CNI_CONTAINERID": "a;b"}, {}, 4, id="bad-container-id"),
    pytest.param({}, {"name": "a b"}, 7, id="bad-network-name"),
    pytest.param({"CNI_ARGS": "IgnoreUnknown=1;;"}, {}, 4, id="bad-cni-args-pair"),
    pytest.param({"CNI_COMMAND": "GC"}, {}, 1, id="gc-on-old-version"),
    pytest.param({"CNI_COMMAND": "NOPE"}, {}, 4, id="unknown-verb"),
    pytest.param({}, {"args": "x"}, 7, id="args-not-object"),
])
def test_errors_before_the_config_is_accepted_carry_the_request_version(
        version: str, env: dict[str, str], conf: dict[str, Any], code: int) -> None:
    body = error({**ENV, **env}, json.dumps({**CONF, **conf, "cniVersion": version}).encode())
    assert (body["cniVersion"], body["code"]) == (version, code), body


def test_check_on_0_3_1_answers_in_0_3_1() -> None:
    body = error({**ENV, "CNI_COMMAND": "CHECK"}, json.dumps({**CONF, "cniVersion": "0.3.1"}).encode())
    assert (body["cniVersion"], body["code"]) == ("0.3.1", 1)


def test_unparsable_or_unsupported_version_answers_in_the_current_version() -> None:
    assert error({**ENV, "CNI_IFNAME": ""}, b"{not json")["cniVersion"] == "1.1.0"
    assert error(ENV, json.dumps({**CONF, "cniVersion": "0.2.0"}).encode())["cniVersion"] == "1.1.0"


@pytest.mark.parametrize(("conf", "field"), [
    pytest.param({"name": 7}, "'name' must be a string", id="name-int"),
    pytest.param({"name": ["x"]}, "'name' must be a string", id="name-list"),
    pytest.param({"args": "x"}, "'args' must be an object", id="args-string"),
    pytest.param({"args": []}, "'args' must be an object", id="args-list"),
    pytest.param({"prevResult": {"ips": "x"}}, "prevResult", id="prev-ips-string"),
    pytest.param({"prevResult": "x"}, "prevResult", id="prev-string"),
    pytest.param({"prevResult": {"interfaces": [1]}}, "prevResult", id="prev-interfaces-ints"),
])
@pytest.mark.parametrize("verb", ["ADD", "CHECK"])
def test_wrong_shapes_are_code_7_naming_the_field(conf: dict[str, Any], field: str, verb: str) -> None:
    calls: list[str] = []
    handlers = {verb: lambda req: calls.append(req.command)}
    rc, out = invoke({**ENV, "CNI_COMMAND": verb}, json.dumps({**CONF, **conf}).encode(), handlers=handlers)
    body = json.loads(out)
    assert rc == 1 and body["code"] == 7 and field in body["msg"], body
    assert calls == [], "the handler ran although the config was refused"


def test_del_tolerates_a_malformed_prev_result() -> None:
    """DEL must not fail on what ADD may have left unparsed (spec: DEL should not fail)."""
    rc, out = invoke({**ENV, "CNI_COMMAND": "DEL"}, json.dumps({**CONF, "prevResult": {"ips": "x"}}).encode())
    assert rc == 0, out


def test_log_file_is_written_after_an_accepted_call_only(tmp_path: Any) -> None:
    log = tmp_path / "cni.log"
    conf = {**CONF, "logFile": str(log), "logLevel": "debug"}

    def refuse(req: skel.Request) -> None:
        skel.log.info("about to refuse")
        raise CNIError(7, "field 'mtu' must be an integer in 68..65535")

    def work(req: skel.Request) -> None:
        skel.log.info("did the work")

    assert invoke(ENV, json.dumps(conf).encode(), handlers={"ADD": refuse})[0] == 1
    assert not log.exists(), "a refused call created the log file"
    assert invoke(ENV, json.dumps(conf).encode(), handlers={"ADD": work}, argv=["--dry-run"])[0] == 0
    assert not log.exists(), "a dry run wrote the log file"
    assert invoke(ENV, json.dumps(conf).encode(), handlers={"ADD": work})[0] == 0
    assert "did the work" in log.read_text() and (log.stat().st_mode & 0o777) == 0o600


def test_log_file_symlink_is_not_followed(tmp_path: Any) -> None:
    target = tmp_path / "target"
    target.write_text("")
    link = tmp_path / "cni.log"
    link.symlink_to(target)
    conf = {**CONF, "logFile": str(link), "logLevel": "debug"}
    rc, _ = invoke(ENV, json.dumps(conf).encode(), handlers={"ADD": lambda req: skel.log.info("x")})
    assert rc == 0 and target.read_text() == ""


def test_mtu_zero_means_unset_as_in_the_reference() -> None:
    from cniplug.plugins import common

    assert common.get_mtu({}) == 0 and common.get_mtu({"mtu": 0}) == 0 and common.get_mtu({"mtu": 1400}) == 1400
    for bad in (67, 65536, -1, "1500", True, 1.5):
        with pytest.raises(CNIError) as e:
            common.get_mtu({"mtu": bad})
        assert e.value.code == 7 and repr(bad) in e.value.msg


def test_log_file_has_one_structured_record_per_call(tmp_path: Any) -> None:
    """Issue #14 item 6: JSON Lines, the call's record last, with the script it ran and its outcome."""
    log = tmp_path / "cni.log"
    conf = {**CONF, "logFile": str(log)}

    def work(req: skel.Request) -> None:
        skel.log.warning("a warning")
        skel.record_script("#!/bin/bash\nip link add x type veth\n")

    def fail(req: skel.Request) -> None:
        skel.record_script("#!/bin/bash\nip link add y type veth\n", rolled_back=True)
        raise CNIError(11, "try again")

    assert invoke(ENV, json.dumps(conf).encode(), handlers={"ADD": work})[0] == 0
    assert invoke({**ENV, "CNI_COMMAND": "DEL"}, json.dumps(conf).encode(), handlers={"DEL": fail})[0] == 1
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r.get("event", r["level"]) for r in records] == ["WARNING", "call", "call"]
    ok, failed = records[1], records[2]
    assert ok["verb"] == "ADD" and ok["outcome"] == "ok" and ok["containerId"] == ENV["CNI_CONTAINERID"]
    assert ok["ifName"] == ENV["CNI_IFNAME"] and ok["network"] == CONF["name"] and ok["plugin"] == CONF["type"]
    assert ok["script"].endswith("ip link add x type veth\n") and ok["rolledBack"] is False
    assert isinstance(ok["durationMs"], float) and ok["time"].endswith("Z")
    assert failed["outcome"] == "error" and failed["error"] == {"code": 11, "msg": "try again"}
    assert "ip link add y" in failed["script"] and failed["rolledBack"] is True
    assert "ip link add x" not in failed["script"], "a call's record holds only its own script"


def test_log_file_that_is_a_fifo_nobody_reads_does_not_hang_the_call(tmp_path: Any) -> None:
    """A log shipper's FIFO whose reader is down: opening it for writing would block the call (and the runtime's
    pod start) forever. The record is lost with a line on stderr; the call answers."""
    import signal

    fifo = tmp_path / "cni.log"
    os.mkfifo(fifo)
    conf = {**CONF, "logFile": str(fifo)}
    old = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the call blocked on the logFile"))
    signal.alarm(5)
    try:
        rc, _ = invoke(ENV, json.dumps(conf).encode(), handlers={"ADD": lambda req: skel.log.info("x")})
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert rc == 0
