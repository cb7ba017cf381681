"""Completion webhooks through the real processes: the worker makes the first attempt right
after the run ends, the scheduler retries; the receiver checks the signature."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from runs.services import create_graph_version, create_run
from tenants.models import Tenant
from tests.e2e.processes import platform
from tests.runs.conftest import chain_spec
from tests.webhooks.conftest import Receiver, receiver  # noqa: F401 - the fixture
from webhooks.models import Delivery, DeliveryAttempt
from webhooks.services import create_subscription, rotate_secret

pytestmark = pytest.mark.e2e


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_webhook_is_sent_by_the_worker_and_retried_by_the_scheduler(
    transactional_db: None,
    tenant: Tenant,
    receiver: Receiver,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    tenant.http_allowed_hosts = ["127.0.0.1"]
    tenant.http_allow_private = True
    tenant.save()
    create_graph_version(tenant, chain_spec())
    create_subscription(tenant, url=receiver.url, events=["run.succeeded"])
    secret = rotate_secret(tenant)
    receiver.answers = [500]
    with platform(tmp_path, "worker", RUNYARD_WEBHOOK_FIRST_RETRY_SECONDS="2") as live:
        run = create_run(tenant, graph="chain")
        # No scheduler yet: the first attempt can only come from the worker's queue task.
        _wait(lambda: len(receiver.requests) >= 1, 30, "the first attempt")
        run.refresh_from_db()
        assert run.status == "succeeded"
        time.sleep(3)  # past the first retry's due time: nobody but a scheduler retries
        assert len(receiver.requests) == 1
        live.start("scheduler")
        _wait(lambda: len(receiver.requests) >= 2, 30, "the retry")
        _wait(lambda: Delivery.objects.filter(status="delivered").exists(), 10, "delivered")
        logs = live.log("worker") + live.log("scheduler")
    assert len(receiver.requests) == 2, logs
    assert all(receiver.verify(r, secret) for r in receiver.requests)
    assert receiver.requests[0].json()["run"]["id"] == str(run.public_id)
    outcomes = list(DeliveryAttempt.objects.order_by("number").values_list("outcome", flat=True))
    assert outcomes == ["retrying", "delivered"]
