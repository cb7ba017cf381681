"""`/ws/runs/<id>/`: one run's event log in seq order (see runs/consumers/base.py)."""

from __future__ import annotations

import logging
import uuid

from runs import live, streams
from runs.consumers.base import (
    CLOSE_BAD_REQUEST,
    CLOSE_NOT_FOUND,
    StreamConsumer,
    encode,
    parse_after,
)
from runs.events import WireEvent, run_group, to_wire
from runs.models import Event, Run
from tenants.auth import TenantContext

log = logging.getLogger(__name__)


def _keyed(hints: list[live.Hint]) -> list[tuple[int | None, str]]:
    """Hints as outbox entries: a live frame has no seq to record as written."""
    return [(None if seq == live.LIVE_KEY else seq, text) for seq, text in hints]


class RunStreamConsumer(StreamConsumer):
    """`/ws/runs/<id>/`: a run's events in seq order, replayed after `after`, then live;
    live frames (no seq) besides them while a step runs."""

    accepts_live = True

    async def open_stream(self, ctx: TenantContext) -> int | None:
        after = parse_after(self.scope)
        if after is False:
            return CLOSE_BAD_REQUEST
        try:
            public_id = uuid.UUID(str(self.scope["url_route"]["kwargs"]["run_id"]))
        except ValueError:
            return CLOSE_NOT_FOUND
        run_pk = await streams.db(self._find_run)(ctx, public_id)
        if run_pk is None:
            return CLOSE_NOT_FOUND
        self.run_pk = run_pk
        self.run_hex = public_id.hex
        self.group = run_group(self.run_hex)
        self.last = self.written = after or 0
        return None

    @staticmethod
    def _find_run(ctx: TenantContext, public_id: uuid.UUID) -> int | None:
        return (
            Run.objects.for_tenant(ctx.tenant)
            .filter(public_id=public_id)
            .values_list("pk", flat=True)
            .first()
        )

    def _events_after(self, after: int, upto: int | None, limit: int) -> list[WireEvent]:
        rows = Event.objects.filter(run_id=self.run_pk, seq__gt=after)
        if upto is not None:
            rows = rows.filter(seq__lte=upto)
        return [to_wire(row, self.run_hex) for row in rows.order_by("seq")[:limit]]

    def _last_seq(self) -> int | None:
        return Run.objects.filter(pk=self.run_pk).values_list("last_seq", flat=True).first()

    async def replay(self) -> None:
        while not self._closed:
            page = await streams.db(self._events_after)(self.last, None, self.page_size)
            for event in page:
                if not await self._push_paced(encode(event), event["seq"]):
                    return
            if len(page) < self.page_size:
                return

    async def backfill(self, upto: int | None) -> bool:
        """Send the stored events after `last` (up to `upto`). False: the client was closed."""
        while not self._closed and (upto is None or self.last < upto):
            page = await streams.db(self._events_after)(self.last, upto, self.page_size)
            for event in page:
                if not await self._push_live(encode(event), event["seq"]):
                    return False
            if len(page) < self.page_size:
                break
        return not self._closed

    def take_now(self, hints: list[live.Hint]) -> list[live.Hint]:
        """The next seqs in order go out at once, in one socket write when nothing waits in
        the outbox; a gap (backfill), a full outbox (possible overflow) or a replay in
        progress leaves the rest to the pump. Live frames go out where they stand."""
        if self._closed or self._lock.locked():
            return hints
        ready: list[live.Hint] = []
        rest: list[live.Hint] = []
        last = self.last
        for i, (seq, text) in enumerate(hints):
            if seq == live.LIVE_KEY:
                ready.append((seq, text))
                continue
            if seq <= last:
                continue  # replayed or backfilled already
            if seq != last + 1:
                rest = hints[i:]
                break
            ready.append((seq, text))
            last = seq
        if not ready:
            return rest
        if not self._outbox and not self._stalled and self._write_now(_keyed(ready)):
            self.last = last
            return rest
        for i, (seq, text) in enumerate(ready):
            if seq == live.LIVE_KEY:
                self._push_frame(text)
                continue
            if self._full():
                return ready[i:] + rest
            self._push_text(text, seq)
            self.last = seq
        return rest

    async def on_hints(self, hints: list[live.Hint]) -> None:
        for seq, text in hints:
            if self._closed:
                return
            if seq == live.LIVE_KEY:
                self._push_frame(text)
                continue
            if seq <= self.last:
                continue  # replayed or backfilled already
            if seq > self.last + 1:
                if not await self.backfill(seq - 1):
                    return
                if seq <= self.last:
                    continue
                if seq > self.last + 1:
                    log.warning("run %s: events %s..%s missing", self.run_hex, self.last, seq)
            if not await self._push_live(text, seq):
                return

    async def resync(self) -> None:
        last_seq = await streams.db(self._last_seq)()
        if last_seq is not None and last_seq > self.last:
            await self.backfill(last_seq)
