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
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from observability import multiproc
from observability.collectors import DatabaseCollector


def _loopback(request: HttpRequest) -> bool:
    if "HTTP_X_FORWARDED_FOR" in request.META or "HTTP_FORWARDED" in request.META:
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


def _bearer(request: HttpRequest) -> str | None:
    scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _refusal(request: HttpRequest) -> JsonResponse | None:
    if _loopback(request):
        return None
    expected = settings.METRICS_TOKEN
    if not expected:
        return _error(403, "forbidden", "Metrics are served to loopback clients only.")
    token = _bearer(request)
    if token is None or not hmac.compare_digest(token.encode(), expected.encode()):
        response = _error(401, "unauthenticated", "Send Authorization: Bearer <metrics token>.")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return None


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, "details": {}}}, status=status)


class _Collected(Collector):
    def __init__(self, families: Iterable[Any]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Any]:
        return self.families


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    refused = _refusal(request)
    if refused is not None:
        return refused
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collected(multiproc.collect()))
    registry.register(DatabaseCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
