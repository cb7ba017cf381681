"""API schemas of the runs app: what the JSON API accepts and returns (DESIGN §6 shapes).

Output schemas resolve from model rows; public ids are the rows' UUIDs, never primary keys.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated, Any, Literal

from django.urls import reverse
from ninja import Field, Schema
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

from runs.checkpoints import current_state
from runs.engine.fields import NOT_BLANK
from runs.engine.results import Usage
from runs.models import Artifact, Checkpoint, Event, Graph, Run, Step, Thread
from runs.status import RunStatus

EXAMPLE_SPEC: dict[str, Any] = {
    "name": "support-triage",
    "input_schema": {"type": "object", "required": ["text"]},
    "state": {"label": {"reducer": "replace", "default": ""}},
    "start": "classify",
    "nodes": {
        "classify": {
            "kind": "llm",
            "provider": "scripted",
            "responses": ["urgent"],
            "prompt": "Classify: {{ state.text }}",
            "output": "label",
        },
        "approve": {
            "kind": "approval",
            "message": "Escalate {{ state.text }}?",
            "timeout": 3600,
            "default": "reject",
        },
        "done": {"kind": "end"},
    },
    "edges": [
        {"from": "classify", "to": "approve", "when": "state.label == 'urgent'"},
        {"from": "classify", "to": "done"},
        {"from": "approve", "to": "done"},
    ],
    "max_steps": 100,
}

MultitaskStrategy = Literal["reject", "interrupt", "rollback", "enqueue"]


class BodyIn(BaseModel):
    """Request bodies: plain pydantic (strict about the body being an object), and unknown
    fields are refused so a typo such as `inputs` is a 422, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


# --- shared pieces -------------------------------------------------------------------------------


class ErrorInfo(Schema):
    """Why a run or step ended without success."""

    code: str = Field(..., examples=["node_failed"])
    message: str
    details: dict[str, Any] = Field(
        default_factory=dict, description="Anything else recorded (limit caps, evidence...)."
    )


def error_info(err: Any) -> dict[str, Any] | None:
    if not err:
        return None
    if not isinstance(err, dict):
        return {"code": "error", "message": str(err), "details": {}}
    rest = {k: v for k, v in err.items() if k not in ("code", "message")}
    return {
        "code": str(err.get("code") or "error"),
        "message": str(err.get("message") or ""),
        "details": rest,
    }


