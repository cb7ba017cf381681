"""Live frames: what viewers see while a step runs, before the step's events are stored.

`llm.delta` and `branch.*` are shown as they happen and stored when the step commits (so
replay has them; DESIGN §4). The live copy takes no `seq` (that stays gap-free per run) and
writes no Event row. On the wire (runs/consumers/base.py documents the protocol):

    {"type": "live", "run": "<run hex>", "event": "llm.delta", "data": {...}, "ts": "<iso>"}

`ts` is when the worker published it. A client that reconnects gets the stored copies (with
`seq`) and replaces what it showed live by them.

`publish_live` is called from the node's thread and only appends to a bounded per-process
buffer; one sender thread per process takes everything buffered and sends it as one message per
run group. A busy stream so coalesces by itself, and a quiet one goes out at once:
- REDIS_URL set: through the committed events' publisher (runs/events.py, one PUBLISH per group
  with the pub/sub layer) as `{"type": "run.live", "frames": [...]}`; the relay in each daphne
  (runs/relay.py) hands them to the group's viewers.
- Embedded default: the in-memory layer does not cross processes, so frames become `LiveFrame`
  rows (one INSERT per batch) that each daphne's poller tails by id (runs/live.py). Rows are
  pruned after FRAME_TTL_SECONDS. On SQLite the sender waits briefly for the write lock, then
  drops the batch rather than queue behind step commits: live frames are best-effort, the
  stored copies are not.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import threading
import time
from typing import Any, Literal, TypedDict

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from runs.events import _publisher, run_group
from runs.models import LiveFrame
from runs.perprocess import PerProcess
from runs.sql import insert_rows

log = logging.getLogger(__name__)

LIVE_MESSAGE_TYPE = "run.live"
# Frames waiting in one process past this are dropped (Redis or the database is not keeping up).
MAX_PENDING = 10_000
FRAME_TTL_SECONDS = 30.0
PRUNE_SECONDS = 10.0
# How long the embedded sender waits for SQLite's write lock before dropping a batch.
SQLITE_BUSY_MS = 200
TAIL_BATCH = 500
INSERT_CHUNK = 100
IDLE_CLOSE_SECONDS = 1.0


class LiveWire(TypedDict):
    """What websocket viewers of a run receive for one live frame (no seq)."""

    type: Literal["live"]
    run: str
    event: str
    data: dict[str, Any]
    ts: str


def live_frame(run_hex: str, event: str, data: dict[str, Any]) -> LiveWire:
    return {"type": "live", "run": run_hex, "event": event, "data": data, "ts": _now_iso()}


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class _Sender:
    """One thread per process sending the buffered frames, one batch per wake-up."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: collections.deque[tuple[str, LiveWire]] = collections.deque()
        self._thread: threading.Thread | None = None
        self._pruned = 0.0
        self._busy = False  # a batch is being sent
        self.dropped = 0
        self.sent = 0

    def submit(self, group: str, frame: LiveWire) -> None:
        with self._cond:
            if len(self._pending) >= MAX_PENDING:
                self.dropped += 1
                return
            self._pending.append((group, frame))
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="live-frames", daemon=True)
                self._thread.start()
            self._cond.notify()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far was handed on (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.01))
        return True

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._busy = False
                    self._cond.notify_all()
                    if not self._cond.wait(IDLE_CLOSE_SECONDS) and not self._pending:
                        connection.close()  # idle: hold no database session
                batch = list(self._pending)
                self._pending.clear()
                self._busy = True
            try:
                self._send(batch)
                self.sent += len(batch)
            except Exception:  # noqa: BLE001 - best-effort: the step stores these events
                self.dropped += len(batch)
                log.warning("live frames dropped (%s)", len(batch), exc_info=True)
                if not settings.REDIS_URL:
                    connection.close()

    def _send(self, batch: list[tuple[str, LiveWire]]) -> None:
        groups: dict[str, list[LiveWire]] = {}
        for group, frame in batch:
            groups.setdefault(group, []).append(frame)
        if settings.REDIS_URL:
            _publisher().submit(
                [
                    (group, {"type": LIVE_MESSAGE_TYPE, "frames": frames})
                    for group, frames in groups.items()
                ]
            )
            return
        now = timezone.now()
        rows = [
            {"group": group, "payload": json.dumps(frame, separators=(",", ":")), "created_at": now}
            for group, frame in batch
        ]
        try:
            _insert_unsynced(rows)
        except OperationalError:
            self.dropped += len(rows)
            log.info("live frames dropped: the database was busy")
            return
        if time.monotonic() - self._pruned > PRUNE_SECONDS:
            self._pruned = time.monotonic()
            cutoff = now - dt.timedelta(seconds=FRAME_TTL_SECONDS)
            LiveFrame.objects.filter(created_at__lt=cutoff).delete()


def _insert_unsynced(rows: list[dict[str, Any]]) -> None:
    """INSERT best-effort rows without waiting for their own fsync. Each llm step's frames
    otherwise cost a second synced commit, which that step's own commit queues behind; the
    next synced commit (the step's) makes them durable with it, and a crash before that loses
    only frames, whose stored copies the step's events are.
    SQLite: synchronous=NORMAL on this thread's connection (in WAL mode the database stays
    consistent). PostgreSQL: `synchronous_commit` off for this transaction only (SET LOCAL:
    a connection handed back to a pool keeps the server's setting).
    The rows go in as one plain INSERT (runs/sql.py), not through the ORM's bulk_create: this
    thread's Python time is taken from the step's, whose thread waits for the GIL."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")
            cursor.execute("PRAGMA synchronous = NORMAL")
        _insert(rows)
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        _insert(rows)


def _insert(rows: list[dict[str, Any]]) -> None:
    # At most INSERT_CHUNK rows per statement: a statement's text is kept per row count.
    for start in range(0, len(rows), INSERT_CHUNK):
        insert_rows(LiveFrame, rows[start : start + INSERT_CHUNK], returning=False)


_senders: PerProcess[_Sender] = PerProcess(_Sender)  # a forked worker starts its own thread


def sender() -> _Sender:
    return _senders.get()


def publish_live(run_hex: str, event: str, data: dict[str, Any]) -> None:
    """Show `event` to the run's viewers now (cheap: a buffer append; never raises)."""
    sender().submit(run_group(run_hex), live_frame(run_hex, event, data))


def live_of(message: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The live frames a channel-layer message carries, or None if it is something else."""
    if message.get("type") == LIVE_MESSAGE_TYPE:
        frames: list[dict[str, Any]] = message.get("frames") or []
        return frames
    return None


class FrameTail:
    """The embedded poller's side of the LiveFrame table: the frames added since the last
    read. Frames are best-effort, so unlike the event tail no late-committed id is looked for
    again (each insert commits on its own, in id order within a process)."""

    def __init__(self) -> None:
        self.last_id: int | None = None

    def start(self) -> None:
        self.last_id = LiveFrame.objects.aggregate(last=Max("id"))["last"] or 0

    def fetch(self, limit: int = TAIL_BATCH) -> list[tuple[int, str, str]]:
        if self.last_id is None:
            self.start()
        rows = list(
            LiveFrame.objects.filter(id__gt=self.last_id)
            .order_by("id")
            .values_list("id", "group", "payload")[:limit]
        )
        if rows:
            self.last_id = rows[-1][0]
        return rows
