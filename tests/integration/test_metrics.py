"""The helper's Prometheus metrics (issue #14 item 6): calls by plugin, verb and outcome, their latency,
and host-local addresses used and free per network, scraped over HTTP on a loopback port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.root

SUBNET = "10.238.50.0/28"  # 13 allocatable addresses (.1 is the gateway)


@pytest.fixture
def helper(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A helper started by hand with --metrics on a port the kernel picks; (socket, metrics URL)."""
    sock = f"/run/cniplug/tmx-helper-{os.getpid()}.sock"
    proc = subprocess.Popen([sys.executable, "-m", "cniplug", "helper", "--socket", sock, "--metrics", "127.0.0.1:0"],
                            stderr=subprocess.PIPE, text=True)
    try:
        url = ""
        for _ in range(200):
            if os.path.exists(sock + ".json"):
                url = json.loads(Path(sock + ".json").read_text()).get("metrics", "")
                if url:
                    break
            time.sleep(0.05)
        assert url, "the helper reports no metrics URL"
        yield sock, url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for suffix in ("", ".json"):
            Path(sock + suffix).unlink(missing_ok=True)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_calls_latency_and_addresses(helper: tuple[str, str], tmp_path: Path, make_netns: Callable[..., str],
                                     cleanup_links: list[str]) -> None:
    sock, url = helper
    cleanup_links.append("tmxbr0")
    conf = {"cniVersion": "1.0.0", "name": "tmx-net", "type": "cniplug-bridge", "bridge": "tmxbr0",
            "isGateway": True, "ipam": {"type": "cniplug-host-local", "subnet": SUBNET,
                                        "dataDir": str(tmp_path / "ipam")}}
    bin_dir = tmp_path / "bin"
    subprocess.run([sys.executable, "-m", "cniplug", "install", "--bin-dir", str(bin_dir), "--no-auto-helper"],
                   check=True, capture_output=True)

    def call(verb: str, cid: str, netns: str, config: dict[str, object]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(bin_dir / "cniplug-bridge")], input=json.dumps(config), text=True,
                              capture_output=True, timeout=60,
                              env={"CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_NETNS": netns,
                                   "CNI_IFNAME": "eth0", "CNI_PATH": str(bin_dir), "CNIPLUG_HELPER_SOCKET": sock,
                                   "CNIPLUG_HELPER_STATS": "1"})

    netns = [make_netns(f"mx{i}", prefix="tmx-") for i in range(2)]
    try:
        for i, ns in enumerate(netns):
            added = call("ADD", f"tmx-c{i}", ns, conf)
            assert added.returncode == 0 and "cniplug-helper-stats" in added.stderr, added.stdout + added.stderr
        bad = call("ADD", "tmx-bad", netns[0], {**conf, "mtu": 5})
        assert bad.returncode == 1
        time.sleep(0.5)  # the children send their records after answering
        samples = scrape(url)
        assert value(samples, "cniplug_helper_calls_total", plugin="cniplug-bridge", verb="ADD", outcome="ok") == 2
        assert value(samples, "cniplug_helper_calls_total", plugin="cniplug-bridge", verb="ADD", outcome="error") == 1
        assert value(samples, "cniplug_helper_call_duration_seconds_count", plugin="cniplug-bridge", verb="ADD") == 3
        assert value(samples, "cniplug_helper_call_duration_seconds_sum", plugin="cniplug-bridge", verb="ADD") > 0
        assert value(samples, "cniplug_ipam_addresses", network="tmx-net", family="ipv4", state="used") == 2
        assert value(samples, "cniplug_ipam_addresses", network="tmx-net", family="ipv4", state="free") == 11
        declined = subprocess.run(["unshare", "-m", str(bin_dir / "cniplug-bridge")], input="", text=True,
                                  capture_output=True, env={"CNI_COMMAND": "VERSION", "CNIPLUG_HELPER_SOCKET": sock})
        assert declined.returncode == 0
    finally:
        for i, ns in enumerate(netns):
            call("DEL", f"tmx-c{i}", ns, conf)
    time.sleep(0.5)
    samples = scrape(url)
    assert value(samples, "cniplug_helper_calls_total", plugin="cniplug-bridge", verb="DEL", outcome="ok") == 2
    assert value(samples, "cniplug_ipam_addresses", network="tmx-net", family="ipv4", state="used") == 0
    assert value(samples, "cniplug_ipam_addresses", network="tmx-net", family="ipv4", state="free") == 13
    assert value(samples, "cniplug_helper_calls_total", plugin="", verb="", outcome="declined") == 1


def test_metrics_only_on_loopback() -> None:
    proc = subprocess.run([sys.executable, "-m", "cniplug", "helper", "--socket", "/run/cniplug/tmx-no.sock",
                           "--metrics", "0.0.0.0:9217", "--idle-exit", "1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--metrics '0.0.0.0:9217': expected LOOPBACK-ADDRESS:PORT" in proc.stderr
    assert not os.path.exists("/run/cniplug/tmx-no.sock")  # refused before it listens
    proc = subprocess.run([sys.executable, "-m", "cniplug", "install", "--bin-dir", "/nonexistent/tmx",
                           "--helper-metrics", "192.0.2.9:1"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--helper-metrics '192.0.2.9:1'" in proc.stderr
    assert not os.path.exists("/nonexistent/tmx")


def test_metrics_come_up_once_the_port_is_free(tmp_path: Path) -> None:
    """After an upgrade the new install's first call starts a helper while the old one, not yet gone, still holds
    the --helper-metrics port: the new helper serves its metrics as soon as the port is free, not never."""
    import socket

    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    sock = f"/run/cniplug/qa2-mx-{os.getpid()}.sock"
    proc = subprocess.Popen([sys.executable, "-m", "cniplug", "helper", "--socket", sock, "--metrics",
                             f"127.0.0.1:{port}"], stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            if os.path.exists(sock + ".json"):
                break
            time.sleep(0.05)
        time.sleep(0.5)
        holder.close()  # the old helper is gone
        url = ""
        for _ in range(100):
            url = json.loads(Path(sock + ".json").read_text()).get("metrics", "")
            if url:
                break
            time.sleep(0.05)
        assert url == f"http://127.0.0.1:{port}/metrics"
        bin_dir = tmp_path / "bin"
        subprocess.run([sys.executable, "-m", "cniplug", "install", "--bin-dir", str(bin_dir), "--no-auto-helper"],
                       check=True, capture_output=True)
        call = subprocess.run([str(bin_dir / "cniplug-ptp")], input="", text=True, capture_output=True,
                              env={"CNI_COMMAND": "VERSION", "CNIPLUG_HELPER_SOCKET": sock})
        assert call.returncode == 0, call.stderr
        for _ in range(50):
            if value(scrape(url), "cniplug_helper_calls_total", plugin="cniplug-ptp", verb="VERSION", outcome="ok"):
                break
            time.sleep(0.1)
        assert value(scrape(url), "cniplug_helper_calls_total", plugin="cniplug-ptp", verb="VERSION", outcome="ok") == 1
    finally:
        holder.close()
        proc.terminate()
        proc.wait(timeout=10)
        for suffix in ("", ".json"):
            Path(sock + suffix).unlink(missing_ok=True)
