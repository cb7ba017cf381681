"""The runs changelist (columns, filters, search) and the read-only run detail page: steps,
events and artifacts paginated, a run with 10,000 events still fast, links to django-q2."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ, Task

from runs.admin.detail import EVENTS_PER_PAGE, STEPS_PER_PAGE
from runs.dispatch import enqueue_run
from runs.models import Artifact, Event, Run, Step
from runs.services import create_graph_version, create_run
from runs.status import RunStatus
from tenants.models import AuditLog, Tenant
from tests.runs.conftest import InlineQueue, chain_spec
from tests.runs.test_admin__actions import roomy_dispatcher, run_in  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db(transaction=True)


def operator_rows() -> Any:
    """Audit rows of operator actions (every run also leaves its own created/ended rows)."""
    return AuditLog.objects.exclude(action__in=("run.created", "run.ended"))


CHANGELIST = "admin:runs_run_changelist"


@pytest.fixture
def staff_client(staff: Any) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def listed(client: Client, **query: str) -> list[int]:
    response = client.get(reverse(CHANGELIST), query)
    assert response.status_code == 200, response
    assert "e" not in response.request["QUERY_STRING"].split("=")  # no "invalid filter" redirect
    return sorted(r.pk for r in response.context["cl"].result_list)


def test_changelist_shows_the_columns(
    staff_client: Client, tenant: Tenant, queue: InlineQueue
) -> None:
    run = run_in("running", tenant, queue)
    page = staff_client.get(reverse(CHANGELIST))
    assert page.status_code == 200
    html = page.content.decode()
    for header in [
        "tenant",
        "graph",
        "status",
        "step (steps)",
        "attempts (claims/recoveries)",
        "age",
        "lease owner",
        "lease expiry",
    ]:
        assert header in html.lower(), header
    assert "chain@1" in html
    assert "worker-1" in html
    assert "1/0" in html  # one claim, no recovery
    assert str(run.public_id)[:8] in html
    assert reverse("admin:runs_reconcile") in html  # the reconcile page is one click away


def test_changelist_marks_expired_leases(
    staff_client: Client, tenant: Tenant, queue: InlineQueue
) -> None:
    run = run_in("running", tenant, queue)
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - dt.timedelta(1))
    assert b"expired</strong>" in staff_client.get(reverse(CHANGELIST)).content
    assert listed(staff_client, lease="expired") == [run.pk]
    assert listed(staff_client, lease="held") == []


def test_changelist_queries_do_not_grow_with_rows(
    staff_client: Client,
    tenant: Tenant,
    queue: InlineQueue,
    django_assert_max_num_queries: Any,
) -> None:
    for _ in range(3):
        run_in("queued", tenant, queue)
    with django_assert_max_num_queries(12) as few:
        staff_client.get(reverse(CHANGELIST))
    for _ in range(10):
        run_in("queued", tenant, queue)
    with django_assert_max_num_queries(len(few.captured_queries)):
        staff_client.get(reverse(CHANGELIST))


def test_filters_by_status_tenant_graph_and_created_date(
    staff_client: Client, tenant: Tenant, other_tenant: Tenant, queue: InlineQueue
) -> None:
    queued = run_in("queued", tenant, queue)
    waiting = run_in("waiting", tenant, queue)
    theirs = run_in("queued", other_tenant, queue)
    old = run_in("succeeded", tenant, queue)
    Run.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(days=30))

    assert listed(staff_client, status__exact="queued") == sorted([queued.pk, theirs.pk])
    assert listed(staff_client, tenant__id__exact=str(other_tenant.pk)) == [theirs.pk]
    assert listed(staff_client, graph="approve") == [waiting.pk]
    assert listed(staff_client, graph="chain") == sorted([queued.pk, theirs.pk, old.pk])
    page = staff_client.get(reverse(CHANGELIST))
    specs = page.context["cl"].filter_specs
    assert [spec.title for spec in specs] == [
        "status",
        "tenant",
        "graph name",
        "created at",
        "lease",
    ]
    # The created-date filter's own "Past 7 days" link, as an operator clicks it.
    week = next(c for c in specs[3].choices(page.context["cl"]) if c["display"] == "Past 7 days")
    response = staff_client.get(reverse(CHANGELIST) + week["query_string"])
    recent = sorted(r.pk for r in response.context["cl"].result_list)
    assert recent == sorted([queued.pk, waiting.pk, theirs.pk])


def test_search_by_public_id_whole_or_prefix(
    staff_client: Client, tenant: Tenant, queue: InlineQueue
) -> None:
    a, b = run_in("queued", tenant, queue), run_in("queued", tenant, queue)
    assert listed(staff_client, q=str(a.public_id)) == [a.pk]
    assert listed(staff_client, q=a.public_id.hex.upper()) == [a.pk]
    assert listed(staff_client, q=str(b.public_id)[:13]) == [b.pk]  # crosses a hyphen
    assert listed(staff_client, q=str(b.public_id)[:6]) == [b.pk]


def test_search_in_metadata_text_and_by_key(
    staff_client: Client, tenant: Tenant, queue: InlineQueue
) -> None:
    create_graph_version(tenant, chain_spec())
    acme = create_run(tenant, graph="chain", metadata={"customer": "ACME Corp", "ticket": 4411})
    zed = create_run(tenant, graph="chain", metadata={"customer": "Zürich AG"})
    create_run(tenant, graph="chain", metadata={})
    assert listed(staff_client, q="acme") == [acme.pk]
    assert listed(staff_client, q="4411") == [acme.pk]
    assert listed(staff_client, q="Zürich") == [zed.pk]
    assert listed(staff_client, q="customer=ACME Corp") == [acme.pk]
    assert listed(staff_client, q="customer") == sorted([acme.pk, zed.pk])
    assert listed(staff_client, q="nobody-has-this") == []


# --- detail --------------------------------------------------------------------------------


def test_detail_page_is_read_only_and_shows_the_run(
    staff_client: Client, tenant: Tenant, queue: InlineQueue
) -> None:
    run = run_in("succeeded", tenant, queue)
    url = reverse("admin:runs_run_change", args=[run.pk])
    page = staff_client.get(url)
    assert page.status_code == 200
    assert page.context["has_change_permission"] is False
    html = page.content.decode()
    assert str(run.public_id) in html
    assert 'id="steps"' in html and 'id="events"' in html and 'id="artifacts"' in html
    assert "run.succeeded" in html and "step.completed" in html
    # Nothing can be written through the form.
    before = Run.objects.values().get(pk=run.pk)
    response = staff_client.post(url, {"status": "queued", "lease_owner": "me"})
    assert response.status_code == 403
    assert Run.objects.values().get(pk=run.pk) == before
    assert staff_client.get(reverse("admin:runs_run_add")).status_code == 403
    assert staff_client.get(reverse("admin:runs_run_delete", args=[run.pk])).status_code == 403


def test_steps_are_paginated(staff_client: Client, tenant: Tenant, queue: InlineQueue) -> None:
    create_graph_version(tenant, chain_spec(n=STEPS_PER_PAGE + 5))
    run = create_run(tenant, graph="chain")
    queue.drain()
    assert Step.objects.filter(run=run).count() == STEPS_PER_PAGE + 6
    url = reverse("admin:runs_run_change", args=[run.pk])
    first = staff_client.get(url).context["steps_page"]
    assert [s.index for s in first.object_list] == list(range(1, STEPS_PER_PAGE + 1))
    second = staff_client.get(url, {"steps_page": 2}).context["steps_page"]
    assert [s.index for s in second.object_list][0] == STEPS_PER_PAGE + 1
    assert staff_client.get(url, {"steps_page": "junk"}).status_code == 200


def add_events(run: Run, n: int) -> None:
    start = Run.objects.values_list("last_seq", flat=True).get(pk=run.pk)
    Event.objects.bulk_create(
        [
            Event(
                run_id=run.pk,
                tenant_id=run.tenant_id,
                seq=start + i,
                type="llm.delta",
                data={"text": f"token {start + i} " + "x" * 400},
            )
            for i in range(1, n + 1)
        ],
        batch_size=2000,
    )
    Run.objects.filter(pk=run.pk).update(last_seq=start + n)


def test_a_run_with_10000_events_opens_fast_with_bounded_queries(
    staff_client: Client,
    tenant: Tenant,
    queue: InlineQueue,
    django_assert_max_num_queries: Any,
) -> None:
    run = run_in("running", tenant, queue)
    add_events(run, 10_000)
    assert Event.objects.filter(run=run).count() > 10_000
    url = reverse("admin:runs_run_change", args=[run.pk])
    staff_client.get(url)  # warm up templates and the session
    started = time.perf_counter()
    with django_assert_max_num_queries(15):
        page = staff_client.get(url)
    elapsed = time.perf_counter() - started
    assert page.status_code == 200
    assert elapsed < 1.0, f"run page took {elapsed:.2f}s"
    assert len(page.context["events"]) == EVENTS_PER_PAGE
    assert page.context["events_nav"]["pages"] == 101
    assert [e.seq for e, _ in page.context["events"]][:2] == [1, 2]
    # Every shown payload is cut short; the page stays small.
    assert all(len(data) <= 300 for _, data in page.context["events"])
    assert len(page.content) < 400_000

    with django_assert_max_num_queries(15):
        last = staff_client.get(url, {"events_page": 101})
    seqs = [e.seq for e, _ in last.context["events"]]
    assert seqs[0] == 10_001 and seqs[-1] == run.last_seq + 10_000
    assert last.context["events_nav"]["next"] is None
    beyond = staff_client.get(url, {"events_page": 5000})
    assert beyond.context["events_nav"]["number"] == 101


def test_artifacts_are_listed_and_downloadable(
    staff_client: Client, tenant: Tenant, queue: InlineQueue, settings: Any, tmp_path: Any
) -> None:
    settings.MEDIA_ROOT = tmp_path
    run = run_in("succeeded", tenant, queue)
    step = Step.objects.filter(run=run).first()
    artifact = Artifact(
        tenant=tenant,
        run=run,
        step=step,
        name="report.txt",
        content_type="text/plain",
        size=5,
        sha256="0" * 64,
    )
    artifact.file.save("report.txt", ContentFile(b"hello"), save=False)
    artifact.save()
    page = staff_client.get(reverse("admin:runs_run_change", args=[run.pk]))
    assert [a.name for a in page.context["artifacts_page"].object_list] == ["report.txt"]
    url = reverse("admin:runs_run_artifact", args=[run.pk, artifact.pk])
    assert url.encode() in page.content
    response = staff_client.get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"hello"
    other = run_in("succeeded", tenant, queue)
    wrong = reverse("admin:runs_run_artifact", args=[other.pk, artifact.pk])
    assert staff_client.get(wrong).status_code == 404


# --- django-q2 ------------------------------------------------------------------------------


def test_run_links_to_its_django_q_tasks(
    staff_client: Client, tenant: Tenant, queue: InlineQueue
) -> None:
    run = run_in("succeeded", tenant, queue)
    other = run_in("succeeded", tenant, queue)
    now = timezone.now()
    for pk, success, tid in [(run.pk, True, "a1"), (run.pk, False, "a2"), (other.pk, True, "b1")]:
        Task.objects.create(
            id=tid * 16,
            name=f"run-{pk}",
            func="runs.tasks.execute_run",
            started=now,
            stopped=now,
            success=success,
        )
    page = staff_client.get(reverse("admin:runs_run_change", args=[run.pk]))
    html = page.content.decode()
    failure_url = f"{reverse('admin:django_q_failure_changelist')}?name=run-{run.pk}"
    assert failure_url in html
    # Successful run tasks are not saved (runs.dispatch.enqueue_run): no link to look for them.
    assert f"{reverse('admin:django_q_success_changelist')}?name=" not in html
    failures = staff_client.get(failure_url)
    assert [t.id for t in failures.context["cl"].result_list] == ["a2" * 16]


def test_a_successful_run_task_is_not_saved_by_django_q(
    tenant: Tenant, queue: InlineQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through django-q2 itself (its sync mode runs the worker and the monitor's save_task in
    this process): with save_limit set, saving a task made the monitor read every saved one."""
    from django_q.tasks import async_task

    assert Conf.SAVE_LIMIT > 0  # what made saving each task cost a scan of the saved ones
    monkeypatch.setattr(Conf, "SYNC", True)
    run = run_in("queued", tenant, queue)
    enqueue_run(run.pk)  # the real broker call: the segment runs, the run succeeds
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert not Task.objects.filter(name=f"run-{run.pk}").exists()
    # The same task enqueued with django-q2's defaults is saved: the check above can fail.
    async_task("runs.tasks.execute_run", run.pk, task_name="control")
    assert Task.objects.get(name="control").success


