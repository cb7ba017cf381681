"""/admin/runs/reconcile/: the dry run lists every orphan with its evidence and planned action;
resolving (selected or all, POST with CSRF) shows per-run results and audits each run."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from runs.models import Run
from runs.services import claim_run, requeue_run
from runs.status import RunStatus
from tenants.models import AuditLog, Tenant
from tests.factories import make_user
from tests.runs.conftest import InlineQueue
from tests.runs.test_admin__actions import roomy_dispatcher, run_in  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db(transaction=True)


def operator_rows() -> Any:
    """Audit rows of operator actions (every run also leaves its own created/ended rows)."""
    return AuditLog.objects.exclude(action__in=("run.created", "run.ended"))


URL = "/admin/runs/reconcile/"
LONG_AGO = dt.timedelta(minutes=10)


@pytest.fixture
def staff_client(staff: Any) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def orphans(tenant: Tenant, other_tenant: Tenant, queue: InlineQueue) -> dict[str, Run]:
    """One run of each kind the reconciler looks for, plus a healthy one it must ignore."""
    past = timezone.now() - LONG_AGO
    runs = {
        "expired": run_in("running", tenant, queue),
        "cancelling": run_in("cancelling", other_tenant, queue),
        "unclaimed": run_in("queued", tenant, queue),
        "overdue": run_in("waiting", tenant, queue),
        "healthy": run_in("running", tenant, queue),
    }
    Run.objects.filter(pk__in=[runs["expired"].pk, runs["cancelling"].pk]).update(
        lease_expires_at=past, heartbeat_at=past - dt.timedelta(seconds=5)
    )
    Run.objects.filter(pk=runs["unclaimed"].pk).update(dispatched_at=past)
    Run.objects.filter(pk=runs["overdue"].pk).update(wait_deadline=past)
    queue.pending.clear()
    return {name: Run.objects.select_related("tenant").get(pk=r.pk) for name, r in runs.items()}


def rows_by_run(page: Any) -> dict[str, Any]:
    return {row.finding.run_id: row for row in page.context["rows"]}


def snapshot() -> dict[int, tuple[str, int]]:
    return dict(
        (pk, (status, epoch))
        for pk, status, epoch in Run.objects.values_list("pk", "status", "epoch")
    )


def test_the_page_is_at_its_address() -> None:
    assert reverse("admin:runs_reconcile") == URL


def test_dry_run_lists_every_candidate_with_evidence_and_changes_nothing(
    staff_client: Client, orphans: dict[str, Run]
) -> None:
    before = snapshot()
    page = staff_client.get(URL)
    assert page.status_code == 200
    rows = rows_by_run(page)
    planned = {
        name: rows[str(run.public_id)].finding
        for name, run in orphans.items()
        if str(run.public_id) in rows
    }
    assert set(planned) == {"expired", "cancelling", "unclaimed", "overdue"}
    assert (planned["expired"].problem, planned["expired"].action) == ("lease_expired", "resume")
    assert (planned["cancelling"].problem, planned["cancelling"].action) == (
        "lease_expired",
        "cancel",
    )
    assert (planned["unclaimed"].problem, planned["unclaimed"].action) == (
        "never_claimed",
        "redispatch",
    )
    assert (planned["overdue"].problem, planned["overdue"].action) == ("deadline_passed", "reject")

    expired = rows[str(orphans["expired"].public_id)]
    assert expired.finding.evidence["lease_owner"] == "worker-1"
    assert expired.lease_expires_at is not None and expired.heartbeat_at is not None
    html = page.content.decode()
    for text in [
        "worker-1",
        "lease expired",
        "dispatched, never claimed",
        "wait past its deadline",
        "gate@1",
        "resume",
        "redispatch",
        "reject",
        "1/0",
    ]:
        assert text in html, text
    assert snapshot() == before
    assert not operator_rows().exists()


def test_dry_run_shows_the_last_step_node(staff_client: Client, orphans: dict[str, Run]) -> None:
    row = rows_by_run(staff_client.get(URL))[str(orphans["overdue"].public_id)]
    assert row.finding.evidence["last_step"] == 1 and row.last_node == "before"


def test_resolve_selected_resolves_only_those_and_audits_them(
    staff_client: Client, staff: Any, orphans: dict[str, Run], queue: InlineQueue
) -> None:
    page = staff_client.get(URL)
    rows = rows_by_run(page)
    chosen = rows[str(orphans["expired"].public_id)]
    response = staff_client.post(
        URL,
        {
            "resolve_selected": "1",
            "selected": [chosen.token],
            "listed": [r.token for r in rows.values()],
            "reason": "worker host died",
        },
    )
    assert response.status_code == 200
    [result] = response.context["results"]
    assert result["result"] == "requeued from the last checkpoint"
    assert result["run"].status == RunStatus.QUEUED and result["run"].recoveries == 1
    for name in ("cancelling", "unclaimed", "overdue"):
        assert Run.objects.get(pk=orphans[name].pk).status == orphans[name].status
    row = operator_rows().get()
    assert row.action == "run.reconcile" and row.actor == staff
    assert row.target_id == str(orphans["expired"].public_id)
    assert (row.status_before, row.status_after) == ("running", "queued")
    assert row.reason == "worker host died"
    assert row.data["problem"] == "lease_expired" and row.data["evidence"]["lease_owner"]
    assert "Resolved 1 run(s); 0 skipped." in [str(m) for m in get_messages(response.wsgi_request)]
    # The page lists what is left, for the next round.
    left = {r.finding.run_id for r in response.context["rows"]}
    assert str(orphans["expired"].public_id) not in left
    assert len(left) == 3
    queue.drain()
    assert Run.objects.get(pk=orphans["expired"].pk).status == RunStatus.SUCCEEDED


def test_resolve_all_resolves_every_listed_run(
    staff_client: Client, orphans: dict[str, Run]
) -> None:
    rows = rows_by_run(staff_client.get(URL))
    response = staff_client.post(
        URL, {"resolve_all": "1", "listed": [r.token for r in rows.values()], "reason": ""}
    )
    results = {r["run_id"]: r for r in response.context["results"]}
    assert len(results) == 4
    status = {name: Run.objects.get(pk=run.pk).status for name, run in orphans.items()}
    assert status == {
        "expired": "queued",
        "cancelling": "cancelled",
        "unclaimed": "queued",
        "overdue": "queued",
        "healthy": "running",
    }
    assert results[str(orphans["overdue"].public_id)]["result"] == "default reject applied"
    assert results[str(orphans["unclaimed"].public_id)]["result"] == "dispatched again"
    assert operator_rows().filter(action="run.reconcile").count() == 4
    assert response.context["rows"] == []
    assert b"Nothing to reconcile." in response.content


def test_a_run_that_changed_since_the_dry_run_is_skipped(
    staff_client: Client, orphans: dict[str, Run]
) -> None:
    rows = rows_by_run(staff_client.get(URL))
    token = rows[str(orphans["expired"].public_id)].token
    # An operator requeued it meanwhile; then its new lease expired too (another epoch).
    requeue_run(Run.objects.get(pk=orphans["expired"].pk), by="someone")
    claim_run(orphans["expired"].pk, worker="worker-2")
    Run.objects.filter(pk=orphans["expired"].pk).update(lease_expires_at=timezone.now() - LONG_AGO)
    moved = Run.objects.get(pk=orphans["expired"].pk)
    response = staff_client.post(URL, {"resolve_selected": "1", "selected": [token]})
    [result] = response.context["results"]
    assert result["result"].startswith("skipped: changed since the dry run")
    assert Run.objects.get(pk=moved.pk).status == RunStatus.RUNNING
    assert Run.objects.get(pk=moved.pk).epoch == moved.epoch  # untouched by the reconciler
    assert operator_rows().get().data["result"].startswith("skipped")


def test_resolving_nothing_changes_nothing(staff_client: Client, orphans: dict[str, Run]) -> None:
    before = snapshot()
    response = staff_client.post(URL, {"resolve_selected": "1"})
    assert response.status_code == 200
    assert snapshot() == before
    assert not operator_rows().exists()


def test_post_needs_csrf(staff: Any, orphans: dict[str, Run]) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    page = client.get(URL)
    tokens = [r.token for r in page.context["rows"]]
    before = snapshot()
    assert client.post(URL, {"resolve_all": "1", "listed": tokens}).status_code == 403
    assert snapshot() == before
    csrf = page.context["csrf_token"]
    response = client.post(
        URL, {"resolve_all": "1", "listed": tokens, "csrfmiddlewaretoken": str(csrf)}
    )
    assert response.status_code == 200 and len(response.context["results"]) == 4


@pytest.mark.parametrize("who", ["anonymous", "member", "tenant_admin", "outsider"])
def test_non_staff_are_refused(
    request: pytest.FixtureRequest, orphans: dict[str, Run], who: str
) -> None:
    client = Client()
    if who != "anonymous":
        client.force_login(request.getfixturevalue(who))
    before = snapshot()
    for response in [client.get(URL), client.post(URL, {"resolve_all": "1", "listed": ["x:1:y"]})]:
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
    assert snapshot() == before


def test_view_only_staff_can_look_but_not_resolve(orphans: dict[str, Run]) -> None:
    user = make_user("desk@example.com")
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    client = Client()
    client.force_login(user)
    assert client.get(URL).status_code == 403  # no permission on runs at all
    user.user_permissions.add(Permission.objects.get(codename="view_run"))
    page = client.get(URL)
    assert page.status_code == 200 and not page.context["can_resolve"]
    assert b"Resolve selected" not in page.content
    tokens = [r.token for r in page.context["rows"]]
    before = snapshot()
    assert client.post(URL, {"resolve_all": "1", "listed": tokens}).status_code == 403
    assert snapshot() == before
