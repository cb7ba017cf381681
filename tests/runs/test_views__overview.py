"""The overview page: runs by status now, runs started per hour/day by status, recent failures
with their error codes, runs waiting for approval; the tenant's own runs only."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from runs.models import Run
from runs.services import create_graph_version, create_run
from runs.status import RunStatus
from runs.views.overview import bucket_starts
from tests.runs.conftest import chain_spec

pytestmark = pytest.mark.django_db


def login(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def make(tenant: Any, status: str, *, ago: dt.timedelta, **fields: Any) -> Run:
    run = create_run(tenant, graph="chain")
    Run.objects.filter(pk=run.pk).update(status=status, created_at=timezone.now() - ago, **fields)
    return Run.objects.get(pk=run.pk)


def counts(html: str) -> dict[str, int]:
    return {s: int(n) for s, n in re.findall(r'data-status="(\w+)" data-count="(\d+)"', html)}


def stacks(html: str) -> dict[str, dict[str, float]]:
    """label -> series -> value, from the drawn SVG."""
    out: dict[str, dict[str, float]] = {}
    for label, body in re.findall(
        r'<g class="chart-stack" data-label="([^"]+)"[^>]*>(.*?)</g>', html
    ):
        out[label] = {
            s: float(v) for s, v in re.findall(r'data-series="(\w+)" data-value="([0-9.]+)"', body)
        }
    return out


@pytest.fixture
def graph(tenant: Any) -> None:
    create_graph_version(tenant, chain_spec())


def test_counts_by_status_now_link_to_the_filtered_list(tenant, member, graph) -> None:
    for status in ("succeeded", "succeeded", "failed", "running"):
        make(tenant, status, ago=dt.timedelta(days=40))
    html = login(member).get("/overview/").content.decode()
    got = counts(html)
    assert got["succeeded"] == 2 and got["failed"] == 1 and got["running"] == 1
    assert got["queued"] == 0 and set(got) == set(RunStatus.values)
    assert 'href="/runs/?status=failed"' in html
    assert '<a href="/overview/" aria-current="page">Overview</a>' in html


def test_runs_per_hour_are_stacked_by_status_over_the_last_24_hours(tenant, member, graph) -> None:
    now = timezone.now()
    make(tenant, "succeeded", ago=dt.timedelta(minutes=1))
    make(tenant, "failed", ago=dt.timedelta(minutes=2))
    make(tenant, "succeeded", ago=dt.timedelta(hours=3))
    make(tenant, "succeeded", ago=dt.timedelta(hours=30))  # outside the window
    html = login(member).get("/overview/").content.decode()
    drawn = stacks(html)
    assert len(drawn) == 24
    this_hour = now.astimezone(dt.UTC).strftime("%H:00")
    three_ago = (now - dt.timedelta(hours=3)).astimezone(dt.UTC).strftime("%H:00")
    if now.minute >= 3:  # the two newest runs share the current hour
        assert drawn[this_hour] == {"succeeded": 1, "failed": 1}
    assert drawn[three_ago].get("succeeded", 0) >= 1
    assert sum(sum(v.values()) for v in drawn.values()) == 3
    assert 'role="img"' in html and "Runs started per hour by status" in html


def test_fourteen_day_range_buckets_by_day(tenant, member, graph) -> None:
    make(tenant, "failed", ago=dt.timedelta(days=2))
    make(tenant, "succeeded", ago=dt.timedelta(days=2))
    make(tenant, "succeeded", ago=dt.timedelta(days=20))  # outside
    html = login(member).get("/overview/", {"range": "14d"}).content.decode()
    drawn = stacks(html)
    assert len(drawn) == 14
    day = (timezone.now() - dt.timedelta(days=2)).astimezone(dt.UTC).strftime("%b %d")
    assert drawn[day] == {"succeeded": 1, "failed": 1}
    assert sum(sum(v.values()) for v in drawn.values()) == 2
    assert 'href="?range=14d" aria-current="page"' in html


def test_bucket_starts_end_with_the_current_hour_or_day() -> None:
    now = dt.datetime(2026, 12, 1, 9, 41, 7, tzinfo=dt.UTC)
    hours = bucket_starts(now, "hour", 24)
    assert hours[-1] == dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)
    assert hours[0] == dt.datetime(2026, 11, 30, 10, tzinfo=dt.UTC)
    days = bucket_starts(now, "day", 14)
    assert days[-1] == dt.datetime(2026, 12, 1, tzinfo=dt.UTC) and len(days) == 14


def test_recent_failures_show_their_error_codes(tenant, member, graph) -> None:
    failed = make(
        tenant,
        "failed",
        ago=dt.timedelta(minutes=5),
        error={"code": "node_failed", "message": "boom"},
    )
    timed_out = make(
        tenant, "timed_out", ago=dt.timedelta(minutes=6), error={"code": "deadline", "message": ""}
    )
    ok = make(tenant, "succeeded", ago=dt.timedelta(minutes=1))
    html = login(member).get("/overview/").content.decode()
    table = html.split('id="failures"')[1].split("</table>")[0]
    assert table.index(failed.public_id.hex) < table.index(timed_out.public_id.hex)
    assert "node_failed" in table and "deadline" in table and ok.public_id.hex not in table


def test_runs_waiting_for_approval_are_listed_but_not_other_waits(tenant, member, graph) -> None:
    deadline = timezone.now() + dt.timedelta(hours=2)
    approval = make(
        tenant,
        "waiting",
        ago=dt.timedelta(minutes=1),
        waiting_for={"kind": "approval", "id": "gate@1", "message": "Ship it?"},
        wait_deadline=deadline,
    )
    asking = make(
        tenant,
        "waiting",
        ago=dt.timedelta(minutes=1),
        waiting_for={"kind": "input", "id": "ask@1"},
    )
    html = login(member).get("/overview/").content.decode()
    table = html.split('id="approvals"')[1].split("</table>")[0]
    assert approval.public_id.hex in table and "gate@1" in table and "Ship it?" in table
    assert asking.public_id.hex not in table
    assert re.search(r"in (1|2)\xa0hour", table)


def test_empty_tenant_gets_empty_states_not_empty_charts(member) -> None:
    html = login(member).get("/overview/").content.decode()
    assert "No runs started in the last 24 hours." in html and "<svg" not in html
    assert "No failed runs." in html and "Nothing is waiting for a decision." in html


def test_another_tenants_runs_never_count(tenant, member, graph, other_tenant) -> None:
    create_graph_version(other_tenant, chain_spec())
    theirs = make(
        other_tenant, "failed", ago=dt.timedelta(minutes=1), error={"code": "x", "message": ""}
    )
    make(
        other_tenant,
        "waiting",
        ago=dt.timedelta(minutes=1),
        waiting_for={"kind": "approval", "id": "g@1"},
    )
    html = login(member).get("/overview/").content.decode()
    assert sum(counts(html).values()) == 0
    assert theirs.public_id.hex not in html and "<svg" not in html


@pytest.mark.parametrize("range_", ["", "7y", "24h'--", "x" * 3000])
def test_unknown_range_falls_back_to_24_hours(member, range_) -> None:
    response = login(member).get("/overview/", {"range": range_})
    assert response.status_code == 200
    assert 'href="?range=24h" aria-current="page"' in response.content.decode()


def test_overview_needs_a_login(client) -> None:
    response = client.get("/overview/")
    assert response.status_code == 302 and "/login/" in response["Location"]
