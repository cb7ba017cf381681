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
