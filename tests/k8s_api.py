"""A fixture Kubernetes API server for tests: the official client talks HTTP to it, and it answers with
recorded Node objects (tests/fixtures/k8s_nodes.json), watch events, or an error status."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "k8s_nodes.json"


class FakeAPI:
    """What the fixture server serves: the node list, watch events, and a status code to answer with."""

    def __init__(self) -> None:
        self.nodes: dict[str, Any] = json.loads(FIXTURE.read_text())
        self.events: list[dict[str, Any]] = []
        self.fail_with = 0
        self.requests: list[str] = []


@contextmanager
def serve(host: str = "127.0.0.1") -> Iterator[tuple[FakeAPI, str]]:
    """Serve a FakeAPI on `host` (a free port); (the fake, its base URL "http://host:port")."""
    fake = FakeAPI()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            fake.requests.append(self.path)
            if fake.fail_with:
                self.send(fake.fail_with, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                           "message": "nodes is forbidden", "reason": "Forbidden",
                                           "code": fake.fail_with})
                return
            path, _, query = self.path.partition("?")
            if path == "/api/v1/nodes" and "watch=true" in query:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                for event in fake.events:
                    self.wfile.write(json.dumps(event).encode() + b"\n")
                return
            if path == "/api/v1/nodes":
                self.send(200, fake.nodes)
                return
            name = path.removeprefix("/api/v1/nodes/")
            for item in fake.nodes["items"]:
                if item["metadata"]["name"] == name:
                    self.send(200, item)
                    return
            self.send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "message": f'nodes "{name}" not found', "reason": "NotFound", "code": 404})

    server = ThreadingHTTPServer((host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def kubeconfig(path: Path, url: str) -> Path:
    """A kubeconfig file for the fixture server at `url` (no credentials: it asks for none)."""
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fixture",
        "clusters": [{"name": "fixture", "cluster": {"server": url}}],
        "users": [{"name": "fixture", "user": {}}],
        "contexts": [{"name": "fixture", "context": {"cluster": "fixture", "user": "fixture"}}]}))
    return path


