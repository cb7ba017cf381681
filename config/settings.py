"""Runyard settings: one file; everything that differs between machines comes from the env."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("RUNYARD_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

# prometheus-client decides at import whether it runs in multiprocess mode (one mmap file per
# process and metric type, summed at scrape time), so the directory is set here, before any
# process (daphne, qcluster and its forked workers, manage.py) imports it. One directory per
# machine: web and workers of one machine must share it (observability/multiproc.py).
PROMETHEUS_MULTIPROC_DIR = Path(
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(VAR_DIR / "prometheus"))
)
PROMETHEUS_MULTIPROC_DIR.mkdir(parents=True, exist_ok=True)


def env_flag(env: Mapping[str, str], name: str) -> bool | None:
    """A yes/no setting of `env`: None when unset or empty."""
    value = env.get(name, "").strip().lower()
    return value in {"1", "true", "yes", "on"} if value else None


def env_bool(name: str, default: bool) -> bool:
    flag = env_flag(os.environ, name)
    return default if flag is None else flag


def env_list(name: str, default: list[str]) -> list[str]:
    """A comma-separated list; set but empty means an empty list."""
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def env_json_or_file(name: str) -> Any:
    """A JSON value given inline, or the path of a file holding it; None when unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        text = value if value[0] in "{[" else Path(value).read_text()
        return json.loads(text)
    except (OSError, ValueError) as exc:
        raise ImproperlyConfigured(f"{name}: not JSON nor a readable JSON file: {exc}") from None


# Public, in this file: `manage.py check --deploy` refuses it (runs.E011). `make run` writes a
# random key to var/secret_key, so a fresh machine never serves on this one.
DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me-in-production-0123"  # noqa: S105
SECRET_KEY_FILE = VAR_DIR / "secret_key"


def read_secret_key() -> str:
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    try:
        return SECRET_KEY_FILE.read_text().strip() or DEV_SECRET_KEY
    except FileNotFoundError:
        return DEV_SECRET_KEY


SECRET_KEY = read_secret_key()
DEBUG = env_bool("DEBUG", False)
# Local names only unless told otherwise: the Host check (and channels' websocket origin check)
# accepts nothing else. Tests add "testserver" themselves (setup_test_environment).
ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
    if h.strip()
]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]
# Behind HTTPS, set both (check --deploy warns otherwise); plain-HTTP localhost needs them off.
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "ninja",  # serves the API docs' assets locally (no CDN)
    "django_q",
    "tenants",
    "runs",
    "schedules",
    "observability",
    "webhooks",
    "triggers",
    "lg",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves `collectstatic`'s output (STATIC_ROOT) from the web process itself, DEBUG on or
    # off, before sessions or the database are touched: the admin's CSS and JS and the API
    # docs' Swagger UI (/static/ninja/) need no other server. ASGI-native (no thread per file).
    "config.staticfiles.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# Embedded default: a SQLite file in WAL mode. IMMEDIATE transactions take the write lock at
# BEGIN, which avoids the read-then-write upgrade deadlock that SQLite reports as "database is
# locked"; the busy timeout makes writers queue instead of failing. The same options apply to
# a SQLite database named by DATABASE_URL=sqlite:///...
#
# The busy timeout stays well under the run lease: a writer that cannot get the lock gives up
# (and retries, runs/services/dbretry.py, within the lease too) long before a live run's lease
# could expire behind it. Long writers (prune_runs) commit in short batches instead.
LEASE_SECONDS = env_float("RUNYARD_LEASE_SECONDS", 30)
SQLITE_BUSY_TIMEOUT = env_float("RUNYARD_SQLITE_BUSY_TIMEOUT", min(10.0, LEASE_SECONDS / 3))
SQLITE_SYNCHRONOUS = os.environ.get("RUNYARD_SQLITE_SYNCHRONOUS", "FULL").upper()


