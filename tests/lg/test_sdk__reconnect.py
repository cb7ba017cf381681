"""A stream survives its web process: the SDK reconnects to the stream's Location with
Last-Event-ID and gets exactly the rest, served from the stored events. And a join from any
event id, or `-1`, replays what followed it."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from langgraph_sdk import get_sync_client

from runs.services import create_graph_version
from tenants.models import Tenant
from tests.e2e.processes import Platform
from tests.e2e.test_live__delivery import paced_spec
from tests.lg.conftest import key_for, lg_url

pytestmark = pytest.mark.e2e

STEPS = 8


def test_stream_resumes_after_daphne_restart(tenant: Tenant, lg_platform: Platform) -> None:
    create_graph_version(tenant, paced_spec(steps=STEPS, latency_ms=400))
    client = get_sync_client(url=lg_url(lg_platform), api_key=key_for(tenant))
    tid = client.threads.create()["thread_id"]
    got: list[Any] = []
    restarted = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for part in client.runs.stream(
            tid, "paced", input={}, stream_mode=["updates", "values"], stream_resumable=True
        ):
            got.append(part)
            if part.event == "updates" and not restarted:
                restarted = True
                lg_platform.restart("web")  # SIGKILL: the connection drops mid-run
    assert restarted
    run_id = got[0].data["run_id"]
    assert [p.event for p in got].count("metadata") == 1
    assert got[-1].event == "end"
    updates = [p.data for p in got if p.event == "updates"]
    nodes = [next(iter(u)) for u in updates]
    # Every step exactly once, in order, across the restart: nothing lost, nothing twice.
    assert nodes == [f"s{i}" for i in range(STEPS)] + ["done"]
    ids = [p.id for p in got[1:]]
    assert len(ids) == len(set(ids))
    assert client.runs.get(tid, run_id)["status"] == "success"

    # A join from the id of the third update replays exactly what came after it.
    third = next(p for p in got if p.event == "updates" and "s2" in p.data)
    rest = list(
        client.runs.join_stream(
            tid, run_id, last_event_id=third.id, stream_mode=["updates", "values"]
        )
    )
    after = got[got.index(third) + 1 :]
    assert [(p.event, p.data) for p in rest] == [(p.event, p.data) for p in after]
    everything = list(client.runs.join_stream(tid, run_id, last_event_id="-1"))
    assert everything[0].event == "metadata" and everything[-1].event == "end"
    assert [next(iter(p.data)) for p in everything if p.event == "updates"] == nodes
