"""A bounded TCP flow for the bandwidth tests: run each end inside a namespace with `ip netns exec`.

    python tbw_flow.py recv ADDR PORT SECONDS      -> prints JSON {"samples": [[t, bytes], ...]}
    python tbw_flow.py send ADDR PORT BITS_PER_S SECONDS

The sender is paced (a token bucket in the application, 64 KiB writes) at BITS_PER_S, so it never sends
more than that whatever the link allows: run it at twice the shaped rate and an unshaped link shows twice
the rate, a shaped one the shaped rate. The receiver notes the bytes received so far every 50 ms; the
test computes the rate over a window that leaves out the first second (connection start, the bucket's
initial burst) and the tail.
"""

from __future__ import annotations

import json
import socket
import sys
import time


def receive(addr: str, port: int, seconds: float) -> None:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((addr, port))
        server.listen(1)
        print("ready", file=sys.stderr, flush=True)
        server.settimeout(30)
        conn, _ = server.accept()
        with conn:
            conn.settimeout(0.05)
            start = time.monotonic()
            total = 0
            samples = [[0.0, 0]]
            last = start
            while True:
                try:
                    data = conn.recv(1 << 16)
                    if not data:
                        break
                    total += len(data)
                except TimeoutError:
                    pass
                now = time.monotonic()
                if now - last >= 0.05:
                    samples.append([round(now - start, 4), total])
                    last = now
                if now - start > seconds + 10:
                    break
            samples.append([round(time.monotonic() - start, 4), total])
    print(json.dumps({"samples": samples}))


def send(addr: str, port: int, bits_per_s: float, seconds: float) -> None:
    chunk = b"\0" * (1 << 16)
    rate = bits_per_s / 8  # bytes per second
    deadline = time.monotonic() + 10
    while True:
        try:
            sock = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    with sock:
        start = time.monotonic()
        sent = 0
        while (now := time.monotonic()) - start < seconds:
            allowed = rate * (now - start) - sent
            if allowed < len(chunk):
                time.sleep(min(0.01, (len(chunk) - allowed) / rate))
                continue
            sock.sendall(chunk)
            sent += len(chunk)


if __name__ == "__main__":
    if sys.argv[1] == "recv":
        receive(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        send(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