def _statuses(value: Any) -> Any:
    """Repeated and comma-separated values, each a known status. Checked here rather than
    item by item so an error names the parameter, not its n-th element."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return value
    parts = [part.strip() for item in value for part in str(item).split(",") if part.strip()]
    unknown = [part for part in parts if part not in RunStatus.values]
    if unknown:
        raise ValueError(f"unknown status {', '.join(unknown)}; use {', '.join(RunStatus.values)}")
    return parts


# No U+0000: neither PostgreSQL's text nor its jsonb can hold it (a string query parameter
# compared with a column must say so, or the database refuses it as a 500-class error).
NO_NUL = r"^[^\x00]*$"

# A webhook URL as webhooks.services.check_destination takes it: surrounding whitespace is
# stripped, and what is left is non-empty with no whitespace or control character. Whether it
# may be called (scheme, allow-list, private addresses) is a 422 `webhook_refused`.
URL_PATTERN = r"^\s*[^\s\x00-\x1f]+\s*$"

# Cursors are opaque: unpadded base64url (runs.selectors.encode_cursor) of what the list
# pages by. A string of the right alphabet that no list returned is a 400 `invalid_cursor`.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"
CURSOR_MAX_LENGTH = 500
CURSOR_DESCRIPTION = (
    "Opaque: pass back the `next_cursor` of the previous page, with the same filters. "
    f"Unpadded base64url (`A-Z a-z 0-9 - _`), 1 to {CURSOR_MAX_LENGTH} characters; "
    "a value no list returned is a 400 `invalid_cursor`."
)
NEXT_CURSOR_DESCRIPTION = (
    "Opaque cursor of the next page (unpadded base64url, `A-Z a-z 0-9 - _`, at most "
    f"{CURSOR_MAX_LENGTH} characters); null on the last page."
)


def cursor_field() -> Any:
    return Field(
        None,
        min_length=1,
        max_length=CURSOR_MAX_LENGTH,
        pattern=CURSOR_PATTERN,
        description=CURSOR_DESCRIPTION,
    )


def next_cursor_field() -> Any:
    return Field(
        ...,
        max_length=CURSOR_MAX_LENGTH,
        pattern=CURSOR_PATTERN,
        description=NEXT_CURSOR_DESCRIPTION,
    )


# RFC 3339, what the document's `format: date-time` promises: pydantic alone would also take
# a bare number as a Unix time, and a time without an offset.
RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)


def _rfc3339(value: Any) -> Any:
    if isinstance(value, str) and not RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2025-01-01T12:00:00Z")
    return value


def _utc(value: dt.datetime) -> dt.datetime:
    # PostgreSQL takes offsets up to 15:59, RFC 3339 up to 23:59: compare in UTC. At the ends
    # of the calendar the shift can leave it; those instants lie before or after every run.
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        edge = dt.datetime.min if value.year == dt.MINYEAR else dt.datetime.max
        return edge.replace(tzinfo=dt.UTC)


DateTimeIn = Annotated[dt.datetime, BeforeValidator(_rfc3339), AfterValidator(_utc)]


class PageIn(Schema):
    cursor: str | None = cursor_field()
    limit: int = Field(50, ge=1, le=200, description="Items per page.")


# --- graphs --------------------------------------------------------------------------------------


class GraphSpecIn(BaseModel):
    """A graph spec (DESIGN §3). Every field is checked by the spec validator, which names
    the node or edge of each problem; unknown fields are reported there too."""

    # A plain pydantic model: ninja's Schema would read attributes off any body, even a list.
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [EXAMPLE_SPEC]})

    name: Any = Field(None, description="The graph's name; a new spec makes its next version.")
    description: Any = Field(None, description="Free text.")
    input_schema: Any = Field(None, description="JSON Schema that run input must match.")
    state: Any = Field(None, description="State keys: `{reducer, default}` each.")
    start: Any = Field(None, description="The node runs start at.")
    nodes: Any = Field(None, description="Node name → node (`kind` and its fields).")
    edges: Any = Field(None, description="`{from, to, when?, on_error?}` in priority order.")
    max_steps: Any = Field(None, description="Steps a run may take (default 100).")
    max_resurrections: Any = Field(
        None,
        description="Resumes at the failed node after non-fatal failures, each after a "
        "cooldown; default and cap: the tenant's `max_resurrections` (default 3).",
    )
    max_depth: Any = Field(None, description="Subgraph nesting bound (default 5).")

    def raw(self) -> dict[str, Any]:
        """The spec exactly as sent."""
        return self.model_dump(exclude_unset=True)


class Problem(Schema):
    where: str = Field(..., description="The node, edge or field at fault.", examples=["edges[1]"])
    message: str = Field(..., examples=["`to` names unknown node 'nope'"])


class ValidationOut(Schema):
    valid: bool
    problems: list[Problem]


class GraphSummaryOut(Schema):
    id: uuid.UUID = Field(..., description="Public id of this version.")
    name: str
    version: int = Field(..., description="The latest version.")
    hash: str = Field(..., description="sha256 of the canonical spec.")
    description: str | None
    created_at: dt.datetime

    @staticmethod
    def resolve_id(obj: Graph) -> uuid.UUID:
        return obj.public_id

    @staticmethod
    def resolve_description(obj: Graph) -> str | None:
        value = obj.spec.get("description") if isinstance(obj.spec, dict) else None
        return value if isinstance(value, str) else None


class GraphVersionOut(GraphSummaryOut):
    version: int = Field(..., description="This version's number (1, 2, ...).")
    created_by: str
    spec: dict[str, Any] = Field(
        ...,
        description="The spec as stored (see `GraphSpec`; a version stored under older rules "
        "is kept as it was).",
    )


class GraphOut(GraphVersionOut):
    versions: list[int] = Field(..., description="Every stored version, oldest first.")


class GraphListOut(Schema):
    items: list[GraphSummaryOut]
    next_cursor: str | None = next_cursor_field()


# --- threads -------------------------------------------------------------------------------------


class ThreadIn(BodyIn):
    metadata: dict[str, Any] = Field(default_factory=dict, examples=[{"customer": "acme"}])
    state: dict[str, Any] = Field(
        default_factory=dict, description="Initial state the thread's first run starts from."
    )


class ThreadOut(Schema):
    id: uuid.UUID
    state: dict[str, Any] = Field(..., description="The state its latest finished run left.")
    metadata: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime

    @staticmethod
    def resolve_id(obj: Thread) -> uuid.UUID:
        return obj.public_id


class CheckpointOut(Schema):
    id: uuid.UUID = Field(..., description="Pass as `from_checkpoint` to fork a run from here.")
    run_id: uuid.UUID
    step_index: int = Field(..., description="0 is the state before the first step.")
    next_node: str | None = Field(..., description="The node a fork from here runs next.")
    state: dict[str, Any]
    created_at: dt.datetime

    @staticmethod
    def resolve_id(obj: Checkpoint) -> uuid.UUID:
        return obj.public_id

    @staticmethod
    def resolve_run_id(obj: Checkpoint) -> uuid.UUID:
        return obj.run.public_id

    @staticmethod
    def resolve_next_node(obj: Checkpoint) -> str | None:
        node = (obj.position or {}).get("node") if isinstance(obj.position, dict) else None
        return node if isinstance(node, str) else None


class CheckpointListOut(Schema):
    items: list[CheckpointOut]
    next_cursor: str | None = next_cursor_field()


# --- runs ----------------------------------------------------------------------------------------


class RunIn(BodyIn):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "graph": "support-triage",
                    "input": {"text": "The site is down"},
                    "metadata": {"customer": "acme"},
                }
            ]
        },
    )

    graph: str = Field(..., min_length=1, max_length=100, description="The graph's name.")
    version: int | None = Field(
        None, ge=1, le=2_147_483_647, description="A stored version; default the latest."
    )
    input: dict[str, Any] = Field(
        default_factory=dict, description="Merged into the initial state; checked first."
    )
    thread_id: uuid.UUID | None = Field(None, description="Run on this thread's state.")
    multitask_strategy: MultitaskStrategy = Field(
        "reject",
        description="When the thread already has an active run: `reject` (409 thread_busy), "
        "`interrupt` or `rollback` it, or `enqueue` this run after it.",
    )
    from_checkpoint: uuid.UUID | None = Field(
        None,
        description="Fork: start from this checkpoint's state, on its graph version, with "
        "`input` merged in. A run's final checkpoint (no next node) gives a run that "
        "succeeds at once with that state, as LangGraph returns a finished checkpoint's "
        "state; a checkpoint where routing failed is refused (409 checkpoint_not_resumable).",
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Your labels; filter lists with `metadata.<key>=`."
    )
    priority: int = Field(
        3,
        ge=1,
        le=5,
        description="1-5, higher first: the tenant's queued runs start by priority, then age "
        "(fairness across tenants is unchanged).",
    )
    webhook: str | None = Field(
        None,
        min_length=1,
        max_length=2000,
        pattern=URL_PATTERN,
        description="An http(s) URL told of this run's events (run.succeeded, run.failed, "
        "run.cancelled, run.waiting, run.interrupted, run.timed_out) by a signed POST. "
        "It obeys the tenant's HTTP allow-list and private-address rule (422 webhook_refused).",
    )
    webhook_include_state: bool = Field(
        True, description="Whether the webhook's body carries the run's state."
    )


class RunUsage(Schema):
    steps: int
    tokens_in: int
    tokens_out: int
    cost_usd: float


class WaitingFor(Schema):
    """What a `waiting` run waits for. Approvals are answered at
    `POST /runs/{id}/approvals/{id}`, input requests at `POST /runs/{id}/input`."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["approval", "input", "sleep"] = Field(..., examples=["approval"])
    id: str = Field(..., examples=["approve@1"], description="node@occurrence.")
    node: str
    message: Any = None
    default: Any = None
    deadline: str | None = Field(None, description="ISO 8601; null when none.")
    data: Any = None


