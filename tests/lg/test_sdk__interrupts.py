"""Human in the loop through the SDK: approval and input nodes are interrupts, and
`command.resume` answers them (update and goto become the approval's patch and route)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import ConflictError, UnprocessableEntityError

from tenants.models import Tenant
from tests.e2e.processes import Platform
from tests.lg.conftest import key_for, lg_url

pytestmark = pytest.mark.e2e


def test_interrupt_resume_cycle_async(
    tenant: Tenant, graphs: dict[str, Any], lg_platform: Platform
) -> None:
    asyncio.run(interrupt_resume_cycle(lg_url(lg_platform), key_for(tenant)))


async def interrupt_resume_cycle(url: str, key: str) -> None:
    client = get_client(url=url, api_key=key)
    tid = (await client.threads.create())["thread_id"]
    parts = [
        p
        async for p in client.runs.stream(
            tid, "review", input={"item": "boat"}, stream_mode=["values", "updates"]
        )
    ]
    run_id = parts[0].data["run_id"]
    assert parts[-1].event == "end"
    interrupt = parts[-2].data["__interrupt__"][0]
    assert parts[-2].event == "values" and parts[-2].data["proposal"] == "ship boat"
    assert interrupt["id"] == "approve@1"
    assert interrupt["value"]["kind"] == "approval"
    assert interrupt["value"]["message"] == "Ship boat?"
    assert interrupt["value"]["routes"] == ["who"]
    assert {"updates"} == {
        p.event for p in parts if "__interrupt__" in (p.data or {}) and p.event == "updates"
    }

    thread = await client.threads.get(tid)
    assert thread["status"] == "interrupted"
    assert list(thread["interrupts"]) == ["approve@1"]
    state = await client.threads.get_state(tid)
    assert state["next"] == ["approve"]
    assert state["tasks"][0]["name"] == "approve"
    assert state["tasks"][0]["interrupts"][0]["id"] == "approve@1"
    assert state["interrupts"][0]["value"]["kind"] == "approval"
    assert (await client.runs.get(tid, run_id))["status"] == "interrupted"
    with pytest.raises(ConflictError):
        await client.threads.update_state(tid, {"item": "car"})
    # /wait goes through the SDK's reconnecting request, which raises httpx's own error.
    with pytest.raises(httpx.HTTPStatusError) as vague:
        await client.runs.wait(tid, "review", command={"resume": "maybe"})
    assert vague.value.response.status_code == 422
    with pytest.raises(UnprocessableEntityError):
        await client.runs.create(tid, "review", command={"resume": "approve", "goto": "nowhere"})

    # Approve with a patch (command.update): the same run goes on, to the input node.
    resumed = [
        p
        async for p in client.runs.stream(
            tid,
            "review",
            command={"resume": {"decision": "approve"}, "update": {"note": "looks fine"}},
            stream_mode=["values", "updates"],
        )
    ]
    assert resumed[0].data["run_id"] == run_id
    assert resumed[-1].event == "end"
    asked = resumed[-2].data
    assert asked["note"] == "looks fine"
    assert asked["__interrupt__"][0]["value"]["kind"] == "input"
    # The patch is what the approval step wrote.
    assert [p.data for p in resumed if p.event == "updates"][0] == {
        "approve": {"note": "looks fine"}
    }

    # Answer the input: the value is what resume carries.
    final = await client.runs.wait(tid, "review", command={"resume": "ada"})
    assert final["reviewer"] == "ada" and final["shipped"] is True
    assert "__interrupt__" not in final
    assert (await client.threads.get(tid))["status"] == "idle"
    assert (await client.runs.get(tid, run_id))["status"] == "success"
    with pytest.raises(ConflictError):
        await client.runs.create(tid, "review", command={"resume": "approve"})


def test_reject_goto_and_join_of_waiting_run(
    tenant: Tenant, graphs: dict[str, Any], lg_platform: Platform
) -> None:
    client = get_sync_client(url=lg_url(lg_platform), api_key=key_for(tenant))
    tid = client.threads.create()["thread_id"]
    run = client.runs.create(tid, "review", input={"item": "kite"})
    waiting = client.runs.join(tid, run["run_id"])
    assert waiting["__interrupt__"][0]["id"] == "approve@1"
    # A join stream of a run already waiting ends at once, after its metadata.
    joined = list(client.runs.join_stream(tid, run["run_id"]))
    assert [p.event for p in joined] == ["metadata", "end"]
    rejected = client.runs.wait(tid, "review", command={"resume": {"decision": "reject"}})
    assert rejected["shipped"] is False and "reviewer" not in rejected

    tid2 = client.threads.create()["thread_id"]
    client.runs.wait(tid2, "review", input={"item": "sled"})
    routed = client.runs.wait(tid2, "review", command={"resume": True, "goto": "who"})
    assert routed["__interrupt__"][0]["value"]["kind"] == "input"
    done = client.runs.wait(tid2, "review", command={"resume": "bo"})
    assert done["reviewer"] == "bo"
