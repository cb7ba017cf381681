"""A run's stored events as the protocol's Server-Sent Events, resumable from any event id.

Every SSE event is `id: <seq>.<k>` (the k-th protocol event made from the run's stored event
`seq`), `event: <mode>`, `data: <json>`. The first is `metadata` {run_id, attempt}, whose id
is the cursor the stream starts after; a reconnect with `Last-Event-ID` gets exactly what
followed that id, without a second `metadata` (`-1` replays the run from its start,
`metadata` first). Events are read from the database
(the source of truth), woken by this process's live feed (runs/live.py), so a stream serves
the same whichever daphne process a reconnect lands on. LLM tokens also arrive live, before
their step commits, with ids `<cursor>~<n>` (a resume from one starts after the cursor, so
the stored copies come then); the stored copies are skipped on the connection that showed
them live.

Mapping (DESIGN §4 events -> stream modes):
- run.started (first claim): `values` = the initial state (checkpoint 0), `checkpoints`.
- step.started: `tasks` {id, name, input, triggers}, `debug` task, `events` on_chain_start.
- step.completed / step.failed: `tasks` result, `debug` task_result, `events` on_chain_end;
  for a completed step then `updates` {node: update}, `values` (the step's checkpoint),
  `checkpoints`, `debug` checkpoint (state.updated repeats the update: nothing of its own).
- llm.delta: `messages` [AIMessageChunk, metadata] (mode `messages-tuple`),
  `events` on_chat_model_stream.
- run.waiting: `values` with `__interrupt__`, `updates` {"__interrupt__": [...]}.
- run.failed / timed_out / interrupted: `error` {error, message}.
- anything else a node or Runyard emits (approval.*, input.*, artifact.created, branch.*,
  limit.*, ...): `custom` {type, data}, `events` on_custom_event.
The stream ends with `end` after the run's terminal event, or once the run waits on a human
or is paused and has nothing more stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.serializers.json import DjangoJSONEncoder
from django.http import StreamingHttpResponse

from lg import shapes
from runs import live, selectors, streams
from runs.events import run_group
from runs.models import Checkpoint, Event, Run, Step
from runs.status import TERMINAL
from tenants.auth import TenantContext

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
STREAM_MAX_SECONDS = 900.0
POLL_SECONDS = 1.0
BATCH = 200
TERMINAL_EVENTS = frozenset(f"run.{s}" for s in TERMINAL)
FAILED_EVENTS = frozenset({"run.failed", "run.timed_out", "run.interrupted"})
SETTLED = frozenset({*TERMINAL, "waiting", "paused"})
QUIET = frozenset(
    {
        "run.queued",
        "run.started",
        "run.resumed",
        "run.resurrected",
        "run.cancelling",
        "run.paused",
        "run.waiting",
        "step.started",
        "step.completed",
        "step.failed",
        "step.retrying",
        "state.updated",
        "llm.delta",
        *TERMINAL_EVENTS,
    }
)
Cursor = tuple[int, int]  # (seq, k): everything up to and including part k of seq was sent
WHOLE = 1 << 30  # k meaning "every part of that seq"


def parse_last_event_id(value: str | None) -> Cursor | None:
    """`-1`: from the start; `<seq>` or `<seq>.<k>`: after that (`~<n>` after it names a live
    token sent there). None when absent or bad."""
    if value is None or not value.strip():
        return None
    value = value.strip().partition("~")[0]  # a live token's id: resume after its cursor
    if value == "-1":
        return (0, WHOLE)
    seq, _, k = value.partition(".")
    if not seq.isdigit() or (k and not k.isdigit()) or len(value) > 24:
        return None
    return (int(seq), int(k) if k else WHOLE)


def cursor_id(cursor: Cursor) -> str:
    return str(cursor[0]) if cursor[1] == WHOLE else f"{cursor[0]}.{cursor[1]}"


def sse(event_id: str | None, name: str, data: Any) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = json.dumps(data, cls=DjangoJSONEncoder, separators=(",", ":"))
    return f"{head}event: {name}\ndata: {body}\n\n"


class Translator:
    """Stored events -> (mode, data) parts, for one stream (it remembers what it saw)."""

    def __init__(self, run: Run, modes: list[str], cursor_seq: int) -> None:
        self.run = run
        self.modes = set(modes)
        self.thread_id = str(run.thread.public_id) if run.thread_id and run.thread else None
        self.values: dict[str, Any] | None = None
        self.live_nodes: set[str] = set()
        self.done: dict[str, int] = {}
        if "messages-tuple" in self.modes and cursor_seq > 0:
            # Message ids count a node's finished steps: count those already sent.
            for data in Event.objects.filter(
                run=run, seq__lte=cursor_seq, type="step.completed"
            ).values_list("data", flat=True):
                node = (data or {}).get("node")
                self.done[node] = self.done.get(node, 0) + 1

    def parts(self, events: list[Event]) -> list[tuple[int, list[tuple[str, Any]]]]:
        steps = {
            e.data.get("index") for e in events if e.type in ("state.updated", "step.completed")
        }
        checkpoints: dict[int, Checkpoint] = {}
        if steps or any(e.type in ("run.started", "run.waiting") for e in events):
            wanted = {i for i in steps if isinstance(i, int)} | {0}
            checkpoints = {
                c.step_index: c
                for c in Checkpoint.objects.filter(run=self.run, step_index__in=wanted)
            }
        updates: dict[int, Any] = {}
        if self.modes & {"tasks", "debug", "events", "updates"} and steps:
            updates = dict(
                Step.objects.filter(run=self.run, index__in=steps).values_list("index", "update")
            )
        return [(e.seq, self.translate(e, checkpoints, updates)) for e in events]

    def _want(self, mode: str) -> bool:
        return mode in self.modes

    def _checkpoint_payload(self, cp: Checkpoint, step: int) -> dict[str, Any]:
        node = (cp.position or {}).get("node")
        return {
            "config": shapes.checkpoint_config(self.thread_id, cp.public_id),
            "metadata": {"source": "input" if step < 0 else "loop", "step": step},
            "values": cp.state,
            "next": [node] if node else [],
            "parent_config": None,
            "tasks": [],
        }

    def _message(self, node: str, text: str) -> list[Any]:
        n = self.done.get(node, 0)
        chunk = {
            "content": text,
            "additional_kwargs": {},
            "response_metadata": {},
            "type": "AIMessageChunk",
            "name": None,
            "id": f"run-{self.run.public_id}-{node}-{n}",
            "example": False,
            "tool_calls": [],
            "invalid_tool_calls": [],
            "tool_call_chunks": [],
            "usage_metadata": None,
        }
        meta = {
            "langgraph_node": node,
            "langgraph_step": n,
            "run_id": str(self.run.public_id),
            "thread_id": self.thread_id,
        }
        return [chunk, meta]

    def live(self, frame: dict[str, Any]) -> list[tuple[str, Any]]:
        if frame.get("event") != "llm.delta":
            return []
        data = frame.get("data") or {}
        node, text = str(data.get("node", "")), str(data.get("text", ""))
        self.live_nodes.add(node)
        out: list[tuple[str, Any]] = []
        if self._want("messages-tuple"):
            out.append(("messages", self._message(node, text)))
        if self._want("events"):
            out.append(("events", self._chat_stream(node, text)))
        return out

    def _chat_stream(self, node: str, text: str) -> dict[str, Any]:
        return {
            "event": "on_chat_model_stream",
            "name": node,
            "run_id": str(self.run.public_id),
            "tags": [],
            "metadata": {"langgraph_node": node},
            "data": {"chunk": {"content": text, "type": "AIMessageChunk"}},
        }

    def _step_state(
        self,
        index: Any,
        node: str,
        checkpoints: dict[int, Checkpoint],
        updates: dict[int, Any],
        ts: str,
    ) -> list[tuple[str, Any]]:
        """What a committed step changed: `updates`, then `values`, `checkpoints`, `debug`."""
        out: list[tuple[str, Any]] = []
        if self._want("updates"):
            out.append(("updates", {node: updates.get(index) or None}))
        cp = checkpoints.get(index) if isinstance(index, int) else None
        if cp is None:
            return out
        self.values = cp.state
        if self._want("values"):
            out.append(("values", cp.state))
        if self._want("checkpoints"):
            out.append(("checkpoints", self._checkpoint_payload(cp, index - 1)))
        if self._want("debug"):
            payload = self._checkpoint_payload(cp, index - 1)
            out.append(
                (
                    "debug",
                    {"step": index, "timestamp": ts, "type": "checkpoint", "payload": payload},
                )
            )
        return out

    def translate(
        self, e: Event, checkpoints: dict[int, Checkpoint], updates: dict[int, Any]
    ) -> list[tuple[str, Any]]:
        data = e.data or {}
        out: list[tuple[str, Any]] = []
        ts = e.created_at.isoformat()
        if e.type == "run.started":
            cp = checkpoints.get(0)
            if data.get("claim", 1) == 1 and cp is not None:
                self.values = cp.state
                if self._want("values"):
                    out.append(("values", cp.state))
                if self._want("checkpoints"):
                    out.append(("checkpoints", self._checkpoint_payload(cp, -1)))
            return out
        if e.type == "step.started":
            task = {
                "id": shapes.task_id(self.run, data.get("index", 0)),
                "name": data.get("node"),
                "input": None,
                "triggers": [],
            }
            if self._want("tasks"):
                out.append(("tasks", task))
            if self._want("debug"):
                out.append(
                    (
                        "debug",
                        {
                            "step": data.get("index"),
                            "timestamp": ts,
                            "type": "task",
                            "payload": task,
                        },
                    )
                )
            if self._want("events"):
                out.append(
                    (
                        "events",
                        {
                            "event": "on_chain_start",
                            "name": data.get("node"),
                            "run_id": task["id"],
                            "tags": [],
                            "metadata": {
                                "langgraph_node": data.get("node"),
                                "langgraph_step": data.get("index"),
                            },
                            "data": {},
                        },
                    )
                )
            return out
        if e.type in ("step.completed", "step.failed"):
            node = str(data.get("node", ""))
            failed = e.type == "step.failed"
            err = data.get("error") or {}
            result = {
                "id": shapes.task_id(self.run, data.get("index", 0)),
                "name": node,
                "error": (err.get("message") or err.get("code") or "failed") if failed else None,
                "interrupts": [],
                "result": None if failed else updates.get(data.get("index"), {}),
            }
            if not failed:
                self.done[node] = self.done.get(node, 0) + 1
                self.live_nodes.discard(node)
            if self._want("tasks"):
                out.append(("tasks", result))
            if self._want("debug"):
                out.append(
                    (
                        "debug",
                        {
                            "step": data.get("index"),
                            "timestamp": ts,
                            "type": "task_result",
                            "payload": result,
                        },
                    )
                )
            if not failed:
                out += self._step_state(data.get("index"), node, checkpoints, updates, ts)
            if self._want("events"):
                out.append(
                    (
                        "events",
                        {
                            "event": "on_chain_error" if failed else "on_chain_end",
                            "name": node,
                            "run_id": result["id"],
                            "tags": [],
                            "metadata": {
                                "langgraph_node": node,
                                "langgraph_step": data.get("index"),
                            },
                            "data": {"error": result["error"]}
                            if failed
                            else {"output": result["result"]},
                        },
                    )
                )
            return out
        if e.type == "llm.delta":
            node = str(data.get("node", ""))
            if node in self.live_nodes:
                return []  # this connection showed these tokens live already
            text = str(data.get("text", ""))
            if self._want("messages-tuple"):
                out.append(("messages", self._message(node, text)))
            if self._want("events"):
                out.append(("events", self._chat_stream(node, text)))
            return out
        if e.type == "run.waiting":
            waiting = data.get("waiting_for") or {}
            if waiting.get("kind") not in ("approval", "input"):
                return out
            interrupt = shapes.interrupt_of(waiting)
            values = self.values
            if values is None:
                cp = (
                    Checkpoint.objects.filter(run=self.run, created_at__lte=e.created_at)
                    .order_by("-step_index")
                    .first()
                )
                values = cp.state if cp is not None else {}
            if self._want("updates"):
                out.append(("updates", {"__interrupt__": [interrupt]}))
            if self._want("values"):
                out.append(("values", {**values, "__interrupt__": [interrupt]}))
            return out
        if e.type in FAILED_EVENTS:
            err = data.get("error") or {}
            out.append(
                (
                    "error",
                    {
                        "error": err.get("code", e.type.removeprefix("run.")),
                        "message": err.get("message", ""),
                    },
                )
            )
            return out
        if e.type in QUIET:
            return out
        if self._want("custom"):
            out.append(("custom", {"type": e.type, "data": data}))
        if self._want("events"):
            out.append(
                (
                    "events",
                    {
                        "event": "on_custom_event",
                        "name": e.type,
                        "run_id": str(self.run.public_id),
                        "tags": [],
                        "metadata": {},
                        "data": data,
                    },
                )
            )
        return out


class RunStream:
    """One SSE client of one run; see the module docstring."""

    def __init__(
        self,
        ctx: TenantContext,
        run: Run,
        modes: list[str],
        cursor: Cursor,
        slot: streams.Slot,
        *,
        cancel_on_disconnect: bool = False,
        resumed: bool = False,
    ) -> None:
        self.ctx = ctx
        self.resumed = resumed
        self.run = run
        self.modes = modes
        self.cursor = cursor
        self.slot = slot
        self.cancel_on_disconnect = cancel_on_disconnect
        self.ended = False

    async def __aiter__(self) -> AsyncIterator[str]:
        try:
            async for message in self._messages():
                yield message
        finally:
            self.slot.release()
            if self.cancel_on_disconnect and not self.ended:
                # The client went away before the run settled: cancel it off this (possibly
                # cancelled) task, without waiting.
                loop = asyncio.get_running_loop()
                loop.run_in_executor(None, _cancel_quietly, self.run.pk)

    async def _messages(self) -> AsyncIterator[str]:
        if not self.resumed:  # a reconnect has it already; a replay from -1 gets it again
            metadata = {"run_id": str(self.run.public_id), "attempt": 1}
            yield sse(cursor_id(self.cursor), "metadata", metadata)
        translator = await streams.db(Translator)(self.run, self.modes, self.cursor[0])
        loop = asyncio.get_running_loop()
        interval = streams.recheck_seconds()
        after = self.cursor[0] - (0 if self.cursor[1] == WHOLE else 1)
        group = run_group(self.run.public_id.hex)
        inbox = live.Inbox(accepts_live="messages-tuple" in self.modes or "events" in self.modes)
        await live.subscribe(group, inbox)
        try:
            now = loop.time()
            ends_at, next_check, last_sent = now + STREAM_MAX_SECONDS, now + interval, now
            live_sent = 0
            while loop.time() < ends_at:
                events = await selectors.aevents_after(self.run.pk, after, BATCH)
                if events:
                    batches = await streams.db(translator.parts)(events)
                    for seq, parts in batches:
                        for k, (name, data) in enumerate(parts):
                            if (seq, k) <= self.cursor:
                                continue
                            self.cursor = (seq, k)
                            yield sse(cursor_id(self.cursor), name, data)
                            last_sent = loop.time()
                        after = seq
                    if any(e.type in TERMINAL_EVENTS for e in events):
                        self.ended = True
                        yield sse(cursor_id((after, WHOLE)), "end", None)
                        return
                    if len(events) == BATCH:
                        continue
                row = (
                    await Run.objects.filter(pk=self.run.pk)
                    .values_list("last_seq", "status")
                    .afirst()
                )
                if row is None or (row[1] in SETTLED and after >= row[0]):
                    self.ended = True
                    yield sse(cursor_id((after, WHOLE)), "end", None)
                    return
                if after < row[0]:
                    continue
                wake = min(
                    ends_at, next_check, last_sent + HEARTBEAT_SECONDS, loop.time() + POLL_SECONDS
                )
                try:
                    hints, _lost = await asyncio.wait_for(inbox.get(), max(0.0, wake - loop.time()))
                    inbox.done()
                except TimeoutError:
                    hints = []
                for key, text in hints:
                    if key == live.LIVE_KEY:
                        for name, data in translator.live(json.loads(text)):
                            live_sent += 1
                            yield sse(f"{cursor_id(self.cursor)}~{live_sent}", name, data)
                            last_sent = loop.time()
                if loop.time() >= next_check:
                    if await streams.recheck(self.ctx):
                        return  # the caller lost access: the stream just ends
                    next_check = loop.time() + interval
                if loop.time() - last_sent >= HEARTBEAT_SECONDS:
                    yield ": heartbeat\n\n"
                    last_sent = loop.time()
        finally:
            live.unsubscribe(group, inbox)


def _cancel_quietly(run_pk: int) -> None:
    from django.db import close_old_connections

    from runs import services

    try:
        run = Run.objects.select_related("tenant", "graph", "thread").get(pk=run_pk)
        if run.status not in TERMINAL:
            services.cancel_run(run, action="interrupt", by="lg:on_disconnect")
    except Exception:  # best effort: the run may have ended or gone meanwhile
        log.warning("lg: could not cancel run %s on disconnect", run_pk, exc_info=True)
    finally:
        close_old_connections()


def stream_response(
    ctx: TenantContext,
    run: Run,
    modes: list[str],
    cursor: Cursor,
    *,
    location: str | None,
    content_location: str | None,
    cancel_on_disconnect: bool = False,
    resumed: bool = False,
) -> StreamingHttpResponse:
    slot = streams.slots.acquire(ctx.tenant.pk)
    stream = RunStream(
        ctx, run, modes, cursor, slot, cancel_on_disconnect=cancel_on_disconnect, resumed=resumed
    )
    response = StreamingHttpResponse(aiter(stream), content_type="text/event-stream")
    response._resource_closers.append(slot.release)  # type: ignore[attr-defined]
    weakref.finalize(response, slot.release)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    if location:
        response["Location"] = location
    if content_location:
        response["Content-Location"] = content_location
    return response


async def arun(run_pk: int) -> Run:
    return await sync_to_async(
        lambda: Run.objects.select_related("tenant", "graph", "thread").get(pk=run_pk)
    )()
