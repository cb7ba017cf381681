"""A step's commit writes its checkpoint, not the run's whole state: while a run executes, its
row's `state` is behind (`state_behind`) and every reader shows the last checkpoint's state;
the segment's end writes the state back, and a worker taking the run over starts from there."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from runs import checkpoints
from runs.engine import register_function
from runs.engine.functions import registry
from runs.models import Checkpoint, Run
from runs.reconcile import reconcile_once
from runs.services import cancel_run, claim_run, create_run, create_thread
from runs.services.execute import Segment
from runs.status import RunStatus
from tenants.models import Tenant
from tests.lg.conftest import key_for
from tests.runs.conftest import InlineQueue
from tests.runs.test_api__helpers import key_client
from tests.runs.test_services__controls_running import stale_beat

pytestmark = pytest.mark.django_db(transaction=True)

ENTERED = threading.Event()
RELEASE = threading.Event()


@pytest.fixture(autouse=True)
def functions() -> Iterator[None]:
    @register_function("behind_add", replace=True)
    def add(state: dict, ctx: object) -> dict:
        return {"n": state["n"] + 1, "log": f"step {state['n']}"}

    @register_function("behind_block", replace=True)
    def block(state: dict, ctx: object) -> dict:
        ENTERED.set()
        assert RELEASE.wait(20), "the test never released the step"
        return {"n": state["n"] + 1, "blocked": True}

    ENTERED.clear()
    RELEASE.clear()
    yield
    RELEASE.set()
    registry.unregister("behind_add")
    registry.unregister("behind_block")


def spec(adds: int = 3) -> dict[str, Any]:
    names = [f"a{i}" for i in range(adds)]
    order = [*names, "wait", "last", "done"]
    nodes: dict[str, Any] = {name: {"kind": "function", "function": "behind_add"} for name in names}
    nodes |= {
        "wait": {"kind": "function", "function": "behind_block"},
        "last": {"kind": "function", "function": "behind_add"},
        "done": {"kind": "end"},
    }
    return {
        "name": "behind",
        "state": {
            "n": {"reducer": "replace", "default": 0},
            "log": {"reducer": "append", "default": []},
            "blocked": {"reducer": "replace", "default": False},
        },
        "start": order[0],
        "nodes": nodes,
        "edges": [{"from": a, "to": b} for a, b in zip(order, order[1:], strict=False)],
    }


AFTER_ADDS = {"n": 3, "log": ["step 0", "step 1", "step 2"], "blocked": False}
FINAL = {"n": 5, "log": ["step 0", "step 1", "step 2", "step 4"], "blocked": True}


class Worker:
    """A real segment in a thread of its own, stopped inside the `wait` node."""

    def __init__(self, run: Run) -> None:
        self.segment = Segment(run)
        self.outcome: list[str] = []
        self.queries: list[str] = []
        self.thread = threading.Thread(target=self._work)
        self.thread.start()
        assert ENTERED.wait(10), "the run never reached its `wait` node"

    def _work(self) -> None:
        try:
            with CaptureQueriesContext(connection) as captured:
                self.outcome.append(self.segment.execute())
            self.queries = [q["sql"] for q in captured.captured_queries]
        finally:
            connection.close()

    def finish(self) -> str:
        RELEASE.set()
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()
        return self.outcome[0]


def started(tenant: Tenant, make_graph: Any, queue: InlineQueue, **kw: Any) -> Run:
    make_graph(tenant, spec())
    run = create_run(tenant, graph="behind", **kw)
    claimed = claim_run(run.pk)
    assert claimed is not None
    queue.pending.clear()  # this test is the worker its dispatch went to
    return claimed


def test_while_a_run_executes_its_row_is_behind_and_every_reader_shows_its_current_state(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    thread = create_thread(tenant)
    claimed = started(tenant, make_graph, queue, thread_id=str(thread.public_id))
    worker = Worker(claimed)
    try:
        row = Run.objects.get(pk=claimed.pk)
        # Three steps committed, none of them wrote the state: the row keeps the first one.
        assert row.status == RunStatus.RUNNING and row.steps == 3
        assert row.state_behind and row.state == {"n": 0, "log": [], "blocked": False}
        last = Checkpoint.stored.filter(run=row).order_by("-step_index").first()
        assert last is not None and last.state is None  # a delta
        assert checkpoints.current_state(row) == AFTER_ADDS

        api = key_client(tenant)
        assert api.get(f"/runs/{row.public_id}").json()["state"] == AFTER_ADDS
        (item,) = api.get("/runs").json()["items"]
        assert item["state"] == AFTER_ADDS
        lg = Client().get(f"/lg/threads/{thread.public_id}/state", HTTP_X_API_KEY=key_for(tenant))
        assert lg.status_code == 200 and lg.json()["values"] == AFTER_ADDS
    finally:
        outcome = worker.finish()
    assert outcome == "succeeded"
    row = Run.objects.get(pk=claimed.pk)
    assert row.state == FINAL and not row.state_behind
    thread.refresh_from_db()
    assert thread.state == FINAL
    # The state went into the run's row once, at the run's end, not with every step.
    runs = [q for q in worker.queries if q.startswith('UPDATE "runs_run"') or "WITH r AS" in q]
    assert len(runs) > 4
    assert [q for q in runs if '"state" =' in q] == [q for q in runs if "succeeded" in q]


def test_a_run_taken_over_from_a_worker_that_died_goes_on_from_its_last_checkpoint(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    claimed = started(tenant, make_graph, queue)
    dead = Worker(claimed)
    # Its lease runs out inside `wait`: the reconciler queues the run again, another worker
    # takes it, and the stalled one is fenced out when it comes back.
    past = timezone.now() - dt.timedelta(seconds=1)
    Run.objects.filter(pk=claimed.pk).update(heartbeat_at=None, lease_expires_at=past)
    assert [f.result for f in reconcile_once()] == ["requeued from the last checkpoint"]
    queue.pending.clear()
    ENTERED.clear()
    taken = claim_run(claimed.pk)
    assert taken is not None and taken.state_behind
    assert dead.finish() == "fenced"
    RELEASE.clear()
    second = Worker(taken)
    assert second.segment.run.state == AFTER_ADDS  # from the checkpoints, not the row
    assert second.finish() == "succeeded"
    row = Run.objects.get(pk=claimed.pk)
    assert row.state == FINAL and not row.state_behind
    # The new worker's checkpoints went on as deltas of the old chain.
    layout = list(
        Checkpoint.stored.filter(run=row).order_by("step_index").values_list("base_step", flat=True)
    )
    assert layout[0] is None and all(base == 0 for base in layout[1:]), layout


def test_a_run_ended_by_another_process_mid_run_keeps_its_current_state_for_readers(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    thread = create_thread(tenant)
    claimed = started(tenant, make_graph, queue, thread_id=str(thread.public_id))
    worker = Worker(claimed)
    try:
        Run.objects.filter(pk=claimed.pk).update(heartbeat_at=stale_beat())
        run = cancel_run(Run.objects.get(pk=claimed.pk), by="test")  # the worker looks dead
        assert run.status == RunStatus.CANCELLED
    finally:
        assert worker.finish() == "fenced"
    row = Run.objects.get(pk=claimed.pk)
    assert row.state_behind  # nobody held its current state to write back
    assert checkpoints.current_state(row) == AFTER_ADDS
    assert key_client(tenant).get(f"/runs/{row.public_id}").json()["state"] == AFTER_ADDS
    thread.refresh_from_db()
    assert thread.state == AFTER_ADDS  # the thread follows the run's current state
