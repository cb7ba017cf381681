"""Runyard's stored events as the protocol's stream parts.

Mapping (DESIGN §4 events -> stream modes):
- run.started (first claim): `values` = the initial state (checkpoint 0), `checkpoints`.
- step.started: `tasks` {id, name, input, triggers}, `debug` task, `events` on_chain_start.
- step.completed / step.failed: `tasks` result, `debug` task_result, `events` on_chain_end;
  for a completed step then `updates` {node: update}, `values` (the step's checkpoint),
  `checkpoints`, `debug` checkpoint (state.updated repeats the update: nothing of its own).
- llm.delta: `messages` [AIMessageChunk, metadata] (mode `messages-tuple`);
  `messages/metadata` once, then `messages/partial` (the text so far) and, when the step
  commits, `messages/complete` (mode `messages`); `events` on_chat_model_stream.
- run.waiting: `values` with `__interrupt__`, `updates` {"__interrupt__": [...]}.
- run.failed / timed_out / interrupted: `error` {error, message}.
- with stream_subgraphs, a step's child runs (subgraph nodes) as `<mode>|<node>:<run id>`,
  when that step commits (see `subgraph_parts`).
- anything else a node or Runyard emits (approval.*, input.*, artifact.created, branch.*,
  limit.*, ...): `custom` {type, data}, `events` on_custom_event.
"""

from __future__ import annotations

from typing import Any

from lg import shapes
from runs.models import Checkpoint, Event, Run, Step
from runs.status import TERMINAL

TERMINAL_EVENTS = frozenset(f"run.{s}" for s in TERMINAL)
FAILED_EVENTS = frozenset({"run.failed", "run.timed_out", "run.interrupted"})
# Runyard's own lifecycle events: what they mean reaches the modes below, not `custom`.
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


# Bounds on what one subgraph step adds to a stream.
MAX_CHILDREN = 50
MAX_CHILD_EVENTS = 5000


class Translator:
    """Stored events -> (mode, data) parts, for one stream (it remembers what it saw)."""

    def __init__(
        self, run: Run, modes: list[str], cursor_seq: int, *, subgraphs: bool = False
    ) -> None:
        self.run = run
        self.subgraphs = subgraphs
        self.modes = set(modes)
        self.thread_id = str(run.thread.public_id) if run.thread_id and run.thread else None
        self.values: dict[str, Any] | None = None
        self.live_nodes: set[str] = set()
        self.done: dict[str, int] = {}
        # Steps whose stored events were sent: a live frame of theirs arriving late (live
        # frames are best-effort and may trail the commit) is not a new message.
        self.ended_steps: set[Any] = set()
        # `messages` mode: the text of each node's message so far, and the ids announced.
        self.partial: dict[str, str] = {}
        self.announced: set[str] = set()
        if self.modes & {"messages-tuple", "messages"} and cursor_seq > 0:
            # Message ids count a node's finished steps: count those already sent.
            for data in Event.objects.filter(
                run=run, seq__lte=cursor_seq, type="step.completed"
            ).values_list("data", flat=True):
                node = str((data or {}).get("node", ""))
                self.done[node] = self.done.get(node, 0) + 1
                self.ended_steps.add((data or {}).get("index"))

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

    def subgraph_parts(self, index: Any, node: str) -> list[tuple[str, Any]]:
        """With stream_subgraphs: the child runs a step started (subgraph nodes), their parts
        named `<mode>|<node>:<child run id>` (deeper ones append their own), when the step
        commits: the children have ended or stopped by then, so a replay gives the same."""
        if not isinstance(index, int):
            return []
        out: list[tuple[str, Any]] = []
        children = Run.objects.filter(parent=self.run, child_key__startswith=f"{index}:")
        for child in children.select_related("thread").order_by("created_at", "id")[:MAX_CHILDREN]:
            inner = Translator(child, sorted(self.modes), 0, subgraphs=True)
            events = list(Event.objects.filter(run=child).order_by("seq")[:MAX_CHILD_EVENTS])
            suffix = f"|{node}:{child.public_id}"
            for _seq, parts in inner.parts(events):
                out += [(name + suffix, data) for name, data in parts]
        return out

    def _message(self, node: str, text: str) -> list[Any]:
        n = self.done.get(node, 0)
        chunk: dict[str, Any] = {
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

    def _partial(self, node: str, text: str) -> list[tuple[str, Any]]:
        """`messages` mode: metadata once per message, then the message so far."""
        chunk, meta = self._message(node, "")
        out: list[tuple[str, Any]] = []
        if chunk["id"] not in self.announced:
            self.announced.add(chunk["id"])
            out.append(("messages/metadata", {chunk["id"]: {"metadata": meta}}))
        self.partial[node] = self.partial.get(node, "") + text
        out.append(("messages/partial", [{**chunk, "type": "ai", "content": self.partial[node]}]))
        return out

    def _complete(self, node: str) -> list[tuple[str, Any]]:
        if node not in self.partial:
            return []
        chunk, _ = self._message(node, self.partial.pop(node))
        return [("messages/complete", [{**chunk, "type": "ai"}])]

    def live(self, frame: dict[str, Any]) -> list[tuple[str, Any]]:
        if frame.get("event") != "llm.delta":
            return []
        data = frame.get("data") or {}
        if data.get("step") is not None and data.get("step") in self.ended_steps:
            return []  # its step's stored events were sent already: a late frame
        node, text = str(data.get("node", "")), str(data.get("text", ""))
        self.live_nodes.add(node)
        return self._delta(node, text)

    def _delta(self, node: str, text: str) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        if self._want("messages-tuple"):
            out.append(("messages", self._message(node, text)))
        if self._want("messages"):
            out += self._partial(node, text)
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
            task: dict[str, Any] = {
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
            self.ended_steps.add(data.get("index"))
            if self.subgraphs:
                out += self.subgraph_parts(data.get("index"), node)
            failed = e.type == "step.failed"
            err = data.get("error") or {}
            result: dict[str, Any] = {
                "id": shapes.task_id(self.run, data.get("index", 0)),
                "name": node,
                "error": (err.get("message") or err.get("code") or "failed") if failed else None,
                "interrupts": [],
                "result": None if failed else updates.get(data.get("index", -1), {}),
            }
            if not failed:
                if self._want("messages"):
                    out += self._complete(node)
                self.done[node] = self.done.get(node, 0) + 1
                self.live_nodes.discard(node)
            else:
                self.partial.pop(node, None)
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
            node, text = str(data.get("node", "")), str(data.get("text", ""))
            if node in self.live_nodes:
                # This connection showed these tokens live already; the stored copy (the
                # node's whole text) still completes its message, live frames being
                # best-effort.
                if node in self.partial:
                    self.partial[node] = text
                return []
            return self._delta(node, text)
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
