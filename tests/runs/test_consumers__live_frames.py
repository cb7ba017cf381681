"""Live frames on the run stream: `llm.delta` and `branch.*` reach viewers while the step runs,
then the stored copies (with seq) arrive when it commits and replay has them.

The run executes inline on a thread of this process (the worker), the websocket through the
real ASGI app (daphne's side). The configured path runs as the suite is configured (the
embedded poller, or Redis with REDIS_URL); `embedded` forces the poller even with Redis.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from runs.models import LiveFrame, Run
from runs.services import create_graph_version, create_run
from runs.tasks import execute_run
from tenants.models import Tenant
from tests.runs.test_consumers__delivery import (  # noqa: F401 - ws_cleanup is a fixture
    api_key,
    async_db,
    bearer,
    close,
    frame,
    frames_until,
    open_ws,
    synced,
    ws_cleanup,
)

SETUPS = ["configured", "embedded"]


def streaming_spec(name: str = "stream", token_ms: int = 40) -> dict[str, Any]:
    return {
        "name": name,
        "state": {"answer": {"reducer": "replace", "default": ""}},
        "start": "talk",
        "nodes": {
            "talk": {
                "kind": "llm",
                "provider": "scripted",
                "prompt": "hi",
                "responses": ["one two three four five six"],
                "token_ms": token_ms,
                "output": "answer",
            },
            "done": {"kind": "end"},
        },
        "edges": [{"from": "talk", "to": "done"}],
    }


def parallel_spec(name: str = "fan") -> dict[str, Any]:
    def branch(text: str, latency: int) -> dict[str, Any]:
        return {
            "kind": "llm",
            "provider": "scripted",
            "prompt": "go",
            "responses": [text],
            "latency_ms": latency,
            "output": "found",
        }

    return {
        "name": name,
        "state": {"found": {"reducer": "append", "default": []}},
        "start": "research",
        "nodes": {
            "research": {"kind": "parallel", "branches": ["web", "news"]},
            "web": branch("from the web", 1500),
            "news": branch("from the news", 50),
            "done": {"kind": "end"},
        },
        "edges": [{"from": "research", "to": "done"}],
    }


@pytest.fixture
def setup(request: Any, settings: Any) -> str:
    if request.param == "embedded":
        settings.REDIS_URL = ""  # worker -> LiveFrame rows -> the poller, as without Redis
    return str(request.param)


async def start_run(tenant: Tenant, spec: dict[str, Any]) -> Run:
    def make() -> Run:
        create_graph_version(tenant, spec)
        return create_run(tenant, graph=spec["name"])

    return await sync_to_async(make)()


def work_in_background(run: Run) -> threading.Thread:
    """A worker executing the run on its own thread (and database connection)."""

    def work() -> None:
        try:
            execute_run(run.pk)
        finally:
            connections.close_all()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("setup", SETUPS, indirect=True)
@async_db
async def test_llm_deltas_arrive_live_before_the_step_commits_then_stored_in_seq_order(
    tenant: Tenant, queue: Any, setup: str
) -> None:
    raw = await api_key(tenant)
    run = await start_run(tenant, streaming_spec())
    ws = await open_ws(f"/ws/runs/{run.public_id}/", bearer(raw))
    replayed, _ = await synced(ws)
    worker = work_in_background(run)
    got = await frames_until(ws, lambda f: f.get("event") == "run.succeeded")
    await asyncio.to_thread(worker.join, 10)

    kinds = [(f["type"], f["event"]) for f in got]
    completed = kinds.index(("event", "step.completed"))
    live = [f for f in got[:completed] if f["type"] == "live"]
    assert len(live) >= 2, kinds  # several pieces, each shown while the step still ran
    assert all(f["event"] == "llm.delta" and "seq" not in f for f in live)
    assert all(f["data"]["node"] == "talk" and f["data"]["step"] == 1 for f in live), live
    # In order; the last piece may land after the commit (live frames are best-effort).
    assert "one two three four five six".startswith("".join(f["data"]["text"] for f in live))
    assert all(f["run"] == run.public_id.hex and f["ts"] for f in live)
    # The stored copy (whole text, with a seq) comes with the step, gap-free after the replay.
    stored = [f for f in replayed + got if f["type"] == "event"]
    assert [f["seq"] for f in stored] == list(range(1, len(stored) + 1))
    deltas = [f for f in stored if f["event"] == "llm.delta"]
    assert [d["data"] for d in deltas] == [{"node": "talk", "text": "one two three four five six"}]
    await close(ws)

    # A viewer who comes later replays the stored copies only: no live frame is kept.
    again = await open_ws(f"/ws/runs/{run.public_id}/", bearer(raw))
    replay, last = await synced(again)
    assert [f["type"] for f in replay] == ["event"] * last
    assert [f["seq"] for f in replay] == [f["seq"] for f in stored]
    await close(again)


@pytest.mark.parametrize("setup", SETUPS, indirect=True)
@async_db
async def test_a_branch_start_reaches_viewers_while_the_parallel_node_still_runs(
    tenant: Tenant, queue: Any, setup: str
) -> None:
    raw = await api_key(tenant)
    run = await start_run(tenant, parallel_spec())
    ws = await open_ws(f"/ws/runs/{run.public_id}/", bearer(raw))
    await synced(ws)
    worker = work_in_background(run)
    got = await frames_until(ws, lambda f: f.get("event") == "run.succeeded")
    await asyncio.to_thread(worker.join, 10)

    kinds = [(f["type"], f["event"], f["data"].get("branch")) for f in got]
    # The step's stored events (branch.* among them) all come with its commit: everything
    # shown live before the first of them was shown while the parallel node still ran.
    first_stored = next(i for i, k in enumerate(kinds) if k[0] == "event" and "branch" in k[1])
    before = kinds[:first_stored]
    assert ("live", "branch.started", "web") in before
    assert ("live", "branch.started", "news") in before
    assert ("live", "branch.completed", "news") in before  # the fast one, while web still ran
    # web's own live end is published just before the commit: it may land after the stored
    # copies (live frames are best-effort), but never before news'.
    news_done = before.index(("live", "branch.completed", "news"))
    web_done = [i for i, k in enumerate(kinds) if k == ("live", "branch.completed", "web")]
    assert all(i > news_done for i in web_done)
    stored = {k[1:] for k in kinds if k[0] == "event" and k[1].startswith("branch.")}
    assert stored == {
        ("branch.started", "web"),
        ("branch.started", "news"),
        ("branch.completed", "web"),
        ("branch.completed", "news"),
    }
    await close(ws)


@async_db
async def test_live_frames_reach_only_the_viewers_of_their_run(
    tenant: Tenant, other_tenant: Tenant, queue: Any
) -> None:
    raw = await api_key(tenant)
    streaming = await start_run(tenant, streaming_spec(token_ms=10))
    neighbour = await start_run(tenant, streaming_spec(name="other", token_ms=10))
    watcher = await open_ws(f"/ws/runs/{neighbour.public_id}/", bearer(raw))
    lifecycle = await open_ws("/ws/tenant/", bearer(raw))
    await synced(watcher)
    await synced(lifecycle)
    # Another tenant's key cannot open the streaming run at all.
    outsider = await open_ws(
        f"/ws/runs/{streaming.public_id}/", bearer(await api_key(other_tenant))
    )
    assert (await frame(outsider))["code"] == 4404

    worker = work_in_background(streaming)
    await asyncio.to_thread(worker.join, 10)
    got = await frames_until(lifecycle, lambda f: f.get("event") == "run.succeeded")
    assert all(f["type"] == "event" and f["event"].startswith("run.") for f in got)
    assert await watcher.receive_nothing(timeout=0.5)  # nothing of the other run at all
    await close(watcher, lifecycle)


@pytest.mark.parametrize("setup", ["embedded"], indirect=True)
@async_db
async def test_embedded_live_frames_are_transient_rows_pruned_by_age(
    tenant: Tenant, queue: Any, setup: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runs import live_frames

    run = await start_run(tenant, streaming_spec(token_ms=0))
    await asyncio.to_thread(work_in_background(run).join, 10)
    assert await asyncio.to_thread(live_frames.sender().flush)
    assert await LiveFrame.objects.filter(group=f"run.{run.public_id.hex}").acount() >= 1
    monkeypatch.setattr(live_frames, "FRAME_TTL_SECONDS", -1.0)
    monkeypatch.setattr(live_frames, "PRUNE_SECONDS", -1.0)
    live_frames.publish_live(run.public_id.hex, "llm.delta", {"node": "talk", "text": "x"})
    assert await asyncio.to_thread(live_frames.sender().flush)
    # Rows older than the TTL (here: all of them) are deleted by the next batch's sender.
    assert await LiveFrame.objects.acount() == 0


@async_db
async def test_a_client_behind_loses_live_frames_not_its_connection(
    tenant: Tenant, queue: Any, settings: Any
) -> None:
    from runs import live
    from tests.runs.test_consumers__slow_client import StalledFlow, with_flow

    settings.RUNYARD = {**settings.RUNYARD, "WS_MAX_BUFFERED": 5}
    raw = await api_key(tenant)
    run = await start_run(tenant, streaming_spec())
    flow = StalledFlow()
    ws = await open_ws(f"/ws/runs/{run.public_id}/", bearer(raw), with_flow(flow))
    await synced(ws)
    flow.pause()  # the client stopped reading
    feed = live.current()
    assert feed is not None
    group = f"run.{run.public_id.hex}"
    for i in range(50):  # far past the bound of 5 frames
        feed.deliver_live(group, [{"type": "live", "event": "llm.delta", "data": {"n": i}}])
    await asyncio.sleep(0.1)
    flow.resume()
    got = []
    while not await ws.receive_nothing(timeout=0.3):
        got.append(await frame(ws))
    # What fit in the outbox went out; the rest was dropped, and the socket stays open.
    assert 1 <= len(got) <= 5 and all(f["type"] == "live" for f in got)
    assert [f["data"]["n"] for f in got] == list(range(len(got)))
    await close(ws)
