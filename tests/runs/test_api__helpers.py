"""Helpers for the API tests: clients holding a tenant's key or a dashboard session."""

from __future__ import annotations

import json
from typing import Any

from django.test import Client

from tenants.models import Role, Tenant
from tenants.services import create_api_key

BASE = "/api/v1"
CSRF = "c" * 32


class Api:
    """A test client that speaks JSON to /api/v1 as one caller."""

    def __init__(self, client: Client, headers: dict[str, str] | None = None) -> None:
        self.client = client
        self.headers = headers or {}

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {**self.headers, **(extra or {})}

    def get(self, path: str, params: Any = None, headers: dict[str, str] | None = None) -> Any:
        return self.client.get(BASE + path, params or {}, headers=self._headers(headers))

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        raw: str | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        data = raw if raw is not None else ("" if body is None else json.dumps(body))
        return self.client.post(
            BASE + path, data, content_type="application/json", headers=self._headers(headers)
        )

    def request(self, method: str, path: str) -> Any:
        return self.client.generic(method, BASE + path, headers=self.headers)


def key_client(tenant: Tenant, role: str = Role.MEMBER) -> Api:
    _, raw = create_api_key(tenant, role=role)
    return Api(Client(), {"Authorization": f"Bearer {raw}"})


def session_client(user: Any, *, csrf: bool = True) -> Api:
    """A logged-in dashboard session; `csrf` sends the token like the dashboard's JS does."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    if not csrf:
        return Api(client)
    client.cookies["csrftoken"] = CSRF
    return Api(client, {"X-CSRFToken": CSRF})


def anonymous() -> Api:
    return Api(Client())


def error_of(response: Any) -> dict[str, Any]:
    """The error envelope of `response`, checked for its exact shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    return body["error"]


# The fields of a run as DESIGN §6 lists them.
RUN_KEYS = {
    "id",
    "status",
    "graph",
    "version",
    "thread_id",
    "input",
    "state",
    "error",
    "usage",
    "waiting_for",
    "created_at",
    "started_at",
    "finished_at",
    "metadata",
    "priority",
    "created_by",
}
