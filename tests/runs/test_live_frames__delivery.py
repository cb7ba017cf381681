"""runs/live_frames.py and the feed: live frames reach only inboxes that take them (the run
websocket, not SSE or /wait), and a process buffers a bounded number of them."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest

from runs import live, live_frames


class IdleFeed(live.Feed):
    async def _run(self) -> None:
        await asyncio.Event().wait()


async def test_live_frames_go_only_to_inboxes_that_take_them() -> None:
    feed = IdleFeed()
    viewer, follower, other = live.Inbox(accepts_live=True), live.Inbox(), live.Inbox(True)
    feed.members = {"run.a": {viewer, follower}, "run.b": {other}}
    frame = live_frames.live_frame("a", "llm.delta", {"node": "n", "text": "hi", "step": 1})
    feed.deliver_live("run.a", [frame])
    assert [json.loads(t) for _, t in viewer.batches[0]] == [frame]
    assert viewer.batches[0][0][0] == live.LIVE_KEY  # no seq
    assert not follower.batches and not other.batches  # SSE and /wait never see them
    feed.task.cancel()


def test_a_live_frame_has_no_seq_and_says_when_it_was_published() -> None:
    frame = live_frames.live_frame("abc", "branch.started", {"branch": "web", "step": 2})
    assert set(frame) == {"type", "run", "event", "data", "ts"}
    assert frame["type"] == "live" and frame["run"] == "abc"


def test_a_process_buffers_a_bounded_number_of_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    sender = live_frames._Sender()
    release = threading.Event()
    sent: list[Any] = []

    def slow_send(batch: list[Any]) -> None:
        release.wait(5)
        sent.extend(batch)

    monkeypatch.setattr(sender, "_send", slow_send)
    monkeypatch.setattr(live_frames, "MAX_PENDING", 5)
    frame = live_frames.live_frame("a", "llm.delta", {"text": "x"})
    sender.submit("run.a", frame)  # taken by the sender thread, which then blocks
    deadline = time.monotonic() + 5
    while sender._pending and time.monotonic() < deadline:
        time.sleep(0.001)
    for _ in range(8):
        sender.submit("run.a", frame)
    assert len(sender._pending) == 5 and sender.dropped == 3
    release.set()
    assert sender.flush()
    assert len(sent) == 6


@pytest.mark.django_db(transaction=True)
def test_stored_frames_commit_without_a_sync_of_their_own(settings: Any) -> None:
    """Embedded delivery (no Redis): the frames' INSERT does not wait for an fsync (a second
    synced commit per llm step, which the step's own commit queued behind), and leaves the
    connection's own setting as it was (SET LOCAL on PostgreSQL: a pooled connection must
    not carry it on)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from runs.models import LiveFrame

    settings.REDIS_URL = None
    frame = live_frames.live_frame("abc", "llm.delta", {"node": "n", "text": "hi", "step": 1})
    with CaptureQueriesContext(connection) as queries:
        live_frames._Sender()._send([("run.abc", frame)])
    sql = [q["sql"] for q in queries.captured_queries]
    insert = next(i for i, s in enumerate(sql) if s.startswith('INSERT INTO "runs_liveframe"'))
    if connection.vendor == "postgresql":
        assert sql[insert - 1] == "SET LOCAL synchronous_commit TO OFF"
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] == "on"
    else:
        assert "PRAGMA synchronous = NORMAL" in sql[:insert]
    assert [json.loads(p) for p in LiveFrame.objects.values_list("payload", flat=True)] == [frame]


@pytest.mark.django_db(transaction=True)
def test_a_big_batch_of_frames_goes_in_chunks(settings: Any) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from runs.models import LiveFrame

    settings.REDIS_URL = None
    frames = [live_frames.live_frame("abc", "llm.delta", {"text": str(i)}) for i in range(250)]
    with CaptureQueriesContext(connection) as queries:
        live_frames._Sender()._send([("run.abc", f) for f in frames])
    inserts = [q for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 3  # 100 + 100 + 50 rows
    stored = LiveFrame.objects.order_by("id").values_list("payload", flat=True)
    assert [json.loads(p)["data"]["text"] for p in stored] == [str(i) for i in range(250)]
