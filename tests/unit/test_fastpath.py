"""The helper wire format and the one exec seam (runner.execute), without root."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pytest_subprocess import FakeProcess
from pytest_subprocess.fake_popen import FakePopen

from cniplug import fastpath, runner


def test_request_round_trip_keeps_bytes_that_are_not_utf8() -> None:
    env = {b"CNI_COMMAND": b"ADD", b"CNI_ARGS": b"K8S_POD_NAME=a=b;X=\xff", b"EMPTY": b""}
    stdin = b'{"cniVersion":"1.0.0"}\x00 trailing bytes \xfe'
    data = fastpath.encode_request("cniplug-bridge", [b"--dry-run", b"", b"two words"], env, stdin)
    plugin, argv, environ, body = fastpath.decode_request(data)
    assert (plugin, argv, body) == ("cniplug-bridge", ["--dry-run", "", "two words"], stdin)
    assert {os.fsencode(k): os.fsencode(v) for k, v in environ.items()} == env


def test_answer_round_trip_and_negative_status() -> None:
    data = fastpath.encode_answer(-9, b'{"code": 11}\n', b"a log line\n", b"cpu_ms=1.00")
    assert fastpath.decode_answer(data) == (-9, b'{"code": 11}\n', b"cpu_ms=1.00", b"a log line\n")


@pytest.mark.parametrize("cut", [0, 3, 6, 10])
def test_a_cut_answer_is_an_error_not_a_result(cut: int) -> None:
    data = fastpath.encode_answer(0, b"x" * 20, b"", b"stats")
    with pytest.raises(ValueError):
        fastpath.decode_answer(data[:cut])


def test_a_request_from_another_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="restart the helper"):
        fastpath.decode_request(b'\x00\x00\x00\x10{"plugin": "x"}')


@pytest.mark.parametrize("mode", [0o660, 0o606, 0o777])
def test_socket_others_can_reach_is_not_used(tmp_path: Path, mode: int) -> None:
    import socket

    path = str(tmp_path / "h.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen(1)
        os.chmod(path, mode)
        assert fastpath.helper_socket(path) is None


def test_a_regular_file_is_not_a_helper(tmp_path: Path) -> None:
    path = tmp_path / "h.sock"
    path.write_text("")
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert fastpath.helper_socket(str(path)) is None


def test_execute_passes_stdin_and_captures_everything(fp: FakeProcess) -> None:
    seen: list[bytes] = []
    ip = runner.which("ip")
    fp.register([ip, "-batch", "-"], stdout="out", stderr="Command failed -:2\n", returncode=1,
                stdin_callable=lambda data: seen.append(data))
    result = runner.execute(["ip", "-batch", "-"], "link set a up\nlink set b up\n")
    assert seen == [b"link set a up\nlink set b up\n"]
    assert (result.rc, result.stdout, result.stderr) == (1, "out", "Command failed -:2\n")
    assert result.argv == ["ip", "-batch", "-"]  # the word the template wrote, not the resolved path


def test_execute_runs_with_a_fixed_locale_and_a_full_path(fp: FakeProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATH", raising=False)  # a runtime may exec us with CNI_* only
    monkeypatch.setenv("LC_ALL", "zh_CN.UTF-8")
    env_seen: list[dict[str, str]] = []
    ip = runner.which("ip")

    def spy(process: FakePopen) -> None:
        env_seen.append(dict((process.kwargs or {})["env"]))

    fp.register([ip, "-V"], callback=spy)
    assert runner.execute(["ip", "-V"]).rc == 0
    assert env_seen[0]["LC_ALL"] == "C" and "/usr/sbin" in env_seen[0]["PATH"].split(":")


def test_execute_reports_a_program_that_cannot_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = tmp_path / "ip"
    tool.write_text("not a program")
    tool.chmod(0o755)  # executable bit, but no interpreter line: exec fails with ENOEXEC
    monkeypatch.setenv("PATH", str(tmp_path))
    result = runner.execute(["ip", "link"])
    assert result.rc == 126 and "Exec format error" in result.stderr
