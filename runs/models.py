"""Graphs, threads, runs and everything a run leaves behind. Services own every status write."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django.db import models
from django.db.models.query import ModelIterable

from runs.querysets import RunQuerySet, TenantScopedQuerySet
from runs.status import TERMINAL, RunStatus
from tenants.models import GraphLimit, Tenant


class Graph(models.Model):
    """One immutable version of a named graph."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="graphs")
    name = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    spec = models.JSONField()
    hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=200, blank=True)
    # The graph's concurrency slots (shared by all its versions); set when the version is
    # stored, so starting a run reads it from the cached version row.
    limit = models.ForeignKey(
        GraphLimit, null=True, blank=True, on_delete=models.SET_NULL, related_name="versions"
    )

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name", "version"], name="uniq_graph_version")
        ]
        ordering = ["name", "-version"]

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


class Thread(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="threads")
    state = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantScopedQuerySet.as_manager()

    def __str__(self) -> str:
        return str(self.public_id)


class Run(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # Every index of this table is written by each run's INSERT, and on PostgreSQL by each
    # UPDATE that changes an indexed column (a dispatch, a claim, an end): no single-column
    # index where a composite one starts with the column (tenant, thread, status), and
    # partial ones where most runs have no value (parent, thread, wait_deadline, lease).
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="runs", db_index=False
    )
    graph = models.ForeignKey(Graph, on_delete=models.PROTECT, related_name="runs")
    graph_hash = models.CharField(max_length=64)
    thread = models.ForeignKey(
        Thread,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
        db_index=False,
    )
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="children",
        db_index=False,
    )
    depth = models.PositiveSmallIntegerField(default=0)
    # Run trees (subgraphs): every descendant points at its root, which holds the tree's
    # shared counters. Indexed by the partial run_root (children only): roots, most runs,
    # pay no index write.
    root = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="descendants",
        db_index=False,
    )
    # Which subgraph call of the parent started this child (step, node, branch, attempt):
    # a parent re-running that call after a crash finds and reuses this child.
    child_key = models.CharField(max_length=200, blank=True)
    # On a root only: children started in its tree (a guarded UPDATE caps it at the tenant's
    # max_child_runs) and the usage its descendants' steps committed, so the per-run limits
    # apply to the whole tree (runs/services/trees.py).
    tree_children = models.PositiveIntegerField(default=0)
    tree_steps = models.PositiveIntegerField(default=0)
    tree_tokens = models.PositiveBigIntegerField(default=0)
    tree_cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal(0))

    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    input = models.JSONField(default=dict, blank=True)
    state = models.JSONField(default=dict, blank=True)
    # True while `state` is older than the run's last checkpoint: a step's commit writes its
    # checkpoint (a delta, mostly) and not the whole state again; the state is written back
    # when the segment ends. Read the run's state through runs.checkpoints.current_state.
    state_behind = models.BooleanField(default=False)
    # Engine cursor to resume from: {"node", "step", "visits"}.
    position = models.JSONField(null=True, blank=True)
    # The thread's state before this run, for cancel with action=rollback.
    thread_state_before = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    waiting_for = models.JSONField(null=True, blank=True)
    wait_deadline = models.DateTimeField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    multitask_strategy = models.CharField(max_length=16, default="reject")
    # 1-5, higher first: the dispatcher orders a tenant's queued runs by priority, then age.
    priority = models.PositiveSmallIntegerField(default=3, db_default=3)
    # Who started the run: "user:<login>", "key:<api key name>", "cron:<id>",
    # "trigger:<event name>", "run:<parent id>" (children); hooks and the audit log see it.
    created_by = models.CharField(max_length=200, blank=True, default="", db_default="")
    # The graph's concurrency slots, copied from the version at creation (no join to find
    # them at dispatch). No constraint and no index: a lane row is deleted only with its
    # tenant, whose runs go too, so a delete must not update (or scan) the runs table.
    graph_limit = models.ForeignKey(
        GraphLimit,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    cancel_action = models.CharField(max_length=16, blank=True)
    # Set by services for a running run; the worker acts on them at the next step boundary.
    pause_requested = models.BooleanField(default=False)
    guidance_pending = models.BooleanField(default=False)

    # Usage counters, updated in each step's transaction.
    steps = models.PositiveIntegerField(default=0)
    tokens_in = models.PositiveBigIntegerField(default=0)
    tokens_out = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal(0))
    warned_limits = models.JSONField(default=list, blank=True)

    # Ownership: a worker claims by bumping epoch; every later write is fenced by it.
    epoch = models.PositiveIntegerField(default=0)
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    # A queued run is not dispatched before this time (a resurrection's cooldown); None: at
    # once. Checked on the dispatcher's seek (run_dispatch_queue), not indexed itself.
    not_before = models.DateTimeField(null=True, blank=True)
    claims = models.PositiveIntegerField(default=0)
    recoveries = models.PositiveIntegerField(default=0)
    resurrections = models.PositiveIntegerField(default=0)
    # Admission counters on the tenant are released exactly once by flipping these guarded flags.
    holds_slot = models.BooleanField(default=False)
    holds_queue_slot = models.BooleanField(default=False)
    last_seq = models.PositiveIntegerField(default=0)

    idempotency_key = models.CharField(max_length=200, blank=True)
    idempotency_hash = models.CharField(max_length=64, blank=True)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = RunQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "-created_at", "-id"], name="run_tenant_created"),
            # Ends with -id like the list's order, so a status-filtered page stops after
            # `limit` rows instead of sorting all the tenant's runs in that status.
            models.Index(
                fields=["tenant", "status", "-created_at", "-id"], name="run_tenant_status"
            ),
            models.Index(fields=["status", "dispatched_at"], name="run_status_dispatched"),
            models.Index(
                fields=["thread", "status"],
                condition=models.Q(thread__isnull=False),
                name="run_thread_status",
            ),
            # A thread's runs newest first (GET /runs?thread_id=): partial, so runs without a
            # thread cost no index write.
            models.Index(
                fields=["thread", "-created_at", "-id"],
                condition=models.Q(thread__isnull=False),
                name="run_thread_created",
            ),
            # The dispatcher's queue: each tenant's highest-priority, then oldest, undispatched
            # root run is the first entry of its range (runs/dispatch.py); holds only queued
            # runs, so it stays small.
            models.Index(
                fields=["tenant", "-priority", "id"],
                condition=models.Q(status="queued", dispatched_at__isnull=True, root__isnull=True),
                name="run_dispatch_queue",
            ),
            # Child runs by root: only children have one, so roots cost no index write; it
            # spares deletes (the root_id foreign key) a scan of every run.
            models.Index(fields=["root"], condition=models.Q(root__isnull=False), name="run_root"),
            models.Index(
                fields=["parent"], condition=models.Q(parent__isnull=False), name="run_parent"
            ),
            # The reconciler's scans: only runs waiting with a deadline, or leased.
            models.Index(
                fields=["wait_deadline"],
                condition=models.Q(wait_deadline__isnull=False),
                name="run_wait_deadline",
            ),
            models.Index(
                fields=["lease_expires_at"],
                condition=models.Q(lease_expires_at__isnull=False),
                name="run_lease_expires",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="uniq_run_idempotency_key",
            ),
            models.UniqueConstraint(
                fields=["parent", "child_key"],
                condition=~models.Q(child_key=""),
                name="uniq_run_child_key",
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.public_id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def usage(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost_usd": float(self.cost_usd),
        }

    @property
    def channel_group(self) -> str:
        return f"run.{self.public_id.hex}"


class Step(models.Model):
    # Indexed by uniq_step_index (run, index); a separate FK index would only cost writes.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="step_rows", db_index=False)
    index = models.PositiveIntegerField()
    node = models.CharField(max_length=100)
    status = models.CharField(max_length=16)
    attempt = models.PositiveIntegerField(default=1)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    usage = models.JSONField(default=dict, blank=True)
    update = models.JSONField(default=dict, blank=True)
    error = models.JSONField(null=True, blank=True)
    epoch = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="uniq_step_index")]
        ordering = ["run", "index"]

    def __str__(self) -> str:
        return f"step {self.index} {self.node} ({self.status})"


