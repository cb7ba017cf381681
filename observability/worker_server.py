"""/metrics of a machine that runs only workers: RUNYARD_METRICS_PORT on `manage.py qcluster`.

The web process's /metrics sums the multiprocess files of its own machine, so workers on
machines without a web process need their own endpoint. Set RUNYARD_METRICS_PORT and the
qcluster's main process serves that machine's process metrics (not the database gauges: every
web process serves those, cluster-wide) on RUNYARD_METRICS_BIND (default 127.0.0.1), with the
same rule as the web's: loopback clients, or `Authorization: Bearer $RUNYARD_METRICS_TOKEN`.
One small thread, one request at a time.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    from django.conf import settings
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    from observability import multiproc
    from observability.views import Collected, error_body, refusal

    if environ.get("PATH_INFO") != "/metrics" or environ.get("REQUEST_METHOD") != "GET":
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [error_body("not_found", "Only GET /metrics is served here.")]
    refused = refusal(environ, settings.METRICS_TOKEN)
    if refused is not None:
        status, code, message = refused
        headers = [("Content-Type", "application/json")]
        if status == 401:
            headers.append(("WWW-Authenticate", 'Bearer realm="metrics"'))
        reason = "Unauthorized" if status == 401 else "Forbidden"
        start_response(f"{status} {reason}", headers)
        return [error_body(code, message)]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collected(multiproc.collect()))
    start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
    return [generate_latest(registry)]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        return


def start_from_env() -> WSGIServer | None:
    """Serve /metrics on RUNYARD_METRICS_PORT when it is set (in qcluster's main process)."""
    port = os.environ.get("RUNYARD_METRICS_PORT", "").strip()
    if not port:
        return None
    bind = os.environ.get("RUNYARD_METRICS_BIND", "127.0.0.1")
    server = make_server(bind, int(port), app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    log.info("metrics: serving this machine's worker metrics on %s:%s/metrics", bind, port)
    return server