class RunOut(Schema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "6f1c2b9e-3c41-4a7e-9d2f-0b6f2a1d9e10",
                    "status": "succeeded",
                    "graph": "support-triage",
                    "version": 3,
                    "thread_id": None,
                    "input": {"text": "The site is down"},
                    "state": {"text": "The site is down", "label": "urgent"},
                    "error": None,
                    "usage": {"steps": 3, "tokens_in": 12, "tokens_out": 2, "cost_usd": 0.0},
                    "waiting_for": None,
                    "created_at": "2025-01-01T12:00:00.000Z",
                    "started_at": "2025-01-01T12:00:00.050Z",
                    "finished_at": "2025-01-01T12:00:01.200Z",
                    "metadata": {"customer": "acme"},
                }
            ]
        }
    )

    id: uuid.UUID
    status: RunStatus
    graph: str = Field(..., description="The graph's name.")
    version: int = Field(..., description="The graph version the run is pinned to.")
    thread_id: uuid.UUID | None
    input: dict[str, Any]
    state: dict[str, Any]
    error: ErrorInfo | None = Field(..., description="Set when the run ended without success.")
    usage: RunUsage
    waiting_for: WaitingFor | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    metadata: dict[str, Any]
    priority: int = Field(..., description="1-5, higher first.")
    created_by: str = Field(
        ...,
        description='Who started the run: "user:<login>", "key:<api key name>", '
        '"cron:<schedule id>", "trigger:<event name>" or "run:<parent run id>".',
    )

    @staticmethod
    def resolve_id(obj: Run) -> uuid.UUID:
        return obj.public_id

    @staticmethod
    def resolve_graph(obj: Run) -> str:
        return obj.graph.name

    @staticmethod
    def resolve_version(obj: Run) -> int:
        return obj.graph.version

    @staticmethod
    def resolve_thread_id(obj: Run) -> uuid.UUID | None:
        return obj.thread.public_id if obj.thread is not None else None

    @staticmethod
    def resolve_state(obj: Run) -> dict[str, Any]:
        return current_state(obj)

    @staticmethod
    def resolve_error(obj: Run) -> dict[str, Any] | None:
        return error_info(obj.error)

    @staticmethod
    def resolve_waiting_for(obj: Run) -> dict[str, Any] | None:
        return obj.waiting_for if isinstance(obj.waiting_for, dict) else None