class CheckpointQuerySet(models.QuerySet["Checkpoint"]):
    """Checkpoints come back with their states, a delta's replayed (`runs.checkpoints`), once
    per evaluated queryset, so every reader sees `state` as if each row were stored full."""

    def _fetch_all(self) -> None:
        fresh = self._result_cache is None
        super()._fetch_all()
        if fresh and self._result_cache and self._iterable_class is ModelIterable:
            from runs.checkpoints import fill_states  # it imports this module

            fill_states(self._result_cache)


class Checkpoint(models.Model):
    """The state after a step (step_index 0 is the initial state): resume and fork from here.

    Stored full (`state`, `base_step` null) or as a delta: `updates`, what the step wrote,
    replayed over the full snapshot at `base_step` of the same run and the deltas between, in
    step order. `objects` hands rows out with `state` filled in (runs/checkpoints.py
    `fill_states`); `stored` hands them out as stored (a delta's `state` is null), and so do
    `.values()` and `.iterator()` on either.
    """

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    run = models.ForeignKey(
        Run, on_delete=models.CASCADE, related_name="checkpoints", db_index=False
    )  # uniq_checkpoint_step leads with run
    thread = models.ForeignKey(
        Thread, null=True, blank=True, on_delete=models.CASCADE, related_name="checkpoints"
    )
    step_index = models.PositiveIntegerField()
    # Typed as read: `objects` fills a delta's state in; only `stored` rows may hold null.
    state: models.JSONField[Any, Any] = models.JSONField(null=True, blank=True)
    #: A delta's base: the step index of the full snapshot it replays from (null: full).
    base_step = models.PositiveIntegerField(null=True, blank=True)
    #: A delta's writes: a list of raw updates applied through the graph's reducers, or
    #: `{"set": {...}, "unset": [...]}` (compaction's key-level patch, applied as is).
    updates = models.JSONField(null=True, blank=True)
    position = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    stored = models.Manager()
    objects = CheckpointQuerySet.as_manager()

    class Meta:
        default_manager_name = "objects"
        constraints = [
            models.UniqueConstraint(fields=["run", "step_index"], name="uniq_checkpoint_step")
        ]
        ordering = ["run", "step_index"]

    def __str__(self) -> str:
        return f"checkpoint {self.step_index} of run {self.run_id}"

    @property
    def is_full(self) -> bool:
        return self.base_step is None


