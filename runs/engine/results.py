"""Records the engine hands to its caller: usage, artifacts, suspensions and step results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Usage:
    """LLM usage of a step (or a run, when summed with `add`), also kept per model."""

    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    by_model: dict[str, dict] = field(default_factory=dict)

    def record(self, model: str, tokens_in: int, tokens_out: int, cost_usd: float) -> None:
        """Count one model call."""
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out
        self.cost_usd += cost_usd
        entry = self.by_model.setdefault(
            model, {"tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0, "calls": 0}
        )
        entry["tokens_in"] += tokens_in
        entry["tokens_out"] += tokens_out
        entry["cost_usd"] += cost_usd
        entry["calls"] += 1

    def add(self, other: Usage) -> None:
        self.tokens_in += other.tokens_in
        self.tokens_out += other.tokens_out
        self.cost_usd += other.cost_usd
        for model, theirs in other.by_model.items():
            mine = self.by_model.setdefault(
                model, {"tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0, "calls": 0}
            )
            for key in ("tokens_in", "tokens_out", "cost_usd", "calls"):
                mine[key] = mine.get(key, 0) + theirs.get(key, 0)

    def __bool__(self) -> bool:
        return bool(self.tokens_in or self.tokens_out or self.cost_usd or self.by_model)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost_usd": self.cost_usd,
            "by_model": {model: dict(entry) for model, entry in self.by_model.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Usage:
        data = data or {}
        return cls(
            tokens_in=int(data.get("tokens_in", 0)),
            tokens_out=int(data.get("tokens_out", 0)),
            cost_usd=float(data.get("cost_usd", 0.0)),
            by_model={m: dict(e) for m, e in (data.get("by_model") or {}).items()},
        )


@dataclass
class ArtifactData:
    """An artifact a node produced; the runtime stores it and links it to the step."""

    name: str
    content_type: str
    data: bytes


@dataclass
class Suspension:
    """A node that waits outside the process: an approval, an input request or a long sleep.

    `id` is `"{node}@{occurrence}"`, occurrence 1-based (completed visits of the node + 1),
    so it is stable across a suspend/resume of the same visit.
    """

    kind: str
    id: str
    node: str
    timeout: float | None
    default: str | None
    message: str | None
    data: dict = field(default_factory=dict)


@dataclass
class Resolution:
    """What the runtime hands back for a suspension (see RunContext.resolve)."""

    decision: str | None = None
    value: Any = None
    patch: dict | None = None
    route: str | None = None
    by: str | None = None


@dataclass(slots=True)
class StepResult:
    """One executed node, with the state and the position to resume from after it.

    `position` resumes AFTER this step, except for status "suspended" and for a node failure
    that ended the run: there it is the unchanged position AT the node, so resuming runs the
    node again (after a decision arrived, or as a resurrection).
    """

    index: int
    node: str
    status: str
    attempt: int
    started_at: float
    finished_at: float
    update: dict
    state: dict
    position: dict
    usage: Usage
    events: list[tuple[str, dict]]
    artifacts: list[ArtifactData]
    error: dict | None = None
    run_error: dict | None = None
    done: bool = False
    suspension: Suspension | None = None
    #: `update` as compact JSON, in bytes (an upper bound): how much this step grew the state.
    update_bytes: int = 0
    #: The raw updates that, applied in order through the reducers to the state before the
    #: step, give `state` (a parallel merges branch by branch); None: `[update]`.
    updates: list[dict] | None = None

    @property
    def duration_ms(self) -> float:
        return (self.finished_at - self.started_at) * 1000.0