def sqlite_options(synchronous: str, busy_timeout: float) -> dict[str, Any]:
    """Connection options for every SQLite database (runs.checks verifies them)."""
    # FULL syncs the WAL at every commit, so a committed step survives a power loss or an OS
    # crash too; NORMAL (~10x cheaper commits) can lose the last ones there and run them again.
    if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ImproperlyConfigured("RUNYARD_SQLITE_SYNCHRONOUS: OFF, NORMAL, FULL or EXTRA")
    return {
        "transaction_mode": "IMMEDIATE",
        "timeout": busy_timeout,
        "init_command": (
            f"PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous}; "
            f"PRAGMA busy_timeout={int(busy_timeout * 1000)};"
        ),
    }


SQLITE_ENGINES = ("django.db.backends.sqlite3", "config.sqlite_web")


def pooled_connections(env: Mapping[str, str]) -> bool:
    """Whether this process pools its database connections: by default the web process.

    Django serves each ASGI request's sync code on a thread of its own, so a persistent
    connection (CONN_MAX_AGE) is never reused there: every request opened a new PostgreSQL
    session (a backend forked, ~10 ms) or SQLite connection (~1 ms) and left the old one to
    the garbage collector. The web process (it imports config/asgi.py before these settings)
    closes each request's connection (CONN_MAX_AGE=0) into a pool instead: Django's
    psycopg_pool on PostgreSQL, config/sqlite_web on SQLite. Workers and the scheduler keep
    one persistent connection per long-lived thread. RUNYARD_DB_POOL=on/off overrides."""
    chosen = env_flag(env, "RUNYARD_DB_POOL")
    return "config.asgi" in sys.modules if chosen is None else chosen


def database_config(env: Mapping[str, str], var_dir: Path) -> dict[str, Any]:
    """The default database from the environment: DATABASE_URL, else a SQLite file in var/."""
    url = env.get("DATABASE_URL", "")
    db: dict[str, Any]
    if url:
        db = dict(dj_database_url.parse(url, conn_max_age=None))
    else:
        db = {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env.get("SQLITE_PATH", str(var_dir / "runyard.sqlite3")),
            "CONN_MAX_AGE": None,
        }
    if db["ENGINE"] == "django.db.backends.postgresql":
        db.setdefault("OPTIONS", {})
        db["TEST"] = {"NAME": env.get("TEST_DATABASE_NAME", "test_runyard")}
        # Django's cursors bind on the client and never prepare; this lets the few statements
        # that ask be prepared on the server (the step commit: runs/guarded_writes.py). Off for
        # a PgBouncer in transaction mode older than 1.21, which cannot keep them.
        if env_flag(env, "RUNYARD_DB_PREPARED") is not False:
            db["OPTIONS"].setdefault("prepare_threshold", 5)
        if pooled_connections(env):
            db["CONN_MAX_AGE"] = 0  # a pooled connection goes back to the pool instead
            db["CONN_HEALTH_CHECKS"] = True  # the pool hands out none that a restart broke
            db["OPTIONS"]["pool"] = {
                "min_size": int(env.get("DATABASE_POOL_MIN", "2")),
                "max_size": int(env.get("DATABASE_POOL_MAX", "20")),
                # A request waits this long for a free connection, then fails (503-like).
                "timeout": float(env.get("DATABASE_POOL_TIMEOUT", "10")),
                "max_idle": 300,
            }
            # pg_stat_activity tells the web process's sessions apart.
            db["OPTIONS"].setdefault("application_name", "runyard-web")
    elif db["ENGINE"] in SQLITE_ENGINES:
        db["CONN_MAX_AGE"] = None
        if pooled_connections(env):
            db["ENGINE"], db["CONN_MAX_AGE"] = "config.sqlite_web", 0
        db["OPTIONS"] = {
            **db.get("OPTIONS", {}),
            **sqlite_options(SQLITE_SYNCHRONOUS, SQLITE_BUSY_TIMEOUT),
        }
        # A file, not :memory:, so end-to-end tests can share it with real worker processes;
        # one per test process, so concurrent test runs never share a file.
        db["TEST"] = {
            "NAME": env.get(
                "SQLITE_TEST_PATH", str(var_dir / f"test_runyard_{os.getpid()}.sqlite3")
            )
        }
    return db


