"""A live token frame that trails its step's stored events is not a new message."""

from __future__ import annotations

import uuid

from django.utils import timezone

from lg.translate import Translator
from runs.models import Event, Run


def test_a_live_frame_after_its_step_completed_starts_no_new_message() -> None:
    run = Run(public_id=uuid.uuid4())
    t = Translator(run, ["messages"], 0)
    frame = {"event": "llm.delta", "data": {"node": "polish", "text": "the ", "step": 2}}
    live = t.live(frame)
    assert [name for name, _ in live] == ["messages/metadata", "messages/partial"]
    done = Event(
        run=run,
        seq=5,
        type="step.completed",
        data={"node": "polish", "index": 2, "status": "completed"},
        created_at=timezone.now(),
    )
    parts = t.translate(done, {}, {2: {"answer": "the answer"}})
    assert [name for name, _ in parts] == ["messages/complete"]
    late = {"event": "llm.delta", "data": {"node": "polish", "text": "answer", "step": 2}}
    assert t.live(late) == []  # before the fix: a third `messages/metadata`, a phantom message
    # The node's next step is a new message, announced once.
    nxt = t.live({"event": "llm.delta", "data": {"node": "polish", "text": "x", "step": 4}})
    assert [name for name, _ in nxt] == ["messages/metadata", "messages/partial"]
