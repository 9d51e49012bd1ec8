"""Every entry point answers bad input with a short message and exit 1 or 2, never a traceback (issue #12,
items 1 and 2): the plugins run as `python -m cniplug plugin NAME` and as installed executables, every
`cniplug` subcommand, and the helper's socket protocol.

A missing tool is made by running the command in a private mount namespace where `ip` is an empty file
that cannot be executed (root only; nothing outside that process sees it). Names `tep`, subnet 10.248.12.0/24.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cniplug import bench, cli, fastpath, helper, runner
from cniplug.lab import tutorial
from cniplug.runner import Completed
from tests.conftest import install_wrappers

PLUGINS = list(cli.PLUGINS)
ROOT = str(Path(__file__).resolve().parents[2])
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mount namespaces, netns")
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "tep1", "CNI_NETNS": "/run/netns/tep-none", "CNI_IFNAME": "eth0",
       "CNI_PATH": "/usr/lib/cni", "PATH": os.environ["PATH"], "PYTHONPATH": ROOT,
       "CNIPLUG_HELPER_SOCKET": "/nonexistent/tep-helper.sock"}


def config(plugin: str, tmp_path: Path, version: str = "1.0.0") -> bytes:
    ipam = {"type": "cniplug-host-local", "subnet": "10.248.12.0/24", "dataDir": str(tmp_path / "ipam")}
    if plugin == "cniplug-static":
        ipam = {"type": "cniplug-static", "addresses": [{"address": "10.248.12.5/24"}]}
    body: dict[str, Any] = {"cniVersion": version, "name": "tepnet", "type": plugin, "bridge": "tepbr0"}
    if plugin != "cniplug-loopback":
        body["ipam"] = ipam
    if plugin == "cniplug-portmap":  # chained: it needs the previous plugin's result (and reaches `ip` after it)
        body["prevResult"] = {"cniVersion": version, "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
                              "ips": [{"address": "10.248.12.2/24", "interface": 0}]}
        body["runtimeConfig"] = {"portMappings": [{"hostPort": 1, "containerPort": 1}]}
    return json.dumps(body).encode()


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_wrappers(tmp_path_factory.mktemp("bin"))


def plugin_argv(plugin: str, entry: str, bin_dir: Path) -> list[str]:
    return cli.plugin_argv(plugin) if entry == "module" else [str(bin_dir / plugin)]


@pytest.fixture(scope="module")
def no_ip(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """argv prefix: run the rest where `ip` is an empty non-executable file (a private mount namespace)."""
    empty = tmp_path_factory.mktemp("noip") / "ip"
    empty.write_text("")
    empty.chmod(0o644)
    script = ('for p in /usr/sbin/ip /usr/bin/ip /sbin/ip /bin/ip; do [ -e "$p" ] && mount --bind "$0" "$p"; done; '
              'exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, str(empty)]


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


# ---------------------------------------------------------------------------------------------- plugins


@pytest.mark.parametrize("entry", ["module", "installed"])
@pytest.mark.parametrize("plugin", PLUGINS)
@pytest.mark.parametrize("args,problem", [(["--dryrun"], "unknown argument '--dryrun'"),
                                          (["--dry-run", "x"], "unknown argument 'x'"),
                                          (["--lang", "fr"], "--lang: expected one of en, zh, got 'fr'"),
                                          (["--lang"], "--lang: expected one of en, zh, got ''")])
def test_plugin_refuses_bad_arguments_before_reading_stdin(plugin: str, entry: str, bin_dir: Path,
                                                          args: list[str], problem: str) -> None:
    # stdin stays open and empty: a plugin that read it before refusing would hang here.
    proc = subprocess.Popen(plugin_argv(plugin, entry, bin_dir) + args, env=ENV, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.wait(timeout=30)
        assert proc.stdout and proc.stderr
        out, err = proc.stdout.read(), proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f:
                f.close()
    lines = err.decode().splitlines()
    assert proc.returncode == 2, err
    assert out == b""
    assert len(lines) == 2 and lines[0].endswith(problem) and lines[1].startswith("usage: "), lines


@pytest.mark.parametrize("entry", ["module", "installed"])
def test_plugin_help_and_lang(entry: str, bin_dir: Path, tmp_path: Path) -> None:
    argv = plugin_argv("cniplug-loopback", entry, bin_dir)
    helped = subprocess.run(argv + ["--help"], env=ENV, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    assert helped.returncode == 0 and helped.stdout.startswith(b"usage: "), helped
    raw = config("cniplug-loopback", tmp_path)
    runs = {
        "zh flag": (["--dry-run", "--lang", "zh"], {}),
        "zh env": (["--dry-run"], {"CNIPLUG_LANG": "zh"}),
        "flag beats env": (["--dry-run", "--lang=en"], {"CNIPLUG_LANG": "zh"}),
        "default": (["--dry-run"], {}),
    }
    texts = {}
    for name, (args, extra) in runs.items():
        proc = subprocess.run(argv + args, env={**ENV, **extra}, input=raw, capture_output=True, timeout=30)
        assert proc.returncode == 0, proc
        texts[name] = proc.stdout.decode()
    assert "在容器中启用lo" in texts["zh flag"] and "在容器中启用lo" in texts["zh env"]
    assert "Bring lo up in the container" in texts["flag beats env"] == texts["default"]


def test_unknown_plugin_name_is_one_line(tmp_path: Path) -> None:
    for argv in (["plugin", "nope"], ["plugin"], ["plugin", "--dry-run"]):
        proc = subprocess.run([sys.executable, "-m", "cniplug", *argv], env=ENV, input=b"{}", capture_output=True,
                              timeout=30)
        err = proc.stderr.decode()
        assert proc.returncode == 2 and len(err.splitlines()) == 1 and err.startswith("cniplug plugin: "), err
    helped = subprocess.run([sys.executable, "-m", "cniplug", "plugin", "--help"], env=ENV, capture_output=True,
                            text=True, timeout=30)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: cniplug plugin NAME"), helped
    assert "unknown plugin 'nope'; known: cniplug-bridge" in subprocess.run(
        [sys.executable, "-m", "cniplug", "plugin", "nope"], env=ENV, capture_output=True, text=True).stderr


@needs_root
@pytest.mark.parametrize("entry", ["module", "installed"])
@pytest.mark.parametrize("plugin", PLUGINS)
def test_plugin_with_ip_missing_answers_cni_error(plugin: str, entry: str, bin_dir: Path, tmp_path: Path,
                                                  no_ip: list[str]) -> None:
    """A CNI error JSON on stdout, exit 1 (the protocol's answer); IPAM plugins need no tool and work."""
    netns = f"tep-ep{os.getpid()}"
    env = dict(ENV)
    if plugin in ("cniplug-bridge", "cniplug-ptp", "cniplug-tuning", "cniplug-firewall", "cniplug-bandwidth"):
        env["CNI_COMMAND"] = "STATUS"  # names the missing tool without touching anything
        raw = config(plugin, tmp_path, "1.1.0")
    else:
        subprocess.run(["ip", "netns", "add", netns], check=True)
        env["CNI_NETNS"] = f"/run/netns/{netns}"
        raw = config(plugin, tmp_path)
    try:
        proc = subprocess.run(no_ip + plugin_argv(plugin, entry, bin_dir), env=env, input=raw, capture_output=True,
                              timeout=60)
    finally:
        subprocess.run(["ip", "netns", "delete", netns], capture_output=True)
    no_traceback(proc.stderr.decode())
    if plugin in ("cniplug-host-local", "cniplug-static"):
        assert proc.returncode == 0 and json.loads(proc.stdout)["ips"], proc
        return
    if plugin == "cniplug-firewall":  # needs iptables, not ip: STATUS answers "available"
        assert proc.returncode == 0 and not proc.stdout, proc
        return
    body = json.loads(proc.stdout)
    assert proc.returncode == 1 and "'ip' not found" in body["msg"] or "not found: ip" in body["msg"], body


# ---------------------------------------------------------------------------------------------- subcommands


def cniplug(*argv: str, prefix: list[str] | None = None, env: dict[str, str] | None = None,
            user: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(prefix or []), sys.executable, "-m", "cniplug", *argv], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT, **(env or {})}, user=user, timeout=120,
                          stdin=subprocess.DEVNULL, cwd="/")


