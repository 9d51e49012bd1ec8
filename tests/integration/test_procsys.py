"""A sysctl step carried out in-process (procsys.py) does what procps' sysctl does, in a namespace."""

from __future__ import annotations

import ctypes  # noqa: F401  (imported, as the helper does: procsys may enter namespaces on 3.11)
import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from cniplug import procsys, runner

pytestmark = pytest.mark.root

KEY = "net.ipv4.conf.lo.arp_notify"


def read(netns: str, key: str) -> str:
    return subprocess.run(["nsenter", f"--net={netns}", "sysctl", "-n", key], capture_output=True, text=True,
                          check=True).stdout.strip()


def real(argv: list[str]) -> tuple[int, str, str]:
    proc = subprocess.run(argv, capture_output=True, text=True, env={"PATH": runner.SYSTEM_PATH, "LC_ALL": "C"})
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("words", [
    [f"{KEY}=1"],
    [f"{KEY}=1", "net.ipv6.conf.lo.disable_ipv6=1"],
    ["net.ipv4.conf.tpsnone.arp_notify=1"],                     # no such key
    [f"{KEY}=abc"],                                             # refused by the kernel
    [f"{KEY}=1", "net.ipv4.conf.tpsnone.x=1", "net.ipv4.conf.lo.arp_ignore=2"],  # the rest still written
])
def test_the_same_effect_output_and_status_as_procps(make_netns: Callable[[str], str], words: list[str]) -> None:
    ours_ns, theirs_ns = make_netns("ps-ours"), make_netns("ps-theirs")
    keys = [w.split("=")[0] for w in words if "tpsnone" not in w]
    ours = procsys.carry_out(["nsenter", f"--net={ours_ns}", "sysctl", "-w", *words])
    theirs = real(["nsenter", f"--net={theirs_ns}", "sysctl", "-w", *words])
    assert ours == theirs
    assert [read(ours_ns, k) for k in keys] == [read(theirs_ns, k) for k in keys]


def test_only_the_thread_enters_the_namespace(make_netns: Callable[[str], str]) -> None:
    netns = make_netns("ps-thread")
    before, host = os.readlink("/proc/thread-self/ns/net"), read("/proc/self/ns/net", KEY)
    value = "1" if host == "0" else "0"
    assert runner.execute(["nsenter", f"--net={netns}", "sysctl", "-w", f"{KEY}={value}"]).rc == 0
    assert read(netns, KEY) == value
    assert os.readlink("/proc/thread-self/ns/net") == before and read("/proc/self/ns/net", KEY) == host


def test_a_namespace_that_is_gone_fails_as_nsenter_does() -> None:
    argv = ["nsenter", "--net=/run/netns/tps-absent", "sysctl", "-w", f"{KEY}=1"]
    ours, theirs = procsys.carry_out(argv), real(argv)
    assert ours is not None and ours[0] == theirs[0] == 1 and ours[2].startswith("nsenter: cannot open")


def test_a_one_call_process_on_python_3_11_leaves_namespaces_to_nsenter() -> None:
    code = ("import os, sys; from cniplug import procsys; "
            "print(procsys.carry_out(['nsenter', '--net=/run/netns/tps-absent', 'sysctl', '-w', 'a.b=1']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ("None" if sys.version_info < (3, 12) else
                   "(1, '', 'nsenter: cannot open /run/netns/tps-absent: No such file or directory\\n')")


def test_a_read_only_proc_sys_is_reported_as_procps_does(make_netns: Callable[[str], str]) -> None:
    """A container runtime's read-only /proc/sys (EROFS): procps says 'permission denied on key', as for EACCES
    and EPERM. Run in a mount namespace of its own, inside a network namespace: nothing can change."""
    netns = make_netns("qa2-ro")
    code = ("import json, subprocess, sys; from cniplug import procsys; argv = ['sysctl', '-w', sys.argv[1]]; "
            "p = subprocess.run(argv, capture_output=True, text=True, env={'PATH': '/usr/sbin:/usr/bin:/sbin:/bin'}); "
            "print(json.dumps([list(procsys.carry_out(argv)), [p.returncode, p.stdout, p.stderr]]))")
    script = 'mount --bind -o ro /proc/sys /proc/sys && exec "$@"'
    proc = subprocess.run(["ip", "netns", "exec", os.path.basename(netns), "unshare", "--mount", "sh", "-c", script,
                           "sh", sys.executable, "-c", code, f"{KEY}=1"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert proc.returncode == 0, proc.stderr
    ours, theirs = json.loads(proc.stdout)
    assert theirs[0] == 1 and "permission denied" in theirs[2]
    assert ours == theirs
