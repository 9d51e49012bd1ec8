"""The standalone IPAM plugins cniplug-host-local and cniplug-static (usable by any CNI plugin)."""

from __future__ import annotations

from typing import Any

from cniplug import skel
from cniplug.ipam import host_local, static
from cniplug.skel import Request


def _host_local_add(req: Request) -> dict[str, Any] | str:
    if req.dry_run:
        return host_local.dry_run_script(req)
    return host_local.add(req)


def _host_local_del(req: Request) -> str | None:
    if req.dry_run:
        return host_local.dry_run_script(req)
    host_local.delete(req)
    return None


def host_local_handlers() -> dict[str, skel.Handler]:
    return {"ADD": _host_local_add, "DEL": _host_local_del, "CHECK": host_local.check,
            "GC": host_local.gc, "STATUS": host_local.status}


def host_local_main() -> None:
    skel.main(host_local_handlers(), "cniplug host-local IPAM plugin")


def _static_add(req: Request) -> dict[str, Any] | str:
    result = static.add(req)
    if req.dry_run:
        addrs = ", ".join(ip["address"] for ip in result["ips"])
        return f"#!/bin/bash\n# cniplug-static: no state to change; ADD answers with {addrs}\n"
    return result


def static_handlers() -> dict[str, skel.Handler]:
    return {"ADD": _static_add, "DEL": static.delete, "CHECK": static.check, "GC": static.gc, "STATUS": static.status}


def static_main() -> None:
    skel.main(static_handlers(), "cniplug static IPAM plugin")
