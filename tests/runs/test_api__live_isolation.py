"""One tenant's slow request never queues another tenant's, through the real ASGI app.

Django's ASGIHandler runs each request in its own ThreadSensitiveContext, so sync views of
different requests run on different threads: a view sleeping on I/O, or burning CPU in
Python (the GIL is handed over every few milliseconds), leaves the others answering.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from django.db import transaction
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from config.asgi import application
from runs import selectors
from runs.consumers import CLOSE_UNAUTHENTICATED
from runs.events import append_events
from runs.models import Run
from runs.services import create_graph_version, create_run
from tenants.models import Tenant
from tenants.services import create_api_key, revoke_api_key
from tests.e2e.processes import platform
from tests.runs.conftest import chain_spec
from tests.runs.test_consumers__delivery import (
    TIMEOUT,
    api_key,
    new_run,
    open_ws,
    synced,
    ws_cleanup,  # noqa: F401 - fixture
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("ws_cleanup", "queue"),
]

SLOW_SECONDS = 2.0
# Queued behind alice, bob's request would wait for most of SLOW_SECONDS. Beside her busy
# loop it gets the GIL only at the interpreter's switch interval (5 ms a turn), which on a
# shared 2-vCPU machine took it 0.66-0.68 s in 1 run of 4, with or without other changes.
PROMPT_SECONDS = {"sleep": 0.6, "cpu": 1.0}


async def http_get(path: str, raw_key: str) -> tuple[int, Any]:
    """A GET through config.asgi.application, as daphne would make it."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"localhost"), (b"authorization", f"Bearer {raw_key}".encode())],
        "server": ("localhost", 80),
        "client": ("127.0.0.1", 50000),
    }
    app = ApplicationCommunicator(application, scope)
    await app.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await app.receive_output(SLOW_SECONDS * 3)
    body = b""
    while True:
        message = await app.receive_output(SLOW_SECONDS * 3)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await app.wait(SLOW_SECONDS * 3)
    return start["status"], json.loads(body)


def _busy(seconds: float) -> None:
    """Pure-Python CPU work: holds the GIL except at the interpreter's switch interval."""
    ends = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < ends:
        n += 1


@pytest.fixture
def slow_for(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """GET /runs of the tenant named here takes SLOW_SECONDS, sleeping or computing."""
    slow: dict[str, Any] = {"tenant": None, "how": "sleep"}
    real = selectors.run_values_page

    def run_values_page(tenant: Tenant, *args: Any, **kwargs: Any) -> Any:
        if tenant.pk == slow["tenant"]:
            if slow["how"] == "sleep":
                time.sleep(SLOW_SECONDS)
            else:
                _busy(SLOW_SECONDS)
        return real(tenant, *args, **kwargs)

    monkeypatch.setattr(selectors, "run_values_page", run_values_page)
    return slow


@pytest.mark.parametrize("how", ["sleep", "cpu"])
async def test_a_slow_sync_request_does_not_queue_another_tenants_request(
    how: str, tenant: Tenant, other_tenant: Tenant, slow_for: dict[str, Any], settings: Any
) -> None:
    settings.ALLOWED_HOSTS = ["localhost"]
    alice, bob = await api_key(tenant), await api_key(other_tenant)
    bob_run: Run = await new_run(other_tenant)
    slow_for.update(tenant=tenant.pk, how=how)

    started = time.monotonic()
    slow = asyncio.create_task(http_get("/api/v1/runs", alice))
    await asyncio.sleep(0.2)  # alice's request is in its view now
    for path in ("/api/v1/runs", f"/api/v1/runs/{bob_run.public_id}"):
        asked = time.monotonic()
        status, body = await http_get(path, bob)
        assert status == 200, body
        assert time.monotonic() - asked < PROMPT_SECONDS[how], f"{path} waited behind alice"
    assert not slow.done()
    status, _ = await slow
    assert status == 200 and time.monotonic() - started >= SLOW_SECONDS


async def test_a_slow_websocket_replay_does_not_queue_another_tenants_stream(
    tenant: Tenant, other_tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runs.consumers import RunStreamConsumer

    alice_run, bob_run = await new_run(tenant), await new_run(other_tenant)
    real = RunStreamConsumer._events_after

    def events_after(self: RunStreamConsumer, *args: Any) -> Any:
        if self.run_pk == alice_run.pk:
            time.sleep(SLOW_SECONDS)  # a large replay page, a slow disk
        return real(self, *args)

    monkeypatch.setattr(RunStreamConsumer, "_events_after", events_after)
    alice = [(b"authorization", f"Bearer {await api_key(tenant)}".encode())]
    bob = [(b"authorization", f"Bearer {await api_key(other_tenant)}".encode())]

    slow = await open_ws(f"/ws/runs/{alice_run.public_id}/", alice)
    slow_sync = asyncio.create_task(synced(slow))
    await asyncio.sleep(0.2)  # alice's replay is in its query now
    asked = time.monotonic()
    ws = await open_ws(f"/ws/runs/{bob_run.public_id}/", bob)
    await synced(ws)
    assert time.monotonic() - asked < PROMPT_SECONDS["sleep"], "bob's stream waited behind alice's"
    await ws.disconnect()
    await asyncio.wait_for(slow_sync, TIMEOUT)
    await slow.disconnect()
    await sync_to_async(lambda: None)()


# --- over a real daphne --------------------------------------------------------------------------


@pytest.mark.e2e
def test_over_daphne_streams_need_no_origin_and_end_when_the_key_is_revoked(
    tenant: Tenant, tmp_path: Any
) -> None:
    """Production-like: ALLOWED_HOSTS set, a non-browser client (no Origin) with a key. Its
    websocket opens, its SSE stream gets events this process commits (through daphne's
    feed), and both end within seconds of the key's revocation."""
    create_graph_version(tenant, chain_spec())
    run = create_run(tenant, graph="chain")  # queued: no worker runs here
    row, raw = create_api_key(tenant, role="viewer")
    auth = {"Authorization": f"Bearer {raw}"}
    env = {"ALLOWED_HOSTS": "127.0.0.1,localhost", "RUNYARD_STREAM_RECHECK_SECONDS": "0.5"}
    with (
        platform(tmp_path, "web", **env) as p,
        connect(f"{p.ws_url}/ws/runs/{run.public_id}/", additional_headers=auth) as ws,
    ):
        assert json.loads(ws.recv(timeout=10))["event"] == "run.queued"
        with (
            httpx.Client(base_url=p.url, timeout=10) as client,
            client.stream(
                "GET", f"/api/v1/runs/{run.public_id}/events/stream", headers=auth
            ) as sse,
        ):
            assert sse.status_code == 200
            lines = sse.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))
            with transaction.atomic():
                append_events(Run.objects.get(pk=run.pk), [("custom.from_another_process", {})])
            assert "custom.from_another_process" in next(
                line for line in lines if line.startswith("data:")
            )
            revoke_api_key(row)
            started = time.monotonic()
            for _ in lines:  # the stream ends: iteration stops
                pass
            assert time.monotonic() - started < 5
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_UNAUTHENTICATED
