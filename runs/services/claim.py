"""Claiming a run for this worker: the guarded UPDATE that bumps `epoch` and takes the lease.

`claim_run` takes a run the dispatcher handed out; `claim_next` dispatches and claims in one
transaction. The first claim of a run builds its initial state and checkpoint 0.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from config.queries import fetch_models, send_models
from observability import hooks as observe
from runs import checkpoints
from runs.draining import draining
from runs.engine import (
    apply_update,
    initial_state,
)
from runs.events import publish_on_commit
from runs.guarded_writes import Decrement, send_update_then_insert
from runs.models import Checkpoint, Event, Run
from runs.services.dbretry import retry_transient
from runs.services.graphs import spec_for
from runs.services.lifecycle import release_run_slot
from runs.sql import NOT_NULL, guarded_update, pipelined
from runs.status import RunStatus
from tenants.models import Tenant

log = logging.getLogger(__name__)


def conf(name: str) -> float:
    return float(settings.RUNYARD[name])


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def claim_run(run_pk: int, *, worker: str | None = None) -> Run | None:
    """Take a dispatched run: a read, then one guarded write; None when someone else has it."""
    worker = worker or worker_id()

    # No transaction around it: the read needs none (the write is fenced by what it read), and
    # the write commits by itself, so on PostgreSQL a claim is two round trips.
    run = retry_transient(lambda: _claim(run_pk, worker))
    if run is not None:
        observe.run_claimed(run)
    return run


def claim_next(*, worker: str | None = None) -> Run | None:
    """Dispatch the next run owed a slot to this worker and claim it, in one transaction;
    None when nothing is owed (or the cluster is at capacity)."""
    from runs.dispatch import owed, send_dispatch_here

    if draining():  # this worker is stopping: the run is another worker's to take
        return None
    if not owed():
        return None
    worker = worker or worker_id()

    # On PostgreSQL, after the BEGIN: the dispatcher's reads; the slot's UPDATE with the claim's
    # read of that run; the claim's write with the pipeline's closing Sync; the COMMIT.
    def claim() -> Run | None:
        with transaction.atomic():
            with pipelined():
                first, settle = send_dispatch_here()
                if first is None:
                    return None
                read_first = send_models(_claimable, first)
                run_pk = settle()
                found = read_first()  # read (and its cursor closed) whatever settle found
                if run_pk is None:
                    return None
                if run_pk != first:  # the first was lost to a race, another one taken
                    found = fetch_models(_claimable, run_pk)
                if not found:
                    return None
                written = _send_claim(found[0], worker)
            return written()  # its result came with the pipeline's end

    run = retry_transient(claim)
    if run is not None:
        observe.run_claimed(run)
    return run


def hand_back_dispatch(run_pk: int) -> str:
    """A stopping worker was handed a run (its task was already in this cluster's queue): give
    back the run's slot and dispatch it again at once, to a worker that is not stopping."""
    from runs.dispatch import dispatch_on_commit

    def release() -> str:
        with transaction.atomic():
            undispatched = guarded_update(
                Run,
                run_pk,
                where={"status": RunStatus.QUEUED, "dispatched_at": NOT_NULL},
                sets={"dispatched_at": None},
            )
            if not undispatched:
                return "not_claimed"
            release_run_slot(Run.objects.get(pk=run_pk))
            dispatch_on_commit()
        return "handed_back"

    return retry_transient(release)


def _claim(run_pk: int, worker: str) -> Run | None:
    """The guarded claim: on its own (committing itself), or in the caller's transaction.

    The run is read first (no lock), then claimed by one guarded write (runs/guarded_writes.py)
    fenced by what was read: still queued and dispatched, at the epoch read (a claim bumps it,
    so a run claimed and requeued meanwhile is not claimed on stale data), and holding the
    queue slot it held (the same write gives it back). On a first claim the write also sets
    the initial state, built from the read, and inserts checkpoint 0; its `run.started` event
    is numbered by `last_seq`. On PostgreSQL that write is one statement: a claim outside a
    transaction is two round trips, the read and the write with its commit."""
    found = fetch_models(_claimable, run_pk)
    if not found:
        return None
    return _send_claim(found[0], worker)()


def _send_claim(run: Run, worker: str) -> Callable[[], Run | None]:
    """`_claim`'s guarded write of the run it read, sent; the returned function reads its
    result and returns the claimed run, or None when the fence did not match."""
    now = timezone.now()
    sets: dict[str, Any] = {
        "status": RunStatus.RUNNING,
        "lease_owner": worker,
        "lease_expires_at": now + dt.timedelta(seconds=conf("LEASE_SECONDS")),
        "heartbeat_at": now,
        "holds_queue_slot": False,
    }
    first = run.started_at is None
    if first:
        sets.update(_first_claim(run, now))
    started = {"claim": run.claims + 1, "worker": worker}
    event = {
        "run": run.pk,
        "tenant": run.tenant_id,
        "type": "run.started",
        "data": started,
        "created_at": now,
    }
    written = send_update_then_insert(
        Run,
        run.pk,
        where={
            "status": RunStatus.QUEUED,
            "dispatched_at": NOT_NULL,
            "epoch": run.epoch,
            "holds_queue_slot": run.holds_queue_slot,
        },
        sets=sets,
        increments={"epoch": 1, "claims": 1},
        counter="last_seq",
        numbered=(Event, [event], "seq"),
        inserts=[(Checkpoint, [_first_checkpoint(run, sets, now)])] if first else [],
        # a started run no longer counts as queued
        decrements=[Decrement(Tenant, run.tenant_id, "queued_count")]
        if run.holds_queue_slot
        else [],
    )

    def claimed() -> Run | None:
        numbered = written()
        if numbered is None:
            return None
        for key, value in sets.items():
            setattr(run, key, value)
        ((event_pk, last_seq),) = numbered
        run.epoch, run.claims, run.last_seq = run.epoch + 1, run.claims + 1, last_seq
        if first:
            checkpoints.started(run)  # checkpoint 0, full: the run's deltas replay from it
        publish_on_commit(run, [(event_pk, last_seq, "run.started", started)], now)
        return run

    return claimed


def _claimable(run_pk: int) -> QuerySet[Run]:
    """The run to claim, with what a segment reads of its tenant, graph and thread. Not the
    graph's spec: a worker parses each version once (`spec_for`, by its hash) and loads the
    spec only then, instead of fetching and decoding the whole JSON on every claim."""
    return (
        Run.objects.select_related("tenant", "graph", "thread")
        .defer("graph__spec")
        .filter(pk=run_pk, status=RunStatus.QUEUED, dispatched_at__isnull=False)[:1]
    )


def _first_claim(run: Run, now: dt.datetime) -> dict[str, Any]:
    """Initial state is built when the run starts, so an enqueued run on a thread sees the
    state its predecessor left."""
    spec = spec_for(run.graph)
    thread_state = dict(run.thread.state) if run.thread else {}
    if run.position:  # a fork: the checkpoint's state, with this run's input merged in
        state = apply_update(spec, run.state, run.input)
        position = run.position
    else:
        state = apply_update(spec, {**initial_state(spec, {}), **thread_state}, run.input)
        position = {"node": spec.start, "step": 0, "visits": {}}
    return {
        "state": state,
        "position": position,
        "started_at": now,
        "thread_state_before": thread_state if run.thread else None,
    }


def _first_checkpoint(run: Run, sets: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    return {
        "public_id": uuid.uuid4(),
        "run": run.pk,
        "thread": run.thread_id,
        "step_index": 0,
        "state": sets["state"],
        "position": sets["position"],
        "created_at": now,
    }
