"""The dispatcher: moves queued runs to the django-q2 queue fairly across tenants.

Fair share: each free slot goes to the tenant with the fewest runs in flight, then to the one
served longest ago (round robin among equals), each tenant capped by `max_concurrent_runs` (a
guarded UPDATE in tenants/limits/). Within a tenant the run that goes is the highest priority,
then the oldest, among runs whose graph has a free slot (a spec's
`limits.max_concurrent_runs`, another guarded UPDATE): a graph at its cap holds back its own
runs only, never the tenant's other graphs.
The whole cluster is capped too: runs wait here, in the database, rather than in the broker's
FIFO queue, where one tenant's backlog would sit in front of everyone else's runs. The cap is
`DISPATCH_CAPACITY` when set, else the workers of every qcluster seen lately on any machine
(runs/workers.py registers them), else this process's `Q_CLUSTER["workers"]`. Dispatchers on
every machine pass one gate (tenants/cluster.py `enter_dispatch_gate`) in the transaction that
takes a slot, so the cap holds however many of them race.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Now
from django.utils import timezone
from django_q.brokers import Broker, get_broker
from django_q.tasks import async_task

from runs.models import Run
from runs.sql import fetch_all, guarded_update, pipelined, send, send_all
from runs.status import ACTIVE, RunStatus
from tenants import cluster, limits
from tenants.models import GraphLimit, Tenant

log = logging.getLogger(__name__)


# How many tenants one dispatch looks at; past the first, only when a slot race was lost.
CANDIDATES = 4


def configured_capacity() -> int | None:
    conf: dict[str, Any] = settings.RUNYARD
    return int(conf["DISPATCH_CAPACITY"]) if conf.get("DISPATCH_CAPACITY") else None


def fallback_capacity() -> int:
    """This process's worker count: the capacity while no qcluster has registered."""
    return int(settings.Q_CLUSTER["workers"])


def capacity() -> int:
    """Runs that may be in flight cluster-wide (what the gate compares with)."""
    return configured_capacity() or cluster.registered_workers() or fallback_capacity()


def in_flight() -> int:
    """Runs holding a concurrency slot, cluster-wide (the tenants' counters, kept exactly in
    step with the runs' `holds_slot` flags)."""
    return limits.running_total()


def dispatchable() -> QuerySet[Run]:
    """Queued, not yet dispatched, past its `not_before` (a resurrection's cooldown), and not
    behind an older active run of the same thread."""
    older_on_thread = Run.objects.filter(
        thread_id=OuterRef("thread_id"), status__in=ACTIVE, id__lt=OuterRef("id")
    )
    # Child runs (subgraphs) are never dispatched: their parent's worker runs them inline,
    # inside the slot the root holds (runs/services/subgraphs.py).
    # `not_before` is a filter on the run_dispatch_queue seek, not an index of its own: only
    # runs cooling down have one, and those are few and short-lived. The database's clock
    # (Now()), not a parameter: candidates() is compiled once per process (runs/sql.py).
    return (
        Run.objects.filter(status=RunStatus.QUEUED, dispatched_at__isnull=True, root__isnull=True)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=Now()))
        .filter(Q(thread__isnull=True) | ~Exists(older_on_thread))
    )


def candidates() -> QuerySet:
    """(tenant id, its next run) in fair order: fewest runs in flight first, then the tenant
    served longest ago (round robin among equals). A tenant's next run is its highest-priority,
    then oldest, dispatchable run whose graph has a free slot.

    Per tenant, one seek into the partial index run_dispatch_queue (queued, undispatched root
    runs by (tenant, -priority, id)): its first entry is the one to go, and the thread and
    graph checks behind it are seeks in run_thread_status and the graph limits' primary key.
    Its cost follows the tenants and their queues, never the runs stored
    (tests/runs/test_query_plans.py); a tenant whose queue starts with many runs of a graph at
    its cap makes the seek step over them."""
    graph_full = Q(graph_limit__max_concurrent_runs__isnull=False) & Q(
        graph_limit__running_count__gte=F("graph_limit__max_concurrent_runs")
    )
    next_up = (
        dispatchable()
        .filter(tenant_id=OuterRef("pk"))
        .exclude(graph_full)
        .order_by("-priority", "id")
        .values("id")[:1]
    )
    return (
        Tenant.objects.filter(running_count__lt=F("max_concurrent_runs"))
        .annotate(next_run=Subquery(next_up))
        .filter(next_run__isnull=False)
        .order_by("running_count", F("last_dispatched_at").asc(nulls_first=True), "id")
        .values_list("id", "next_run")[:CANDIDATES]
    )


