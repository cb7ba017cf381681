"""What every long-lived stream shares: a per-tenant cap, and re-authorisation while it lasts.

Websockets (runs/consumers/), Server-Sent Events and `/wait` (runs/api/live.py) hold their
caller's credential for minutes. A key revoked, a tenant deactivated or a member removed
after the handshake must not keep receiving events, so each stream asks `recheck()` every
RUNYARD["STREAM_RECHECK_SECONDS"]. Verdicts are shared by the process's streams for half that
interval, so a thousand sockets on one key cost one query per interval, not a thousand; a
stream learns of a revocation at most 1.5 intervals after it happened.

Websocket consumers' queries run on `db()`: a pool of RUNYARD["STREAM_DB_THREADS"] threads.
Channels' `database_sync_to_async` is thread-sensitive, and a consumer runs in no
ThreadSensitiveContext (Django's HTTP handler opens one per request; channels opens none), so
every consumer's queries in the process went through asgiref's one shared thread: one
tenant's slow replay held every other tenant's handshake and stream behind it. A context per
connection would cost a thread and, with persistent connections, a database connection per
open websocket; a bounded pool costs that many of each per process.

`StreamSlots` caps the SSE streams and waits one tenant holds open at once
(RUNYARD["MAX_STREAMS_PER_TENANT"]). It counts in this process: with several daphne
processes behind a balancer, a tenant may hold up to that many per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal, ParamSpec, TypeVar

from channels.db import DatabaseSyncToAsync
from django.conf import settings
from django.db import connections

from tenants.auth import TenantContext, recheck_context
from tenants.limits import LimitExceeded

Verdict = Literal["unauthenticated", "forbidden"] | None

DEFAULT_RECHECK_SECONDS = 10.0
DEFAULT_MAX_STREAMS_PER_TENANT = 100
# How long a client refused a stream should wait before trying again.
STREAMS_RETRY_AFTER_SECONDS = 5
# Cached verdicts beyond this many are dropped oldest first (one per live credential).
MAX_VERDICTS = 10_000


P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_DB_THREADS = 8
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            size = int(settings.RUNYARD.get("STREAM_DB_THREADS", DEFAULT_DB_THREADS))
            _pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="runyard-streams")
        return _pool


def db(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`fn` as a coroutine on the streams' thread pool, with channels' connection cleanup."""
    return DatabaseSyncToAsync(fn, thread_sensitive=False, executor=_executor())  # type: ignore[return-value]


def close_db() -> None:
    """Close every pool thread's database connection and stop the pool (tests; shutdown)."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is None:
        return
    size = pool._max_workers
    # Each task waits for all the others, so each runs on a thread of its own: all of them.
    barrier = threading.Barrier(size)

    def close_this_thread() -> None:
        connections.close_all()
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=5)

    for future in [pool.submit(close_this_thread) for _ in range(size)]:
        future.result()
    pool.shutdown(wait=True)


def recheck_seconds() -> float:
    return float(settings.RUNYARD.get("STREAM_RECHECK_SECONDS", DEFAULT_RECHECK_SECONDS))


def max_streams_per_tenant() -> int:
    return int(settings.RUNYARD.get("MAX_STREAMS_PER_TENANT", DEFAULT_MAX_STREAMS_PER_TENANT))


def _credential(ctx: TenantContext) -> tuple[str, int, int]:
    if ctx.api_key is not None:
        return ("key", ctx.api_key.pk, ctx.tenant.pk)
    user_pk = getattr(ctx.user, "pk", None) or 0
    return ("user", user_pk, ctx.tenant.pk)


Credential = tuple[str, int, int]
_verdicts: dict[Credential, tuple[float, Verdict]] = {}
# Checks under way, so streams whose cached verdict expired together share one query. A
# task of its own: a stream closed meanwhile does not cancel the others' answer.
_checking: dict[Credential, asyncio.Task[Verdict]] = {}


async def recheck(ctx: TenantContext) -> Verdict:
    """Why the stream's caller may no longer read (None: it still may), at most half an
    interval old. One indexed query per credential per half interval in this process."""
    credential = _credential(ctx)
    cached = _verdicts.get(credential)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    loop = asyncio.get_running_loop()
    checking = _checking.get(credential)
    if checking is None or checking.get_loop() is not loop:
        checking = _checking[credential] = loop.create_task(_check(credential, ctx))
    return await asyncio.shield(checking)


async def _check(credential: Credential, ctx: TenantContext) -> Verdict:
    try:
        verdict: Verdict = await db(recheck_context)(ctx)
    finally:
        if _checking.get(credential) is asyncio.current_task():
            del _checking[credential]
    now = time.monotonic()
    if len(_verdicts) >= MAX_VERDICTS:
        expired = [k for k, (expires, _) in _verdicts.items() if expires <= now]
        for old in expired or list(_verdicts)[: MAX_VERDICTS // 10]:
            del _verdicts[old]
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
