"""Every SQLite database gets WAL, IMMEDIATE transactions and a busy timeout well under the run
lease, the one named by DATABASE_URL=sqlite:///... as much as the embedded default."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.db.utils import ConnectionHandler
from django.test import override_settings

from tenants.models import Tenant
from tests.factories import make_tenant

ROOT = Path(settings.BASE_DIR)
READS = (
    "DATABASE_URL",
    "RUNYARD_DB_POOL",
    "RUNYARD_DB_PREPARED",
    "DATABASE_POOL_MAX",
    "SQLITE_PATH",
    "RUNYARD_LEASE_SECONDS",
    "RUNYARD_SQLITE_BUSY_TIMEOUT",
    "RUNYARD_SQLITE_SYNCHRONOUS",
)


def load_settings(
    monkeypatch: pytest.MonkeyPatch, var_dir: Path, *, web: bool = False, **env: str
) -> dict[str, Any]:
    """config/settings.py as a process would load it: the web process (daphne imported
    config/asgi.py first) or another; whatever this test process imported earlier."""
    if web:
        monkeypatch.setitem(sys.modules, "config.asgi", sys)
    else:
        monkeypatch.delitem(sys.modules, "config.asgi", raising=False)
    for name in READS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RUNYARD_VAR_DIR", str(var_dir))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "config" / "settings.py"))


def pragma(db: dict[str, Any], name: str, blocker: Any) -> Any:
    wrapper = ConnectionHandler({"default": db})["default"]  # fills Django's defaults in
    try:
        with blocker.unblock(), wrapper.cursor() as cursor:
            cursor.execute(f"PRAGMA {name}")
            return cursor.fetchone()[0]
    finally:
        wrapper.close()


def test_sqlite_database_url_gets_wal_immediate_and_busy_timeout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, django_db_blocker: Any
) -> None:
    path = tmp_path / "named.sqlite3"
    conf = load_settings(monkeypatch, tmp_path, DATABASE_URL=f"sqlite:///{path}")
    db = conf["DATABASES"]["default"]
    assert db["NAME"] == str(path)
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert db["CONN_MAX_AGE"] is None
    assert db["OPTIONS"] == load_settings(monkeypatch, tmp_path)["DATABASES"]["default"]["OPTIONS"]
    # ...and a real connection to that file is in WAL mode and waits, not fails, on a lock.
    assert pragma(db, "journal_mode", django_db_blocker).lower() == "wal"
    assert pragma(db, "busy_timeout", django_db_blocker) == 10_000


def test_sqlite_busy_timeout_stays_well_under_the_lease(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    default = load_settings(monkeypatch, tmp_path)
    lease = default["RUNYARD"]["LEASE_SECONDS"]
    assert default["DATABASES"]["default"]["OPTIONS"]["timeout"] == 10 <= lease / 3
    short = load_settings(monkeypatch, tmp_path, RUNYARD_LEASE_SECONDS="1.5")
    options = short["DATABASES"]["default"]["OPTIONS"]
    assert options["timeout"] == 0.5
    assert "busy_timeout=500;" in options["init_command"]


def test_check_refuses_a_busy_timeout_not_under_the_lease() -> None:
    if not settings.IS_SQLITE:
        pytest.skip("SQLite only")
    assert "runs.E013" not in [m.id for m in run_checks()]
    with override_settings(RUNYARD={**settings.RUNYARD, "LEASE_SECONDS": 10}):
        assert "runs.E013" in [m.id for m in run_checks()]


def test_check_refuses_a_sqlite_database_without_wal_and_immediate(tmp_path: Path) -> None:
    plain = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "x.sqlite3")}
    assert "runs.E014" not in [m.id for m in run_checks()]
    with override_settings(DATABASES={**settings.DATABASES, "plain": plain}):
        assert "runs.E014" in [m.id for m in run_checks()]


# Each process sets up Django from DATABASE_URL, waits for a common start, then changes the
# tenant's limits through the management command again and again.
HAMMER = """
import os, sys, time, django
django.setup()
from django.core.management import call_command
slug, n = sys.argv[1], int(sys.argv[2])
time.sleep(max(0.0, float(os.environ["START_AT"]) - time.time()))
for i in range(30):
    call_command("tenant_limits", slug, "--set", f"max_steps={1000 + n * 100 + i}",
                 f"max_concurrent_runs={n + 1}", stdout=open(os.devnull, "w"))
