"""IPAM dispatch: built-in `cniplug-host-local` / `cniplug-static`, anything else exec'd from CNI_PATH."""

from __future__ import annotations

from typing import Any

from cniplug.skel import Request
from cniplug.spec import ERR_INVALID_CONFIG, CNIError

BUILTIN = ("cniplug-host-local", "cniplug-static")


def ipam_type(req: Request) -> str:
    """The config's `ipam.type`, "" when there is no ipam section.

    Raises CNIError 7 naming `ipam.type` unless it is a plugin name: a delegate is exec'd as a file
    named so in a CNI_PATH directory (cni-notes 1.10; the spec: "must not contain characters disallowed
    in file paths"), and the name is shown in the script's comments. So no '/', not '.' or '..', and only
    printable non-blank characters (no control characters, no line breaks that str.splitlines() sees).
    """
    ipam = req.config.get("ipam")
    if ipam is None or ipam == {}:
        return ""
    if not isinstance(ipam, dict):
        raise CNIError(ERR_INVALID_CONFIG, f"field 'ipam' must be an object, got {ipam!r}")
    kind = ipam.get("type")
    if not isinstance(kind, str) or not kind:
        raise CNIError(ERR_INVALID_CONFIG, f"field 'ipam.type' must be a non-empty string, got {kind!r}")
    if "/" in kind or kind in (".", "..") or not all(c.isprintable() and not c.isspace() for c in kind):
        raise CNIError(ERR_INVALID_CONFIG, f"field 'ipam.type' must be a plugin name, got {kind!r}",
                       "a file name in CNI_PATH: no '/', whitespace or control characters")
    return kind


def _module(kind: str) -> Any:
    if kind == "cniplug-host-local":
        import cniplug.ipam.host_local as host_local

        return host_local
    import cniplug.ipam.static as static

    return static


def validate(req: Request) -> None:
    """Refuse a malformed built-in IPAM config (CNIError 7 naming the field) without touching anything,
    for verbs that change the host before they call IPAM (bridge DEL). A delegated IPAM validates its
    own config when it is exec'd."""
    kind = ipam_type(req)
    if kind in BUILTIN:
        _module(kind).parse_config(req)


def run(req: Request, verb: str) -> dict[str, Any] | None:
    """Run IPAM `verb` (ADD/DEL/CHECK/GC/STATUS) for this request; ADD returns a 1.1-shaped result."""
    kind = ipam_type(req)
    if not kind:
        return None
    if kind in BUILTIN:
        mod = _module(kind)
        func = {"ADD": mod.add, "DEL": mod.delete, "CHECK": mod.check, "GC": mod.gc, "STATUS": mod.status}[verb]
        result: dict[str, Any] | None = func(req)
        return result
    import cniplug.ipam.delegate as delegate

    if req.dry_run:
        # Exec'ing a delegate would reserve addresses: a dry run must not. Show a placeholder instead.
        if verb != "ADD":
            return None
        raise CNIError(ERR_INVALID_CONFIG, f"--dry-run cannot preview delegated IPAM {kind!r}",
                       "use a built-in IPAM (cniplug-host-local, cniplug-static) to preview addresses")
    answer: dict[str, Any] | None = delegate.exec_plugin(req, verb)
    return answer
