"""The graphs page lists the tenant's triggers and what its events started (and refused)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from runs.services import create_graph_version
from tenants.models import Tenant
from tests.triggers.conftest import echo_spec
from triggers.services import receive_event

pytestmark = pytest.mark.django_db(transaction=True)


def page_of(user: Any) -> str:
    client = Client()
    client.force_login(user)
    response = client.get(reverse("runs:graphs"))
    assert response.status_code == 200
    return response.content.decode()


def test_the_graphs_page_lists_triggers_and_the_runs_events_started(
    tenant: Tenant, member: Any, queue: Any
) -> None:
    create_graph_version(tenant, echo_spec("on-order", triggers=[{"event": "order.created"}]))
    create_graph_version(
        tenant, echo_spec("mapped", triggers=[{"event": "order.created", "input": {"a": "1"}}])
    )
    Tenant.objects.filter(pk=tenant.pk).update(max_queued_runs=1)
    received = receive_event(tenant, name="order.created", payload={}, event_id="evt-77")
    (started,) = received.started
    (refused,) = received.refused
    html = page_of(member)
    assert 'id="trigger-subscriptions"' in html and 'data-event="order.created"' in html
    assert "(input mapped)" in html
    assert f'data-received="{received.event.public_id}"' in html and "evt-77" in html
    assert reverse("runs:detail", args=[started["run_id"]]) in html
    assert refused["code"] in html


def test_another_tenants_triggers_and_events_never_show(
    tenant: Tenant, other_tenant: Tenant, member: Any, outsider: Any, queue: Any
) -> None:
    create_graph_version(other_tenant, echo_spec("secret", triggers=[{"event": "bob.only"}]))
    receive_event(other_tenant, name="bob.only", payload={}, event_id="bob-evt")
    html = page_of(member)
    assert "bob.only" not in html and "bob-evt" not in html
    assert "No graph subscribes to an event yet." in html and "No events received yet." in html
    assert "bob.only" in page_of(outsider)


def test_operators_see_received_events_in_the_admin(tenant: Tenant, staff: Any, queue: Any) -> None:
    create_graph_version(tenant, echo_spec("on-order", triggers=[{"event": "order.created"}]))
    received = receive_event(tenant, name="order.created", payload={"n": 1}, event_id="e-1")
    staff.is_superuser = True
    staff.save()
    client = Client()
    client.force_login(staff)
    listing = client.get(reverse("admin:triggers_receivedevent_changelist"))
    assert listing.status_code == 200 and "e-1" in listing.content.decode()
    detail = client.get(
        reverse("admin:triggers_receivedevent_change", args=[received.event.pk])
    ).content.decode()
    assert received.started[0]["run_id"] in detail


def test_a_graphs_page_shows_its_cap_and_triggers_and_starts_runs_with_a_priority(
    tenant: Tenant, member: Any, queue: Any
) -> None:
    from runs.models import Run

    create_graph_version(
        tenant,
        echo_spec("capped", limits={"max_concurrent_runs": 2}, triggers=[{"event": "go"}]),
    )
    create_graph_version(tenant, echo_spec("plain"))
    client = Client()
    client.force_login(member)
    html = client.get(reverse("runs:graph", args=["capped"])).content.decode()
    assert "At most 2 runs of this graph at once (0 now)" in html and "<code>go</code>" in html
    assert "No per-graph cap" in client.get(reverse("runs:graph", args=["plain"])).content.decode()
    response = client.post(
        reverse("runs:graph", args=["capped"]),
        {"version": "", "input": "{}", "metadata": "{}", "priority": "5"},
    )
    assert response.status_code == 302
    run = Run.objects.get()
    assert (run.priority, run.created_by) == (5, "user:alice@example.com")
