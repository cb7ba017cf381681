"""The skeleton holds: the stdlib `platform` module is not shadowed, probes answer, checks run."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.test import Client, override_settings

ROOT = Path(__file__).resolve().parent.parent


def test_import_platform_is_the_standard_library_module() -> None:
    assert hasattr(platform, "python_version")
    assert Path(platform.__file__).parent != ROOT
    assert not (ROOT / "platform" / "__init__.py").exists()
    import uuid  # uuid imports platform; it breaks when a package shadows it

    assert uuid.uuid4()
    assert sys.modules["platform"] is platform


def test_healthz_answers_without_touching_anything() -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_is_200_when_database_broker_and_layer_answer() -> None:
    response = Client().get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["checks"] == {"database": "ok", "broker": "ok", "channel_layer": "ok"}


@pytest.mark.django_db
def test_readyz_is_503_naming_the_failed_part(monkeypatch: pytest.MonkeyPatch) -> None:
    from config import health

    def broken() -> str:
        raise ConnectionError("connection refused")

    monkeypatch.setitem(health.CHECKS, "broker", broken)
    response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["broker"].startswith("ConnectionError")
    assert body["checks"]["database"] == "ok"


@pytest.mark.django_db
def test_readyz_reports_unapplied_migrations(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db.migrations.executor import MigrationExecutor

    monkeypatch.setattr(MigrationExecutor, "migration_plan", lambda self, targets: [("x", False)])
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert "migration" in response.json()["checks"]["database"]


def test_q_cluster_retry_must_exceed_timeout() -> None:
    with override_settings(Q_CLUSTER={"timeout": 60, "retry": 60}):
        ids = [e.id for e in run_checks()]
    assert "runs.E001" in ids
    assert "runs.E001" not in [e.id for e in run_checks()]


def test_api_docs_and_admin_are_served() -> None:
    client = Client()
    assert client.get("/api/v1/docs").status_code == 200
    assert client.get("/api/v1/openapi.json").status_code == 200
    assert client.get("/admin/login/").status_code == 200


def test_sqlite_default_is_wal_immediate_with_busy_timeout() -> None:
    from django.conf import settings

    if not settings.IS_SQLITE:
        pytest.skip("embedded default only")
    options = settings.DATABASES["default"]["OPTIONS"]
    assert options["transaction_mode"] == "IMMEDIATE"
    # Writers queue for a while, and give up well before a run's lease could expire.
    assert 1 <= options["timeout"] <= settings.RUNYARD["LEASE_SECONDS"] / 3
    assert "journal_mode=WAL" in options["init_command"]
    assert settings.DATABASES["default"]["CONN_MAX_AGE"] is None


@pytest.mark.django_db
def test_sqlite_connection_really_is_in_wal_mode() -> None:
    from django.conf import settings
    from django.db import connection

    if not settings.IS_SQLITE:
        pytest.skip("embedded default only")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0].lower() == "wal"
