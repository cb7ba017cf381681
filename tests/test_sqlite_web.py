"""config/sqlite_web: the web process's SQLite connections outlive the request thread that
opened them, and only idle ones are kept."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db.utils import ConnectionHandler

from config import sqlite_web
from config.settings import sqlite_options
from config.sqlite_web.base import DatabaseWrapper


@pytest.fixture
def database(tmp_path: Path, django_db_blocker: Any) -> Iterator[dict[str, Any]]:
    """A SQLite file of its own (not the test database) opened through the web backend."""
    db = {
        "ENGINE": "config.sqlite_web",
        "NAME": str(tmp_path / "web.sqlite3"),
        "CONN_MAX_AGE": 0,
        "OPTIONS": sqlite_options("FULL", 5),
    }
    with django_db_blocker.unblock():
        yield db
    for conn in DatabaseWrapper._kept.pop(db["NAME"], []):
        conn.close()


def in_thread(db: dict[str, Any], work: Any) -> Any:
    """`work(wrapper)` on a new thread with a wrapper of its own, as Django serves an ASGI
    request; the wrapper is closed at the end, as Django closes it when the request ends."""
    out: list[Any] = []

    def run() -> None:
        wrapper = ConnectionHandler({"default": db})["default"]
        try:
            out.append(work(wrapper))
        finally:
            wrapper.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return out[0]


def test_a_request_thread_takes_the_connection_the_last_one_left(database: dict) -> None:
    def query(wrapper: Any) -> int:
        with wrapper.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode")
            assert cursor.fetchone()[0].lower() == "wal"  # the PRAGMAs hold on a kept one
        return id(wrapper.connection)

    first = in_thread(database, query)
    assert [id(c) for c in DatabaseWrapper._kept[database["NAME"]]] == [first]
    assert in_thread(database, query) == first  # another thread, the same connection


def test_a_connection_closed_inside_a_transaction_is_not_kept(database: dict) -> None:
    def leave_open(wrapper: Any) -> None:
        wrapper.ensure_connection()
        wrapper.connection.execute("BEGIN")
        wrapper.connection.execute("CREATE TABLE t (x int)")

    in_thread(database, leave_open)
    assert not DatabaseWrapper._kept.get(database["NAME"])

    def atomic_open(wrapper: Any) -> None:
        wrapper.ensure_connection()
        wrapper.set_autocommit(False)  # Django's atomic() without its exit

    in_thread(database, atomic_open)
    assert not DatabaseWrapper._kept.get(database["NAME"])


def test_at_most_keep_connections_are_kept(database: dict) -> None:
    wrappers = [ConnectionHandler({"default": database})["default"] for _ in range(20)]
    for wrapper in wrappers:
        wrapper.ensure_connection()
    for wrapper in wrappers:
        wrapper.close()
    assert len(DatabaseWrapper._kept[database["NAME"]]) == sqlite_web.base.KEEP
