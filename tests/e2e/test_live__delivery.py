"""Events a real qcluster worker commits reach clients of a real daphne, in order, once.

Runs in whatever configuration the suite runs in: without REDIS_URL through the embedded
poller in daphne (runs/live.py), with it through channels-redis.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from runs.consumers import CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
from runs.events import to_tenant_wire, to_wire
from runs.models import Event, Run
from runs.services import create_graph_version, create_run
from tenants.models import Tenant
from tenants.services import create_api_key
from tests.e2e.processes import Platform

pytestmark = pytest.mark.e2e

Frame = dict[str, Any]


def paced_spec(name: str = "paced", steps: int = 4, latency_ms: int = 150) -> dict[str, Any]:
    """A run that takes a while and writes events all along (llm deltas, steps)."""
    order = [f"s{i}" for i in range(steps)]
    nodes: dict[str, Any] = {
        node: {
            "kind": "llm",
            "provider": "scripted",
            "prompt": "go",
            "responses": [f"answer from {node} in a few tokens"],
            "latency_ms": latency_ms,
            "output": node,
        }
        for node in order
    }
    nodes["done"] = {"kind": "end"}
    order.append("done")
    return {
        "name": name,
        "start": "s0",
        "nodes": nodes,
        "edges": [{"from": a, "to": b} for a, b in zip(order, order[1:], strict=False)],
    }


def bearer(tenant: Tenant) -> dict[str, str]:
    _, raw = create_api_key(tenant, name="e2e")
    return {"Authorization": f"Bearer {raw}"}


@contextmanager
def ws(
    platform: Platform, path: str, headers: dict[str, str], **kw: Any
) -> Iterator[ClientConnection]:
    with connect(platform.ws_url + path, additional_headers=headers, open_timeout=10, **kw) as c:
        yield c


def recv(conn: ClientConnection, timeout: float = 20) -> Frame:
    return json.loads(conn.recv(timeout=timeout))


def recv_until(
    conn: ClientConnection, stop: Callable[[Frame], bool], timeout: float = 30
) -> list[Frame]:
    deadline = time.monotonic() + timeout
    got = []
    while True:
        f = recv(conn, max(0.1, deadline - time.monotonic()))
        if f["type"] == "ping":
            continue
        got.append(f)
        if stop(f):
            return got


def is_end(f: Frame) -> bool:
    return f.get("event") in {"run.succeeded", "run.failed", "run.cancelled", "run.interrupted"}


def stored(run: Run, after: int = 0) -> list[Frame]:
    rows = Event.objects.filter(run=run, seq__gt=after).order_by("seq")
    return [dict(to_wire(e, run.public_id.hex)) for e in rows]


def closed_with(platform: Platform, path: str, headers: dict[str, str]) -> int | None:
    with ws(platform, path, headers) as conn, pytest.raises(ConnectionClosed) as info:
        conn.recv(timeout=10)
    return info.value.rcvd.code if info.value.rcvd else None


def test_worker_events_reach_run_and_tenant_streams_in_order(
    tenant: Tenant, live_platform: Platform
) -> None:
    headers = bearer(tenant)
    create_graph_version(tenant, paced_spec())
    with ws(live_platform, "/ws/tenant/", headers) as dashboard:
        assert recv_until(dashboard, lambda f: f["type"] == "synced") == [
            {"type": "synced", "seq": recv_cursor(tenant)}
        ]
        run = create_run(tenant, graph="paced")
        with ws(live_platform, f"/ws/runs/{run.public_id}/?after=0", headers) as viewer:
            got = recv_until(viewer, is_end)
        lifecycle = recv_until(dashboard, is_end)
    events = [f for f in got if f["type"] == "event"]
    assert [f["type"] for f in got].count("synced") == 1
    assert events == stored(run), live_platform.log("worker")
    assert [f["seq"] for f in events] == list(range(1, len(events) + 1))
    assert events[-1]["event"] == "run.succeeded"
    assert {"llm.delta", "step.completed"} <= {f["event"] for f in events}
    expected = [
        dict(to_tenant_wire(e, run.public_id.hex))
        for e in Event.objects.filter(run=run, type__startswith="run.").order_by("id")
    ]
    assert lifecycle == expected
    assert [f["event"] for f in lifecycle] == ["run.queued", "run.started", "run.succeeded"]


def recv_cursor(tenant: Tenant) -> int:
    last = Event.objects.filter(tenant=tenant).order_by("-id").first()
    return last.pk if last else 0


def test_handshake_auth_over_daphne(
    tenant: Tenant, other_tenant: Tenant, member: Any, live_platform: Platform
) -> None:
    create_graph_version(tenant, paced_spec(steps=1, latency_ms=0))
    run = create_run(tenant, graph="paced")
    path = f"/ws/runs/{run.public_id}/?after=0"
    assert closed_with(live_platform, path, {}) == CLOSE_UNAUTHENTICATED
    assert closed_with(live_platform, "/ws/tenant/", {}) == CLOSE_UNAUTHENTICATED
    assert closed_with(live_platform, path, bearer(other_tenant)) == CLOSE_NOT_FOUND

    client = Client()
    client.force_login(member)
    name = settings.SESSION_COOKIE_NAME
    cookie = {"Cookie": f"{name}={client.cookies[name].value}"}
    with ws(live_platform, path, cookie) as viewer:
        got = recv_until(viewer, is_end)
    assert got[-1]["event"] == "run.succeeded"
    with ws(live_platform, "/ws/tenant/?after=0", cookie) as dashboard:
        replayed = recv_until(dashboard, lambda f: f["type"] == "synced")
    assert [f["event"] for f in replayed[:-1]] == ["run.queued", "run.started", "run.succeeded"]


def test_an_idle_viewer_still_gets_events_later(tenant: Tenant, live_platform: Platform) -> None:
    """Nothing for a while (a run waiting for approval), then events: the socket must survive.

    With channels-redis 4.3 and redis-py 8 this needs `socket_timeout: None` in the channel
    layer's host config: redis-py's new 5 s default cuts the consumer's blocking read.
    """
    from runs.services import decide_approval
    from runs.status import RunStatus
    from tests.runs.conftest import approval_spec

    headers = bearer(tenant)
    create_graph_version(tenant, approval_spec())
    run = create_run(tenant, graph="approve")
    with ws(live_platform, f"/ws/runs/{run.public_id}/?after=0", headers) as viewer:
        recv_until(viewer, lambda f: f.get("event") == "approval.requested")
        time.sleep(7)  # longer than any client-side socket timeout of the layer
        run.refresh_from_db()
        assert run.status == RunStatus.WAITING
        decide_approval(run, "gate@*", decision="approve", by="e2e")
        got = recv_until(viewer, is_end)
    assert got[-1]["event"] == "run.succeeded", live_platform.log("web")
