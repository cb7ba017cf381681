"""PostgreSQL: the JSON columns that can grow past a page compress with lz4 (migration 0010),
so a big state rewritten by every step's commit costs less server time than with pglz."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from django.db import connection

from runs.models import Run
from runs.services import create_graph_version, create_run
from tenants.models import Tenant
from tests.runs.conftest import InlineQueue, chain_spec

migration = importlib.import_module("runs.migrations.0010_json_columns_lz4")

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="TOAST compression is PostgreSQL's"
    ),
]


def compression(table: str, column: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attcompression FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attname = %s",
            [table, column],
        )
        return str(cursor.fetchone()[0])


def test_the_growing_json_columns_compress_with_lz4() -> None:
    if not migration.lz4_available(connection):
        pytest.skip("this server has no lz4")
    assert {f"{t}.{c}": compression(t, c) for t, c in migration.COLUMNS} == {
        f"{t}.{c}": "l" for t, c in migration.COLUMNS
    }
    assert compression("runs_run", "metadata") == ""  # small columns keep the default


def test_a_big_state_written_by_a_step_is_stored_with_lz4(
    tenant: Tenant, queue: InlineQueue, settings: Any
) -> None:
    if not migration.lz4_available(connection):
        pytest.skip("this server has no lz4")
    spec = chain_spec("big", n=2)
    spec["state"]["text"] = {"default": ""}
    spec["nodes"]["n0"] = {"kind": "transform", "set": {"text": "'word ' * 20000"}}
    create_graph_version(tenant, spec)
    run = create_run(tenant, graph="big")
    queue.drain()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_column_compression(state) FROM runs_run WHERE id = %s", [run.pk])
        assert cursor.fetchone()[0] == "lz4"
    run.refresh_from_db()
    assert run.status == "succeeded" and run.state["text"] == "word " * 20000
    assert Run.objects.get(pk=run.pk).state == run.state
