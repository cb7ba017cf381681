"""`/ws/tenant/`: the run lifecycle of a whole tenant, by event id (see runs/consumers/base.py)."""

from __future__ import annotations

import collections
import time

from runs import live, streams
from runs.consumers.base import CLOSE_BAD_REQUEST, StreamConsumer, encode, parse_after
from runs.events import TENANT_EVENT_PREFIX, TenantWireEvent, tenant_group, to_tenant_wire
from runs.models import Event
from tenants.auth import TenantContext


class TenantStreamConsumer(StreamConsumer):
    """`/ws/tenant/`: every run's lifecycle events (`run.*`) of the caller's tenant, by id."""

    # PostgreSQL can commit a lower id after a higher one was read: look back this long.
    settle_seconds: float = 5.0

    async def open_stream(self, ctx: TenantContext) -> int | None:
        after = parse_after(self.scope)
        if after is False:
            return CLOSE_BAD_REQUEST
        self.tenant_pk = ctx.tenant.pk
        self.group = tenant_group(ctx.tenant.public_id.hex)
        if after is None:
            after = await streams.db(self._latest_id)()
        self.last = self.written = after
        # (when, cursor) marks: the floor of the look-back is the cursor `settle_seconds` ago.
        self._marks: collections.deque[tuple[float, int]] = collections.deque(
            [(time.monotonic(), after)]
        )
        self._recent: set[int] = set()
        return None

    def _latest_id(self) -> int:
        row = Event.objects.filter(tenant_id=self.tenant_pk).order_by("-id").values("id").first()
        return row["id"] if row else 0

    def _lifecycle_after(self, after: int, limit: int) -> list[TenantWireEvent]:
        rows = (
            Event.objects.filter(
                tenant_id=self.tenant_pk, id__gt=after, type__startswith=TENANT_EVENT_PREFIX
            )
            .select_related("run")
            .only("id", "seq", "type", "data", "created_at", "run__public_id")
            .order_by("id")[:limit]
        )
        return [to_tenant_wire(row, row.run.public_id.hex) for row in rows]

    def _floor(self) -> int:
        horizon = time.monotonic() - self.settle_seconds
        while len(self._marks) > 1 and self._marks[1][0] <= horizon:
            self._marks.popleft()
        floor = self._marks[0][1]
        self._recent = {i for i in self._recent if i > floor}
        return floor

    def _seen(self, event_id: int) -> bool:
        return event_id in self._recent or event_id <= self._marks[0][1]

    async def pull(self, *, paced: bool) -> None:
        """Send the lifecycle events not sent yet: ids after the cursor, and late commits."""
        after = self._floor()
        push = self._push_paced if paced else self._push_live
        while not self._closed:
            page = await streams.db(self._lifecycle_after)(after, self.page_size)
            for event in page:
                after = event["id"]
                if self._seen(event["id"]):
                    continue
                if not await push(encode(event), max(self.last, event["id"])):
                    return
                self._recent.add(event["id"])
            if len(page) < self.page_size:
                break
        if self._marks[-1][1] != self.last:
            self._marks.append((time.monotonic(), self.last))

    async def replay(self) -> None:
        await self.pull(paced=True)

    async def on_hints(self, hints: list[live.Hint]) -> None:
        if not all(self._seen(event_id) for event_id, _ in hints):
            await self.pull(paced=False)

    async def resync(self) -> None:
        await self.pull(paced=False)
