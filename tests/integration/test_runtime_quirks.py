"""What real runtimes (podman, containerd, kubelet) do to a plugin, replayed against ours."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from cniplug.cli import PLUGINS
from cniplug.plugins.bridge import lock_path
from cniplug.spec import SUPPORTED_VERSIONS
from tests.conftest import run_plugin, sh

pytestmark = pytest.mark.root
K8S = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=tcq1"


def conf(data_dir: Path, **extra: Any) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "tcq-net", "type": "cniplug-bridge", "bridge": "tcqbr0",
            "isGateway": True, "ipMasq": True,
            "ipam": {"type": "cniplug-host-local", "dataDir": str(data_dir), "subnet": "10.250.170.0/24"},
            **extra}


@pytest.fixture
def teardown(tmp_path: Path) -> Any:
    yield
    for cid in ("tcq1", "tcq2", "tcq3"):
        run_plugin("cniplug-bridge", "DEL", conf(tmp_path), container_id=cid)
    subprocess.run(["ip", "link", "delete", "tcqbr0"], capture_output=True)
    Path(lock_path("tcqbr0")).unlink(missing_ok=True)


@pytest.mark.parametrize("plugin", sorted(PLUGINS))
def test_version_as_libcni_sends_it(plugin: str) -> None:
    """libcni sends its own version and dummy values for old skels; the answer must list ours."""
    out = run_plugin(plugin, "VERSION", {"cniVersion": "1.1.0"}, netns="dummy", ifname="dummy",
                     cni_path="dummy", container_id="")
    assert out.rc == 0, out.stdout
    assert out.json == {"cniVersion": "1.1.0", "supportedVersions": SUPPORTED_VERSIONS}


def test_static_ip_and_mac_from_cni_args_with_k8s_keys(make_netns: Callable[[str], str], tmp_path: Path,
                                                      teardown: None) -> None:
    netns = make_netns("q-a")
    out = run_plugin("cniplug-bridge", "ADD", conf(tmp_path), netns=netns, container_id="tcq1",
                     args=f"{K8S};IP=10.250.170.77;MAC=02:42:0a:fa:aa:4d")
    assert out.rc == 0, out.stdout
    result = out.json
    assert result["ips"][0]["address"] == "10.250.170.77/24"
    assert result["interfaces"][2]["mac"] == "02:42:0a:fa:aa:4d"
    link = json.loads(sh("ip", "-n", "tcp-q-a", "-j", "addr", "show", "dev", "eth0"))[0]
    assert link["address"] == "02:42:0a:fa:aa:4d"
    assert "10.250.170.77" in [a["local"] for a in link["addr_info"]]


def test_unknown_cni_args_without_ignore_unknown_are_refused(make_netns: Callable[[str], str], tmp_path: Path,
                                                            teardown: None) -> None:
    netns = make_netns("q-b")
    out = run_plugin("cniplug-bridge", "ADD", conf(tmp_path), netns=netns, container_id="tcq2",
                     args="K8S_POD_NAME=web-0")
    assert out.rc == 1 and "K8S_POD_NAME" in out.json["msg"]
    assert not (tmp_path / "tcq-net").exists() or not [p for p in (tmp_path / "tcq-net").iterdir()
                                                         if p.name[0].isdigit()]


def test_capitalised_runtime_config_keys(make_netns: Callable[[str], str], tmp_path: Path, teardown: None) -> None:
    netns = make_netns("q-c")
    cfg = conf(tmp_path, runtimeConfig={"Mac": "02:42:0a:fa:aa:4e", "IPs": ["10.250.170.78/24"]})
    out = run_plugin("cniplug-bridge", "ADD", cfg, netns=netns, container_id="tcq3")
    assert out.rc == 0, out.stdout
    assert out.json["interfaces"][2]["mac"] == "02:42:0a:fa:aa:4e"
    assert out.json["ips"][0]["address"] == "10.250.170.78/24"


def test_del_twice_second_without_netns_or_prev_result(make_netns: Callable[[str], str], tmp_path: Path,
                                                      teardown: None) -> None:
    netns = make_netns("q-d")
    add = run_plugin("cniplug-bridge", "ADD", conf(tmp_path), netns=netns, container_id="tcq1", args=K8S)
    assert add.rc == 0
    first = run_plugin("cniplug-bridge", "DEL", {**conf(tmp_path), "prevResult": add.json}, netns=netns,
                       container_id="tcq1", args=K8S)
    second = run_plugin("cniplug-bridge", "DEL", conf(tmp_path), netns="", container_id="tcq1", args=K8S)
    assert (first.rc, first.stdout, second.rc, second.stdout) == (0, "", 0, "")
    assert "tcq1" not in sh("iptables-save", "-t", "nat")


def test_loopback_0_3_1_in_parallel_with_the_pod_network(make_netns: Callable[[str], str], tmp_path: Path,
                                                         teardown: None) -> None:
    netns = make_netns("q-e")
    lo = {"cniVersion": "0.3.1", "name": "cni-loopback", "type": "cniplug-loopback"}
    with ThreadPoolExecutor(2) as pool:
        f_lo = pool.submit(run_plugin, "cniplug-loopback", "ADD", lo, netns=netns, container_id="tcq2",
                           ifname="lo", args=K8S)
        f_net = pool.submit(run_plugin, "cniplug-bridge", "ADD", conf(tmp_path), netns=netns, container_id="tcq2",
                            args=K8S)
        r_lo, r_net = f_lo.result(), f_net.result()
    assert r_lo.rc == 0 and r_net.rc == 0, r_lo.stdout + r_net.stdout
    assert r_lo.json["cniVersion"] == "0.3.1" and r_lo.json["ips"][0]["version"] == "4"
    links = {link["ifname"]: link for link in json.loads(sh("ip", "-n", os.path.basename(netns), "-j", "link"))}
    assert "UP" in links["lo"]["flags"] and "UP" in links["eth0"]["flags"]
