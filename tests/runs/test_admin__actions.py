"""Admin actions on runs: every action against a run in every status, through the changelist
and its confirmation page; refusals change nothing and say why; every attempt is audited."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from runs.admin.operations import OPERATIONS
from runs.models import Run, Thread
from runs.services import (
    cancel_run,
    claim_run,
    create_graph_version,
    create_run,
    create_thread,
    mark_interrupted,
    pause_run,
)
from runs.status import RunStatus
from tenants.models import AuditLog, Tenant
from tests.factories import make_user
from tests.runs.conftest import InlineQueue, approval_spec, chain_spec

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "admin:runs_run_changelist"


def operator_rows() -> Any:
    """Audit rows of operator actions (every run also leaves its own created/ended rows)."""
    return AuditLog.objects.exclude(action__in=("run.created", "run.ended"))


def unrouted_spec() -> dict[str, Any]:
    return {
        "name": "unrouted",
        "start": "a",
        "nodes": {"a": {"kind": "transform", "set": {"x": "1"}}, "done": {"kind": "end"}},
        "edges": [{"from": "a", "to": "done", "when": "state.x == 2"}],
    }


@pytest.fixture(autouse=True)
def roomy_dispatcher(settings: Any) -> None:
    """Tests build many runs; the dispatcher's cluster-wide cap must not leave any undispatched."""
    settings.RUNYARD = {**settings.RUNYARD, "DISPATCH_CAPACITY": 10_000}


def drain_only(queue: InlineQueue, run: Run) -> None:
    """Run this run's queued task, leaving other runs' tasks where they are."""
    others = [pk for pk in queue.pending if pk != run.pk]
    queue.pending[:] = [pk for pk in queue.pending if pk == run.pk]
    queue.drain()
    queue.pending[:0] = others


def run_in(status: str, tenant: Tenant, queue: InlineQueue, **create: Any) -> Run:
    """A run of `tenant` in `status`, made through the services and the inline queue (only
    timed_out, which needs a wall clock running out mid-node, is set directly)."""

    def graph(spec: dict[str, Any]) -> str:
        create_graph_version(tenant, spec)
        return spec["name"]

    if status in (RunStatus.WAITING, RunStatus.PAUSED):
        run = create_run(tenant, graph=graph(approval_spec()), **create)
        drain_only(queue, run)
        if status == RunStatus.PAUSED:
            pause_run(Run.objects.get(pk=run.pk), by="test")
    elif status == RunStatus.FAILED:
        run = create_run(tenant, graph=graph(unrouted_spec()), **create)
        drain_only(queue, run)
    else:
        run = create_run(tenant, graph=graph(chain_spec()), **create)
        if status == RunStatus.SUCCEEDED:
            drain_only(queue, run)
        elif status in (RunStatus.RUNNING, RunStatus.CANCELLING, RunStatus.TIMED_OUT):
            queue.pending.remove(run.pk)  # a worker took the task and is busy with it
            claim_run(run.pk, worker="worker-1")
            if status == RunStatus.CANCELLING:
                cancel_run(Run.objects.get(pk=run.pk), by="test")
            elif status == RunStatus.TIMED_OUT:
                Run.objects.filter(pk=run.pk).update(
                    status=RunStatus.TIMED_OUT,
                    finished_at=timezone.now(),
                    lease_owner="",
                    lease_expires_at=None,
                    error={"code": "limit_exceeded.max_wall_seconds", "message": "too long"},
                )
        elif status == RunStatus.CANCELLED:
            cancel_run(run, by="test")
        elif status == RunStatus.INTERRUPTED:
            mark_interrupted(run, by="test", reason="worker lost")
    run = Run.objects.select_related("tenant", "graph").get(pk=run.pk)
    assert run.status == status, (run.status, run.error)
    return run