class RunListOut(Schema):
    items: list[RunOut]
    next_cursor: str | None = next_cursor_field()


class RunFiltersIn(Schema):
    status: Annotated[list[RunStatus], BeforeValidator(_statuses)] = Field(
        default_factory=list,
        description="Only runs in these statuses (repeat the parameter or comma-separate).",
    )
    graph: str | None = Field(
        None,
        max_length=100,
        pattern=NO_NUL,
        description="Only runs of the graph with this name.",
    )
    thread_id: uuid.UUID | None = Field(None, description="Only runs on this thread.")
    created_after: DateTimeIn | None = Field(None, description="Created strictly after.")
    created_before: DateTimeIn | None = Field(None, description="Created strictly before.")
    metadata_key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=NO_NUL,
        description="With `metadata_value`: only runs whose metadata has this key with that "
        "value. Any number of `metadata.<key>=<value>` parameters work too.",
    )
    metadata_value: str | None = Field(None, max_length=1000, pattern=NO_NUL)
    cursor: str | None = cursor_field()
    limit: int = Field(50, ge=1, le=200)


class CancelIn(BodyIn):
    action: Literal["interrupt", "rollback"] = Field(
        "interrupt",
        description="`interrupt` stops at the next safe point and keeps the state; "
        "`rollback` also restores the thread's state from before the run.",
    )


