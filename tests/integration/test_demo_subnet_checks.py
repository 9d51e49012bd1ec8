"""`cniplug demo` next to what an earlier demo left (`--keep`): its subnet is in use on the host, whatever the
link holding it is named. Names start with `qa3`, addresses come from 10.228.0.0/16."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import sh

pytestmark = pytest.mark.root


def test_a_subnet_on_a_link_named_like_the_demo_is_refused() -> None:
    """A kept demo's bridge (`qa3h1234br`) holds the subnet: a second demo with the same --prefix and --subnet
    must refuse it up front, not make a second bridge in the same subnet and fail its ping."""
    subprocess.run(["ip", "link", "add", "qa3h1234br", "type", "veth", "peer", "name", "qa3h1234pr"], check=True)
    try:
        sh("ip", "addr", "add", "10.228.28.1/24", "dev", "qa3h1234br")
        sh("ip", "link", "set", "qa3h1234br", "up")
        proc = subprocess.run([sys.executable, "-m", "cniplug", "demo", "--prefix", "qa3h", "--subnet",
                               "10.228.28.0/24", "--outside", "10.228.29.0/24"], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 1 and "--subnet 10.228.28.0/24 is in use on this host" in proc.stderr, \
            proc.stdout + proc.stderr
        assert len(proc.stderr.splitlines()) == 1 and "demo" not in proc.stdout
    finally:
        subprocess.run(["ip", "link", "delete", "qa3h1234br"], capture_output=True)


@pytest.mark.parametrize("prefix", ["-h", "-", "网络", "é"])
def test_a_prefix_no_container_id_or_link_can_start_with_is_refused(prefix: str) -> None:
    """The demo's names (container id, namespace, links) start with --prefix: a leading '-' is not a container id
    (the plugin refused it after the demo had begun), non-ASCII letters overflow a link name (a traceback)."""
    proc = subprocess.run([sys.executable, "-m", "cniplug", "demo", f"--prefix={prefix}", "--subnet",
                           "10.228.32.0/24", "--outside", "10.228.33.0/24"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("cniplug demo: --prefix"), proc.stdout + proc.stderr
    assert proc.stdout == ""


def test_a_subnet_in_use_is_not_answered_with_the_outside_default() -> None:
    """The hint named --outside's default (198.18.0.0/24) for --subnet too: taking it, the demo then refuses
    --subnet for overlapping the default --outside."""
    proc = subprocess.run([sys.executable, "-m", "cniplug", "demo", "--prefix", "qa3j", "--subnet", "127.0.0.0/24",
                           "--outside", "10.228.35.0/24"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "--subnet 127.0.0.0/24 is in use on this host" in proc.stderr, proc.stderr
    assert "198.18.0.0/24" not in proc.stderr, proc.stderr
