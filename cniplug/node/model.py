"""What the node agent knows of the cluster: one NodeInfo per node, from a Source.

A Source is where the cluster state lives: etcd (cniplug/node/etcd.py: each node holds its pod CIDR with
a lease) or the Kubernetes API (Node objects: `spec.podCIDRs`, the InternalIP address). The agent only
calls `nodes()` once per reconcile and `close()` at the end; whatever a source must do to keep this node
in the cluster (renew a lease) it does inside `nodes()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class NodeInfo:
    """One node as the cluster sees it.

    name: the node's name (Kubernetes `metadata.name`, or the agent's --name); unique in the cluster.
    pod_cidrs: the node's pod subnets as CIDR strings ("10.244.1.0/24"), () while it has none yet.
    address: the node's InternalIP, the next hop of the routes to its pods; "" if unknown.
    """

    name: str
    pod_cidrs: tuple[str, ...]
    address: str


class SourceError(Exception):
    """The cluster state could not be read now (store unreachable, refused): the agent changes nothing
    this round and tries again on the next one."""


class Source(Protocol):
    """Where the node agent reads the cluster from."""

    def nodes(self) -> list[NodeInfo]:
        """Every node of the cluster now, this node included once it is known. Raises SourceError."""
        ...

    def close(self) -> None:
        """Release what the source holds open (connections, watches); nodes() is not called after."""
        ...
