"""A client that stops reading is cut off (4008) without holding up anyone else, and resumes.

Real daphne, real socket: the client's receive buffer is tiny and it stops reading, so
daphne's send buffer fills, the consumer's outbox fills behind it, and past the bound the
consumer closes. Meanwhile another client of the same run gets every event at once.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time

import pytest
from django.db import transaction
from websockets.client import ClientProtocol
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from runs.consumers import CLOSE_TOO_SLOW
from runs.events import append_events
from runs.models import Run
from runs.services import create_graph_version, create_run
from tenants.models import Tenant
from tests.e2e.processes import Platform
from tests.e2e.test_live__delivery import (
    Frame,
    bearer,
    is_end,
    paced_spec,
    recv_until,
    stored,
    ws,
)

pytestmark = pytest.mark.e2e

BIG = "x" * 64 * 1024
# Past ~4 MiB of kernel buffers the slow consumer's outbox fills; its default bound is 8 MiB.
FLOOD = 220


def write_events(run: Run, n: int, text: str, per_commit: int = 2) -> None:
    """Commit `n` events a few at a time: ~3 MB/s, a stream a reading client keeps up with."""
    for start in range(0, n, per_commit):
        with transaction.atomic():
            row = Run.objects.select_related("tenant").get(pk=run.pk)
            count = min(per_commit, n - start)
            append_events(row, [("llm.delta", {"node": "x", "text": text})] * count)
        time.sleep(0.03)


class StalledClient:
    """A websocket client on a bare socket that reads nothing until `read_to_end`, so the
    socket buffers between it and daphne fill up as with a stuck browser tab."""

    def __init__(self, platform: Platform, path: str, headers: dict[str, str]) -> None:
        self.sock = socket.create_connection(("127.0.0.1", platform.port), timeout=10)
        self.protocol = ClientProtocol(parse_uri(platform.ws_url + path), max_size=None)
        request = self.protocol.connect()
        for name, value in headers.items():
            request.headers[name] = value
        self.protocol.send_request(request)
        self._flush()
        self.frames: list[Frame] = []
        while self.protocol.state is State.CONNECTING:
            self._feed(self.sock.recv(65536))
        assert self.protocol.state is State.OPEN, self.protocol.handshake_exc

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def _feed(self, data: bytes) -> None:
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        for event in self.protocol.events_received():
            if isinstance(event, WsFrame) and event.opcode is Opcode.TEXT:
                self.frames.append(json.loads(event.data))
        self._flush()  # answers pings and the closing handshake

    def read_to_end(self, timeout: float = 30) -> int | None:
        """Read everything the server sent; the close code it sent, if any."""
        self.sock.settimeout(timeout)
        with contextlib.suppress(OSError):
            while self.protocol.state is not State.CLOSED:
                data = self.sock.recv(1 << 20)
                self._feed(data)
                if not data:
                    break
        self.sock.close()
        return self.protocol.close_rcvd.code if self.protocol.close_rcvd else None


def test_a_client_that_stops_reading_is_closed_and_nobody_waits_for_it(
    tenant: Tenant, live_platform: Platform
) -> None:
    headers = bearer(tenant)
    create_graph_version(tenant, paced_spec(steps=1, latency_ms=0))
    run = create_run(tenant, graph="paced")
    path = f"/ws/runs/{run.public_id}/?after=0"
    # The reading client buffers without limit in its own thread while this one writes.
    with ws(live_platform, path, headers, max_queue=None) as fast:
        first = recv_until(fast, is_end)  # the run itself, before the flood
        total = first[-1]["seq"] + FLOOD
        slow = StalledClient(live_platform, path, headers)
        started = time.monotonic()
        write_events(run, FLOOD, BIG)  # ~14 MB, while `slow` reads nothing
        flood = recv_until(fast, lambda f: f.get("seq") == total, timeout=60)
        fast_seconds = time.monotonic() - started
    # Now the slow client reads what reached it: a prefix of the log, then the close.
    code = slow.read_to_end()
    got = slow.frames

    # Every event reached the reading client, in order, while the other one was stuck.
    events = [f for f in first + flood if f["type"] == "event"]
    assert [f["seq"] for f in events] == list(range(1, total + 1))
    assert fast_seconds < 30

    received = [f for f in got if f["type"] == "event"]
    n = received[-1]["seq"] if received else 0
    assert [f["seq"] for f in received] == list(range(1, n + 1))
    assert n < total
    assert "closing slow websocket" in live_platform.log("web")
    # Behind the backlog come the overflow frame and the close with its code (config/asgi.py
    # gives a client that is behind 10 s to read up to them).
    assert code == CLOSE_TOO_SLOW, (code, [f["type"] for f in got[-3:]])
    assert got[-1] == {"type": "overflow", "after": n}

    with ws(live_platform, f"/ws/runs/{run.public_id}/?after={n}", headers) as again:
        rest = recv_until(again, lambda f: f["type"] == "synced", timeout=60)
    assert [f["seq"] for f in rest[:-1]] == list(range(n + 1, total + 1))
    assert received + rest[:-1] == stored(run)
