"""Delegated IPAM: exec `ipam.type` from CNI_PATH the way a runtime execs a plugin (cni-notes 1.10).

Same environment (only CNI_COMMAND changed), the exact original stdin bytes, the delegate's stderr passed
through to ours, its error JSON on stdout turned into our CNIError.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from cniplug.ipam import ipam_type
from cniplug.skel import Request
from cniplug.spec import ERR_INTERNAL, ERR_INVALID_CONFIG, CNIError, to_current


def find_plugin(kind: str, paths: list[str]) -> str:
    """First regular, executable file named `kind` in the CNI_PATH directories."""
    for directory in paths:
        candidate = os.path.join(directory, kind)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(ERR_INVALID_CONFIG, f"failed to find plugin {kind!r} in path {paths}",
                   f"no executable {kind!r} in CNI_PATH={':'.join(paths)}")


def _error_from(proc: subprocess.CompletedProcess[bytes], kind: str) -> CNIError:
    out = proc.stdout.decode("utf-8", errors="replace").strip()
    err = (proc.stderr or b"").decode("utf-8", errors="replace").strip()
    try:
        body = json.loads(out) if out else None
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), int) and not isinstance(body["code"], bool):
        return CNIError(body["code"], str(body.get("msg", "")), str(body.get("details", "") or ""))
    text = out or err or f"exit status {proc.returncode}"
    return CNIError(ERR_INTERNAL, f"IPAM plugin {kind!r} failed", text)


def exec_plugin(req: Request, command: str) -> dict[str, Any] | None:
    """Run the delegate for `command`; ADD returns its result in the 1.1 shape, other verbs None."""
    kind = ipam_type(req)
    path = find_plugin(kind, req.cni_path)
    env = dict(req.env)
    env["CNI_COMMAND"] = command
    try:
        # stderr=None: the delegate writes straight to our stderr, as libcni does with plugins.
        proc = subprocess.run([path], input=req.raw_config, env=env, stdout=subprocess.PIPE, stderr=None,
                              check=False)
    except OSError as err:
        raise CNIError(ERR_INTERNAL, f"cannot execute IPAM plugin {path}", str(err)) from None
    if proc.returncode != 0:
        raise _error_from(proc, kind)
    if command != "ADD":
        return None
    try:
        parsed = json.loads(proc.stdout)
    except ValueError as err:
        raise CNIError(ERR_INTERNAL, f"IPAM plugin {kind!r} returned an invalid result", str(err)) from None
    return to_current(parsed)
