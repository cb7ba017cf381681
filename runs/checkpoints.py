"""Compact checkpoints: how they are stored, and the one place their states are read back.

A checkpoint is stored full (`state`) or as a delta: the raw updates its step wrote
(`updates`, the engine's `StepResult.updates`, before reducers) and `base_step`, the full
snapshot of the same run it replays from. Reading a delta replays, in step order, every
checkpoint of the run after its base up to it through the graph's reducers (`apply_update`);
reducers are deterministic, so the replay gives exactly the state the step had. A run's
reducers are its own graph version's (`run.graph` is pinned for the run's life), and a chain
never crosses runs: every run's first checkpoint is full.

Writers (runs/services/steps.py) store a full snapshot when:
- it is the run's first checkpoint, or RUNYARD["CHECKPOINT_SNAPSHOT_EVERY"] (N) steps have
  passed since the base: a read replays fewer than N deltas;
- the state before the step is not the state of the run's last checkpoint (guidance added to
  it, a resurrection restored an older one, a segment resumed from a changed run state);
- the step's state is not "state before + its updates" (a step failed on `max_state_bytes`
  keeps the state from before it).
Within a segment the check is an identity test on the state object (states are copy-on-write);
a resumed segment compares once with its run's last checkpoint (`chain_for`).

Compaction (`compact_run`, the `compact_checkpoints` command) rewrites a finished run's rows to
the same layout: a full every N steps, deltas between. A full snapshot made redundant (rows
written before deltas existed, a segment's or a failure's snapshot) becomes a key-level patch
(`{"set", "unset"}`), a chain longer than the setting allows gets a full in it. It drops no
checkpoint and changes no state: each rewritten row is replayed and compared before it is saved.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery

from runs.engine import apply_update
from runs.models import Checkpoint, Run
from runs.services.graphs import spec_for
from runs.status import TERMINAL

#: Where `write_steps` keeps a run's chain between batches of one segment (in `run.__dict__`,
#: which the step commit restores when its transaction rolls back).
CHAIN = "_checkpoint_chain"


def snapshot_every() -> int:
    return max(1, int(settings.RUNYARD["CHECKPOINT_SNAPSHOT_EVERY"]))


@dataclass(frozen=True, slots=True)
class Chain:
    """A run's last checkpoint as this process wrote or verified it: its full snapshot's step
    (`base`), its own step, and the very state object it holds (None: unknown, so the next
    checkpoint is full)."""

    base: int
    last: int
    state: dict[str, Any] | None


def chain_for(run: Run, state: dict[str, Any]) -> Chain:
    """The run's chain for a batch whose first step started from `state`: kept in memory for
    the segment, or (a resumed segment) read once: the last checkpoint, compared with `state`."""
    chain = run.__dict__.get(CHAIN)
    if chain is not None:
        return chain
    last = _last(run)
    if last is None:
        return Chain(-1, -1, None)
    last.run = run  # its graph's reducers, without a query
    return _chain_to(last, state if _same(state_at(last), state) else None)


def _last(run: Run) -> Checkpoint | None:
    """The run's last checkpoint, as stored (by the (run, step_index) index)."""
    return Checkpoint.stored.filter(run_id=run.pk).order_by("-step_index").first()


def _chain_to(last: Checkpoint, state: dict[str, Any] | None) -> Chain:
    """The chain whose last checkpoint is `last`, holding `state` (None: unknown)."""
    base = last.step_index if last.base_step is None else last.base_step
    return Chain(base, last.step_index, state)


def started(run: Run, step_index: int = 0) -> None:
    """The run's first checkpoint (full, holding `run.state`) was just written."""
    run.__dict__[CHAIN] = Chain(step_index, step_index, run.state)


def row(
    chain: Chain,
    run: Run,
    *,
    index: int,
    prev_state: dict[str, Any],
    state: dict[str, Any],
    position: dict[str, Any],
    writes: list[dict[str, Any]] | None,
    now: Any,
    every: int,
) -> tuple[dict[str, Any], Chain]:
    """The INSERT row of the checkpoint of step `index`, and the chain after it. `writes`: the
    updates that turn `prev_state` into `state` (None: they do not, store it full)."""
    delta = (
        writes is not None
        and chain.state is not None
        and chain.state is prev_state
        and chain.last < index
        and index - chain.base < every
    )
    out = {
        "public_id": uuid.uuid4(),
        "run": run.pk,
        "thread": run.thread_id,
        "step_index": index,
        "state": None if delta else state,
        "base_step": chain.base if delta else None,
        "updates": [w for w in writes if w] if delta and writes is not None else None,
        "position": position,
        "created_at": now,
    }
    return out, Chain(chain.base if delta else index, index, state)