def test_queued_tasks_link_filters_the_orm_queue(
    staff_client: Client, tenant: Tenant, queue: InlineQueue
) -> None:
    run = run_in("queued", tenant, queue)
    other = run_in("queued", tenant, queue)
    url = reverse("admin:runs_run_queue", args=[run.pk])
    if not Conf.ORM:  # the Redis broker: its queue is not in the database
        detail = staff_client.get(reverse("admin:runs_run_change", args=[run.pk]))
        assert url.encode() not in detail.content
        assert staff_client.get(url).status_code == 404
        return
    OrmQ.objects.all().delete()
    enqueue_run(run.pk)  # the real broker call, not the inline queue
    enqueue_run(other.pk)
    mine = [q.pk for q in OrmQ.objects.all() if q.name() == f"run-{run.pk}"]
    assert len(mine) == 1
    assert url.encode() in staff_client.get(reverse("admin:runs_run_change", args=[run.pk])).content
    response = staff_client.get(url)
    assert response.status_code == 302
    listing = staff_client.get(response["Location"])
    assert [q.pk for q in listing.context["cl"].result_list] == mine
    OrmQ.objects.all().delete()
    empty = staff_client.get(staff_client.get(url)["Location"])
    assert list(empty.context["cl"].result_list) == []


def test_run_links_to_its_audit_trail(
    staff_client: Client, tenant: Tenant, queue: InlineQueue
) -> None:
    run = run_in("queued", tenant, queue)
    staff_client.post(
        reverse("admin:runs_run_operate", args=[run.pk, "cancel"]),
        {"reason": "dup", "cancel_action": "interrupt"},
    )
    page = staff_client.get(reverse("admin:runs_run_change", args=[run.pk]))
    url = f"{reverse('admin:tenants_auditlog_changelist')}?target_id={run.public_id}"
    assert url.encode() in page.content
    rows = staff_client.get(url).context["cl"].result_list
    # The operator's cancel, beside the run's own start and end rows.
    assert sorted(r.action for r in rows) == ["run.cancel", "run.created", "run.ended"]
    assert operator_rows().count() == 1


def test_graph_pages_are_read_only(staff_client: Client, tenant: Tenant) -> None:
    graph = create_graph_version(tenant, chain_spec())
    assert staff_client.get(reverse("admin:runs_graph_changelist")).status_code == 200
    page = staff_client.get(reverse("admin:runs_graph_change", args=[graph.pk]))
    assert page.status_code == 200 and b"n0" in page.content
    assert (
        staff_client.post(reverse("admin:runs_graph_change", args=[graph.pk]), {}).status_code
        == 403
    )


@pytest.mark.parametrize("who", ["anonymous", "member", "tenant_admin"])
def test_non_staff_cannot_see_runs(
    request: pytest.FixtureRequest, tenant: Tenant, queue: InlineQueue, who: str
) -> None:
    run = run_in("queued", tenant, queue)
    client = Client()
    if who != "anonymous":
        client.force_login(request.getfixturevalue(who))
    for url in [
        reverse(CHANGELIST),
        reverse("admin:runs_run_change", args=[run.pk]),
        reverse("admin:runs_run_queue", args=[run.pk]),
        reverse("admin:runs_graph_changelist"),
    ]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("admin:login"))
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED
