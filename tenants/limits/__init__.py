"""The single gate for every tenant limit. Race-free: guarded UPDATEs on the tenant's own row.

Admission counters (`queued_count`, `running_count`) change only through the functions here,
and only by conditional UPDATEs, so two workers can never both take the last slot. The runs app
pairs each acquire with a flag on the run that it clears with a guarded UPDATE before calling
the matching release, so every slot is given back exactly once.

Callers use this package (`from tenants import limits; limits.admit_run(...)`); its modules
each hold one concern: `admission` (slots and rate), `graphs` (per-graph slots), `usage` (the
ledger), `budgets` (day and month budgets), `per_run` (a run's limits, its tree, its state
size), `errors`.
"""

from tenants.limits.admission import (
    RATE_WINDOW,
    acquire_run_slot,
    admit_run,
    release_queue_slot,
    release_run_slot,
    running_total,
    send_admission,
)
from tenants.limits.budgets import budget_usage, check_budgets, check_spend, has_budgets
from tenants.limits.errors import LimitExceeded
from tenants.limits.graphs import (
    acquire_graph_slot,
    graph_limit_for,
    release_graph_slot,
)
from tenants.limits.per_run import (
    RunLimitCheck,
    admit_child_run,
    check_run_limits,
    check_state_size,
)
from tenants.limits.usage import (
    LedgerRow,
    Period,
    ledger_rows,
    record_usage,
    upsert_parts,
    usage_between,
    usage_by_model,
    usage_shard,
)

__all__ = [
    "RATE_WINDOW",
    "LedgerRow",
    "LimitExceeded",
    "Period",
    "RunLimitCheck",
    "acquire_graph_slot",
    "acquire_run_slot",
    "admit_child_run",
    "admit_run",
    "send_admission",
    "budget_usage",
    "check_budgets",
    "check_run_limits",
    "check_spend",
    "check_state_size",
    "graph_limit_for",
    "has_budgets",
    "ledger_rows",
    "record_usage",
    "release_graph_slot",
    "release_queue_slot",
    "release_run_slot",
    "running_total",
    "upsert_parts",
    "usage_between",
    "usage_by_model",
    "usage_shard",
]
