"""A run's state is bounded by max_state_bytes; events and step rows stay small; node output
the database cannot store fails the node instead of the commit."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

from runs.engine import NodeContext, register_function
from runs.engine.functions import registry
from runs.models import Checkpoint, Event, Run, Step
from runs.services import create_run, create_thread
from runs.services import steps as steps_module
from runs.status import RunStatus
from tenants.models import Tenant
from tests.runs.conftest import InlineQueue, chain_spec

pytestmark = pytest.mark.django_db(transaction=True)

OUTPUT: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def functions() -> Iterator[None]:
    @register_function("test_fn_output", replace=True)
    def output(state: dict, ctx: NodeContext) -> dict:
        for etype, data in OUTPUT.get("events", []):
            ctx.emit(etype, data)
        return dict(OUTPUT.get("update", {}))

    yield
    registry.unregister("test_fn_output")
    OUTPUT.clear()


def doubling_spec() -> dict[str, Any]:
    """`state.s ~ state.s` in a loop: the state doubles every step."""
    return {
        "name": "double",
        "state": {"s": {"default": "ab"}},
        "start": "grow",
        "nodes": {
            "grow": {"kind": "transform", "set": {"s": "state.s ~ state.s"}},
            "done": {"kind": "end"},
        },
        "edges": [
            {"from": "grow", "to": "grow", "when": "state.s | length < 100000000"},
            {"from": "grow", "to": "done"},
        ],
        "max_steps": 60,
    }


def function_spec(name: str = "emit") -> dict[str, Any]:
    return {
        "name": name,
        "start": "f",
        "nodes": {"f": {"kind": "function", "function": "test_fn_output"}, "done": {"kind": "end"}},
        "edges": [{"from": "f", "to": "done"}],
    }


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def _events(run: Run, etype: str) -> list[dict[str, Any]]:
    return list(
        Event.objects.filter(run=run, type=etype).order_by("seq").values_list("data", flat=True)
    )


def _set_cap(tenant: Tenant, cap: int | None) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(max_state_bytes=cap)


# --- max_state_bytes ---------------------------------------------------------------------------


def test_a_doubling_state_fails_the_run_before_its_state_passes_the_cap(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    _set_cap(tenant, 20_000)
    make_graph(tenant, doubling_spec())
    run = create_run(tenant, graph="double")
    assert queue.drain() == ["failed"]
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error["code"] == "limit_exceeded.max_state_bytes"
    assert run.error["cap"] == 20_000 and run.error["used"] > 20_000
    exceeded = _events(run, "limit.exceeded")
    assert len(exceeded) == 1 and exceeded[0]["limit"] == "max_state_bytes"
    # Nothing stored is over the cap: not the run, not a checkpoint.
    assert _size(run.state) <= 20_000
    for state in Checkpoint.objects.filter(run=run).values_list("state", flat=True):
        assert _size(state) <= 20_000
    last = Step.objects.filter(run=run).order_by("-index").first()
    assert last is not None and last.status == "failed" and last.node == "grow"
    assert last.error["code"] == "limit_exceeded.max_state_bytes"
    assert run.position["node"] == "grow"  # AT the node that would have crossed it
    assert _types_tail(run) == ["step.failed", "limit.exceeded", "run.failed"]
    tenant.refresh_from_db()
    assert tenant.running_count == 0


def _types_tail(run: Run, n: int = 3) -> list[str]:
    types = list(Event.objects.filter(run=run).order_by("seq").values_list("type", flat=True))
    return types[-n:]


def test_without_a_cap_the_state_is_not_measured(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set_cap(tenant, None)
    calls = []
    real = steps_module.state_size
    monkeypatch.setattr(steps_module, "state_size", lambda s: calls.append(1) or real(s))
    make_graph(tenant, chain_spec(n=5))
    create_run(tenant, graph="chain")
    assert queue.drain() == ["succeeded"]
    assert calls == []


def test_a_normal_run_measures_its_whole_state_once_per_segment(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, monkeypatch: pytest.MonkeyPatch, settings
) -> None:
    from runs.services import execute as execute_module

    settings.RUNYARD = {**settings.RUNYARD, "PURE_BATCH_STEPS": 1}  # every step commits alone
    calls = []
    real = steps_module.state_size

    def counting(state: dict) -> int:
        calls.append(1)
        return real(state)

    monkeypatch.setattr(steps_module, "state_size", counting)
    monkeypatch.setattr(execute_module, "state_size", counting)
    make_graph(tenant, chain_spec(n=20))
    run = create_run(tenant, graph="chain")
    assert queue.drain() == ["succeeded"]
    run.refresh_from_db()
    assert run.steps == 21
    assert len(calls) == 1


def test_a_state_near_the_cap_is_measured_and_a_small_update_passes(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    """The per-step bound only adds; once over the cap it is replaced by the exact size, so a
    run that replaces a big key over and over is not stopped by the estimate."""
    _set_cap(tenant, 50_000)
    spec = chain_spec(n=8)
    for i in range(8):
        spec["nodes"][f"n{i}"]["set"] = {"count": "state.count + 1", "blob": "'x' * 20000"}
    make_graph(tenant, spec)
    run = create_run(tenant, graph="chain")
    assert queue.drain() == ["succeeded"]
    run.refresh_from_db()
    assert run.state["count"] == 8


def test_initial_state_over_the_cap_fails_the_run_at_its_start(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    _set_cap(tenant, 10_000)
    make_graph(tenant, chain_spec())
    thread = create_thread(tenant, state={"history": "y" * 8_000})
    run = create_run(tenant, graph="chain", thread_id=thread.public_id, input={"more": "z" * 4_000})
    assert queue.drain() == ["failed"]
    run.refresh_from_db()
    assert run.error["code"] == "limit_exceeded.max_state_bytes"
    assert run.steps == 0 and not Step.objects.filter(run=run).exists()
    assert _events(run, "limit.exceeded")[0]["limit"] == "max_state_bytes"
    # Under the cap, the same thread runs.
    ok = create_run(tenant, graph="chain", thread_id=thread.public_id)
    assert queue.drain() == ["succeeded"]
    ok.refresh_from_db()
    assert ok.state["count"] == 3


# --- event payloads --------------------------------------------------------------------------


def test_big_updates_are_truncated_in_events_and_step_rows_but_kept_in_the_checkpoint(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, settings
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "MAX_EVENT_BYTES": 4096}
    OUTPUT["update"] = {"big": "x" * 10_000, "small": 7}
    make_graph(tenant, function_spec())
    run = create_run(tenant, graph="emit")
    assert queue.drain() == ["succeeded"]
    update = _events(run, "state.updated")[0]["update"]
    assert update["small"] == 7
    assert update["big"] == {"truncated": True, "bytes": 10_002}
    step = Step.objects.get(run=run, node="f")
    assert step.update == update
    cp = Checkpoint.objects.get(run=run, step_index=1)
    assert cp.state["big"] == "x" * 10_000
    run.refresh_from_db()
    assert run.state["big"] == "x" * 10_000
    for data in Event.objects.filter(run=run).values_list("data", flat=True):
        assert _size(data) <= 4096


def test_big_and_unstorable_node_events_are_capped_and_cleaned(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, settings
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "MAX_EVENT_BYTES": 4096}
    OUTPUT["events"] = [
        ("custom.big", {"rows": ["r" * 100] * 100, "id": 1}),
        ("custom.bad", {"score": math.nan, "text": "a\x00b"}),
    ]
    make_graph(tenant, function_spec())
    run = create_run(tenant, graph="emit")
    assert queue.drain() == ["succeeded"]
    big = _events(run, "custom.big")[0]
    assert big["id"] == 1 and big["rows"]["truncated"] is True
    assert _events(run, "custom.bad")[0] == {"score": "nan", "text": "ab"}


# --- node output the database cannot store ------------------------------------------------------


@pytest.mark.parametrize(
    ("update", "path"),
    [
        ({"score": math.nan}, "score"),
        ({"rows": [{"v": math.inf}]}, "rows[0].v"),
        ({"name": "x\x00y"}, "name"),
        ({"d": {"k\x00": 1}}, "d.'k\\x00'"),
    ],
)
def test_unstorable_node_output_fails_the_node_not_the_commit(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, update: dict, path: str
) -> None:
    OUTPUT["update"] = update
    make_graph(tenant, function_spec())
    run = create_run(tenant, graph="emit")
    assert queue.drain() == ["failed"]
    run.refresh_from_db()
    assert run.error["code"] == "invalid_output", run.error
    assert "'f'" in run.error["message"] and path in run.error["message"]
    step = Step.objects.get(run=run, node="f")
    assert step.status == "failed" and step.error["details"] == {"node": "f", "path": path}
    # The next plain run of the tenant is fine.
    OUTPUT["update"] = {"ok": 1.5}
    create_run(tenant, graph="emit")
    assert queue.drain() == ["succeeded"]


def test_node_error_messages_with_a_nul_are_stored(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    @register_function("test_fn_nul_error", replace=True)
    def nul_error(state: dict, ctx: NodeContext) -> dict:
        raise ValueError("bad byte \x00 here")

    try:
        spec = {**function_spec("nulerr"), "max_resurrections": 0}
        spec["nodes"]["f"]["function"] = "test_fn_nul_error"
        make_graph(tenant, spec)
        run = create_run(tenant, graph="nulerr")
        assert queue.drain() == ["failed"]
    finally:
        registry.unregister("test_fn_nul_error")
    run.refresh_from_db()
    assert run.error["code"] == "node_failed"
    assert "bad byte  here" in run.error["message"]


def test_a_stretch_of_pure_steps_is_committed_before_its_state_can_pass_the_cap_far(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pure steps wait in memory for one commit; a doubling state must not grow there far
    past the cap (at most one step: the one that is then refused)."""
    from runs.services import execute as execute_module

    monkeypatch.setattr(execute_module, "PURE_BATCH_SECONDS", 60.0)
    largest: list[int] = []
    real = execute_module.Segment._commit_pending

    def spy(segment: Any) -> Any:
        if segment.pending:
            largest.append(max(_size(p.result.state) for p in segment.pending))
        return real(segment)

    monkeypatch.setattr(execute_module.Segment, "_commit_pending", spy)
    _set_cap(tenant, 20_000)
    make_graph(tenant, doubling_spec())
    run = create_run(tenant, graph="double")
    assert queue.drain() == ["failed"]
    run.refresh_from_db()
    assert run.error["code"] == "limit_exceeded.max_state_bytes"
    assert max(largest) <= 2 * 20_000 + 100


def test_a_huge_approval_message_is_capped_in_the_waiting_events(
    tenant: Tenant, make_graph: Any, queue: InlineQueue, settings
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "MAX_EVENT_BYTES": 4096}
    make_graph(
        tenant,
        {
            "name": "ask",
            "state": {"text": {"default": ""}},
            "start": "gate",
            "nodes": {
                "gate": {"kind": "approval", "message": "Approve {{ state.text }}?"},
                "done": {"kind": "end"},
            },
            "edges": [{"from": "gate", "to": "done"}],
        },
    )
    run = create_run(tenant, graph="ask", input={"text": "y" * 50_000})
    assert queue.drain() == ["waiting"]
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING
    assert len(run.waiting_for["message"]) > 50_000  # the run keeps what it waits for
    for etype in ("approval.requested", "run.waiting"):
        (data,) = _events(run, etype)
        assert _size(data) <= 4096
