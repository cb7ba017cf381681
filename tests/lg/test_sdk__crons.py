"""Crons through the official langgraph-sdk clients: LangGraph's cron jobs are Runyard's
schedules (create, search, count, update, delete, per tenant), and a cron made through /lg
fires through the scheduler's own pass and its run is read back through /lg."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import (
    NotFoundError,
    PermissionDeniedError,
    UnprocessableEntityError,
)

from lg.models import CronOptions
from runs.models import Run
from schedules.firing import fire_due_schedules
from schedules.models import Cron
from tenants.models import Role, Tenant
from tests.e2e.processes import Platform
from tests.lg.conftest import key_for, lg_url, received
from tests.webhooks.conftest import Receiver, receiver  # noqa: F401 - a fixture

pytestmark = pytest.mark.e2e

YEARLY = "0 0 1 1 *"  # never due while a test runs, unless the test fires it


def test_crons_create_search_count_update_delete(
    tenant: Tenant, other_tenant: Tenant, graphs: dict[str, Any], web_only: Platform
) -> None:
    client = get_sync_client(url=lg_url(web_only), api_key=key_for(tenant))
    assert client.http.get("/info")["flags"]["crons"] is True

    stateless = client.crons.create(
        "chat",
        schedule="*/5 * * * *",
        input={"question": "daily?"},
        metadata={"team": "support"},
        config={"tags": ["nightly"]},
        timezone="Europe/Paris",
    )
    assert stateless["thread_id"] is None and stateless["on_run_completed"] == "delete"
    assert stateless["assistant_id"] == str(graphs["chat"].public_id)
    assert stateless["schedule"] == "*/5 * * * *" and stateless["timezone"] == "Europe/Paris"
    assert stateless["enabled"] is True and stateless["end_time"] is None
    assert stateless["metadata"] == {"team": "support"}
    assert stateless["payload"]["input"] == {"question": "daily?"}
    assert stateless["payload"]["config"] == {"tags": ["nightly"]}
    next_run = dt.datetime.fromisoformat(stateless["next_run_date"])
    assert dt.timedelta(0) < next_run - dt.datetime.now(dt.UTC) <= dt.timedelta(minutes=5)
    cron = Cron.objects.get(public_id=stateless["cron_id"])
    assert (cron.graph_name, cron.graph_version, cron.timezone) == ("chat", None, "Europe/Paris")

    thread = client.threads.create()
    tid = thread["thread_id"]
    pinned = str(graphs["review"].public_id)
    threaded = client.crons.create_for_thread(
        tid, pinned, schedule=YEARLY, input={"item": "crate"}, multitask_strategy="enqueue"
    )
    assert threaded["thread_id"] == tid and threaded["assistant_id"] == pinned
    assert threaded["payload"]["multitask_strategy"] == "enqueue"
    assert Cron.objects.get(public_id=threaded["cron_id"]).graph_version == 1

    # Search and count: filters, sort, select, paging.
    assert {c["cron_id"] for c in client.crons.search()} == {
        stateless["cron_id"],
        threaded["cron_id"],
    }
    assert [c["cron_id"] for c in client.crons.search(thread_id=tid)] == [threaded["cron_id"]]
    assert [c["cron_id"] for c in client.crons.search(assistant_id="chat")] == [
        stateless["cron_id"]
    ]
    assert [c["cron_id"] for c in client.crons.search(metadata={"team": "support"})] == [
        stateless["cron_id"]
    ]
    by_next = client.crons.search(sort_by="next_run_date", sort_order="asc")
    assert [c["cron_id"] for c in by_next] == [stateless["cron_id"], threaded["cron_id"]]
    assert client.crons.search(select=["cron_id", "schedule"], limit=1, offset=1)[0].keys() == {
        "cron_id",
        "schedule",
    }
    assert client.crons.count() == 2
    assert client.crons.count(assistant_id=pinned) == 1
    assert client.crons.count(thread_id=tid) == 1

    # Update: schedule, enabled (disabled: no next run), input, metadata, stored options.
    updated = client.crons.update(
        stateless["cron_id"],
        schedule="0 9 * * *",
        enabled=False,
        metadata={"team": "ops"},
        context={"region": "eu"},
    )
    assert updated["schedule"] == "0 9 * * *" and updated["enabled"] is False
    assert updated["next_run_date"] is None and updated["metadata"] == {"team": "ops"}
    assert updated["payload"]["context"] == {"region": "eu"}
    assert updated["payload"]["config"] == {"tags": ["nightly"]}  # kept
    assert client.crons.search(enabled=False)[0]["cron_id"] == stateless["cron_id"]
    enabled = client.crons.update(stateless["cron_id"], enabled=True)
    assert enabled["next_run_date"] is not None

    # end_time is the schedule's own: set, sorted on, cleared.
    end = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=30)
    ending = client.crons.update(stateless["cron_id"], end_time=end)
    assert dt.datetime.fromisoformat(ending["end_time"]) == end
    assert Cron.objects.get(public_id=stateless["cron_id"]).end_time == end
    by_end = client.crons.search(sort_by="end_time", sort_order="desc")
    assert by_end[0]["cron_id"] == stateless["cron_id"]  # crons without an end come last
    assert client.crons.update(stateless["cron_id"], end_time=None)["end_time"] is None

    # What schedules cannot do is a 422 that says why; a bad expression or input too.
    tomorrow = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    refusals: list[tuple[dict[str, Any], str]] = [
        ({"webhook": "http://127.0.0.1:9/hook"}, "allow-list"),
        ({"end_time": tomorrow}, "never fire"),  # a yearly schedule's first tick is later
        ({"interrupt_before": ["draft"]}, "interrupt_before"),
        ({"on_run_completed": "keep"}, "on_run_completed"),
    ]
    for kwargs, word in refusals:
        with pytest.raises(UnprocessableEntityError) as refused:
            client.crons.create("chat", schedule=YEARLY, input={"question": "x"}, **kwargs)
        assert word in refused.value.response.json()["detail"]
    with pytest.raises(UnprocessableEntityError):
        client.crons.create("chat", schedule="61 * * * *", input={"question": "x"})
    with pytest.raises(UnprocessableEntityError):
        client.crons.create("chat", schedule=YEARLY, input={})  # input_schema wants question
    with pytest.raises(UnprocessableEntityError):
        client.crons.create("chat", schedule=YEARLY, input={"question": "x"}, timezone="Mars/Base")
    with pytest.raises(UnprocessableEntityError):
        client.crons.update(stateless["cron_id"], webhook="http://127.0.0.1:9/hook")
    with pytest.raises(NotFoundError):
        client.crons.create("nope", schedule=YEARLY)
    with pytest.raises(NotFoundError):
        client.crons.create_for_thread(
            "00000000-0000-0000-0000-000000000000", "chat", schedule=YEARLY
        )
    assert client.crons.count() == 2  # no refusal left a schedule behind

    # Another tenant sees none of it; a viewer reads but does not write.
    bob = get_sync_client(url=lg_url(web_only), api_key=key_for(other_tenant))
    assert bob.crons.search() == [] and bob.crons.count() == 0
    for call in (
        lambda: bob.crons.update(stateless["cron_id"], enabled=False),
        lambda: bob.crons.delete(stateless["cron_id"]),
        lambda: bob.crons.create_for_thread(tid, "chat", schedule=YEARLY),
        lambda: bob.crons.search(thread_id=tid),
        lambda: bob.crons.create(pinned, schedule=YEARLY),
    ):
        with pytest.raises(NotFoundError):
            call()
    viewer = get_sync_client(url=lg_url(web_only), api_key=key_for(tenant, Role.VIEWER))
    assert viewer.crons.count() == 2
    with pytest.raises(PermissionDeniedError):
        viewer.crons.delete(stateless["cron_id"])

    client.crons.delete(stateless["cron_id"])
    with pytest.raises(NotFoundError):
        client.crons.delete(stateless["cron_id"])
    with pytest.raises(NotFoundError):
        client.crons.update("not-a-cron", enabled=False)
    assert not CronOptions.objects.filter(cron__public_id=stateless["cron_id"]).exists()
    # Deleting the thread takes its schedule with it.
    client.threads.delete(tid)
    assert client.crons.count() == 0


def test_crons_async_client_and_created_assistants(
    tenant: Tenant, graphs: dict[str, Any], web_only: Platform
) -> None:
    key = key_for(tenant)

    async def scenario() -> None:
        client = get_client(url=lg_url(web_only), api_key=key)
        assistant = await client.assistants.create(
            "chat", config={"tags": ["bot"]}, context={"tone": "dry"}, name="bot"
        )
        cron = await client.crons.create(
            assistant["assistant_id"],
            schedule="@daily",
            input={"question": "news?"},
            stream_mode=["values", "updates"],
            durability="sync",
        )
        assert cron["assistant_id"] == assistant["assistant_id"]
        assert cron["payload"]["config"] == {"tags": ["bot"]}  # the assistant's
        assert cron["payload"]["context"] == {"tone": "dry"}
        assert cron["payload"]["stream_mode"] == ["values", "updates"]
        by_assistant = await client.crons.search(assistant_id=assistant["assistant_id"])
        assert [c["cron_id"] for c in by_assistant] == [cron["cron_id"]]
        assert await client.crons.search(assistant_id="chat") == []  # the graph's own: none
        assert await client.crons.count(assistant_id=assistant["assistant_id"]) == 1

        updated = await client.crons.update(cron["cron_id"], input={"question": "weather?"})
        assert updated["payload"]["input"] == {"question": "weather?"}
        with pytest.raises(UnprocessableEntityError):
            await client.crons.update(cron["cron_id"], input={"nothing": 1})
        with pytest.raises(UnprocessableEntityError):
            await client.crons.create("chat", schedule="@daily", durability="later")

        await client.crons.delete(cron["cron_id"])
        assert await client.crons.count() == 0
        await client.http.client.aclose()

    asyncio.run(scenario())


def test_thread_cron_fires_and_its_run_is_read_through_lg(
    tenant: Tenant,
    graphs: dict[str, Any],
    receiver: Receiver,  # noqa: F811 - the imported fixture
    lg_platform: Platform,
) -> None:
    tenant.http_allowed_hosts = ["127.0.0.1"]
    tenant.http_allow_private = True
    tenant.save(update_fields=["http_allowed_hosts", "http_allow_private"])
    client = get_sync_client(url=lg_url(lg_platform), api_key=key_for(tenant))
    tid = client.threads.create()["thread_id"]
    cron = client.crons.create_for_thread(
        tid,
        "chat",
        schedule=YEARLY,
        input={"question": "yearly?"},
        metadata={"kind": "report"},
        webhook=receiver.url,
    )
    assert cron["payload"]["webhook"] == receiver.url
    due = dt.datetime.fromisoformat(cron["next_run_date"])

    fired = fire_due_schedules(now=due + dt.timedelta(seconds=1))
    assert [(f.outcome, f.error) for f in fired] == [("started", None)]
    run_id = str(fired[0].run.public_id)  # type: ignore[union-attr]

    values = client.runs.join(tid, run_id)
    assert values["answer"] == "the polished answer" and values["question"] == "yearly?"
    run = client.runs.get(tid, run_id)
    assert run["status"] == "success"
    assert run["metadata"] == {"kind": "report", "cron_id": cron["cron_id"]}
    assert [r["run_id"] for r in client.runs.list(tid)] == [run_id]
    assert client.threads.get_state(tid)["values"]["answer"] == "the polished answer"
    again = client.crons.search(thread_id=tid)[0]
    assert dt.datetime.fromisoformat(again["next_run_date"]) > due  # the next year's tick
    assert Run.objects.filter(metadata__cron_id=cron["cron_id"]).count() == 1
    # The cron's webhook went to its run: the worker told the receiver it succeeded.
    done = received(receiver, run_id, "run.succeeded")
    assert done.json()["run"]["metadata"]["cron_id"] == cron["cron_id"]
