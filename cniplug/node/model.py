"""What the node agent knows about a cluster node, wherever it comes from (etcd, Kubernetes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class NodeInfo:
    name: str
    pod_cidrs: tuple[str, ...]
    address: str  # the node's InternalIP, "" if unknown


class Source(Protocol):
    def nodes(self) -> list[NodeInfo]: ...

    def close(self) -> None: ...
