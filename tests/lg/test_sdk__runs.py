"""Runs through the official langgraph-sdk clients against daphne + qcluster + scheduler:
background runs and joins, waits, streams in every mode, stateless runs, multitask
strategies, cancels, batches, and the options Runyard refuses."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import ConflictError, NotFoundError, UnprocessableEntityError

from runs.models import Run
from runs.services import create_graph_version
from tenants.models import Tenant
from tests.e2e.processes import Platform
from tests.e2e.test_live__delivery import paced_spec
from tests.lg.conftest import key_for, lg_url

pytestmark = pytest.mark.e2e


def test_background_run_join_wait_and_list(
    tenant: Tenant, other_tenant: Tenant, graphs: dict[str, Any], lg_platform: Platform
) -> None:
    client = get_sync_client(url=lg_url(lg_platform), api_key=key_for(tenant))
    thread = client.threads.create()
    tid = thread["thread_id"]
    created: list[Any] = []
    run = client.runs.create(
        tid,
        "chat",
        input={"question": "why?"},
        metadata={"ticket": 7},
        on_run_created=created.append,
    )
    assert run["status"] in ("pending", "running")
    assert run["thread_id"] == tid and run["metadata"] == {"ticket": 7}
    assert created == [{"run_id": run["run_id"], "thread_id": tid}]

    values = client.runs.join(tid, run["run_id"])
    assert values["answer"] == "the polished answer"
    assert values["draft"] == "a first draft in five tokens"
    done = client.runs.get(tid, run["run_id"])
    assert done["status"] == "success"
    assert done["assistant_id"] == str(graphs["chat"].public_id)
    assert client.threads.get(tid)["status"] == "idle"
    assert client.threads.get_state(tid)["values"]["answer"] == "the polished answer"
    history = client.threads.get_history(tid)
    assert history[0]["values"]["answer"] == "the polished answer"
    assert history[-1]["metadata"]["source"] == "input"

    # A second run on the thread starts from the state the first left.
    second = client.runs.wait(tid, "chat", input={"question": "and then?"})
    assert second["question"] == "and then?" and second["answer"] == "the polished answer"
    listed = client.runs.list(tid)
    assert [r["status"] for r in listed] == ["success", "success"]
    assert client.runs.list(tid, status="error") == []

    # Stateless: no thread.
    alone = client.runs.wait(None, "chat", input={"question": "alone"})
    assert alone["answer"] == "the polished answer"

    # Fork from the first run's first checkpoint (after `draft`): only `polish` runs again.
    first_step = [h for h in history if h["metadata"].get("step") == 0][0]
    forked = client.runs.wait(tid, "chat", checkpoint_id=first_step["checkpoint"]["checkpoint_id"])
    assert forked["answer"] == "the polished answer" and forked["question"] == "why?"

    # Bad input is the graph's 422; an unknown assistant 404.
    with pytest.raises(UnprocessableEntityError):
        client.runs.create(tid, "chat", input={"nope": 1})
    with pytest.raises(NotFoundError):
        client.runs.create(tid, "no-such-graph", input={})

    bob = get_sync_client(url=lg_url(lg_platform), api_key=key_for(other_tenant))
    with pytest.raises(NotFoundError):
        bob.runs.get(tid, run["run_id"])
    with pytest.raises(NotFoundError):
        bob.runs.create(tid, "chat", input={"question": "x"})
    with pytest.raises(NotFoundError):
        bob.runs.list(tid)
    # join goes through the SDK's reconnecting request, which raises httpx's error.
    with pytest.raises(httpx.HTTPStatusError) as joined:
        bob.runs.join(tid, run["run_id"])
    assert joined.value.response.status_code == 404

    client.runs.delete(tid, run["run_id"])
    with pytest.raises(NotFoundError):
        client.runs.get(tid, run["run_id"])


def test_stream_modes(tenant: Tenant, graphs: dict[str, Any], lg_platform: Platform) -> None:
    client = get_sync_client(url=lg_url(lg_platform), api_key=key_for(tenant))
    tid = client.threads.create()["thread_id"]
    parts = list(
        client.runs.stream(
            tid,
            "chat",
            input={"question": "why?"},
            stream_mode=[
                "values",
                "updates",
                "messages-tuple",
                "tasks",
                "checkpoints",
                "debug",
                "events",
                "custom",
            ],
        )
    )
    events = [p.event for p in parts]
    assert events[0] == "metadata" and parts[0].data["attempt"] == 1
    run_id = parts[0].data["run_id"]
    assert events[-1] == "end"
    assert all(p.id for p in parts), "every event carries an id"
    ids = [p.id for p in parts]
    assert len(set(ids[1:])) == len(ids) - 1

    values = [p.data for p in parts if p.event == "values"]
    assert values[0]["question"] == "why?" and "answer" not in values[0]
    assert values[-1]["answer"] == "the polished answer"
    updates = [p.data for p in parts if p.event == "updates"]
    assert updates == [
        {"draft": {"draft": "a first draft in five tokens"}},
        {"polish": {"answer": "the polished answer"}},
        {"done": None},
    ]
    tokens = [p.data for p in parts if p.event == "messages"]
    text = "".join(chunk["content"] for chunk, meta in tokens if meta["langgraph_node"] == "polish")
    assert text == "the polished answer"
    assert {chunk["type"] for chunk, _ in tokens} == {"AIMessageChunk"}
    tasks = [p.data for p in parts if p.event == "tasks"]
    assert [t["name"] for t in tasks] == ["draft", "draft", "polish", "polish", "done", "done"]
    assert tasks[1]["result"] == {"draft": "a first draft in five tokens"}
    checkpoints = [p.data for p in parts if p.event == "checkpoints"]
    assert [c["next"] for c in checkpoints] == [["draft"], ["polish"], ["done"], []]
    debug_types = {p.data["type"] for p in parts if p.event == "debug"}
    assert debug_types == {"task", "task_result", "checkpoint"}
    kinds = {p.data["event"] for p in parts if p.event == "events"}
    assert {"on_chain_start", "on_chain_end", "on_chat_model_stream"} <= kinds
    # The llm nodes' own `llm.request` records arrive as custom events.
    assert any(p.data["type"] == "llm.request" for p in parts if p.event == "custom")

    # Replaying the whole run from its stored events gives the same parts.
    replay = list(
        client.runs.join_stream(tid, run_id, last_event_id="-1", stream_mode=["values", "updates"])
    )
    assert [p.data for p in replay if p.event == "updates"] == updates
    assert replay[-1].event == "end"
    # `messages`: metadata once per message, the text so far, the whole message at the end.
    messages = list(
        client.runs.stream(tid, "chat", input={"question": "m"}, stream_mode=["messages", "tools"])
    )
    kinds = [p.event for p in messages]
    assert kinds.count("messages/metadata") == 2 and kinds.count("messages/complete") == 2
    complete = [p.data[0] for p in messages if p.event == "messages/complete"]
    assert [m["content"] for m in complete] == [
        "a first draft in five tokens",
        "the polished answer",
    ]
    partial = [p.data[0]["content"] for p in messages if p.event == "messages/partial"]
    assert partial[-1] == "the polished answer"
    # Default stream mode of a POST /stream is values.
    only_values = list(client.runs.stream(tid, "chat", input={"question": "again"}))
    assert {p.event for p in only_values} == {"metadata", "values", "end"}


def test_async_client_stream_and_v2(
    tenant: Tenant, graphs: dict[str, Any], lg_platform: Platform
) -> None:
    asyncio.run(async_client_stream_and_v2(lg_url(lg_platform), key_for(tenant)))


async def async_client_stream_and_v2(url: str, key: str) -> None:
    client = get_client(url=url, api_key=key)
    thread = await client.threads.create()
    got = [
        part
        async for part in client.runs.stream(
            thread["thread_id"],
            "chat",
            input={"question": "v2"},
            stream_mode="updates",
            version="v2",
        )
    ]
    assert [p["type"] for p in got] == ["metadata", "updates", "updates", "updates"]
    assert got[-1]["data"] == {"done": None} and got[-1]["ns"] == []
    stateless = [p async for p in client.runs.stream(None, "chat", input={"question": "s"})]
    assert stateless[-1].event == "end"
    assert stateless[-2].data["answer"] == "the polished answer"
    assert await client.assistants.count() == 2


def test_multitask_cancel_batch_and_refusals(
    tenant: Tenant, graphs: dict[str, Any], lg_platform: Platform
) -> None:
    client = get_sync_client(url=lg_url(lg_platform), api_key=key_for(tenant))
    tid = client.threads.create()["thread_id"]
    # The review graph stops at its approval: the thread stays interrupted (its run active).
    waiting = client.runs.wait(tid, "review", input={"item": "boat"})
    assert waiting["__interrupt__"][0]["value"]["kind"] == "approval"
    assert client.threads.get(tid)["status"] == "interrupted"

    with pytest.raises(ConflictError):
        client.runs.create(tid, "review", input={"item": "car"})
    with pytest.raises(ConflictError):
        client.runs.create(tid, "review", input={"item": "car"}, multitask_strategy="reject")
    queued = client.runs.create(tid, "chat", input={"question": "q"}, multitask_strategy="enqueue")
    assert queued["multitask_strategy"] == "enqueue"
    # interrupt: the waiting run is cancelled, the new one runs.
    newest = client.runs.create(
        tid, "chat", input={"question": "now"}, multitask_strategy="interrupt"
    )
    client.runs.join(tid, newest["run_id"])
    runs = {r["run_id"]: r["status"] for r in client.runs.list(tid)}
    assert runs[newest["run_id"]] == "success"
    assert list(runs.values()).count("interrupted") >= 1

    # cancel a waiting run; wait=True returns once it ended.
    tid2 = client.threads.create()["thread_id"]
    held = client.runs.create(tid2, "review", input={"item": "kite"})
    client.runs.join(tid2, held["run_id"])
    client.runs.cancel(tid2, held["run_id"], wait=True)
    assert client.runs.get(tid2, held["run_id"])["status"] == "interrupted"
    assert Run.objects.get(public_id=held["run_id"]).status == "cancelled"
    with pytest.raises(UnprocessableEntityError):
        client.runs.cancel(tid2, held["run_id"], action="explode")

    # Bulk cancel by ids.
    tid3 = client.threads.create()["thread_id"]
    third = client.runs.create(tid3, "review", input={"item": "sled"})
    client.runs.join(tid3, third["run_id"])
    client.runs.cancel_many(thread_id=tid3, run_ids=[third["run_id"]])
    assert client.runs.get(tid3, third["run_id"])["status"] == "interrupted"

    batch = client.runs.create_batch(
        [{"assistant_id": "chat", "input": {"question": str(i)}} for i in range(3)]
    )
    assert len(batch) == 3 and all(r["thread_id"] is None for r in batch)

    refused = {
        "interrupt_before": ["draft"],
        "after_seconds": 5,
    }
    for option, value in refused.items():
        with pytest.raises(UnprocessableEntityError) as err:
            client.runs.create(tid3, "chat", input={"question": "x"}, **{option: value})
        assert err.value.response.json()["detail"]
    with pytest.raises(UnprocessableEntityError) as mode:
        list(client.runs.stream(tid3, "chat", input={"question": "x"}, stream_mode="lifecycle"))
    assert "stream_mode" in mode.value.response.json()["detail"]

    # if_not_exists=create makes the thread the run names.
    fresh = "5f1c6ad2-3c84-4b8e-9d8a-5a4d7b0c9e11"
    with pytest.raises(NotFoundError):
        client.runs.create(fresh, "chat", input={"question": "x"})
    made = client.runs.wait(fresh, "chat", input={"question": "x"}, if_not_exists="create")
    assert made["answer"] == "the polished answer"
    assert client.threads.get(fresh)["status"] == "idle"


def test_disconnect_cancel_rollback_and_bulk_cancel(
    tenant: Tenant, graphs: dict[str, Any], lg_platform: Platform
) -> None:
    create_graph_version(tenant, paced_spec(steps=10, latency_ms=300))
    client = get_sync_client(url=lg_url(lg_platform), api_key=key_for(tenant))

    # on_disconnect=cancel: the client leaves mid-run, the run is cancelled.
    tid = client.threads.create()["thread_id"]
    parts = client.runs.stream(
        tid, "paced", input={}, stream_mode="updates", on_disconnect="cancel"
    )
    run_id = next(parts).data["run_id"]
    assert next(parts).event == "updates"
    parts.close()
    deadline = time.monotonic() + 20
    while Run.objects.get(public_id=run_id).status != "cancelled":
        assert time.monotonic() < deadline, Run.objects.get(public_id=run_id).status
        time.sleep(0.1)
    assert client.runs.get(tid, run_id)["status"] == "interrupted"

    # action=rollback: the thread's values are those from before the cancelled run.
    tid2 = client.threads.create()["thread_id"]
    client.runs.wait(tid2, "chat", input={"question": "first"})
    before = client.threads.get_state(tid2)["values"]
    held = client.runs.create(tid2, "review", input={"item": "boat"})
    assert "proposal" in client.runs.join(tid2, held["run_id"])
    client.runs.cancel(tid2, held["run_id"], action="rollback", wait=True)
    assert client.threads.get_state(tid2)["values"] == before
    assert client.threads.get(tid2)["status"] == "idle"

    # Bulk cancel by status.
    waiting = [client.threads.create()["thread_id"] for _ in range(2)]
    for t in waiting:
        client.runs.wait(t, "review", input={"item": "x"})
    client.runs.cancel_many(status="all")
    for t in waiting:
        assert client.threads.get(t)["status"] == "idle"
        assert [r["status"] for r in client.runs.list(t)] == ["interrupted"]


def test_stream_subgraphs(tenant: Tenant, graphs: dict[str, Any], lg_platform: Platform) -> None:
    create_graph_version(
        tenant,
        {
            "name": "outer",
            "start": "ask",
            "nodes": {
                "ask": {
                    "kind": "subgraph",
                    "graph": "chat",
                    "input": {"question": "state.topic"},
                    "output": "inner",
                },
                "done": {"kind": "end"},
            },
            "edges": [{"from": "ask", "to": "done"}],
        },
    )
    client = get_sync_client(url=lg_url(lg_platform), api_key=key_for(tenant))
    tid = client.threads.create()["thread_id"]
    parts = list(
        client.runs.stream(
            tid, "outer", input={"topic": "nesting"}, stream_mode="updates", stream_subgraphs=True
        )
    )
    names = [p.event for p in parts]
    inner = [p for p in parts if p.event.startswith("updates|ask:")]
    assert [next(iter(p.data)) for p in inner] == ["draft", "polish", "done"]
    child_id = inner[0].event.split("|ask:")[1]
    assert Run.objects.get(public_id=child_id).parent.public_id.hex == (
        Run.objects.get(public_id=parts[0].data["run_id"]).public_id.hex
    )
    # The child's parts come before the parent's step that ran it.
    assert names.index("updates") > names.index(inner[-1].event)
    outer = [p.data for p in parts if p.event == "updates"]
    assert outer[0]["ask"]["inner"]["answer"] == "the polished answer"
    # Joined again (as the SDK's reconnect does, with no parameters), it still has them.
    replay = list(client.runs.join_stream(tid, parts[0].data["run_id"], last_event_id="-1"))
    assert [p.event for p in replay if "|" in p.event] == [p.event for p in parts if "|" in p.event]
    plain = list(client.runs.stream(tid, "outer", input={"topic": "x"}, stream_mode="updates"))
    assert not any("|" in p.event for p in plain)
