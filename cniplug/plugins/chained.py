"""Pieces the chained (meta) plugins share: firewall and tuning run after an interface plugin and read
its `prevResult` (spec 1.1.0, "Chained plugins"; cni-notes 3.7, 3.9)."""

from __future__ import annotations

import os
from typing import Any

from cniplug.skel import Request
from cniplug.spec import ERR_INVALID_CONFIG, CNIError, version_tuple


def get(config: dict[str, Any], key: str, default: Any = None) -> Any:
    """config[key] with the key matched as Go's encoding/json matches it: the exact spelling first, else
    any case-insensitive spelling (the reference plugins accept `IngressPolicy` for `ingressPolicy`).

    Input: a config object and the reference's key name; output: the value, `default` when absent.
    """
    if key in config:
        return config[key]
    lowered = key.lower()
    for k, v in config.items():
        if isinstance(k, str) and k.lower() == lowered:
            return v
    return default


def require_prev(req: Request) -> dict[str, Any]:
    """The 1.1.0-shaped prevResult; CNIError 7 when absent (the reference: "missing prevResult from earlier
    plugin", code 999; a config problem here, hence 7)."""
    prev = req.prev_result()
    if prev is None:
        raise CNIError(ERR_INVALID_CONFIG, "missing prevResult from earlier plugin",
                       f"{req.config.get('type')} is a chained plugin: list it after an interface plugin")
    return prev


def require_version(req: Request, low: tuple[int, ...], plugin: str) -> None:
    """Refuse a cniVersion below `low` with code 1 (the reference firewall supports 0.4.0 and later)."""
    from cniplug.spec import ERR_INCOMPATIBLE_VERSION

    if version_tuple(req.version or "0.1.0") < low:
        raise CNIError(ERR_INCOMPATIBLE_VERSION, f"{plugin} does not support cniVersion {req.version}",
                       f"it needs {'.'.join(map(str, low))} or later")


def absolute_dir(config: dict[str, Any], key: str, default: str) -> str:
    """A directory path from the config: absolute, no NUL or newline, no '..' component; CNIError 7 naming
    the field and value otherwise."""
    value = get(config, key, default)
    if value in ("", None):
        return default
    if (not isinstance(value, str) or not value.startswith("/") or any(c in value for c in "\0\n\r")
            or ".." in value.split("/")):
        raise CNIError(ERR_INVALID_CONFIG, f"field {key!r} must be an absolute directory path, got {value!r}")
    return os.path.normpath(value)


def attachment_ids(req: Request) -> set[tuple[str, str]] | None:
    """GC: (containerID, ifname) of cni.dev/valid-attachments (or the older cni.dev/attachments);
    None when the key is absent (then GC removes nothing). CNIError 7 naming the key for a malformed one."""
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        if key in req.config:
            value = req.config[key] or []
            if not isinstance(value, list):
                raise CNIError(ERR_INVALID_CONFIG, f"field {key!r} must be a list, got {value!r}")
            out = set()
            for entry in value:
                if not isinstance(entry, dict) or not isinstance(entry.get("containerID"), str):
                    raise CNIError(ERR_INVALID_CONFIG, f"field {key!r}: entry {entry!r} has no containerID")
                out.add((entry["containerID"], str(entry.get("ifname", ""))))
            return out
    return None
