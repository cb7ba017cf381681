"""What every long-lived stream shares: a per-tenant cap, and re-authorisation while it lasts.

Websockets (runs/consumers.py), Server-Sent Events and `/wait` (runs/api/live.py) hold their
caller's credential for minutes. A key revoked, a tenant deactivated or a member removed
after the handshake must not keep receiving events, so each stream asks `recheck()` every
RUNYARD["STREAM_RECHECK_SECONDS"]. Verdicts are shared by the process's streams for half that
interval, so a thousand sockets on one key cost one query per interval, not a thousand; a
stream learns of a revocation at most 1.5 intervals after it happened.

`StreamSlots` caps the SSE streams and waits one tenant holds open at once
(RUNYARD["MAX_STREAMS_PER_TENANT"]). It counts in this process: with several daphne
processes behind a balancer, a tenant may hold up to that many per process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from channels.db import database_sync_to_async
from django.conf import settings

from tenants.auth import TenantContext, recheck_context
from tenants.limits import LimitExceeded

Verdict = Literal["unauthenticated", "forbidden"] | None

DEFAULT_RECHECK_SECONDS = 10.0
DEFAULT_MAX_STREAMS_PER_TENANT = 100
# How long a client refused a stream should wait before trying again.
STREAMS_RETRY_AFTER_SECONDS = 5
# Cached verdicts beyond this many are dropped oldest first (one per live credential).
MAX_VERDICTS = 10_000


def recheck_seconds() -> float:
    return float(settings.RUNYARD.get("STREAM_RECHECK_SECONDS", DEFAULT_RECHECK_SECONDS))


def max_streams_per_tenant() -> int:
    return int(settings.RUNYARD.get("MAX_STREAMS_PER_TENANT", DEFAULT_MAX_STREAMS_PER_TENANT))


def _credential(ctx: TenantContext) -> tuple[str, int, int]:
    if ctx.api_key is not None:
        return ("key", ctx.api_key.pk, ctx.tenant.pk)
    user_pk = getattr(ctx.user, "pk", None) or 0
    return ("user", user_pk, ctx.tenant.pk)


_verdicts: dict[tuple[str, int, int], tuple[float, Verdict]] = {}


async def recheck(ctx: TenantContext) -> Verdict:
    """Why the stream's caller may no longer read (None: it still may), at most half an
    interval old. One indexed query per credential per half interval in this process."""
    now = time.monotonic()
    credential = _credential(ctx)
    cached = _verdicts.get(credential)
    if cached is not None and cached[0] > now:
        return cached[1]
    verdict: Verdict = await database_sync_to_async(recheck_context)(ctx)
    if len(_verdicts) >= MAX_VERDICTS:
        for old in [k for k, (expires, _) in _verdicts.items() if expires <= now] or list(
            _verdicts
        )[: MAX_VERDICTS // 10]:
            _verdicts.pop(old, None)
    _verdicts[credential] = (now + recheck_seconds() / 2, verdict)
    return verdict


def forget_verdicts() -> None:
    """Drop cached verdicts (tests)."""
    _verdicts.clear()


@dataclass
class Slot:
    """One stream's place in its tenant's count; release() is safe to call more than once."""

    slots: StreamSlots
    tenant_pk: int
    released: bool = field(default=False)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.slots.release(self.tenant_pk)


class StreamSlots:
    """Open SSE streams and waits per tenant, in this process."""

    def __init__(self) -> None:
        self.open: dict[int, int] = {}

    def acquire(self, tenant_pk: int) -> Slot:
        """A slot for one more stream of the tenant, or LimitExceeded (a 429)."""
        limit = max_streams_per_tenant()
        held = self.open.get(tenant_pk, 0)
        if held >= limit:
            raise LimitExceeded(
                "max_streams",
                f"This tenant already has {held} streams and waits open (the limit is "
                f"{limit}); close one or retry later.",
                retry_after=STREAMS_RETRY_AFTER_SECONDS,
                details={"max": limit},
            )
        self.open[tenant_pk] = held + 1
        return Slot(self, tenant_pk)

    def release(self, tenant_pk: int) -> None:
        held = self.open.get(tenant_pk, 0) - 1
        if held > 0:
            self.open[tenant_pk] = held
        else:
            self.open.pop(tenant_pk, None)

    def held(self, tenant_pk: int) -> int:
        return self.open.get(tenant_pk, 0)


slots = StreamSlots()