def artifact_path(instance: Artifact, filename: str) -> str:
    return f"artifacts/{instance.tenant.public_id.hex}/{instance.run.public_id.hex}/{filename}"


class Artifact(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="artifacts")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="artifacts")
    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="artifacts")
    name = models.CharField(max_length=200)
    content_type = models.CharField(max_length=100)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    file = models.FileField(upload_to=artifact_path, max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["run", "id"]

    def __str__(self) -> str:
        return self.name


class Event(models.Model):
    """The event log. `seq` is gap-free per run; `id` orders all events for pollers."""

    # uniq_event_seq (run, seq) and event_tenant_id (tenant, id) cover both keys.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events", db_index=False)
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=40)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="uniq_event_seq")]
        indexes = [models.Index(fields=["tenant", "id"], name="event_tenant_id")]
        ordering = ["run", "seq"]

    def __str__(self) -> str:
        return f"{self.seq} {self.type}"


class ControlKind(models.TextChoices):
    APPROVAL = "approval"
    INPUT = "input"
    GUIDANCE = "guidance"
    WAKE = "wake"


class Control(models.Model):
    """A decision, input or guidance for a run, possibly sent before the run needs it.

    `key` names what it answers: an approval/input id (`node@occurrence`), or `node@*` for every
    occurrence of that node.
    """

    run = models.ForeignKey(
        Run, on_delete=models.CASCADE, related_name="controls", db_index=False
    )  # control_lookup leads with run
    kind = models.CharField(max_length=16, choices=ControlKind.choices)
    key = models.CharField(max_length=150, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    consumed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["run", "kind", "key"], name="control_lookup")]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.key}"


class LiveFrame(models.Model):
    """A transient live frame (`llm.delta`, `branch.*` while a step runs) on its way from a
    worker to the daphne processes of the embedded setup (no Redis), whose pollers tail this
    table by id (runs/live.py). Not the log: the same events are stored as Events when the
    step commits. Rows live for seconds (runs/live_frames.py prunes them); no foreign key, so
    an insert never waits on the run's row lock."""

    group = models.CharField(max_length=100)
    payload = models.TextField()
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.group} {self.payload[:40]}"
