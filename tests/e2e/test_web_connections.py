"""The web process reuses its PostgreSQL connections across requests (config/settings.py).

Django runs each ASGI request's sync code on a thread of its own, so a persistent connection
was never reused under daphne: every API request forked a new PostgreSQL backend (~10 ms, half
of a `GET /runs`) and left the old session to the garbage collector. The shipped web process
takes connections from a pool: a stream of requests is served by the same few sessions.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connection

from tenants.services import create_api_key
from tests.e2e.processes import platform
from tests.factories import make_tenant

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def web_sessions() -> set[int]:
    """Backend pids of the web process's sessions on the test database, open right now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'runyard-web'"
        )
        return {pid for (pid,) in cursor.fetchall()}


def test_api_requests_reuse_the_web_process_database_sessions(tmp_path: Path) -> None:
    if settings.IS_SQLITE:
        pytest.skip("PostgreSQL only: a SQLite connection is a file handle, not a session")
    tenant = make_tenant("pooled-co")
    _, key = create_api_key(tenant, name="pool")
    with platform(tmp_path, "web") as web:
        auth = {"Authorization": f"Bearer {key}"}
        seen: set[int] = set()
        with httpx.Client(base_url=web.url, headers=auth, timeout=10) as client:
            for _ in range(40):
                response = client.get("/api/v1/runs")
                assert response.status_code == 200, response.text
                seen |= web_sessions()
        assert seen, "the web process's sessions are not named runyard-web"
        # Pooled: the pool's first couple of sessions serve all 40 requests. Without it,
        # each request opens one more session than the last (40 or so).
        assert len(seen) <= 4, (len(seen), web.log("web"))