@pytest.mark.parametrize("argv", [["install", "--bogus"], ["demo", "--bogus"], ["helper", "--bogus"],
                                  ["bench", "--bogus"], ["tutorial", "1", "--bogus"], ["nope"],
                                  ["demo", "--subnet", "10.248.12.0/30"], ["demo", "--subnet", "tep"],
                                  ["tutorial", "4"], ["tutorial", "1", "--lang", "fr"],
                                  ["tutorial", "1", "--subnet", "2001:db8::/64"], ["bench", "--rounds", "x"],
                                  ["tutorial", "1", "--prefix", "tep/"], ["helper", "--socket", "tep.sock"]])
def test_subcommand_bad_option_is_usage_exit_2(argv: list[str]) -> None:
    proc = cniplug(*argv)
    assert proc.returncode == 2, proc
    assert proc.stderr.strip() and proc.stdout == ""
    no_traceback(proc.stderr)


def test_install_into_a_path_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    proc = cniplug("install", "--bin-dir", str(tmp_path / "file" / "bin"))
    assert proc.returncode == 1 and proc.stderr.startswith("cniplug install: Not a directory: "), proc
    assert len(proc.stderr.splitlines()) == 1
    debug = cniplug("install", "--debug", "--bin-dir", str(tmp_path / "file" / "bin"))
    assert debug.returncode == 1 and "Traceback" in debug.stderr


