"""Many runs whose rows are behind their checkpoints (a list page of executing runs) are read
in a fixed number of queries, however many there are, each with its own current state."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from runs import checkpoints
from runs.models import Run
from runs.services import create_run
from tenants.models import Tenant
from tests.runs.conftest import InlineQueue
from tests.runs.test_api__helpers import key_client

pytestmark = pytest.mark.django_db(transaction=True)


def counted(tenant: Tenant, make_graph: Any, queue: InlineQueue, runs: int) -> list[Run]:
    """`runs` finished runs of a 4-step chain (a full checkpoint, then deltas), each started
    from another count, whose rows are then put back as a worker mid-run leaves them: the
    first state, `state_behind` set. Their last checkpoints hold the states to show."""
    make_graph(
        tenant,
        {
            "name": "counting",
            "state": {"count": {"default": 0}, "seen": {"reducer": "append", "default": []}},
            "start": "n0",
            "nodes": {
                **{
                    f"n{i}": {
                        "kind": "transform",
                        "set": {"count": "state.count + 1", "seen": f"'n{i}'"},
                    }
                    for i in range(4)
                },
                "done": {"kind": "end"},
            },
            "edges": [
                {"from": a, "to": b}
                for a, b in [("n0", "n1"), ("n1", "n2"), ("n2", "n3"), ("n3", "done")]
            ],
        },
    )
    made = [create_run(tenant, graph="counting", input={"count": 10 * i}) for i in range(runs)]
    queue.drain()
    for i, run in enumerate(made):
        run.refresh_from_db()
        assert run.state == {"count": 10 * i + 4, "seen": ["n0", "n1", "n2", "n3"]}
        Run.objects.filter(pk=run.pk).update(state={"count": 10 * i, "seen": []}, state_behind=True)
    return list(Run.objects.filter(pk__in=[r.pk for r in made]).order_by("pk"))


def test_current_states_of_many_behind_runs_take_three_queries_and_replay_each_run(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    runs = counted(tenant, make_graph, queue, 6)
    with CaptureQueriesContext(connection) as one:
        assert checkpoints.current_states(runs[:1]) == {
            runs[0].pk: {"count": 4, "seen": ["n0", "n1", "n2", "n3"]}
        }
    with CaptureQueriesContext(connection) as six:
        states = checkpoints.current_states(runs)
    # The last checkpoints, the deltas' bases, the runs' graphs: as many for six as for one.
    assert len(six.captured_queries) == len(one.captured_queries) == 3
    assert states == {
        run.pk: {"count": 10 * i + 4, "seen": ["n0", "n1", "n2", "n3"]}
        for i, run in enumerate(runs)
    }
    assert checkpoints.current_states([]) == {}


def test_the_run_list_reads_behind_runs_with_the_same_queries_for_one_or_many(
    tenant: Tenant, make_graph: Any, queue: InlineQueue
) -> None:
    runs = counted(tenant, make_graph, queue, 5)
    api = key_client(tenant)
    api.get("/runs")  # the key's first use writes when it was used
    Run.objects.filter(pk__in=[r.pk for r in runs[1:]]).update(state_behind=False)
    with CaptureQueriesContext(connection) as one_behind:
        page = api.get("/runs").json()["items"]
    assert page[-1]["state"] == {"count": 4, "seen": ["n0", "n1", "n2", "n3"]}
    Run.objects.filter(pk__in=[r.pk for r in runs]).update(state_behind=True)
    with CaptureQueriesContext(connection) as all_behind:
        page = api.get("/runs").json()["items"]
    assert [item["state"]["count"] for item in page] == [44, 34, 24, 14, 4]
    assert len(all_behind.captured_queries) == len(one_behind.captured_queries)
