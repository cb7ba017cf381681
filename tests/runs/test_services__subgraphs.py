"""Run trees are bounded and admitted: child runs go through the tenant gate, share the root's
limits, and a parent re-running a subgraph node reuses the child it already started (#15)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.db.models import Sum

from runs.engine import SpecError, parse_spec, register_function
from runs.models import Checkpoint, Event, Graph, Run, Step
from runs.services import ValidationFailed, create_graph_version, create_run
from runs.status import TERMINAL, RunStatus
from tests.factories import make_tenant
from tests.runs.test_services__limits import llm_chain

pytestmark = pytest.mark.django_db(transaction=True)

CRASHES: list[int] = []


class WorkerKilled(BaseException):
    """Stands in for the worker process dying: nothing in the runtime catches it."""


@register_function("dies_once", replace=True)
def dies_once(state: dict, ctx: object) -> dict:
    CRASHES.append(1)
    if len(CRASHES) == 1:
        raise WorkerKilled
    return {"survived": True}


def fan_out_spec(name: str = "bomb", *, max_depth: int = 4, branches: int = 3) -> dict[str, Any]:
    """The hostile graph: a parallel of `branches` subgraph calls of this same graph."""
    nodes: dict[str, Any] = {
        f"call{i}": {"kind": "subgraph", "graph": name, "output": f"out{i}"}
        for i in range(branches)
    }
    nodes["fan"] = {"kind": "parallel", "branches": [f"call{i}" for i in range(branches)]}
    nodes["done"] = {"kind": "end"}
    return {
        "name": name,
        "max_depth": max_depth,
        "start": "fan",
        "nodes": nodes,
        "edges": [{"from": "fan", "to": "done"}],
    }


def call_spec(name: str, child: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "start": "call",
        "nodes": {
            "call": {"kind": "subgraph", "graph": child, "output": "child"},
            "done": {"kind": "end"},
        },
        "edges": [{"from": "call", "to": "done"}],
        **extra,
    }


def test_the_fan_out_bomb_stops_at_max_child_runs_within_seconds(queue) -> None:
    tenant = make_tenant("hostile", max_concurrent_runs=1, max_queued_runs=1, max_child_runs=25)
    create_graph_version(tenant, fan_out_spec())
    started = time.monotonic()
    run = create_run(tenant, graph="bomb")
    assert queue.drain() == ["failed"]
    assert time.monotonic() - started < 20
    run.refresh_from_db()
    # Which bound trips first depends on thread timing: the tenant's child cap, or (when one
    # path of branches races to depth 5 first) the graph's own max_depth of 4.
    assert run.error["code"] == "limit_exceeded.max_child_runs" or "depth_exceeded" in str(
        run.error
    )
    children = Run.objects.filter(root=run)
    assert 0 < children.count() <= 25
    assert run.tree_children == children.count()
    # Branches cancelled by fail_fast end their children within moments; then nothing is
    # left running, queued or holding a slot, and the tenant's counters are back at 0.
    deadline = time.monotonic() + 10
    while children.exclude(status__in=TERMINAL).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(children.values_list("status", flat=True)) <= TERMINAL
    assert not Run.objects.filter(holds_slot=True).exists()
    tenant.refresh_from_db()
    assert tenant.running_count == 0 and tenant.queued_count == 0


def test_the_child_cap_fails_the_root_with_limit_exceeded(tenant, queue) -> None:
    """Cap 3 trips before any path of the bomb can reach depth 5: the outcome is exact."""
    tenant.max_child_runs = 3
    tenant.save()
    create_graph_version(tenant, fan_out_spec())
    run = create_run(tenant, graph="bomb")
    assert queue.drain() == ["failed"]
    run.refresh_from_db()
    assert run.error["code"] == "limit_exceeded.max_child_runs"
    assert run.error["cap"] == 3
    assert Run.objects.filter(root=run).count() == 3 == run.tree_children
    limit_events = Event.objects.filter(run=run, type="limit.exceeded")
    assert [e.data["limit"] for e in limit_events] == ["max_child_runs"]
    children = Run.objects.filter(root=run)
    deadline = time.monotonic() + 10
    while children.exclude(status__in=TERMINAL).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(children.values_list("status", flat=True)) <= TERMINAL


def test_children_do_not_need_a_second_concurrency_slot(queue) -> None:
    tenant = make_tenant("narrow", max_concurrent_runs=1, max_queued_runs=1)
    create_graph_version(tenant, llm_chain(2))
    create_graph_version(tenant, call_spec("outer", "talk"))
    run = create_run(tenant, graph="outer")
    assert queue.drain() == ["succeeded"]
    child = Run.objects.get(parent=run)
    assert child.root_id == run.pk and not child.holds_slot and child.dispatched_at is not None


def test_max_depth_above_the_ceiling_is_refused_at_validation(tenant) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec(fan_out_spec(max_depth=9))
    assert [p.where for p in exc.value.problems] == ["max_depth"]
    assert "at most 8" in exc.value.problems[0].message
    with pytest.raises(ValidationFailed):
        create_graph_version(tenant, fan_out_spec(max_depth=9))
    assert parse_spec(fan_out_spec(max_depth=8)).max_depth == 8


def test_a_stored_spec_past_the_ceiling_is_clamped_at_run_time(tenant, queue) -> None:
    """A version stored before the ceiling still runs; the gate stops its tree at depth 8."""
    tenant.max_child_runs = None
    tenant.save()
    graph = create_graph_version(tenant, call_spec("deep", "deep", max_depth=8))
    old = {**graph.spec, "max_depth": 50}
    Graph.objects.filter(pk=graph.pk).update(spec=old, hash="old-" + graph.hash[4:])
    run = create_run(tenant, graph="deep")
    assert queue.drain() == ["failed"]
    run.refresh_from_db()
    assert run.error["code"] == "limit_exceeded.max_depth"
    assert Run.objects.filter(root=run).count() == 8
    assert max(Run.objects.filter(root=run).values_list("depth", flat=True)) == 8


def test_the_tree_shares_the_roots_max_steps(tenant, queue) -> None:
    create_graph_version(tenant, llm_chain(4))  # 5 steps on its own
    outer = call_spec("outer", "talk")
    outer["nodes"].update(
        {
            "t1": {"kind": "transform", "set": {"a": "1"}},
            "t2": {"kind": "transform", "set": {"b": "2"}},
        }
    )
    outer["start"] = "t1"
    outer["edges"] += [{"from": "t1", "to": "t2"}, {"from": "t2", "to": "call"}]
    create_graph_version(tenant, outer)
    tenant.max_steps = 5  # the child alone fits (its 5th step ends it); the tree does not
    tenant.save()
    alone = create_run(tenant, graph="talk")
    assert queue.drain() == ["succeeded"]
    run = create_run(tenant, graph="outer")
    assert queue.drain() == ["failed"]
    run.refresh_from_db()
    child = Run.objects.get(parent=run)
    assert child.error["code"] == "limit_exceeded.max_steps"
    assert run.error["code"] == "limit_exceeded.max_steps"
    # The root had used 2 steps, so its child was stopped after 3.
    assert (run.steps, child.steps, run.tree_steps) == (3, 3, 3)
    alone.refresh_from_db()
    assert alone.steps == 5


def test_the_tree_shares_the_roots_max_tokens(tenant, queue) -> None:
    create_graph_version(tenant, llm_chain(3))
    create_graph_version(
        tenant,
        {
            **call_spec("outer", "talk"),
            "nodes": {
                "call": {"kind": "subgraph", "graph": "talk", "output": "first"},
                "again": {"kind": "subgraph", "graph": "talk", "output": "second"},
                "done": {"kind": "end"},
            },
            "edges": [{"from": "call", "to": "again"}, {"from": "again", "to": "done"}],
        },
    )
    probe = create_run(tenant, graph="talk")
    queue.drain()
    probe.refresh_from_db()
    per_child = probe.tokens_in + probe.tokens_out
    tenant.max_tokens = int(per_child * 1.5)  # one child fits, two do not
    tenant.save()
    run = create_run(tenant, graph="outer")
    assert queue.drain() == ["failed"]
    run.refresh_from_db()
    assert run.error["code"] == "limit_exceeded.max_tokens"
    first, second = Run.objects.filter(parent=run).order_by("id")
    assert first.status == RunStatus.SUCCEEDED
    assert second.error["code"] == "limit_exceeded.max_tokens"
    used = Run.objects.filter(root=run).aggregate(t=Sum("tokens_in"), o=Sum("tokens_out"))
    assert run.tree_tokens == used["t"] + used["o"]


def test_a_parent_re_running_its_subgraph_node_reuses_the_succeeded_child(tenant, queue) -> None:
    create_graph_version(tenant, llm_chain(2))
    create_graph_version(tenant, call_spec("outer", "talk"))
    run = create_run(tenant, graph="outer")
    assert queue.drain() == ["succeeded"]
    child = Run.objects.get(parent=run)
    # As if the worker died after the child ended but before the parent's step committed:
    # back to the checkpoint before the subgraph node, and run again.
    before = Checkpoint.objects.get(run=run, step_index=0)
    Step.objects.filter(run=run).delete()
    Checkpoint.objects.filter(run=run, step_index__gt=0).delete()
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.QUEUED,
        state=before.state,
        position=before.position,
        steps=0,
        dispatched_at=None,
        finished_at=None,
    )
    from runs.dispatch import dispatch_once

    dispatch_once()
    assert queue.drain() == ["succeeded"]
    assert list(Run.objects.filter(parent=run)) == [child]
    run.refresh_from_db()
    assert run.state["child"] == child.state and run.tree_children == 1


def test_a_child_killed_mid_run_is_taken_over_by_the_recovered_parent(tenant, queue) -> None:
    from runs.reconcile import reconcile_once

    CRASHES.clear()
    create_graph_version(
        tenant,
        {
            "name": "fragile",
            "start": "first",
            "nodes": {
                "first": {"kind": "transform", "set": {"n": "1"}},
                "risky": {"kind": "function", "function": "dies_once"},
                "done": {"kind": "end"},
            },
            "edges": [{"from": "first", "to": "risky"}, {"from": "risky", "to": "done"}],
        },
    )
    create_graph_version(tenant, call_spec("outer", "fragile"))
    run = create_run(tenant, graph="outer")
    with pytest.raises(WorkerKilled):
        queue.drain()
    child = Run.objects.get(parent=run)
    assert child.status == RunStatus.RUNNING and child.steps == 1
    expire = {"lease_expires_at": child.created_at}
    Run.objects.filter(pk__in=[run.pk, child.pk]).update(**expire)
    findings = reconcile_once()
    # Only the parent is resumed; the child is left for it.
    assert [(f.run_id, f.action) for f in findings] == [(str(run.public_id), "resume")]
    assert queue.drain() == ["succeeded"]
    child.refresh_from_db()
    assert list(Run.objects.filter(parent=run)) == [child]
    assert child.status == RunStatus.SUCCEEDED and child.state["survived"] is True
    assert child.steps == 3  # the first step was not run again
    assert len(CRASHES) == 2


FLAKY: list[int] = []


@register_function("fails_once_in_child", replace=True)
def fails_once_in_child(state: dict, ctx: object) -> dict:
    FLAKY.append(1)
    if len(FLAKY) == 1:
        raise RuntimeError("the service fell over")
    return {"ok": True}


def test_a_child_resurrects_inline_without_being_dispatched(tenant, queue) -> None:
    FLAKY.clear()
    create_graph_version(
        tenant,
        {
            "name": "flaky",
            "max_resurrections": 1,
            "start": "call",
            "nodes": {
                "call": {"kind": "function", "function": "fails_once_in_child"},
                "done": {"kind": "end"},
            },
            "edges": [{"from": "call", "to": "done"}],
        },
    )
    create_graph_version(tenant, call_spec("outer", "flaky"))
    run = create_run(tenant, graph="outer")
    assert queue.drain() == ["succeeded"]
    child = Run.objects.get(parent=run)
    assert child.status == RunStatus.SUCCEEDED and child.resurrections == 1
    assert queue.delivered == [run.pk]  # the child never went to the broker


def test_the_roots_wall_time_stops_its_children(tenant, queue) -> None:
    create_graph_version(
        tenant,
        {
            "name": "slowpoke",
            "start": "nap",
            "nodes": {"nap": {"kind": "sleep", "seconds": 4}, "done": {"kind": "end"}},
            "edges": [{"from": "nap", "to": "done"}],
        },
    )
    create_graph_version(tenant, call_spec("outer", "slowpoke"))
    tenant.max_wall_seconds = 1
    tenant.save()
    started = time.monotonic()
    run = create_run(tenant, graph="outer")
    queue.drain()
    assert time.monotonic() - started < 3.5
    run.refresh_from_db()
    child = Run.objects.get(parent=run)
    assert run.error["code"] == "limit_exceeded.max_wall_seconds"
    assert child.status == RunStatus.TIMED_OUT


def test_branches_past_the_child_cap_are_refused_without_the_database(
    tenant, queue, monkeypatch
) -> None:
    """A wide fan-out used to open one connection per refused branch (PostgreSQL ran out of
    connections for every tenant): once this process has admitted `max_child_runs` children of
    a root, further calls are refused from memory, and admissions take turns."""
    from runs.services import subgraphs

    lookups: list[str] = []
    real_get_graph = subgraphs.get_graph

    def counting_get_graph(tenant_: Any, name: str) -> Graph:
        lookups.append(name)
        return real_get_graph(tenant_, name)

    monkeypatch.setattr(subgraphs, "get_graph", counting_get_graph)
    tenant.max_child_runs = 3
    tenant.save()
    create_graph_version(tenant, fan_out_spec(branches=8))
    run = create_run(tenant, graph="bomb")
    assert queue.drain() == ["failed"]
    run.refresh_from_db()
    assert run.error["code"] == "limit_exceeded.max_child_runs"
    # Only the admitted children looked their graph up; the other branches never got that far.
    assert len(lookups) == 3 == Run.objects.filter(root=run).count()