@needs_root
def test_demo_with_ip_not_executable_is_one_line_and_leaves_nothing(tmp_path: Path, no_ip: list[str]) -> None:
    proc = cniplug("demo", prefix=no_ip, env={"TMPDIR": str(tmp_path)})
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith("cniplug demo: command not found: ip") and len(proc.stderr.splitlines()) == 1
    assert not list(tmp_path.glob("cniplug-demo-*"))


@needs_root
def test_tutorial_run_with_ip_missing_is_one_line_and_creates_nothing(no_ip: list[str]) -> None:
    proc = cniplug("tutorial", "1", "--run", "--prefix", "tep-t1-", prefix=no_ip)
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith("cniplug tutorial: command not found: ip") and len(proc.stderr.splitlines()) == 1
    assert "tep-t1-" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@needs_root
def test_bench_and_helper_with_ip_missing(no_ip: list[str], tmp_path: Path) -> None:
    proc = cniplug("bench", "--short", prefix=no_ip)
    assert proc.returncode == 2 and proc.stderr == "cniplug bench: command not found on PATH: ip\n", proc
    # install needs no tool; the helper starts (its warm-up dry runs find no ip) and is stopped at once
    assert cniplug("install", "--bin-dir", str(tmp_path / "bin"), prefix=no_ip).returncode == 0
    sock = str(tmp_path / "h.sock")
    started = subprocess.Popen([*no_ip, sys.executable, "-m", "cniplug", "helper", "--socket", sock],
                               env={**os.environ, "PYTHONPATH": ROOT}, stderr=subprocess.PIPE, text=True)
    try:
        assert started.stderr
        line = started.stderr.readline()
        while line and "listening" not in line:
            no_traceback(line)
            line = started.stderr.readline()
        assert "listening on " + sock in line
    finally:
        started.kill()  # its waiting children die with it (PR_SET_PDEATHSIG)
        started.wait(timeout=30)


@needs_root
@pytest.mark.parametrize("argv,code,message", [
    (["demo"], 1, "cniplug demo: needs root"),
    (["helper", "--socket", "/tmp/tep-nobody.sock"], 1, "cniplug helper: must run as root"),
    (["bench", "--short"], 2, "cniplug bench needs root"),
    (["tutorial", "1", "--run", "--prefix", "tep-n-"], 1, "cniplug tutorial --run needs root"),
    (["install", "--bin-dir", "/usr/lib/tep-nobody"], 1, "cniplug install: Permission denied: /usr/lib/tep-nobody"),
    (["install", "--compile-templates"], 2, "cniplug install: --compile-templates: the cache /run/cniplug/jinja"),
])
def test_subcommands_as_a_user_that_is_not_root(argv: list[str], code: int, message: str) -> None:
    proc = cniplug(*argv, user=65534, env={"HOME": "/nonexistent"})
    assert proc.returncode == code and proc.stderr.startswith(message), proc
    assert len(proc.stderr.splitlines()) == 1


def test_bench_missing_tool_in_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert bench.main(["--short"]) == 2
    assert capsys.readouterr().err.startswith("cniplug bench: command not found on PATH: ip, iptables")


# ---------------------------------------------------------------------------------------------- tutorial --run


