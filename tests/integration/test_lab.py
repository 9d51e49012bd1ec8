"""`cniplug tutorial N --run` as a lab, on the real kernel: it shows what each step changed, runs the
observation steps, explains TTLs, survives --break, SIGINT and SIGKILL (+ --clean), and leaves the host as
it was. Names start with `tlb<N>-` (one prefix per test), subnets are 10.246.x.0/24.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import sh

pytestmark = pytest.mark.root

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def host_state(prefix: str, subnet: str) -> tuple[str, str, str]:
    """This test's namespaces, links and rules (by its prefix and subnet). Not ip_forward: other suites (or a
    bench beside this one) turn it on at any time; the lab's own undo of it is checked in its output."""
    netns = "\n".join(n for n in sh("ip", "netns", "list").splitlines() if n.startswith(prefix))
    links = "\n".join(n for n in sh("ip", "-o", "link").splitlines() if prefix in n)
    net = subnet.rsplit(".", 2)[0]
    rules = "\n".join(r for r in sh("iptables-save").splitlines()
                      if prefix in r or net in r or "198.18.1." in r)
    return netns, links, rules


def lab(example: int, prefix: str, subnet: str, *extra: str) -> list[str]:
    """The lab's command line; the stand-in Internet in 198.18.1.0/24, apart from the demo's."""
    return [sys.executable, "-m", "cniplug", "tutorial", str(example), "--run", "--prefix", prefix,
            "--subnet", subnet, "--outside", "198.18.1.0/24", *extra]


@pytest.fixture
def leftovers() -> Iterator[list[str]]:
    """Prefixes whose namespaces are removed after the test, whatever happened."""
    prefixes: list[str] = []
    yield prefixes
    for prefix in prefixes:
        subprocess.run([sys.executable, "-m", "cniplug", "tutorial", "--clean", "--prefix", prefix],
                       capture_output=True, cwd=REPO)
        for name in sh("ip", "netns", "list").split():
            if name.startswith(prefix):
                subprocess.run(["ip", "netns", "delete", name])


@pytest.mark.parametrize("example", [1, 2, 3])
def test_the_lab_shows_each_change_and_leaves_nothing(example: int, leftovers: list[str]) -> None:
    prefix, subnet = f"tlb{example}-", f"10.246.{2 * example}.0/24"
    leftovers.append(prefix)
    before = host_state(prefix, subnet)
    proc = subprocess.run(lab(example, prefix, subnet), capture_output=True, text=True, timeout=180, cwd=REPO)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert f"tutorial example {example}: passed" in out
    assert out.count("0% packet loss") >= 2
    assert f"+ link   {prefix}" in out or f"+ link   host: {prefix}" in out, "no per-step difference shown"
    assert "+ addr" in out and "+ route" in out
    assert "    | " in out, "the observation steps' output is not shown"
    assert "topology now:" in out and "<==veth==>" in out
    assert "# everything the lab made is gone" in out
    if example == 3:
        assert "ttl=63" in out and "TTL 63: 64 minus 1: the reply crossed 1 router(s)" in out
    if example == 2:
        assert "+ iptables nat: -A POSTROUTING" in out and "+ iptables filter: -A FORWARD" in out
        assert re.search(r"sysctl -w net.ipv4.ip_forward=[01]  -> ok", out), "forwarding not put back"
        assert "stand-in" in out
    assert host_state(prefix, subnet) == before


def test_break_forwarding_makes_the_cross_subnet_ping_fail_and_says_why(leftovers: list[str]) -> None:
    prefix, subnet = "tlb4-", "10.246.10.0/24"
    leftovers.append(prefix)
    before = host_state(prefix, subnet)
    proc = subprocess.run(lab(3, prefix, subnet, "--break", "forwarding"), capture_output=True, text=True,
                          timeout=180, cwd=REPO)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "LEFT OUT (--break forwarding)" in out
    assert "100% packet loss" in out
    assert "expected with --break forwarding: without net.ipv4.ip_forward=1" in out
    assert host_state(prefix, subnet) == before


