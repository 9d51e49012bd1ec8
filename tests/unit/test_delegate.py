"""Delegated IPAM: lookup in CNI_PATH, exec with same env/stdin, error mapping (the exec is faked with `fp`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pytest_subprocess import FakeProcess

from cniplug.ipam import delegate
from cniplug.skel import Request, parse_request
from cniplug.spec import ERR_INTERNAL, ERR_INVALID_CONFIG, CNIError

RESULT_100 = {"cniVersion": "1.0.0",
              "ips": [{"address": "10.250.220.2/24", "gateway": "10.250.220.1"}],
              "routes": [{"dst": "0.0.0.0/0"}], "dns": {}}


def make_plugin(directory: Path, name: str = "fake-ipam") -> str:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\nexit 1\n")
    path.chmod(0o755)
    return str(path)


def make_req(cni_path: str, ipam_type: str = "fake-ipam", command: str = "ADD") -> Request:
    # Deliberately odd spacing: the delegate must get these exact bytes, not a re-serialisation.
    raw = ('{"cniVersion": "1.0.0",  "name": "tcnihl-deleg",\n "ipam": {"type": ' + json.dumps(ipam_type)
           + ', "x": 1}}').encode()
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0",
           "CNI_PATH": cni_path, "CNI_ARGS": "IgnoreUnknown=1", "OTHER": "kept"}
    return parse_request(env, raw)


def test_add_runs_plugin_with_same_env_and_stdin(tmp_path: Path, fp: FakeProcess) -> None:
    path = make_plugin(tmp_path / "bin")
    seen: list[bytes] = []
    recorder = fp.register([path], stdout=json.dumps(RESULT_100), stdin_callable=lambda data: seen.append(data))
    req = make_req(f"{tmp_path}/empty:{tmp_path}/bin")
    result = delegate.exec_plugin(req, "ADD")
    assert result == {"cniVersion": "1.1.0", "ips": [{"address": "10.250.220.2/24", "gateway": "10.250.220.1"}],
                      "routes": [{"dst": "0.0.0.0/0"}]}
    assert seen == [req.raw_config]
    assert recorder.calls is not None and len(recorder.calls) == 1
    kwargs: dict[str, Any] = recorder.calls[0].kwargs or {}
    assert kwargs["env"] == {**req.env, "CNI_COMMAND": "ADD"}
    assert kwargs.get("stderr") is None  # passed through to our stderr


@pytest.mark.parametrize("verb", ["DEL", "CHECK", "GC", "STATUS"])
def test_other_verbs_return_none_and_override_command(tmp_path: Path, fp: FakeProcess, verb: str) -> None:
    path = make_plugin(tmp_path / "bin")
    recorder = fp.register([path], stdout="")
    assert delegate.exec_plugin(make_req(str(tmp_path / "bin"), command="ADD"), verb) is None
    assert recorder.calls is not None
    assert (recorder.calls[0].kwargs or {})["env"]["CNI_COMMAND"] == verb


def test_first_executable_in_path_wins(tmp_path: Path, fp: FakeProcess) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "fake-ipam").write_text("not executable")
    (tmp_path / "b" / "fake-ipam").mkdir(parents=True)  # a directory, not a regular file
    second = make_plugin(tmp_path / "c")
    make_plugin(tmp_path / "d")
    fp.register([second], stdout=json.dumps(RESULT_100))
    req = make_req(":".join(str(tmp_path / d) for d in "abcd"))
    assert delegate.find_plugin("fake-ipam", req.cni_path) == second
    assert delegate.exec_plugin(req, "ADD") is not None


def test_error_json_becomes_our_error(tmp_path: Path, fp: FakeProcess) -> None:
    path = make_plugin(tmp_path / "bin")
    body = {"cniVersion": "1.0.0", "code": 11, "msg": "try later", "details": "busy"}
    fp.register([path], stdout=json.dumps(body), returncode=1)
    with pytest.raises(CNIError) as err:
        delegate.exec_plugin(make_req(str(tmp_path / "bin")), "ADD")
    assert (err.value.code, err.value.msg, err.value.details) == (11, "try later", "busy")


def test_non_json_failure_is_internal(tmp_path: Path, fp: FakeProcess) -> None:
    path = make_plugin(tmp_path / "bin")
    fp.register([path], stdout="segfault or so", returncode=2)
    with pytest.raises(CNIError) as err:
        delegate.exec_plugin(make_req(str(tmp_path / "bin")), "DEL")
    assert err.value.code == ERR_INTERNAL
    assert "fake-ipam" in err.value.msg and "segfault or so" in err.value.details


def test_invalid_result_json(tmp_path: Path, fp: FakeProcess) -> None:
    path = make_plugin(tmp_path / "bin")
    fp.register([path], stdout="{not json")
    with pytest.raises(CNIError) as err:
        delegate.exec_plugin(make_req(str(tmp_path / "bin")), "ADD")
    assert err.value.code == ERR_INTERNAL


def test_not_found_names_type_and_path(tmp_path: Path, fp: FakeProcess) -> None:
    with pytest.raises(CNIError) as err:
        delegate.exec_plugin(make_req(f"{tmp_path}/x:{tmp_path}/y"), "ADD")
    assert err.value.code == ERR_INVALID_CONFIG
    assert "fake-ipam" in err.value.msg and f"{tmp_path}/x" in err.value.msg
    assert len(fp.calls) == 0


@pytest.mark.parametrize("kind", ["../bin/sh", "/usr/bin/env", "a/b", "", ".."])
def test_type_with_slash_rejected(tmp_path: Path, fp: FakeProcess, kind: str) -> None:
    with pytest.raises(CNIError) as err:
        delegate.exec_plugin(make_req(str(tmp_path), ipam_type=kind), "ADD")
    assert err.value.code == ERR_INVALID_CONFIG
    assert len(fp.calls) == 0


def test_real_exec_without_fake(tmp_path: Path, fp: FakeProcess) -> None:
    """One real exec (fp.allow_unregistered) to prove stdin bytes and env reach the child."""
    fp.allow_unregistered(True)
    plugin = tmp_path / "bin" / "echo-ipam"
    plugin.parent.mkdir()
    out = tmp_path / "seen"
    plugin.write_text(f"#!/bin/sh\ncat > {out}\necho \"$CNI_COMMAND $OTHER\" >> {out}\n"
                      f"echo '{json.dumps(RESULT_100)}'\n")
    plugin.chmod(0o755)
    req = make_req(str(tmp_path / "bin"), ipam_type="echo-ipam", command="CHECK")
    assert delegate.exec_plugin(req, "ADD") is not None
    assert out.read_bytes() == req.raw_config + b"ADD kept\n"
    assert os.access(plugin, os.X_OK)
