"""System checks for settings that silently break durability or safety when wrong."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register


@register()
def check_q_cluster(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    conf = getattr(settings, "Q_CLUSTER", {})
    timeout, retry = conf.get("timeout"), conf.get("retry")
    errors = []
    if timeout is None or retry is None or retry <= timeout:
        errors.append(
            Error(
                f"Q_CLUSTER['retry'] ({retry}) must be larger than "
                f"Q_CLUSTER['timeout'] ({timeout}).",
                hint="Otherwise the broker hands a still-running task to a second worker.",
                id="runs.E001",
            )
        )
    return errors


@register(Tags.security, deploy=True)
def check_production_secrets(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Errors, not Django's warnings (security.W009, W018): a deploy with either is unsafe."""
    errors = []
    # The development key and the placeholder that platform/env.example once suggested.
    public_keys = {getattr(settings, "DEV_SECRET_KEY", None), "change-me"}
    if not settings.SECRET_KEY or settings.SECRET_KEY in public_keys:
        errors.append(
            Error(
                "SECRET_KEY is the development value, which is public in config/settings.py.",
                hint="Set SECRET_KEY in the environment to a long random string "
                "(python -c 'import secrets; print(secrets.token_urlsafe(50))').",
                id="runs.E011",
            )
        )
    if settings.DEBUG:
        errors.append(
            Error(
                "DEBUG is on.",
                hint="Unset DEBUG (or DEBUG=false): debug pages show settings and code.",
                id="runs.E012",
            )
        )
    return errors


@register(Tags.database)
def check_sqlite_options(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Every SQLite database queues writers briefly (IMMEDIATE, a busy timeout) and gives up
    well before a run's lease could expire behind a writer that holds the lock."""
    lease = float(settings.RUNYARD["LEASE_SECONDS"])
    errors = []
    for alias, db in settings.DATABASES.items():
        if db.get("ENGINE") not in settings.SQLITE_ENGINES:
            continue
        options = db.get("OPTIONS", {})
        # Python's sqlite3 waits 5 s by default when no timeout is given.
        timeout = float(options.get("timeout", 5.0))
        if timeout >= lease:
            errors.append(
                Error(
                    f"DATABASES[{alias!r}] waits {timeout:g} s for a busy SQLite database, "
                    f"not less than the run lease ({lease:g} s).",
                    hint="Lower RUNYARD_SQLITE_BUSY_TIMEOUT (default: a third of the lease, "
                    "at most 10 s).",
                    id="runs.E013",
                )
            )
        init = options.get("init_command", "").replace(" ", "").lower()
        if options.get("transaction_mode") != "IMMEDIATE" or "journal_mode=wal" not in init:
            errors.append(
                Error(
                    f"DATABASES[{alias!r}] is SQLite without WAL and IMMEDIATE transactions.",
                    hint="Concurrent writers then fail with 'database is locked'; use "
                    "config.settings.sqlite_options().",
                    id="runs.E014",
                )
            )
    return errors
