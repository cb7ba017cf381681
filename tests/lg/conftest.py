"""The official langgraph-sdk clients against the Procfile's real processes (DEBUG off)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runs.services import create_graph_version
from tenants.models import Role, Tenant
from tenants.services import create_api_key
from tests.e2e.processes import Platform, platform
from tests.webhooks.conftest import Received, Receiver


@pytest.fixture
def web_only(transactional_db: None, tmp_path: Path) -> Iterator[Platform]:
    """daphne alone: enough for what runs no graph."""
    with platform(tmp_path, "web") as p:
        yield p


@pytest.fixture
def lg_platform(transactional_db: None, tmp_path: Path) -> Iterator[Platform]:
    """daphne + qcluster + scheduler on the test database."""
    with platform(tmp_path, "web", "worker", "scheduler") as p:
        yield p


def key_for(tenant: Tenant, role: str = Role.ADMIN) -> str:
    _, raw = create_api_key(tenant, name=f"lg-{role}", role=role)
    return raw


def lg_url(p: Platform) -> str:
    return p.url + "/lg"


def chat_spec(name: str = "chat", *, latency_ms: int = 30) -> dict[str, Any]:
    """Two scripted LLM steps, so a stream has tokens, updates and values."""
    return {
        "name": name,
        "input_schema": {"type": "object", "required": ["question"]},
        "state": {"log": {"reducer": "append", "default": []}},
        "start": "draft",
        "nodes": {
            "draft": {
                "kind": "llm",
                "provider": "scripted",
                "prompt": "Draft: {{ state.question }}",
                "responses": ["a first draft in five tokens"],
                "latency_ms": latency_ms,
                "output": "draft",
            },
            "polish": {
                "kind": "llm",
                "provider": "scripted",
                "prompt": "Polish: {{ state.draft }}",
                "responses": ["the polished answer"],
                "latency_ms": latency_ms,
                "output": "answer",
            },
            "done": {"kind": "end"},
        },
        "edges": [{"from": "draft", "to": "polish"}, {"from": "polish", "to": "done"}],
    }


def review_spec(name: str = "review") -> dict[str, Any]:
    """A human approves (or patches, or rejects) and then names the reviewer: an approval and
    an input, the two kinds of interrupt."""
    return {
        "name": name,
        "state": {"log": {"reducer": "append", "default": []}},
        "start": "propose",
        "nodes": {
            "propose": {"kind": "transform", "set": {"proposal": "'ship ' ~ state.item"}},
            "approve": {
                "kind": "approval",
                "message": "Ship {{ state.item }}?",
                "on_reject": "rejected",
            },
            "who": {"kind": "input", "prompt": "Who reviewed it?", "output": "reviewer"},
            "shipped": {"kind": "transform", "set": {"shipped": "true"}},
            "rejected": {"kind": "transform", "set": {"shipped": "false"}},
            "done": {"kind": "end"},
        },
        "edges": [
            {"from": "propose", "to": "approve"},
            {"from": "approve", "to": "who"},
            {"from": "who", "to": "shipped"},
            {"from": "shipped", "to": "done"},
            {"from": "rejected", "to": "done"},
        ],
    }


@pytest.fixture
def graphs(tenant: Tenant) -> dict[str, Any]:
    return {
        "chat": create_graph_version(tenant, chat_spec()),
        "review": create_graph_version(tenant, review_spec()),
    }


def received(rec: Receiver, run_id: str, event: str, timeout: float = 20) -> Received:
    """The webhook request the receiver got for `event` of run `run_id` (the worker sends it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with rec.lock:
            for request in rec.requests:
                body = request.json()
                if body["run"]["id"] == run_id and body["event"] == event:
                    return request
        time.sleep(0.05)
    raise AssertionError(f"no {event} for {run_id}: {[r.json()['event'] for r in rec.requests]}")
