"""The node agent's Kubernetes source against the API's real object shapes: the official client talking
HTTP to a fixture server that answers with recorded Node objects (tests/fixtures/k8s_nodes.json: a
control-plane node, a dual-stack worker, and a node just registered, with no pod CIDR yet)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from cniplug.node.kubernetes import KubernetesError, KubernetesSource
from cniplug.node.model import NodeInfo
from tests.k8s_api import FakeAPI, kubeconfig, serve


@pytest.fixture
def api() -> Iterator[tuple[FakeAPI, Any]]:
    """A fixture API server on 127.0.0.1 and a CoreV1Api pointed at it."""
    with serve() as (fake, url):
        client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=url))
        try:
            yield fake, kubernetes.client.CoreV1Api(client)
        finally:
            client.close()


def test_nodes_from_recorded_objects(api: tuple[FakeAPI, Any]) -> None:
    fake, core = api
    source = KubernetesSource(api=core)
    assert source.nodes() == [
        NodeInfo("cp-1", ("10.244.0.0/24",), "172.18.0.2"),
        NodeInfo("worker-1", ("10.244.1.0/24", "fd00:10:244:1::/64"), "172.18.0.3"),
        NodeInfo("worker-2", (), "172.18.0.4"),  # registered, no pod CIDR yet
    ]
    assert source.resource_version == "48213"
    assert source.node("worker-1") == NodeInfo("worker-1", ("10.244.1.0/24", "fd00:10:244:1::/64"), "172.18.0.3")
    assert source.node("gone") is None


def test_old_single_pod_cidr_and_malformed_values(api: tuple[FakeAPI, Any]) -> None:
    """Before 1.16 only spec.podCIDR exists; a malformed CIDR or address is dropped, not trusted."""
    fake, core = api
    items = fake.nodes["items"]
    old = copy.deepcopy(items[0])
    del old["spec"]["podCIDRs"]
    old["metadata"]["name"] = "old-1"
    bad = copy.deepcopy(items[1])
    bad["metadata"]["name"] = "bad-1"
    bad["spec"]["podCIDRs"] = ["10.244.7.1/24", "not-a-cidr", "10.244.7.0/24"]
    bad["status"]["addresses"] = [{"type": "InternalIP", "address": "999.1.1.1"},
                                  {"type": "ExternalIP", "address": "198.51.100.7"}]
    fake.nodes["items"] = [old, bad]
    got = {n.name: n for n in KubernetesSource(api=core).nodes()}
    assert got["old-1"] == NodeInfo("old-1", ("10.244.0.0/24",), "172.18.0.2")
    assert got["bad-1"] == NodeInfo("bad-1", ("10.244.7.0/24",), "")


def test_api_errors_are_one_line(api: tuple[FakeAPI, Any]) -> None:
    fake, core = api
    fake.fail_with = 403
    with pytest.raises(KubernetesError, match="listing nodes: 403 Forbidden"):
        KubernetesSource(api=core).nodes()


def test_unreachable_api(tmp_path: Path) -> None:
    config = kubernetes.client.Configuration(host="http://127.0.0.1:9")  # discard port: nothing listens
    config.retries = 0
    client = kubernetes.client.ApiClient(config)
    try:
        with pytest.raises(KubernetesError, match="listing nodes"):
            KubernetesSource(api=kubernetes.client.CoreV1Api(client)).nodes()
    finally:
        client.close()


def test_watch_names_changed_nodes(api: tuple[FakeAPI, Any]) -> None:
    fake, core = api
    source = KubernetesSource(api=core)
    source.nodes()
    worker2 = copy.deepcopy(fake.nodes["items"][2])
    worker2["spec"]["podCIDR"] = "10.244.2.0/24"
    worker2["spec"]["podCIDRs"] = ["10.244.2.0/24"]
    fake.events = [{"type": "MODIFIED", "object": worker2},
                   {"type": "DELETED", "object": fake.nodes["items"][0]}]
    assert list(source.changes(timeout=5)) == ["worker-2", "cp-1"]
    assert any("watch=true" in r and "resourceVersion=48213" in r for r in fake.requests)


def test_no_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(KubernetesError, match="no Kubernetes API configuration"):
        KubernetesSource()



def test_kubeconfig_file(tmp_path: Path) -> None:
    """The way `cniplug node --kubeconfig FILE` reaches an API server."""
    with serve() as (_fake, url):
        source = KubernetesSource(str(kubeconfig(tmp_path / "config", url)))
        try:
            assert [n.name for n in source.nodes()] == ["cp-1", "worker-1", "worker-2"]
        finally:
            source.close()


@pytest.mark.parametrize("text", ["garbage: [\n", "- a\n- b\n", "just text\n", "\x00\xff"])
def test_a_kubeconfig_that_is_not_one_is_a_one_line_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(KubernetesError, match=f"no Kubernetes API configuration.*{path}"):
        KubernetesSource(str(path))