# What `_dispatch_next` returns when, not waiting, it found another dispatcher in the gate.
BUSY = -1


def dispatch_once(*, max_runs: int | None = None, wait: bool = True) -> int:
    """One dispatcher pass. Returns how many runs it handed to the queue. With `wait=False`
    it gives up when another dispatcher holds the gate (see `dispatch_on_commit`)."""
    if not owed():
        return 0
    dispatched = 0
    while max_runs is None or dispatched < max_runs:
        if _dispatch_next(to_broker=True, wait=wait) in (None, BUSY):
            break
        dispatched += 1
    return dispatched


def owed() -> bool:
    """Whether some tenant with a free slot has a dispatchable run: the candidate query alone,
    read outside any transaction. A dispatcher that finds none skips the gate's write
    transaction (on SQLite, a synced commit) for nothing; a run that becomes dispatchable
    after this read is dispatched by whoever made it so (its creation, a requeue, a worker
    freeing a slot) or by the scheduler's next tick."""
    return bool(fetch_all(candidates))


def send_dispatch_in_transaction() -> Callable[[], Callable[[], None]]:
    """Dispatch the next run owed a slot in the caller's transaction (a run's creation), so
    one commit both queues a run and hands one out: `POST /runs` then costs one transaction,
    not two, and a run created on an idle system is on the broker when its creation commits.
    The fair order and caps are `dispatch_once`'s (the run handed out may be another
    tenant's). When another dispatcher holds the gate, it dispatches after the commit
    instead (`dispatch_on_commit`), never waiting for the gate while the caller's locks are
    held.

    In three calls, so that on PostgreSQL each step shares a round trip with the caller's
    statements: this one sends the dispatcher's reads (with what the caller sent before, a
    creation's INSERT); the function it returns reads them and sends the slot's UPDATE; the
    function that one returns, called after the caller's `pipelined` block ends (whose end
    brings the UPDATE's result with the caller's last statements), settles it."""
    send_take = _send_dispatch(to_broker=True, wait=False)

    def take() -> Callable[[], None]:
        _, settle = send_take()

        def finish() -> None:
            if settle() == BUSY:
                dispatch_on_commit()

        return finish

    return take


def send_dispatch_here() -> tuple[int | None, Callable[[], int | None]]:
    """Dispatch the next run owed a slot to the calling worker, not to the broker (a worker
    that has just finished a segment takes it on in the same queue task), in the caller's
    transaction; same fair order and caps as `dispatch_once`. In two calls, so that on
    PostgreSQL the slot's UPDATE shares a round trip with what the caller sends next (the
    claim's read of that run): this one reads the dispatcher's reads and sends the first
    candidate's slot UPDATE, returning that candidate (None: nothing to take) and the function
    that settles it, returning the run handed to the caller (another candidate when the first
    was lost to a race), or None."""
    first, settle = _send_dispatch(to_broker=False, wait=True)()

    def settled() -> int | None:
        run_pk = settle()
        return None if run_pk == BUSY else run_pk

    return first, settled


def _dispatch_next(*, to_broker: bool, wait: bool = True) -> int | None:
    """Take one slot, in the caller's transaction when there is one (a claim, a creation),
    else in its own; BUSY when not waiting and the gate is taken. The capacity check and the
    slot it allows are one step under the gate: checked apart, four dispatchers each saw room
    for 8 and put 20 runs in flight together. No savepoint: an error here fails the caller's
    transaction, which its retry starts over."""
    with transaction.atomic(savepoint=False):
        return _send_dispatch(to_broker=to_broker, wait=wait)()[1]()


