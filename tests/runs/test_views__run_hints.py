"""What the runs list and the run page say about a run as it is now: a stale-lease hint when
its worker stopped renewing the lease, and a Live badge only while the run can still change."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from runs.models import Run
from runs.services import create_graph_version, create_run
from runs.status import ACTIVE, TERMINAL, RunStatus
from runs.templatetags.run_hints import ago, stale_lease
from tests.runs.conftest import approval_spec, chain_spec

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def login(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def row_of(html: str, run: Run) -> str:
    match = re.search(rf'<tr data-run="{run.public_id.hex}".*?</tr>', html, re.S)
    assert match, "run not listed"
    return match.group(0)


def with_lease(run: Run, status: str, expires: dt.datetime | None) -> Run:
    Run.objects.filter(pk=run.pk).update(status=status, lease_expires_at=expires)
    return Run.objects.get(pk=run.pk)


# --- the hint itself ----------------------------------------------------------------------------


@pytest.fixture
def run(tenant: Any) -> Run:
    create_graph_version(tenant, chain_spec())
    return create_run(tenant, graph="chain")


def test_expired_lease_of_a_running_run_says_the_worker_is_lost(run) -> None:
    run = with_lease(run, RunStatus.RUNNING, NOW - dt.timedelta(seconds=40))
    hint = stale_lease(run, NOW)
    assert hint.startswith("Worker lost — lease expired 40 s ago;")
    assert "reconciler will resume the run or mark it interrupted" in hint


def test_cancelling_run_with_an_expired_lease_gets_the_hint_too(run) -> None:
    run = with_lease(run, RunStatus.CANCELLING, NOW - dt.timedelta(minutes=3))
    assert "lease expired 3 min ago" in stale_lease(run, NOW)


def test_fresh_lease_or_no_lease_gives_no_hint(run) -> None:
    assert stale_lease(with_lease(run, RunStatus.RUNNING, NOW + dt.timedelta(seconds=5)), NOW) == ""
    assert stale_lease(with_lease(run, RunStatus.RUNNING, NOW), NOW) == ""
    assert stale_lease(with_lease(run, RunStatus.RUNNING, None), NOW) == ""


@pytest.mark.parametrize("status", sorted(TERMINAL | {RunStatus.QUEUED, RunStatus.WAITING}))
def test_runs_no_worker_holds_get_no_hint_even_with_an_old_lease(run, status) -> None:
    run = with_lease(run, status, NOW - dt.timedelta(hours=2))
    assert stale_lease(run, NOW) == ""


def test_ago_reads_as_a_person_would_say_it() -> None:
    assert [ago(0), ago(59), ago(60), ago(3599), ago(3 * 3600 + 120), ago(2 * 86400)] == [
        "0 s",
        "59 s",
        "1 min",
        "59 min",
        "3 h 2 min",
        "2 d",
    ]


# --- on the pages -------------------------------------------------------------------------------


def test_list_shows_the_hint_only_on_running_runs_whose_lease_expired(tenant, member) -> None:
    create_graph_version(tenant, chain_spec())
    now = timezone.now()
    lost = with_lease(create_run(tenant, graph="chain"), "running", now - dt.timedelta(seconds=90))
    fresh = with_lease(create_run(tenant, graph="chain"), "running", now + dt.timedelta(seconds=30))
    ended = with_lease(create_run(tenant, graph="chain"), "failed", now - dt.timedelta(seconds=90))
    html = login(member).get("/runs/").content.decode()
    assert re.search(r'data-role="stale-lease"[^>]*>Worker lost — lease expired 1 min ago', html)
    assert 'data-role="stale-lease"' in row_of(html, lost)
    assert 'data-role="stale-lease"' not in row_of(html, fresh)
    assert 'data-role="stale-lease"' not in row_of(html, ended)


def test_run_page_header_shows_the_hint(tenant, member) -> None:
    create_graph_version(tenant, chain_spec())
    expired = timezone.now() - dt.timedelta(seconds=45)
    lost = with_lease(create_run(tenant, graph="chain"), "running", expired)
    client = login(member)
    html = client.get(f"/runs/{lost.public_id}/").content.decode()
    assert 'id="stale-lease-callout"' in html and "Worker lost — lease expired" in html
    # The live view re-renders the header with it too, and drops it once the lease is renewed.
    live = client.get(f"/runs/{lost.public_id}/live/").json()
    assert "Worker lost" in live["panels"]["header"]
    with_lease(lost, "running", timezone.now() + dt.timedelta(seconds=30))
    live = client.get(f"/runs/{lost.public_id}/live/").json()
    assert "Worker lost" not in live["panels"]["header"]


@pytest.mark.parametrize("status", sorted(ACTIVE | TERMINAL))
def test_live_badge_only_on_runs_that_can_still_change(tenant, member, status) -> None:
    create_graph_version(tenant, chain_spec())
    run = with_lease(create_run(tenant, graph="chain"), status, None)
    client = login(member)
    row = row_of(client.get("/runs/").content.decode(), run)
    header = client.get(f"/runs/{run.public_id}/live/").json()["panels"]["header"]
    page = client.get(f"/runs/{run.public_id}/").content.decode()
    can_change = status in ACTIVE
    assert ('data-role="live"' in row) is can_change
    assert ('id="run-live-badge"' in header) is can_change
    assert ('id="run-live-badge"' in page) is can_change


@pytest.mark.django_db(transaction=True)  # the run is enqueued on commit
def test_live_badge_leaves_the_header_when_the_run_ends(tenant, member, queue) -> None:
    create_graph_version(tenant, approval_spec())
    run = create_run(tenant, graph="approve")
    queue.drain()
    client = login(member)
    live = client.get(f"/runs/{run.public_id}/live/").json()
    assert live["status"] == "waiting" and 'id="run-live-badge"' in live["panels"]["header"]
    response = client.post(
        f"/runs/{run.public_id}/approval/",
        {"approval_id": "gate@1", "decision": "approve"},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 200, response.content
    queue.drain()
    live = client.get(f"/runs/{run.public_id}/live/").json()
    assert live["terminal"] and 'id="run-live-badge"' not in live["panels"]["header"]
    rows = client.get("/runs/", {"partial": "rows"}).content.decode()
    assert 'data-role="live"' not in row_of(rows, run)