# --- reading -------------------------------------------------------------------------------------


def replay(spec: Any, state: dict[str, Any], updates: Any) -> dict[str, Any]:
    """One delta's state from the state of the checkpoint before it."""
    if isinstance(updates, dict):  # compaction's key-level patch
        new = {**state, **(updates.get("set") or {})}
        for key in updates.get("unset") or ():
            new.pop(key, None)
        return new
    for update in updates or ():
        state = apply_update(spec, state, update)
    return state


def state_at(checkpoint: Checkpoint) -> dict[str, Any]:
    """The state `checkpoint` holds, full or replayed (at most N-1 deltas)."""
    fill_states([checkpoint])
    assert checkpoint.state is not None
    return checkpoint.state


def fill_states(checkpoints: Iterable[Checkpoint]) -> list[Checkpoint]:
    """Set `state` on every delta of `checkpoints` (in place), replaying each run's chains
    once for the whole list: one query for the rows they need, one for their runs' graphs.
    Returns the checkpoints as a list."""
    given = list(checkpoints)
    cps = [cp for cp in given if "state" not in cp.get_deferred_fields()]
    wanted: dict[int, set[int]] = {}
    for cp in cps:
        if cp.state is None and cp.base_step is not None:
            wanted.setdefault(cp.run_id, set()).update(range(cp.base_step, cp.step_index))
    if not wanted:
        return given
    query = Q()
    for run_id, steps in wanted.items():
        query |= Q(run_id=run_id, step_index__in=sorted(steps))
    rows: dict[int, dict[int, Checkpoint]] = {}
    for r in Checkpoint.stored.filter(query).only(
        "id", "run_id", "step_index", "state", "base_step", "updates"
    ):
        rows.setdefault(r.run_id, {})[r.step_index] = r
    for cp in cps:
        if cp.state is None and cp.base_step is not None:
            rows.setdefault(cp.run_id, {})[cp.step_index] = cp
    specs = _specs(cps, wanted)
    for run_id, by_step in rows.items():
        spec = specs[run_id]
        state: dict[str, Any] | None = None
        for step in sorted(by_step):
            r = by_step[step]
            if r.base_step is None:
                state = r.state
            elif state is None:
                raise Checkpoint.DoesNotExist(
                    f"checkpoint {step} of run {run_id}: its base {r.base_step} is missing"
                )
            else:
                state = replay(spec, state, r.updates)
                r.state = state
    for cp in cps:
        if cp.state is None:
            cp.state = rows[cp.run_id][cp.step_index].state
    return given


# --- a run's current state -----------------------------------------------------------------------

#: Set on a Run object whose `state` in memory is current while its row's is behind (the
#: worker executing it): `current_state` reads no checkpoint for it, and its next status
#: change writes the state back (runs/services/lifecycle.py `transition`).
HELD = "_state_held"


def _behind(run: Run) -> bool:
    """Whether `run.state` here is older than its last checkpoint."""
    return run.state_behind and not run.__dict__.get(HELD)


def current_state(run: Run) -> dict[str, Any]:
    """The run's state now: `run.state`, or while its row says `state_behind` (its step
    commits wrote checkpoints, not the state), its last checkpoint's."""
    if not _behind(run):
        return run.state
    return current_states([run]).get(run.pk, run.state)


def current_states(runs: Iterable[Run]) -> dict[int, dict[str, Any]]:
    """`current_state` of each of `runs` whose row is behind, by pk: one query for their last
    checkpoints (each an index seek by (run, step_index)), one for the deltas to replay."""
    behind = {run.pk: run for run in runs if _behind(run)}
    if not behind:
        return {}
    last = list(Checkpoint.stored.filter(pk__in=_last_ids(behind)))
    for cp in last:
        run = behind[cp.run_id]
        if "graph" in run._state.fields_cache:
            cp.run = run  # its graph's reducers, without a query
    return {cp.run_id: cp.state for cp in fill_states(last)}


def _last_ids(run_pks: Iterable[int]) -> QuerySet[Any, Any]:
    """The id of each run's last checkpoint, as a subquery: per run, the last entry of the
    (run, step_index) index, not a scan of its checkpoints."""
    newest = Checkpoint.stored.filter(run_id=OuterRef("pk")).order_by("-step_index")
    return (
        Run.objects.filter(pk__in=list(run_pks))
        .annotate(last_checkpoint=Subquery(newest.values("pk")[:1]))
        .values("last_checkpoint")
    )


