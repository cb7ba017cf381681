"""GET /runs: filters, and keyset pagination that stays stable while runs are inserted."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from runs.models import Run
from runs.services import cancel_run, create_run
from tenants.models import Role, Tenant
from tests.runs.conftest import InlineQueue, approval_spec, chain_spec
from tests.runs.test_api__helpers import Api, error_of, key_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice(tenant: Tenant, make_graph: Any, queue: InlineQueue) -> Api:
    make_graph(tenant, chain_spec())
    make_graph(tenant, approval_spec())
    return key_client(tenant, Role.VIEWER)


def _ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["items"]]


def _page_all(api: Api, params: dict[str, Any], between: Any = None) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        body = api.get("/runs", {**params, **({"cursor": cursor} if cursor else {})}).json()
        seen.extend(item["id"] for item in body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return seen
        if between is not None:
            between()


def test_runs_are_listed_newest_first(tenant: Tenant, alice: Api) -> None:
    runs = [create_run(tenant, graph="chain") for _ in range(3)]
    assert _ids(alice.get("/runs")) == [str(r.public_id) for r in reversed(runs)]


def test_paging_while_runs_are_inserted_never_repeats_or_skips(tenant: Tenant, alice: Api) -> None:
    existing = [str(create_run(tenant, graph="chain").public_id) for _ in range(7)]
    # Ties on created_at are broken by id: give four runs the same timestamp.
    same = timezone.now() - dt.timedelta(minutes=5)
    Run.objects.filter(public_id__in=existing[1:5]).update(created_at=same)
    expected = [
        str(pid)
        for pid in Run.objects.order_by("-created_at", "-id").values_list("public_id", flat=True)
    ]
    inserted: list[str] = []

    def insert() -> None:
        inserted.append(str(create_run(tenant, graph="chain").public_id))

    seen = _page_all(alice, {"limit": 2}, between=insert)
    assert len(inserted) >= 3
    assert seen == expected
    assert len(seen) == len(set(seen))


def test_paging_with_a_concurrent_writer_thread(tenant: Tenant, alice: Api) -> None:
    existing = {str(create_run(tenant, graph="chain").public_id) for _ in range(12)}
    stop = threading.Event()
    written: list[str] = []

    def writer() -> None:
        try:
            while not stop.is_set() and len(written) < 30:
                written.append(str(create_run(tenant, graph="chain").public_id))
        finally:
            connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = _page_all(alice, {"limit": 3})
    finally:
        stop.set()
        thread.join()
    assert len(seen) == len(set(seen)), "no run appears twice"
    assert existing <= set(seen), "no run that existed before paging began is skipped"
    assert set(seen) <= existing | set(written)


def test_filters_by_status_graph_and_thread(tenant: Tenant, alice: Api) -> None:
    chain = create_run(tenant, graph="chain")
    approve = create_run(tenant, graph="approve")
    cancelled = create_run(tenant, graph="chain")
    cancel_run(cancelled)
    member = key_client(tenant, Role.MEMBER)
    thread = member.post("/threads", {}).json()
    on_thread = member.post("/runs", {"graph": "chain", "thread_id": thread["id"]}).json()

    assert set(_ids(alice.get("/runs", {"status": "cancelled"}))) == {str(cancelled.public_id)}
    both = alice.get("/runs", {"status": "cancelled,queued"})
    assert len(_ids(both)) == 4
    repeated = alice.client.get(
        "/api/v1/runs?status=cancelled&status=queued", headers=alice.headers
    )
    assert _ids(repeated) == _ids(both)
    assert _ids(alice.get("/runs", {"graph": "approve"})) == [str(approve.public_id)]
    assert _ids(alice.get("/runs", {"thread_id": thread["id"]})) == [on_thread["id"]]
    assert _ids(alice.get("/runs", {"graph": "nope"})) == []
    assert str(chain.public_id) in _ids(alice.get("/runs", {"status": "queued"}))


def test_filters_by_creation_time(tenant: Tenant, alice: Api) -> None:
    old = create_run(tenant, graph="chain")
    Run.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(days=2))
    new = create_run(tenant, graph="chain")
    cut = (timezone.now() - dt.timedelta(days=1)).isoformat()
    assert _ids(alice.get("/runs", {"created_after": cut})) == [str(new.public_id)]
    assert _ids(alice.get("/runs", {"created_before": cut})) == [str(old.public_id)]

    # A created_at read from the API is exact: passing it back excludes that very run.
    created = alice.get(f"/runs/{new.public_id}").json()["created_at"]
    assert _ids(alice.get("/runs", {"created_after": created})) == []
    assert _ids(alice.get("/runs", {"created_before": created})) == [str(old.public_id)]


def test_filters_by_metadata(tenant: Tenant, alice: Api) -> None:
    acme = create_run(tenant, graph="chain", metadata={"customer": "acme", "tier": 2})
    create_run(tenant, graph="chain", metadata={"customer": "globex", "tier": 1})
    create_run(tenant, graph="chain")
    acme_id = str(acme.public_id)

    assert _ids(alice.get("/runs", {"metadata.customer": "acme"})) == [acme_id]
    assert _ids(alice.get("/runs", {"metadata_key": "customer", "metadata_value": "acme"})) == [
        acme_id
    ]
    assert _ids(alice.get("/runs", {"metadata.tier": "2"})) == [acme_id]  # numbers match too
    assert _ids(alice.get("/runs", {"metadata.customer": "acme", "metadata.tier": "1"})) == []
    assert _ids(alice.get("/runs", {"metadata.customer__in": "acme"})) == []  # no lookups


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "sleeping"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 1000}, "limit"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"thread_id": "t1"}, "thread_id"),
        ({"cursor": "not a cursor!"}, "cursor"),
        ({"metadata_key": "customer"}, "metadata_value"),
    ],
)
def test_bad_list_parameters_are_422_naming_the_field(
    alice: Api, params: dict[str, Any], field: str
) -> None:
    response = alice.get("/runs", params)
    assert response.status_code == 422
    error = error_of(response)
    named = [p["where"] for p in error["details"].get("problems", [])]
    assert field in named or error["details"].get("field") == field


@pytest.mark.parametrize("cursor", ["not-a-cursor", "0" * 500, "W10", "WzEsMl0"])
def test_a_cursor_no_list_returned_is_a_400_naming_it(alice: Api, cursor: str) -> None:
    """Cursors are opaque: the document gives their alphabet and length (a 422 outside
    them), and a value of that shape the API never issued is a 400 `invalid_cursor`."""
    response = alice.get("/runs", {"cursor": cursor})
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_cursor"
    assert error["details"] == {"field": "cursor"}


@pytest.mark.parametrize(
    "value",
    ["1455-02-16T06:29:38.34-19:29", "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"],
)
def test_any_rfc3339_offset_filters_without_a_database_error(alice: Api, value: str) -> None:
    # PostgreSQL refuses offsets past 15:59; the API compares in UTC (found by schemathesis).
    assert alice.get("/runs", {"created_before": value}).status_code == 200


def test_a_bare_number_is_not_a_date(alice: Api) -> None:
    assert alice.get("/runs", {"created_before": "0.5"}).status_code == 422


@pytest.mark.parametrize(
    "params",
    [{"graph": "a\x00b"}, {"metadata_key": "k\x00", "metadata_value": "v"}, {"metadata.k": "\x00"}],
)
def test_nul_in_a_filter_is_a_clear_422(alice: Api, params: dict[str, str]) -> None:
    # PostgreSQL cannot compare with U+0000 (found by schemathesis: a 422 "too long").
    response = alice.get("/runs", params)
    assert response.status_code == 422
    assert error_of(response)["code"] in ("validation_error", "invalid_filter")
    assert "too long" not in error_of(response)["message"]