class InputIn(BodyIn):
    value: Any = Field(..., description="The answer (any JSON).", examples=["yes, go ahead"])
    input_id: str | None = Field(
        None,
        min_length=1,
        max_length=150,
        description="The request answered (node@occurrence); default the current one.",
    )


class GuidanceIn(BodyIn):
    message: str = Field(
        ...,
        min_length=1,
        max_length=10_000,
        pattern=NOT_BLANK,
        description="Appended to the state's `guidance` list; not blank.",
        examples=["Keep it short."],
    )


class ApprovalIn(BodyIn):
    decision: Literal["approve", "reject"]
    patch: dict[str, Any] | None = Field(
        None, description="A state update merged before the run goes on."
    )
    route: str | None = Field(
        None, max_length=100, description="Approve along the edge to this node instead."
    )


class ModelCallsOut(Schema):
    model_config = ConfigDict(extra="allow")

    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


class StepUsageOut(Schema):
    tokens_in: int = Field(..., ge=0)
    tokens_out: int = Field(..., ge=0)
    cost_usd: float = Field(..., ge=0)
    by_model: dict[str, ModelCallsOut] = Field(..., description="Model name → its usage.")


class StepOut(Schema):
    index: int = Field(..., ge=0)
    node: str
    status: Literal["completed", "failed", "suspended"] = Field(
        ..., description="`suspended`: the node waits (approval, input, sleep)."
    )
    attempt: int = Field(..., ge=0)
    started_at: dt.datetime
    finished_at: dt.datetime
    duration_ms: int = Field(..., ge=0)
    usage: StepUsageOut
    error: ErrorInfo | None

    @staticmethod
    def resolve_error(obj: Step) -> dict[str, Any] | None:
        return error_info(obj.error)

    @staticmethod
    def resolve_usage(obj: Step) -> dict[str, Any]:
        return Usage.from_dict(obj.usage if isinstance(obj.usage, dict) else None).to_dict()


class StepListOut(Schema):
    items: list[StepOut]
    next_cursor: str | None = next_cursor_field()


class EventOut(Schema):
    seq: int = Field(..., description="Gap-free per run, from 1.")
    type: str = Field(..., examples=["step.completed"])
    data: dict[str, Any]
    ts: dt.datetime

    @staticmethod
    def resolve_ts(obj: Event) -> dt.datetime:
        return obj.created_at

    @staticmethod
    def resolve_data(obj: Event) -> dict[str, Any]:
        return obj.data if isinstance(obj.data, dict) else {"value": obj.data}


class EventListOut(Schema):
    items: list[EventOut]
    next_cursor: str | None = Field(
        ...,
        pattern=r"^[0-9]+$",
        max_length=10,
        description="When more events are stored: the seq (decimal digits) to pass as `after`.",
    )


class ArtifactOut(Schema):
    id: uuid.UUID
    run_id: uuid.UUID
    step: int = Field(..., description="Index of the step that stored it.")
    name: str
    content_type: str
    size: int
    sha256: str
    created_at: dt.datetime
    content_url: str

    @staticmethod
    def resolve_id(obj: Artifact) -> uuid.UUID:
        return obj.public_id

    @staticmethod
    def resolve_run_id(obj: Artifact) -> uuid.UUID:
        return obj.run.public_id

    @staticmethod
    def resolve_step(obj: Artifact) -> int:
        return obj.step.index

    @staticmethod
    def resolve_content_url(obj: Artifact) -> str:
        return reverse("api:get_artifact_content", kwargs={"artifact_id": obj.public_id})


class ArtifactListOut(Schema):
    items: list[ArtifactOut]
    next_cursor: str | None = next_cursor_field()