def wait_for(proc: subprocess.Popen[str], text: str, timeout: float = 60) -> str:
    """Read the lab's output until `text` appears."""
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while text not in seen:
        assert time.monotonic() < deadline, f"{text!r} never appeared: {seen[-2000:]}"
        line = proc.stdout.readline()
        assert line or proc.poll() is None, f"the lab ended before {text!r}: {seen[-2000:]}"
        seen += line
    return seen


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_lab_undoes_everything(sig: signal.Signals, leftovers: list[str]) -> None:
    prefix, subnet = f"tlb5{sig.value % 10}-", "10.246.12.0/24"
    leftovers.append(prefix)
    before = host_state(prefix, subnet)
    proc = subprocess.Popen(lab(2, prefix, subnet), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO)
    wait_for(proc, "[25/")  # forwarding on, MASQUERADE in: the host has changed
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert "interrupted" in out and "# everything the lab made is gone" in out, out
    assert re.search(r"sysctl -w net.ipv4.ip_forward=[01]  -> ok", out), "forwarding not put back"
    assert proc.returncode == 1
    assert host_state(prefix, subnet) == before


def test_clean_removes_what_a_killed_lab_left(leftovers: list[str]) -> None:
    prefix, subnet = "tlb6-", "10.246.14.0/24"
    leftovers.append(prefix)
    before = host_state(prefix, subnet)
    proc = subprocess.Popen(lab(2, prefix, subnet), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO)
    wait_for(proc, "[26/")
    proc.kill()
    proc.wait(timeout=30)
    assert host_state(prefix, subnet) != before, "nothing to clean: the test proves nothing"
    again = subprocess.run(lab(2, prefix, subnet), capture_output=True, text=True, timeout=60, cwd=REPO)
    assert again.returncode == 1 and "--clean" in again.stderr, "a second run must refuse and point to --clean"
    clean = subprocess.run([sys.executable, "-m", "cniplug", "tutorial", "--clean", "--prefix", prefix],
                           capture_output=True, text=True, timeout=60, cwd=REPO)
    assert clean.returncode == 0 and "nothing left" in clean.stdout, clean.stdout + clean.stderr
    assert host_state(prefix, subnet) == before


def test_step_pauses_before_each_step_and_q_cleans_up(leftovers: list[str]) -> None:
    """--step on a terminal: Enter runs the next step, q stops and undoes what was done."""
    import pty

    prefix, subnet = "tlb7-", "10.246.16.0/24"
    leftovers.append(prefix)
    before = host_state(prefix, subnet)
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child becomes the lab, on the pty
        os.chdir(REPO)
        os.execv(sys.executable, lab(1, prefix, subnet, "--step"))
    seen = b""
    answers = [b"\n"] * 5 + [b"q\n"]  # the three clean-up lines, then the two namespaces; then stop
    deadline = time.monotonic() + 120
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
        while answers and seen.count(b"Enter: run it") > 6 - len(answers):
            os.write(fd, answers.pop(0))
        assert time.monotonic() < deadline, seen.decode(errors="replace")[-2000:]
    _, status = os.waitpid(pid, 0)
    text = seen.decode(errors="replace")
    assert "ip netns add tlb7-ns2  -> ok" in text
    assert "tlb7-veth1  -> ok" not in text, "a step ran after q"
    assert "interrupted" in text and "# everything the lab made is gone" in text, text[-2000:]
    assert os.waitstatus_to_exitcode(status) == 1
    assert host_state(prefix, subnet) == before


def test_clean_touches_only_what_a_lab_makes(leftovers: list[str]) -> None:
    """--clean --prefix P removes the lab's own names (and its journal's), never anything else named P..."""
    prefix = "tlb8-"
    leftovers.append(prefix)
    sh("ip", "netns", "add", "tlb8-victim")
    try:
        sh("ip", "link", "add", "tlb8-vx", "type", "veth", "peer", "name", "tlb8-vy")
        proc = subprocess.run([sys.executable, "-m", "cniplug", "tutorial", "--clean", "--prefix", prefix],
                              capture_output=True, text=True, timeout=60, cwd=REPO)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "tlb8-victim" in sh("ip", "netns", "list") and os.path.exists("/sys/class/net/tlb8-vx")
    finally:
        subprocess.run(["ip", "netns", "delete", "tlb8-victim"], capture_output=True)
        subprocess.run(["ip", "link", "delete", "tlb8-vx"], capture_output=True)


@pytest.mark.parametrize(("argv", "said"), [
    (["3", "--run", "--break", "masquerade"], "example 3 has no step that --break masquerade could leave out"),
    (["1", "--break", "route"], "--break and --step need --run"),
    (["3", "--subnet", "255.255.255.0/24"], "example 3 needs the next block"),
    (["2", "--run", "--subnet", "198.18.5.0/24", "--outside", "198.18.5.0/25"], "overlaps --subnet"),
])
def test_lab_options_that_cannot_work_are_refused(argv: list[str], said: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "cniplug", "tutorial", *argv, "--prefix", "tlb9-"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2 and said in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "tlb9-" not in sh("ip", "netns", "list")
