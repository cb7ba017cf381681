"""Round trips to PostgreSQL on the hot paths, counted on the wire: a relay between Django's
connection and the server counts each time the client speaks again after the server
answered. Statement counts miss what a pipeline's reads and syncs cost (a result read
inside a pipeline, then its closing Sync, were two round trips where one carried both)."""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection

from runs import dispatch
from runs.services import create_graph_version, create_run
from tenants.models import Tenant
from tests.runs.conftest import chain_spec

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif("connection.vendor != 'postgresql'"),
]


class Relay:
    """A TCP relay for one client connection, counting the client's turns while `counting`."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.counting = False
        self.turns = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        client, _ = self.listener.accept()
        server = socket.create_connection(self.target)
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, server)
        sel.register(server, selectors.EVENT_READ, client)
        client_spoke_last = False
        while not self.stop.is_set():
            for key, _ in sel.select(timeout=0.1):
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                if not data:
                    return
                from_client = key.fileobj is client
                if from_client and not client_spoke_last and self.counting:
                    self.turns += 1
                client_spoke_last = from_client
                key.data.sendall(data)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.listener.close()


@pytest.fixture
def relayed() -> Iterator[Relay]:
    """Django's connection, reopened through a relay."""
    settings = connection.settings_dict
    saved = settings["HOST"], settings["PORT"]
    relay = Relay(settings["HOST"] or "127.0.0.1", int(settings["PORT"] or 5432))
    connection.close()
    settings["HOST"], settings["PORT"] = "127.0.0.1", relay.port
    try:
        connection.ensure_connection()
        yield relay
    finally:
        connection.close()
        settings["HOST"], settings["PORT"] = saved
        relay.close()


def round_trips(relay: Relay, call: Any) -> int:
    relay.turns, relay.counting = 0, True
    try:
        call()
    finally:
        relay.counting = False
    return relay.turns


def test_creating_a_run_that_is_dispatched_at_once_takes_five_round_trips(
    tenant: Tenant, relayed: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[int] = []
    monkeypatch.setattr(dispatch, "enqueue_run", sent.append)
    create_graph_version(tenant, chain_spec())
    create_run(tenant, graph="chain")  # statements prepared, caches warm
    trips = round_trips(relayed, lambda: create_run(tenant, graph="chain"))
    assert len(sent) == 2  # each dispatched in its own creation
    # The graph's read; the BEGIN (psycopg waits for it in a pipeline); the admission, the
    # INSERT, the audit row and the dispatcher's reads; the usage row, the event and the
    # slot's UPDATE with the pipeline's Sync; the COMMIT.
    assert trips == 5


def test_claiming_a_run_takes_two_round_trips(
    tenant: Tenant, relayed: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runs.services import claim_run

    monkeypatch.setattr(dispatch, "enqueue_run", lambda pk: None)
    create_graph_version(tenant, chain_spec())
    warm, run = (create_run(tenant, graph="chain") for _ in range(2))
    assert claim_run(warm.pk) is not None
    claimed: list[Any] = []
    # The read; the write (one statement committing itself).
    assert round_trips(relayed, lambda: claimed.append(claim_run(run.pk))) == 2
    assert claimed[0] is not None and claimed[0].status == "running"


def test_a_worker_taking_the_next_queued_run_takes_six_round_trips(
    tenant: Tenant, relayed: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runs.services.claim import claim_next

    monkeypatch.setattr(dispatch, "send_dispatch_in_transaction", lambda: lambda: None)
    create_graph_version(tenant, chain_spec())
    queued = [create_run(tenant, graph="chain").pk for _ in range(3)]
    assert claim_next() is not None
    claimed: list[Any] = []
    # Whether a run is owed (outside a transaction); the BEGIN; the dispatcher's gate, room and
    # candidates; the slot's UPDATE with the claim's read; the claim's write with the
    # pipeline's Sync; the COMMIT.
    assert round_trips(relayed, lambda: claimed.append(claim_next())) == 6
    assert claimed[0] is not None and claimed[0].pk == queued[1]
    assert claimed[0].status == "running" and claimed[0].state == {"count": 0}
