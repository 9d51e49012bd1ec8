"""cniplug-static: the built-in static IPAM as a standalone plugin (no state: ADD answers from the config)."""

from __future__ import annotations

from typing import Any

from cniplug import skel
from cniplug.ipam import static
from cniplug.skel import Request

ABOUT = "cniplug static IPAM plugin"


def add(req: Request) -> dict[str, Any] | str:
    result = static.add(req)
    if req.dry_run:
        from cniplug import i18n

        addrs = ", ".join(ip["address"] for ip in result["ips"])
        return "#!/bin/bash\n" + i18n.say("static_add", req.lang, addrs=addrs) + "\n"
    return result


HANDLERS = {"ADD": add, "DEL": static.delete, "CHECK": static.check, "GC": static.gc, "STATUS": static.status}


def main() -> None:
    skel.main(HANDLERS, ABOUT)
