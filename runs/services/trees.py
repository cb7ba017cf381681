"""Run trees: a root run and its descendants (subgraph children) share the root's limits.

The root's row holds the tree's counters (see the Run model): `tree_children`, taken with a
guarded UPDATE as each child is admitted, and `tree_steps` / `tree_tokens` / `tree_cost_usd`,
which each descendant's step adds to in its own transaction. A step's limit check then
compares the whole tree's usage with the tenant's per-run limits, so `max_steps`,
`max_tokens` and `max_cost_usd` bound the tree, not each of its runs; wall time counts from
the root's start (the child's segment takes its parent's `wall_started`).

Lock order: a descendant's step transaction locks the root's row (`tree_base`, FOR UPDATE)
before its own run row, the same order as `cancel_run` (parent, then children), so the two
cannot deadlock. Siblings in parallel branches queue on the root's row for their commits only.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db.models import F

from runs.models import Run


@dataclass(slots=True)
class TreeUsage:
    """The committed usage of the rest of a run's tree, to add to the run's own counters."""

    steps: int = 0
    tokens: int = 0
    cost_usd: Decimal = Decimal(0)


NO_TREE = TreeUsage()


def tree_base(run: Run) -> TreeUsage:
    """What the rest of `run`'s tree has used. Call first in a step's transaction.

    A root that never started a child costs no query (the hot path of every plain run). A
    descendant locks its root's row until its step commits, so two siblings' steps cannot
    both pass the check on the same old total.
    """
    if run.root_id is None:
        if not run.tree_children:
            return NO_TREE
        row = Run.objects.filter(pk=run.pk).values("tree_steps", "tree_tokens", "tree_cost_usd")
        mine = row.get()
        return TreeUsage(mine["tree_steps"], mine["tree_tokens"], mine["tree_cost_usd"])
    root = (
        Run.objects.select_for_update()
        .filter(pk=run.root_id)
        .values(
            "steps",
            "tokens_in",
            "tokens_out",
            "cost_usd",
            "tree_steps",
            "tree_tokens",
            "tree_cost_usd",
        )
        .get()
    )
    # The root's tree counters already hold this run's committed usage: take it out, since
    # the caller adds the run's own counters back.
    return TreeUsage(
        steps=root["steps"] + root["tree_steps"] - run.steps,
        tokens=root["tokens_in"]
        + root["tokens_out"]
        + root["tree_tokens"]
        - (run.tokens_in + run.tokens_out),
        cost_usd=root["cost_usd"] + root["tree_cost_usd"] - run.cost_usd,
    )


def add_tree_usage(run: Run, *, steps: int, tokens: int, cost_usd: Decimal) -> None:
    """Add a descendant's committed step usage to its root's tree counters (same transaction
    as the steps)."""
    if run.root_id is None or not (steps or tokens or cost_usd):
        return
    Run.objects.filter(pk=run.root_id).update(
        tree_steps=F("tree_steps") + steps,
        tree_tokens=F("tree_tokens") + tokens,
        tree_cost_usd=F("tree_cost_usd") + cost_usd,
    )


def take_child_slot(root_pk: int, cap: int | None) -> bool:
    """Count one more child in the root's tree while it has fewer than `cap` (None: no cap).

    One guarded UPDATE: parallel branches and several workers can race for the last slot and
    exactly one wins. Children are never given back: the cap bounds the runs a tree starts,
    not how many run at once."""
    rows = Run.objects.filter(pk=root_pk)
    if cap is not None:
        rows = rows.filter(tree_children__lt=cap)
    return rows.update(tree_children=F("tree_children") + 1) == 1
