"""Webhook fixtures: a receiver on 127.0.0.1, a tenant allowed to reach it, graphs, a queue."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from runs.services import create_graph_version
from tenants.models import Tenant
from tests.runs.conftest import InlineQueue, approval_spec, chain_spec, queue  # noqa: F401
from webhooks import delivery


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver: answers with `answers` in turn (then 200), records every request."""

    url: str
    answers: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def verify(self, request: Received, secret: str) -> bool:
        """What a receiver does: recompute the signature over "<timestamp>.<body>" and compare
        in constant time."""
        timestamp = request.headers["Runyard-Timestamp"]
        expected = hmac.new(
            secret.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256
        ).hexdigest()
        sent = request.headers["Runyard-Signature"]
        return sent.startswith("v1=") and hmac.compare_digest(sent[3:], expected)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            rec = state["r"]
            with rec.lock:
                rec.requests.append(Received(self.path, dict(self.headers.items()), body))
                code = rec.answers.pop(0) if rec.answers else 200
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if code < 300 else b"try again")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["r"] = Receiver(f"http://127.0.0.1:{server.server_address[1]}/hook")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state["r"]
    server.shutdown()
    server.server_close()


@pytest.fixture
def hook_tenant(tenant: Tenant) -> Tenant:
    """alice's tenant, allowed to call the receiver on 127.0.0.1 (as http-node tests do)."""
    tenant.http_allowed_hosts = ["127.0.0.1"]
    tenant.http_allow_private = True
    tenant.save(update_fields=["http_allowed_hosts", "http_allow_private"])
    create_graph_version(tenant, chain_spec())
    create_graph_version(tenant, approval_spec())
    return tenant


@pytest.fixture
def kicked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Deliveries handed to the queue on commit (the first attempt), recorded not sent: tests
    send them by calling the senders themselves."""
    pks: list[int] = []
    monkeypatch.setattr(delivery, "send_soon", lambda ids: pks.extend(ids))
    return pks
