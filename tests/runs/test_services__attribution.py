"""Who started a run (`created_by`): recorded from every way in, shown in the API, the
dashboard and the admin, given to hooks, and in an audit row at each run's start and end."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from runs import hooks
from runs.models import Run
from runs.services import cancel_run, create_graph_version, create_run
from schedules.firing import fire_due_schedules
from schedules.services import create_cron
from tenants.models import AuditLog, Role, Tenant
from tenants.services import create_api_key
from tests.runs.conftest import chain_spec
from tests.runs.test_api__helpers import Api, error_of, session_client
from tests.schedules.conftest import at

pytestmark = pytest.mark.django_db(transaction=True)


def subgraph_spec() -> dict[str, Any]:
    return {
        "name": "outer",
        "start": "call",
        "nodes": {"call": {"kind": "subgraph", "graph": "chain"}, "done": {"kind": "end"}},
        "edges": [{"from": "call", "to": "done"}],
    }


def run_audit(run: Run) -> list[tuple[str, str, str]]:
    rows = AuditLog.objects.filter(target_type="run", target_id=str(run.public_id))
    return list(rows.order_by("id").values_list("action", "actor_label", "status_after"))


def test_an_api_key_starts_runs_as_key_and_its_name(tenant: Tenant, queue: Any) -> None:
    create_graph_version(tenant, chain_spec())
    _, raw = create_api_key(tenant, name="ci-bot", role=Role.MEMBER)
    api = Api(Client(), {"Authorization": f"Bearer {raw}"})
    body = api.post("/runs", {"graph": "chain", "priority": 5}).json()
    assert body["created_by"] == "key:ci-bot" and body["priority"] == 5
    run = Run.objects.get(public_id=body["id"])
    assert (run.created_by, run.priority) == ("key:ci-bot", 5)
    assert api.get(f"/runs/{run.public_id}").json()["created_by"] == "key:ci-bot"


def test_a_dashboard_user_starts_runs_as_user(tenant: Tenant, member: Any, queue: Any) -> None:
    create_graph_version(tenant, chain_spec())
    body = session_client(member).post("/runs", {"graph": "chain"}).json()
    assert body["created_by"] == "user:alice@example.com" and body["priority"] == 3
    client = Client()
    client.force_login(member)
    client.post(reverse("runs:graph", args=["chain"]), {"version": "1", "input": "{}"})
    assert Run.objects.filter(created_by="user:alice@example.com").count() == 2


def test_priority_out_of_range_is_422(tenant: Tenant) -> None:
    create_graph_version(tenant, chain_spec())
    _, raw = create_api_key(tenant, role=Role.MEMBER)
    api = Api(Client(), {"Authorization": f"Bearer {raw}"})
    for bad in (0, 6, "high", 2.5, None):
        response = api.post("/runs", {"graph": "chain", "priority": bad})
        assert response.status_code == 422, bad
        error_of(response)
    with pytest.raises(Exception, match="priority"):
        create_run(tenant, graph="chain", priority=9)
    assert not Run.objects.exists()


def test_a_schedule_starts_runs_as_cron_with_its_priority(tenant: Tenant, queue: Any) -> None:
    create_graph_version(tenant, chain_spec())
    cron = create_cron(
        tenant, graph="chain", schedule="*/5 * * * *", priority=4, now=at("2026-06-01 10:02")
    )
    (fired,) = fire_due_schedules(now=at("2026-06-01 10:05:01"))
    assert fired.run is not None
    run = Run.objects.get(pk=fired.run.pk)
    assert run.created_by == f"cron:{cron.public_id}" and run.priority == 4


def test_hooks_see_who_started_the_run(
    tenant: Tenant, queue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_graph_version(tenant, chain_spec())
    seen_before: list[dict[str, Any]] = []
    seen_after: list[tuple[str, int]] = []
    monkeypatch.setattr(hooks, "pre_run_hooks", [lambda t, req: seen_before.append(req)])
    monkeypatch.setattr(
        hooks, "post_run_hooks", [lambda r: seen_after.append((r.created_by, r.priority))]
    )
    create_run(tenant, graph="chain", created_by="key:ci-bot", priority=2)
    queue.drain()
    assert seen_before[0]["created_by"] == "key:ci-bot" and seen_before[0]["priority"] == 2
    assert seen_after == [("key:ci-bot", 2)]


def test_a_refused_run_is_audited_as_whoever_started_it(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_graph_version(tenant, chain_spec())
    monkeypatch.setattr(hooks, "pre_run_hooks", [lambda t, req: "frozen"])
    with pytest.raises(Exception, match="frozen"):
        create_run(tenant, graph="chain", by="api_key:abc", created_by="key:ci-bot")
    row = AuditLog.objects.get(action="run.blocked_by_hook")
    assert row.actor_label == "key:ci-bot"


def test_every_run_leaves_an_audit_row_at_its_start_and_its_end(tenant: Tenant, queue: Any) -> None:
    create_graph_version(tenant, chain_spec())
    create_graph_version(tenant, subgraph_spec())
    done = create_run(tenant, graph="chain", created_by="user:alice@example.com")
    cancelled = create_run(tenant, graph="chain", created_by="key:ci-bot")
    cancel_run(cancelled, action="interrupt", by="operator")
    outer = create_run(tenant, graph="outer", created_by="trigger:order.created")
    queue.drain()
    assert run_audit(done) == [
        ("run.created", "user:alice@example.com", "queued"),
        ("run.ended", "user:alice@example.com", "succeeded"),
    ]
    assert [(action, status) for action, _, status in run_audit(cancelled)] == [
        ("run.created", "queued"),
        ("run.ended", "cancelled"),
    ]
    ended = AuditLog.objects.get(action="run.ended", target_id=str(cancelled.public_id))
    assert ended.actor_label == "key:ci-bot" and ended.data["priority"] == 3
    child = Run.objects.get(parent=outer)
    assert child.created_by == f"run:{outer.public_id}"
    assert [a for a, _, _ in run_audit(child)] == ["run.created", "run.ended"]
    assert [a for a, _, _ in run_audit(outer)] == ["run.created", "run.ended"]
    created = AuditLog.objects.get(action="run.created", target_id=str(outer.public_id))
    assert created.data == {"graph": "outer", "version": 1, "priority": 3}
    assert created.tenant_id == tenant.pk


def test_the_dashboard_and_the_admin_show_who_started_a_run(
    tenant: Tenant, member: Any, staff: Any
) -> None:
    create_graph_version(tenant, chain_spec())
    run = create_run(tenant, graph="chain", created_by="key:ci-bot", priority=5)
    client = Client()
    client.force_login(member)
    page = client.get(reverse("runs:detail", args=[run.public_id])).content.decode()
    assert "Started by" in page and "key:ci-bot" in page and "Priority" in page
    staff.is_superuser = True
    staff.save()
    admin = Client()
    admin.force_login(staff)
    detail = admin.get(reverse("admin:runs_run_change", args=[run.pk])).content.decode()
    assert "key:ci-bot" in detail
    listing = admin.get(reverse("admin:runs_run_changelist")).content.decode()
    assert "key:ci-bot" in listing
