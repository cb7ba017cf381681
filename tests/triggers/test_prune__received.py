"""`prune_runs` also deletes events received before its cutoff (their ids stop deduplicating)."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from runs.services import create_graph_version
from tenants.models import Tenant
from tests.triggers.conftest import echo_spec
from triggers.models import ReceivedEvent
from triggers.services import receive_event

pytestmark = pytest.mark.django_db(transaction=True)


def test_prune_runs_deletes_old_received_events_only(tenant: Tenant, queue: Any) -> None:
    create_graph_version(tenant, echo_spec("g", triggers=[{"event": "e"}]))
    old = receive_event(tenant, name="e", payload={}, event_id="old").event
    new = receive_event(tenant, name="e", payload={}, event_id="new").event
    ReceivedEvent.objects.filter(pk=old.pk).update(
        received_at=timezone.now() - dt.timedelta(days=40)
    )
    out = io.StringIO()
    call_command("prune_runs", "--older-than", "30", "--dry-run", stdout=out)
    assert "would delete 1 received event(s)" in out.getvalue()
    assert ReceivedEvent.objects.count() == 2
    out = io.StringIO()
    call_command("prune_runs", "--older-than", "30", stdout=out)
    assert "deleted 1 received event(s)" in out.getvalue()
    assert list(ReceivedEvent.objects.values_list("pk", flat=True)) == [new.pk]
    # Past the retention, the old id is a new event again.
    assert receive_event(tenant, name="e", payload={}, event_id="old").duplicate is False