# action -> status -> (result, status after)
EXPECTED: dict[str, dict[str, tuple[str, str]]] = {
    "cancel": {
        "queued": ("changed", "cancelled"),
        "running": ("changed", "cancelling"),
        "waiting": ("changed", "cancelled"),
        "paused": ("changed", "cancelled"),
        "cancelling": ("unchanged", "cancelling"),
        "succeeded": ("refused", "succeeded"),
        "failed": ("refused", "failed"),
        "cancelled": ("unchanged", "cancelled"),
        "interrupted": ("refused", "interrupted"),
        "timed_out": ("refused", "timed_out"),
    },
    "force_cancel": {
        "queued": ("changed", "cancelled"),
        "running": ("changed", "cancelled"),
        "waiting": ("changed", "cancelled"),
        "paused": ("changed", "cancelled"),
        "cancelling": ("changed", "cancelled"),
        "succeeded": ("refused", "succeeded"),
        "failed": ("refused", "failed"),
        "cancelled": ("unchanged", "cancelled"),
        "interrupted": ("refused", "interrupted"),
        "timed_out": ("refused", "timed_out"),
    },
    "resume": {
        "queued": ("refused", "queued"),
        "running": ("refused", "running"),
        "waiting": ("refused", "waiting"),
        "paused": ("changed", "waiting"),
        "cancelling": ("refused", "cancelling"),
        "succeeded": ("refused", "succeeded"),
        "failed": ("refused", "failed"),
        "cancelled": ("refused", "cancelled"),
        "interrupted": ("refused", "interrupted"),
        "timed_out": ("refused", "timed_out"),
    },
    "requeue": {
        "queued": ("changed", "queued"),
        "running": ("changed", "queued"),
        "waiting": ("refused", "waiting"),
        "paused": ("refused", "paused"),
        "cancelling": ("refused", "cancelling"),
        "succeeded": ("refused", "succeeded"),
        "failed": ("refused", "failed"),
        "cancelled": ("refused", "cancelled"),
        "interrupted": ("changed", "queued"),
        "timed_out": ("refused", "timed_out"),
    },
    "mark_interrupted": {
        "queued": ("changed", "interrupted"),
        "running": ("changed", "interrupted"),
        "waiting": ("changed", "interrupted"),
        "paused": ("changed", "interrupted"),
        "cancelling": ("changed", "interrupted"),
        "succeeded": ("refused", "succeeded"),
        "failed": ("refused", "failed"),
        "cancelled": ("refused", "cancelled"),
        "interrupted": ("refused", "interrupted"),
        "timed_out": ("refused", "timed_out"),
    },
}

ALL_STATUSES = [s.value for s in RunStatus]


@pytest.fixture
def staff_client(staff: Any) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def confirm_page(client: Client, action: str, runs: list[Run], **query: str) -> Any:
    """The changelist's action form, as the browser posts it: the confirmation page."""
    url = reverse(CHANGELIST)
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return client.post(
        url,
        {"action": f"{action}_runs", "_selected_action": [r.pk for r in runs], "index": "0"},
    )


def confirm(
    client: Client, action: str, runs: list[Run], reason: str = "operator test", **extra: str
) -> Any:
    data = {
        "action": f"{action}_runs",
        "_selected_action": [r.pk for r in runs],
        "post": "yes",
        "reason": reason,
        **extra,
    }
    if OPERATIONS[action].asks_cancel_action:
        data.setdefault("cancel_action", "interrupt")
    return client.post(reverse(CHANGELIST), data)


