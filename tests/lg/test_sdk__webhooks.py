"""`webhook` on runs started through the SDK: Runyard's run webhooks, delivered by the
Procfile's worker to a receiver on 127.0.0.1, signed, bound by the tenant's HTTP allow-list."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import UnprocessableEntityError

from runs.models import Run
from runs.services import create_graph_version
from tenants.models import Tenant
from tests.e2e.processes import Platform
from tests.lg.conftest import chat_spec, key_for, lg_url, received
from tests.webhooks.conftest import Receiver, receiver  # noqa: F401 - a fixture
from webhooks.services import secret_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def allowed(tenant: Tenant) -> Tenant:
    """alice's tenant may call 127.0.0.1, where the receiver listens."""
    tenant.http_allowed_hosts = ["127.0.0.1"]
    tenant.http_allow_private = True
    tenant.save(update_fields=["http_allowed_hosts", "http_allow_private"])
    return tenant


def test_run_webhooks_through_the_sdk(
    allowed: Tenant,
    other_tenant: Tenant,
    graphs: dict[str, Any],
    receiver: Receiver,  # noqa: F811 - the imported fixture
    lg_platform: Platform,
) -> None:
    client = get_sync_client(url=lg_url(lg_platform), api_key=key_for(allowed))
    tid = client.threads.create()["thread_id"]

    # A waited run tells the receiver it succeeded, signed with the tenant's secret.
    values = client.runs.wait(tid, "chat", input={"question": "hook?"}, webhook=receiver.url)
    assert values["answer"] == "the polished answer"
    run_id = client.runs.list(tid)[0]["run_id"]
    assert client.runs.get(tid, run_id)["kwargs"]["webhook"] == receiver.url
    done = received(receiver, run_id, "run.succeeded")
    assert receiver.verify(done, secret_for(allowed.pk))
    body = done.json()
    assert body["run"]["thread_id"] == tid and body["run"]["status"] == "succeeded"
    assert body["run"]["state"]["answer"] == "the polished answer"

    # An interrupt is a `run.waiting`; the resumed run (the same run) keeps its webhook.
    tid2 = client.threads.create()["thread_id"]
    held = client.runs.create(tid2, "review", input={"item": "kite"}, webhook=receiver.url)
    client.runs.join(tid2, held["run_id"])
    waiting = received(receiver, held["run_id"], "run.waiting").json()
    assert waiting["run"]["waiting_for"]["kind"] == "approval"
    with pytest.raises(UnprocessableEntityError) as resumed_with_hook:
        client.runs.create(
            tid2, "review", command={"resume": "approve"}, webhook=receiver.url + "?again"
        )
    assert "webhook" in resumed_with_hook.value.response.json()["detail"]
    client.runs.wait(tid2, "review", command={"resume": "approve"})
    client.runs.wait(tid2, "review", command={"resume": "ada"})
    assert received(receiver, held["run_id"], "run.succeeded").json()["run"]["state"][
        "reviewer"
    ] == ("ada")

    # Stateless and async: the same.
    key = key_for(allowed)

    async def stateless() -> str:
        aclient = get_client(url=lg_url(lg_platform), api_key=key)
        run = await aclient.runs.create(
            None, "chat", input={"question": "alone"}, webhook=receiver.url
        )
        await aclient.http.client.aclose()
        return str(run["run_id"])

    alone = asyncio.run(stateless())
    assert received(receiver, alone, "run.succeeded").json()["run"]["thread_id"] is None

    # Outside the tenant's allow-list, or private without allow_private: a 422 saying why,
    # and no run.
    runs_before = Run.objects.count()
    refusals = {
        "http://example.com/hook": "allow-list",
        "ftp://127.0.0.1/hook": "http",
        "not a url": "",
    }
    for url, reason in refusals.items():
        with pytest.raises(UnprocessableEntityError) as refused:
            client.runs.create(tid, "chat", input={"question": "x"}, webhook=url)
        detail = refused.value.response.json()["detail"]
        assert "webhook" in detail and reason in detail, detail
    create_graph_version(other_tenant, chat_spec())
    bob = get_sync_client(url=lg_url(lg_platform), api_key=key_for(other_tenant))
    bob_tid = bob.threads.create()["thread_id"]
    with pytest.raises(UnprocessableEntityError) as private:
        bob.runs.create(bob_tid, "chat", input={"question": "x"}, webhook=receiver.url)
    # bob's tenant allows no host at all, so the allow-list refuses first.
    assert "allow-list" in private.value.response.json()["detail"]
    allowed.http_allowed_hosts = ["*"]
    allowed.http_allow_private = False
    allowed.save(update_fields=["http_allowed_hosts", "http_allow_private"])
    with pytest.raises(UnprocessableEntityError) as loopback:
        client.runs.create(tid, "chat", input={"question": "x"}, webhook=receiver.url)
    assert "non-public address" in loopback.value.response.json()["detail"]
    assert Run.objects.count() == runs_before