def test_tutorial_run_says_done_only_when_the_host_veths_are_gone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`ip netns delete` returns before the kernel removes the host end of its veths (issue #12, item 6)."""
    import threading

    sys_net = tmp_path / "net"
    sys_net.mkdir()
    monkeypatch.setattr(tutorial, "SYS_NET", str(sys_net))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    timers: list[threading.Timer] = []

    def fake_execute(argv: list[str], stdin: str | None = None) -> Completed:
        if argv[:3] == ["ip", "netns", "delete"]:  # its veth's host end lingers a little
            (sys_net / "tep-veth-out").touch()
            timers.append(threading.Timer(0.5, (sys_net / "tep-veth-out").unlink, kwargs={"missing_ok": True}))
            timers[-1].start()
        return Completed(argv=argv, rc=0, stdout="3 packets transmitted, 3 received, 0% packet loss")

    monkeypatch.setattr(runner, "execute", fake_execute)
    monkeypatch.setattr(runner, "which", lambda program: "/bin/true")
    try:
        assert tutorial.main(2, "en", "tep-", "10.248.12.0/24", True) == 0
        assert "tutorial example 2: passed" in capsys.readouterr().out
        assert not list(sys_net.iterdir())  # said "passed" only once the link was gone
    finally:
        for timer in timers:
            timer.join()


# ---------------------------------------------------------------------------------------------- helper protocol


def ask_helper(data: bytes) -> tuple[int, bytes, bytes]:
    """Hand one raw request to helper.serve_one in a forked child, as a pre-forked helper child does."""
    mine, theirs = socket.socketpair()
    caller = os.getpid()  # the peer: this test process, in the same namespaces as the child
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            mine.close()
            helper.serve_one(theirs, caller, helper.foreign_context(caller) or helper.adopt_context(caller))
        finally:
            os._exit(3)
    theirs.close()
    try:
        mine.sendall(data)
        mine.shutdown(socket.SHUT_WR)
        answer = fastpath.read_all(mine)
    finally:
        mine.close()
        os.waitpid(pid, 0)
    rc, out, _stats, err = fastpath.decode_answer(answer)
    return rc, out, err


@pytest.fixture
def quiet_stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    yield


def request(plugin: str, argv: list[str], env: dict[str, str], stdin: bytes = b"{}") -> bytes:
    return fastpath.encode_request(plugin, [a.encode() for a in argv],
                                   {k.encode(): v.encode() for k, v in env.items()}, stdin)


@pytest.mark.parametrize("case", ["unknown plugin", "not our protocol", "unknown argument", "bad lang"])
def test_helper_protocol_bad_input(case: str) -> None:
    data = {"unknown plugin": request("nope", [], ENV),
            "not our protocol": b"GET / HTTP/1.0\r\n\r\n",
            "unknown argument": request("cniplug-bridge", ["--dryrun"], ENV),
            "bad lang": request("cniplug-bridge", ["--lang", "fr"], ENV)}[case]
    rc, out, err = ask_helper(data)
    want = {"unknown plugin": "cniplug helper: unknown plugin 'nope'; known: cniplug-bridge",
            "not our protocol": "cniplug helper: not a cniplug helper request",
            "unknown argument": "cniplug bridge plugin: unknown argument '--dryrun'",
            "bad lang": "cniplug bridge plugin: --lang: expected one of en, zh, got 'fr'"}[case]
    assert (rc, out) == (2, b""), err
    assert err.decode().startswith(want), err
    no_traceback(err.decode())


def test_helper_protocol_missing_tool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(runner, "SYSTEM_PATH", "")
    env = {**ENV, "CNI_COMMAND": "STATUS", "PATH": str(tmp_path)}
    rc, out, err = ask_helper(request("cniplug-bridge", [], env, config("cniplug-bridge", tmp_path, "1.1.0")))
    assert rc == 1 and json.loads(out)["msg"] == "command 'ip' not found", (out, err)


@pytest.fixture
def public_bin_dir() -> Iterator[Path]:
    """Installed executables another user can run (pytest's tmp dirs are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="tep-bin-"))
    try:
        path.chmod(0o755)
        subprocess.run([sys.executable, "-m", "cniplug", "install", "--bin-dir", str(path), "--no-auto-helper"],
                       check=True, capture_output=True, env={**os.environ, "PYTHONPATH": ROOT})
        yield path
    finally:
        shutil.rmtree(path)


@needs_root
@pytest.mark.parametrize("entry", ["module", "installed"])
def test_bridge_add_as_a_user_that_is_not_root_is_a_cni_error(entry: str, public_bin_dir: Path,
                                                              tmp_path: Path) -> None:
    """Not a PermissionError trace: the lock under /run/cniplug cannot be opened, and the error says so."""
    bin_dir = public_bin_dir
    netns = f"tep-nr{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        proc = subprocess.run(plugin_argv("cniplug-bridge", entry, bin_dir),
                              env={**ENV, "CNI_NETNS": f"/run/netns/{netns}", "HOME": "/nonexistent"},
                              input=config("cniplug-bridge", tmp_path), capture_output=True, user=65534, timeout=60,
                              cwd="/")
    finally:
        subprocess.run(["ip", "netns", "delete", netns], capture_output=True)
    assert proc.returncode == 1, proc
    assert json.loads(proc.stdout)["msg"].startswith("cannot open the lock of bridge 'tepbr0'"), proc.stdout
    no_traceback(proc.stderr.decode())