def texts(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_every_status_can_be_built(tenant: Tenant, queue: InlineQueue) -> None:
    assert sorted(run_in(s, tenant, queue).status for s in ALL_STATUSES) == sorted(ALL_STATUSES)


@pytest.mark.parametrize("status", ALL_STATUSES)
@pytest.mark.parametrize("action", list(OPERATIONS))
def test_action_in_every_status(
    staff_client: Client, staff: Any, tenant: Tenant, queue: InlineQueue, action: str, status: str
) -> None:
    run = run_in(status, tenant, queue)
    before = Run.objects.get(pk=run.pk)
    expected_result, expected_status = EXPECTED[action][status]

    page = confirm_page(staff_client, action, [run])
    assert page.status_code == 200
    assert page.context["operation"].name == action
    [(shown, preview, _)] = page.context["rows"]
    assert shown.pk == run.pk
    assert preview == expected_result  # the page tells the operator what will happen
    assert Run.objects.get(pk=run.pk).status == status  # nothing happens before confirming

    response = confirm(staff_client, action, [run], reason=f"{action} while {status}")
    assert response.status_code == 302
    after = Run.objects.get(pk=run.pk)
    assert after.status == expected_status
    if expected_result != "changed":
        assert after.epoch == before.epoch  # refused or no-op: nothing written
        assert after.last_seq == before.last_seq

    row = AuditLog.objects.get(action=f"run.{action}")
    assert row.actor == staff
    assert row.tenant == tenant
    assert row.target_type == "runs.run" and row.target_id == str(run.public_id)
    assert row.reason == f"{action} while {status}"
    assert (row.status_before, row.status_after) == (status, expected_status)
    assert row.data["result"] == expected_result

    messages = texts(response)
    assert any(str(run.public_id) in m for m in messages)
    mine = next(m for m in messages if str(run.public_id) in m)
    if expected_result == "refused":
        assert "not changed" in mine and status in mine  # says why
    elif expected_result == "unchanged":
        assert "nothing to do" in mine


def test_one_action_on_many_runs_reports_each(
    staff_client: Client, tenant: Tenant, queue: InlineQueue
) -> None:
    runs = [run_in(s, tenant, queue) for s in ("queued", "running", "succeeded", "cancelled")]
    response = confirm(staff_client, "cancel", runs, reason="drain the tenant")
    statuses = [Run.objects.get(pk=r.pk).status for r in runs]
    assert statuses == ["cancelled", "cancelling", "succeeded", "cancelled"]
    messages = texts(response)
    assert messages[0] == "Cancel: 2 changed, 1 unchanged, 1 refused."
    for run in runs:
        assert sum(str(run.public_id) in m for m in messages) == 1
    assert AuditLog.objects.filter(action="run.cancel").count() == 4


def test_cancel_asks_interrupt_or_rollback_and_rollback_restores_the_thread(
    staff_client: Client, tenant: Tenant, queue: InlineQueue
) -> None:
    thread = create_thread(tenant)
    Thread.objects.filter(pk=thread.pk).update(state={"count": 7})
    run = run_in("running", tenant, queue, thread_id=str(thread.public_id))
    page = confirm_page(staff_client, "cancel", [run])
    assert "cancel_action" in page.context["form"].fields
    assert b"rollback" in page.content and b"interrupt" in page.content

    confirm(staff_client, "force_cancel", [run], cancel_action="rollback")
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.cancel_action == "rollback"
    thread.refresh_from_db()
    assert thread.state == {"count": 7}
    assert AuditLog.objects.get(action="run.force_cancel").data["cancel_action"] == "rollback"


def test_actions_other_than_cancel_do_not_ask_how(
    staff_client: Client, tenant: Tenant, queue: InlineQueue
) -> None:
    run = run_in("queued", tenant, queue)
    for action in ("resume", "requeue", "mark_interrupted"):
        page = confirm_page(staff_client, action, [run])
        assert "cancel_action" not in page.context["form"].fields


def test_a_reason_is_required(staff_client: Client, tenant: Tenant, queue: InlineQueue) -> None:
    run = run_in("queued", tenant, queue)
    response = confirm(staff_client, "cancel", [run], reason="   ")
    assert response.status_code == 200  # the confirmation again, with the error
    assert response.context["form"].errors["reason"]
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED
    assert not operator_rows().exists()


def test_a_bad_cancel_action_is_refused(
    staff_client: Client, tenant: Tenant, queue: InlineQueue
) -> None:
    run = run_in("queued", tenant, queue)
    response = confirm(staff_client, "cancel", [run], cancel_action="explode")
    assert response.status_code == 200
    assert "cancel_action" in response.context["form"].errors
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED


def test_confirmed_runs_are_acted_on_even_if_they_left_the_filtered_list(
    staff_client: Client, tenant: Tenant, queue: InlineQueue
) -> None:
    run = run_in("running", tenant, queue)
    page = confirm_page(staff_client, "mark_interrupted", [run], status__exact="running")
    assert page.status_code == 200
    Run.objects.filter(pk=run.pk).update(lease_owner="worker-2")  # the list moved meanwhile
    url = reverse(CHANGELIST) + "?status__exact=queued"
    staff_client.post(
        url,
        {
            "action": "mark_interrupted_runs",
            "_selected_action": [run.pk],
            "post": "yes",
            "reason": "stuck",
        },
    )
    assert Run.objects.get(pk=run.pk).status == RunStatus.INTERRUPTED


def test_mark_interrupted_keeps_the_lease_evidence(
    staff_client: Client, tenant: Tenant, queue: InlineQueue
) -> None:
    run = run_in("running", tenant, queue)
    confirm(staff_client, "mark_interrupted", [run], reason="host is gone")
    run.refresh_from_db()
    assert run.status == RunStatus.INTERRUPTED
    assert run.error["evidence"]["lease_owner"] == "worker-1"
    assert "host is gone" in run.error["message"]
    # ...and requeue picks it up again from its last checkpoint.
    confirm(staff_client, "requeue", [run], reason="host is back")
    queue.drain()
    assert Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED


def test_resume_withdraws_a_pending_pause_of_a_running_run(
    staff_client: Client, tenant: Tenant, queue: InlineQueue
) -> None:
    run = run_in("running", tenant, queue)
    pause_run(run, by="test")
    assert Run.objects.get(pk=run.pk).pause_requested
    page = confirm_page(staff_client, "resume", [run])
    assert page.context["rows"][0][1] == "changed"
    response = confirm(staff_client, "resume", [run])
    after = Run.objects.get(pk=run.pk)
    assert after.status == RunStatus.RUNNING and not after.pause_requested
    assert any("pause request withdrawn" in m for m in texts(response))


def test_too_many_runs_at_once_are_refused(
    staff_client: Client, tenant: Tenant, queue: InlineQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runs.admin import runs as run_admin

    monkeypatch.setattr(run_admin, "MAX_RUNS_PER_ACTION", 1)
    runs = [run_in("queued", tenant, queue) for _ in range(2)]
    response = confirm_page(staff_client, "cancel", runs)
    assert response.status_code == 302
    assert "at most 1 runs" in texts(response)[0]
    assert all(Run.objects.get(pk=r.pk).status == RunStatus.QUEUED for r in runs)


# --- one run, from its detail page --------------------------------------------------------


def test_detail_page_offers_the_actions_that_apply(
    staff_client: Client, tenant: Tenant, queue: InlineQueue
) -> None:
    run = run_in("paused", tenant, queue)
    page = staff_client.get(reverse("admin:runs_run_change", args=[run.pk]))
    for name in ("cancel", "force_cancel", "resume", "mark_interrupted"):
        assert reverse("admin:runs_run_operate", args=[run.pk, name]).encode() in page.content
    assert reverse("admin:runs_run_operate", args=[run.pk, "requeue"]).encode() not in page.content


def test_detail_page_action_confirms_then_applies(
    staff_client: Client, staff: Any, tenant: Tenant, queue: InlineQueue
) -> None:
    run = run_in("waiting", tenant, queue)
    url = reverse("admin:runs_run_operate", args=[run.pk, "cancel"])
    page = staff_client.get(url)
    assert page.status_code == 200 and page.context["single"]
    assert Run.objects.get(pk=run.pk).status == RunStatus.WAITING
    response = staff_client.post(url, {"reason": "customer asked", "cancel_action": "interrupt"})
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:runs_run_change", args=[run.pk])
    assert Run.objects.get(pk=run.pk).status == RunStatus.CANCELLED
    row = AuditLog.objects.get(action="run.cancel")
    assert (row.actor, row.status_before, row.status_after) == (staff, "waiting", "cancelled")


def test_detail_page_action_refusal_says_why(
    staff_client: Client, tenant: Tenant, queue: InlineQueue
) -> None:
    run = run_in("succeeded", tenant, queue)
    url = reverse("admin:runs_run_operate", args=[run.pk, "requeue"])
    response = staff_client.post(url, {"reason": "try again"}, follow=True)
    assert Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED
    messages = [str(m) for m in response.context["messages"]]
    assert any("not changed" in m and "succeeded" in m for m in messages)


def test_unknown_action_is_404(staff_client: Client, tenant: Tenant, queue: InlineQueue) -> None:
    run = run_in("queued", tenant, queue)
    url = reverse("admin:runs_run_operate", args=[run.pk, "explode"])
    assert staff_client.get(url).status_code == 404


# --- permissions ----------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["anonymous", "member", "tenant_admin", "outsider"])
def test_non_staff_cannot_act(
    request: pytest.FixtureRequest, tenant: Tenant, queue: InlineQueue, who: str
) -> None:
    run = run_in("queued", tenant, queue)
    client = Client()
    if who != "anonymous":
        client.force_login(request.getfixturevalue(who))
    for response in [
        confirm_page(client, "cancel", [run]),
        confirm(client, "cancel", [run]),
        client.get(reverse("admin:runs_run_operate", args=[run.pk, "cancel"])),
        client.post(
            reverse("admin:runs_run_operate", args=[run.pk, "cancel"]),
            {"reason": "x", "cancel_action": "interrupt"},
        ),
    ]:
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED
    assert not operator_rows().exists()


def test_staff_without_permissions_is_refused(tenant: Tenant, queue: InlineQueue) -> None:
    run = run_in("queued", tenant, queue)
    client = Client()
    client.force_login(_staff_only())
    assert client.get(reverse(CHANGELIST)).status_code == 403
    response = client.post(
        reverse("admin:runs_run_operate", args=[run.pk, "cancel"]),
        {"reason": "x", "cancel_action": "interrupt"},
    )
    assert response.status_code == 403
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED


def _staff_only() -> Any:
    user = make_user("desk@example.com")
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    return user


def test_view_only_staff_sees_runs_but_cannot_act(tenant: Tenant, queue: InlineQueue) -> None:
    run = run_in("queued", tenant, queue)
    user = _staff_only()
    user.user_permissions.add(Permission.objects.get(codename="view_run"))
    client = Client()
    client.force_login(user)
    page = client.get(reverse(CHANGELIST))
    assert page.status_code == 200
    assert page.context["action_form"] is None  # no action is offered
    detail = client.get(reverse("admin:runs_run_change", args=[run.pk]))
    assert detail.status_code == 200
    assert b"/operate/" not in detail.content
    response = confirm(client, "cancel", [run])
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED
    assert response.status_code in (200, 302)
    url = reverse("admin:runs_run_operate", args=[run.pk, "cancel"])
    assert client.post(url, {"reason": "x", "cancel_action": "interrupt"}).status_code == 403
    assert not operator_rows().exists()