"""


@pytest.mark.django_db(transaction=True)
def test_concurrent_tenant_limit_changes_on_a_database_url_never_find_it_locked() -> None:
    if not settings.IS_SQLITE:
        pytest.skip("SQLite only")
    from django.db import connection

    tenant = make_tenant("locked-co")
    env = {k: v for k, v in os.environ.items() if "PYTEST" not in k}
    env.pop("SQLITE_PATH", None)
    env["DATABASE_URL"] = f"sqlite:///{connection.settings_dict['NAME']}"
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    env["START_AT"] = str(time.time() + 4)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HAMMER, tenant.slug, str(n)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(6)
    ]
    results = [(p.wait(timeout=120), p.communicate()[1]) for p in procs]
    assert [code for code, _ in results] == [0] * 6, [err[-400:] for _, err in results]
    max_steps = Tenant.objects.get(pk=tenant.pk).max_steps
    assert max_steps is not None and max_steps % 100 == 29


def test_the_web_process_pools_its_database_connections(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Django serves each ASGI request on a thread of its own, where a persistent connection
    is never reused: the process importing config/asgi.py (the web process) pools them."""
    url = "postgres://postgres@127.0.0.1:5432/runyard"
    worker = load_settings(monkeypatch, tmp_path, DATABASE_URL=url)["DATABASES"]["default"]
    assert "pool" not in worker["OPTIONS"]
    assert worker["CONN_MAX_AGE"] is None  # one persistent connection per worker thread

    web = load_settings(monkeypatch, tmp_path, web=True, DATABASE_URL=url)["DATABASES"]["default"]
    assert web["OPTIONS"]["pool"]["max_size"] == 20
    assert web["OPTIONS"]["application_name"] == "runyard-web"
    assert web["CONN_MAX_AGE"] == 0  # Django's pool refuses persistent connections
    assert web["CONN_HEALTH_CHECKS"] is True

    off = load_settings(monkeypatch, tmp_path, web=True, DATABASE_URL=url, RUNYARD_DB_POOL="off")
    assert "pool" not in off["DATABASES"]["default"]["OPTIONS"]
    on = load_settings(
        monkeypatch, tmp_path, DATABASE_URL=url, RUNYARD_DB_POOL="on", DATABASE_POOL_MAX="5"
    )
    assert on["DATABASES"]["default"]["OPTIONS"]["pool"]["max_size"] == 5
    # On SQLite the web process keeps its idle connections for the next request instead.
    sqlite = load_settings(monkeypatch, tmp_path, web=True)
    assert sqlite["IS_SQLITE"]
    db = sqlite["DATABASES"]["default"]
    assert (db["ENGINE"], db["CONN_MAX_AGE"]) == ("config.sqlite_web", 0)
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    plain = load_settings(monkeypatch, tmp_path)["DATABASES"]["default"]
    assert (plain["ENGINE"], plain["CONN_MAX_AGE"]) == ("django.db.backends.sqlite3", None)


def test_postgresql_connections_may_prepare_statements_unless_turned_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Django's cursors never prepare; the step commit asks to (runs/guarded_writes.py), which
    psycopg allows only with a prepare_threshold. Off for a PgBouncer that cannot keep them."""
    url = "postgres://postgres@127.0.0.1:5432/runyard"
    on = load_settings(monkeypatch, tmp_path, DATABASE_URL=url)["DATABASES"]["default"]
    assert on["OPTIONS"]["prepare_threshold"] == 5
    off = load_settings(monkeypatch, tmp_path, DATABASE_URL=url, RUNYARD_DB_PREPARED="off")
    assert "prepare_threshold" not in off["DATABASES"]["default"]["OPTIONS"]
