"""Limits on one run and its tree: per-run counters checked at step boundaries, admission of
child runs (subgraph calls), and the size of a run's state."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from tenants.limits.budgets import check_budgets
from tenants.limits.errors import LimitExceeded
from tenants.models import Tenant

# --- per-run limits at step boundaries ------------------------------------------------------


@dataclass
class RunLimitCheck:
    exceeded: LimitExceeded | None = None
    warnings: list[tuple[str, float, float]] = field(default_factory=list)  # (limit, used, cap)


def check_run_limits(
    tenant: Tenant,
    *,
    steps: int,
    tokens: int,
    cost_usd: Decimal | float,
    wall_seconds: float,
    already_warned: list[str],
    now: dt.datetime | None = None,
    step_tokens: int = 0,
    step_cost: Decimal | float = 0,
) -> RunLimitCheck:
    """Compare a run's counters with the tenant's per-run limits and budgets.

    Returns the first limit crossed (the run stops at this step boundary) and the limits past
    `warn_ratio` not warned about yet.
    """
    result = RunLimitCheck()
    caps: list[tuple[str, float, float | None]] = [
        ("max_steps", steps, tenant.max_steps),
        ("max_tokens", tokens, tenant.max_tokens),
        (
            "max_cost_usd",
            float(cost_usd),
            float(tenant.max_cost_usd) if tenant.max_cost_usd is not None else None,
        ),
        ("max_wall_seconds", wall_seconds, tenant.max_wall_seconds),
    ]
    ratio = float(tenant.warn_ratio)
    for name, used, cap in caps:
        if cap is None:
            continue
        # Tokens and cost may reach their cap but not pass it. A run that has used its steps
        # or its time cannot take another step (a run whose last step ended it succeeded).
        crossed = used > cap if name in ("max_tokens", "max_cost_usd") else used >= cap
        if crossed and result.exceeded is None:
            result.exceeded = LimitExceeded(
                name,
                f"The run crossed {name}={cap:g} ({used:g} used).",
                details={"cap": cap, "used": used},
            )
        elif used >= ratio * cap and name not in already_warned:
            result.warnings.append((name, used, cap))
    # A step that spent meets the budgets at its commit, race-free (`check_spend`); one that
    # spent nothing stops here once others have used them up.
    if result.exceeded is None and not (step_tokens or step_cost):
        try:
            check_budgets(
                tenant,
                now=now,
                refusing="the run",
                pending_tokens=step_tokens,
                pending_cost=Decimal(str(step_cost)),
            )
        except LimitExceeded as exc:
            result.exceeded = exc
    return result


# --- run trees (subgraphs) --------------------------------------------------------------------


def admit_child_run(
    tenant: Tenant,
    *,
    depth: int,
    max_depth: int,
    take_child: Callable[[int | None], bool],
    now: dt.datetime | None = None,
) -> None:
    """Admit a child run (a subgraph call) into a run tree, or raise LimitExceeded.

    The gate for children differs from `admit_run` on purpose:
    - no queue slot and no concurrency slot: a child runs inline in its parent's worker and
      inside the slot its root already holds. Asking for a second slot would deadlock a tenant
      capped at one concurrent run (the parent would wait for a slot it holds itself);
    - no `runs_per_minute` token: that limit paces requests to start runs, which a client can
      retry after `retry_after`; a child cannot wait, and refusing it would fail work that was
      admitted at its root. Children are instead bounded per root by `max_child_runs` (so
      run creation stays bounded by runs_per_minute * (1 + max_child_runs)) and by depth;
    - the day/month budgets apply as for any run: a used-up budget refuses the child.

    `max_depth` is the depth the calling graph allows, already clamped by the caller to the
    platform's ceiling; `take_child(cap)` takes one of the root's child slots with a guarded
    UPDATE on the root's row (the runs app owns that row) and says whether it got one. Call
    inside the transaction that creates the child, so a refusal leaves the counter as it was.
    """
    if depth > max_depth:
        raise LimitExceeded(
            "max_depth",
            f"A subgraph would nest {depth} deep; run trees are bounded at max_depth={max_depth}.",
            details={"cap": max_depth, "depth": depth},
        )
    check_budgets(tenant, now=now, refusing="new child runs")
    if not take_child(tenant.max_child_runs):
        raise LimitExceeded(
            "max_child_runs",
            f"The run tree already started {tenant.max_child_runs} child runs "
            f"(max_child_runs of tenant {tenant.slug}).",
            details={"cap": tenant.max_child_runs},
        )


# --- containment: a run's state --------------------------------------------------------------


def check_state_size(tenant: Tenant, size: int) -> LimitExceeded | None:
    """A run's state of `size` bytes (compact JSON) against the tenant's `max_state_bytes`.

    The caller measures: the runs app keeps an upper bound per step from the size of each
    update and serialises the whole state only when that bound passes the cap, so a normal
    step never pays for a second dump of its state.
    """
    cap = tenant.max_state_bytes
    if cap is None or size <= cap:
        return None
    return LimitExceeded(
        "max_state_bytes",
        f"The run's state would be {size} bytes, over max_state_bytes={cap}.",
        details={"cap": cap, "used": size},
    )
