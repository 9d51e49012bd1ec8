"""CNI protocol types: versions, errors and result conversion between spec versions.

Results are kept internally in the 1.1.0 shape (plain dicts) and converted on output.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
CURRENT_VERSION = "1.1.0"

# Error codes (spec section "Error"), plus Go's ErrInternal for failures at run time.
ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN_LATER = 11
ERR_NOT_AVAILABLE = 50
ERR_NOT_AVAILABLE_LIMITED = 51
ERR_INTERNAL = 999


class CNIError(Exception):
    """An error the plugin reports to the runtime as CNI error JSON."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> str:
        body: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            body["details"] = self.details
        return json.dumps(body)


def version_tuple(version: str) -> tuple[int, ...]:
    """'0.4.0' -> (0, 4, 0); compare versions numerically, never as strings."""
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        raise CNIError(ERR_INCOMPATIBLE_VERSION, f"invalid cniVersion {version!r}") from None


def check_version(version: str) -> None:
    if version not in SUPPORTED_VERSIONS:
        raise CNIError(
            ERR_INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            f"config is {version!r}, plugin supports {SUPPORTED_VERSIONS}",
        )


def ip_family(cidr: str) -> int:
    return ipaddress.ip_interface(cidr).version


def to_current(result: dict[str, Any]) -> dict[str, Any]:
    """Any 0.3.x/0.4.0/1.x result (e.g. prevResult, a delegated IPAM answer) -> 1.1.0 shape."""
    if not isinstance(result, dict):
        raise CNIError(ERR_DECODE, "result must be a JSON object")
    version = result.get("cniVersion", "")
    if "ip4" in result or "ip6" in result:
        raise CNIError(ERR_INCOMPATIBLE_VERSION, f"result version {version!r} (ip4/ip6 shape) is not supported")
    out: dict[str, Any] = {"cniVersion": CURRENT_VERSION}
    interfaces = result.get("interfaces")
    if interfaces is not None:
        if not isinstance(interfaces, list) or not all(isinstance(i, dict) for i in interfaces):
            raise CNIError(ERR_DECODE, "result field 'interfaces' must be a list of objects")
        out["interfaces"] = [dict(i) for i in interfaces]
    ips = result.get("ips") or []
    if not isinstance(ips, list):
        raise CNIError(ERR_DECODE, "result field 'ips' must be a list")
    out["ips"] = []
    for entry in ips:
        if not isinstance(entry, dict) or not isinstance(entry.get("address"), str):
            raise CNIError(ERR_DECODE, f"result 'ips' entry {entry!r} has no 'address'")
        try:
            ipaddress.ip_interface(entry["address"])
        except ValueError:
            raise CNIError(ERR_DECODE, f"result 'ips' address {entry['address']!r} is not a CIDR") from None
        new = {k: v for k, v in entry.items() if k != "version"}
        out["ips"].append(new)
    routes = result.get("routes") or []
    if not isinstance(routes, list) or not all(isinstance(r, dict) and "dst" in r for r in routes):
        raise CNIError(ERR_DECODE, "result field 'routes' must be a list of objects with 'dst'")
    out["routes"] = [dict(r) for r in routes]
    dns = result.get("dns")
    if isinstance(dns, dict) and dns:
        out["dns"] = dict(dns)
    return out


_V11_INTERFACE_KEYS = ("mtu", "socketPath", "pciID")
_V11_ROUTE_KEYS = ("mtu", "advmss", "priority", "table", "scope")


def from_current(result: dict[str, Any], version: str) -> dict[str, Any]:
    """Convert a 1.1.0-shaped result to the shape of `version` (the request's cniVersion).

    Empty `interfaces`, `ips` and `routes` are left out and `dns` is always there, byte-compatible with the
    reference plugins' results (Go types with omitempty on the lists, a struct for dns).
    """
    out: dict[str, Any] = {"cniVersion": version}
    old = version_tuple(version) < (1, 0, 0)
    pre_11 = version_tuple(version) < (1, 1, 0)
    if result.get("interfaces"):
        out["interfaces"] = [
            {k: v for k, v in i.items() if not (pre_11 and k in _V11_INTERFACE_KEYS)}
            for i in result["interfaces"]
        ]
    ips = []
    for entry in result.get("ips", []):
        new = dict(entry)
        if old:
            new = {"version": str(ip_family(entry["address"])), **new}
        ips.append(new)
    if ips:  # omitted when empty, as Go's `json:"ips,omitempty"` does in the reference's results
        out["ips"] = ips
    routes = [{k: v for k, v in r.items() if not (pre_11 and k in _V11_ROUTE_KEYS)} for r in result.get("routes", [])]
    if routes:
        out["routes"] = routes
    out["dns"] = result.get("dns") or {}
    return out
