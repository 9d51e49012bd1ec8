"""What an installed plugin executable runs first: hand the call to the warm helper, else run it here.

Kept tiny (only the standard library's socket, os, sys, json) because it is on every plugin call.
The helper (`cniplug helper`, see helper.py) is never required: without it, or if it cannot be
reached, the plugin runs standalone in this process, with the same result.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import sys
from importlib import import_module

SOCKET = "/run/cniplug/helper.sock"
HEADER = struct.Struct("!I")


def send_msg(sock: socket.socket, body: dict[str, object]) -> None:
    data = json.dumps(body).encode()
    sock.sendall(HEADER.pack(len(data)) + data)


def recv_msg(sock: socket.socket) -> dict[str, object] | None:
    head = _recv_exact(sock, HEADER.size)
    if head is None:
        return None
    data = _recv_exact(sock, HEADER.unpack(head)[0])
    return json.loads(data) if data is not None else None


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def helper_socket(path: str = SOCKET) -> socket.socket | None:
    """A connection to the helper if one is listening on a root-owned socket, else None."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o077 or os.geteuid() != 0:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def main(plugin: str, module: str) -> None:
    sock = None if os.environ.get("CNIPLUG_NO_HELPER") else helper_socket(os.environ.get("CNIPLUG_HELPER_SOCKET",
                                                                                        SOCKET))
    if sock is not None:
        with sock:
            stdin = sys.stdin.buffer.read(1 << 20 | 1)
            send_msg(sock, {"plugin": plugin, "argv": sys.argv[1:], "env": dict(os.environ),
                            "stdin": stdin.decode("latin-1")})
            answer = recv_msg(sock)
        if answer is not None:
            sys.stderr.write(str(answer.get("stderr", "")))
            sys.stdout.write(str(answer.get("stdout", "")))
            sys.stdout.flush()
            code = answer.get("rc", 1)
            sys.exit(code if isinstance(code, int) else 1)
        # The helper went away mid-call. Running again here is safe for every verb but ADD, whose
        # half-done work the runtime cleans up with DEL after an error.
        if os.environ.get("CNI_COMMAND") == "ADD":
            sys.stdout.write(json.dumps({"cniVersion": "1.1.0", "code": 11, "msg": "cniplug helper died during ADD",
                                         "details": "retry; the runtime's DEL cleans up what was done"}) + "\n")
            sys.exit(1)
        import io

        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    import_module(module).main()
