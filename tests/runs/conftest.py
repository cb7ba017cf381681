"""Runtime fixtures: an inline queue that tests drain by hand, and graph builders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from runs import dispatch
from runs.models import Graph
from runs.services import create_graph_version
from runs.tasks import execute_run
from tenants.models import Tenant


class InlineQueue:
    """Stands in for the broker: dispatch appends, `drain` runs the tasks in this thread."""

    def __init__(self) -> None:
        self.pending: list[int] = []
        self.delivered: list[int] = []

    def put(self, run_pk: int) -> None:
        self.pending.append(run_pk)

    def drain(self, *, max_tasks: int = 1000) -> list[str]:
        outcomes = []
        while self.pending and max_tasks:
            max_tasks -= 1
            run_pk = self.pending.pop(0)
            self.delivered.append(run_pk)
            outcomes.append(execute_run(run_pk))
        return outcomes


@pytest.fixture
def queue(monkeypatch: pytest.MonkeyPatch) -> InlineQueue:
    q = InlineQueue()
    monkeypatch.setattr(dispatch, "enqueue_run", q.put)
    return q


def chain_spec(name: str = "chain", n: int = 3, **extra: Any) -> dict[str, Any]:
    nodes: dict[str, Any] = {
        f"n{i}": {"kind": "transform", "set": {"count": f"state.count + {1}"}} for i in range(n)
    }
    nodes["done"] = {"kind": "end"}
    order = [f"n{i}" for i in range(n)] + ["done"]
    return {
        "name": name,
        "state": {"count": {"reducer": "replace", "default": 0}},
        "start": "n0",
        "nodes": nodes,
        "edges": [{"from": a, "to": b} for a, b in zip(order, order[1:], strict=False)],
        **extra,
    }


def approval_spec(name: str = "approve", **approval: Any) -> dict[str, Any]:
    return {
        "name": name,
        "state": {"log": {"reducer": "append", "default": []}},
        "start": "before",
        "nodes": {
            "before": {"kind": "transform", "set": {"log": "'before'"}},
            "gate": {
                "kind": "approval",
                "message": "Go on?",
                "timeout": 3600,
                "default": "reject",
                "on_reject": "rejected",
                **approval,
            },
            "after": {"kind": "transform", "set": {"log": "'after'"}},
            "rejected": {"kind": "transform", "set": {"log": "'rejected'"}},
            "done": {"kind": "end"},
        },
        "edges": [
            {"from": "before", "to": "gate"},
            {"from": "gate", "to": "after"},
            {"from": "after", "to": "done"},
            {"from": "rejected", "to": "done"},
        ],
    }


def slow_spec(name: str = "slow", latency_ms: int = 30000) -> dict[str, Any]:
    return {
        "name": name,
        "start": "think",
        "nodes": {
            "think": {
                "kind": "llm",
                "provider": "scripted",
                "prompt": "hi",
                "responses": ["done"],
                "latency_ms": latency_ms,
                "output": "answer",
            },
            "done": {"kind": "end"},
        },
        "edges": [{"from": "think", "to": "done"}],
    }


@pytest.fixture
def make_graph() -> Callable[..., Graph]:
    def make(tenant: Tenant, spec: dict[str, Any]) -> Graph:
        return create_graph_version(tenant, spec)

    return make
