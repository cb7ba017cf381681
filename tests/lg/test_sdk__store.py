"""The store through the SDK: items per tenant under namespaces, search and namespaces."""

from __future__ import annotations

import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.errors import NotFoundError, PermissionDeniedError, UnprocessableEntityError

from tenants.models import Role, Tenant
from tests.e2e.processes import Platform
from tests.lg.conftest import key_for, lg_url

pytestmark = pytest.mark.e2e


def test_store_items_search_and_namespaces(
    tenant: Tenant, other_tenant: Tenant, web_only: Platform
) -> None:
    client = get_sync_client(url=lg_url(web_only), api_key=key_for(tenant))
    client.store.put_item(["users", "ada", "prefs"], "theme", {"dark": True, "size": 3})
    client.store.put_item(["users", "ada", "prefs"], "lang", {"code": "en"})
    client.store.put_item(["users", "bo"], "theme", {"dark": False})
    client.store.put_item(["teams"], "core", {"size": 3})

    item = client.store.get_item(["users", "ada", "prefs"], "theme")
    assert item["namespace"] == ["users", "ada", "prefs"] and item["value"] == {
        "dark": True,
        "size": 3,
    }
    client.store.put_item(["users", "ada", "prefs"], "theme", {"dark": False})  # replaces
    assert client.store.get_item(["users", "ada", "prefs"], "theme")["value"] == {"dark": False}

    under_users = client.store.search_items(["users"])["items"]
    assert sorted((tuple(i["namespace"]), i["key"]) for i in under_users) == [
        (("users", "ada", "prefs"), "lang"),
        (("users", "ada", "prefs"), "theme"),
        (("users", "bo"), "theme"),
    ]
    dark_off = client.store.search_items(["users"], filter={"dark": False})["items"]
    assert len(dark_off) == 2
    assert client.store.search_items([], filter={"size": 3}, limit=5)["items"][0]["key"] == "core"
    assert len(client.store.search_items(["users"], limit=1, offset=1)["items"]) == 1

    assert client.store.list_namespaces()["namespaces"] == [
        ["teams"],
        ["users", "ada", "prefs"],
        ["users", "bo"],
    ]
    assert client.store.list_namespaces(prefix=["users"], max_depth=2)["namespaces"] == [
        ["users", "ada"],
        ["users", "bo"],
    ]
    assert client.store.list_namespaces(suffix=["prefs"])["namespaces"] == [
        ["users", "ada", "prefs"]
    ]

    with pytest.raises(UnprocessableEntityError):
        client.store.search_items(["users"], query="dark themes")
    with pytest.raises(UnprocessableEntityError):
        client.store.put_item(["users"], "x", {"a": 1}, ttl=5)
    with pytest.raises(UnprocessableEntityError):
        client.store.put_item(["users"], "x", {"a": 1}, index=["a"])

    bob = get_sync_client(url=lg_url(web_only), api_key=key_for(other_tenant))
    with pytest.raises(NotFoundError):
        bob.store.get_item(["users", "ada", "prefs"], "lang")
    assert bob.store.search_items([])["items"] == []
    assert bob.store.list_namespaces()["namespaces"] == []
    bob.store.delete_item(["users", "ada", "prefs"], "lang")  # someone else's: nothing happens
    assert client.store.get_item(["users", "ada", "prefs"], "lang")["value"] == {"code": "en"}

    viewer = get_sync_client(url=lg_url(web_only), api_key=key_for(tenant, Role.VIEWER))
    assert viewer.store.get_item(["teams"], "core")["value"] == {"size": 3}
    with pytest.raises(PermissionDeniedError):
        viewer.store.put_item(["teams"], "core", {"size": 4})

    client.store.delete_item(["users", "ada", "prefs"], "lang")
    with pytest.raises(NotFoundError):
        client.store.get_item(["users", "ada", "prefs"], "lang")
