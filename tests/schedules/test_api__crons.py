"""/api/v1/crons: create, list, read, change and delete schedules; field errors as 422s that
name the field; roles; another tenant's schedule is a 404."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from runs.services import create_graph_version, create_thread
from schedules.models import Cron
from tenants.models import Tenant
from tests.runs.test_api__helpers import Api, error_of
from tests.schedules.conftest import typed_spec

pytestmark = pytest.mark.django_db

CRON_KEYS = {
    "id",
    "graph",
    "version",
    "input",
    "schedule",
    "timezone",
    "thread_id",
    "enabled",
    "metadata",
    "priority",
    "multitask_strategy",
    "end_time",
    "webhook",
    "next_run_at",
    "last_fired_at",
    "last_run_id",
    "last_outcome",
    "last_error",
    "fire_count",
    "created_at",
    "updated_at",
}


def parse(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def create(api: Api, **body: Any) -> Any:
    return api.post("/crons", {"graph": "chain", "schedule": "*/5 * * * *", **body})


def test_create_returns_201_with_id_and_next_run_at(alice: Api) -> None:
    before = dt.datetime.now(dt.UTC)
    response = create(alice, input={"count": 2}, metadata={"team": "ops"})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == CRON_KEYS | {"fires"}
    assert uuid.UUID(body["id"]) == Cron.objects.get().public_id
    nxt = parse(body["next_run_at"])
    assert before < nxt <= before + dt.timedelta(minutes=5)
    assert nxt.minute % 5 == 0 and nxt.second == 0
    assert body["timezone"] == "UTC" and body["enabled"] is True and body["priority"] == 3
    assert body["version"] is None and body["input"] == {"count": 2}
    assert body["metadata"] == {"team": "ops"} and body["fires"] == []


def test_next_run_at_follows_the_timezone(alice: Api) -> None:
    body = create(alice, schedule="0 9 * * *", timezone="Asia/Tokyo").json()
    nxt = parse(body["next_run_at"])
    assert nxt.hour == 0 and nxt.minute == 0  # 09:00 in Tokyo is 00:00 UTC
    assert body["timezone"] == "Asia/Tokyo"


def test_nicknames_are_accepted(alice: Api) -> None:
    body = create(alice, schedule="@hourly").json()
    assert body["schedule"] == "@hourly" and parse(body["next_run_at"]).minute == 0


@pytest.mark.parametrize(
    "schedule",
    ["61 * * * *", "* * * *", "* * * * * *", "not a cron", "@reboot", "0 0 30 2 *", "*/0 * * * *"],
)
def test_bad_cron_expression_is_a_422_naming_schedule(alice: Api, schedule: str) -> None:
    response = create(alice, schedule=schedule)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_schedule"  # its own code: no schema can state it
    assert error["details"]["field"] == "schedule"
    assert error["details"]["problems"][0]["where"] == "schedule"
    assert "schedule" in error["message"]
    assert not Cron.objects.exists()


@pytest.mark.parametrize("tz", ["Mars/Olympus", "../../etc/passwd", "/etc/localtime", "utc+1"])
def test_unknown_timezone_is_a_422_naming_timezone(alice: Api, tz: str) -> None:
    response = create(alice, timezone=tz)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_timezone"
    assert error["details"]["field"] == "timezone" and "timezone" in error["message"].lower()


def test_priority_out_of_range_is_a_422(alice: Api) -> None:
    response = create(alice, priority=9)
    assert response.status_code == 422
    assert error_of(response)["details"]["problems"][0]["where"] == "priority"
    assert create(alice, priority=1).json()["priority"] == 1


def test_unknown_graph_is_a_404_and_input_is_checked_now(tenant: Tenant, alice: Api) -> None:
    assert create(alice, graph="nope").status_code == 404
    create_graph_version(tenant, typed_spec())
    response = create(alice, graph="typed", input={})
    assert response.status_code == 422
    assert error_of(response)["code"] == "invalid_input"
    assert create(alice, graph="typed", input={"text": "hi"}).status_code == 201


def test_thread_must_be_the_tenants(tenant: Tenant, other_tenant: Tenant, alice: Api) -> None:
    mine = create_thread(tenant)
    theirs = create_thread(other_tenant)
    assert create(alice, thread_id=str(theirs.public_id)).status_code == 404
    body = create(alice, thread_id=str(mine.public_id)).json()
    assert body["thread_id"] == str(mine.public_id)


def test_list_is_newest_first_with_cursor_pages(alice: Api) -> None:
    ids = [create(alice, metadata={"n": i}).json()["id"] for i in range(5)]
    first = alice.get("/crons", {"limit": 2}).json()
    assert [c["id"] for c in first["items"]] == ids[::-1][:2]
    assert set(first["items"][0]) == CRON_KEYS
    second = alice.get("/crons", {"limit": 2, "cursor": first["next_cursor"]}).json()
    third = alice.get("/crons", {"limit": 2, "cursor": second["next_cursor"]}).json()
    assert [c["id"] for c in second["items"] + third["items"]] == ids[::-1][2:]
    assert third["next_cursor"] is None
    assert error_of(alice.get("/crons", {"cursor": "garbage"}))["code"] == "invalid_cursor"


def test_list_filters_by_enabled_and_graph(tenant: Tenant, alice: Api) -> None:
    create_graph_version(tenant, typed_spec())
    on = create(alice).json()["id"]
    off = create(alice, enabled=False).json()["id"]
    typed = create(alice, graph="typed", input={"text": "x"}).json()["id"]
    assert [c["id"] for c in alice.get("/crons", {"enabled": "false"}).json()["items"]] == [off]
    assert {c["id"] for c in alice.get("/crons", {"enabled": "true"}).json()["items"]} == {
        on,
        typed,
    }
    assert [c["id"] for c in alice.get("/crons", {"graph": "typed"}).json()["items"]] == [typed]


def test_get_shows_one_schedule(alice: Api) -> None:
    cron = create(alice).json()
    body = alice.get(f"/crons/{cron['id']}").json()
    assert body["id"] == cron["id"] and body["fires"] == []
    assert alice.get(f"/crons/{uuid.uuid4()}").status_code == 404


def test_patch_changes_only_what_is_sent(alice: Api) -> None:
    cron = create(alice, input={"count": 1}, metadata={"a": 1}).json()
    response = alice.client.patch(
        f"/api/v1/crons/{cron['id']}",
        {"schedule": "0 12 * * *", "timezone": "Europe/Paris", "priority": 5},
        content_type="application/json",
        headers=alice.headers,
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["schedule"] == "0 12 * * *" and body["timezone"] == "Europe/Paris"
    assert body["priority"] == 5 and body["input"] == {"count": 1} and body["metadata"] == {"a": 1}
    nxt = parse(body["next_run_at"])
    assert nxt.hour in (10, 11) and nxt.minute == 0  # noon in Paris, summer or winter


def patch(api: Api, cron_id: str, body: dict[str, Any]) -> Any:
    return api.client.patch(
        f"/api/v1/crons/{cron_id}", body, content_type="application/json", headers=api.headers
    )


def test_disabling_clears_next_run_at_and_enabling_sets_it(alice: Api) -> None:
    cron = create(alice).json()
    off = patch(alice, cron["id"], {"enabled": False}).json()
    assert off["enabled"] is False and off["next_run_at"] is None
    on = patch(alice, cron["id"], {"enabled": True}).json()
    assert on["enabled"] is True and parse(on["next_run_at"]) > dt.datetime.now(dt.UTC)


def test_patch_with_bad_values_is_a_422_and_changes_nothing(alice: Api) -> None:
    cron = create(alice).json()
    bad = patch(alice, cron["id"], {"schedule": "99 * * * *"})
    assert bad.status_code == 422 and error_of(bad)["details"]["field"] == "schedule"
    assert error_of(bad)["code"] == "invalid_schedule"
    bad = patch(alice, cron["id"], {"timezone": "Nowhere/Land"})
    assert bad.status_code == 422 and error_of(bad)["details"]["field"] == "timezone"
    assert error_of(bad)["code"] == "invalid_timezone"
    bad = patch(alice, cron["id"], {"id": "x"})
    assert bad.status_code == 422
    assert alice.get(f"/crons/{cron['id']}").json()["schedule"] == "*/5 * * * *"


def test_delete_removes_the_schedule(alice: Api) -> None:
    cron = create(alice).json()
    response = alice.request("DELETE", f"/crons/{cron['id']}")
    assert response.status_code == 204
    assert not Cron.objects.exists()
    assert alice.request("DELETE", f"/crons/{cron['id']}").status_code == 404


def test_viewers_read_but_do_not_write(alice: Api, alice_viewer: Api) -> None:
    cron = create(alice).json()
    assert alice_viewer.get("/crons").json()["items"][0]["id"] == cron["id"]
    assert alice_viewer.get(f"/crons/{cron['id']}").status_code == 200
    assert error_of(create(alice_viewer))["code"] == "forbidden"
    assert patch(alice_viewer, cron["id"], {"enabled": False}).status_code == 403
    assert alice_viewer.request("DELETE", f"/crons/{cron['id']}").status_code == 403


def test_another_tenants_schedule_is_a_404(alice: Api, bob: Api) -> None:
    cron = create(alice).json()
    assert bob.get("/crons").json()["items"] == []
    assert error_of(bob.get(f"/crons/{cron['id']}"))["code"] == "not_found"
    assert patch(bob, cron["id"], {"enabled": False}).status_code == 404
    assert bob.request("DELETE", f"/crons/{cron['id']}").status_code == 404
    assert Cron.objects.get().enabled is True


def test_schedules_per_tenant_are_capped(alice: Api, settings: Any) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "MAX_CRONS_PER_TENANT": 2}
    assert create(alice).status_code == 201 and create(alice).status_code == 201
    response = create(alice)
    assert response.status_code == 409
    assert error_of(response)["code"] == "too_many_schedules"


def test_oversized_input_is_a_413(alice: Api, settings: Any) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "MAX_INPUT_BYTES": 100}
    assert create(alice, input={"count": 1, "pad": "x" * 200}).status_code == 413


def test_refusals_no_schema_states_have_their_own_codes(alice: Api) -> None:
    """The OpenAPI document cannot say which expressions fire or which zones exist: those
    refusals carry their own codes (the document names them), never `validation_error`."""
    past = create(alice, schedule="0 9 * * *", end_time="2000-01-01T00:00:00Z")
    assert past.status_code == 422
    assert error_of(past)["code"] == "end_time_before_first_tick"
    assert error_of(past)["details"]["field"] == "end_time"
    never = create(alice, schedule="0 0 30 2 *")
    assert error_of(never)["code"] == "invalid_schedule"
    # An empty webhook means none; a blank one is a shape error the document states.
    assert create(alice, webhook="").json()["webhook"] is None
    blank = create(alice, webhook="   ")
    assert blank.status_code == 422 and error_of(blank)["code"] == "validation_error"
    assert Cron.objects.count() == 1
