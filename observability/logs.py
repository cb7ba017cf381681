"""Structured logs: the run a line was written for, and a JSON format.

A segment sets the run context (`run_context`) while it executes; `RunContextFilter`, on the
console handler, copies it onto every record that passes, whichever logger wrote it, so every
line written while a run executes names its tenant and run: `[tenant=acme run=<id>]` in the
text format, `"tenant"` and `"run_id"` keys in JSON (LOG_FORMAT=json). The context is a
contextvar: threads the engine starts for a node copy it (runs/engine/threads.py), other
threads (the watcher) do not have it.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# (tenant slug, run public id hex), or None outside a run.
_current: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "runyard_run", default=None
)


@contextmanager
def run_context(tenant: str, run_id: str) -> Iterator[None]:
    """Log lines written inside carry `tenant` and `run_id` (restored after: a child run
    executes inside its parent's step)."""
    token = _current.set((tenant, run_id))
    try:
        yield
    finally:
        _current.reset(token)


def current_run() -> tuple[str, str] | None:
    return _current.get()


class RunContextFilter(logging.Filter):
    """Adds `tenant`, `run_id` and `run_context` (the text format's prefix) to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _current.get()
        if ctx is None:
            if not hasattr(record, "run_context"):
                record.run_context = ""
            return True
        tenant, run_id = ctx
        record.tenant = tenant
        record.run_id = run_id
        record.run_context = f"[tenant={tenant} run={run_id}] "
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, then tenant and
    run_id when set, and the traceback (as a string) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        tenant = getattr(record, "tenant", None)
        if tenant is not None:
            out["tenant"] = tenant
            out["run_id"] = getattr(record, "run_id", None)
        http = getattr(record, "http", None)
        if isinstance(http, dict):
            out["http"] = http
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def route_daphne_access_log() -> None:
    """LOG_FORMAT=json: daphne writes its access log straight to stdout in NCSA format, not
    through logging; send those lines through the `daphne.access` logger instead, so they are
    JSON objects like every other line (with `client`, `request`, `status`, `bytes`)."""
    try:
        from daphne.access import AccessLogGenerator
    except ImportError:  # another server
        return
    access = logging.getLogger("daphne.access")

    def write_entry(
        self: Any,
        host: str,
        date: Any,
        request: str,
        status: int | None = None,
        length: int | None = None,
        ident: str | None = None,
        user: str | None = None,
    ) -> None:
        access.info(
            '%s "%s" %s %s',
            host,
            request,
            status or "-",
            length or "-",
            extra={"http": {"client": host, "request": request, "status": status, "bytes": length}},
        )

    AccessLogGenerator.write_entry = write_entry  # type: ignore[method-assign]
