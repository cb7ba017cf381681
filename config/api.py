"""The NinjaAPI at /api/v1: routers of each app, and domain exceptions mapped to HTTP once."""

from __future__ import annotations

from ninja import NinjaAPI

api = NinjaAPI(
    title="Runyard API",
    version="1.0.0",
    description=(
        "Run workflow and agent graphs durably. "
        "Authenticate with `Authorization: Bearer <key>` or the dashboard session."
    ),
    urls_namespace="api",
)
