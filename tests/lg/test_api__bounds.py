"""/lg's bounds and refusals through Django's test client (no processes): sizes, roles,
unknown options, state caps, and runs reached through the wrong thread or tenant."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runs.models import Run
from runs.services import create_graph_version, create_run
from tenants.models import Role, Tenant
from tests.lg.conftest import chat_spec, key_for


def call(client: Client, method: str, path: str, key: str, payload: Any = None) -> Any:
    response = getattr(client, method)(
        "/lg" + path,
        data=payload if payload is not None else None,
        content_type="application/json",
        HTTP_X_API_KEY=key,
    )
    return response.status_code, response.json() if response.content else None


@pytest.fixture
def key(tenant: Tenant) -> str:
    create_graph_version(tenant, chat_spec())
    return key_for(tenant)


def test_unknown_and_malformed_run_options_are_422(client: Client, key: str) -> None:
    status, thread = call(client, "post", "/threads", key, {})
    tid = thread["thread_id"]
    for payload, words in [
        ({"assistant_id": "chat", "input": {"question": "x"}, "frobnicate": 1}, "Unknown run"),
        ({"input": {"question": "x"}}, "assistant_id"),
        ({"assistant_id": "chat", "input": [1, 2]}, "input"),
        ({"assistant_id": "chat", "input": {"question": "x"}, "durability": "never"}, "durability"),
        ({"assistant_id": "chat", "command": {"resume": 1, "jump": 2}}, "Unknown command"),
        ({"assistant_id": "chat", "command": {"goto": "polish"}}, "without `resume`"),
        (
            {"assistant_id": "chat", "input": {"question": "x"}, "on_completion": "keep"},
            "stateless",
        ),
        (
            {"assistant_id": "chat", "input": {"question": "x"}, "stream_mode": ["lifecycle"]},
            "stream_mode",
        ),
    ]:
        status, body = call(client, "post", f"/threads/{tid}/runs", key, payload)
        assert status == 422, (payload, body)
        assert words in body["detail"], (payload, body)
    status, body = call(
        client, "post", "/runs", key, {"assistant_id": "chat", "command": {"resume": 1}}
    )
    assert status == 422 and "thread" in body["detail"]


def test_sizes_are_bounded(client: Client, key: str, settings: Any) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "MAX_INPUT_BYTES": 2000}
    status, body = call(
        client, "post", "/runs", key, {"assistant_id": "chat", "input": {"question": "x" * 2500}}
    )
    assert status == 413, body
    status, body = call(client, "post", "/threads", key, {"metadata": {"x": "y" * 5000}})
    assert status == 413 and "bytes" in body["detail"]


def test_state_updates_respect_max_state_bytes(client: Client, tenant: Tenant, key: str) -> None:
    tenant.max_state_bytes = 1000
    tenant.save(update_fields=["max_state_bytes"])
    _, thread = call(client, "post", "/threads", key, {"metadata": {"graph_id": "chat"}})
    path = f"/threads/{thread['thread_id']}/state"
    for _ in range(3):
        status, _body = call(client, "post", path, key, {"values": {"log": "z" * 300}})
        assert status == 200
    status, body = call(client, "post", path, key, {"values": {"log": "z" * 300}})
    assert status == 429 and "max_state_bytes" in body["detail"]
    _, state = call(client, "get", path, key)
    assert len(state["values"]["log"]) == 3


def test_runs_through_the_wrong_thread_or_tenant_are_404(
    client: Client, tenant: Tenant, other_tenant: Tenant, key: str
) -> None:
    _, a = call(client, "post", "/threads", key, {})
    _, b = call(client, "post", "/threads", key, {})
    run = create_run(tenant, graph="chat", input={"question": "x"}, thread_id=a["thread_id"])
    status, _ = call(client, "get", f"/threads/{a['thread_id']}/runs/{run.public_id}", key)
    assert status == 200
    status, _ = call(client, "get", f"/threads/{b['thread_id']}/runs/{run.public_id}", key)
    assert status == 404
    bob = key_for(other_tenant)
    for method, path in [
        ("get", f"/threads/{a['thread_id']}/runs/{run.public_id}"),
        ("post", f"/threads/{a['thread_id']}/runs/{run.public_id}/cancel"),
        ("delete", f"/threads/{a['thread_id']}/runs/{run.public_id}"),
        ("get", f"/threads/{a['thread_id']}/runs"),
    ]:
        status, body = call(client, method, path, bob)
        assert status == 404, (path, body)
    status, body = call(client, "post", "/runs/cancel", bob, {"run_ids": [str(run.public_id)]})
    assert status == 404
    # An active run is not deleted.
    status, body = call(client, "delete", f"/threads/{a['thread_id']}/runs/{run.public_id}", key)
    assert status == 409
    status, body = call(client, "delete", f"/threads/{a['thread_id']}", key)
    assert status == 409


def test_viewers_read_and_members_do_not_manage_assistants(
    client: Client, tenant: Tenant, key: str
) -> None:
    viewer, member = key_for(tenant, Role.VIEWER), key_for(tenant, Role.MEMBER)
    status, body = call(client, "post", "/runs", viewer, {"assistant_id": "chat", "input": {}})
    assert status == 403 and "member" in body["detail"]
    status, body = call(client, "post", "/assistants", member, {"graph_id": "chat"})
    assert status == 403 and "admin" in body["detail"]
    status, body = call(client, "post", "/assistants/search", viewer, {})
    assert status == 200 and body[0]["graph_id"] == "chat"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
# Bodies shaped like the protocol's, with any values: the fields a hostile caller would vary.
FIELDS = st.sampled_from(
    [
        "assistant_id",
        "graph_id",
        "input",
        "command",
        "config",
        "context",
        "metadata",
        "stream_mode",
        "checkpoint",
        "checkpoint_id",
        "multitask_strategy",
        "if_not_exists",
        "limit",
        "offset",
        "sort_by",
        "sort_order",
        "select",
        "status",
        "ids",
        "values",
        "before",
        "namespace",
        "key",
        "value",
        "prefix",
        "max_depth",
        "thread_id",
        "version",
        "as_node",
        "name",
        "filter",
        "namespace_prefix",
        "if_exists",
        "on_disconnect",
        "schedule",
        "timezone",
        "end_time",
        "webhook",
        "enabled",
        "on_run_completed",
        "durability",
        "stream_subgraphs",
    ]
)
# Valid bodies of each kind with some fields replaced by anything, and anything at all.
VALID = [
    {"assistant_id": "chat", "input": {"question": "x"}},
    {"assistant_id": "chat", "command": {"resume": "approve"}},
    {"graph_id": "chat", "config": {"tags": ["a"]}},
    {"namespace": ["a", "b"], "key": "k", "value": {"v": 1}},
    {"values": {"log": "x"}, "as_node": "draft"},
    {"limit": 5, "offset": 0, "sort_by": "created_at", "sort_order": "asc"},
    {"assistant_id": "chat", "schedule": "@daily", "input": {"question": "x"}},
    {"schedule": "0 9 * * *", "end_time": "2099-01-01T00:00:00+01:00", "enabled": False},
    {},
]
BODIES = (
    st.builds(
        lambda base, extra: {**base, **extra},
        st.sampled_from(VALID),
        st.dictionaries(FIELDS, JSON, max_size=3),
    )
    | st.dictionaries(FIELDS, JSON, max_size=6)
    | JSON
)


@pytest.mark.django_db
@given(body=BODIES, which=st.integers(min_value=0, max_value=100))
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_no_body_makes_a_500(client: Client, tenant: Tenant, body: Any, which: int) -> None:
    """Whatever JSON reaches any write or search endpoint, the answer is a 2xx or a 4xx
    with a `detail` (never a 500)."""
    key = getattr(tenant, "_lg_key", None)
    if key is None:
        create_graph_version(tenant, chat_spec())
        key = tenant._lg_key = key_for(tenant)  # type: ignore[attr-defined]
        tenant._lg_thread = call(client, "post", "/threads", key, {})[1]["thread_id"]  # type: ignore[attr-defined]
        cron = {"assistant_id": "chat", "schedule": "@daily", "input": {"question": "x"}}
        tenant._lg_cron = call(client, "post", "/runs/crons", key, cron)[1]["cron_id"]  # type: ignore[attr-defined]
    tid = tenant._lg_thread  # type: ignore[attr-defined]
    cron_id = tenant._lg_cron  # type: ignore[attr-defined]
    routes = [
        ("post", "/assistants"),
        ("post", "/assistants/search"),
        ("post", "/assistants/count"),
        ("post", "/assistants/chat/versions"),
        ("post", "/assistants/chat/latest"),
        ("patch", "/assistants/chat"),
        ("post", "/threads"),
        ("post", "/threads/search"),
        ("post", "/threads/count"),
        ("patch", f"/threads/{tid}"),
        ("post", f"/threads/{tid}/state"),
        ("post", f"/threads/{tid}/state/checkpoint"),
        ("post", f"/threads/{tid}/history"),
        ("post", f"/threads/{tid}/runs"),
        ("post", "/runs"),
        ("post", "/runs/batch"),
        ("post", "/runs/cancel"),
        ("put", "/store/items"),
        ("delete", "/store/items"),
        ("post", "/store/items/search"),
        ("post", "/store/namespaces"),
        ("post", "/runs/crons"),
        ("post", f"/threads/{tid}/runs/crons"),
        ("post", "/runs/crons/search"),
        ("post", "/runs/crons/count"),
        ("patch", f"/runs/crons/{cron_id}"),
    ]
    method, path = routes[which % len(routes)]
    status, answer = call(client, method, path, key, body)
    assert status < 500, (method, path, body, answer)
    if status >= 400:
        assert isinstance(answer["detail"], str)


def test_a_refused_stream_or_wait_leaves_no_run(
    client: Client, tenant: Tenant, key: str, settings: Any
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "MAX_STREAMS_PER_TENANT": 0}
    for path in ("/runs/wait", "/runs/stream"):
        status, body = call(
            client, "post", path, key, {"assistant_id": "chat", "input": {"question": "x"}}
        )
        assert status == 429 and "streams" in body["detail"], (path, body)
    assert not Run.objects.filter(tenant=tenant).exists()


def test_hostile_cron_values_are_4xx(client: Client, key: str) -> None:
    base = {"assistant_id": "chat", "input": {"question": "x"}}
    for extra, words in [
        ({"schedule": "* " * 200}, "schedule"),
        ({"schedule": "@daily", "timezone": "Europe/" + "x" * 500}, "timezone"),
        ({"schedule": "@daily", "end_time": "0001-01-01T00:00:00+01:00"}, "end_time"),
        ({"schedule": "@daily", "end_time": "soon"}, "end_time"),
        ({"schedule": "@daily", "end_time": 12}, "end_time"),
        ({"schedule": "@daily", "webhook": ["http://127.0.0.1/"]}, "webhook"),
        ({"schedule": "@daily", "webhook": "http://user:pw@127.0.0.1/"}, "webhook"),
        ({"schedule": ["@daily"]}, "schedule"),
        ({"schedule": "@daily", "enabled": "yes"}, "enabled"),
        ({"schedule": "@daily", "on_run_completed": "keep"}, "on_run_completed"),
        ({"schedule": "@daily", "stream_mode": "lifecycle"}, "stream_mode"),
        ({"schedule": "@daily", "config": {"callbacks": []}}, "config"),
    ]:
        status, body = call(client, "post", "/runs/crons", key, {**base, **extra})
        assert status == 422, (extra, body)
        assert words in body["detail"], (extra, body)
    for payload in (
        {"sort_by": "schedule"},
        {"select": "cron_id"},
        {"select": ["secret"]},
        {"limit": -1},
        {"metadata": {"a b": 1}},
        {"enabled": "no"},
    ):
        status, body = call(client, "post", "/runs/crons/search", key, payload)
        assert status == 422, (payload, body)
    status, body = call(client, "post", "/runs/crons/count", key, {"frobnicate": 1})
    assert status == 422 and "Unknown" in body["detail"]
    status, _ = call(client, "patch", "/runs/crons/" + "x" * 300, key, {"enabled": False})
    assert status == 404
