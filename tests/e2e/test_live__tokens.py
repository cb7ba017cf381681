"""Tokens a real qcluster worker streams reach a real daphne's websocket clients while the step
runs (live frames, runs/live_frames.py), then the stored copies come with the step's commit.

Runs in the suite's configuration: without REDIS_URL the worker writes LiveFrame rows that the
poller in daphne tails (the embedded setup); with it, through Redis pub/sub.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

from runs.services import create_graph_version, create_run
from tenants.models import Tenant
from tests.e2e.processes import Platform
from tests.e2e.test_live__delivery import bearer, is_end, recv, ws

pytestmark = pytest.mark.e2e

TEXT = "tokens stream into the page one by one while the step still runs"


def streaming_spec() -> dict[str, Any]:
    return {
        "name": "streamer",
        "start": "write",
        "nodes": {
            "write": {
                "kind": "llm",
                "provider": "scripted",
                "prompt": "go",
                "responses": [TEXT],
                "latency_ms": 300,
                "token_ms": 80,
                "output": "text",
            },
            "done": {"kind": "end"},
        },
        "edges": [{"from": "write", "to": "done"}],
    }


def test_worker_tokens_reach_daphne_viewers_before_the_step_commits(
    tenant: Tenant, live_platform: Platform
) -> None:
    create_graph_version(tenant, streaming_spec())
    headers = bearer(tenant)
    run = create_run(tenant, graph="streamer")  # the worker waits out latency_ms first
    with ws(live_platform, f"/ws/runs/{run.public_id}/", headers) as viewer:
        got: list[tuple[float, dict[str, Any]]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            f = recv(viewer)
            got.append((time.time(), f))
            if is_end(f):
                break
    frames = [f for _, f in got]
    completed = next(i for i, f in enumerate(frames) if f.get("event") == "step.completed")
    live = [(at, f) for at, f in got[:completed] if f["type"] == "live"]
    assert len(live) >= 5, live_platform.log("worker")  # many pieces, before the commit
    assert TEXT.startswith("".join(f["data"]["text"] for _, f in live))
    # Published by the worker and received here well before the step's stored events.
    committed_at = dt.datetime.fromisoformat(frames[completed]["ts"]).timestamp()
    first_at = dt.datetime.fromisoformat(live[0][1]["ts"]).timestamp()
    assert committed_at - first_at > 0.5
    assert live[0][0] < got[completed][0] - 0.5
    stored = [f for f in frames if f["type"] == "event" and f["event"] == "llm.delta"]
    assert [f["data"]["text"] for f in stored] == [TEXT]
