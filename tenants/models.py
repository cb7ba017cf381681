"""Tenants, their members, API keys, limits, usage and the operators' audit log."""

from __future__ import annotations

import hashlib
import uuid
from decimal import Decimal

from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


ROLE_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


class Tenant(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    is_active = models.BooleanField(default=True)

    # Limits (None = unlimited). Set by operators, enforced in tenants/limits/.
    max_concurrent_runs = models.PositiveIntegerField(default=10)
    max_queued_runs = models.PositiveIntegerField(default=1000)
    runs_per_minute = models.PositiveIntegerField(null=True, blank=True, default=600)
    max_steps = models.PositiveIntegerField(null=True, blank=True, default=1000)
    max_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    max_cost_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    max_wall_seconds = models.PositiveIntegerField(null=True, blank=True, default=3600)
    # Containment: a run's merged state, in bytes of JSON; and the child runs one root run's
    # tree may start (subgraphs), each admitted through the tenant gate.
    max_state_bytes = models.PositiveBigIntegerField(null=True, blank=True, default=8 * 1024 * 1024)
    max_child_runs = models.PositiveIntegerField(null=True, blank=True, default=25)
    # Resurrections of a run failing with a non-fatal error: the default for a graph whose
    # spec does not say, and the most a spec may ask for (runs/services/resurrection.py).
    max_resurrections = models.PositiveIntegerField(default=3)
    daily_token_budget = models.PositiveBigIntegerField(null=True, blank=True)
    monthly_token_budget = models.PositiveBigIntegerField(null=True, blank=True)
    daily_cost_budget_usd = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True
    )
    monthly_cost_budget_usd = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True
    )
    warn_ratio = models.DecimalField(max_digits=4, decimal_places=3, default=Decimal("0.8"))
    http_allowed_hosts = models.JSONField(default=list, blank=True)
    http_allow_private = models.BooleanField(default=False)
    # Completion webhooks (webhooks/): the key that signs every delivery, made on first use
    # and shown to the tenant once per rotation; and whether the tenant ever asked for a
    # webhook, so a run ending in a tenant that never did costs no query (webhooks/outbox.py).
    webhook_secret = models.CharField(max_length=100, blank=True)
    webhooks_in_use = models.BooleanField(default=False)

    # Admission counters, changed only by guarded UPDATEs in tenants/limits/.
    running_count = models.IntegerField(default=0)
    queued_count = models.IntegerField(default=0)
    rate_window_start = models.DateTimeField(null=True, blank=True)
    rate_window_count = models.IntegerField(default=0)
    # Round-robin cursor of the dispatcher: the tenant served longest ago goes first.
    last_dispatched_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="uniq_membership"),
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.tenant} ({self.role})"


def hash_key(raw: str) -> str:
    # API keys are 32 random bytes, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiKey(models.Model):
    PREFIX_LEN = 12

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, default="default")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    prefix = models.CharField(max_length=16, db_index=True)
    hashed = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.tenant})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class UsageDay(models.Model):
    """The usage ledger: rows per tenant, UTC day and shard, updated in each step's transaction.

    A step adds to the shard of its run (`limits.usage_shard`), so concurrent runs of one
    tenant do not queue on one row lock until each other's commit; readers sum the shards.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="usage_days")
    day = models.DateField()
    shard = models.PositiveSmallIntegerField(default=0)
    runs = models.IntegerField(default=0)
    steps = models.IntegerField(default=0)
    tokens_in = models.BigIntegerField(default=0)
    tokens_out = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal(0))

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "day", "shard"], name="uniq_usage_day_shard")
        ]
        ordering = ["-day"]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.day}"

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out


class UsageModelDay(models.Model):
    """Usage per model, sharded like UsageDay."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="usage_models")
    day = models.DateField()
    model = models.CharField(max_length=100)
    shard = models.PositiveSmallIntegerField(default=0)
    calls = models.IntegerField(default=0)
    tokens_in = models.BigIntegerField(default=0)
    tokens_out = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal(0))

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "day", "model", "shard"], name="uniq_usage_model_day_shard"
            )
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.day} {self.model}"


class AuditLog(models.Model):
    """Every operator action and every refusal by a hook. Written once, never edited."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    actor_label = models.CharField(max_length=200, blank=True)
    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.SET_NULL)
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    reason = models.TextField(blank=True)
    status_before = models.CharField(max_length=32, blank=True)
    status_after = models.CharField(max_length=32, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.action} {self.target_type}:{self.target_id} by {self.actor_label}"


class GraphLimit(models.Model):
    """One graph's concurrency slots within its tenant (every version of the graph shares it).

    `max_concurrent_runs` is the latest version's `limits.max_concurrent_runs` (None: only the
    tenant's own cap applies). `running_count` counts the graph's runs holding a slot whether
    or not a cap is set, so a cap added by a new version is right at once; it changes only
    through guarded UPDATEs in tenants/limits/graphs.py, like the tenant's own counters.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="graph_limits")
    graph_name = models.CharField(max_length=100)
    max_concurrent_runs = models.PositiveIntegerField(null=True, blank=True)
    running_count = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "graph_name"], name="uniq_graph_limit")
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}:{self.graph_name}"


class DispatchGate(models.Model):
    """One row that every dispatcher locks (a guarded UPDATE) before it compares the runs in
    flight with the cluster's capacity and takes a slot: dispatchers on any machine then
    check and take one after another (tenants/cluster.py `enter_dispatch_gate`)."""

    turns = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"dispatch gate ({self.turns} turns)"


class WorkerCluster(models.Model):
    """A qcluster's heartbeat: its worker processes refresh `seen_at` while it runs, so the
    default dispatch capacity is the workers of every cluster seen lately, on any machine."""

    name = models.CharField(max_length=255, unique=True)
    workers = models.PositiveIntegerField()
    seen_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.workers} workers)"