def catch_up(run: Run) -> None:
    """Before a worker executes `run`: while its row's state is behind, take its last
    checkpoint's state, and the chain from it (the next checkpoint may be a delta)."""
    if not _behind(run):
        return
    last = _last(run)
    if last is None:
        return
    last.run = run
    run.state = state_at(last)
    run.__dict__[CHAIN] = _chain_to(last, run.state)
    run.__dict__[HELD] = True


def _specs(cps: list[Checkpoint], wanted: dict[int, set[int]]) -> dict[int, Any]:
    runs = {cp.run_id: cp._state.fields_cache.get("run") for cp in cps}
    missing = [run_id for run_id in wanted if runs.get(run_id) is None]
    if missing:
        for run in Run.objects.filter(pk__in=missing).select_related("graph"):
            runs[run.pk] = run
    return {run_id: spec_for(runs[run_id].graph) for run_id in wanted}  # type: ignore[union-attr]


# --- compaction ----------------------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    """Equal as stored JSON (1, 1.0 and true are different values here)."""
    if a is b:
        return True
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def plan_run(layout: list[tuple[int, int | None]], every: int) -> bool:
    """Whether a run's rows `(step_index, base_step)` in step order differ from the compact
    layout (first full, then a full every `every` steps, deltas between)."""
    base = None
    for step, stored_base in layout:
        want_full = base is None or step - base >= every
        if want_full != (stored_base is None) or (not want_full and stored_base != base):
            return True
        if want_full:
            base = step
    return False


def _layout(run_pk: int) -> list[tuple[int, int | None]]:
    return list(
        Checkpoint.stored.filter(run_id=run_pk)
        .order_by("step_index")
        .values_list("step_index", "base_step")
    )


def compact_finished_runs(*, every: int | None = None, limit: int = 1000) -> tuple[int, int]:
    """Compact the checkpoints of up to `limit` finished runs that need it, oldest first;
    returns (runs compacted, rows rewritten). Checking a run reads only its rows' step
    numbers; states are read and written only for runs whose layout is off."""
    every = every or snapshot_every()
    runs = rows = 0
    candidates = (
        Run.objects.filter(status__in=TERMINAL)
        .filter(Exists(Checkpoint.stored.filter(run=OuterRef("pk"), step_index__gt=0)))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    for run_pk in candidates.iterator(500):
        if runs >= limit:
            break
        if not plan_run(_layout(run_pk), every):
            continue
        n = compact_run(run_pk, every=every)
        runs, rows = runs + (n > 0), rows + n
    return runs, rows


def compact_run(run_pk: int, *, every: int | None = None) -> int:
    """Rewrite a finished run's checkpoints to the compact layout; returns the rows rewritten.
    Every rewritten row is checked to replay to the state it held before it is saved.

    The run's row is locked and must be finished: a retried run writes checkpoints again, and
    its step commits lock the same row first, so the two never interleave."""
    every = every or snapshot_every()
    changed = 0
    with transaction.atomic():
        run = (
            Run.objects.select_for_update(of=("self",))
            .select_related("graph")
            .filter(pk=run_pk, status__in=TERMINAL)
            .first()
        )
        if run is None or not plan_run(_layout(run_pk), every):
            return 0
        spec = spec_for(run.graph)
        base: int | None = None
        prev: dict[str, Any] | None = None
        for cp in Checkpoint.stored.filter(run=run).order_by("step_index").iterator(200):
            state = cp.state if cp.base_step is None else replay(spec, prev or {}, cp.updates)
            if cp.base_step is not None and prev is None:
                raise Checkpoint.DoesNotExist(f"checkpoint {cp.step_index}: no base")
            want_full = base is None or cp.step_index - base >= every
            if want_full:
                if cp.base_step is not None:
                    cp.state, cp.base_step, cp.updates = state, None, None
                    cp.save(update_fields=["state", "base_step", "updates"])
                    changed += 1
                base = cp.step_index
            elif cp.base_step is None:
                assert prev is not None
                patch = {
                    "set": {
                        k: v for k, v in state.items() if k not in prev or not _same(v, prev[k])
                    },
                    "unset": [k for k in prev if k not in state],
                }
                if replay(spec, prev, patch) != state:  # cannot happen; never store a wrong one
                    raise AssertionError(f"patch of checkpoint {cp.step_index} does not replay")
                cp.state, cp.base_step, cp.updates = None, base, patch
                cp.save(update_fields=["state", "base_step", "updates"])
                changed += 1
            elif cp.base_step != base:
                cp.base_step = base
                cp.save(update_fields=["base_step"])
                changed += 1
            prev = state
    return changed
