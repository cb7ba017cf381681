"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

import asyncio

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_database() -> str | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    executor = MigrationExecutor(connection)
    pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if pending:
        return f"{len(pending)} migration(s) not applied"
    return None


def _check_broker() -> str | None:
    from django_q.brokers import get_broker

    broker = get_broker()
    if not broker.ping():
        return "broker did not answer"
    broker.queue_size()  # the ORM broker's ping is a constant; this touches its table
    return None


def _check_channel_layer() -> str | None:
    layer = get_channel_layer()
    if layer is None:
        return "no channel layer configured"

    async def round_trip() -> dict:
        # new_channel subscribes first: a pub/sub layer drops what nobody listens to yet, and
        # its subscription may land a moment after, so the ping is sent again until it arrives.
        channel = await layer.new_channel("readyz.")
        receiving = asyncio.ensure_future(layer.receive(channel))
        try:
            for _ in range(10):
                await layer.send(channel, {"type": "readyz.ping"})
                done, _ = await asyncio.wait({receiving}, timeout=0.2)
                if done:
                    return receiving.result()
            return {}
        finally:
            receiving.cancel()

    message = async_to_sync(round_trip)()
    if not message:
        return "channel layer did not answer within 2 s"
    if message.get("type") != "readyz.ping":
        return "channel layer returned the wrong message"
    return None


CHECKS = {
    "database": _check_database,
    "broker": _check_broker,
    "channel_layer": _check_channel_layer,
}


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    results: dict[str, str] = {}
    ok = True
    for name, check in CHECKS.items():
        try:
            problem = check()
        except Exception as exc:  # noqa: BLE001 - a probe reports every failure, whatever it is
            problem = f"{type(exc).__name__}: {exc}"
        results[name] = problem or "ok"
        ok = ok and problem is None
    body = {
        "status": "ok" if ok else "unavailable",
        "checks": results,
        "database_engine": connection.vendor,
    }
    return JsonResponse(body, status=200 if ok else 503)
