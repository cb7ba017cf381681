"""Per-graph `limits.max_concurrent_runs` and run priority at dispatch, with racing
dispatchers (CI runs this file on PostgreSQL too)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db.models import Count

from runs import dispatch
from runs.models import Run
from runs.services import create_graph_version, create_run
from runs.services.claim import claim_next
from runs.services.lifecycle import release_run_slot
from tenants.models import GraphLimit, Tenant
from tests.factories import make_tenant
from tests.runs.conftest import chain_spec
from tests.runs.test_concurrency import in_threads

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch, settings: Any) -> list[int]:
    """Runs handed to the broker (not executed); new runs wait for an explicit dispatch; the
    cluster has room for every run here (only the tenants' and graphs' caps bind)."""
    settings.RUNYARD = {**settings.RUNYARD, "DISPATCH_CAPACITY": 100}
    sent: list[int] = []
    monkeypatch.setattr(dispatch, "enqueue_run", sent.append)
    monkeypatch.setattr(dispatch, "dispatch_on_commit", lambda: None)
    monkeypatch.setattr(dispatch, "send_dispatch_in_transaction", lambda: lambda: None)
    return sent


def in_flight_by_graph() -> dict[str, int]:
    rows = (
        Run.objects.filter(holds_slot=True)
        .values("graph__name")
        .annotate(n=Count("id"))
        .values_list("graph__name", "n")
    )
    return dict(rows)


def graph_counters() -> dict[str, int]:
    return dict(GraphLimit.objects.values_list("graph_name", "running_count"))


def test_a_graph_cap_holds_under_racing_dispatchers_and_never_blocks_other_graphs(
    held: list[int],
) -> None:
    tenant = make_tenant("lanes", max_concurrent_runs=10, runs_per_minute=None)
    create_graph_version(tenant, chain_spec("capped", limits={"max_concurrent_runs": 2}))
    create_graph_version(tenant, chain_spec("free"))
    # The capped graph's runs are the oldest: a per-tenant queue head would block on them.
    for _ in range(8):
        create_run(tenant, graph="capped")
    for _ in range(5):
        create_run(tenant, graph="free")
    observed: list[dict[str, int]] = []

    def race(i: int) -> None:
        for _ in range(5):
            if i % 2:
                claim_next()
            else:
                dispatch.dispatch_once()
            observed.append(in_flight_by_graph())

    in_threads(4, race)
    assert in_flight_by_graph() == {"capped": 2, "free": 5}
    assert graph_counters() == {"capped": 2, "free": 5}
    assert Tenant.objects.get(pk=tenant.pk).running_count == 7
    assert max(seen.get("capped", 0) for seen in observed) <= 2

    # A capped run ends: exactly one more of its graph goes, even with dispatchers racing.
    release_run_slot(Run.objects.filter(holds_slot=True, graph__name="capped").first())
    in_threads(4, lambda i: dispatch.dispatch_once())
    assert in_flight_by_graph() == {"capped": 2, "free": 5}
    assert graph_counters() == {"capped": 2, "free": 5}


def test_the_tenants_cap_bounds_a_graph_whose_own_cap_is_larger(held: list[int]) -> None:
    tenant = make_tenant("small", max_concurrent_runs=2, runs_per_minute=None)
    create_graph_version(tenant, chain_spec("wide", limits={"max_concurrent_runs": 50}))
    for _ in range(5):
        create_run(tenant, graph="wide")
    in_threads(3, lambda i: dispatch.dispatch_once())
    assert in_flight_by_graph() == {"wide": 2}


def test_a_finished_run_gives_its_graph_slot_back_once(queue: Any) -> None:
    tenant = make_tenant("once", max_concurrent_runs=5, runs_per_minute=None)
    create_graph_version(tenant, chain_spec("one", limits={"max_concurrent_runs": 1}))
    runs = [create_run(tenant, graph="one") for _ in range(3)]
    assert graph_counters() == {"one": 1}  # dispatched on commit: one slot, one run
    queue.drain()
    assert all(Run.objects.get(pk=r.pk).status == "succeeded" for r in runs)
    assert graph_counters() == {"one": 0}
    assert Tenant.objects.get(pk=tenant.pk).running_count == 0


def test_a_new_version_sets_the_graphs_cap_for_runs_already_queued(held: list[int]) -> None:
    tenant = make_tenant("recap", max_concurrent_runs=10, runs_per_minute=None)
    create_graph_version(tenant, chain_spec("g"))
    for _ in range(4):
        create_run(tenant, graph="g")
    assert dispatch.dispatch_once(max_runs=1) == 1
    create_graph_version(tenant, chain_spec("g", limits={"max_concurrent_runs": 2}))
    assert dispatch.dispatch_once() == 1  # one was in flight before the cap: counted
    assert in_flight_by_graph() == {"g": 2}
    create_graph_version(tenant, chain_spec("g", n=4))  # no limits: the cap goes
    assert dispatch.dispatch_once() == 2


def test_a_tenants_runs_start_by_priority_then_age(held: list[int]) -> None:
    tenant = make_tenant("prio", max_concurrent_runs=1, runs_per_minute=None)
    create_graph_version(tenant, chain_spec())
    made = [(p, create_run(tenant, graph="chain", priority=p).pk) for p in (1, 3, 5, 3, 5, 2)]
    order: list[int] = []
    for _ in made:
        assert dispatch.dispatch_once() == 1
        order.append(held[-1])
        release_run_slot(Run.objects.get(pk=held[-1]))
    expected = [pk for _, pk in sorted(made, key=lambda item: (-item[0], item[1]))]
    assert order == expected


def test_racing_dispatchers_take_the_highest_priorities(held: list[int]) -> None:
    tenant = make_tenant("prio-race", max_concurrent_runs=3, runs_per_minute=None)
    create_graph_version(tenant, chain_spec())
    low = [create_run(tenant, graph="chain", priority=1).pk for _ in range(6)]
    high = [create_run(tenant, graph="chain", priority=4).pk for _ in range(2)]
    top = create_run(tenant, graph="chain", priority=5).pk
    in_threads(4, lambda i: claim_next() if i % 2 else dispatch.dispatch_once())
    flagged = set(Run.objects.filter(holds_slot=True).values_list("pk", flat=True))
    assert flagged == {top, *high}
    assert not flagged & set(low)


def test_priority_does_not_let_one_tenant_starve_another(held: list[int]) -> None:
    busy = make_tenant("busy", max_concurrent_runs=10, runs_per_minute=None)
    quiet = make_tenant("quiet", max_concurrent_runs=10, runs_per_minute=None)
    for t in (busy, quiet):
        create_graph_version(t, chain_spec())
    for _ in range(6):
        create_run(busy, graph="chain", priority=5)
    low = create_run(quiet, graph="chain", priority=1)
    assert dispatch.dispatch_once(max_runs=2) == 2
    assert low.pk in held  # round robin across tenants, whatever their runs' priorities


def test_a_fork_or_unprioritised_run_is_priority_3(held: list[int]) -> None:
    tenant = make_tenant("default", runs_per_minute=None)
    create_graph_version(tenant, chain_spec())
    assert create_run(tenant, graph="chain").priority == 3


def test_a_graph_slot_lost_to_a_race_leaves_the_run_queued_and_the_tenant_slot_free(
    held: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The candidate query saw room in the run's graph; another dispatcher took the graph's
    last slot before this one could: the run's mark and the tenant's slot are undone."""
    tenant = make_tenant("raced", max_concurrent_runs=5, runs_per_minute=None)
    create_graph_version(tenant, chain_spec("capped", limits={"max_concurrent_runs": 1}))
    run = create_run(tenant, graph="capped")
    # The candidate query read before the other dispatcher's slot was taken.
    monkeypatch.setattr(
        dispatch, "candidates", lambda: Run.objects.filter(pk=run.pk).values_list("tenant_id", "id")
    )
    GraphLimit.objects.filter(tenant=tenant).update(running_count=1)
    assert dispatch.dispatch_once() == 0
    run.refresh_from_db()
    assert (run.status, run.dispatched_at, run.holds_slot) == ("queued", None, False)
    assert Tenant.objects.get(pk=tenant.pk).running_count == 0
    assert held == []
    GraphLimit.objects.filter(tenant=tenant).update(running_count=0)  # the slot is free again
    monkeypatch.undo()
    monkeypatch.setattr(dispatch, "enqueue_run", held.append)
    assert dispatch.dispatch_once() == 1 and held == [run.pk]
    assert graph_counters() == {"capped": 1}
