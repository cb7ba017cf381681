"""Deleting old finished runs in short transactions.

On SQLite a transaction holds the one write lock of the whole database from BEGIN (IMMEDIATE)
to COMMIT, so a single DELETE over a large history would hold up every worker's step commit and
lease renewal behind it until leases expire. Runs are deleted a batch at a time, each batch
bounded in runs and in rows and committed on its own: a writer waits for one batch at most.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Iterator
from functools import partial

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection, models, transaction

from runs.models import Artifact, Checkpoint, Control, Event, Run, Step
from runs.services.dbretry import retry_transient
from runs.status import TERMINAL

# What a run owns, dependents first (an artifact points at its step).
OWNED: tuple[type[models.Model], ...] = (Artifact, Event, Control, Checkpoint, Step)

# SQLite's lock is not fair: a waiting writer polls (every 100 ms once it has waited a while),
# so a pruner that begins its next batch right after a commit can take the lock again and
# again while a worker's lease renewal keeps missing it. A pause longer than one poll between
# batches lets every waiting writer in.
SQLITE_PAUSE_SECONDS = 0.15


def old_roots(finished_before: dt.datetime) -> models.QuerySet[Run]:
    return Run.objects.filter(
        status__in=TERMINAL, finished_at__lt=finished_before, parent__isnull=True
    )


def prune_runs(
    *,
    finished_before: dt.datetime,
    batch_runs: int | None = None,
    batch_rows: int | None = None,
) -> int:
    """Delete the finished root runs that finished before `finished_before`, with their
    descendants and all they own (steps, checkpoints, events, controls, artifacts and their
    files). Returns how many root runs were deleted.

    A batch holds at most `batch_runs` root runs and about `batch_rows` rows (one run bigger
    than that goes alone); each is one transaction that checks its runs again under the write
    lock, so a run requeued meanwhile is kept whole. Files go after their rows' commit: a
    crash in between leaves a stray file, never a row without its file.
    """
    max_runs = batch_runs or int(settings.RUNYARD["PRUNE_BATCH_RUNS"])
    max_rows = batch_rows or int(settings.RUNYARD["PRUNE_BATCH_ROWS"])
    deleted, after = 0, 0
    while True:
        page = list(
            old_roots(finished_before)
            .filter(pk__gt=after)
            .order_by("pk")
            .values_list("pk", "steps", "last_seq")[:max_runs]
        )
        if not page:
            return deleted
        after = page[-1][0]
        for roots in batches(page, max_rows):
            deleted += retry_transient(partial(delete_trees, roots, finished_before))
            if connection.vendor == "sqlite":
                time.sleep(SQLITE_PAUSE_SECONDS)


def batches(page: list[tuple[int, int, int]], max_rows: int) -> Iterator[list[int]]:
    """Root ids in groups of about `max_rows` rows, estimated from each root's step and event
    counts (descendants are few: max_child_runs bounds them)."""
    batch: list[int] = []
    rows = 0
    for pk, steps, events in page:
        size = 1 + 2 * steps + events  # the run, a step and a checkpoint per step, its events
        if batch and rows + size > max_rows:
            yield batch
            batch, rows = [], 0
        batch.append(pk)
        rows += size
    if batch:
        yield batch


def with_descendants(roots: Iterable[int]) -> list[int]:
    tree = list(roots)
    frontier = tree
    while frontier:
        frontier = list(Run.objects.filter(parent_id__in=frontier).values_list("pk", flat=True))
        tree += frontier
    return tree


def referrers(on_delete: object) -> list[tuple[str, str]]:
    """(table, column) of other apps' foreign keys to runs with this `on_delete` (a schedule's
    fire points at the run it started): the plain DELETEs below honour them as the ORM would,
    and the database's foreign keys would refuse the DELETE otherwise."""
    return [
        (rel.related_model._meta.db_table, str(rel.field.column))
        for rel in Run._meta.get_fields(include_hidden=True)  # related_name="+" too
        if isinstance(rel, models.ForeignObjectRel)
        and rel.related_model is not Run
        and rel.related_model not in OWNED
        and rel.on_delete is on_delete
    ]


@transaction.atomic
def delete_trees(roots: list[int], finished_before: dt.datetime) -> int:
    """One batch: the roots still old and finished, their descendants and what they own."""
    still = list(
        old_roots(finished_before)
        .select_for_update()
        .filter(pk__in=roots)
        .values_list("pk", flat=True)
    )
    if not still:
        return 0
    tree = with_descendants(still)
    files = [
        name
        for name in Artifact.objects.filter(run_id__in=tree).values_list("file", flat=True)
        if name
    ]
    # Plain DELETEs: the ORM's cascade would load every step and checkpoint into memory first.
    qn = connection.ops.quote_name
    marks = ", ".join(["%s"] * len(tree))
    tables = [(m._meta.db_table, "run_id") for m in OWNED] + [(Run._meta.db_table, "id")]
    with connection.cursor() as cursor:
        for table, column in referrers(models.SET_NULL):
            sql = f"UPDATE {qn(table)} SET {qn(column)} = NULL WHERE {qn(column)} IN ({marks})"  # noqa: S608
            cursor.execute(sql, tree)
        tables[:0] = referrers(models.CASCADE)
        for table, column in tables:
            sql = f"DELETE FROM {qn(table)} WHERE {qn(column)} IN ({marks})"  # noqa: S608
            cursor.execute(sql, tree)
    transaction.on_commit(partial(delete_files, files))
    return len(still)


def delete_files(names: list[str]) -> None:
    for name in names:
        default_storage.delete(name)