DATABASE_URL = os.environ.get("DATABASE_URL", "")
DATABASES = {"default": database_config(os.environ, VAR_DIR)}
IS_SQLITE = DATABASES["default"]["ENGINE"] in SQLITE_ENGINES

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# `make run` fills it with `collectstatic`; the browser tests collect into a temporary one.
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "static"))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # ServeStatic warns about a missing one
# The web process also serves the apps' static folders (indexed once at start-up) for whatever
# `collectstatic` never copied; STATIC_ROOT's files win (config/staticfiles.py).
SERVESTATIC_USE_FINDERS = True
SERVESTATIC_USE_STATIC_ROOT = True
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
MEDIA_URL = "media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

# --- Redis, channel layer, queue ------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # Pub/sub: a group_send is one PUBLISH, and each daphne process's relay
            # (runs/relay.py) is subscribed to the groups it has viewers for. Nothing is
            # stored, which is fine: the Event table is the log and the layer only wakes.
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            # redis-py 8 defaults to a 5 s read timeout; the subscriber's reads must wait.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}]},
        }
    }
else:
    # In-process only: events written by a worker process reach daphne through the event
    # poller (runs/live.py), which tails the Event table and fans out locally.
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# A segment of a run holds one queue task; the broker may hand a task out again after `retry`
# seconds without an ack, so `retry` must exceed `timeout` (checked by runs.checks). Runs are
# safe under redelivery anyway: the claim is a guarded UPDATE.
Q_TIMEOUT = int(os.environ.get("Q_TIMEOUT", 900))
Q_CLUSTER: dict[str, Any] = {
    "name": os.environ.get("Q_CLUSTER_NAME", "runyard"),
    "workers": int(os.environ.get("Q_WORKERS", 4)),
    "recycle": 500,
    "timeout": Q_TIMEOUT,
    "retry": Q_TIMEOUT + 60,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "poll": env_float("Q_POLL", 0.05),
    "save_limit": 1000,
    "label": "Django Q2",
    "sync": env_bool("Q_SYNC", False),
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- Runyard --------------------------------------------------------------------------------
RUNYARD: dict[str, Any] = {
    "LEASE_SECONDS": LEASE_SECONDS,
    "HEARTBEAT_SECONDS": env_float("RUNYARD_HEARTBEAT_SECONDS", 5),
    # A dispatched run not claimed within this many seconds is dispatched again.
    "DISPATCH_GRACE_SECONDS": env_float("RUNYARD_DISPATCH_GRACE_SECONDS", 60),
    # One queue task runs at most this long before handing the run back to the dispatcher,
    # so long runs cannot hold workers against other tenants.
    "SEGMENT_SECONDS": env_float("RUNYARD_SEGMENT_SECONDS", 300),
    "MAX_RECOVERIES": int(os.environ.get("RUNYARD_MAX_RECOVERIES", 3)),
    # Resurrection (runs/services/resurrection.py): a run failing with a non-fatal error waits
    # this long, queued, before it resumes at the failed node (the dispatcher skips it until
    # then; no worker sleeps). An error is fatal (never resurrected) when the engine says so,
    # when its code (or its cause's) matches one of FATAL_ERROR_CODES (fnmatch patterns), or
    # when its message contains one of FATAL_ERROR_PATTERNS (case-insensitive substrings):
    # credentials, permissions and quotas do not come back by trying again.
    "RESURRECTION_COOLDOWN_SECONDS": env_float("RUNYARD_RESURRECTION_COOLDOWN_SECONDS", 2),
    "FATAL_ERROR_CODES": env_list(
        "RUNYARD_FATAL_ERROR_CODES",
        [
            "llm_auth",
            "llm_config",
            "llm_request",
            "http_refused",
            "function_error",
            "expression_*",
            "reducer_error",
            "invalid_output",
            "merge_conflict",
            "approval_rejected",
            "depth_exceeded",
            "limit_exceeded.*",
            "unauthorized",
            "forbidden",
            "permission_denied",
            "quota_exceeded",
        ],
    ),
    "FATAL_ERROR_PATTERNS": env_list(
        "RUNYARD_FATAL_ERROR_PATTERNS",
        [
            "permission denied",
            "access denied",
            "unauthorized",
            "unauthorised",
            "forbidden",
            "invalid api key",
            "invalid_api_key",
            "incorrect api key",
            "invalid credentials",
            "authentication failed",
            "quota exceeded",
            "insufficient_quota",
            "exceeded your current quota",
        ],
    ),
    # A worker told to stop (SIGTERM) hands its runs back at the next step boundary; a step
    # still running this long after the signal is cancelled and runs again elsewhere.
    "DRAIN_GRACE_SECONDS": env_float("RUNYARD_DRAIN_GRACE_SECONDS", 20),
    # Consecutive pure steps (transform, end) committed in one transaction, at most this many;
    # 1 commits every step on its own.
    "PURE_BATCH_STEPS": int(os.environ.get("RUNYARD_PURE_BATCH_STEPS", 100)),
    # A checkpoint stores what its step changed (a delta) and a full snapshot at most this
    # many steps apart, so reading one replays fewer than this many deltas (runs/checkpoints.py).
    # 1 stores every checkpoint full.
    "CHECKPOINT_SNAPSHOT_EVERY": max(
        1, int(os.environ.get("RUNYARD_CHECKPOINT_SNAPSHOT_EVERY", 50))
    ),
    # Usage-ledger rows per tenant and day: a run's steps add to row run_id % this, so one
    # tenant's concurrent runs do not wait on a single row's lock (tenants/limits/usage.py).
    "USAGE_SHARDS": int(os.environ.get("RUNYARD_USAGE_SHARDS", 16)),
    # Runs in flight at once, cluster-wide. Unset: the workers of every qcluster seen lately on
    # any machine (they register themselves, runs/workers.py), else Q_CLUSTER["workers"].
    "DISPATCH_CAPACITY": int(os.environ.get("RUNYARD_DISPATCH_CAPACITY", 0)) or None,
    # prune_runs deletes this many root runs, or about this many rows, per transaction at most:
    # on SQLite every writer (step commits, lease renewals) waits for one batch.
    "PRUNE_BATCH_RUNS": int(os.environ.get("RUNYARD_PRUNE_BATCH_RUNS", 500)),
    "PRUNE_BATCH_ROWS": int(os.environ.get("RUNYARD_PRUNE_BATCH_ROWS", 10000)),
    "EVENT_POLL_SECONDS": env_float("RUNYARD_EVENT_POLL_SECONDS", 0.05),
    # A websocket client further behind than this is closed (4008) and resumes with ?after=.
    "WS_MAX_BUFFERED": int(os.environ.get("RUNYARD_WS_MAX_BUFFERED", 1000)),
    "WS_MAX_BUFFERED_BYTES": int(os.environ.get("RUNYARD_WS_MAX_BUFFERED_BYTES", 8 * 1024 * 1024)),
    # Streams (websocket, SSE, /wait) re-check their caller's key or membership this often.
    "STREAM_RECHECK_SECONDS": env_float("RUNYARD_STREAM_RECHECK_SECONDS", 10),
    # Open SSE streams and /wait calls per tenant, counted in each daphne process (429 past it).
    "MAX_STREAMS_PER_TENANT": int(os.environ.get("RUNYARD_MAX_STREAMS_PER_TENANT", 100)),
    # Threads (each with its database connection) for websocket consumers' queries, per process.
    "STREAM_DB_THREADS": int(os.environ.get("RUNYARD_STREAM_DB_THREADS", 8)),
    # Completion webhooks (webhooks/): a failed delivery is retried with exponential backoff
    # (first retry after WEBHOOK_FIRST_RETRY_SECONDS) until this many hours after it was
    # written, then marked failed. Each attempt waits WEBHOOK_TIMEOUT_SECONDS at most and
    # reads WEBHOOK_MAX_RESPONSE_BYTES of the answer; a run's state above
    # WEBHOOK_MAX_STATE_BYTES (JSON) is left out of the body.
    "WEBHOOK_RETRY_HOURS": env_float("RUNYARD_WEBHOOK_RETRY_HOURS", 24),
    "WEBHOOK_FIRST_RETRY_SECONDS": env_float("RUNYARD_WEBHOOK_FIRST_RETRY_SECONDS", 10),
    "WEBHOOK_TIMEOUT_SECONDS": env_float("RUNYARD_WEBHOOK_TIMEOUT_SECONDS", 10),
    "WEBHOOK_MAX_RESPONSE_BYTES": int(os.environ.get("RUNYARD_WEBHOOK_MAX_RESPONSE_BYTES", 65536)),
    "WEBHOOK_MAX_STATE_BYTES": int(os.environ.get("RUNYARD_WEBHOOK_MAX_STATE_BYTES", 256 * 1024)),
    "WEBHOOK_MAX_SUBSCRIPTIONS": int(os.environ.get("RUNYARD_WEBHOOK_MAX_SUBSCRIPTIONS", 20)),
    # First attempts as queue tasks right after the change commits; off, the scheduler's
    # webhook thread (every second) sends them, and workers spend no time on receivers.
    "WEBHOOK_SEND_ON_COMMIT": env_bool("RUNYARD_WEBHOOK_SEND_ON_COMMIT", True),
    "MAX_INPUT_BYTES": int(os.environ.get("RUNYARD_MAX_INPUT_BYTES", 256 * 1024)),
    # Schedules (crons) a tenant may hold, and fires kept in each one's history.
    "MAX_CRONS_PER_TENANT": int(os.environ.get("RUNYARD_MAX_CRONS_PER_TENANT", 100)),
    "CRON_FIRES_KEPT": int(os.environ.get("RUNYARD_CRON_FIRES_KEPT", 50)),
    "MAX_SPEC_BYTES": int(os.environ.get("RUNYARD_MAX_SPEC_BYTES", 1024 * 1024)),
    # Largest value one expression or template may build (bytes); over it: `expression_limit`.
    "MAX_VALUE_BYTES": int(os.environ.get("RUNYARD_MAX_VALUE_BYTES", 1_000_000)),
    # An event's data (and a step row's update) is kept under this many bytes of JSON: larger
    # values are replaced by {"truncated": true, "bytes": n}; the checkpoint keeps the state.
    "MAX_EVENT_BYTES": int(os.environ.get("RUNYARD_MAX_EVENT_BYTES", 64 * 1024)),
    "FUNCTION_MODULES": [
        m for m in os.environ.get("RUNYARD_FUNCTION_MODULES", "").split(",") if m.strip()
    ],
    "HOOK_MODULES": [m for m in os.environ.get("RUNYARD_HOOK_MODULES", "").split(",") if m.strip()],
    "OPENAI_BASE_URL": os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1"),
    "OPENAI_API_KEY": os.environ.get("OPENAI_API_KEY", ""),
    # The operator's LLM price table, on top of the built-in list prices of well-known OpenAI
    # models (runs/engine/pricing.py): {provider: {model: {"input": x, "output": y} | null}},
    # USD per million tokens; null removes a built-in model. Models of billed providers
    # (openai) that are not in the table are refused; specs cannot set their price.
    "LLM_PRICES": env_json_or_file("RUNYARD_LLM_PRICES"),
}

# --- Metrics, logs, traces (observability/) -------------------------------------------------
# /metrics answers loopback clients, and others that send `Authorization: Bearer <token>`.
METRICS_TOKEN = os.environ.get("RUNYARD_METRICS_TOKEN", "")
# `json`: every log line is one JSON object. Lines written while a run executes carry its
# tenant and run ids in either format (observability/logs.py).
LOG_FORMAT = os.environ.get("LOG_FORMAT", "text").strip().lower()
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured("LOG_FORMAT: text or json")
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"run_context": {"()": "observability.logs.RunContextFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(run_context)s%(message)s"},
        "json": {"()": "observability.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["run_context"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        # Daphne's access log, with LOG_FORMAT=json only (observability/logs.py); in the text
        # format daphne writes it to stdout itself.
        "daphne.access": {"level": "INFO"},
        # Their own handlers otherwise (Django's defaults, django-q2's plain one): one format.
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django-q": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
    },
}
