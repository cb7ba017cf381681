from __future__ import annotations

import multiprocessing.util
import os
import sys
from typing import Any

from django.apps import AppConfig
from django.conf import settings


def process_role(argv: list[str]) -> str | None:
    """`web` for daphne (or runserver), `worker` for qcluster, else None."""
    program = os.path.basename(argv[0]) if argv else ""
    if program in ("daphne", "uvicorn", "gunicorn") or argv[1:2] == ["runserver"]:
        return "web"
    if argv[1:2] == ["qcluster"]:
        return "worker"
    return None


class ObservabilityConfig(AppConfig):
    name = "observability"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from observability import multiproc, tracing

        tracing.configure_from_env()
        if settings.LOG_FORMAT == "json":
            from observability.logs import route_daphne_access_log

            route_daphne_access_log()
        # The prometheus docs: clear the multiprocess directory before the processes start.
        # Web and workers start apart here, so each clears what dead processes left.
        role = process_role(sys.argv)
        if role is not None:
            multiproc.clean_stale()
        if role == "worker":
            from observability import worker_server

            worker_server.start_from_env()
        post_spawn.connect(on_worker_spawned, dispatch_uid="runyard-metrics-worker")


def on_worker_spawned(sender: Any, **kwargs: Any) -> None:
    """django-q2's post_spawn, in each forked worker process: clean up as it exits (a
    multiprocessing finalizer runs when the worker returns, as on recycling or stop)."""
    multiprocessing.util.Finalize(None, _on_worker_exit, exitpriority=10)


def _on_worker_exit() -> None:
    from observability import multiproc, tracing

    tracing.flush()
    multiproc.on_worker_exit()
