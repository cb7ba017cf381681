"""What the caller hands the engine (RunContext) and what a node sees (NodeContext)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .cancel import CancelToken
from .errors import ExpressionError, NodeError
from .results import ArtifactData, Resolution, Suspension, Usage

if TYPE_CHECKING:
    from .spec import GraphSpec


@dataclass
class HttpPolicy:
    """Limits for `http` nodes, usually per tenant.

    `allowed_hosts` entries are exact host names, `*.example.com` (any subdomain, not the
    apex) or `*` (any host). An empty list allows no host at all: deny by default.
    """

    allowed_hosts: list[str] = field(default_factory=list)
    allow_private: bool = False
    max_bytes: int = 1_000_000
    timeout: float = 30.0


def _no_resolution(suspension: Suspension) -> Resolution | None:
    return None


@dataclass
class RunContext:
    """Everything the engine needs from its caller (the durable runtime or the CLI)."""

    cancel: CancelToken = field(default_factory=CancelToken)
    resolve: Callable[[Suspension], Resolution | None] = _no_resolution
    on_step_start: Callable[[int, str, int], None] | None = None
    on_delta: Callable[[str, str], None] | None = None
    # on_live(event type, data): an event viewers should see while the step still runs
    # (`branch.*`); the engine also records it with the step, so the caller stores it then.
    on_live: Callable[[str, dict], None] | None = None
    # run_subgraph(graph, input, depth, call=<id of the call within its step>,
    #              cancel=<the calling node's token>) -> the child's final state
    run_subgraph: Callable[..., dict] | None = None
    depth: int = 0
    http_policy: HttpPolicy = field(default_factory=HttpPolicy)
    llm_config: dict[str, dict] = field(default_factory=dict)
    sleep_inline_max: float = 5.0
    now: Callable[[], float] = time.time
    metadata: dict = field(default_factory=dict)


_CONTENT_TYPES = {
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
}


def guess_content_type(name: str, data: Any) -> str:
    for suffix, content_type in _CONTENT_TYPES.items():
        if name.endswith(suffix):
            return content_type
    if isinstance(data, (bytes, bytearray)):
        return "application/octet-stream"
    if isinstance(data, str):
        return "text/plain; charset=utf-8"
    return "application/json"


def artifact_bytes(data: Any) -> bytes:
    """Text is UTF-8 encoded, bytes kept, anything else stored as pretty JSON."""
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, str):
        return data.encode("utf-8")
    return json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8")


class NodeContext:
    """A node's view of the run while it executes one attempt.

    Function nodes receive it as their second argument: `args`, `cancel`, `metadata`,
    `add_artifact()` and `emit()` are the public part.
    """

    def __init__(
        self,
        *,
        name: str,
        node: dict,
        state: dict,
        spec: GraphSpec,
        run: RunContext,
        cancel: CancelToken,
        attempt: int,
        visit: int,
        occurrence_id: str,
        in_branch: bool = False,
        runner: Any = None,
    ) -> None:
        self.name = name
        self.node = node
        self.state = state
        self.spec = spec
        self.run = run
        self.cancel = cancel
        self.attempt = attempt
        self.visit = visit
        self.occurrence_id = occurrence_id
        self.in_branch = in_branch
        self.runner = runner
        self.usage = Usage()
        self._events: list[tuple[str, dict]] = []
        self.artifacts: list[ArtifactData] = []
        # What this attempt streamed, stored with the step as one `llm.delta` event (viewers
        # saw the pieces live); joined when the events are read, not once per piece.
        self._streamed: list[str] = []
        self._streamed_event: dict[str, Any] | None = None

    @property
    def events(self) -> list[tuple[str, dict]]:
        if self._streamed_event is not None:
            self._streamed_event["text"] = "".join(self._streamed)
        return self._events

    @property
    def args(self) -> dict:
        return self.node.get("args") or {}

    @property
    def metadata(self) -> dict:
        return self.run.metadata

    def add_artifact(self, name: str, data: Any, content_type: str | None = None) -> None:
        """Attach an artifact to this step (bytes, text, or any JSON value)."""
        if not isinstance(name, str) or not name:
            raise NodeError(
                "artifact_error", "artifact name must be a non-empty string", fatal=True
            )
        self.artifacts.append(
            ArtifactData(name, content_type or guess_content_type(name, data), artifact_bytes(data))
        )

    def emit(self, event_type: str, data: dict | None = None, *, live: bool = False) -> None:
        """Record a node-level event; the runtime stores it with the step. `live`: the
        caller also shows it to viewers now, while the step runs."""
        data = dict(data or {})
        self._events.append((event_type, data))
        if live and self.run.on_live is not None and not self.cancel.cancelled:
            self.run.on_live(event_type, data)

    def live(self, event_type: str, data: dict) -> None:
        """Show an event to viewers now without recording it (the caller records it with the
        step itself, e.g. from another thread)."""
        if self.run.on_live is not None and not self.cancel.cancelled:
            self.run.on_live(event_type, dict(data))

    def delta(self, text: str) -> None:
        """Stream a piece of LLM output to the caller; the whole is stored with the step."""
        if not text or self.cancel.cancelled:
            return
        if self._streamed_event is None:
            self._streamed_event = {"node": self.name, "text": ""}
            self._events.append(("llm.delta", self._streamed_event))
        self._streamed.append(text)
        if self.run.on_delta is not None:
            self.run.on_delta(self.name, text)

    def variables(self, **extra: Any) -> dict[str, Any]:
        """Names visible to this node's expressions and templates."""
        return {"state": self.state, "run": self.run.metadata, "node": self.name, **extra}

    def render(self, source: str, **extra: Any) -> str:
        from .expressions import render_template

        try:
            return render_template(source, self.variables(**extra))
        except ExpressionError as exc:
            raise exc.located(self.name, field_of(self.node, source), source) from None

    def evaluate(self, source: str, **extra: Any) -> Any:
        from .expressions import evaluate

        try:
            return evaluate(source, self.variables(**extra))
        except ExpressionError as exc:
            raise exc.located(self.name, field_of(self.node, source), source) from None


def field_of(node: Any, source: str, path: str = "") -> str | None:
    """Where in the node spec `source` sits (`prompt`, `headers.Authorization`), for errors.

    Looked up when an error is raised rather than passed in by every node kind.
    """
    if isinstance(node, dict):
        items: Any = ((f"{path}.{k}" if path else str(k), v) for k, v in node.items())
    elif isinstance(node, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(node))
    else:
        return path if node is source or node == source else None
    for where, value in items:
        found = field_of(value, source, where)
        if found:
            return found
    return None