def _send_dispatch(
    *, to_broker: bool, wait: bool
) -> Callable[[], tuple[int | None, Callable[[], int | None]]]:
    """`_dispatch_next`'s reads sent (in the caller's transaction). The returned function reads
    them and sends the first candidate's slot UPDATE, returning that candidate (None when
    none) and the function that reads the UPDATE and settles it (a lost race tries the next
    candidates), returning the run handed out. On PostgreSQL the gate, the room and the
    candidates are one round trip (read after the gate is held: the server runs them in
    order); on a full cluster the candidates read is wasted, which costs less than a round
    trip of its own."""
    with pipelined():
        read_room = cluster.send_dispatch_gate(
            capacity=configured_capacity(), fallback=fallback_capacity(), wait=wait
        )
        read_candidates = send_all(candidates)

    def send_take() -> tuple[int | None, Callable[[], int | None]]:
        room = read_room()
        found = read_candidates()
        if room is None:
            return None, lambda: BUSY
        if room <= 0 or not found:
            return None, lambda: None
        now = timezone.now()
        (tenant_id, run_pk), others = found[0], found[1:]
        took = _send_take(tenant_id, run_pk, now)

        def settle() -> int | None:
            if _settle_slot(tenant_id, run_pk, now, took()):
                return _handed_out(run_pk, to_broker)
            for other_tenant, other_run in others:
                if _take_slot(other_tenant, other_run):
                    return _handed_out(other_run, to_broker)
            return None

        return run_pk, settle

    return send_take


def _handed_out(run_pk: int, to_broker: bool) -> int:
    if to_broker:
        transaction.on_commit(partial(enqueue_run, run_pk))
    return run_pk


def _take_slot(tenant_id: int, run_pk: int) -> bool:
    """The tenant's slot, the run, then the run's graph's slot: each a guarded UPDATE, each
    undone when a later one finds it lost the race. The run's UPDATE says which graph limit
    it counts against (no read of its own). On PostgreSQL the three are one statement
    (`_send_take`); only a lost race costs more."""
    now = timezone.now()
    return _settle_slot(tenant_id, run_pk, now, _send_take(tenant_id, run_pk, now)())


def _settle_slot(tenant_id: int, run_pk: int, now: dt.datetime, took: Took) -> bool:
    """Whether the run got its slots; undoes a slot taken for a run that did not."""
    tenant_slot, marked, limit_id, graph_slot = took
    if not tenant_slot:
        return False
    if not marked:  # someone else dispatched or cancelled it meanwhile
        limits.release_run_slot(tenant_id)
        return False
    if limit_id is not None and not graph_slot:
        guarded_update(
            Run,
            run_pk,
            where={"dispatched_at": now, "holds_slot": True},
            sets={"dispatched_at": None, "holds_slot": False},
        )
        limits.release_run_slot(tenant_id)
        return False
    return True


def _send_take(tenant_id: int, run_pk: int, now: dt.datetime) -> Callable[[], Took]:
    """The slots' UPDATEs sent (PostgreSQL: `_take_sql`, one statement, its result read by the
    returned function) or made (SQLite: `_take_in_turn`)."""
    if connection.vendor != "postgresql":
        took = _take_in_turn(tenant_id, run_pk, now)
        return lambda: took
    rows = send(_take_sql(), [now, tenant_id, now, run_pk], prepared=True)

    def read() -> Took:
        ((tenant_slot, marked, limit_id, graph_slot),) = rows()
        return bool(tenant_slot), bool(marked), limit_id, bool(graph_slot)

    return read


# What taking a slot found: (tenant slot taken, run marked, its graph limit, graph slot taken).
Took = tuple[bool, bool, int | None, bool]

_UNDISPATCHED = {"status": RunStatus.QUEUED, "dispatched_at": None, "holds_slot": False}


