"""Schedules' fixtures: a graph to schedule and API clients per role."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from runs.services import create_graph_version
from tenants.models import Role, Tenant
from tests.runs.conftest import InlineQueue, chain_spec, queue  # noqa: F401 - fixture
from tests.runs.test_api__helpers import Api, key_client


def typed_spec(name: str = "typed") -> dict[str, Any]:
    """A chain whose input must carry a `text`."""
    return {**chain_spec(name), "input_schema": {"type": "object", "required": ["text"]}}


@pytest.fixture
def chain(tenant: Tenant) -> Any:
    return create_graph_version(tenant, chain_spec())


@pytest.fixture
def alice(tenant: Tenant, chain: Any) -> Api:
    return key_client(tenant, Role.MEMBER)


@pytest.fixture
def alice_viewer(tenant: Tenant) -> Api:
    return key_client(tenant, Role.VIEWER)


@pytest.fixture
def bob(other_tenant: Tenant) -> Api:
    create_graph_version(other_tenant, chain_spec())
    return key_client(other_tenant, Role.OWNER)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
