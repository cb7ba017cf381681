"""The runs list's filters live in the URL: each filter, combinations, pagination, live rows,
and values that do not parse (ignored, named, never a 500)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client

from runs.models import Run
from runs.services import create_graph_version, create_run
from runs.status import RunStatus
from runs.views import runs as run_views
from tests.runs.conftest import approval_spec, chain_spec

pytestmark = pytest.mark.django_db

ROW = re.compile(r'<tr data-run="([0-9a-f]{32})"')


def login(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def listed(client: Client, params: dict[str, Any] | None = None, *, path: str = "/runs/") -> list:
    response = client.get(path, params or {})
    assert response.status_code == 200
    return ROW.findall(response.content.decode())


@pytest.fixture
def runs(tenant: Any) -> dict[str, Run]:
    """Four runs: two of `chain`, two of `approve`, with statuses, metadata and days apart."""
    create_graph_version(tenant, chain_spec())
    create_graph_version(tenant, approval_spec())
    made = {
        "old_ok": create_run(tenant, graph="chain", metadata={"customer": "acme"}),
        "new_ok": create_run(tenant, graph="chain", metadata={"customer": "globex"}),
        "failed": create_run(tenant, graph="approve", metadata={"ticket": "T-981"}),
        "waiting": create_run(tenant, graph="approve"),
    }
    status = {
        "old_ok": RunStatus.SUCCEEDED,
        "new_ok": RunStatus.SUCCEEDED,
        "failed": RunStatus.FAILED,
        "waiting": RunStatus.WAITING,
    }
    day = {"old_ok": 10, "new_ok": 20, "failed": 21, "waiting": 22}
    for name, run in made.items():
        Run.objects.filter(pk=run.pk).update(
            status=status[name],
            created_at=dt.datetime(2026, 11, day[name], 12, tzinfo=dt.UTC),
        )
    return {name: Run.objects.get(pk=run.pk) for name, run in made.items()}


def hexes(runs: dict[str, Run], *names: str) -> list[str]:
    return [runs[n].public_id.hex for n in names]


def test_each_filter_narrows_the_list_and_is_shown_in_the_form(member, runs) -> None:
    client = login(member)
    assert listed(client) == hexes(runs, "waiting", "failed", "new_ok", "old_ok")
    assert listed(client, {"status": "failed"}) == hexes(runs, "failed")
    assert listed(client, {"status": "active"}) == hexes(runs, "waiting")
    assert listed(client, {"status": "ended"}) == hexes(runs, "failed", "new_ok", "old_ok")
    assert listed(client, {"graph": "chain"}) == hexes(runs, "new_ok", "old_ok")
    assert listed(client, {"from": "2026-11-20"}) == hexes(runs, "waiting", "failed", "new_ok")
    # `to` includes its whole UTC day.
    assert listed(client, {"to": "2026-11-20"}) == hexes(runs, "new_ok", "old_ok")
    assert listed(client, {"from": "2026-11-21", "to": "2026-11-21"}) == hexes(runs, "failed")

    html = client.get("/runs/", {"status": "failed", "q": "T-9", "from": "2026-11-01"})
    page = html.content.decode()
    assert '<option value="failed" selected>' in page
    assert 'name="q" value="T-9"' in page and 'name="from" value="2026-11-01"' in page
    assert 'id="clear-filters"' in page


def test_search_matches_id_prefix_graph_name_and_metadata(member, runs) -> None:
    client = login(member)
    failed = runs["failed"].public_id
    assert listed(client, {"q": failed.hex[:10]}) == hexes(runs, "failed")
    assert listed(client, {"q": failed.hex}) == hexes(runs, "failed")
    assert listed(client, {"q": str(failed)[:13].upper()}) == hexes(runs, "failed")  # with a dash
    assert listed(client, {"q": "chai"}) == hexes(runs, "new_ok", "old_ok")
    assert listed(client, {"q": "globex"}) == hexes(runs, "new_ok")
    assert listed(client, {"q": "t-981"}) == hexes(runs, "failed")  # case-insensitive
    assert listed(client, {"q": "customer"}) == hexes(runs, "new_ok", "old_ok")  # keys too
    assert listed(client, {"q": "nothing-like-this"}) == []
    page = client.get("/runs/", {"q": "nothing-like-this"}).content.decode()
    assert "No runs match these filters" in page


def test_filters_combine(member, runs) -> None:
    client = login(member)
    assert listed(client, {"graph": "chain", "q": "acme"}) == hexes(runs, "old_ok")
    assert listed(client, {"graph": "approve", "status": "active"}) == hexes(runs, "waiting")
    assert listed(client, {"graph": "chain", "status": "failed"}) == []
    combo = {"status": "ended", "graph": "chain", "from": "2026-11-15", "q": "globex"}
    assert listed(client, combo) == hexes(runs, "new_ok")


def test_pagination_keeps_every_filter(member, tenant, runs, monkeypatch) -> None:
    monkeypatch.setattr(run_views, "PAGE_SIZE", 1)
    client = login(member)
    params: dict[str, Any] = {"graph": "chain", "status": "ended", "q": "o", "from": "2026-11-01"}
    seen: list[str] = []
    for _ in range(4):
        page = client.get("/runs/", params).content.decode()
        seen += ROW.findall(page)
        older = re.search(r'id="older" href="([^"]+)"', page)
        if not older:
            break
        query = parse_qs(urlsplit(older.group(1).replace("&amp;", "&")).query)
        assert {k: v[0] for k, v in query.items() if k != "cursor"} == params
        params = {k: v[0] for k, v in query.items()}
    assert seen == hexes(runs, "new_ok", "old_ok")
    newest = re.search(r'id="newest" href="([^"]+)"', page)
    assert newest and "cursor" not in newest.group(1) and "graph=chain" in newest.group(1)


def test_live_rows_url_carries_the_filters_so_new_rows_must_match(member, tenant, runs) -> None:
    client = login(member)
    page = client.get("/runs/", {"graph": "chain", "q": "acme"}).content.decode()
    rows_url = re.search(r'data-rows-url="([^"]+)"', page).group(1).replace("&amp;", "&")
    query = parse_qs(urlsplit(rows_url).query)
    assert query == {"partial": ["rows"], "graph": ["chain"], "q": ["acme"]}
    # A run that starts after the page rendered appears only if it matches the filters.
    matching = create_run(tenant, graph="chain", metadata={"customer": "acme"})
    other = create_run(tenant, graph="approve", metadata={"customer": "acme"})
    rows = listed(client, path=rows_url)
    assert matching.public_id.hex in rows and other.public_id.hex not in rows
    assert rows == [matching.public_id.hex, runs["old_ok"].public_id.hex]


@pytest.mark.parametrize(
    "params",
    [
        {"status": "bogus"},
        {"status": "x" * 5000},
        {"graph": "g" * 5000},
        {"q": "%" * 5000},
        {"q": "_\\'\"<script>"},
        {"from": "2026-13-45"},
        {"from": "yesterday", "to": "99999-01-01"},
        {"to": "0001-01-01"},
        {"cursor": "garbage", "status": "failed"},
        {"status": ["failed", "bogus"]},
    ],
)
def test_bad_values_are_ignored_never_a_500(member, runs, params) -> None:
    client = login(member)
    response = client.get("/runs/", params)
    assert response.status_code == 200
    assert "<script>" not in response.content.decode().split("<main", 1)[1].split("</main>")[0]


def test_ignored_values_are_named_and_the_rest_still_applies(member, runs) -> None:
    client = login(member)
    response = client.get("/runs/", {"status": "bogus", "graph": "chain", "from": "nope"})
    page = response.content.decode()
    assert ROW.findall(page) == hexes(runs, "new_ok", "old_ok")
    assert 'id="ignored-filters"' in page and "status, from" in page
    # An ignored value does not reach the links the page builds.
    rows_url = re.search(r'data-rows-url="([^"]+)"', page).group(1)
    assert "bogus" not in rows_url and "nope" not in rows_url


def test_filters_never_reach_another_tenants_runs(member, runs, other_tenant) -> None:
    create_graph_version(other_tenant, chain_spec())
    theirs = create_run(other_tenant, graph="chain", metadata={"customer": "acme"})
    client = login(member)
    for params in ({}, {"q": "acme"}, {"q": theirs.public_id.hex[:12]}, {"graph": "chain"}):
        assert theirs.public_id.hex not in listed(client, params)
