"""`cniplug node` refuses bad options with one line naming the option (exit 2), before touching anything."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(("args", "named"), [
    (["--cluster-cidr", "bogus"], "--cluster-cidr 'bogus'"),
    (["--cluster-cidr", "fd00::/64"], "--cluster-cidr"),
    (["--etcd-endpoints", "http://x:1 --insecure-skip-tls-verify"], "etcd endpoints"),
    (["--name", "A;reboot"], "node name 'A;reboot'"),
    (["--address", "10.0.0.1\nx"], "node address"),
    (["--route-proto", "2"], "--route-proto 2"),
    (["--bridge", "a/b"], "--bridge 'a/b'"),
    (["--cni-conf-dir", "relative"], "--cni-conf-dir 'relative'"),
    (["--interval", "0"], "--interval 0"),
    (["--pod-prefix-len", "8"], "does not fit"),
    (["--lease-ttl", "1"], "lease TTL 1"),
    (["--etcd-prefix", "x y"], "etcd prefix"),
])
def test_bad_option_is_one_line_naming_it(args: list[str], named: str) -> None:
    done = subprocess.run([sys.executable, "-m", "cniplug", "node", "--dry-run", "--name", "n1", *args],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert named in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
