"""/metrics: Prometheus text format, for loopback clients and bearer-token holders.

Open to clients on the loopback interface (a Prometheus or agent on the same machine) that
came in directly: a request a proxy forwarded (`X-Forwarded-For` / `Forwarded`) is not
loopback, whatever address the proxy connected from. Other clients need
`Authorization: Bearer $RUNYARD_METRICS_TOKEN`: 401 without it or with a wrong one, 403
when no token is configured (only loopback may scrape).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from observability import multiproc
from observability.collectors import DatabaseCollector


def _loopback(meta: Mapping[str, Any]) -> bool:
    if "HTTP_X_FORWARDED_FOR" in meta or "HTTP_FORWARDED" in meta:
        return False
    try:
        address = ipaddress.ip_address(meta.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


def _bearer(meta: Mapping[str, Any]) -> str | None:
    scheme, _, token = str(meta.get("HTTP_AUTHORIZATION", "")).partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def refusal(meta: Mapping[str, Any], expected: str) -> tuple[int, str, str] | None:
    """Why a scrape with these request headers (a WSGI environ or Django's META) is refused:
    (status, code, message), or None to serve it. `expected`: the configured token."""
    if _loopback(meta):
        return None
    if not expected:
        return 403, "forbidden", "Metrics are served to loopback clients only."
    token = _bearer(meta)
    if token is None or not hmac.compare_digest(token.encode(), expected.encode()):
        return 401, "unauthenticated", "Send Authorization: Bearer <metrics token>."
    return None


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "details": {}}}).encode()


class Collected(Collector):
    def __init__(self, families: Iterable[Any]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Any]:
        return self.families


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    refused = refusal(request.META, settings.METRICS_TOKEN)
    if refused is not None:
        status, code, message = refused
        response = HttpResponse(error_body(code, message), status=status)
        response["Content-Type"] = "application/json"
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collected(multiproc.collect()))
    registry.register(DatabaseCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
