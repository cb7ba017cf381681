"""A client that lost its connection resumes with ?after=<last seq>: exactly the rest.

Even when the daphne it was connected to was killed with SIGKILL and restarted while the run
went on writing events on a real worker.
"""

from __future__ import annotations

import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from runs.events import to_tenant_wire
from runs.models import Event, Run
from runs.services import create_graph_version, create_run
from tenants.models import Tenant
from tests.e2e.processes import Platform
from tests.e2e.test_live__delivery import (
    Frame,
    bearer,
    is_end,
    paced_spec,
    recv,
    recv_until,
    stored,
    ws,
)

pytestmark = pytest.mark.e2e


def drain_until_dropped(conn: ClientConnection) -> list[Frame]:
    """Whatever reached the client before its server died."""
    got = []
    with pytest.raises(ConnectionClosed):
        while True:
            f = recv(conn, timeout=15)
            if f["type"] == "event":
                got.append(f)
    return got


def wait_last_seq(run: Run, above: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.last_seq > above:
            return run.last_seq
        time.sleep(0.05)
    raise AssertionError(f"run {run.public_id} stuck at seq {run.last_seq} ({run.status})")


def test_resume_after_daphne_was_killed_gets_exactly_the_rest(
    tenant: Tenant, live_platform: Platform
) -> None:
    headers = bearer(tenant)
    # ~8 s of steps: on a loaded machine daphne's restart took longer than 12 of them.
    create_graph_version(tenant, paced_spec(steps=24, latency_ms=350))
    with ws(live_platform, "/ws/tenant/", headers) as dashboard:
        cursor = recv_until(dashboard, lambda f: f["type"] == "synced")[-1]["seq"]
        run = create_run(tenant, graph="paced")
        with ws(live_platform, f"/ws/runs/{run.public_id}/?after=0", headers) as viewer:
            before = recv_until(viewer, lambda f: f["type"] == "event" and f["seq"] >= 5)
            lifecycle = recv_until(dashboard, lambda f: f.get("event") == "run.started")
            live_platform.kill("web")  # SIGKILL: no close frames, no goodbye
            before += drain_until_dropped(viewer)
        lifecycle += drain_until_dropped(dashboard)
    before = [f for f in before if f["type"] == "event"]
    n = before[-1]["seq"]
    assert [f["seq"] for f in before] == list(range(1, n + 1))

    wait_last_seq(run, above=n + 2)  # the worker goes on while nobody listens
    live_platform.start("web")
    run.refresh_from_db()
    assert not run.is_terminal, "the run ended before daphne came back: make it longer"

    with ws(live_platform, f"/ws/runs/{run.public_id}/?after={n}", headers) as viewer:
        after = [f for f in recv_until(viewer, is_end) if f["type"] == "event"]
    resume_at = lifecycle[-1]["id"] if lifecycle else cursor
    with ws(live_platform, f"/ws/tenant/?after={resume_at}", headers) as dashboard:
        lifecycle += [f for f in recv_until(dashboard, is_end) if f["type"] == "event"]

    assert [f["seq"] for f in after] == list(range(n + 1, after[-1]["seq"] + 1))
    assert before + after == stored(run), live_platform.log("web")
    assert after[-1]["event"] == "run.succeeded"
    assert lifecycle == [
        dict(to_tenant_wire(e, run.public_id.hex))
        for e in Event.objects.filter(run=run, type__startswith="run.").order_by("id")
    ]
