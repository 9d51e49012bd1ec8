"""cniplug-host-local: the built-in host-local IPAM as a standalone plugin (usable by any CNI plugin)."""

from __future__ import annotations

from typing import Any

from cniplug import skel
from cniplug.ipam import host_local
from cniplug.skel import Request

ABOUT = "cniplug host-local IPAM plugin"


def add(req: Request) -> dict[str, Any] | str:
    return host_local.dry_run_script(req) if req.dry_run else host_local.add(req)


def delete(req: Request) -> str | None:
    if req.dry_run:
        return host_local.dry_run_script(req)
    host_local.delete(req)
    return None


def gc(req: Request) -> str | None:
    """GC; with --dry-run the script of the store changes it would make (as ADD and DEL print theirs)."""
    if req.dry_run:
        return host_local.dry_run_script(req)
    host_local.gc(req)
    return None


HANDLERS = {"ADD": add, "DEL": delete, "CHECK": host_local.check, "GC": gc, "STATUS": host_local.status}


def main() -> None:
    skel.main(HANDLERS, ABOUT)
