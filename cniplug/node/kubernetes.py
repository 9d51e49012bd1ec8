"""The node agent's view of a Kubernetes cluster: the Node objects, through the API with the official client.

Each node's pod CIDRs come from `spec.podCIDRs` (Kubernetes >= 1.16; the older single `spec.podCIDR` when
that list is absent), as the node IPAM controller (kube-controller-manager --allocate-node-cidrs) assigns
them; its address is the first `status.addresses` entry of type InternalIP. A node without a pod CIDR yet
(just registered, or a cluster that does not allocate them) has `pod_cidrs == ()`: the agent writes no
network config for it (the kubelet keeps the node NotReady: "cni config uninitialized") and routes
nothing to it.

Inside a pod the client uses the service account (in-cluster config: KUBERNETES_SERVICE_HOST, the token
and CA under /var/run/secrets/kubernetes.io/serviceaccount); elsewhere a kubeconfig file. The RBAC the
DaemonSet grants is get/list/watch on nodes (contrib/kubernetes/cniplug.yaml).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from typing import Any

from cniplug.node.model import NodeInfo, SourceError


class KubernetesError(SourceError):
    """The API could not be reached or refused (message names the server and the reason)."""


def node_info(node: Any) -> NodeInfo:
    """A V1Node (the client's model) -> NodeInfo. CIDRs and the address are checked to be what they claim;
    a malformed one is dropped (the API validates them too, but this is input)."""
    spec, status = node.spec, node.status
    cidrs = list(getattr(spec, "pod_cidrs", None) or [])  # spec.podCIDRs
    if not cidrs and getattr(spec, "pod_cidr", None):
        cidrs = [spec.pod_cidr]
    good = []
    for cidr in cidrs:
        try:
            good.append(str(ipaddress.ip_network(cidr, strict=True)))
        except (ValueError, TypeError):
            continue
    address = ""
    for entry in (getattr(status, "addresses", None) or []):
        if entry.type == "InternalIP":
            try:
                address = str(ipaddress.ip_address(entry.address))
                break
            except ValueError:
                continue
    return NodeInfo(name=node.metadata.name, pod_cidrs=tuple(good), address=address)


class KubernetesSource:
    """Source of NodeInfo from the Kubernetes API (model.Source)."""

    def __init__(self, kubeconfig: str = "", api: Any = None) -> None:
        """`api`: a kubernetes.client.CoreV1Api to use (tests); else in-cluster config when running in a
        pod, else `kubeconfig` (or the client's default ~/.kube/config). KubernetesError if neither loads."""
        from kubernetes import client, config

        if api is None:
            try:
                if kubeconfig:
                    config.load_kube_config(config_file=kubeconfig)
                else:
                    try:
                        config.load_incluster_config()
                    except config.ConfigException:
                        config.load_kube_config()
            except (config.ConfigException, OSError) as err:
                raise KubernetesError(f"no Kubernetes API configuration: {err}") from None
            except Exception as err:  # noqa: BLE001 -- junk in the file: YAML, type or decoding errors
                where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
                first = (str(err).strip().splitlines() or [""])[0]
                raise KubernetesError(f"no Kubernetes API configuration: {where} is not a kubeconfig file "
                                      f"({type(err).__name__}: {first})") from None
            api = client.CoreV1Api()
        self.api = api
        self.resource_version = ""

    def nodes(self) -> list[NodeInfo]:
        """Every Node, sorted by name. KubernetesError when the API cannot be listed."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            found = self.api.list_node(timeout_seconds=30)
        except ApiException as err:
            raise KubernetesError(f"listing nodes: {err.status} {err.reason}") from None
        except (HTTPError, OSError) as err:
            raise KubernetesError(f"listing nodes: {err}") from None
        self.resource_version = found.metadata.resource_version or ""
        return sorted((node_info(n) for n in found.items), key=lambda n: n.name)

    def node(self, name: str) -> NodeInfo | None:
        """This node's own object (None when it does not exist). KubernetesError otherwise."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return node_info(self.api.read_node(name))
        except ApiException as err:
            if err.status == 404:
                return None
            raise KubernetesError(f"reading node {name}: {err.status} {err.reason}") from None
        except (HTTPError, OSError) as err:
            raise KubernetesError(f"reading node {name}: {err}") from None

    def changes(self, timeout: int = 60) -> Iterator[str]:
        """Names of nodes that change (added, modified, deleted) from the last listing on, for up to
        `timeout` seconds: the agent reconciles on each, and on a timer anyway (level-triggered: a missed
        event costs a delay, not a wrong state). Ends quietly when the watch expires or breaks."""
        from kubernetes import watch

        w = watch.Watch()
        try:
            for event in w.stream(self.api.list_node, resource_version=self.resource_version or None,
                                  timeout_seconds=timeout):
                obj = event.get("object")
                name = getattr(getattr(obj, "metadata", None), "name", "")
                if name:
                    yield name
        except Exception:  # 410 Gone, a dropped connection: the caller lists again
            return
        finally:
            w.stop()

    def close(self) -> None:
        client = getattr(self.api, "api_client", None)
        if client is not None:
            client.close()
