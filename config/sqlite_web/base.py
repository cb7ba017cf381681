"""SQLite for the web process: a connection a request is done with waits for the next one.

Django serves each ASGI request's sync code on a thread of its own, so a connection opened
there is never reused: every request paid for `sqlite3.connect`, Django's SQL functions, the
PRAGMAs and SQLite's read of the schema at the first statement (~1 ms, a tenth of a
`GET /runs`). With CONN_MAX_AGE=0 Django closes the connection when the request ends; this
backend keeps it instead, when it is idle (no transaction open), on a short per-process stack,
and the next request's thread takes it from there. Django opens SQLite connections with
check_same_thread=False and checks thread sharing itself; a kept connection belongs to one
wrapper, hence one thread, at a time. config/settings.py picks it for the web process.
"""

from __future__ import annotations

import threading
from typing import Any

from django.db.backends.sqlite3 import base

# Connections kept per database file, at most; more are closed as before.
KEEP = 16


class DatabaseWrapper(base.DatabaseWrapper):
    _kept: dict[str, list[Any]] = {}
    _lock = threading.Lock()

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        with self._lock:
            kept = self._kept.get(conn_params["database"])
            if kept:
                return kept.pop()
        return super().get_new_connection(conn_params)

    def _close(self) -> None:  # Django's hook (absent from django-stubs)
        conn = self.connection
        idle = (
            conn is not None
            and not self.in_atomic_block
            and not conn.in_transaction
            and self.get_autocommit()
            and not self.is_in_memory_db()
        )
        if idle:
            with self._lock:
                kept = self._kept.setdefault(self.settings_dict["NAME"], [])
                if len(kept) < KEEP:
                    kept.append(conn)
                    return
        super()._close()  # type: ignore[misc]
