"""Helpers for engine tests: spec builders, a run-to-the-end helper, a local HTTP server."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from runs.engine import Executor, GraphSpec, RunContext, StepResult, initial_state, parse_spec


def chain(*nodes: tuple[str, dict], name: str = "test", **extra: Any) -> dict:
    """A spec running `nodes` in order and then an `end` node called `done`."""
    names = [n for n, _ in nodes]
    spec = {
        "name": name,
        "start": names[0],
        "nodes": {**dict(nodes), "done": {"kind": "end"}},
        "edges": [{"from": a, "to": b} for a, b in zip(names, [*names[1:], "done"], strict=True)],
    }
    spec.update(extra)
    return spec


def run_all(
    spec: GraphSpec | dict,
    data: dict | None = None,
    ctx: RunContext | None = None,
    state: dict | None = None,
    position: dict | None = None,
) -> list[StepResult]:
    if isinstance(spec, dict):
        spec = parse_spec(spec)
    if state is None:
        state = initial_state(spec, data or {})
    return list(Executor(spec, ctx).run(state, position))


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0]
        handler = self.server.routes.get(path)  # type: ignore[attr-defined]
        if handler is None:
            self.send_response(404)
            self.end_headers()
            return
        handler(self)

    do_GET = do_POST = _dispatch


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class LocalServer:
    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.routes = {}  # type: ignore[attr-defined]
        self.requests: list[dict] = []
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def route(self, path: str, fn: Callable[[BaseHTTPRequestHandler], None]) -> None:
        def recorded(handler: BaseHTTPRequestHandler) -> None:
            length = int(handler.headers.get("Content-Length") or 0)
            body = handler.rfile.read(length) if length else b""
            self.requests.append(
                {
                    "path": handler.path,
                    "method": handler.command,
                    "headers": dict(handler.headers),
                    "body": body,
                }
            )
            fn(handler)

        self.server.routes[path] = recorded  # type: ignore[attr-defined]

    def json_route(self, path: str, payload: Any, status: int = 200) -> None:
        self.route(
            path, lambda h: send(h, status, json.dumps(payload).encode(), "application/json")
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def slow(seconds: float) -> Callable[[BaseHTTPRequestHandler], None]:
    def handler(h: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        with contextlib.suppress(OSError):  # the client gave up on us
            send(h, 200, b"late", "text/plain")

    return handler
