"""The tree gate under real concurrency: child slots of one root never pass max_child_runs
(CI runs this on PostgreSQL too)."""

from __future__ import annotations

import pytest
from django.db import transaction

from runs.models import Run
from runs.services import create_graph_version, create_run
from runs.services.trees import take_child_slot
from tenants import limits
from tests.runs.conftest import chain_spec
from tests.runs.test_concurrency import in_threads

pytestmark = pytest.mark.django_db(transaction=True)


def test_racing_workers_never_take_more_child_slots_than_the_cap(tenant, queue) -> None:
    tenant.max_child_runs = 7
    tenant.save()
    create_graph_version(tenant, chain_spec())
    root = create_run(tenant, graph="chain")
    admitted: list[int] = []
    refused: list[str] = []

    def take(i: int) -> None:
        for _ in range(4):
            try:
                with transaction.atomic():
                    limits.admit_child_run(
                        tenant,
                        depth=1,
                        max_depth=8,
                        take_child=lambda cap: take_child_slot(root.pk, cap),
                    )
                admitted.append(i)
            except limits.LimitExceeded as exc:
                refused.append(exc.code)

    in_threads(6, take)
    root.refresh_from_db()
    assert len(admitted) == 7 and root.tree_children == 7
    assert refused == ["limit_exceeded.max_child_runs"] * (24 - 7)


def test_a_refused_child_gives_nothing_back_and_takes_nothing(tenant, queue) -> None:
    tenant.max_child_runs = 1
    tenant.save()
    create_graph_version(tenant, chain_spec())
    root = create_run(tenant, graph="chain")
    assert take_child_slot(root.pk, 1) and not take_child_slot(root.pk, 1)
    with pytest.raises(limits.LimitExceeded) as exc:
        limits.admit_child_run(
            tenant, depth=9, max_depth=8, take_child=lambda cap: take_child_slot(root.pk, cap)
        )
    assert exc.value.code == "limit_exceeded.max_depth"
    assert Run.objects.get(pk=root.pk).tree_children == 1
    assert take_child_slot(root.pk, None)  # no cap: unlimited