def _take_in_turn(tenant_id: int, run_pk: int, now: dt.datetime) -> Took:
    if not limits.acquire_run_slot(tenant_id, dispatched_at=now):
        return False, False, None, False
    marked = guarded_update(
        Run,
        run_pk,
        where=_UNDISPATCHED,
        sets={"dispatched_at": now, "holds_slot": True},
        returning=("graph_limit_id",),
    )
    if marked is None:
        return True, False, None, False
    (limit_id,) = marked
    return True, True, limit_id, limit_id is None or limits.acquire_graph_slot(limit_id)


@functools.cache
def _take_sql() -> str:
    """`_take_in_turn`'s three guarded UPDATEs as one statement: data-modifying CTEs, each
    running only on the one before it (a run is marked only with its tenant's slot taken, a
    graph slot taken only for a run marked), which also fixes the order rows are locked in:
    tenant, run, graph, as `_take_in_turn` does. The guards are tenants/limits/'s own:
    `acquire_run_slot` and `acquire_graph_slot`."""
    q = connection.ops.quote_name
    tenant, run, graph = (q(m._meta.db_table) for m in (Tenant, Run, GraphLimit))
    count, cap = q("running_count"), q("max_concurrent_runs")
    return (
        f"WITH t AS (UPDATE {tenant} SET {count} = {count} + 1, "  # noqa: S608 - names from model meta
        f"{q('last_dispatched_at')} = %s WHERE {q('id')} = %s AND {count} < {cap} "
        "RETURNING 1), "
        f"r AS (UPDATE {run} SET {q('dispatched_at')} = %s, {q('holds_slot')} = true "
        f"WHERE {q('id')} = %s AND {q('status')} = '{RunStatus.QUEUED.value}' "
        f"AND {q('dispatched_at')} IS NULL AND NOT {q('holds_slot')} "
        f"AND EXISTS (SELECT 1 FROM t) RETURNING {q('graph_limit_id')}), "
        f"g AS (UPDATE {graph} SET {count} = {count} + 1 "
        f"WHERE {q('id')} = (SELECT {q('graph_limit_id')} FROM r) "
        f"AND ({cap} IS NULL OR {count} < {cap}) RETURNING 1) "
        "SELECT EXISTS (SELECT 1 FROM t), EXISTS (SELECT 1 FROM r), "
        f"(SELECT {q('graph_limit_id')} FROM r), EXISTS (SELECT 1 FROM g)"
    )


@functools.cache
def broker() -> Broker:
    """This process's django-q2 broker. Left to itself, `async_task` builds a new one per call:
    with Redis a new connection pool, so every enqueue opened a TCP connection (1.2 ms against
    0.17 ms on one kept). redis-py's pool starts afresh in a forked worker."""
    return get_broker()


def enqueue_run(run_pk: int) -> None:
    """Queue a segment of the run. A successful task is not saved in django-q2's result table
    (`save=False`): the run's row and events are its record, and with `save_limit` django-q2's
    monitor reads every saved success (up to the limit, 1000) to prune one, for each task it
    saves: 40% of a qcluster's CPU in a burst of one-node runs. A failed task is still saved."""
    async_task(
        "runs.tasks.execute_run",
        run_pk,
        task_name=f"run-{run_pk}",
        group="runs",
        hook=None,
        save=False,
        broker=broker(),
    )


def dispatch_on_commit() -> None:
    """Dispatch as soon as the current transaction commits (or now, outside one).

    Its callers have just made one run dispatchable (created, requeued, handed back), so this
    dispatches one run at most, and not at all while another dispatcher holds the gate:
    under a burst every worker finishing a segment and every `POST /runs` would otherwise
    queue on the gate's row lock one after another. A run skipped that way is taken by the
    next dispatch (a worker finishing its segment takes queued runs itself; the scheduler
    ticks every 0.5 s); on an idle system the gate is free and the run goes at once."""
    transaction.on_commit(_dispatch_safely)


def _dispatch_safely() -> None:
    try:
        dispatch_once(max_runs=1, wait=False)
    except Exception:  # noqa: BLE001 - the scheduler's next tick dispatches anyway
        log.warning("dispatch after commit failed", exc_info=True)
