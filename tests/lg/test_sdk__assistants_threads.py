"""Assistants and threads through the official langgraph-sdk sync client, against daphne.

Graph versions are assistants; a graph's name is an assistant id; created assistants are
versioned configurations; threads, their state, history and copies. Another tenant sees 404.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    UnprocessableEntityError,
)

from runs.services import create_graph_version
from tenants.models import Role, Tenant
from tests.e2e.processes import Platform
from tests.lg.conftest import chat_spec, key_for, lg_url

pytestmark = pytest.mark.e2e


def test_ok_info_and_auth(tenant: Tenant, web_only: Platform) -> None:
    base = lg_url(web_only)
    assert httpx.get(base + "/ok").json() == {"ok": True}
    info = httpx.get(base + "/info").json()
    assert info["flags"]["assistants"] is True and info["flags"]["crons"] is True

    anonymous = get_sync_client(url=base, api_key=None)
    with pytest.raises(AuthenticationError) as missing:
        anonymous.assistants.search()
    assert missing.value.response.status_code == 401
    assert "x-api-key" in missing.value.response.json()["detail"]
    with pytest.raises(AuthenticationError):
        get_sync_client(url=base, api_key="ry_bogus_key").threads.search()

    viewer = get_sync_client(url=base, api_key=key_for(tenant, Role.VIEWER))
    assert viewer.threads.search() == []
    with pytest.raises(PermissionDeniedError) as refused:
        viewer.threads.create()
    assert "member role" in refused.value.response.json()["detail"]

    unknown = httpx.get(base + "/nowhere", headers={"x-api-key": key_for(tenant)})
    assert unknown.status_code == 404


def test_graph_versions_are_assistants(
    tenant: Tenant, other_tenant: Tenant, web_only: Platform
) -> None:
    v1 = create_graph_version(tenant, chat_spec())
    spec2 = chat_spec()
    spec2["nodes"]["draft"]["responses"] = ["another draft"]
    v2 = create_graph_version(tenant, spec2)
    client = get_sync_client(url=lg_url(web_only), api_key=key_for(tenant))

    by_name = client.assistants.get("chat")
    assert by_name["assistant_id"] == str(v2.public_id)
    assert (by_name["graph_id"], by_name["version"]) == ("chat", 2)
    assert client.assistants.get(str(v1.public_id))["version"] == 1

    found = client.assistants.search(graph_id="chat")
    assert [a["version"] for a in found] == [2, 1]
    assert client.assistants.count(graph_id="chat") == 2
    assert client.assistants.count(metadata={"created_by": "system"}) == 2
    assert client.assistants.count(metadata={"owner": "nobody"}) == 0
    assert [a["version"] for a in client.assistants.get_versions("chat")] == [2, 1]

    graph = client.assistants.get_graph("chat")
    ids = [n["id"] for n in graph["nodes"]]
    assert ids[0] == "__start__" and ids[-1] == "__end__" and "draft" in ids
    assert {"source": "__start__", "target": "draft"} in graph["edges"]
    assert {"source": "done", "target": "__end__"} in graph["edges"]
    schemas = client.assistants.get_schemas("chat")
    assert schemas["input_schema"]["required"] == ["question"]
    assert schemas["state_schema"]["properties"]["log"]["reducer"] == "append"

    with pytest.raises(UnprocessableEntityError) as immutable:
        client.assistants.update("chat", metadata={"x": 1})
    assert "immutable" in immutable.value.response.json()["detail"]
    with pytest.raises(UnprocessableEntityError):
        client.assistants.delete(str(v1.public_id))

    bob = get_sync_client(url=lg_url(web_only), api_key=key_for(other_tenant))
    for ident in ("chat", str(v1.public_id)):
        with pytest.raises(NotFoundError):
            bob.assistants.get(ident)
    assert bob.assistants.search() == []
    assert bob.assistants.count() == 0


def test_created_assistants_are_versioned(
    tenant: Tenant, other_tenant: Tenant, web_only: Platform
) -> None:
    create_graph_version(tenant, chat_spec())
    client = get_sync_client(url=lg_url(web_only), api_key=key_for(tenant))
    made = client.assistants.create(
        "chat", config={"tags": ["support"]}, metadata={"team": "a"}, name="Support chat"
    )
    aid = made["assistant_id"]
    assert (made["graph_id"], made["version"], made["name"]) == ("chat", 1, "Support chat")
    assert client.assistants.get(aid)["config"] == {"tags": ["support"]}

    patched = client.assistants.update(aid, config={"tags": ["billing"]}, metadata={"tier": "b"})
    assert patched["version"] == 2
    assert patched["metadata"] == {"team": "a", "tier": "b"}
    assert [v["version"] for v in client.assistants.get_versions(aid)] == [2, 1]
    assert client.assistants.search(metadata={"team": "a"})[0]["assistant_id"] == aid
    assert client.assistants.count() == 2  # the graph's version and this one

    back = client.assistants.set_latest(aid, 1)
    assert back["version"] == 1 and client.assistants.get(aid)["config"] == {"tags": ["support"]}

    with pytest.raises(ConflictError):
        client.assistants.create("chat", assistant_id=aid)
    assert (
        client.assistants.create("chat", assistant_id=aid, if_exists="do_nothing")["version"] == 1
    )
    with pytest.raises(UnprocessableEntityError) as bad:
        client.assistants.create("chat", config={"callbacks": []})
    assert "not supported" in bad.value.response.json()["detail"]
    with pytest.raises(NotFoundError):
        client.assistants.create("no-such-graph")

    bob = get_sync_client(url=lg_url(web_only), api_key=key_for(other_tenant))
    with pytest.raises(NotFoundError):
        bob.assistants.get(aid)
    with pytest.raises(NotFoundError):
        bob.assistants.delete(aid)

    client.assistants.delete(aid)
    with pytest.raises(NotFoundError):
        client.assistants.get(aid)


def test_threads_state_history_and_copy(
    tenant: Tenant, other_tenant: Tenant, web_only: Platform
) -> None:
    create_graph_version(tenant, chat_spec())
    client = get_sync_client(url=lg_url(web_only), api_key=key_for(tenant))
    thread = client.threads.create(metadata={"customer": "acme"}, graph_id="chat")
    tid = thread["thread_id"]
    assert thread["status"] == "idle" and thread["values"] == {}
    assert thread["metadata"] == {"customer": "acme", "graph_id": "chat"}

    same = client.threads.create(thread_id=tid, if_exists="do_nothing")
    assert same["thread_id"] == tid
    with pytest.raises(ConflictError):
        client.threads.create(thread_id=tid)

    first = client.threads.update_state(tid, {"log": "hello", "topic": "a"}, as_node="draft")
    second = client.threads.update_state(tid, {"log": "again"})
    state = client.threads.get_state(tid)
    # The graph's reducers apply: `log` appends each value.
    assert state["values"] == {"log": ["hello", "again"], "topic": "a"}
    assert state["checkpoint"]["checkpoint_id"] == second["checkpoint"]["checkpoint_id"]
    assert state["parent_checkpoint"]["checkpoint_id"] == first["checkpoint"]["checkpoint_id"]
    older = client.threads.get_state(tid, checkpoint_id=first["checkpoint"]["checkpoint_id"])
    assert older["values"] == {"log": ["hello"], "topic": "a"}

    history = client.threads.get_history(tid)
    assert [h["values"]["log"] for h in history] == [["hello", "again"], ["hello"]]
    before = client.threads.get_history(tid, before=second["checkpoint"])
    assert [h["values"]["log"] for h in before] == [["hello"]]
    assert len(client.threads.get_history(tid, limit=1)) == 1

    with pytest.raises(UnprocessableEntityError):
        client.threads.update_state(
            tid, {"x": 1}, checkpoint_id=first["checkpoint"]["checkpoint_id"]
        )

    updated = client.threads.update(tid, metadata={"stage": "two"})
    assert updated["metadata"]["stage"] == "two" and updated["metadata"]["customer"] == "acme"
    copy = client.threads.copy(tid)
    assert copy["thread_id"] != tid and copy["values"] == state["values"]

    assert client.threads.count() == 2
    assert client.threads.count(metadata={"stage": "two"}) == 2
    assert client.threads.count(status="idle") == 2
    assert client.threads.count(status="busy") == 0
    found = client.threads.search(
        values={"topic": "a"}, limit=1, sort_by="created_at", sort_order="asc"
    )
    assert [t["thread_id"] for t in found] == [tid]
    assert client.threads.search(ids=[copy["thread_id"]])[0]["thread_id"] == copy["thread_id"]

    with pytest.raises(UnprocessableEntityError):
        client.threads.create(ttl=60)

    bob = get_sync_client(url=lg_url(web_only), api_key=key_for(other_tenant))
    for call in (
        lambda: bob.threads.get(tid),
        lambda: bob.threads.get_state(tid),
        lambda: bob.threads.get_history(tid),
        lambda: bob.threads.update_state(tid, {"x": 1}),
        lambda: bob.threads.copy(tid),
        lambda: bob.threads.delete(tid),
    ):
        with pytest.raises(NotFoundError):
            call()
    assert bob.threads.search() == []

    client.threads.delete(tid)
    with pytest.raises(NotFoundError):
        client.threads.get(tid)


def test_errors_are_detail_objects(tenant: Tenant, web_only: Platform) -> None:
    headers = {"x-api-key": key_for(tenant)}
    base = lg_url(web_only)
    cases: list[tuple[str, str, Any, int]] = [
        ("post", "/threads", "[not json", 400),
        ("post", "/threads/search", {"status": "sleeping"}, 422),
        ("post", "/assistants/search", {"limit": -1}, 422),
        ("get", "/threads/not-a-uuid", None, 404),
        ("post", "/runs/crons", {}, 422),
        ("post", "/runs/crons/search", {"sort_by": "cron"}, 422),
    ]
    for method, path, payload, status in cases:
        kwargs: dict[str, Any] = {"headers": headers}
        if isinstance(payload, str):
            kwargs["content"] = payload
        elif payload is not None:
            kwargs["json"] = payload
        response = httpx.request(method, base + path, **kwargs)
        assert response.status_code == status, (path, response.text)
        assert isinstance(response.json()["detail"], str)
